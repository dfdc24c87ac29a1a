"""CPU runner of the benchmark: fastconv._C against PyTorch's CPU path, case by case.

For every case (batch n_cpu), STYLE 11: check fastconv's result on that shape against a float64
reference (torch in float64; fastconv's error may be at most twice torch float32's), then time
fastconv and torch float32 side by side in this process with the same thread count.

  conv2d     fwd        F.conv2d                  vs aten.convolution
             bwd_input  grad.conv2d_input         vs aten.convolution_backward(mask T,F,F)
             bwd_weight grad.conv2d_weight        vs aten.convolution_backward(mask F,T,F)
  max_pool2d fwd        F.max_pool2d              vs aten.max_pool2d
             fwd+bwd    F.max_pool2d(return_indices=True) + grad.max_pool2d_input
                        vs aten.max_pool2d_with_indices + max_pool2d_with_indices_backward
  avg_pool2d fwd        F.avg_pool2d              vs aten.avg_pool2d
             fwd+bwd    + grad.avg_pool2d_input   vs + aten.avg_pool2d_backward

torch runs twice, on NCHW tensors and on channels_last tensors (converted before timing); the
baseline is the faster of the two and ratio = fastconv time / baseline time (lower is better).
Units: GFLOP/s for conv (2*N*K*P*Q*(C/groups)*R*S per direction), GB/s for pooling (bytes read +
written, int64 indices included).

    rows = run(cases, harness.TimingConfig(), threads=2)    # one dict per case and direction
"""
from __future__ import annotations

import sys
import traceback
from typing import Callable, List, Optional, Sequence

import numpy as np

from fastconv.bench import harness

CHECK_FACTOR = 2.0  # STYLE 7: fastconv's error vs float64 at most this times torch float32's
CHECK_ATOL = 2e-5   # plus this, scaled by the reference's magnitude (float32 table atol)


class CheckFailed(AssertionError):
    """fastconv's result on a benchmark shape is wrong (more than CHECK_FACTOR x torch's error)."""


def import_torch():
    """torch, or an ImportError that says how to install it (it is the baseline)."""
    try:
        import torch
    except ImportError:
        raise ImportError("the benchmark needs PyTorch as the baseline: pip install "
                          "'torch==2.13.0' (or the fastconv[test] extra)") from None
    return torch


def check_against(name, actual, baseline, reference, floor_rel: float = CHECK_ATOL):
    """STYLE 7 check; returns (err_fastconv, err_torch) or raises CheckFailed."""
    from fastconv.testing import assert_no_worse_than, max_error
    ref = np.asarray(reference, dtype=np.float64)
    floor = floor_rel * max(1.0, float(np.max(np.abs(ref), initial=0.0)))
    try:
        assert_no_worse_than(actual, baseline, ref, factor=CHECK_FACTOR, floor=floor, name=name)
    except AssertionError as e:
        raise CheckFailed(str(e)) from None
    return max_error(actual, ref), max_error(baseline, ref)


def is_nyi(e: BaseException) -> bool:
    """A kernel whose owner has not landed it yet (the stubs raise 'nyi')."""
    return isinstance(e, NotImplementedError) or str(e).strip().lower() == "nyi"


def check_row(row: dict, check, timed: dict, skip: Optional[str] = None) -> dict:
    """Checks one direction before it is timed: sets row's status ('ok' with the errors of
    fastconv and torch against float64, 'CHECK FAILED', 'nyi', 'error: ...', or `skip` when given,
    then no check runs) and returns the implementations to time: fastconv only when it passed."""
    timed = dict(timed)
    if skip is not None:
        row["status"] = skip
    else:
        try:
            row["err_fastconv"], row["err_torch"] = check()
            row["status"] = "ok"
            return timed
        except CheckFailed as e:
            row["status"] = "CHECK FAILED"
            print(f"\nCHECK FAILED: {e}\n", file=sys.stderr, flush=True)
        except Exception as e:  # noqa: BLE001 - a kernel not landed yet, or a crash to report
            row["status"] = "nyi" if is_nyi(e) else f"error: {type(e).__name__}: {e}"
            if not is_nyi(e):
                traceback.print_exc()
    del timed["fastconv"]
    return timed


