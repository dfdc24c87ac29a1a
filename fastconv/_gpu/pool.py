"""Pooling on the CUDA path (fastconv._cuda / fastconv._cuda_emu): the twins of fastconv._C's
pooling entry points. Arguments arrive checked and resolved by fastconv.nn._array /
fastconv.nn.grad: x and dy are 4-D arrays of the backend's library; kernel, stride, dilation are
(h, w) int pairs, pad is (top, bottom, left, right); out_hw = (P, Q) from fastconv._shape. NCHW and
channels-last (NHWC) memory layouts are served as they are; the output has the input's layout
(other layouts are copied to NCHW first; a gradient takes its grad_output's layout). Outputs are new arrays from the backend's allocator, every element written
by the kernels.
"""
from __future__ import annotations

from fastconv._gpu.backend import NHWC, _dtype_name


def _layout(be, a, want=None):
    """(a, channels_last) with a in NCHW or NHWC memory order; `want` forces one of them (a copy
    when a is in the other)."""
    a, lay = be.nchw_or_nhwc(a)
    if want is not None and lay != want:
        if want == NHWC:
            a = be.transpose(be.contiguous(be.transpose(a, (0, 2, 3, 1))), (0, 3, 1, 2))
        else:
            a = be.contiguous(a)
        lay = want
    return a, lay


def _int64(op, be, indices):
    """indices as an int64 array of its library (converted when it holds another integer type)."""
    name = _dtype_name(indices.dtype)
    if name in ("int64", "<i8", "=i8"):
        return indices
    kind = getattr(indices.dtype, "kind", None)
    is_int = kind in ("i", "u") if kind is not None else not indices.dtype.is_floating_point and \
        not indices.dtype.is_complex and name != "bool"
    if not is_int:
        raise TypeError(f"{op}: indices must be an integer array (int64, as max_pool2d returns), "
                        f"got dtype {name}")
    if hasattr(indices, "astype"):
        return indices.astype("int64")
    return indices.to(be.xp.int64)


def max_pool2d(be, x, kernel, stride, pad, dilation, ceil_mode, out_hw, return_indices):
    """Returns (out, indices) with indices int64 flat h * W + w per plane, or (out, None)."""
    op = "max_pool2d"
    code = be.dtype_code(op, "input", x)
    x, lay = _layout(be, x)
    N, C, H, W = x.shape
    P, Q = out_hw
    out = be.empty_like_layout((N, C, P, Q), x.dtype, lay)
    indices = be.empty_like_layout((N, C, P, Q), be.xp.int64, lay) if return_indices else None
    be.mod.max_pool2d_forward(code, be.ptr(x), be.ptr(out), be.ptr(indices), (N, C, H, W), (P, Q),
                              kernel, stride, pad, dilation, ceil_mode, lay == NHWC, be.stream())
    return out, indices


def max_pool2d_backward(be, dy, indices, input_shape, kernel=None, stride=None, pad=None,
                        dilation=None):
    """dx of input_shape (in dy's layout): each dy element added where its index points.

    With the forward's geometry (kernel, stride, pad, dilation: what the autograd node knows) the
    kernel is a deterministic gather, one thread per dx element, as fast as the forward; without
    it only a per-plane scatter in output order (deterministic, exact, but one thread per plane)
    is possible. Indices outside their output's window are ignored (as in PyTorch's CUDA kernel),
    with the geometry; without it, indices outside [0, H*W) are."""
    op = "max_pool2d_backward"
    code = be.dtype_code(op, "grad_output", dy)
    dy, lay = _layout(be, dy)
    indices, _ = _layout(be, _int64(op, be, indices), lay)
    N, C, H, W = (int(v) for v in input_shape)
    P, Q = dy.shape[2], dy.shape[3]
    dx = be.empty_like_layout((N, C, H, W), dy.dtype, lay)
    if kernel is None:
        kernel, stride, pad, dilation = (0, 0), (1, 1), (0, 0, 0, 0), (1, 1)
    elif stride is None or pad is None or dilation is None:
        raise ValueError(f"{op}: pass the forward's kernel, stride, pad and dilation together "
                         f"(or none of them)")
    be.mod.max_pool2d_backward(code, be.ptr(dy), be.ptr(indices), be.ptr(dx), (N, C, H, W), (P, Q),
                               kernel, stride, pad, dilation, lay == NHWC, be.stream())
    return dx


def avg_pool2d(be, x, kernel, stride, pad, ceil_mode, count_include_pad, divisor, out_hw):
    """divisor: 0 for none, else any non-zero int (torch's divisor_override)."""
    op = "avg_pool2d"
    code = be.dtype_code(op, "input", x)
    x, lay = _layout(be, x)
    N, C, H, W = x.shape
    P, Q = out_hw
    out = be.empty_like_layout((N, C, P, Q), x.dtype, lay)
    be.mod.avg_pool2d_forward(code, be.ptr(x), be.ptr(out), (N, C, H, W), (P, Q), kernel, stride,
                              pad, ceil_mode, count_include_pad, int(divisor or 0), lay == NHWC,
                              be.stream())
    return out


def avg_pool2d_backward(be, dy, input_shape, kernel, stride, pad, ceil_mode, count_include_pad,
                        divisor):
    op = "avg_pool2d_backward"
    code = be.dtype_code(op, "grad_output", dy)
    dy, lay = _layout(be, dy)
    N, C, H, W = (int(v) for v in input_shape)
    dx = be.empty_like_layout((N, C, H, W), dy.dtype, lay)
    be.mod.avg_pool2d_backward(code, be.ptr(dy), be.ptr(dx), (N, C, H, W),
                               (dy.shape[2], dy.shape[3]), kernel, stride, pad, ceil_mode,
                               count_include_pad, int(divisor or 0), lay == NHWC, be.stream())
    return dx


def adaptive_avg_pool2d(be, x, out_hw):
    op = "adaptive_avg_pool2d"
    code = be.dtype_code(op, "input", x)
    x, lay = _layout(be, x)
    N, C, H, W = x.shape
    P, Q = out_hw
    out = be.empty_like_layout((N, C, P, Q), x.dtype, lay)
    be.mod.adaptive_avg_pool2d_forward(code, be.ptr(x), be.ptr(out), (N, C, H, W), (P, Q),
                                       lay == NHWC, be.stream())
    return out


def adaptive_avg_pool2d_backward(be, dy, input_shape):
    op = "adaptive_avg_pool2d_backward"
    code = be.dtype_code(op, "grad_output", dy)
    dy, lay = _layout(be, dy)
    N, C, H, W = (int(v) for v in input_shape)
    dx = be.empty_like_layout((N, C, H, W), dy.dtype, lay)
    be.mod.adaptive_avg_pool2d_backward(code, be.ptr(dy), be.ptr(dx), (N, C, H, W),
                                        (dy.shape[2], dy.shape[3]), lay == NHWC, be.stream())
    return dx
