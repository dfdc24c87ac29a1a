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
  python3 bench/run_schedule.py --models resnet18,efficientnet_lite0   # whole training steps

With --models, each model's training step (forward, cross-entropy, backward, SGD with momentum;
batch --batch at --size x --size, native fastconv) is traced the same way instead of the layers:
its serial share is everything outside the kernels' parallel regions (Python, the autograd,
array code that runs on one thread), which bounds a whole step's scaling however well each
layer splits.

Prints a markdown table: per layer and direction, E(T) for each T; E from 2 to the top count
(t_sim(2) * 2 / (t_sim(T) * T)), the figure issue 15 compares with PyTorch's (within 10 points);
and at the top count where the rest goes: the chunks of the largest region, the serial share of
t_sim (allocation, Python, work outside regions), the work the split added (all chunk time over
that at 1 thread) and the balance of the parallel part (its work / T over its replayed time).
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


def simulate(fn, threads: int, repeat: int) -> dict:
    """The median of `repeat` traced calls of `fn` planned for `threads` threads: sim (t_sim, ns),
    serial (ns outside parallel regions), work (ns, all chunks and set-ups), chunks (of the
    largest region)."""
    import fastconv
    from fastconv import _C
    fastconv.set_num_threads(threads)
    fn()  # warm-up: scratch buffers, packed weights, page faults
    runs = []
    for _ in range(repeat):
        _C.set_schedule_trace(True)
        try:
            t0 = time.perf_counter_ns()
            fn()
            wall = time.perf_counter_ns() - t0
        finally:
            regions = _C.take_schedule_trace()
            _C.set_schedule_trace(False)
        serial = max(0, wall - sum(end - start for _, start, end, _, _ in regions))
        runs.append(dict(
            sim=serial + sum(makespan(c, t, setup) for t, _, _, setup, c in regions),
            serial=serial,
            work=sum(sum(c) + setup * min(t, len(c)) for t, _, _, setup, c in regions),
            chunks=max([len(c) for *_, c in regions] or [1])))
    runs.sort(key=lambda r: r["sim"])
    return runs[len(runs) // 2]


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
    p.add_argument("--models", help="trace whole training steps of these zoo models instead "
                   "(comma-separated, e.g. resnet18,efficientnet_lite0)")
    p.add_argument("--batch", type=int, default=16, help="--models: batch size (default: 16)")
    p.add_argument("--size", type=int, default=112, help="--models: image size (default: 112)")
    args = p.parse_args(argv)
    try:
        counts = [int(t) for t in args.threads.split(",")]
    except ValueError:
        p.error(f"--threads: expected comma-separated ints, got {args.threads!r}")
    if counts[0] != 1 or any(t < 1 for t in counts):
        p.error(f"--threads: expected positive counts starting with 1, got {args.threads!r}")
    if args.repeat < 1:
        p.error(f"--repeat: expected at least 1, got {args.repeat}")
    if args.models:
        return model_steps(args, counts)
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
    print(f"| layer | direction | t(1) ms | {head} | E 2->{top} | at {top}: chunks | serial | "
          f"work / work(1) | balance |")
    print("|---|---|---|" + "---|" * (len(counts) - 1) + "---|---|---|---|---|")
    rows = []
    rng = np.random.default_rng(0)
    try:
        for case in cases:
            for direction, fn, _ in build_calls(case, False, rng):
                sim = {t: simulate(fn, t, args.repeat) for t in counts}
                t1, st = sim[1]["sim"], sim[top]
                eff = {t: t1 / (t * sim[t]["sim"]) for t in counts}
                e2 = (2 * sim[2]["sim"]) / (top * st["sim"]) if 2 in sim and top > 2 else None
                # at the top count: the serial share of t_sim, the work the split added, and how
                # evenly the parallel part spreads (its ideal time / its replayed time)
                serial = st["serial"] / st["sim"]
                growth = st["work"] / max(1, sim[1]["work"])
                balance = (st["work"] / top) / max(1, st["sim"] - st["serial"])
                rows.append(dict(case=case["name"], direction=direction, t1_ms=t1 / 1e6,
                                 sim_ms={t: s["sim"] / 1e6 for t, s in sim.items()},
                                 efficiency=eff, efficiency_2_to_top=e2, chunks_top=st["chunks"],
                                 serial_share_top=serial, work_growth_top=growth,
                                 balance_top=balance))
                cells = " | ".join(f"{eff[t]:.0%}" for t in counts[1:])
                print(f"| {case['name']} | {direction} | {t1 / 1e6:.2f} | {cells} | "
                      f"{'' if e2 is None else f'{e2:.0%}'} | {st['chunks']} | {serial:.0%} | "
                      f"{growth:.2f} | {balance:.0%} |", flush=True)
    finally:
        fastconv.set_num_threads(before)
    write_json(args.json, rows)
    return 0


def write_json(path, rows) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(rows, f, indent=1)
        print(f"wrote {path}", file=sys.stderr)


def training_step(name: str, batch: int, size: int):
    """One SGD training step (momentum 0.9) of zoo model `name` on fixed random data."""
    import numpy as np
    import fastconv as fc
    from fastconv import models, optim
    from fastconv.nn import functional as F
    rng = np.random.default_rng(0)
    model = getattr(models, name)(num_classes=1000)
    x = fc.tensor(rng.standard_normal((batch, 3, size, size)).astype(np.float32))
    y = rng.integers(0, 1000, batch)
    opt = optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def model_steps(args, counts) -> int:
    import fastconv
    from fastconv.bench import machine
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    facts = machine.cpu_facts(1)
    top = counts[-1]
    print(f"# Training-step ceiling E(T) = t_sim(1) / (T t_sim(T)): fastconv "
          f"{facts['fastconv_version']} ({facts['isa']}) on {facts['cpu']}, traced on 1 core; "
          f"batch {args.batch}, {args.size}x{args.size}\n")
    head = " | ".join(f"E({t})" for t in counts[1:])
    print(f"| model | t(1) ms | {head} | at {top}: t_sim ms | serial ms | serial share |")
    print("|---|---|" + "---|" * (len(counts) - 1) + "---|---|---|")
    before, rows = fastconv.num_threads(), []
    try:
        for name in names:
            step = training_step(name, args.batch, args.size)
            sim = {t: simulate(step, t, args.repeat) for t in counts}
            t1, st = sim[1]["sim"], sim[top]
            eff = {t: t1 / (t * sim[t]["sim"]) for t in counts}
            rows.append(dict(model=name, batch=args.batch, size=args.size, t1_ms=t1 / 1e6,
                             sim_ms={t: s["sim"] / 1e6 for t, s in sim.items()},
                             serial_ms={t: s["serial"] / 1e6 for t, s in sim.items()},
                             efficiency=eff, serial_share_top=st["serial"] / st["sim"]))
            cells = " | ".join(f"{eff[t]:.0%}" for t in counts[1:])
            print(f"| {name} | {t1 / 1e6:.1f} | {cells} | {st['sim'] / 1e6:.1f} | "
                  f"{st['serial'] / 1e6:.1f} | {st['serial'] / st['sim']:.0%} |", flush=True)
    finally:
        fastconv.set_num_threads(before)
    write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
