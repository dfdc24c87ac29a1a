"""Convolution and pooling on numpy arrays with torch.nn.functional's signatures and results.

    import fastconv.nn._array as A   (public front: fastconv.nn.functional)
    y = A.conv2d(x, w, b, stride=2, padding="same")       # x (N, C, H, W) or (C, H, W)

numpy arrays in, numpy arrays out (float32 or float64, NCHW, weights (K, C/groups, R, S)). CPU
arrays of other libraries are taken through DLPack without a copy (torch tensors, JAX and CuPy host
arrays); a torch tensor among the arguments makes the results torch tensors (sharing memory with
fastconv's output). GPU arrays (CuPy; torch CUDA tensors and other CUDA arrays through CuPy) run the
CUDA kernels of fastconv._cuda (fastconv/_gpu/) on CuPy's current stream, in float32, float16,
bfloat16 or float64, and come back in their own library; inside fastconv.testing.cuda_emulation()
numpy arrays run the same CUDA kernels on the CPU (fastconv._cuda_emu).
Differences from torch, all extensions: `padding` may be a 4-tuple (top, bottom, left, right);
`'same'` works for any stride (TensorFlow/Keras semantics for stride > 1: output ceil(in/stride),
the odd pixel of padding at the bottom/right), also in pooling. Pooling padding is at most half
the kernel per side (as in torch), and a dilated pooling window that would see only padding is
rejected (torch returns -inf with an out-of-range index there). Inputs of any layout, byte order
or writeability are accepted (copied only when they are not native C-contiguous). The gradients
are in fastconv.nn.grad.
"""
from __future__ import annotations

import numpy as np

from fastconv import _C, _gpu
from fastconv._gpu import conv as _gpu_conv
from fastconv._gpu import pool as _gpu_pool
from fastconv._gpu import affine as _gpu_affine
from fastconv.nn import _common as c

