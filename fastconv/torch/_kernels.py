"""fastconv's kernels on torch tensors: the implementations behind the fastconv:: custom ops
(_ops.py) and the eager calls (_eager.py), with their autograd formulas written once for both.

Arguments are already resolved, as fastconv._C takes them: 4-D NCHW tensors, (h, w) pairs,
padding (top, bottom, left, right), divisor_override 0 for none. Inputs are made C-contiguous
here (a copy for channels_last or strided tensors), outputs are allocated by torch, and an empty
batch never reaches a kernel. CUDA tensors (and CPU tensors inside
fastconv.testing.cuda_emulation()) go to the CUDA twins of fastconv/_gpu/, which allocate their
outputs from torch's caching allocator and launch on torch's current stream.

Each forward op with a gradient has `<op>_setup(ctx, inputs, output)`, which saves what its
backward needs (the setup_context of torch.library and of torch.autograd.Function alike), and
`<op>_vjp(ops, ctx, *grads)`, which computes the input gradients with the backward functions of
`ops`: this module's plain functions, or the custom ops of _ops.py when the backward must itself
be traced or differentiated.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from fastconv._shape import output_size
from fastconv._gpu import conv as _gpu_conv
from fastconv._gpu import pool as _gpu_pool
from fastconv.torch._launch import device_backend, launch


def _contiguous(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.contiguous()


# ---- conv2d -----------------------------------------------------------------------------------

def conv2d_shape(input, weight, stride, padding, dilation):
    N, _, H, W = input.shape
    K, _, R, S = weight.shape
    return (N, K, output_size(H, R, stride[0], padding[0], padding[1], dilation[0], False),
            output_size(W, S, stride[1], padding[2], padding[3], dilation[1], False))


def conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: Sequence[int],
           padding: Sequence[int], dilation: Sequence[int], groups: int) -> Tensor:
    """(N, C, H, W) * (K, C/groups, R, S) (+ (K,)) -> (N, K, P, Q)."""
    shape = conv2d_shape(input, weight, stride, padding, dilation)
    be = device_backend(input)
    if be is not None and input.shape[0] > 0:
        return _gpu_conv.conv2d(be, input.contiguous(), weight.contiguous(), _contiguous(bias),
                                stride, padding, dilation, groups, shape[2:])
    out = input.new_empty(shape)
    if input.shape[0] > 0:
        launch("conv2d_forward", input.contiguous(), weight.contiguous(), _contiguous(bias), out,
               stride, padding, dilation, groups)
    return out


def conv2d_backward_input(grad_output: Tensor, weight: Tensor, input_size: Sequence[int],
                          stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                          groups: int) -> Tensor:
    """Gradient of conv2d with respect to its input, of shape input_size."""
    be = device_backend(grad_output)
    if be is not None and input_size[0] > 0:
        return _gpu_conv.conv2d_backward_input(be, grad_output.contiguous(), weight.contiguous(),
                                               tuple(input_size), stride, padding, dilation, groups)
    grad_input = grad_output.new_empty(input_size)
    if input_size[0] > 0:
        launch("conv2d_backward_input", grad_output.contiguous(), weight.contiguous(), grad_input,
               stride, padding, dilation, groups)
    return grad_input


def conv2d_backward_weight(grad_output: Tensor, input: Tensor, weight_size: Sequence[int],
                           stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                           groups: int) -> Tensor:
    """Gradient of conv2d with respect to its weight, of shape weight_size."""
    if input.shape[0] == 0:
        return grad_output.new_zeros(weight_size)
    grad_weight = grad_output.new_empty(weight_size)
    be = device_backend(grad_output)
    if be is not None:
        return _gpu_conv.conv2d_backward_weight(be, grad_output.contiguous(), input.contiguous(),
                                                tuple(weight_size), stride, padding, dilation,
                                                groups)
    launch("conv2d_backward_weight", grad_output.contiguous(), input.contiguous(), grad_weight,
           stride, padding, dilation, groups)
    return grad_weight


def conv2d_backward_bias(grad_output: Tensor) -> Tensor:
    """Gradient of conv2d with respect to its bias: grad_output summed over N, P and Q."""
    if grad_output.shape[0] == 0:
        return grad_output.new_zeros(grad_output.shape[1])
    grad_bias = grad_output.new_empty(grad_output.shape[1])
    be = device_backend(grad_output)
    if be is not None:
        return _gpu_conv.conv2d_backward_bias(be, grad_output.contiguous())
    launch("conv2d_backward_bias", grad_output.contiguous(), grad_bias)
    return grad_bias


def conv2d_setup(ctx, inputs, output):
    input, weight, bias, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(input, weight)
    ctx.geometry = (stride, padding, dilation, groups)
    ctx.has_bias = bias is not None


def conv2d_vjp(ops, ctx, grad):
    input, weight = ctx.saved_tensors
    grad = grad.contiguous()
    need = ctx.needs_input_grad
    dx = ops.conv2d_backward_input(grad, weight, input.shape, *ctx.geometry) if need[0] else None
    dw = ops.conv2d_backward_weight(grad, input, weight.shape, *ctx.geometry) if need[1] else None
    db = ops.conv2d_backward_bias(grad) if ctx.has_bias and need[2] else None
    return dx, dw, db, None, None, None, None


# ---- max_pool2d -------------------------------------------------------------------------------

def pool2d_shape(input, kernel_size, stride, padding, dilation, ceil_mode):
    N, C, H, W = input.shape
    (R, S), (sh, sw), (t, b, l, r), (dh, dw) = kernel_size, stride, padding, dilation
    return (N, C, output_size(H, R, sh, t, b, dh, ceil_mode),
            output_size(W, S, sw, l, r, dw, ceil_mode))


def max_pool2d(input: Tensor, kernel_size: Sequence[int], stride: Sequence[int],
               padding: Sequence[int], dilation: Sequence[int], ceil_mode: bool) -> Tensor:
    """Max pooling values only (inference: no indices written, no autograd)."""
    shape = pool2d_shape(input, kernel_size, stride, padding, dilation, ceil_mode)
    be = device_backend(input)
    if be is not None and input.shape[0] > 0:
        return _gpu_pool.max_pool2d(be, input.contiguous(), kernel_size, stride, padding,
                                    dilation, ceil_mode, shape[2:], False)[0]
    out = input.new_empty(shape)
    if input.shape[0] > 0:
        launch("max_pool2d_forward", input.contiguous(), out, None, kernel_size, stride, padding,
               dilation, ceil_mode)
    return out


def max_pool2d_with_indices(input: Tensor, kernel_size: Sequence[int], stride: Sequence[int],
                            padding: Sequence[int], dilation: Sequence[int],
                            ceil_mode: bool) -> Tuple[Tensor, Tensor]:
    """Max pooling values and the int64 argmax of each window (flat h * W + w, as torch's)."""
    shape = pool2d_shape(input, kernel_size, stride, padding, dilation, ceil_mode)
    be = device_backend(input)
    if be is not None and input.shape[0] > 0:
        return _gpu_pool.max_pool2d(be, input.contiguous(), kernel_size, stride, padding,
                                    dilation, ceil_mode, shape[2:], True)
    out, indices = input.new_empty(shape), input.new_empty(shape, dtype=torch.int64)
    if input.shape[0] > 0:
        launch("max_pool2d_forward", input.contiguous(), out, indices, kernel_size, stride, padding,
               dilation, ceil_mode)
    return out, indices


def max_pool2d_backward(grad_output: Tensor, indices: Tensor, input_size: Sequence[int],
                        kernel_size: Optional[Sequence[int]] = None,
                        stride: Optional[Sequence[int]] = None,
                        padding: Optional[Sequence[int]] = None,
                        dilation: Optional[Sequence[int]] = None) -> Tensor:
    """Each grad_output element added at the input position its index names. The forward's
    geometry (optional; autograd passes it) makes the CUDA kernel a parallel gather."""
    be = device_backend(grad_output)
    if be is not None and input_size[0] > 0:
        geometry = {} if kernel_size is None else dict(
            kernel=tuple(kernel_size), stride=tuple(stride), pad=tuple(padding),
            dilation=tuple(dilation))
        return _gpu_pool.max_pool2d_backward(be, grad_output.contiguous(), indices.contiguous(),
                                             tuple(input_size), **geometry)
    grad_input = grad_output.new_empty(input_size)
    if input_size[0] > 0:
        launch("max_pool2d_backward", grad_output.contiguous(), indices.contiguous(), grad_input)
    return grad_input


def max_pool2d_with_indices_setup(ctx, inputs, output):
    ctx.save_for_backward(output[1])
    ctx.input_size = inputs[0].shape
    ctx.geometry = inputs[1:5]  # kernel_size, stride, padding, dilation


def max_pool2d_with_indices_vjp(ops, ctx, grad, grad_indices):
    (indices,) = ctx.saved_tensors
    return (ops.max_pool2d_backward(grad, indices, ctx.input_size, *ctx.geometry),
            None, None, None, None, None)


# ---- avg_pool2d -------------------------------------------------------------------------------

def avg_pool2d(input: Tensor, kernel_size: Sequence[int], stride: Sequence[int],
               padding: Sequence[int], ceil_mode: bool, count_include_pad: bool,
               divisor_override: int) -> Tensor:
    """Average pooling (divisor_override 0: none)."""
    shape = pool2d_shape(input, kernel_size, stride, padding, (1, 1), ceil_mode)
    be = device_backend(input)
    if be is not None and input.shape[0] > 0:
        return _gpu_pool.avg_pool2d(be, input.contiguous(), kernel_size, stride, padding,
                                    ceil_mode, count_include_pad, divisor_override, shape[2:])
    out = input.new_empty(shape)
    if input.shape[0] > 0:
        launch("avg_pool2d_forward", input.contiguous(), out, kernel_size, stride, padding,
               ceil_mode, count_include_pad, divisor_override)
    return out


def avg_pool2d_backward(grad_output: Tensor, input_size: Sequence[int], kernel_size: Sequence[int],
                        stride: Sequence[int], padding: Sequence[int], ceil_mode: bool,
                        count_include_pad: bool, divisor_override: int) -> Tensor:
    """Gradient of avg_pool2d with respect to its input, of shape input_size."""
    be = device_backend(grad_output)
    if be is not None and input_size[0] > 0:
        return _gpu_pool.avg_pool2d_backward(be, grad_output.contiguous(), tuple(input_size),
                                             kernel_size, stride, padding, ceil_mode,
                                             count_include_pad, divisor_override)
    grad_input = grad_output.new_empty(input_size)
    if input_size[0] > 0:
        launch("avg_pool2d_backward", grad_output.contiguous(), grad_input, kernel_size, stride,
               padding, ceil_mode, count_include_pad, divisor_override)
    return grad_input


def avg_pool2d_setup(ctx, inputs, output):
    ctx.input_size = inputs[0].shape
    ctx.args = inputs[1:]


def avg_pool2d_vjp(ops, ctx, grad):
    return (ops.avg_pool2d_backward(grad, ctx.input_size, *ctx.args),) + (None,) * len(ctx.args)


# ---- adaptive_avg_pool2d ----------------------------------------------------------------------

def adaptive_avg_pool2d(input: Tensor, output_size: Sequence[int]) -> Tensor:
    """Adaptive average pooling to output_size (P, Q)."""
    be = device_backend(input)
    if be is not None and input.shape[0] > 0:
        return _gpu_pool.adaptive_avg_pool2d(be, input.contiguous(), tuple(output_size))
    out = input.new_empty(tuple(input.shape[:2]) + tuple(output_size))
    if input.shape[0] > 0:
        launch("adaptive_avg_pool2d_forward", input.contiguous(), out)
    return out


def adaptive_avg_pool2d_backward(grad_output: Tensor, input_size: Sequence[int]) -> Tensor:
    """Gradient of adaptive_avg_pool2d with respect to its input, of shape input_size."""
    be = device_backend(grad_output)
    if be is not None and input_size[0] > 0:
        return _gpu_pool.adaptive_avg_pool2d_backward(be, grad_output.contiguous(),
                                                      tuple(input_size))
    grad_input = grad_output.new_empty(input_size)
    if input_size[0] > 0:
        launch("adaptive_avg_pool2d_backward", grad_output.contiguous(), grad_input)
    return grad_input


def adaptive_avg_pool2d_setup(ctx, inputs, output):
    ctx.input_size = inputs[0].shape


def adaptive_avg_pool2d_vjp(ops, ctx, grad):
    return ops.adaptive_avg_pool2d_backward(grad, ctx.input_size), None

