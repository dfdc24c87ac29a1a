"""Pooling on the CUDA path (fastconv._cuda / fastconv._cuda_emu): the twins of fastconv._C's
pooling entry points. Arguments arrive checked and resolved by fastconv.nn._array / fastconv.nn.grad:
x and dy are 4-D arrays of the backend's library; kernel, stride, dilation are (h, w) int pairs, pad
is (top, bottom, left, right); out_hw = (P, Q) from fastconv._shape. NCHW and channels-last (NHWC)
memory layouts are served as they are; the output has the input's layout.
"""
from __future__ import annotations


def max_pool2d(be, x, kernel, stride, pad, dilation, ceil_mode, out_hw, return_indices):
    """Returns (out, indices) with indices int64 flat h * W + w per plane, or (out, None)."""
    raise NotImplementedError("max_pool2d: the CUDA kernel is not written yet")


def max_pool2d_backward(be, dy, indices, input_shape):
    raise NotImplementedError("max_pool2d_backward: the CUDA kernel is not written yet")


def avg_pool2d(be, x, kernel, stride, pad, ceil_mode, count_include_pad, divisor, out_hw):
    """divisor: 0 for none, else any non-zero int (torch's divisor_override)."""
    raise NotImplementedError("avg_pool2d: the CUDA kernel is not written yet")


def avg_pool2d_backward(be, dy, input_shape, kernel, stride, pad, ceil_mode, count_include_pad,
                        divisor):
    raise NotImplementedError("avg_pool2d_backward: the CUDA kernel is not written yet")


def adaptive_avg_pool2d(be, x, out_hw):
    raise NotImplementedError("adaptive_avg_pool2d: the CUDA kernel is not written yet")


def adaptive_avg_pool2d_backward(be, dy, input_shape):
    raise NotImplementedError("adaptive_avg_pool2d_backward: the CUDA kernel is not written yet")
