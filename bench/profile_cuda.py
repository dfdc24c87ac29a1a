#!/usr/bin/env python3
"""A handful of fastconv CUDA launches to profile with Nsight Compute (bench/gpu_check.sh's
ncu step): per op, one warm-up and one profiled call of the suite's slow spots on the H200
(2026-12-04: dense conv weight gradients at 1-15 TFLOP/s, the 16-bit tensor-core tiles slower
than the float32 ones, depthwise 2-3x cuDNN's time, global average pooling 1.3x).

  ncu --clock-control none -k regex:'igemm|splitk|dw_|pool' python3 bench/profile_cuda.py

Each op runs in an NVTX range named after it (ncu --nvtx shows which op a kernel served).
Without a GPU it says so in one line and exits 2.
"""
import sys

import torch

import fastconv
import fastconv.torch as fct


def ops():
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)

    def rnd(*shape, dtype=torch.float32, grad=False):
        return torch.randn(*shape, device=dev, generator=g, dtype=dtype).requires_grad_(grad)

    # r50_res3_3x3 at batch 32: forward, input and weight gradient, float32 and bfloat16
    for dt in (torch.float32, torch.bfloat16):
        x, w = rnd(32, 128, 28, 28, dtype=dt, grad=True), rnd(128, 128, 3, 3, dtype=dt, grad=True)
        yield f"conv3x3 {dt}", lambda x=x, w=w: fct.conv2d(x, w, None, 1, 1).sum().backward()
    # a 1x1 weight gradient (r50_res2_1x1_up): its worst ratio
    x, w = rnd(32, 64, 56, 56, grad=True), rnd(256, 64, 1, 1, grad=True)
    yield "conv1x1", lambda: fct.conv2d(x, w, None, 1, 0).sum().backward()
    # depthwise 3x3 (mbv2_dw_144_56) forward and backward
    x, w = rnd(32, 144, 56, 56, grad=True), rnd(144, 1, 3, 3, grad=True)
    yield "depthwise", lambda: fct.conv2d(x, w, None, 1, 1, 1, 144).sum().backward()
    # global average pooling (r50_global_avgpool)
    x = rnd(32, 2048, 7, 7)
    yield "global avgpool", lambda: fct.adaptive_avg_pool2d(x, 1)


def main() -> int:
    if not (torch.cuda.is_available() and fastconv.cuda_available()):
        print("profile_cuda: no GPU usable here (torch.cuda or fastconv._cuda sees none)")
        return 2
    for name, run in ops():
        run()  # warm-up (and the tile autotune, if on)
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_push(name)
        run()
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_pop()
        print(f"profile_cuda: {name} ran", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
