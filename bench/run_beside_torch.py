#!/usr/bin/env python3
"""fastconv's CPU layers inside a PyTorch process, in torch's default environment (issue 13 item 4).

PyTorch's idle OpenMP threads busy-wait for milliseconds after each torch op (libgomp's default
with OMP_WAIT_POLICY unset). This times each layer of the suite in fresh processes:
  alone      fastconv in a process that never imports torch;
  fastconv   a torch process, fastconv.backends.cpu.thread_pool = "fastconv" (its own pool);
  auto       the same with "auto" (fastconv's loops on torch's OpenMP threads when they spin).
In the torch processes every timed fastconv call comes right after torch's call of the same layer
(as in a training step where torch and fastconv ops alternate); only fastconv's call is timed.
Inputs rotate through sets of about 64 MB in all, as in the layer bench.
The figure is the median per-call time; ratio = its time in a torch process / alone. Issue 13's
target: no layer above 1.15.

  python3 bench/run_beside_torch.py                       # the whole CPU suite, ~3 minutes
  python3 bench/run_beside_torch.py --cases r50_res4_3x3,mbv2_dw_144_56 --repeat 41

Environment: the children get the caller's environment without OMP_WAIT_POLICY (torch's default),
or with --omp-wait-policy's value. --steady-malloc also fixes glibc's mmap and trim thresholds
(MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_) in every child: some torch ops (the depthwise
convolution, for one) free memory in a way that makes glibc trim its heap, and the next large
allocation, here the numpy array fastconv returns, then page-faults its memory in afresh (700
faults, ~1.7 ms, for a 7 MB output measured on the 2-core VM). That is an allocator effect that
any allocation after such an op pays, torch's own included; the faults column shows it, and
--steady-malloc separates it from the threads' interplay. Prints a markdown table; --json writes
the rows.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

MODES = ("alone", "fastconv", "auto")


def build_calls(case, with_torch, rng):
    """[(direction, fastconv_fn, torch_fn or None)] for one suite case, on fresh random inputs."""
    import numpy as np
    import fastconv.nn.functional as F
    import fastconv.nn.grad as G
    from fastconv.bench import harness
    d = harness.case_dims(case)
    N, C, H, W, K, R, S, P, Q = (d[k] for k in "N C H W K R S P Q".split())
    st, pad, groups = d["stride"], d["pad"], d["groups"]
    x = rng.standard_normal((N, C, H, W), dtype=np.float32)
    torch = None
    if with_torch:
        import torch
        tx = torch.from_numpy(x)
    if case["op"] == "conv2d":
        w = rng.standard_normal((K, C // groups, R, S), dtype=np.float32)
        dy = rng.standard_normal((N, K, P, Q), dtype=np.float32)
        calls = [("fwd", lambda: F.conv2d(x, w, None, st, pad, 1, groups)),
                 ("bwd_input", lambda: G.conv2d_input(x.shape, w, dy, st, pad, 1, groups)),
                 ("bwd_weight", lambda: G.conv2d_weight(x, w.shape, dy, st, pad, 1, groups))]
        if torch:
            tw, tdy = torch.from_numpy(w), torch.from_numpy(dy)
            aten, S2, P2 = torch.ops.aten, [st, st], [pad, pad]
            t = {"fwd": lambda: aten.convolution(tx, tw, None, S2, P2, [1, 1], False, [0, 0],
                                                 groups)}
            for i, name in ((0, "bwd_input"), (1, "bwd_weight")):
                mask = [i == 0, i == 1, False]
                t[name] = (lambda m=mask, i=i: aten.convolution_backward(
                    tdy, tx, tw, None, S2, P2, [1, 1], False, [0, 0], groups, m)[i])
    else:
        kk, ss, pp = (case["r"], case["s"]), (st, st), (pad, pad)
        dy = rng.standard_normal((N, C, P, Q), dtype=np.float32)
        if case["op"] == "max_pool2d":
            def fb():
                _, idx = F.max_pool2d(x, kk, ss, pp, return_indices=True)
                return G.max_pool2d_input(x.shape, dy, idx)
            calls = [("fwd", lambda: F.max_pool2d(x, kk, ss, pp)), ("fwd+bwd", fb)]
        else:
            def fb():
                F.avg_pool2d(x, kk, ss, pp)
                return G.avg_pool2d_input(x.shape, dy, kk, ss, pp)
            calls = [("fwd", lambda: F.avg_pool2d(x, kk, ss, pp)), ("fwd+bwd", fb)]
        if torch:
            tf = torch.nn.functional
            pool = tf.max_pool2d if case["op"] == "max_pool2d" else tf.avg_pool2d
            t = {"fwd": lambda: pool(tx, kk, ss, pp), "fwd+bwd": lambda: pool(tx, kk, ss, pp)}
    return [(name, fn, t[name] if torch else None) for name, fn in calls]


def child(args) -> None:
    """Times the selected layers in this process, in one mode; prints {case/direction: seconds}."""
    import numpy as np
    import fastconv
    from fastconv.bench import harness
    with_torch = args.child != "alone"
    if with_torch:
        import torch
        torch.set_num_threads(args.threads)
        fastconv.backends.cpu.thread_pool = args.child
    fastconv.set_num_threads(args.threads)
    cases = harness.select_cases(harness.load_suite(), args.cases)
    rng = np.random.default_rng(0)
    out = {"in_use": fastconv.backends.cpu.thread_pool_in_use,
           "torch_loaded": "torch" in sys.modules, "times": {}}
    for case in cases:
        # Input sets rotate as in the layer bench (harness.rotation_count: about 64 MB in all),
        # so that no call finds its inputs in cache from the call before; torch's call before a
        # timed fastconv call works on the previous set.
        d = harness.case_dims(case)
        per_set = 4 * 3 * d["N"] * max(d["C"] * d["H"] * d["W"], d["K"] * d["P"] * d["Q"])
        n = max(2, harness.rotation_count(per_set, harness.TimingConfig()))
        built = [build_calls(case, with_torch, rng) for _ in range(n)]
        sets = [{name: (built[j][k][1], built[j - 1][k][2]) for k, (name, _, _) in
                 enumerate(built[j])} for j in range(n)]
        for name in sets[0]:
            samples, faults = [], []
            for i in range(args.warmup + args.repeat):
                fn, tfn = sets[i % len(sets)][name]
                if tfn is not None:
                    tfn()
                f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                t0 = time.perf_counter()
                fn()
                t1 = time.perf_counter()
                if i >= args.warmup:
                    samples.append(t1 - t0)
                    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
            out["times"][f"{case['name']}/{name}"] = (statistics.median(samples),
                                                      statistics.median(faults))
    print(json.dumps(out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=None,
                    help="case names or substrings, comma-separated (default: the whole suite)")
    ap.add_argument("--threads", type=int, default=2, help="threads for both libraries (default 2)")
    ap.add_argument("--repeat", type=int, default=21, help="timed calls per layer (default 21)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="processes per mode, alternating modes; the lower median is kept (default 2)")
    ap.add_argument("--omp-wait-policy", default=None,
                    help="OMP_WAIT_POLICY for the children (default: unset, torch's default)")
    ap.add_argument("--steady-malloc", action="store_true",
                    help="fix glibc's mmap/trim thresholds in every child (see above; default: off)")
    ap.add_argument("--json", default=None, help="write the rows here (default: not written)")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads < 1 or args.repeat < 1 or args.warmup < 0 or args.rounds < 1:
        ap.error("--threads, --repeat and --rounds must be >= 1, --warmup >= 0")
    if args.child:
        child(args)
        return 0

    from fastconv.bench import harness
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if args.omp_wait_policy:
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    if args.steady_malloc:
        env.update(MALLOC_MMAP_THRESHOLD_=str(1 << 30), MALLOC_TRIM_THRESHOLD_=str(1 << 31))
    best, in_use, faults = {}, {}, {}
    for _ in range(args.rounds):
        for mode in MODES:
            cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, "--threads",
                   str(args.threads), "--repeat", str(args.repeat), "--warmup", str(args.warmup)]
            if args.cases:
                cmd += ["--cases", args.cases]
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if r.returncode != 0:
                sys.stderr.write(r.stderr)
                return 1
            res = json.loads(r.stdout.strip().splitlines()[-1])
            if mode == "alone" and res["torch_loaded"]:
                sys.exit("the 'alone' process imported torch; it must not")
            in_use[mode] = res["in_use"]
            for key, (s, nf) in res["times"].items():
                best.setdefault(key, {}).setdefault(mode, s)
                best[key][mode] = min(best[key][mode], s)
                faults.setdefault(key, {})[mode] = max(faults.get(key, {}).get(mode, 0), nf)
    print(f"CPU: {harness.cpu_model()}; threads {args.threads}; OMP_WAIT_POLICY "
          f"{args.omp_wait_policy or 'unset'}; malloc {'steady' if args.steady_malloc else 'default'}; "
          f"load {harness.load_average()}")
    print("thread pool in use: " + "; ".join(f"{m}: {in_use[m]}" for m in MODES) + "\n")
    rows, table = [], []
    for key, t in best.items():
        row = dict(layer=key, alone_ms=t["alone"] * 1e3, fastconv_ms=t["fastconv"] * 1e3,
                   auto_ms=t["auto"] * 1e3, ratio_fastconv=t["fastconv"] / t["alone"],
                   ratio_auto=t["auto"] / t["alone"],
                   faults="/".join(f"{faults[key][m]:g}" for m in MODES))
        rows.append(row)
        table.append([key, harness.fmt(row["alone_ms"]), harness.fmt(row["fastconv_ms"]),
                      harness.fmt(row["auto_ms"]), harness.fmt(row["ratio_fastconv"]),
                      harness.fmt(row["ratio_auto"]), row["faults"]])
    for col in ("ratio_fastconv", "ratio_auto"):
        vals = [r[col] for r in rows]
        table.append([f"**{col}** geomean {harness.fmt(harness.geomean(vals))}, worst "
                      f"{harness.fmt(max(vals))}", "", "", "", "", "", ""])
    print(harness.markdown_table(["layer", "alone ms", "torch proc, own pool ms",
                                  "torch proc, auto ms", "ratio own pool", "ratio auto",
                                  "page faults/call"], table))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "in_use": in_use, "threads": args.threads,
                       "omp_wait_policy": args.omp_wait_policy,
                       "steady_malloc": args.steady_malloc}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
