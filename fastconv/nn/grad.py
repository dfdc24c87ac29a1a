"""Gradients of the ops in fastconv.nn.functional, named and shaped like torch.nn.grad: given the
gradient of a loss with respect to an op's output, return the gradient with respect to one of its
inputs. numpy in, numpy out (other libraries' CPU arrays through DLPack, as in the forward
functions: torch tensors in, torch tensors out); padding strings and 4-tuples and unbatched (3-D)
arrays are accepted as in the forward functions.

    dx = grad.conv2d_input(x.shape, w, dy, stride=2, padding="same")
    dw = grad.conv2d_weight(x, w.shape, dy, stride=2, padding="same")
    db = grad.conv2d_bias(dy)
"""
from __future__ import annotations

import numpy as np

from fastconv import _C, _shape
from fastconv._gpu import conv as _gpu_conv
from fastconv._gpu import pool as _gpu_pool
from fastconv.nn import _common as c

__all__ = ["conv2d_input", "conv2d_weight", "conv2d_bias", "max_pool2d_input", "avg_pool2d_input",
           "adaptive_avg_pool2d_input"]

_INPUT_SIZE = "(N, C, H, W) or (C, H, W)"


def _grad_output(op: str, grad_output, ndim: int, expected) -> np.ndarray:
    """grad_output as 4-D after checking it has the expected shape (batched as 4-D)."""
    want = tuple(expected[1:]) if ndim == 3 else tuple(expected)
    if grad_output.shape != want:
        raise ValueError(f"{op}: grad_output must have shape {want} (the output shape of the "
                         f"forward op), got shape {c.shape_str(grad_output.shape)}")
    return grad_output[None] if ndim == 3 else grad_output


def conv2d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1):
    """Gradient of conv2d with respect to its input.

    Args:
        input_size: the input's shape, (N, C, H, W) or (C, H, W).
        weight: (K, C / groups, R, S).
        grad_output: (N, K, P, Q) (or (K, P, Q)), same dtype as weight.
        stride, padding, dilation, groups: as given to conv2d.
    Returns:
        an array of shape input_size.
    """
    op = "conv2d_input"
    key = c.plan_key(op, (weight, grad_output), (input_size, stride, padding, dilation, groups))
    known = c.plan(key)
    if known is not None:  # this call passed the checks below before
        dx = np.empty(known[0], grad_output.dtype)
        _C.conv2d_backward_input(grad_output, weight, dx, *known[1])
        return dx
    (weight, grad_output), back = c.import_arrays(op, weight=weight, grad_output=grad_output)
    c.check_float(op, "grad_output", grad_output, back.device)
    c.check_same_dtype(op, "grad_output", grad_output, "weight", weight)
    size = c.size_arg(op, "input_size", input_size, (3, 4), _INPUT_SIZE)
    size4 = (1,) + size if len(size) == 3 else size
    stride, pad, dilation, groups, (P, Q) = c.conv_geometry(op, size4, weight.shape, stride,
                                                            padding, dilation, groups)
    dy = _grad_output(op, grad_output, len(size), (size4[0], weight.shape[0], P, Q))
    if back.device is not None:
        dx = _gpu_conv.conv2d_backward_input(back.device, dy, weight, size4, stride, pad, dilation,
                                             groups)
        return back(dx[0] if len(size) == 3 else dx)
    dx = c.empty_output(op, size4, c.native_dtype(grad_output))
    if size4[0] > 0:
        _C.conv2d_backward_input(c.prepare(dy), c.prepare(weight), dx, stride, pad, dilation, groups)
        if len(size) == 4:
            c.remember_plan(key, (size4, (stride, pad, dilation, groups)))
    return back(dx[0] if len(size) == 3 else dx)


