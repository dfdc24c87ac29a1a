#!/usr/bin/env python3
"""How far each CPU layer's decomposition could scale, measured on a machine with fewer cores
(issue 15: 16 threads, on 2-core development machines).

For each layer of the suite and each thread count T, fastconv plans the op for T threads as in a
real run (the same chunks, task splits and partial sums: they depend only on the shape and T),
but with schedule tracing on (`_C.set_schedule_trace`, common/parallel.h) every parallel region
runs its chunks one after another on the calling thread, each one timed. Replaying those chunk
times on T threads that claim chunks in order, as the pool does, gives the op's time on T
ideal cores:

    t_sim(T) = (time outside parallel regions) + sum over regions of the region's makespan

and the decomposition's ceiling on parallel efficiency, E(T) = t_sim(1) / (T * t_sim(T)). It
shows what the task split itself costs: too few chunks, unequal chunks, serial reductions,
work added by splitting (partial sums, packing repeated per task). It does not model memory
bandwidth, caches shared between cores or the wake-up of workers, so a real run on T cores is
at or below it; for bandwidth-bound ops (pooling, depthwise) well below.

  python3 bench/run_schedule.py                              # the suite, T = 1,2,4,8,16
  python3 bench/run_schedule.py --threads 1,16 --cases r50_res5_3x3 --json sched.json

Prints a markdown table: per layer and direction, the chunks of the largest region at the top
thread count, E(T) for each T, and E from 2 to the top count (t_sim(2) * 2 / (t_sim(T) * T)),
the figure issue 15 compares with PyTorch's (within 10 points).
"""
from __future__ import annotations

import argparse
import heapq
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_beside_torch import build_calls  # noqa: E402


def makespan(chunk_ns, threads: int, setup_ns: int = 0) -> int:
    """Time for `threads` threads, each first spending setup_ns on its own set-up, to run chunks
    claimed in index order (each goes to the thread that is free first, as the pool's and
    parallel_claim's shared counters hand them out)."""
    free = [setup_ns] * max(1, min(threads, len(chunk_ns)))
    for c in chunk_ns:
        heapq.heappush(free, heapq.heappop(free) + c)
    return max(free)


def simulate(fn, threads: int, repeat: int):
    """(t_sim ns, largest region's chunk count, chunk-time sum / t_sim(wall)) for `fn` planned for
    `threads` threads; the median of `repeat` traced calls."""
    import fastconv
    from fastconv import _C
    fastconv.set_num_threads(threads)
    fn()  # warm-up: scratch buffers, packed weights, page faults
    sims, chunks = [], 0
    for _ in range(repeat):
        _C.set_schedule_trace(True)
        try:
            t0 = time.perf_counter_ns()
            fn()
            wall = time.perf_counter_ns() - t0
        finally:
            regions = _C.take_schedule_trace()
            _C.set_schedule_trace(False)
        in_regions = sum(end - start for _, start, end, _, _ in regions)
        sims.append(max(0, wall - in_regions)
                    + sum(makespan(c, t, setup) for t, _, _, setup, c in regions))
        chunks = max([len(c) for *_, c in regions] or [1])
    return statistics.median(sims), chunks


def main(argv=None) -> int:
    import numpy as np
    import fastconv
    from fastconv.bench import harness
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2,4,8,16",
                   help="thread counts, comma-separated, 1 first (default: 1,2,4,8,16)")
    p.add_argument("--cases", help="case names or substrings, comma-separated (default: all)")
    p.add_argument("--repeat", type=int, default=5, help="traced calls per point (default: 5)")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = p.parse_args(argv)
    try:
        counts = [int(t) for t in args.threads.split(",")]
    except ValueError:
        p.error(f"--threads: expected comma-separated ints, got {args.threads!r}")
    if counts[0] != 1 or any(t < 1 for t in counts):
        p.error(f"--threads: expected positive counts starting with 1, got {args.threads!r}")
    if args.repeat < 1:
        p.error(f"--repeat: expected at least 1, got {args.repeat}")
    cases = harness.load_suite(harness.SUITE)
    if args.cases:
        cases = harness.select_cases(cases, args.cases)
    before = fastconv.num_threads()
    top = counts[-1]
    from fastconv.bench import machine
    facts = machine.cpu_facts(1)
    print(f"# Decomposition ceiling E(T) = t_sim(1) / (T t_sim(T)): fastconv "
          f"{facts['fastconv_version']} ({facts['isa']}) on {facts['cpu']}, traced on 1 core\n")
    head = " | ".join(f"E({t})" for t in counts[1:])
    print(f"| layer | direction | t(1) ms | chunks at {top} | {head} | E 2->{top} |")
    print("|---|---|---|---|" + "---|" * (len(counts) - 1) + "---|")
    rows = []
    rng = np.random.default_rng(0)
    try:
        for case in cases:
            for direction, fn, _ in build_calls(case, False, rng):
                sim = {t: simulate(fn, t, args.repeat) for t in counts}
                t1 = sim[1][0]
                eff = {t: t1 / (t * sim[t][0]) for t in counts}
                e2 = (2 * sim[2][0]) / (top * sim[top][0]) if 2 in sim and top > 2 else None
                row = dict(case=case["name"], direction=direction, t1_ms=t1 / 1e6,
                           chunks_top=sim[top][1], sim_ms={t: s[0] / 1e6 for t, s in sim.items()},
                           efficiency=eff, efficiency_2_to_top=e2)
                rows.append(row)
                cells = " | ".join(f"{eff[t]:.0%}" for t in counts[1:])
                print(f"| {case['name']} | {direction} | {t1 / 1e6:.2f} | {sim[top][1]} | {cells} | "
                      f"{'' if e2 is None else f'{e2:.0%}'} |", flush=True)
    finally:
        fastconv.set_num_threads(before)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
