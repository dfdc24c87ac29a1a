#!/usr/bin/env python3
"""Whole-model benchmark: fastconv models against the same models in PyTorch, same device, same
weights, one process (STYLE 11: check, then measure side by side, then report ratios).

  train     a training step (forward + cross-entropy + backward + SGD momentum step) of the
            curriculum's 3x32x32 CNN and of ResNet-18
  infer     inference (eval, no grad) of EfficientNet-Lite0 and ResNet-50 at batch 1 and 32
  finetune  a fine-tuning step of EfficientNet-Lite0: base frozen except the top 2 blocks,
            BatchNorm in inference mode, new 2-class head (what `fastconv finetune` runs)

The torch models are the plain-torch twins in fastconv.models.torch_reference with the
fastconv model's weights loaded; before timing, the outputs (and for training steps the loss and
updated weights) are compared. ratio = fastconv time / torch time (lower is better).

  python bench/run_models.py                       # all cases, CPU, a few minutes on 2 cores
  python bench/run_models.py --cases train --quick
  python bench/run_models.py --cases train,infer   # (on a GPU: bench/run_models_cuda.py)

Writes <out>/models-<time>.md and .csv (default bench/results/, git-ignored).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

COLUMNS = ["case", "kind", "batch", "input", "fastconv_ms", "torch_ms", "ratio", "check",
           "threads", "device"]


def small_cnn_pair(torch):
    import fastconv.nn as nn
    tnn = torch.nn

    def build(m):
        return m.Sequential(m.Conv2d(3, 7, 5), m.BatchNorm2d(7), m.ReLU(), m.MaxPool2d(2),
                            m.Conv2d(7, 15, 5, padding=2), m.BatchNorm2d(15), m.ReLU(),
                            m.MaxPool2d(2), m.Flatten(), m.Linear(735, 300), m.ReLU(),
                            m.Linear(300, 10))
    ours, theirs = build(nn), build(tnn)
    theirs.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v))
                            for k, v in ours.state_dict().items()})
    return ours, theirs


def zoo_pair(name: str, torch, num_classes=1000, pretrained=None):
    from fastconv import models
    from fastconv.models import torch_reference as tr
    ours = models.create_model(name, num_classes=num_classes, pretrained=pretrained)
    theirs = tr.create(name, num_classes=num_classes)
    theirs.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v))
                            for k, v in ours.state_dict().items()})
    return ours, theirs


def _rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6))


def _dropout_off(*models):
    """Sets p = 0 on every Dropout module of the models (the two libraries draw different masks,
    which the gradient check must not compare); returns the function that restores them."""
    saved = [(m, m.p) for model in models for m in model.modules()
             if type(m).__name__ == "Dropout"]
    for m, _ in saved:
        m.p = 0.0

    def restore():
        for m, p in saved:
            m.p = p
    return restore


def train_step_fns(ours, theirs, x, y, torch, lr=0.01, trainable=None):
    """Two callables doing one SGD training step each, and the check of their first step (with
    dropout off during the check, BatchNorm in the models' own mode)."""
    import fastconv as fc
    from fastconv import optim
    from fastconv.nn import functional as F
    params = [p for p in ours.parameters() if p.requires_grad]
    tparams = [p for p in theirs.parameters() if p.requires_grad]
    opt = optim.SGD(params, lr=lr, momentum=0.9)
    topt = torch.optim.SGD(tparams, lr=lr, momentum=0.9)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    xf = fc.tensor(x)

    def ours_step():
        loss = F.cross_entropy(ours(xf), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    def torch_step():
        loss = torch.nn.functional.cross_entropy(theirs(xt), yt)
        topt.zero_grad()
        loss.backward()
        topt.step()
        return loss.item()

    restore = _dropout_off(ours, theirs)
    try:
        check, ok = grad_check(ours, theirs, params, tparams, x, y, torch)
    finally:
        restore()
    return ours_step, torch_step, check, ok


def grad_check(ours, theirs, params, tparams, x, y, torch):
    """Gradients of one step against a float64 twin (STYLE 7).

    The error is normwise over all trainable parameters: ||g - g64|| / ||g64||. It may be at most
    twice torch float32's, or at most twice the float64 gradient's own change when the input is
    perturbed by 1e-6 (relative): these nets have ReLU/ReLU6 kinks, and a pre-activation within
    float32 rounding of one lands on either side in a float32 run, so a float32 gradient, torch's
    or ours, sits anywhere in that spread (EfficientNet-Lite0's top blocks: 3e-7 without a flip,
    up to 1e-3 with one, for both). Deep nets at random init are badly conditioned in float32
    (ResNet-18: several % for both), so torch float32 alone is no reference either."""
    import copy
    import fastconv as fc
    from fastconv.nn import functional as F
    ref = copy.deepcopy(theirs).double()
    rparams = [p for p in ref.parameters() if p.requires_grad]
    yt = torch.from_numpy(y)

    def ref_grads(xx):
        for p in rparams:
            p.grad = None
        torch.nn.functional.cross_entropy(ref(xx), yt).backward()
        return np.concatenate([p.grad.numpy().ravel() for p in rparams])

    def flat(ps, get):
        return np.concatenate([np.asarray(get(p), np.float64).ravel() for p in ps])

    F.cross_entropy(ours(fc.tensor(x)), y).backward()
    torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), yt).backward()
    x64 = torch.from_numpy(x).double()
    g64 = ref_grads(x64)
    norm = max(float(np.linalg.norm(g64)), 1e-12)
    ours_err = float(np.linalg.norm(flat(params, lambda p: p.grad) - g64)) / norm
    torch_err = float(np.linalg.norm(flat(tparams, lambda p: p.grad.numpy()) - g64)) / norm
    rng = np.random.default_rng(1)
    spread = max(float(np.linalg.norm(
        ref_grads(x64 * (1 + 1e-6 * torch.from_numpy(rng.standard_normal(x.shape)))) - g64)) / norm
        for _ in range(2))
    for p in list(params) + list(tparams):
        p.grad = None
    return (f"grad normwise rel err vs float64 {ours_err:.1e} (torch float32 {torch_err:.1e}, "
            f"float64 under 1e-6 input noise {spread:.1e})",
            ours_err <= 2 * max(torch_err, spread) + 1e-5)


