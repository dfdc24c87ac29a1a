#!/usr/bin/env python3
"""PyTorch training-step benchmark: one SGD step (forward + backward + update) of a torchvision-
style ResNet-18 with torch's conv and pooling layers, and with fastconv's (fastconv.torch.convert),
on the CPU in one process.

STYLE 11: check first, then measure side by side, then report.
  check    both models start from the same weights. On one batch, fastconv's float32 logits
           may err at most twice as much as torch float32's against the model in float64 (plus
           the float32 table tolerance at the largest element), as in run_cpu.py; and in
           float64 the converted model's logits and every parameter gradient must equal torch's
           to 1e-9 of each tensor's largest element. float32 gradients are reported, not
           checked: over a whole network float32 rounding can decide a ReLU gate or a max-pool
           argmax near a tie differently from float64, moving single gradient elements by ~1e-2
           relative (torch's own oneDNN and native CPU paths differ from each other that way);
           the kernels' float32 gradients are checked layer by layer in run_cpu.py.
  measure  harness.measure times one training step of each model, interleaved (one sample of
           each in turn), after warm-up steps; the median is reported.
  report   ms per step, images/s, ratio = fastconv time / torch time (lower is better).

The model is built here from plain torch modules (conv 7x7/2, BatchNorm, ReLU, max pool 3/2,
4 stages of 2 BasicBlocks with 64-512 channels, adaptive average pool, fc), in training mode.
Everything that is not convolution or pooling (BatchNorm, ReLU, the residual adds, the linear
layer, the loss, SGD) is torch's in both models.

  python3 bench/run_torch_step.py                          # batch 8 at 112x112, about a minute
  python3 bench/run_torch_step.py --batch 32 --size 224 --repeat 5

Writes <out>/torch-step-<time>.md and .csv (default out: bench/results/, git-ignored) and prints
the markdown. Exit status 1 when the check fails.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

# float64 agreement of the converted model with torch's, relative to each tensor's largest
# element: summation orders differ, and BatchNorm over few elements (deep layers at small sizes)
# amplifies rounding, so this is looser than the float64 table's per-element 1e-10.
F64_AGREEMENT = 1e-9

COLUMNS = ["impl", "batch", "size", "classes", "median_ms", "min_ms", "max_ms", "images_per_s",
           "ratio", "samples", "check", "err_logits_f32", "err_grads_f32", "cpu", "isa",
           "threads", "torch_version", "fastconv_version", "load_start", "omp_wait_policy",
           "thread_pool"]


def _import_libs():
    try:
        import torch
    except ImportError:
        sys.exit("run_torch_step.py needs PyTorch: pip install 'torch==2.13.0' "
                 "(or the fastconv[torch] extra)")
    import fastconv
    import fastconv.torch as fct
    from fastconv import _C
    return torch, fastconv, fct, _C


def logits_and_grads(torch, model, x, y):
    model.zero_grad(set_to_none=True)
    logits = model(x)
    torch.nn.functional.cross_entropy(logits, y).backward()
    return logits.detach(), {n: p.grad for n, p in model.named_parameters()}


def check(torch, model_torch, model_fastconv, x, y):
    """The checks of the module docstring; returns (status, {impl: float32 logits error},
    {impl: largest float32 gradient error}), the gradient error of a parameter relative to that
    gradient's largest float64 element; impl 'torch_native' is torch without oneDNN."""
    from fastconv.testing import assert_close, assert_no_worse_than, max_error
    ref = logits_and_grads(torch, copy.deepcopy(model_torch).double(), x.double(), y)
    ours64 = logits_and_grads(torch, copy.deepcopy(model_fastconv).double(), x.double(), y)
    base = logits_and_grads(torch, model_torch, x, y)
    ours = logits_and_grads(torch, model_fastconv, x, y)
    with warnings.catch_warnings():  # the flags also set oneDNN's TF32 switch, and say so
        warnings.simplefilter("ignore", UserWarning)
        with torch.backends.mkldnn.flags(enabled=False):
            native = logits_and_grads(torch, model_torch, x, y)
    status = "ok"
    try:
        assert_no_worse_than(ours[0].numpy(), base[0].numpy(), ref[0].numpy(),
                             name="float32 logits")
        pairs = [("float64 logits", ours64[0], ref[0])]
        pairs += [(f"float64 grad {n}", ours64[1][n], r) for n, r in ref[1].items()]
        for name, a, r in pairs:
            assert_close(a.numpy(), r.numpy(), rtol=0.0,
                         atol=F64_AGREEMENT * float(r.abs().max()), name=name)
    except AssertionError as e:
        print(f"\nCHECK FAILED: {e}\n", file=sys.stderr)
        status = "CHECK FAILED"

    def grad_error(grads):
        return max(max_error(grads[n].numpy(), r.numpy()) / max(float(r.abs().max()), 1e-30)
                   for n, r in ref[1].items())
    results = {"torch": base, "fastconv": ours, "torch_native": native}
    return (status, {k: max_error(v[0].numpy(), ref[0].numpy()) for k, v in results.items()},
            {k: grad_error(v[1]) for k, v in results.items()})


