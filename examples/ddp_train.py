#!/usr/bin/env python3
"""Data-parallel training with torch.nn.parallel.DistributedDataParallel of a small CNN whose
convolution and pooling layers are fastconv's (fastconv.torch.Conv2d, MaxPool2d, AvgPool2d,
AdaptiveAvgPool2d).

  python examples/ddp_train.py                         # 2 processes on this machine (gloo, CPU)
  python examples/ddp_train.py --nprocs 4 --steps 50
  torchrun --nproc_per_node=2 examples/ddp_train.py    # the same, started by torchrun

On GPUs, one process per GPU with NCCL (several machines: torchrun's --nnodes, --node_rank,
--master_addr, --master_port):

  torchrun --nproc_per_node=8 examples/ddp_train.py --backend nccl --device cuda

fastconv's CUDA kernels are not built yet, so there the fastconv layers run torch's CUDA
implementation (with a warning per layer); on the CPU they run fastconv's kernels.

The task is synthetic and deterministic: 16x16 noise images with a bright 4x4 square in one of
the four quadrants, labelled by the quadrant. Every step draws one global batch (--batch images)
from the seed and the step number; rank r trains on the r-th contiguous share, and DDP averages
the gradients, so the run computes what one process would on the whole global batch.
"""
from __future__ import annotations

import argparse
import datetime
import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fastconv
import fastconv.torch as fct


def build_model(seed: int) -> torch.nn.Module:
    """The CNN, with the same initial weights for a given seed."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        fct.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
        fct.MaxPool2d(2),                                   # 16x16 -> 8x8
        fct.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(),
        fct.AvgPool2d(2),                                   # 8x8 -> 4x4
        fct.AdaptiveAvgPool2d(2), torch.nn.Flatten(),       # 4x4 -> 2x2: one cell per quadrant
        torch.nn.Linear(16 * 2 * 2, 4))


def make_batch(step: int, batch: int, seed: int):
    """The global batch of a step: (images (batch, 1, 16, 16), labels (batch,))."""
    g = torch.Generator().manual_seed(seed * 100003 + step)
    labels = torch.randint(0, 4, (batch,), generator=g)
    images = 0.5 * torch.randn(batch, 1, 16, 16, generator=g)
    for i, q in enumerate(labels.tolist()):
        top, left = 8 * (q // 2) + 2, 8 * (q % 2) + 2
        images[i, 0, top:top + 4, left:left + 4] += 2.0
    return images, labels


def train(rank: int, world: int, args) -> None:
    """One process of the run: join the process group, train, leave the group."""
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, cpus // local_world)
    torch.set_num_threads(threads)
    fastconv.set_num_threads(threads)
    device = torch.device("cuda", local_rank) if args.device == "cuda" else torch.device("cpu")
    dist.init_process_group(args.backend, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=args.timeout))
    try:
        fit(rank, world, device, args)
    finally:
        # The DistributedDataParallel wrapper is gone by now (it lived in fit): destroyed after
        # this call, it would hold the last reference to the gloo process group and destroy it
        # with the GIL held, which can deadlock with gloo's worker threads.
        dist.destroy_process_group()


def fit(rank: int, world: int, device: torch.device, args) -> None:
    """SGD on this rank's share of every global batch; optionally save the final weights."""
    model = build_model(args.seed).to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=0.9)
    share = args.batch // world
    for step in range(args.steps):
        images, labels = make_batch(step, args.batch, args.seed)
        x = images[rank * share:(rank + 1) * share].to(device)
        y = labels[rank * share:(rank + 1) * share].to(device)
        loss = torch.nn.functional.cross_entropy(ddp(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if rank == 0 and (step % 10 == 0 or step == args.steps - 1):
            print(f"step {step:3d}  loss on rank 0's share {loss.item():.4f}", flush=True)
    if args.save:
        torch.save(model.state_dict(), args.save.format(rank=rank))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nprocs", type=int, default=2,
                   help="processes to start on this machine when not run by torchrun (default 2)")
    p.add_argument("--steps", type=int, default=30, help="SGD steps (default 30)")
    p.add_argument("--batch", type=int, default=32,
                   help="global batch, split evenly across the processes (default 32)")
    p.add_argument("--lr", type=float, default=0.05, help="learning rate (default 0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the data")
    p.add_argument("--backend", default="gloo", help="gloo (CPU, default) or nccl (CUDA)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--timeout", type=float, default=120,
                   help="seconds a collective may wait for the other processes before failing")
    p.add_argument("--save", help="save each rank's final state_dict to this path; '{rank}' in it "
                   "is replaced by the rank")
    args = p.parse_args(argv)
    for name in ("nprocs", "steps", "batch"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be positive, got {getattr(args, name)}")
    return args, p


def main(argv=None) -> int:
    args, parser = parse_args(argv)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # started by torchrun
        world = int(os.environ["WORLD_SIZE"])
        if args.batch % world:
            parser.error(f"--batch {args.batch} must be divisible by the {world} processes")
        train(int(os.environ["RANK"]), world, args)
        return 0
    if args.batch % args.nprocs:
        parser.error(f"--batch {args.batch} must be divisible by --nprocs {args.nprocs}")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    mp.spawn(train, args=(args.nprocs, args), nprocs=args.nprocs, join=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
