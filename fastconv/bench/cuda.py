"""CUDA runner of the benchmark: fastconv's CUDA kernels (through the public API on CuPy arrays)
against PyTorch CUDA (cuDNN, `torch.backends.cudnn.benchmark = True`, TF32 off), case by case.

For every case (batch n) and dtype, STYLE 11: check fastconv's result on that shape against torch
in float64 on the device (fastconv's error may be at most twice torch's in the same dtype, plus a
floor per dtype), then time fastconv, torch NCHW and torch channels_last side by side:

  conv2d     fwd        F.conv2d                  vs aten.convolution
             bwd_input  grad.conv2d_input         vs aten.convolution_backward(mask T,F,F)
             bwd_weight grad.conv2d_weight        vs aten.convolution_backward(mask F,T,F)
             (dense float32 also against cuDNN with TF32 on, torch's default: torch_tf32;
             fastconv runs as fastconv.backends.cuda.allow_tf32 says, on by default, so its
             ratio_tf32 compares TF32 with TF32; set it False to time exact float32 against
             torch_nchw, whose TF32 is off)
  max_pool2d fwd        F.max_pool2d              vs aten.max_pool2d
             fwd+bwd    F.max_pool2d(return_indices=True) + grad.max_pool2d_input
  avg_pool2d fwd, fwd+bwd likewise with F.avg_pool2d and grad.avg_pool2d_input

Timing: every call is one sample between two CUDA events on one dedicated stream (fastconv runs
on the same stream: CuPy's current stream is set to it). Before each sample a buffer larger than
twice the L2 cache is written, so no call finds its inputs in L2, and a device-side sleep lets
the host queue the timed call before the device reaches it (no launch gap is timed: these are
device times, like the CUDA-graph figures of bench/ANCHORS.md, not host overhead). The
median of the samples is reported; samples of the implementations are interleaved.

Units: dense and grouped conv layers also get TFLOP/s (harness.conv_flops) and % of the H100's
dense tensor-core peak for the dtype (PEAK_TFLOPS: TF32 for float32, BF16/FP16 for the others);
every row gets GB/s of the least DRAM traffic (harness.bytes_of: pooling reads x and writes y, plus
indices, dy and dx for fwd+bwd; conv reads/writes x, w and y once each), and % of the device's
copy bandwidth measured in the same run (machine.gpu_copy_gbps).

float32 and float16 inputs reach fastconv as CuPy arrays sharing torch's memory (DLPack);
bfloat16 (CuPy has no such dtype) as the torch tensors themselves, which fastconv's functions take
through `__dlpack__`.

Without a GPU, `projection()` gives each pooling and depthwise case's bytes and the time 85% of an
H100's bandwidth would take (figures from bench/ANCHORS.md), each dense conv case's FLOPs and the
time at 70% of the H100's peak for the dtype, and the cuDNN times measured on an H200
(baselines/h200_cudnn_torch2.11.json): the targets the kernels are written against.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Callable, Dict, List, Optional, Sequence

from fastconv.bench import harness
from fastconv.bench.cpu import CHECK_FACTOR, CheckFailed, check_row, fill_times, shape_str

DTYPES = ("float32", "float16", "bfloat16")
ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}
# Floor of the check, relative to max |reference|: about twice the dtype's rounding of the result
# (float32: the CPU runner's 2e-5; float16: unit roundoff 4.9e-4; bfloat16: 3.9e-3).
CHECK_FLOOR = {"float32": 2e-5, "float16": 1e-3, "bfloat16": 8e-3}

# bench/ANCHORS.md (PyTorch 2.11 + cuDNN 9.19 runs): device-to-device copy, read + write counted.
# H100 80GB HBM3: 2436 GB/s (another run gave 2958; the lower, first-listed figure is used);
# H200: 2768 GB/s.
H100_COPY_GBPS = 2436.0
H200_COPY_GBPS = 2768.0
TARGET_SHARE = 0.85      # issue 11: pooling at >= 85% of DRAM bandwidth
TARGET_SPEEDUP = 2.0     # issue 11: pooling and depthwise >= 2x faster than cuDNN
# Dense (non-sparse) tensor-core peaks of the H100 SXM, TFLOP/s, from NVIDIA's H100 datasheet
# (bench/ANCHORS.md lists only GEMM ceilings measured by cuBLAS: tf32 369, bf16 737, fp32 52).
# float32 counts against the TF32 peak: torch runs float32 convolutions on TF32 tensor cores by
# default (torch.backends.cudnn.allow_tf32), and issue 12's float32 target is against that.
H100_PEAK_TFLOPS = {"float32": 494.0, "float16": 989.0, "bfloat16": 989.0}
H100_FP32_SIMT_TFLOPS = 67.0  # the same datasheet's FP32 (no tensor cores), for reference
TARGET_PEAK_SHARE = 0.70      # issue 12: each dense layer's time at 70% of the H100 peak
# issue 12: dense conv at most 1.0x cuDNN (float32, TF32 on) and 1.3x (bfloat16, WMMA)
DENSE_TARGET_RATIO = {"float32": 1.0, "float16": 1.3, "bfloat16": 1.3}
BASELINE_JSON = os.path.join(harness.HERE, "baselines", "h200_cudnn_torch2.11.json")
# H200 json modes for each dtype: (NCHW, channels_last); None where that run has none.
H200_MODES = {"float32": ("fp32", "fp32_cl"), "float16": (None, None),
              "bfloat16": (None, "bf16_cl")}

# A device-side sleep before each sample, ~200 us at 2 GHz: meanwhile the host queues the start
# event and the whole timed call, so the sample is device time only (no Python or launch overhead
# of either library, as in the CUDA-graph figures of bench/ANCHORS.md).
SLEEP_CYCLES = 400_000
MIN_FLUSH_BYTES = 128 << 20


def default_ops() -> List[str]:
    """The op groups `--device cuda` runs by default: all three have CUDA kernels (issues 11-12)."""
    return ["conv", "depthwise", "pool"]


def gpu_unavailable_reason() -> Optional[str]:
    """None when torch sees a CUDA GPU, else why not (one line)."""
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed (it is the baseline)"
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False: no CUDA GPU visible (or a CPU-only torch)"
    return None


# ---- the H200 cuDNN baseline and the projection (no GPU needed) ------------------------------


def load_h200(path: str = BASELINE_JSON) -> Dict[tuple, dict]:
    """{(case, mode): result} of the H200 cuDNN run (modes fp32, fp32_cl, tf32, bf16_cl)."""
    with open(path) as f:
        data = json.load(f)
    return {(r["case"], r["mode"]): r for r in data["results"]}


def h200_times(h200: Dict[tuple, dict], case: str, dtype: str, direction: str):
    """(NCHW us, channels_last us) of the H200 cuDNN run for this case, dtype and direction."""
    out = []
    for mode in H200_MODES[dtype]:
        r = h200.get((case, mode)) if mode else None
        out.append(r.get(direction) if r else None)
    return tuple(out)


def h200_tf32(h200: Dict[tuple, dict], case: str, dtype: str, direction: str):
    """The H200 cuDNN time with TF32 on (NCHW) for float32, torch's default; None otherwise."""
    r = h200.get((case, "tf32")) if dtype == "float32" else None
    return r.get(direction) if r else None


