#!/usr/bin/env python3
"""Whole-model GPU benchmark: a training step of ResNet-18 and EfficientNet-Lite0 with fastconv's
CUDA kernels (fastconv.torch.convert of the torch model) against the same torch model unconverted
(PyTorch eager, cuDNN), same GPU, same weights, one process (issue 12, "GPU benchmark").

  step     optimizer.zero_grad(set_to_none=True); under torch.autocast("cuda", dtype=bfloat16)
           (the bfloat16 row; none for the float32 row) logits = model(x) and cross-entropy;
           loss.backward(); SGD (momentum 0.9) step. The models are in training mode. fastconv's
           conv2d casts float32 tensors to the autocast dtype on CUDA (fastconv.torch.functional),
           so its convolutions run in bfloat16 with float32 master weights, as torch's do.
           Only the convolution and pooling layers differ between the two models (EfficientNet's
           TF 'SAME' convolutions, pad + conv in torch, become one fastconv conv2d with the
           asymmetric padding: see same_padding_class).
  check    before timing, on one batch, each model's logits (in the row's precision) against the
           torch model in float64 on the same device: fastconv's largest error may be at most
           twice torch's plus 1e-3 of the largest logit (STYLE 7); fastconv layers that would
           fall back to torch's implementation are an error, not a warning. Dropout is off for
           the check (each model would draw its own mask), BatchNorm in training mode.
  timing   one step per sample between two CUDA events on torch's current stream, the device
           idle before each (torch.cuda.synchronize()), so a sample is the step's wall time on
           the device including any launch gaps (what eager training pays); samples of the two
           models interleaved; the median is reported. cudnn.benchmark = True; TF32 as torch's
           defaults have it (cuDNN convolutions on, matmul off) unless --no-tf32, and fastconv's
           float32 convolutions alike (fastconv.backends.cuda.allow_tf32).
  report   ms per step, images/s, ratio = fastconv time / torch time (lower is better; issue 12's
           target for ResNet-18 in bfloat16: at most 1.2).

  python3 bench/run_models_cuda.py                        # both models, bf16 and fp32, batch 64
  python3 bench/run_models_cuda.py --models resnet18 --dtype bfloat16 --repeat 10
  python3 bench/run_models_cuda.py --device cpu --batch 2 --size 32   # the code path, on the CPU

Without a GPU (and --device cuda, the default) it prints one line saying so and exits 2, as
bench/gpu_check.sh does. --device cpu runs the same steps and checks on CPU tensors (fastconv's CPU
kernels; float32 only, for tests). Writes <out>/models-cuda-<time>.md and .csv (default out:
bench/results/, git-ignored) and prints the markdown. Exit status 1 when a check fails.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import traceback
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

from fastconv.commands._args import int_at_least, word_list  # noqa: E402

MODELS = ("resnet18", "efficientnet_lite0")
DTYPES = ("bfloat16", "float32")
# issue 12: ResNet-18 bf16 training step at most 1.2x PyTorch eager
TARGET_RATIO = {("resnet18", "bfloat16"): 1.2}
CHECK_FACTOR = 2.0
CHECK_FLOOR = 1e-3   # of the largest float64 logit
COLUMNS = ["model", "dtype", "impl", "batch", "size", "median_ms", "min_ms", "max_ms",
           "images_per_s", "ratio", "target", "samples", "check", "err_logits", "converted",
           "device", "gpu", "torch_version", "cudnn_version", "fastconv_version", "tf32"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cuda, or cpu to run the same code on CPU tensors (default: cuda)")
    p.add_argument("--models", type=word_list(MODELS), default=list(MODELS), metavar="LIST",
                   help="comma-separated: resnet18, efficientnet_lite0 (default: both)")
    p.add_argument("--dtype", type=word_list(DTYPES), default=None, metavar="LIST",
                   help="rows: bfloat16 (torch.autocast), float32 (default: bfloat16,float32 on "
                   "cuda; float32 on cpu)")
    p.add_argument("--batch", type=int_at_least(1), default=64, help="images per step (default 64)")
    p.add_argument("--size", type=int_at_least(32), default=224,
                   help="image height and width (default 224)")
    p.add_argument("--classes", type=int_at_least(2), default=1000,
                   help="output classes (default 1000)")
    p.add_argument("--repeat", type=int_at_least(1), default=20,
                   help="timed steps per model (default 20)")
    p.add_argument("--warmup", type=int_at_least(0), default=5,
                   help="untimed steps per model before timing (default 5)")
    p.add_argument("--no-tf32", action="store_true",
                   help="turn TF32 off for torch's and fastconv's float32 convolutions "
                   "(default: torch's default, on)")
    p.add_argument("--seed", type=int_at_least(0), default=0,
                   help="seed of the weights and the batch (default 0)")
    p.add_argument("--out", default=os.path.join(harness.HERE, "results"),
                   help="output directory (files models-cuda-<time>.md/.csv) or a .md/.csv path "
                   "(default: bench/results/)")
    args = p.parse_args(argv)
    if args.dtype is None:
        args.dtype = list(DTYPES) if args.device == "cuda" else ["float32"]
    if args.device == "cpu" and args.dtype != ["float32"]:
        p.error("--dtype: --device cpu runs float32 only (fastconv's CPU kernels); bfloat16 "
                "needs --device cuda")
    return args


def no_gpu_reason(torch) -> str | None:
    """None when torch and fastconv both see a CUDA GPU, else why not (one line)."""
    import fastconv
    if torch is None:
        return "PyTorch is not installed"
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False"
    if not fastconv.cuda_available():
        return ("fastconv has no usable CUDA build (fastconv.cuda_available() is False; build "
                "with -DFASTCONV_CUDA=ON)")
    return None


def same_padding_class(torch):
    """A subclass of torch_reference.Conv2dSamePadding (EfficientNet's TensorFlow 'SAME'
    convolution: pad, then convolve) running fastconv.torch.conv2d with the asymmetric padding
    itself. fastconv.torch.convert leaves subclasses of torch.nn.Conv2d alone (their forward may
    differ), so the benchmark swaps these, whose forward it knows."""
    import fastconv.torch as fct
    from fastconv.models.torch_reference import Conv2dSamePadding

    class FastconvSamePadding(Conv2dSamePadding):
        def forward(self, x):  # fastconv's 'same' is TensorFlow's at any stride
            return fct.conv2d(x, self.weight, self.bias, self.stride, "same", self.dilation,
                              self.groups)
    return Conv2dSamePadding, FastconvSamePadding


def build_pair(torch, name: str, classes: int, device: str, seed: int):
    """(torch model, a deep copy with the same weights whose conv and pooling layers are
    fastconv's, 'k of n' such layers swapped), both in training mode on device."""
    import fastconv.torch as fct
    from fastconv.models import torch_reference
    same, fast_same = same_padding_class(torch)
    torch.manual_seed(seed)
    model = torch_reference.create(name, classes).to(device).train()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = fct.convert(model, inplace=False)
    for w in caught:
        if "Conv2dSamePadding" not in str(w.message):  # swapped below
            print(f"warning: {w.message}", file=sys.stderr)
    for m in ours.modules():
        if type(m) is same:
            m.__class__ = fast_same
    swappable = (torch.nn.Conv2d, torch.nn.MaxPool2d, torch.nn.AvgPool2d,
                 torch.nn.AdaptiveAvgPool2d)
    mine = (fct.Conv2d, fct.MaxPool2d, fct.AvgPool2d, fct.AdaptiveAvgPool2d, fast_same)
    total = sum(isinstance(m, swappable) for m in model.modules())
    done = sum(isinstance(m, mine) for m in ours.modules())
    return model, ours, f"{done} of {total}"


def autocast(torch, device: str, dtype: str):
    """torch.autocast to bfloat16 for the bfloat16 row; disabled for float32."""
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")


def make_step(torch, model, x, y, dtype: str, device: str):
    """One training step of model on (x, y): forward and loss under autocast, backward, SGD."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(torch, device, dtype):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step


def check(torch, model, ours, x, dtype: str, device: str):
    """STYLE 7 on the logits of one batch (see the docstring): (status, fastconv error, torch
    error), errors relative to the largest float64 logit."""
    ref_model = copy.deepcopy(model).double()
    # dropout off (it would draw differently in each model); BatchNorm stays in training mode
    drops = [m for net in (model, ours, ref_model) for m in net.modules()
             if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.training]
    for m in drops:
        m.eval()
    try:
        with torch.no_grad():
            ref = ref_model(x.double())
            with autocast(torch, device, dtype):
                base = model(x)
                mine = ours(x)
    finally:
        for m in drops:
            m.train()
    scale = max(float(ref.abs().max()), 1e-30)
    err_t = float((base.double() - ref).abs().max()) / scale
    err_f = float((mine.double() - ref).abs().max()) / scale
    if not (err_f <= CHECK_FACTOR * err_t + CHECK_FLOOR):
        print(f"\nCHECK FAILED: {dtype} logits: fastconv's largest error {err_f:.3g} (relative to "
              f"the largest float64 logit) exceeds {CHECK_FACTOR:g} x torch's {err_t:.3g} + "
              f"{CHECK_FLOOR:g}\n", file=sys.stderr)
        return "CHECK FAILED", err_f, err_t
    return "ok", err_f, err_t


class Timer:
    """Times steps, one per sample: on CUDA between two events on torch's current stream with the
    device idle before each; on the CPU with perf_counter."""

    def __init__(self, torch, device: str):
        self.torch, self.device = torch, device

    def sample(self, fn) -> float:
        """Seconds one call of fn takes."""
        torch = self.torch
        if self.device != "cuda":
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
        torch.cuda.synchronize()
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e-3  # elapsed_time is in milliseconds

    def measure(self, fns: dict, warmup: int, repeat: int) -> dict:
        """{name: sorted seconds} of repeat interleaved samples after warmup calls each."""
        for fn in fns.values():
            for _ in range(warmup):
                fn()
        out = {name: [] for name in fns}
        for _ in range(repeat):
            for name, fn in fns.items():
                out[name].append(self.sample(fn))
        return {name: sorted(s) for name, s in out.items()}


def run_one(torch, name: str, dtype: str, args, facts: dict, timer: Timer) -> list:
    """Check then time one model in one dtype; two rows (torch, fastconv)."""
    device = args.device
    model, ours, converted = build_pair(torch, name, args.classes, device, args.seed)
    g = torch.Generator(device=device).manual_seed(args.seed)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=g, device=device)
    y = torch.randint(0, args.classes, (args.batch,), generator=g, device=device)
    try:
        status, err_f, err_t = check(torch, model, ours, x, dtype, device)
    except Exception as e:  # noqa: BLE001 - a kernel missing or failing: report, time torch
        traceback.print_exc()
        status, err_f, err_t = f"error: {type(e).__name__}: {e}".splitlines()[0], None, None
    fns = {"torch": make_step(torch, model, x, y, dtype, device)}
    if status == "ok":
        ours_step = make_step(torch, ours, x, y, dtype, device)
        try:  # the check ran forward only: a failing backward is reported, not a crash
            loss = ours_step()
            if not bool(torch.isfinite(loss)):
                raise FloatingPointError(f"the training step's loss is {float(loss)}")
            fns["fastconv"] = ours_step
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            status = f"error: {type(e).__name__}: {e}".splitlines()[0]
    times = timer.measure(fns, args.warmup, args.repeat)
    rows = []
    base = times["torch"][len(times["torch"]) // 2]
    for impl, s in times.items():
        med = s[len(s) // 2]
        rows.append(dict(model=name, dtype=dtype, impl=impl, batch=args.batch, size=args.size,
                         median_ms=med * 1e3, min_ms=s[0] * 1e3, max_ms=s[-1] * 1e3,
                         images_per_s=args.batch / med, ratio=med / base,
                         target=TARGET_RATIO.get((name, dtype)) if impl == "fastconv" else None,
                         samples=len(s), check=status if impl == "fastconv" else "",
                         err_logits=err_f if impl == "fastconv" else err_t,
                         converted=converted, **facts))
    if status != "ok":
        rows.append(dict(rows[0], impl="fastconv", median_ms=None, min_ms=None, max_ms=None,
                         images_per_s=None, ratio=None, samples=0, check=status,
                         err_logits=err_f, target=TARGET_RATIO.get((name, dtype))))
    return rows


def render(rows: list, facts: dict, args, elapsed: float) -> str:
    where = facts["gpu"] if args.device == "cuda" else f"CPU ({harness.cpu_model()})"
    lines = [f"# fastconv in a PyTorch training step on {where}", "",
             f"- PyTorch {facts['torch_version']} (cuDNN {facts['cudnn_version']}), fastconv "
             f"{facts['fastconv_version']}; cudnn.benchmark on, TF32 for float32 convolutions "
             f"{facts['tf32']}",
             f"- batch {args.batch} at {args.size}x{args.size}, {args.classes} classes, training "
             "mode; step = zero_grad + forward + cross-entropy (under torch.autocast bfloat16 "
             "for the bfloat16 rows) + backward + SGD momentum; fastconv = the same model after "
             "fastconv.torch.convert (its conv and pooling layers), eager",
             f"- median of {args.repeat} steps per model (interleaved, CUDA events, device idle "
             f"before each) after {args.warmup} warm-up steps; run took {elapsed:.0f} s",
             "- check: fastconv's logits error vs the float64 model <= 2x torch's + 1e-3 of the "
             "largest logit; ratio = time / torch's time (lower is better)", "",
             harness.markdown_table(
                 ["model", "dtype", "impl", "median ms", "min ms", "images/s", "ratio", "target",
                  "layers converted", "logits err", "check"],
                 [[r["model"], r["dtype"], r["impl"], r["median_ms"], r["min_ms"],
                   r["images_per_s"], r["ratio"],
                   f"<= {r['target']:g}" if r.get("target") else "",
                   r["converted"] if r["impl"] == "fastconv" else "", r["err_logits"],
                   r["check"]] for r in rows]), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        torch = None
    if args.device == "cuda":
        reason = no_gpu_reason(torch)
        if reason is not None:
            print(f"run_models_cuda: no GPU usable here ({reason}); run this on a machine with an "
                  "NVIDIA GPU")
            return 2
    elif torch is None:
        print("run_models_cuda: needs PyTorch", file=sys.stderr)
        return 1
    import fastconv
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
        if args.no_tf32:
            torch.backends.cudnn.allow_tf32 = False
        fastconv.backends.cuda.allow_tf32 = torch.backends.cudnn.allow_tf32
        gpu = torch.cuda.get_device_name()
    else:
        gpu = None
    facts = dict(device=args.device, gpu=gpu, torch_version=torch.__version__,
                 cudnn_version=torch.backends.cudnn.version(),
                 fastconv_version=fastconv.__version__,
                 tf32="on" if torch.backends.cudnn.allow_tf32 else "off")
    timer = Timer(torch, args.device)
    t0 = time.perf_counter()
    rows = []
    with warnings.catch_warnings():
        # a fastconv layer running torch's implementation would time torch against itself
        warnings.filterwarnings("error",
                                message=r"fastconv\.torch\..* runs torch's implementation")
        for name in args.models:
            for dtype in args.dtype:
                part = run_one(torch, name, dtype, args, facts, timer)
                f = part[-1]
                print(f"{name:20s} {dtype:9s} torch {part[0]['median_ms']:9.2f} ms  fastconv "
                      f"{harness.fmt(f['median_ms']):>9} ms  ratio {harness.fmt(f['ratio'])}  "
                      f"[{f['check']}]", file=sys.stderr, flush=True)
                rows += part
    text = render(rows, facts, args, time.perf_counter() - t0)
    md_path, csv_path = harness.result_paths(args.out, "models-cuda")
    with open(md_path, "w") as f:
        f.write(text + "\n")
    harness.write_csv(csv_path, rows, COLUMNS)
    print(text)
    print(f"wrote {md_path} and {csv_path}", file=sys.stderr)
    return 0 if all(r["check"] in ("", "ok") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
