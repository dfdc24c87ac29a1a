#!/usr/bin/env python3
"""CPU benchmark: fastconv._C against PyTorch's CPU path on the layer suite; a thin caller of the
package code behind `fastconv bench` (fastconv/bench/cpu.py: the checks and the timing, whose
docstring lists what is timed against what; report.py: the tables).

Prefer `fastconv bench` (CSV, JSON, plot, thread lists, the GPU). This script keeps the older
interface: --cases, --baseline-only, --list, and a results folder.

  PYTHONPATH=build/dev-bench/site python bench/run_cpu.py                 # full suite, few minutes
  python bench/run_cpu.py --quick --cases r50_res2,pooling --out /tmp/r   # filtered, fewer repeats
  python bench/run_cpu.py --baseline-only                                 # torch only

Writes <out>/cpu-<time>.md and .csv (default out: bench/results/, git-ignored) and prints the
markdown. Exit status 1 when a correctness check failed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (bench/harness.py: fastconv.bench.harness, results in bench/results)

from fastconv.bench import cpu, machine, report  # noqa: E402


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
    suite = harness.load_suite()
    try:
        cases = harness.select_cases(suite, args.cases)
    except ValueError as e:
        print(f"run_cpu.py: error: {e}", file=sys.stderr)
        return 2
    if args.list:
        for c in cases:
            print(f"{c['name']:<20} {harness.group_of(c)}")
        return 0
    try:
        torch = cpu.import_torch()
    except ImportError as e:
        sys.exit(f"run_cpu.py: {e}")
    import fastconv
    if args.threads:
        fastconv.set_num_threads(args.threads)
    threads = fastconv.num_threads()
    torch.set_num_threads(threads)
    cfg = harness.TimingConfig(
        warmup=args.warmup if args.warmup is not None else (1 if args.quick else 3),
        repeat=args.repeat or (5 if args.quick else 15),
        min_sample_s=(args.min_sample_ms if args.min_sample_ms else (1.0 if args.quick else 2.0))
        * 1e-3)
    facts = machine.cpu_facts(threads)
    meta = dict(device="cpu", machine=facts, ceilings={},
                settings=dict(threads=[threads], repeat=cfg.repeat, warmup=cfg.warmup,
                              min_sample_ms=cfg.min_sample_s * 1e3),
                load_start=harness.load_average())
    print(f"fastconv {facts['fastconv_version']} ({facts['isa']}, {threads} threads) vs torch "
          f"{facts['torch_version']} on {facts['cpu']}; {len(cases)} cases", file=sys.stderr)
    if harness.busy(meta["load_start"]):
        print(f"WARNING: load average {meta['load_start']:.2f} before starting: other "
              "processes are using the CPU, the timings will be unreliable", file=sys.stderr)
    t0 = time.perf_counter()
    rows = cpu.run(cases, cfg, threads, args.seed, baseline_only=args.baseline_only,
                   on_row=lambda r: print(cpu.row_line(r), file=sys.stderr, flush=True),
                   facts=facts)
    meta["elapsed_s"] = time.perf_counter() - t0
    expected = {g: sum(1 for c in suite if harness.group_of(c) == g) for g in harness.GROUPS}
    summary = harness.summarize(rows, expected)
    text = report.render(rows, meta, {threads: summary})
    md_path, csv_path = harness.result_paths(args.out, "cpu")
    with open(md_path, "w") as f:
        f.write(text + "\n")
    report.write_csv(csv_path, rows)
    print(text)
    print(f"wrote {md_path} and {csv_path}", file=sys.stderr)
    return 1 if any(r["status"] == "CHECK FAILED" or r["status"].startswith("error")
                    for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
