"""Small CPU ops (a few to ~100 microseconds): is running them on the pool worth it?

For each op, times one call on 1 thread and on N threads (default: all), in two regimes:
  back-to-back  the op called in a tight loop (the pool's workers are awake, spinning);
  after a gap   the calling thread first does `--gap-us` of its own work (pure Python, as a model's
                glue code would), so the workers have gone to sleep and each call must wake them.
and reports wall time per call and process CPU time per call (every thread of the process,
so spinning and waking workers count). No torch here: only fastconv's own pool runs.

    PYTHONPATH=build/dev-NAME/site python bench/run_small_ops.py [--threads 2] [--gap-us 300]
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

import fastconv
from fastconv.nn import functional as F


def cases(rng):
    f32 = np.float32

    def r(*shape):
        return rng.standard_normal(shape).astype(f32)

    x_pool = r(1, 64, 56, 56)
    x_gp = r(1, 512, 7, 7)
    x_dw = r(1, 32, 28, 28)
    w_dw = r(32, 1, 3, 3)
    x_l1, w_l1 = r(1, 1, 32, 32), r(6, 1, 5, 5)
    x_l2, w_l2 = r(1, 6, 14, 14), r(16, 6, 5, 5)
    x_c3, w_c3 = r(1, 64, 14, 14), r(64, 64, 3, 3)
    x_avg = r(1, 16, 28, 28)
    return [
        ("max_pool 3x3s2 1x64x56x56", lambda: F.max_pool2d(x_pool, 3, 2, 1)),
        ("avg_pool 2x2 1x16x28x28", lambda: F.avg_pool2d(x_avg, 2)),
        ("global avg 1x512x7x7", lambda: F.adaptive_avg_pool2d(x_gp, 1)),
        ("depthwise 3x3 1x32x28x28", lambda: F.conv2d(x_dw, w_dw, None, 1, 1, 1, 32)),
        ("lenet conv1 1x1x32x32 k6 5x5", lambda: F.conv2d(x_l1, w_l1)),
        ("lenet conv2 1x6x14x14 k16 5x5", lambda: F.conv2d(x_l2, w_l2)),
        ("conv 1x64x14x14 k64 3x3", lambda: F.conv2d(x_c3, w_c3, None, 1, 1)),
        ("relu 1x64x56x56", lambda: F.relu(x_pool)),
    ]


def spin(us):
    end = time.perf_counter() + us * 1e-6
    while time.perf_counter() < end:
        pass


def measure(fn, gap_us, min_time=0.3):
    """(wall us per call, cpu us per call) with `gap_us` of caller work between calls (excluded)."""
    for _ in range(20):
        fn()
        spin(gap_us)
    calls, wall, cpu = 0, 0.0, 0.0
    while wall < min_time or calls < 50:
        spin(gap_us)
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        w1, c1 = time.perf_counter(), time.process_time()
        wall += w1 - w0
        cpu += c1 - c0
        calls += 1
    # process_time is coarse per call but exact in sum; the gap's own CPU is outside [w0, w1], but
    # workers spinning or waking during the gap are charged to the gap, so cpu is measured again
    # over whole cycles below.
    w0, c0 = time.perf_counter(), time.process_time()
    n = max(50, calls // 2)
    for _ in range(n):
        spin(gap_us)
        fn()
    w1, c1 = time.perf_counter(), time.process_time()
    cycle_cpu = (c1 - c0) / n - gap_us * 1e-6  # the caller's gap is one core busy
    return wall / calls * 1e6, cycle_cpu * 1e6


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="pool size to compare with 1")
    ap.add_argument("--gap-us", type=float, default=300.0, help="caller work between calls (default 300)")
    args = ap.parse_args(argv)
    print(f"# small ops: {platform.processor() or platform.machine()}, fastconv {fastconv._C.isa()} path, "
          f"1 vs {args.threads} threads, gap {args.gap_us:g} us; load {os.getloadavg()[0]:.2f}")
    print("| op | 1 thr us | N thr us (b2b) | N thr cpu us (b2b) | 1 thr us (gap) | N thr us (gap) | N thr cpu us (gap) |")
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for name, fn in cases(rng):
        row = []
        for gap in (0.0, args.gap_us):
            fastconv.set_num_threads(1)
            w1, _ = measure(fn, gap)
            fastconv.set_num_threads(args.threads)
            wn, cn = measure(fn, gap)
            row.append((w1, wn, cn))
        (a1, an, ac), (g1, gn, gc) = row
        print(f"| {name} | {a1:.1f} | {an:.1f} | {ac:.1f} | {g1:.1f} | {gn:.1f} | {gc:.1f} |")
    latency = getattr(fastconv._C, "_pool_wake_latency_ns", None)
    threshold = getattr(getattr(fastconv.backends, "cpu", None), "small_op_us", None)
    if latency is not None:
        print(f"\npool: measured wake latency {latency() / 1000:.1f} us (mean of the last wakes); "
              f"small-op threshold {threshold:g} us")


if __name__ == "__main__":
    main()
