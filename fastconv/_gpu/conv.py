"""conv2d on the CUDA path (fastconv._cuda / fastconv._cuda_emu): the twins of fastconv._C's conv
entry points. Arguments arrive checked and resolved by fastconv.nn._array / fastconv.nn.grad: 4-D
arrays of the backend's library, stride and dilation (h, w) int pairs, pad (top, bottom, left,
right), groups an int, out_hw = (P, Q). Depthwise convolution (groups == C, K a multiple of C) has
CUDA kernels; dense and grouped convolution raise NotImplementedError until their kernels land.
"""
from __future__ import annotations


def conv2d(be, x, w, b, stride, pad, dilation, groups, out_hw):
    raise NotImplementedError("conv2d: the CUDA kernel is not written yet")


def conv2d_backward_input(be, dy, w, input_shape, stride, pad, dilation, groups):
    raise NotImplementedError("conv2d_backward_input: the CUDA kernel is not written yet")


def conv2d_backward_weight(be, dy, x, weight_shape, stride, pad, dilation, groups):
    raise NotImplementedError("conv2d_backward_weight: the CUDA kernel is not written yet")


def conv2d_backward_bias(be, dy):
    raise NotImplementedError("conv2d_backward_bias: the CUDA kernel is not written yet")