def is_dense(case: dict) -> bool:
    return harness.group_of(case) == harness.DENSE


def directions(case: dict):
    return harness.CONV_DIRS if case["op"] == "conv2d" else harness.POOL_DIRS


def projection(cases: Sequence[dict], dtypes: Sequence[str]) -> List[dict]:
    """One row per case, direction and dtype. Pooling and depthwise: bytes moved at batch n, the
    time at 85% of the H100's and the H200's copy bandwidth, the H200 cuDNN times (NCHW,
    channels_last) and the time 2x faster than the better of them. Dense and grouped conv: FLOPs,
    the time at 70% of the H100's peak for the dtype, the H200 cuDNN times (float32 also with
    TF32 on) and the target time (1.0x / 1.3x the best cuDNN time that counts for the dtype)."""
    h200 = load_h200()
    rows = []
    for case in cases:
        d = harness.case_dims(case, "n")
        for dtype in dtypes:
            for direction in directions(case):
                nbytes = harness.bytes_of(case, direction, "n", ITEMSIZE[dtype])
                nchw, cl = h200_times(h200, case["name"], dtype, direction)
                row = dict(
                    case=case["name"], group=harness.group_of(case), op=case["op"],
                    direction=direction, dtype=dtype, n=d["N"], shape=shape_str(case, d),
                    status="no GPU: projection", bytes=nbytes,
                    h100_85_us=nbytes / (TARGET_SHARE * H100_COPY_GBPS * 1e9) * 1e6,
                    h200_85_us=nbytes / (TARGET_SHARE * H200_COPY_GBPS * 1e9) * 1e6,
                    h200_cudnn_nchw_us=nchw, h200_cudnn_cl_us=cl)
                if is_dense(case):
                    flops = harness.conv_flops(d)
                    tf32 = h200_tf32(h200, case["name"], dtype, direction)
                    # float32's target is cuDNN as torch runs it by default: TF32 on
                    best = tf32 if tf32 is not None else min(
                        [t for t in (nchw, cl) if t is not None], default=None)
                    row.update(flops=flops, h100_peak_tflops=H100_PEAK_TFLOPS[dtype],
                               h100_70_us=flops / (TARGET_PEAK_SHARE * H100_PEAK_TFLOPS[dtype]
                                                   * 1e12) * 1e6,
                               h200_cudnn_tf32_us=tf32,
                               target_us=(best * DENSE_TARGET_RATIO[dtype]
                                          if best is not None else None))
                else:
                    best = min([t for t in (nchw, cl) if t is not None], default=None)
                    row["target_2x_us"] = best / TARGET_SPEEDUP if best is not None else None
                rows.append(row)
    return rows


