#!/usr/bin/env python3
"""What a fastconv.torch call costs beyond its kernel: each op on a tiny input (the kernel itself
takes a few microseconds), forward alone and forward + backward, next to torch.nn.functional's op
on the same input, plus a small model (LeNet-5 at batch 1, inference and a training step) with
and without fastconv.torch.convert. All on 1 thread so that only the per-call cost shows.

    PYTHONPATH=build/dev-NAME/site python3 bench/run_torch_overhead.py [--repeat 7] [--json F]

Each figure is the best of --repeat rounds, a round being the mean of --calls calls. Prints a
markdown table; the last column is fastconv's time / torch's.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as TF

import fastconv
import fastconv.torch as fct
from fastconv.bench.harness import cpu_model


def per_call_us(fn, calls: int, repeat: int) -> float:
    for _ in range(max(10, calls // 10)):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e6


def op_cases():
    """(name, fastconv call, torch call, inputs needing grad) on tiny float32 inputs."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=g)
    w = torch.randn(4, 4, 3, 3, generator=g)
    b = torch.randn(4, generator=g)
    return [
        ("conv2d 1x4x8x8, 3x3", lambda x: fct.conv2d(x, w, b, padding=1),
         lambda x: TF.conv2d(x, w, b, padding=1), x),
        ("max_pool2d 3x3s2", lambda x: fct.max_pool2d(x, 3, 2, 1),
         lambda x: TF.max_pool2d(x, 3, 2, 1), x),
        ("avg_pool2d 2x2", lambda x: fct.avg_pool2d(x, 2), lambda x: TF.avg_pool2d(x, 2), x),
        ("adaptive_avg_pool2d 1", lambda x: fct.adaptive_avg_pool2d(x, 1),
         lambda x: TF.adaptive_avg_pool2d(x, 1), x),
    ]


class LeNet5(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.Conv2d(6, 16, 5)
        self.p = torch.nn.MaxPool2d(2)
        self.f1, self.f2, self.f3 = (torch.nn.Linear(400, 120), torch.nn.Linear(120, 84),
                                     torch.nn.Linear(84, 10))

    def forward(self, x):
        x = self.p(torch.relu(self.c1(x)))
        x = self.p(torch.relu(self.c2(x)))
        x = torch.flatten(x, 1)
        return self.f3(torch.relu(self.f2(torch.relu(self.f1(x)))))


def model_rows(calls, repeat):
    torch.manual_seed(0)
    x = torch.randn(1, 1, 28, 28)
    ours, theirs = fct.convert(LeNet5()), LeNet5()

    def infer(m):
        def f():
            with torch.no_grad():
                m(x)
        return f

    def step(m):
        def f():
            m.zero_grad(set_to_none=True)
            m(x).sum().backward()
        return f
    return [("LeNet-5 batch 1, inference", per_call_us(infer(ours), calls, repeat),
             per_call_us(infer(theirs), calls, repeat)),
            ("LeNet-5 batch 1, forward + backward", per_call_us(step(ours), calls // 4, repeat),
             per_call_us(step(theirs), calls // 4, repeat))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", help="write the rows to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    fastconv.set_num_threads(1)
    rows = []
    for name, ours, theirs, x in op_cases():
        rows.append((name + ", forward", per_call_us(lambda: ours(x), args.calls, args.repeat),
                     per_call_us(lambda: theirs(x), args.calls, args.repeat)))
        xg = x.clone().requires_grad_(True)
        rows.append((name + ", forward + backward",
                     per_call_us(lambda: ours(xg).sum().backward(), args.calls // 4, args.repeat),
                     per_call_us(lambda: theirs(xg).sum().backward(), args.calls // 4,
                                 args.repeat)))
    rows += model_rows(args.calls, args.repeat)
    print(f"CPU: {cpu_model()} ({fastconv._C.isa()}); torch {torch.__version__}; "
          f"fastconv {fastconv.__version__}, 1 thread each")
    print("| call | fastconv.torch (us) | torch (us) | ratio |")
    print("|---|---|---|---|")
    for name, ours, theirs in rows:
        print(f"| {name} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dict(call=n, fastconv_us=a, torch_us=b) for n, a, b in rows], f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