__all__ = ["conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "channel_affine"]


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation, as in every DL framework).

    Args:
        input: (N, C, H, W) or unbatched (C, H, W), float32 or float64.
        weight: (K, C / groups, R, S), same dtype.
        bias: (K,) or None.
        stride, dilation: int or (h, w).
        padding: int, (h, w), (top, bottom, left, right), 'valid' or 'same'.
        groups: C and K must both be divisible by it (groups == C: depthwise).
    Returns:
        (N, K, P, Q), or (K, P, Q) for an unbatched input.
    """
    op = "conv2d"
    key = c.plan_key(op, (input, weight, bias), (stride, padding, dilation, groups))
    known = c.plan(key)
    if known is not None:  # this call passed the checks below before
        out = np.empty(known[0], input.dtype)
        _C.conv2d_forward(input, weight, bias, out, *known[1])
        return out
    c.check_required(op, "weight", weight)
    (input, weight, bias), back = c.import_arrays(op, input=input, weight=weight, bias=bias)
    c.check_float(op, "input", input, back.device)
    c.check_same_dtype(op, "input", input, "weight", weight)
    if bias is not None:
        c.check_same_dtype(op, "input", input, "bias", bias)
    x, unbatched = c.batched(op, "input", input)
    stride, pad, dilation, groups, (P, Q) = c.conv_geometry(
        op, x.shape, weight.shape, stride, padding, dilation, groups,
        bias_shape=None if bias is None else bias.shape)
    K = weight.shape[0]
    if back.device is not None:
        out = _gpu_conv.conv2d(back.device, x, weight, bias, stride, pad, dilation, groups, (P, Q))
        return back(out[0] if unbatched else out)
    out = c.empty_output(op, (x.shape[0], K, P, Q), c.native_dtype(input))
    if x.shape[0] > 0:
        _C.conv2d_forward(c.prepare(x), c.prepare(weight), c.prepare(bias), out, stride, pad,
                          dilation, groups)
        if not unbatched:
            c.remember_plan(key, (out.shape, (stride, pad, dilation, groups)))
    return back(out[0] if unbatched else out)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """2-D max pooling; NaN propagates (a window holding NaN gives NaN), ties keep the first
    element in row-major order.

    Args:
        input: (N, C, H, W) or (C, H, W).
        kernel_size, dilation: int or (h, w). stride: int, (h, w), or None = kernel_size.
        padding: int, (h, w), (top, bottom, left, right), 'valid' or 'same'; at most half the
            kernel per side. Padding never wins (it acts as -inf).
        ceil_mode: round the output size up (the last window must start inside the input or the
            top/left padding).
        return_indices: also return the argmax of each window as a flat int64 index h * W + w
            into its (H, W) plane (what fastconv.nn.grad.max_pool2d_input takes).
    Returns:
        out (N, C, P, Q), or (out, indices) with return_indices.
    """
    op = "max_pool2d"
    key = c.plan_key(op, (input,), (kernel_size, stride, padding, dilation, ceil_mode,
                                    return_indices))
    known = c.plan(key)
    if known is not None:  # this call passed the checks below before
        out = np.empty(known[0], input.dtype)
        indices = np.empty(known[0], np.int64) if return_indices else None
        _C.max_pool2d_forward(input, out, indices, *known[1])
        return (out, indices) if return_indices else out
    (input,), back = c.import_arrays(op, input=input)
    c.check_float(op, "input", input, back.device)
    x, unbatched = c.batched(op, "input", input)
    N, C, H, W = x.shape
    kernel, stride, pad, dilation, ceil_mode, (P, Q) = c.max_pool_geometry(
        op, (H, W), kernel_size, stride, padding, dilation, ceil_mode)
    return_indices = c.check_bool(op, "return_indices", return_indices)
    if back.device is not None:
        out, indices = _gpu_pool.max_pool2d(back.device, x, kernel, stride, pad, dilation,
                                            ceil_mode, (P, Q), return_indices)
    else:
        out = c.empty_output(op, (N, C, P, Q), c.native_dtype(input))
        indices = c.empty_output(op, (N, C, P, Q), np.int64) if return_indices else None
    if N > 0 and back.device is None:
        _C.max_pool2d_forward(c.prepare(x), out, indices, kernel, stride, pad, dilation, ceil_mode)
        if not unbatched:
            c.remember_plan(key, (out.shape, (kernel, stride, pad, dilation, ceil_mode)))
    if unbatched:
        out = out[0]
        indices = None if indices is None else indices[0]
    return back((out, indices) if return_indices else out)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """2-D average pooling.

    Args:
        input: (N, C, H, W) or (C, H, W).
        kernel_size: int or (h, w). stride: int, (h, w), or None = kernel_size.
        padding: int, (h, w), (top, bottom, left, right), 'valid' or 'same'; at most half the
            kernel per side. Padding counts as zeros.
        ceil_mode: round the output size up (as in max_pool2d).
        count_include_pad: divide by the window size including padding (but not the part of a
            ceil_mode window past the bottom/right padding); False: by the in-input count only
            (Keras 'same' pooling semantics).
        divisor_override: a non-zero int to divide by instead (negative included, as in torch).
    Returns:
        (N, C, P, Q), or (C, P, Q) for an unbatched input.
    """
    op = "avg_pool2d"
    key = c.plan_key(op, (input,), (kernel_size, stride, padding, ceil_mode, count_include_pad,
                                    divisor_override))
    known = c.plan(key)
    if known is not None:  # this call passed the checks below before
        out = np.empty(known[0], input.dtype)
        _C.avg_pool2d_forward(input, out, *known[1])
        return out
    (input,), back = c.import_arrays(op, input=input)
    c.check_float(op, "input", input, back.device)
    x, unbatched = c.batched(op, "input", input)
    N, C, H, W = x.shape
    kernel, stride, pad, ceil_mode, count_include_pad, divisor, (P, Q) = c.avg_pool_geometry(
        op, (H, W), kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    if back.device is not None:
        out = _gpu_pool.avg_pool2d(back.device, x, kernel, stride, pad, ceil_mode,
                                   count_include_pad, divisor, (P, Q))
        return back(out[0] if unbatched else out)
    out = c.empty_output(op, (N, C, P, Q), c.native_dtype(input))
    if N > 0:
        _C.avg_pool2d_forward(c.prepare(x), out, kernel, stride, pad, ceil_mode, count_include_pad,
                              divisor)
        if not unbatched:
            c.remember_plan(key, (out.shape, (kernel, stride, pad, ceil_mode, count_include_pad,
                                              divisor)))
    return back(out[0] if unbatched else out)


def adaptive_avg_pool2d(input, output_size):
    """2-D adaptive average pooling: output cell (p, q) averages rows [floor(p*H/P),
    ceil((p+1)*H/P)) and the columns likewise.

    Args:
        input: (N, C, H, W) or (C, H, W).
        output_size: int or (P, Q); a None entry keeps that input size.
    Returns:
        (N, C, P, Q), or (C, P, Q) for an unbatched input.
    """
    op = "adaptive_avg_pool2d"
    (input,), back = c.import_arrays(op, input=input)
    c.check_float(op, "input", input, back.device)
    x, unbatched = c.batched(op, "input", input)
    N, C, H, W = x.shape
    P, Q = c.adaptive_size(op, output_size, H, W)
    if back.device is not None:
        out = _gpu_pool.adaptive_avg_pool2d(back.device, x, (P, Q))
        return back(out[0] if unbatched else out)
    out = c.empty_output(op, (N, C, P, Q), c.native_dtype(input))
    if N > 0:
        _C.adaptive_avg_pool2d_forward(c.prepare(x), out)
    return back(out[0] if unbatched else out)


# activation -> (lo, hi) bounds of channel_affine's clamp (None: no bound)
_AFFINE_BOUNDS = {None: (None, None), "relu": (0.0, None), "relu6": (0.0, 6.0)}


def channel_affine(x, scale, shift, activation=None, out=None):
    """Per-channel scale and shift with an optional ReLU / ReLU6, in one multi-threaded pass
    (inference BatchNorm folded into scale = gamma / sqrt(var + eps), shift = beta - mean * scale):

        out[n, c, ...] = act(x[n, c, ...] * scale[c] + shift[c])

    NaN propagates as in np.maximum / np.minimum (NaN in, NaN out); +-inf clamp to the bounds.
    numpy arrays only.

    Args:
        x: (N, C, ...) at least 2-D, float32 or float64 (any layout; copied when not native
            C-contiguous).
        scale, shift: (C,), x's dtype.
        activation: None, 'relu' (clamp to [0, inf)) or 'relu6' (clamp to [0, 6]).
        out: None (a new array), or a writeable, aligned, C-contiguous native-byte-order array of
            x's shape and dtype. It may be x itself (in place) but must not otherwise overlap x,
            scale or shift.
    Returns:
        out.
    """
    op = "channel_affine"
    device = None
    if not isinstance(x, np.ndarray) or _gpu.emulating():
        (x, scale, shift, out), back = c.import_arrays(op, x=x, scale=scale, shift=shift, out=out)
        device = back.device
    for name, a in (("x", x), ("scale", scale), ("shift", shift), ("out", out)):
        if device is None and not (a is None and name == "out") and not isinstance(a, np.ndarray):
            raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    c.check_float(op, "x", x, device)
    c.check_same_dtype(op, "x", x, "scale", scale)
    c.check_same_dtype(op, "x", x, "shift", shift)
    if x.ndim < 2:
        raise ValueError(f"{op}: x must be at least 2-D (N, C, ...), got shape {c.shape_str(x.shape)}")
    C = x.shape[1]
    for name, a in (("scale", scale), ("shift", shift)):
        if a.shape != (C,):
            raise ValueError(f"{op}: {name} must have shape ({C},) (one per channel of x, axis 1), "
                             f"got shape {c.shape_str(a.shape)}")
    if not isinstance(activation, (str, type(None))) or activation not in _AFFINE_BOUNDS:
        raise ValueError(f"{op}: activation must be None, 'relu' or 'relu6', got {activation!r}")
    lo, hi = _AFFINE_BOUNDS[activation]
    if device is not None:
        if out is not None and out.shape != x.shape:
            raise ValueError(f"{op}: out must have x's shape {c.shape_str(x.shape)}, got shape "
                             f"{c.shape_str(out.shape)}")
        return _gpu_affine.channel_affine(device, x, scale, shift, lo, hi, out)
    if out is None:
        out = np.empty(x.shape, dtype=c.native_dtype(x))
    else:
        c.check_same_dtype(op, "x", x, "out", out)
        if out.shape != x.shape:
            raise ValueError(f"{op}: out must have x's shape {c.shape_str(x.shape)}, got shape "
                             f"{c.shape_str(out.shape)}")
        f = out.flags
        if not (f.c_contiguous and f.aligned and f.writeable and out.dtype.isnative):
            raise ValueError(f"{op}: out must be a writeable, aligned, C-contiguous array in native "
                             f"byte order (it is written directly)")
    _C.channel_affine(c.prepare(x), c.prepare(scale), c.prepare(shift), out, lo, hi)
    return out