def conv2d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1):
    """Gradient of conv2d with respect to its weight.

    Args:
        input: (N, C, H, W) or (C, H, W).
        weight_size: the weight's shape (K, C / groups, R, S).
        grad_output: (N, K, P, Q) (or (K, P, Q)), same dtype as input.
        stride, padding, dilation, groups: as given to conv2d.
    Returns:
        an array of shape weight_size (zeros for an empty batch).
    """
    op = "conv2d_weight"
    key = c.plan_key(op, (input, grad_output), (weight_size, stride, padding, dilation, groups))
    known = c.plan(key)
    if known is not None:  # this call passed the checks below before
        dw = np.empty(known[0], input.dtype)
        _C.conv2d_backward_weight(grad_output, input, dw, *known[1])
        return dw
    (input, grad_output), back = c.import_arrays(op, input=input, grad_output=grad_output)
    c.check_float(op, "input", input, back.device)
    c.check_same_dtype(op, "input", input, "grad_output", grad_output)
    x, unbatched = c.batched(op, "input", input)
    wsize = c.size_arg(op, "weight_size", weight_size, (4,), "(K, C/groups, R, S)")
    if wsize[0] < 1:
        raise ValueError(f"{op}: weight_size must have positive sizes, got {wsize!r}")
    stride, pad, dilation, groups, (P, Q) = c.conv_geometry(op, x.shape, wsize, stride, padding,
                                                            dilation, groups)
    dy = _grad_output(op, grad_output, input.ndim, (x.shape[0], wsize[0], P, Q))
    if back.device is not None:
        return back(_gpu_conv.conv2d_backward_weight(back.device, dy, x, wsize, stride, pad,
                                                     dilation, groups))
    dtype = c.native_dtype(input)
    if x.shape[0] == 0:
        return back(np.zeros(wsize, dtype=dtype))
    dw = c.empty_output(op, wsize, dtype)
    _C.conv2d_backward_weight(c.prepare(dy), c.prepare(x), dw, stride, pad, dilation, groups)
    if not unbatched:
        c.remember_plan(key, (wsize, (stride, pad, dilation, groups)))
    return back(dw)


def conv2d_bias(grad_output):
    """Gradient of conv2d with respect to its bias: grad_output summed over N, P and Q.

    Args:
        grad_output: (N, K, P, Q) or (K, P, Q).
    Returns:
        (K,) (zeros for an empty batch).
    """
    op = "conv2d_bias"
    (grad_output,), back = c.import_arrays(op, grad_output=grad_output)
    c.check_float(op, "grad_output", grad_output, back.device)
    dy, _ = c.batched(op, "grad_output", grad_output, "(N, K, P, Q)")
    if back.device is not None:
        return back(_gpu_conv.conv2d_backward_bias(back.device, dy))
    db = np.zeros(dy.shape[1], dtype=c.native_dtype(grad_output))
    if dy.shape[0] > 0:
        _C.conv2d_backward_bias(c.prepare(dy), db)
    return back(db)


def max_pool2d_input(input_size, grad_output, indices, *, kernel_size=None, stride=None,
                     padding=0, dilation=1):
    """Gradient of max_pool2d with respect to its input: each grad_output element is added at
    the position its index names (indices as returned by max_pool2d(..., return_indices=True)).

    Args:
        input_size: the input's shape, (N, C, H, W) or (C, H, W).
        grad_output: (N, C, P, Q) (or (C, P, Q)).
        indices: integer array of grad_output's shape, values in [0, H * W).
        kernel_size, stride, padding, dilation: optionally, the forward's geometry. On the GPU
            it turns the backward into a parallel gather (one thread per input element, as fast
            as the forward); without it the GPU kernel scatters plane by plane. The CPU kernel
            needs only the indices. autograd passes it.
    Returns:
        an array of shape input_size.
    """
    op = "max_pool2d_input"
    key = c.plan_key(op, (grad_output, indices), (input_size, kernel_size, stride, padding,
                                                  dilation))
    known = c.plan(key)
    if known is not None:  # this call passed the checks below before
        dx = np.empty(known, grad_output.dtype)
        try:
            _C.max_pool2d_backward(grad_output, indices, dx)
            return dx
        except ValueError:  # indices out of range: the full path says which
            pass
    (grad_output, indices), back = c.import_arrays(op, grad_output=grad_output, indices=indices)
    c.check_float(op, "grad_output", grad_output, back.device)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"{op}: indices must be an integer array (int64, as max_pool2d returns), "
                        f"got dtype {indices.dtype.name}")
    size = c.size_arg(op, "input_size", input_size, (3, 4), _INPUT_SIZE)
    size4 = (1,) + size if len(size) == 3 else size
    if grad_output.ndim != len(size) or grad_output.shape[:-2] != size[:-2]:
        raise ValueError(f"{op}: grad_output must have shape {size[:-2] + ('P', 'Q')} for "
                         f"input_size {size}, got shape {c.shape_str(grad_output.shape)}")
    if indices.shape != grad_output.shape:
        raise ValueError(f"{op}: indices must have the shape of grad_output "
                         f"{c.shape_str(grad_output.shape)}, got shape "
                         f"{c.shape_str(indices.shape)}")
    dy, _ = c.batched(op, "grad_output", grad_output)
    HW = size4[2] * size4[3]
    if back.device is not None:
        geometry = {}
        if kernel_size is not None:  # only the GPU kernel uses it
            kernel, stride, dil = c.pool_args(op, kernel_size, stride, dilation)
            pad = _shape.resolve_padding(op, padding, size4[2:], kernel, stride, dil)
            geometry = dict(kernel=kernel, stride=stride, pad=pad, dilation=dil)
        idx = indices[None] if len(size) == 3 else indices
        dx = _gpu_pool.max_pool2d_backward(back.device, dy, idx, size4, **geometry)
        return back(dx[0] if len(size) == 3 else dx)
    dx = c.empty_output(op, size4, c.native_dtype(grad_output))
    if size4[0] > 0:
        idx = c.prepare(indices[None] if len(size) == 3 else indices).astype(np.int64, copy=False)
        # The kernel counts out-of-range indices during its scatter (skipping them), so the range
        # check costs no extra pass over the indices here; only the message is ours.
        try:
            _C.max_pool2d_backward(c.prepare(dy), idx, dx)
        except ValueError as e:
            if "values outside" not in str(e):
                raise
            raise ValueError(f"{op}: indices must lie in [0, H*W) = [0, {HW}) for input_size "
                             f"{size}, got values in [{indices.min()}, {indices.max()}]") from None
        if len(size) == 4 and idx is indices:
            c.remember_plan(key, size4)
    return back(dx[0] if len(size) == 3 else dx)


