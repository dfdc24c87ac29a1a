#!/usr/bin/env python3
"""CPU benchmark: fastconv._C against PyTorch's CPU path on the layer suite (bench/suite.json).

For every case (batch n_cpu), STYLE 11: check fastconv's result on that shape against a float64
reference (torch in float64; fastconv's error may be at most twice torch float32's), then time
fastconv and torch float32 side by side in this process with the same thread count, then report.

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

  PYTHONPATH=build/dev-bench/site python bench/run_cpu.py                 # full suite, few minutes
  python bench/run_cpu.py --quick --cases r50_res2,pooling --out /tmp/r   # filtered, fewer repeats
  python bench/run_cpu.py --baseline-only                                 # torch only

Writes <out>/cpu-<time>.md and .csv (default out: bench/results/, git-ignored) and prints the
markdown. Exit status 1 when a correctness check failed.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (bench/harness.py, shared with the GPU runner)

CHECK_FACTOR = 2.0  # STYLE 7: fastconv's error vs float64 at most this times torch float32's
CHECK_ATOL = 2e-5   # plus this, scaled by the reference's magnitude (float32 table atol)

COLUMNS = ["case", "group", "op", "direction", "n", "shape", "status", "fastconv_us",
           "torch_nchw_us", "torch_cl_us", "baseline_us", "fastconv_min_us", "torch_nchw_min_us",
           "torch_cl_min_us", "ratio", "ratio_nchw",
           "ratio_channels_last", "unit", "fastconv_rate", "torch_nchw_rate", "torch_cl_rate",
           "baseline_rate", "err_fastconv", "err_torch", "calls_per_sample", "input_sets",
           "cpu", "isa", "threads", "torch_version", "fastconv_version", "load_start"]


class CheckFailed(AssertionError):
    pass


def _import_libs():
    try:
        import torch
    except ImportError:
        sys.exit("run_cpu.py needs PyTorch as the baseline: pip install 'torch==2.13.0' "
                 "(or the fastconv[test] extra)")
    import fastconv
    import fastconv.nn.functional as F
    import fastconv.nn.grad as G
    from fastconv import _C
    return torch, fastconv, F, G, _C


def check_against(name, actual, baseline, reference):
    """STYLE 7 check; returns (err_fastconv, err_torch) or raises CheckFailed."""
    from fastconv.testing import assert_no_worse_than, max_error
    ref = np.asarray(reference, dtype=np.float64)
    floor = CHECK_ATOL * max(1.0, float(np.max(np.abs(ref), initial=0.0)))
    try:
        assert_no_worse_than(actual, baseline, ref, factor=CHECK_FACTOR, floor=floor, name=name)
    except AssertionError as e:
        raise CheckFailed(str(e)) from None
    return max_error(actual, ref), max_error(baseline, ref)


def is_nyi(e: BaseException) -> bool:
    """A kernel whose owner has not landed it yet (the stubs raise 'nyi')."""
    return isinstance(e, NotImplementedError) or str(e).strip().lower() == "nyi"


# ---- per-case setup: inputs, the callables to time, the checks -------------------------------


class Ctx:
    def __init__(self, args, torch, fastconv, F, G, C, cfg):
        self.args, self.torch, self.fc, self.F, self.G, self.C, self.cfg = \
            args, torch, fastconv, F, G, C, cfg
        self.rng = np.random.default_rng(args.seed)
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


def run_case(ctx: Ctx, case: dict, device: dict):
    d = harness.case_dims(case, "n_cpu")
    group = harness.group_of(case)
    make = conv_impls if case["op"] == "conv2d" else pool_impls
    impls, nsets = make(ctx, case, d)
    rows = []
    for direction, (check, timed) in impls.items():
        work, unit = harness.work_of(case, direction)
        row = dict(case=case["name"], group=group, op=case["op"], direction=direction, n=d["N"],
                   shape=shape_str(case, d), unit=unit, input_sets=nsets,
                   is_3x3_dense=(case["op"] == "conv2d" and d["groups"] == 1
                                 and d["R"] == d["S"] == 3), **device)
        timed = dict(timed)
        if ctx.args.baseline_only:
            row["status"] = "baseline-only"
            del timed["fastconv"]
        else:
            try:
                row["err_fastconv"], row["err_torch"] = check()
                row["status"] = "ok"
            except CheckFailed as e:
                row["status"] = "CHECK FAILED"
                print(f"\n{e}\n", file=sys.stderr)
                del timed["fastconv"]
            except Exception as e:  # noqa: BLE001 - a kernel not landed yet, or a crash to report
                row["status"] = "nyi" if is_nyi(e) else f"error: {type(e).__name__}: {e}"
                if not is_nyi(e):
                    traceback.print_exc()
                del timed["fastconv"]
        res = harness.measure(timed, ctx.cfg)
        us = {k: v.median_s * 1e6 for k, v in res.items()}
        for k, v in res.items():  # the fastest sample: more robust than the median on a busy CPU
            row[f"{k}_min_us"] = v.min_s * 1e6
        row["calls_per_sample"] = max(v.calls_per_sample for v in res.values())
        row["fastconv_us"] = us.get("fastconv")
        row["torch_nchw_us"], row["torch_cl_us"] = us["torch_nchw"], us["torch_cl"]
        row["baseline_us"] = min(us["torch_nchw"], us["torch_cl"])
        scale = 1e9  # GFLOP/s and GB/s alike: work per second / 1e9
        for key, name in (("fastconv_rate", "fastconv"), ("torch_nchw_rate", "torch_nchw"),
                          ("torch_cl_rate", "torch_cl")):
            row[key] = work / (us[name] * 1e-6) / scale if name in us else None
        row["baseline_rate"] = work / (row["baseline_us"] * 1e-6) / scale
        if row["fastconv_us"] is not None:
            row["ratio"] = row["fastconv_us"] / row["baseline_us"]
            row["ratio_nchw"] = row["fastconv_us"] / row["torch_nchw_us"]
            row["ratio_channels_last"] = row["fastconv_us"] / row["torch_cl_us"]
        rows.append(row)
        r = row.get("ratio")
        print(f"  {case['name']:<20} {direction:<10} fastconv {harness.fmt(row['fastconv_us']):>8} us"
              f"  torch nchw {harness.fmt(row['torch_nchw_us']):>8} cl "
              f"{harness.fmt(row['torch_cl_us']):>8} us  ratio {harness.fmt(r):>6}  "
              f"[{row['status']}]", file=sys.stderr, flush=True)
    return rows


# ---- report -----------------------------------------------------------------------------------


def render(rows, summary, device, cfg, elapsed, args) -> str:
    conv = [r for r in rows if r["op"] == "conv2d"]
    pool = [r for r in rows if r["op"] != "conv2d"]
    parts = ["# fastconv CPU benchmark", "",
             f"- CPU: {device['cpu']} ({device['cores']} usable cores)",
             f"- fastconv {device['fastconv_version']}, ISA {device['isa']} "
             f"(best available: {device['best_isa']}), {device['threads']} threads",
             f"- PyTorch {device['torch_version']} CPU, {device['threads']} threads; "
             f"numpy {np.__version__}; Python {platform.python_version()}",
             f"- {time.strftime('%Y-%m-%d %H:%M:%S')}; median of {cfg.repeat} samples after "
             f"{cfg.warmup} warm-up calls, each sample >= {cfg.min_sample_s * 1e3:g} ms; "
             f"run took {elapsed:.0f} s",
             f"- load average (1 min): {harness.fmt(device['load_start'])} before the run, "
             f"{harness.fmt(device['load_end'])} at its end (the run itself adds about "
             f"{device['threads']})" + ("; **other processes were using the CPU: timings are "
                                         "unreliable**" if harness.busy(device["load_start"])
                                         else ""),
             "- ratio = fastconv time / baseline time (lower is better); baseline = the faster of "
             "torch NCHW and torch channels_last (cl); times are medians in microseconds", ""]
    if conv:
        parts += ["## Convolution (GFLOP/s = 2*N*K*P*Q*(C/groups)*R*S / time)", "",
                  harness.markdown_table(
                      ["case", "group", "shape", "dir", "fastconv us", "torch nchw us",
                       "torch cl us", "ratio", "fastconv GFLOP/s", "baseline GFLOP/s", "check"],
                      [[r["case"], r["group"], r["shape"], r["direction"], r["fastconv_us"],
                        r["torch_nchw_us"], r["torch_cl_us"], r.get("ratio"), r["fastconv_rate"],
                        r["baseline_rate"], r["status"]] for r in conv]), ""]
    if pool:
        parts += ["## Pooling (GB/s = bytes read + written, int64 indices included / time)", "",
                  harness.markdown_table(
                      ["case", "shape", "dir", "fastconv us", "torch nchw us", "torch cl us",
                       "ratio", "vs nchw", "vs cl", "fastconv GB/s", "baseline GB/s", "check"],
                      [[r["case"], r["shape"], r["direction"], r["fastconv_us"], r["torch_nchw_us"],
                        r["torch_cl_us"], r.get("ratio"), r.get("ratio_nchw"),
                        r.get("ratio_channels_last"), r["fastconv_rate"], r["baseline_rate"],
                        r["status"]] for r in pool]), ""]
    if summary:
        parts += ["## Targets", "",
                  harness.markdown_table(["group", "metric", "value", "target", "verdict", "note"],
                                         [[s["group"], s["metric"], harness.fmt(s["value"], 4),
                                           s["target"],
                                           s["verdict"], s["note"]] for s in summary]), ""]
    bad = [r for r in rows if r["status"] not in ("ok", "baseline-only")]
    if bad:
        parts += ["Not timed for fastconv: " + ", ".join(
            f"{r['case']} {r['direction']} ({r['status']})" for r in bad), ""]
    return "\n".join(parts)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", help="comma-separated case names or substrings, or a group "
                   "(dense, depthwise, pooling); default: all")
    p.add_argument("--repeat", type=int, help="timed samples per implementation (default 15; "
                   "5 with --quick)")
    p.add_argument("--warmup", type=int, help="warm-up calls (default 3; 1 with --quick)")
    p.add_argument("--min-sample-ms", type=float, help="minimum length of one sample in ms "
                   "(tiny calls are repeated within a sample; default 2, 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="fewer repeats (a rough number in ~1 min)")
    p.add_argument("--threads", type=int, help="threads for fastconv and torch alike (default: "
                   "fastconv.num_threads())")
    p.add_argument("--out", default=os.path.join(harness.HERE, "results"),
                   help="output directory (files cpu-<time>.md/.csv) or a .md/.csv path "
                   "(default: bench/results/)")
    p.add_argument("--baseline-only", action="store_true",
                   help="time torch only (no fastconv, no checks)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--list", action="store_true", help="list the selected cases and exit")
    args = p.parse_args(argv)
    for name in ("repeat", "warmup", "threads"):
        v = getattr(args, name)
        if v is not None and v < (0 if name == "warmup" else 1):
            p.error(f"--{name} must be positive, got {v}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cases = harness.select_cases(harness.load_suite(), args.cases)
    except ValueError as e:
        print(f"run_cpu.py: error: {e}", file=sys.stderr)
        return 2
    if args.list:
        for c in cases:
            print(f"{c['name']:<20} {harness.group_of(c)}")
        return 0
    torch, fastconv, F, G, C = _import_libs()
    if args.threads:
        fastconv.set_num_threads(args.threads)
    threads = fastconv.num_threads()
    torch.set_num_threads(threads)
    cfg = harness.TimingConfig(
        warmup=args.warmup if args.warmup is not None else (1 if args.quick else 3),
        repeat=args.repeat or (5 if args.quick else 15),
        min_sample_s=(args.min_sample_ms if args.min_sample_ms else (1.0 if args.quick else 2.0))
        * 1e-3)
    device = dict(cpu=harness.cpu_model(), cores=harness.usable_cpus(), isa=C.isa(),
                  best_isa=C.best_isa(), threads=threads, torch_version=torch.__version__,
                  fastconv_version=fastconv.__version__, load_start=harness.load_average())
    print(f"fastconv {device['fastconv_version']} ({device['isa']}, {threads} threads) vs torch "
          f"{device['torch_version']} on {device['cpu']}; {len(cases)} cases", file=sys.stderr)
    if harness.busy(device["load_start"]):
        print(f"WARNING: load average {device['load_start']:.2f} before starting: other "
              "processes are using the CPU, the timings will be unreliable", file=sys.stderr)
    ctx = Ctx(args, torch, fastconv, F, G, C, cfg)
    t0 = time.perf_counter()
    rows = []
    with torch.inference_mode():
        for case in cases:
            rows += run_case(ctx, case, device)
    elapsed = time.perf_counter() - t0
    device["load_end"] = harness.load_average()
    expected = {g: sum(1 for c in harness.load_suite() if harness.group_of(c) == g)
                for g in harness.GROUPS}
    summary = harness.summarize(rows, expected)
    text = render(rows, summary, device, cfg, elapsed, args)
    md_path, csv_path = harness.result_paths(args.out, "cpu")
    with open(md_path, "w") as f:
        f.write(text + "\n")
    harness.write_csv(csv_path, rows, COLUMNS)
    print(text)
    print(f"wrote {md_path} and {csv_path}", file=sys.stderr)
    return 1 if any(r["status"] == "CHECK FAILED" or r["status"].startswith("error")
                    for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