def render(rows, native_grad_error, device, args, cfg, elapsed) -> str:
    parts = ["# fastconv in a PyTorch training step (ResNet-18, CPU)", "",
             f"- CPU: {device['cpu']} ({device['cores']} usable cores)",
             f"- fastconv {device['fastconv_version']}, ISA {device['isa']}; PyTorch "
             f"{device['torch_version']}; both on {device['threads']} threads; numpy "
             f"{np.__version__}; Python {platform.python_version()}",
             f"- OMP_WAIT_POLICY {device['omp_wait_policy']}; fastconv thread pool "
             f"{device['thread_pool']}",
             f"- ResNet-18 (torchvision layout), training mode, float32, batch {args.batch} at "
             f"{args.size}x{args.size}, {args.classes} classes; step = forward + cross-entropy + "
             f"backward + SGD (momentum 0.9)",
             f"- {time.strftime('%Y-%m-%d %H:%M:%S')}; median of {cfg.repeat} steps per model "
             f"(interleaved) after {cfg.warmup} warm-up steps; run took {elapsed:.0f} s",
             f"- load average (1 min): {harness.fmt(device['load_start'])} before the run, "
             f"{harness.fmt(device['load_end'])} at its end" +
             ("; **other processes were using the CPU: timings are unreliable**"
              if harness.busy(device["load_start"]) else ""),
             f"- check (float32 logits no worse than 2x torch's error vs float64; float64 logits "
             f"and parameter gradients equal to torch's): **{rows[1]['check']}**",
             f"- float32 errors vs the float64 model: logits fastconv "
             f"{harness.fmt(rows[1]['err_logits_f32'])}, torch "
             f"{harness.fmt(rows[0]['err_logits_f32'])}; largest parameter-gradient error "
             f"(relative to that gradient's largest element) fastconv "
             f"{harness.fmt(rows[1]['err_grads_f32'])}, torch "
             f"{harness.fmt(rows[0]['err_grads_f32'])} (oneDNN) and "
             f"{harness.fmt(native_grad_error)} (its native path, without oneDNN); not checked, "
             f"see run_torch_step.py", "",
             harness.markdown_table(
                 ["model", "median ms/step", "min ms", "max ms", "images/s", "ratio vs torch"],
                 [[r["impl"], r["median_ms"], r["min_ms"], r["max_ms"], r["images_per_s"],
                   r["ratio"]] for r in rows]), "",
             "ratio = time per step / torch's time per step (lower is better).", ""]
    return "\n".join(parts)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8, help="images per step (default 8)")
    p.add_argument("--size", type=int, default=112, help="image height and width (default 112)")
    p.add_argument("--classes", type=int, default=1000, help="output classes (default 1000)")
    p.add_argument("--repeat", type=int, default=15, help="timed steps per model (default 15)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per model (default 3)")
    p.add_argument("--threads", type=int, help="threads for fastconv and torch alike (default: "
                   "fastconv.num_threads())")
    p.add_argument("--out", default=os.path.join(harness.HERE, "results"),
                   help="output directory (files torch-step-<time>.md/.csv) or a .md/.csv path "
                   "(default: bench/results/)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the batch")
    p.add_argument("--omp-wait-policy", choices=("passive", "default", "active"),
                   default="passive", help="torch's OpenMP idle threads: OMP_WAIT_POLICY=PASSIVE "
                   "(default), 'default' (unset: they busy-wait for milliseconds after each op, "
                   "torch's own default) or ACTIVE")
    p.add_argument("--thread-pool", choices=("auto", "fastconv", "openmp"), default="auto",
                   help="fastconv.backends.cpu.thread_pool (default auto)")
    args = p.parse_args(argv)
    for name in ("batch", "size", "classes", "repeat", "threads"):
        v = getattr(args, name)
        if v is not None and v < 1:
            p.error(f"--{name} must be positive, got {v}")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.size < 32:
        p.error(f"--size must be at least 32 (ResNet-18 downsamples by 32), got {args.size}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.pop("OMP_WAIT_POLICY", None)  # set by `import harness`; torch is not loaded yet
    if args.omp_wait_policy != "default":
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    torch, fastconv, fct, C = _import_libs()
    fastconv.backends.cpu.thread_pool = args.thread_pool
    if args.threads:
        fastconv.set_num_threads(args.threads)
    threads = fastconv.num_threads()
    torch.set_num_threads(threads)
    device = dict(cpu=harness.cpu_model(), cores=harness.usable_cpus(), isa=C.isa(),
                  threads=threads, torch_version=torch.__version__,
                  fastconv_version=fastconv.__version__, load_start=harness.load_average(),
                  omp_wait_policy=args.omp_wait_policy,
                  thread_pool=f"{args.thread_pool}: {fastconv.backends.cpu.thread_pool_in_use}")
    if harness.busy(device["load_start"]):
        print(f"WARNING: load average {device['load_start']:.2f} before starting: other "
              "processes are using the CPU, the timings will be unreliable", file=sys.stderr)
    torch.manual_seed(args.seed)
    from fastconv.models import torch_reference  # torchvision's ResNet-18, plain torch
    model_torch = torch_reference.create("resnet18", args.classes).train()
    model_fastconv = fct.convert(model_torch, inplace=False)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, args.classes, (args.batch,))

    t0 = time.perf_counter()
    print(f"checking batch {args.batch} at {args.size}x{args.size} against float64 ...",
          file=sys.stderr, flush=True)
    status, err_logits, err_grads = check(torch, model_torch, model_fastconv, x, y)

    def stepper(model):
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step(x, y):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        return step

    cfg = harness.TimingConfig(warmup=args.warmup, repeat=args.repeat, min_sample_s=0.0)
    print(f"timing {args.repeat} steps per model after {args.warmup} warm-up steps ...",
          file=sys.stderr, flush=True)
    timed = harness.measure({"torch": (stepper(model_torch), [(x, y)]),
                             "fastconv": (stepper(model_fastconv), [(x, y)])}, cfg)
    elapsed = time.perf_counter() - t0
    device["load_end"] = harness.load_average()

    rows = []
    for impl in ("torch", "fastconv"):
        t = timed[impl]
        rows.append(dict(impl=impl, batch=args.batch, size=args.size, classes=args.classes,
                         median_ms=t.median_s * 1e3, min_ms=t.min_s * 1e3, max_ms=t.max_s * 1e3,
                         images_per_s=args.batch / t.median_s,
                         ratio=t.median_s / timed["torch"].median_s, samples=t.samples,
                         check=status if impl == "fastconv" else "",
                         err_logits_f32=err_logits[impl], err_grads_f32=err_grads[impl], **device))
    text = render(rows, err_grads["torch_native"], device, args, cfg, elapsed)
    md_path, csv_path = harness.result_paths(args.out, "torch-step")
    with open(md_path, "w") as f:
        f.write(text + "\n")
    harness.write_csv(csv_path, rows, COLUMNS)
    print(text)
    print(f"fastconv / torch time per training step: {rows[1]['ratio']:.3f}", file=sys.stderr)
    print(f"wrote {md_path} and {csv_path}", file=sys.stderr)
    return 0 if status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