def avg_pool2d_input(input_size, grad_output, kernel_size, stride=None, padding=0, ceil_mode=False,
                     count_include_pad=True, divisor_override=None):
    """Gradient of avg_pool2d with respect to its input (the same arguments as the forward).

    Returns:
        an array of shape input_size.
    """
    op = "avg_pool2d_input"
    key = c.plan_key(op, (grad_output,), (input_size, kernel_size, stride, padding, ceil_mode,
                                          count_include_pad, divisor_override))
    known = c.plan(key)
    if known is not None:  # this call passed the checks below before
        dx = np.empty(known[0], grad_output.dtype)
        _C.avg_pool2d_backward(grad_output, dx, *known[1])
        return dx
    (grad_output,), back = c.import_arrays(op, grad_output=grad_output)
    c.check_float(op, "grad_output", grad_output, back.device)
    size = c.size_arg(op, "input_size", input_size, (3, 4), _INPUT_SIZE)
    size4 = (1,) + size if len(size) == 3 else size
    kernel, stride, _ = c.pool_args(op, kernel_size, stride, 1)
    ceil_mode, count_include_pad, divisor = c.avg_pool_flags(op, ceil_mode, count_include_pad,
                                                             divisor_override)
    N, C, H, W = size4
    pad = _shape.resolve_padding(op, padding, (H, W), kernel, stride, (1, 1))
    P, Q = _shape.pool_output_hw(op, (H, W), kernel, stride, pad, (1, 1), ceil_mode)
    dy = _grad_output(op, grad_output, len(size), (N, C, P, Q))
    if back.device is not None:
        dx = _gpu_pool.avg_pool2d_backward(back.device, dy, size4, kernel, stride, pad, ceil_mode,
                                           count_include_pad, divisor)
        return back(dx[0] if len(size) == 3 else dx)
    dx = c.empty_output(op, size4, c.native_dtype(grad_output))
    if N > 0:
        _C.avg_pool2d_backward(c.prepare(dy), dx, kernel, stride, pad, ceil_mode, count_include_pad,
                               divisor)
        if len(size) == 4:
            c.remember_plan(key, (size4, (kernel, stride, pad, ceil_mode, count_include_pad,
                                          divisor)))
    return back(dx[0] if len(size) == 3 else dx)


def adaptive_avg_pool2d_input(input_size, grad_output):
    """Gradient of adaptive_avg_pool2d with respect to its input; the output size is
    grad_output's (P, Q).

    Returns:
        an array of shape input_size.
    """
    op = "adaptive_avg_pool2d_input"
    (grad_output,), back = c.import_arrays(op, grad_output=grad_output)
    c.check_float(op, "grad_output", grad_output, back.device)
    size = c.size_arg(op, "input_size", input_size, (3, 4), _INPUT_SIZE)
    size4 = (1,) + size if len(size) == 3 else size
    if grad_output.ndim != len(size) or grad_output.shape[:-2] != size[:-2]:
        raise ValueError(f"{op}: grad_output must have shape {size[:-2] + ('P', 'Q')} for "
                         f"input_size {size}, got shape {c.shape_str(grad_output.shape)}")
    dy, _ = c.batched(op, "grad_output", grad_output)
    if back.device is not None:
        dx = _gpu_pool.adaptive_avg_pool2d_backward(back.device, dy, size4)
        return back(dx[0] if len(size) == 3 else dx)
    dx = c.empty_output(op, size4, c.native_dtype(grad_output))
    if size4[0] > 0:
        _C.adaptive_avg_pool2d_backward(c.prepare(dy), dx)
    return back(dx[0] if len(size) == 3 else dx)
