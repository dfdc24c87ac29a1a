"""conv2d, max_pool2d, avg_pool2d and adaptive_avg_pool2d on torch tensors, with
torch.nn.functional's signatures and results, computed by fastconv's kernels and differentiable.

    import fastconv.torch as fct
    y = fct.conv2d(x, w, b, stride=2, padding=1)            # x (N, C, H, W) or (C, H, W)

Each function checks its arguments (the messages of fastconv.nn.functional, from the same
helpers), resolves them (unbatched input, pairs, padding as (top, bottom, left, right)) and calls
one fastconv:: custom op (see _ops.py), so torch.compile(fullgraph=True) and torch.export trace
them; plain eager calls run the same kernels without the dispatcher (_eager.py). float32 and
float64 CPU tensors (float16/bfloat16 raise TypeError there); CUDA tensors in float32, float16,
bfloat16 or float64 run fastconv's CUDA kernels (NotImplementedError without fastconv._cuda or a
GPU). Non-contiguous and channels_last inputs are copied to NCHW first (one
copy per call; the output is NCHW-contiguous).

The extensions of fastconv.nn.functional hold here too: `padding` may be a 4-tuple (top, bottom,
left, right), and 'same' works at any stride (TensorFlow/Keras semantics), also in pooling. One
difference from torch: a dilated max pooling window that sees only padding raises ValueError
(torch returns -inf with an out-of-range index there).
"""
from __future__ import annotations

import torch

from fastconv.nn import _common as c
from fastconv.torch import _eager
from fastconv.torch._launch import device_backend, plain_cpu, unsupported

__all__ = ["conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"]


def _check_types(op: str, **tensors) -> None:
    """Each argument a torch.Tensor (or None)."""
    for name, t in tensors.items():
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")


def _check_tensors(op: str, **tensors) -> None:
    """Tensors (None skipped) that fastconv's kernels can take, of one dtype and one device as
    the first."""
    if plain_cpu(*tensors.values()):
        return
    _check_types(op, **tensors)
    err = unsupported(op, **tensors)
    if err is not None:
        raise err
    (first, ref), *rest = [(n, t) for n, t in tensors.items() if t is not None]
    for name, t in rest:
        if t.dtype != ref.dtype:
            raise TypeError(f"{op}: {name} has dtype {t.dtype} but {first} has dtype {ref.dtype}; "
                            f"they must match")
        if t.device != ref.device:
            raise ValueError(f"{op}: {name} is on {t.device} but {first} is on {ref.device}; "
                             f"they must be on the same device")


def _autocast(*tensors):
    """Under torch.autocast on the tensors' device, the 16- and 32-bit float tensors on
    fastconv's CUDA path cast to the autocast dtype, as torch's autocast casts its own conv2d's
    arguments (a layer's bfloat16 output meets the next layer's float32 weight; float64 stays).
    torch's autocast does not know fastconv's custom ops, so this front does it. CPU tensors on
    the CPU kernels stay as they are."""
    first = tensors[0]
    device = first.device.type
    if device_backend(first) is None or not torch.is_autocast_enabled(device):
        return tensors
    dtype = torch.get_autocast_dtype(device)
    cast = (torch.float32, torch.float16, torch.bfloat16)
    return tuple(t.to(dtype) if t is not None and t.dtype in cast else t for t in tensors)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation), as torch.nn.functional.conv2d.

    Args:
        input: (N, C, H, W) or unbatched (C, H, W).
        weight: (K, C / groups, R, S). bias: (K,) or None.
        stride, dilation: int or (h, w).
        padding: int, (h, w), (top, bottom, left, right), 'valid' or 'same'.
        groups: C and K must both be divisible by it (groups == C: depthwise).
    Returns:
        (N, K, P, Q), or (K, P, Q) for an unbatched input.
    """
    op = "conv2d"
    if not plain_cpu(input, weight, bias):  # else nothing to cast, and the kernels take them
        _check_types(op, input=input, weight=weight, bias=bias)
        input, weight, bias = _autocast(input, weight, bias)  # before the dtype check, as torch's
        _check_tensors(op, input=input, weight=weight, bias=bias)
    x, unbatched = c.batched(op, "input", input)
    stride, pad, dilation, groups, _ = c.conv_geometry(
        op, x.shape, weight.shape, stride, padding, dilation, groups,
        bias_shape=None if bias is None else bias.shape)
    out = _eager.conv2d(x, weight, bias, stride, pad, dilation, groups)
    return out[0] if unbatched else out


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """2-D max pooling, as torch.nn.functional.max_pool2d (NaN propagates; the indices are flat
    positions h * W + w in each input plane, as torch's, so MaxUnpool2d takes them).

    The argmax is computed (and saved for backward) only when the input requires grad or
    return_indices is set.
    """
    op = "max_pool2d"
    _check_tensors(op, input=input)
    x, unbatched = c.batched(op, "input", input)
    kernel, stride, pad, dilation, ceil_mode, _ = c.max_pool_geometry(
        op, tuple(x.shape[2:]), kernel_size, stride, padding, dilation, ceil_mode)
    return_indices = c.check_bool(op, "return_indices", return_indices)
    args = (kernel, stride, pad, dilation, ceil_mode)
    if return_indices or (torch.is_grad_enabled() and x.requires_grad):
        out, indices = _eager.max_pool2d_with_indices(x, *args)
    else:
        out, indices = _eager.max_pool2d(x, *args), None
    if unbatched:
        out, indices = out[0], (None if indices is None else indices[0])
    return (out, indices) if return_indices else out


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """2-D average pooling, as torch.nn.functional.avg_pool2d (padding counts as zeros;
    count_include_pad=False divides by the in-input count; divisor_override replaces the
    divisor)."""
    op = "avg_pool2d"
    _check_tensors(op, input=input)
    x, unbatched = c.batched(op, "input", input)
    kernel, stride, pad, ceil_mode, count_include_pad, divisor, _ = c.avg_pool_geometry(
        op, tuple(x.shape[2:]), kernel_size, stride, padding, ceil_mode, count_include_pad,
        divisor_override)
    out = _eager.avg_pool2d(x, kernel, stride, pad, ceil_mode, count_include_pad, divisor)
    return out[0] if unbatched else out


def adaptive_avg_pool2d(input, output_size):
    """2-D adaptive average pooling, as torch.nn.functional.adaptive_avg_pool2d: output cell
    (p, q) averages rows [floor(p*H/P), ceil((p+1)*H/P)) and the columns likewise; output_size is
    an int or (P, Q), a None entry keeping that input size."""
    op = "adaptive_avg_pool2d"
    _check_tensors(op, input=input)
    x, unbatched = c.batched(op, "input", input)
    P, Q = c.adaptive_size(op, output_size, x.shape[2], x.shape[3])
    out = _eager.adaptive_avg_pool2d(x, (P, Q))
    return out[0] if unbatched else out