def add_flop_rates(row: dict, us: Dict[str, float], peak_tflops: float) -> None:
    """TFLOP/s of each timed implementation of a dense conv row (after fill_times) and
    fastconv's and the baseline's share of the H100 peak (row["flops"] at batch n); for float32
    also torch with TF32 on (torch_tf32_us) and fastconv's ratio to it (ratio_tf32)."""
    if "torch_tf32" in us:
        row["torch_tf32_us"] = us["torch_tf32"]
        if row.get("fastconv_us") is not None:
            row["ratio_tf32"] = row["fastconv_us"] / us["torch_tf32"]
    for name in ("fastconv", "torch_nchw", "torch_cl", "torch_tf32", "baseline"):
        t = row.get(f"{name}_us")
        tflops = row["flops"] / (t * 1e-6) / 1e12 if t else None
        row[f"{name}_tflops"] = tflops
        if name in ("fastconv", "torch_tf32", "baseline"):
            row[f"{name}_pct_h100_peak"] = 100.0 * tflops / peak_tflops if tflops else None
    row["h100_peak_tflops"] = peak_tflops


# ---- timing -----------------------------------------------------------------------------------


class EventTimer:
    """Times callables one call per sample between CUDA events, L2 flushed before each sample."""

    def __init__(self, torch, l2_bytes: Optional[int]):
        self.torch = torch
        n = max(2 * (l2_bytes or 0), MIN_FLUSH_BYTES)
        self.flush = torch.empty(n // 4, dtype=torch.float32, device="cuda")
        self.flush_bytes = n
        self.sleep = getattr(torch.cuda, "_sleep", None)

    def measure(self, impls: Dict[str, Callable[[], object]], warmup: int,
                repeat: int) -> Dict[str, harness.Timing]:
        torch = self.torch
        for fn in impls.values():
            for _ in range(max(warmup, 1)):
                fn()
        torch.cuda.synchronize()
        events = {name: [] for name in impls}
        for _ in range(max(repeat, 1)):
            for name, fn in impls.items():
                self.flush.zero_()
                if self.sleep is not None:
                    self.sleep(SLEEP_CYCLES)
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                events[name].append((start, end))
        torch.cuda.synchronize()
        out = {}
        for name, pairs in events.items():
            s = sorted(a.elapsed_time(b) * 1e-3 for a, b in pairs)
            out[name] = harness.Timing(s[len(s) // 2], s[0], s[-1], len(s), 1)
        return out


# ---- checks on the device ---------------------------------------------------------------------


def check_on_device(torch, name: str, actual, baseline, reference, floor_rel: float):
    """STYLE 7 on the device: max |actual - ref| <= CHECK_FACTOR * max |baseline - ref| +
    floor_rel * max(1, max |ref|), NaNs where the reference has them. Returns the two errors or
    raises CheckFailed with the worst elements."""
    a, b, r = (torch.as_tensor(t).double() for t in (actual, baseline, reference))
    if tuple(a.shape) != tuple(r.shape):
        raise CheckFailed(f"{name}: shape {tuple(a.shape)} != expected {tuple(r.shape)}")
    if not torch.equal(torch.isnan(a), torch.isnan(r)):
        raise CheckFailed(f"{name}: NaNs differ from the reference")

    def err(x):
        ok = torch.isfinite(x) & torch.isfinite(r)
        diff = torch.where(ok, (x - r).abs(), torch.zeros_like(r))
        return diff, float(diff.max()) if diff.numel() else 0.0

    diff, ea = err(a)
    _, eb = err(b)
    finite = torch.where(torch.isfinite(r), r.abs(), torch.zeros_like(r))
    floor = floor_rel * max(1.0, float(finite.max()) if r.numel() else 0.0)
    if ea > CHECK_FACTOR * eb + floor:
        k = min(8, diff.numel())
        vals, idx = torch.topk(diff.flatten(), k)
        lines = []
        for f in idx.tolist():
            pos = tuple(int(v) for v in torch.unravel_index(torch.tensor(f), diff.shape))
            lines.append(f"    at {pos}: actual {float(a[pos])!r}, expected {float(r[pos])!r}")
        raise CheckFailed(f"{name}: max error {ea:.3g} vs the float64 reference exceeds "
                          f"{CHECK_FACTOR:g} x torch's {eb:.3g} + {floor:.3g}; worst:\n"
                          + "\n".join(lines))
    return ea, eb


# ---- per-case setup ---------------------------------------------------------------------------


class Ctx:
    """Inputs and conversions of one dtype. device="cpu" (float32 only) runs the same checks and
    callables on numpy arrays and the CPU kernels: the tests exercise this runner that way."""

    def __init__(self, torch, cupy, dtype: str, seed: int, device: str = "cuda"):
        import fastconv.nn.functional as F
        import fastconv.nn.grad as G
        self.torch, self.cupy, self.F, self.G = torch, cupy, F, G
        self.dtype_name, self.device = dtype, device
        self.dtype = getattr(torch, dtype)
        self.gen = torch.Generator(device=device).manual_seed(seed)

    def randn(self, shape):
        t = self.torch.randn(shape, generator=self.gen, device=self.device,
                             dtype=self.torch.float32)
        return t.to(self.dtype)

    def fc(self, t):
        """What fastconv gets: a CuPy view of the tensor (float32/float16) or the tensor itself
        (bfloat16, which CuPy lacks); a numpy view on the CPU."""
        if self.device == "cpu":
            return t.numpy()
        if self.cupy is None or self.dtype_name == "bfloat16":
            return t
        return self.cupy.from_dlpack(t)

    def torch_of(self, a):
        """A torch view of what fastconv returned."""
        if isinstance(a, self.torch.Tensor):
            return a
        if self.device == "cpu":
            return self.torch.from_numpy(a)
        return self.torch.from_dlpack(a)

    def cl(self, t):
        return t.contiguous(memory_format=self.torch.channels_last) if t.dim() == 4 else t


def conv_impls(ctx: Ctx, case: dict, d: dict):
    """{direction: (check_fn, {impl: fn})} for one conv case."""
    torch, F, G = ctx.torch, ctx.F, ctx.G
    aten = torch.ops.aten
    N, C, H, W, K, R, S = (d[k] for k in "N C H W K R S".split())
    st, pad, groups = d["stride"], d["pad"], d["groups"]
    x, w, dy = ctx.randn((N, C, H, W)), ctx.randn((K, C // groups, R, S)), \
        ctx.randn((N, K, d["P"], d["Q"]))
    xc, wc, dyc = ctx.fc(x), ctx.fc(w), ctx.fc(dy)
    cl = tuple(ctx.cl(t) for t in (x, w, dy))
    S2, P2, D2 = [st, st], [pad, pad], [1, 1]

    def t_fwd(x, w, dy):
        return aten.convolution(x, w, None, S2, P2, D2, False, [0, 0], groups)

    def t_bi(x, w, dy):
        return aten.convolution_backward(dy, x, w, None, S2, P2, D2, False, [0, 0], groups,
                                         [True, False, False])[0]

    def t_bw(x, w, dy):
        return aten.convolution_backward(dy, x, w, None, S2, P2, D2, False, [0, 0], groups,
                                         [False, True, False])[1]

    tf32 = ctx.dtype_name == "float32" and harness.group_of(case) == harness.DENSE

    def with_tf32(fn):
        """fn with cuDNN's TF32 on, torch's default for float32 convolutions (issue 12's float32
        target); cudnn.benchmark keys its choices by the TF32 setting too."""
        def run():
            old = torch.backends.cudnn.allow_tf32
            torch.backends.cudnn.allow_tf32 = True
            try:
                return fn()
            finally:
                torch.backends.cudnn.allow_tf32 = old
        return run

    fc = {"fwd": lambda: F.conv2d(xc, wc, None, st, pad, 1, groups),
          "bwd_input": lambda: G.conv2d_input(tuple(x.shape), wc, dyc, st, pad, 1, groups),
          "bwd_weight": lambda: G.conv2d_weight(xc, tuple(w.shape), dyc, st, pad, 1, groups)}
    out = {}
    for direction, t_fn in (("fwd", t_fwd), ("bwd_input", t_bi), ("bwd_weight", t_bw)):
        def check(f_fn=fc[direction], t_fn=t_fn, direction=direction):
            ref = t_fn(x.double(), w.double(), dy.double())
            from fastconv import backends
            # fastconv on TF32 (fastconv.backends.cuda.allow_tf32) is held to cuDNN on TF32
            base = (with_tf32 if tf32 and backends.cuda.allow_tf32 else
                    (lambda fn: fn))(lambda: t_fn(x, w, dy))()
            return check_on_device(torch, f"{case['name']} {direction} {ctx.dtype_name}",
                                   ctx.torch_of(f_fn()), base, ref,
                                   CHECK_FLOOR[ctx.dtype_name])
        timed = {"fastconv": fc[direction], "torch_nchw": (lambda t_fn=t_fn: t_fn(x, w, dy)),
                 "torch_cl": (lambda t_fn=t_fn: t_fn(*cl))}
        if tf32:  # dense float32: also cuDNN with TF32 on (NCHW), the float32 target
            timed["torch_tf32"] = with_tf32(timed["torch_nchw"])
        out[direction] = (check, timed)
    return out


def pool_impls(ctx: Ctx, case: dict, d: dict):
    """{direction: (check_fn, {impl: fn})} for one pooling case."""
    torch, F, G = ctx.torch, ctx.F, ctx.G
    aten = torch.ops.aten
    N, C, H, W, P, Q = (d[k] for k in "N C H W P Q".split())
    k2, s2, p2 = [d["R"], d["S"]], [d["stride"]] * 2, [d["pad"]] * 2
    kk, ss, pp = tuple(k2), tuple(s2), tuple(p2)
    x, dy = ctx.randn((N, C, H, W)), ctx.randn((N, C, P, Q))
    xc, dyc = ctx.fc(x), ctx.fc(dy)
    cl = (ctx.cl(x), ctx.cl(dy))
    floor = CHECK_FLOOR[ctx.dtype_name]
    name = f"{case['name']} %s {ctx.dtype_name}"

    if case["op"] == "max_pool2d":
        def f_fwd():
            return F.max_pool2d(xc, kk, ss, pp)

        # the backward gets the forward's geometry, as torch's does (and as autograd passes it):
        # a parallel gather on the GPU instead of the geometry-free per-plane scatter
        geometry = dict(kernel_size=kk, stride=ss, padding=pp)

        def f_fb():
            _, idx = F.max_pool2d(xc, kk, ss, pp, return_indices=True)
            return G.max_pool2d_input(tuple(x.shape), dyc, idx, **geometry)

        def t_fwd(x, dy):
            return aten.max_pool2d(x, k2, s2, p2, [1, 1], False)

        def t_fb(x, dy):
            _, idx = aten.max_pool2d_with_indices(x, k2, s2, p2, [1, 1], False)
            return aten.max_pool2d_with_indices_backward(dy, x, k2, s2, p2, [1, 1], False, idx)

        def check_fb():
            # fastconv's indices must point at a window maximum; float32 inputs have no ties, so
            # there they must equal torch's. dx is checked against torch's backward run with
            # fastconv's own indices (in reduced precision ties are common and either is right).
            y, idx = F.max_pool2d(xc, kk, ss, pp, return_indices=True)
            y, idx = ctx.torch_of(y), ctx.torch_of(idx).long()
            t_y, t_idx = aten.max_pool2d_with_indices(x, k2, s2, p2, [1, 1], False)
            at = torch.gather(x.flatten(2), 2, idx.flatten(2)).view_as(t_y)
            if not torch.equal(at, t_y):
                bad = int((at != t_y).sum())
                raise CheckFailed(f"{name % 'fwd+bwd'}: {bad} max_pool2d indices do not point "
                                  "at the window's maximum")
            if ctx.dtype_name == "float32" and not torch.equal(idx, t_idx):
                raise CheckFailed(f"{name % 'fwd+bwd'}: {int((idx != t_idx).sum())} max_pool2d "
                                  "indices differ from torch's")
            dx = ctx.torch_of(G.max_pool2d_input(tuple(x.shape), dyc, ctx.fc(idx), **geometry))
            args = (k2, s2, p2, [1, 1], False, idx)
            ref = aten.max_pool2d_with_indices_backward(dy.double(), x.double(), *args)
            base = aten.max_pool2d_with_indices_backward(dy, x, *args)
            return check_on_device(torch, name % "fwd+bwd", dx, base, ref, floor)
    else:
        def f_fwd():
            return F.avg_pool2d(xc, kk, ss, pp)

        def f_fb():
            F.avg_pool2d(xc, kk, ss, pp)
            return G.avg_pool2d_input(tuple(x.shape), dyc, kk, ss, pp)

        def t_fwd(x, dy):
            return aten.avg_pool2d(x, k2, s2, p2, False, True, None)

        def t_fb(x, dy):
            aten.avg_pool2d(x, k2, s2, p2, False, True, None)
            return aten.avg_pool2d_backward(dy, x, k2, s2, p2, False, True, None)

        def check_fb():
            ref = t_fb(x.double(), dy.double())
            return check_on_device(torch, name % "fwd+bwd", ctx.torch_of(f_fb()), t_fb(x, dy),
                                   ref, floor)

    def check_fwd():
        return check_on_device(torch, name % "fwd", ctx.torch_of(f_fwd()), t_fwd(x, dy),
                               t_fwd(x.double(), dy.double()), floor)

    return {"fwd": (check_fwd, {"fastconv": f_fwd, "torch_nchw": lambda: t_fwd(x, dy),
                                "torch_cl": lambda: t_fwd(*cl)}),
            "fwd+bwd": (check_fb, {"fastconv": f_fb, "torch_nchw": lambda: t_fb(x, dy),
                                   "torch_cl": lambda: t_fb(*cl)})}


# ---- the run ----------------------------------------------------------------------------------


def run_case(ctx: Ctx, timer: EventTimer, case: dict, cfg: harness.TimingConfig, facts: dict,
             copy_gbps: float, h200: Dict[tuple, dict], skip: Optional[str],
             on_row: Optional[Callable[[dict], None]] = None) -> List[dict]:
    """Check, then time, every direction of one case in ctx's dtype; one row per direction."""
    d = harness.case_dims(case, "n")
    make = conv_impls if case["op"] == "conv2d" else pool_impls
    rows = []
    for direction, (check, timed) in make(ctx, case, d).items():
        nbytes = harness.bytes_of(case, direction, "n", ITEMSIZE[ctx.dtype_name])
        nchw, cl = h200_times(h200, case["name"], ctx.dtype_name, direction)
        row = dict(case=case["name"], group=harness.group_of(case), op=case["op"],
                   direction=direction, dtype=ctx.dtype_name, n=d["N"], shape=shape_str(case, d),
                   unit="GB/s", bytes=nbytes,
                   flops=harness.conv_flops(d) if case["op"] == "conv2d" else 0.0,
                   h100_85_us=nbytes / (TARGET_SHARE * H100_COPY_GBPS * 1e9) * 1e6,
                   h200_cudnn_nchw_us=nchw, h200_cudnn_cl_us=cl, **facts)
        timed = check_row(row, check, timed, skip)
        res = timer.measure(timed, cfg.warmup, cfg.repeat)
        us = {k: v.median_s * 1e6 for k, v in res.items()}
        for k, v in res.items():
            row[f"{k}_min_us"] = v.min_s * 1e6
        fill_times(row, us, nbytes)
        for name in ("fastconv", "torch_nchw", "torch_cl", "baseline"):
            rate = row.get(f"{name}_rate")
            row[f"{name}_pct_peak"] = 100.0 * rate / copy_gbps if rate else None
        if is_dense(case):
            add_flop_rates(row, us, H100_PEAK_TFLOPS[ctx.dtype_name])
        rows.append(row)
        if on_row:
            on_row(row)
    return rows


def dense_targets(rows: Sequence[dict]) -> List[dict]:
    """Issue 12's per-dtype targets over the timed dense conv rows: the geometric mean of
    fastconv's time over cuDNN's (float32: cuDNN with TF32 on; bfloat16, float16: the faster
    layout) against DENSE_TARGET_RATIO."""
    out = []
    for dtype in DTYPES:
        key = "ratio_tf32" if dtype == "float32" else "ratio"
        vals = [r[key] for r in rows if r.get("group") == harness.DENSE
                and r.get("dtype") == dtype and r.get(key)]
        if vals:
            g = harness.geomean(vals)
            out.append(dict(dtype=dtype, versus="cuDNN TF32 on" if dtype == "float32"
                            else "cuDNN, faster layout", layers=len(vals), geomean=g,
                            target=DENSE_TARGET_RATIO[dtype],
                            verdict="met" if g <= DENSE_TARGET_RATIO[dtype] else "not met"))
    return out


def fastconv_gpu_problem(cupy) -> Optional[str]:
    """None when fastconv's CUDA path can be tried, else the status its rows get."""
    import fastconv
    if cupy is None:
        return "skipped: CuPy is not installed (pip install \"fastconv[cuda]\")"
    if not fastconv.cuda_available():
        return "skipped: fastconv was built without CUDA (fastconv.cuda_available() is False)"
    return None


def run(cases: Sequence[dict], dtypes: Sequence[str], cfg: harness.TimingConfig, seed: int = 0,
        on_row: Optional[Callable[[dict], None]] = None, facts: Optional[dict] = None,
        copy_gbps: Optional[float] = None) -> List[dict]:
    """Check and time the cases on the current GPU in each dtype (needs torch with CUDA)."""
    import torch
    try:
        import cupy
    except ImportError:
        cupy = None
    from fastconv.bench import machine
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    problem = fastconv_gpu_problem(cupy)
    facts = dict(facts or {})
    l2 = facts.get("gpu_l2_bytes") or machine.gpu_facts(torch).get("gpu_l2_bytes")
    timer = EventTimer(torch, l2)
    copy_gbps = copy_gbps or machine.gpu_copy_gbps(torch)
    h200 = load_h200()
    # One non-default stream for everything: torch's current stream inside the block, and CuPy's
    # (fastconv launches on CuPy's current stream for CuPy arrays, on torch's for torch tensors).
    stream = torch.cuda.Stream()
    on_cupy = (cupy.cuda.ExternalStream(stream.cuda_stream) if cupy is not None
               else contextlib.nullcontext())
    rows = []
    with torch.inference_mode(), torch.cuda.stream(stream), on_cupy:
        for dtype in dtypes:
            for case in cases:
                ctx = Ctx(torch, cupy, dtype, seed)
                rows += run_case(ctx, timer, case, cfg, facts, copy_gbps, h200, problem, on_row)
    return rows