# ---- per-case setup: inputs, the callables to time, the checks -------------------------------


class Ctx:
    def __init__(self, torch, cfg: harness.TimingConfig, seed: int = 0):
        import fastconv.nn.functional as F
        import fastconv.nn.grad as G
        self.torch, self.F, self.G, self.cfg = torch, F, G, cfg
        self.rng = np.random.default_rng(seed)
        self.cl = torch.channels_last

    def t(self, a):
        return self.torch.from_numpy(a)

    def t_cl(self, a):
        return self.torch.from_numpy(a).contiguous(memory_format=self.cl)

    def randn(self, shape):
        return self.rng.standard_normal(shape, dtype=np.float32)


def conv_impls(ctx: Ctx, case: dict, d: dict):
    """{direction: (check_fn, {impl: (fn, sets)})} for one conv case."""
    torch, F, G = ctx.torch, ctx.F, ctx.G
    aten = torch.ops.aten
    N, C, H, W, K, R, S, P, Q = (d[k] for k in "N C H W K R S P Q".split())
    st, pad, groups = d["stride"], d["pad"], d["groups"]
    xs, ws, dys = (N, C, H, W), (K, C // groups, R, S), (N, K, P, Q)
    per_set = 4 * (np.prod(xs) + np.prod(ws) + np.prod(dys))
    nsets = harness.rotation_count(int(per_set), ctx.cfg)
    sets = [(ctx.randn(xs), ctx.randn(ws), ctx.randn(dys)) for _ in range(nsets)]
    t_sets = [tuple(ctx.t(a) for a in s) for s in sets]
    cl_sets = [tuple(ctx.t_cl(a) for a in s) for s in sets]
    S2, P2, D2 = [st, st], [pad, pad], [1, 1]

    def t_fwd(x, w, dy):
        return aten.convolution(x, w, None, S2, P2, D2, False, [0, 0], groups)

    def t_bi(x, w, dy):
        return aten.convolution_backward(dy, x, w, None, S2, P2, D2, False, [0, 0], groups,
                                         [True, False, False])[0]

    def t_bw(x, w, dy):
        return aten.convolution_backward(dy, x, w, None, S2, P2, D2, False, [0, 0], groups,
                                         [False, True, False])[1]

    def f_fwd(x, w, dy):
        return F.conv2d(x, w, None, st, pad, 1, groups)

    def f_bi(x, w, dy):
        return G.conv2d_input(x.shape, w, dy, st, pad, 1, groups)

    def f_bw(x, w, dy):
        return G.conv2d_weight(x, w.shape, dy, st, pad, 1, groups)

    def checker(f_fn, t_fn):
        def check():
            x, w, dy = sets[0]
            x64, w64, dy64 = (ctx.t(a.astype(np.float64)) for a in (x, w, dy))
            ref = t_fn(x64, w64, dy64).numpy()
            base = t_fn(*t_sets[0]).numpy()
            return check_against(f"{case['name']}", f_fn(x, w, dy), base, ref)
        return check

    out = {}
    for name, f_fn, t_fn in (("fwd", f_fwd, t_fwd), ("bwd_input", f_bi, t_bi),
                             ("bwd_weight", f_bw, t_bw)):
        out[name] = (checker(f_fn, t_fn), {"fastconv": (f_fn, sets), "torch_nchw": (t_fn, t_sets),
                                           "torch_cl": (t_fn, cl_sets)})
    return out, nsets


def pool_impls(ctx: Ctx, case: dict, d: dict):
    """{direction: (check_fn, {impl: (fn, sets)})} for one pooling case."""
    torch, F, G = ctx.torch, ctx.F, ctx.G
    aten = torch.ops.aten
    N, C, H, W, P, Q = (d[k] for k in "N C H W P Q".split())
    k2, s2, p2 = [d["R"], d["S"]], [d["stride"]] * 2, [d["pad"]] * 2
    xs, ys = (N, C, H, W), (N, C, P, Q)
    nsets = harness.rotation_count(4 * (int(np.prod(xs)) + int(np.prod(ys))), ctx.cfg)
    sets = [(ctx.randn(xs), ctx.randn(ys)) for _ in range(nsets)]
    t_sets = [tuple(ctx.t(a) for a in s) for s in sets]
    cl_sets = [tuple(ctx.t_cl(a) for a in s) for s in sets]
    kk, ss, pp = tuple(k2), tuple(s2), tuple(p2)

    if case["op"] == "max_pool2d":
        def f_fwd(x, dy):
            return F.max_pool2d(x, kk, ss, pp)

        def f_fb(x, dy):
            _, idx = F.max_pool2d(x, kk, ss, pp, return_indices=True)
            return G.max_pool2d_input(x.shape, dy, idx)

        def t_fwd(x, dy):
            return aten.max_pool2d(x, k2, s2, p2, [1, 1], False)

        def t_fb(x, dy):
            _, idx = aten.max_pool2d_with_indices(x, k2, s2, p2, [1, 1], False)
            return aten.max_pool2d_with_indices_backward(dy, x, k2, s2, p2, [1, 1], False, idx)

        def extra_check():  # the argmax itself must match torch's (ties have probability ~0)
            x = sets[0][0]
            _, idx = F.max_pool2d(x, kk, ss, pp, return_indices=True)
            _, t_idx = aten.max_pool2d_with_indices(ctx.t(x), k2, s2, p2, [1, 1], False)
            if not np.array_equal(idx, t_idx.numpy()):
                bad = int(np.sum(idx != t_idx.numpy()))
                raise CheckFailed(f"{case['name']}: {bad} max_pool2d indices differ from torch's")
    else:
        def f_fwd(x, dy):
            return F.avg_pool2d(x, kk, ss, pp)

        def f_fb(x, dy):
            F.avg_pool2d(x, kk, ss, pp)
            return G.avg_pool2d_input(x.shape, dy, kk, ss, pp)

        def t_fwd(x, dy):
            return aten.avg_pool2d(x, k2, s2, p2, False, True, None)

        def t_fb(x, dy):
            aten.avg_pool2d(x, k2, s2, p2, False, True, None)
            return aten.avg_pool2d_backward(dy, x, k2, s2, p2, False, True, None)

        def extra_check():
            pass

    def checker(f_fn, t_fn, extra=None):
        def check():
            x, dy = sets[0]
            ref = t_fn(ctx.t(x.astype(np.float64)), ctx.t(dy.astype(np.float64))).numpy()
            res = check_against(case["name"], f_fn(x, dy), t_fn(*t_sets[0]).numpy(), ref)
            if extra:
                extra()
            return res
        return check

    out = {}
    for name, f_fn, t_fn, extra in (("fwd", f_fwd, t_fwd, None),
                                    ("fwd+bwd", f_fb, t_fb, extra_check)):
        out[name] = (checker(f_fn, t_fn, extra), {"fastconv": (f_fn, sets),
                                                  "torch_nchw": (t_fn, t_sets),
                                                  "torch_cl": (t_fn, cl_sets)})
    return out, nsets


def shape_str(case: dict, d: dict) -> str:
    s = f"{d['N']}x{d['C']}x{d['H']}x{d['W']}"
    if case["op"] == "conv2d":
        s += f" k{d['K']} {d['R']}x{d['S']}"
    else:
        s += f" {d['R']}x{d['S']}"
    s += f" s{d['stride']} p{d['pad']}"
    if d["groups"] > 1:
        s += f" g{d['groups']}"
    return s


def directions(case: dict):
    return harness.CONV_DIRS if case["op"] == "conv2d" else harness.POOL_DIRS


def run_case(ctx: Ctx, case: dict, facts: dict, baseline_only: bool = False,
             on_row: Optional[Callable[[dict], None]] = None) -> List[dict]:
    """Check, then time, every direction of one case; one row per direction. A failed check is
    printed to stderr at once (with the worst elements) and leaves fastconv untimed."""
    d = harness.case_dims(case, "n_cpu")
    group = harness.group_of(case)
    make = conv_impls if case["op"] == "conv2d" else pool_impls
    impls, nsets = make(ctx, case, d)
    rows = []
    for direction, (check, timed) in impls.items():
        work, unit = harness.work_of(case, direction)
        row = dict(case=case["name"], group=group, op=case["op"], direction=direction, n=d["N"],
                   dtype="float32", shape=shape_str(case, d), unit=unit, input_sets=nsets,
                   is_3x3_dense=(case["op"] == "conv2d" and d["groups"] == 1
                                 and d["R"] == d["S"] == 3), **facts)
        timed = check_row(row, check, timed, "baseline-only" if baseline_only else None)
        res = harness.measure(timed, ctx.cfg)
        us = {k: v.median_s * 1e6 for k, v in res.items()}
        for k, v in res.items():  # the fastest sample: more robust than the median on a busy CPU
            row[f"{k}_min_us"] = v.min_s * 1e6
        row["calls_per_sample"] = max(v.calls_per_sample for v in res.values())
        fill_times(row, us, work)
        rows.append(row)
        if on_row:
            on_row(row)
    return rows


def fill_times(row: dict, us: dict, work: float) -> None:
    """Medians (us), rates (work / time / 1e9: GFLOP/s or GB/s) and ratios of a row, from the
    medians of fastconv (absent when it was not timed), torch_nchw and torch_cl."""
    row["fastconv_us"] = us.get("fastconv")
    row["torch_nchw_us"], row["torch_cl_us"] = us["torch_nchw"], us["torch_cl"]
    row["baseline_us"] = min(us["torch_nchw"], us["torch_cl"])
    for name in ("fastconv", "torch_nchw", "torch_cl", "baseline"):
        t = row[f"{name}_us"]
        row[f"{name}_rate"] = work / (t * 1e-6) / 1e9 if t else None
    if row["fastconv_us"] is not None:
        row["ratio"] = row["fastconv_us"] / row["baseline_us"]
        row["ratio_nchw"] = row["fastconv_us"] / row["torch_nchw_us"]
        row["ratio_channels_last"] = row["fastconv_us"] / row["torch_cl_us"]


def row_line(row: dict) -> str:
    """One progress line for a finished row."""
    f = harness.fmt
    return (f"  {row['case']:<20} {row['direction']:<10} fastconv {f(row['fastconv_us']):>8} us"
            f"  torch nchw {f(row['torch_nchw_us']):>8} cl {f(row['torch_cl_us']):>8} us  "
            f"ratio {f(row.get('ratio')):>6}  [{row['status']}]")


def run(cases: Sequence[dict], cfg: harness.TimingConfig, threads: int, seed: int = 0,
        baseline_only: bool = False, on_row: Optional[Callable[[dict], None]] = None,
        facts: Optional[dict] = None) -> List[dict]:
    """Check and time the cases with `threads` threads for fastconv and torch alike; rows carry
    `facts` (machine facts) besides their own fields."""
    import fastconv
    torch = import_torch()
    fastconv.set_num_threads(threads)
    torch.set_num_threads(threads)
    ctx = Ctx(torch, cfg, seed)
    rows = []
    with torch.inference_mode():
        for case in cases:
            rows += run_case(ctx, case, facts or {}, baseline_only, on_row)
    return rows