def infer_fns(ours, theirs, x, torch):
    import fastconv as fc
    ours.eval()
    theirs.eval()
    xf, xt = fc.tensor(x), torch.from_numpy(x)

    def ours_fwd():
        with fc.no_grad():
            return ours(xf).numpy()

    def torch_fwd():
        with torch.no_grad():
            return theirs(xt).numpy()

    err = _rel_err(ours_fwd(), torch_fwd())
    return ours_fwd, torch_fwd, f"output rel err {err:.1e}", err < 1e-3


def build_cases(args, torch):
    rng = np.random.default_rng(0)
    cases = []

    def images(n, size):
        return rng.standard_normal((n, 3, size, size)).astype(np.float32)

    def labels(n, k):
        return rng.integers(0, k, n).astype(np.int64)

    if "train" in args.cases:
        n = 64
        cases.append(("small_cnn train step", "train", n, "3x32x32",
                      lambda: train_step_fns(*small_cnn_pair(torch), images(n, 32),
                                             labels(n, 10), torch)))
        n, s = (8, 112) if args.quick else (16, 112)
        cases.append(("resnet18 train step", "train", n, f"3x{s}x{s}",
                      lambda: train_step_fns(*zoo_pair("resnet18", torch), images(n, s),
                                             labels(n, 1000), torch)))

        def efficientnet_train():
            ours, theirs = zoo_pair("efficientnet_lite0", torch)
            for m in ours.modules():  # no stochastic depth: the torch twin has none
                if hasattr(m, "drop_connect_rate"):
                    m.drop_connect_rate = 0.0
            return train_step_fns(ours, theirs, images(n, s), labels(n, 1000), torch)
        cases.append(("efficientnet_lite0 train step", "train", n, f"3x{s}x{s}",
                      efficientnet_train))
    if "infer" in args.cases:
        for name in ("efficientnet_lite0", "resnet50"):
            for n in ((1, 8) if args.quick else (1, 32)):
                cases.append((f"{name} inference", "infer", n, "3x224x224",
                              lambda name=name, n=n: infer_fns(*zoo_pair(name, torch),
                                                               images(n, 224), torch)))
    if "finetune" in args.cases:
        n, s = (8, 128) if args.quick else (32, 128)

        def finetune_case():
            from fastconv import transfer
            ours, theirs = zoo_pair("efficientnet_lite0", torch, num_classes=2)
            transfer.prepare_feature_extraction(ours, 2)
            transfer.unfreeze_top(ours, 2)
            theirs.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v))
                                    for k, v in ours.state_dict().items()})
            trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
            for pname, p in theirs.named_parameters():
                p.requires_grad_(pname in trainable)
            ours.eval()  # the gradient check without dropout, which draws differently
            theirs.eval()
            fns = train_step_fns(ours, theirs, images(n, s), labels(n, 2), torch)
            ours.train()  # timed as fine-tuning runs: dropout on, BatchNorm in inference mode
            theirs.train()
            for m in theirs.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.eval()
            return fns
        cases.append(("efficientnet_lite0 finetune step (top 2 blocks)", "finetune", n,
                      f"3x{s}x{s}", finetune_case))
    return cases


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="train,infer,finetune")
    p.add_argument("--quick", action="store_true", help="smaller batches, fewer repeats")
    p.add_argument("--device", default="cpu", choices=("cpu",),
                   help="cpu only (default: cpu); the GPU training step is "
                   "bench/run_models_cuda.py")
    p.add_argument("--out", default=os.path.join(harness.HERE, "results"))
    args = p.parse_args(argv)
    import torch
    import fastconv as fc
    torch.manual_seed(0)
    fc.manual_seed(0)
    threads = fc.num_threads()
    torch.set_num_threads(threads)
    cfg = harness.TimingConfig(warmup=1, repeat=3 if args.quick else 5, min_sample_s=0.0)
    rows, failed = [], False
    start = time.perf_counter()
    for name, kind, n, shape, make in build_cases(args, torch):
        ours_fn, torch_fn, check, ok = make()
        failed |= not ok
        t = harness.measure({"fastconv": (ours_fn, [()]), "torch": (torch_fn, [()])}, cfg)
        row = {"case": name, "kind": kind, "batch": n, "input": shape,
               "fastconv_ms": t["fastconv"].median_s * 1e3, "torch_ms": t["torch"].median_s * 1e3,
               "check": ("ok: " if ok else "FAILED: ") + check, "threads": threads,
               "device": args.device}
        row["ratio"] = row["fastconv_ms"] / row["torch_ms"]
        rows.append(row)
        print(f"{name:50s} n={n:<3d} fastconv {row['fastconv_ms']:9.1f} ms  torch "
              f"{row['torch_ms']:9.1f} ms  ratio {row['ratio']:.2f}  ({row['check']})", flush=True)
    md_path, csv_path = harness.result_paths(args.out, "models")
    header = ["case", "batch", "input", "fastconv ms", "torch ms", "ratio", "check"]
    table = harness.markdown_table(header, [[r["case"], r["batch"], r["input"], r["fastconv_ms"],
                                             r["torch_ms"], r["ratio"], r["check"]] for r in rows])
    text = (f"# fastconv vs PyTorch {torch.__version__}, whole models ({args.device}, "
            f"{threads} threads, {harness.cpu_model()})\n\n{table}\n\n"
            f"median of {cfg.repeat} interleaved samples after {cfg.warmup} warm-up; "
            f"{time.perf_counter() - start:.0f} s in all\n")
    with open(md_path, "w") as f:
        f.write(text)
    harness.write_csv(csv_path, rows, COLUMNS)
    print(f"\nwrote {md_path} and {csv_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
