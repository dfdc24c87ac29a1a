"""The fastconv:: custom ops: fastconv's kernels registered with torch.library.custom_op, each with
a fake implementation (output shapes from fastconv._shape.output_size, the one Python output-size
helper) and, for the forward ops, an autograd formula made of the backward ops. torch.compile
(fullgraph), torch.export and AOTAutograd therefore see them as single opaque ops.

    torch.ops.fastconv.conv2d(x, w, b, stride, padding, dilation, groups)
        -> conv2d_backward_input / conv2d_backward_weight / conv2d_backward_bias
    torch.ops.fastconv.max_pool2d_with_indices(x, kernel_size, stride, padding, dilation, ceil_mode)
        -> max_pool2d_backward(grad_output, indices, input_size)      (the indices are saved)
    torch.ops.fastconv.max_pool2d(...)       values only (no autograd: for inputs without grad)
    torch.ops.fastconv.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                  divisor_override)      -> avg_pool2d_backward
    torch.ops.fastconv.adaptive_avg_pool2d(x, output_size) -> adaptive_avg_pool2d_backward

Arguments are already resolved, as fastconv._C takes them: 4-D NCHW tensors, (h, w) pairs,
padding (top, bottom, left, right), divisor_override 0 for none. Argument checking and the
torch.nn.functional-style front (unbatched input, 'same', defaults) are in functional.py.
Inputs are made C-contiguous here (a copy for channels_last or strided tensors), outputs are
allocated by torch, and an empty batch never reaches a kernel. CUDA tensors (and CPU tensors inside
fastconv.testing.cuda_emulation()) go to the CUDA twins of fastconv/_gpu/, which allocate their
outputs from torch's caching allocator and launch on torch's current stream.

The backward ops have no autograd formula, so double backward (create_graph=True through
fastconv's backward, e.g. a gradient penalty) stops with torch's error "Trying to backward through
fastconv.<op>_backward... but no autograd formula was registered" rather than dropping a term.
torch.autograd.Function is not needed: custom_op expresses every op here.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
# The first call of any custom op imports torch._dynamo (torch/_compile.py), and during that
# import torch.fx.wrap keeps its own frame in a local, a reference cycle holding the whole call
# stack: the caller's model (and a DistributedDataParallel wrapper with its process group) would
# then live until the garbage collector runs, or until interpreter shutdown, where destroying a
# gloo process group can abort the process. Importing it here, from module level, leaves no user
# frame on that stack; the first op call would pay the same second of import time anyway.
import torch._dynamo  # noqa: F401
from torch import Tensor

from fastconv._shape import output_size
from fastconv._gpu import conv as _gpu_conv
from fastconv._gpu import pool as _gpu_pool
from fastconv.torch._launch import device_backend, launch


def _contiguous(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.contiguous()


# ---- conv2d -----------------------------------------------------------------------------------

def _conv2d_shape(input, weight, stride, padding, dilation):
    N, _, H, W = input.shape
    K, _, R, S = weight.shape
    return (N, K, output_size(H, R, stride[0], padding[0], padding[1], dilation[0], False),
            output_size(W, S, stride[1], padding[2], padding[3], dilation[1], False))


@torch.library.custom_op("fastconv::conv2d", mutates_args=())
def conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: Sequence[int],
           padding: Sequence[int], dilation: Sequence[int], groups: int) -> Tensor:
    """(N, C, H, W) * (K, C/groups, R, S) (+ (K,)) -> (N, K, P, Q)."""
    shape = _conv2d_shape(input, weight, stride, padding, dilation)
    be = device_backend(input)
    if be is not None and input.shape[0] > 0:
        return _gpu_conv.conv2d(be, input.contiguous(), weight.contiguous(), _contiguous(bias),
                                stride, padding, dilation, groups, shape[2:])
    out = input.new_empty(shape)
    if input.shape[0] > 0:
        launch("conv2d_forward", input.contiguous(), weight.contiguous(), _contiguous(bias), out,
               stride, padding, dilation, groups)
    return out


@conv2d.register_fake
def _(input, weight, bias, stride, padding, dilation, groups):
    return input.new_empty(_conv2d_shape(input, weight, stride, padding, dilation))


@torch.library.custom_op("fastconv::conv2d_backward_input", mutates_args=())
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


@conv2d_backward_input.register_fake
def _(grad_output, weight, input_size, stride, padding, dilation, groups):
    return grad_output.new_empty(input_size)


@torch.library.custom_op("fastconv::conv2d_backward_weight", mutates_args=())
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


@conv2d_backward_weight.register_fake
def _(grad_output, input, weight_size, stride, padding, dilation, groups):
    return grad_output.new_empty(weight_size)


@torch.library.custom_op("fastconv::conv2d_backward_bias", mutates_args=())
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


@conv2d_backward_bias.register_fake
def _(grad_output):
    return grad_output.new_empty(grad_output.shape[1])


def _conv2d_setup(ctx, inputs, output):
    input, weight, bias, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(input, weight)
    ctx.geometry = (stride, padding, dilation, groups)
    ctx.has_bias = bias is not None


def _conv2d_backward(ctx, grad):
    input, weight = ctx.saved_tensors
    grad = grad.contiguous()
    need = ctx.needs_input_grad
    dx = conv2d_backward_input(grad, weight, input.shape, *ctx.geometry) if need[0] else None
    dw = conv2d_backward_weight(grad, input, weight.shape, *ctx.geometry) if need[1] else None
    db = conv2d_backward_bias(grad) if ctx.has_bias and need[2] else None
    return dx, dw, db, None, None, None, None


conv2d.register_autograd(_conv2d_backward, setup_context=_conv2d_setup)


# ---- max_pool2d -------------------------------------------------------------------------------

def _pool2d_shape(input, kernel_size, stride, padding, dilation, ceil_mode):
    N, C, H, W = input.shape
    (R, S), (sh, sw), (t, b, l, r), (dh, dw) = kernel_size, stride, padding, dilation
    return (N, C, output_size(H, R, sh, t, b, dh, ceil_mode),
            output_size(W, S, sw, l, r, dw, ceil_mode))


@torch.library.custom_op("fastconv::max_pool2d", mutates_args=())
def max_pool2d(input: Tensor, kernel_size: Sequence[int], stride: Sequence[int],
               padding: Sequence[int], dilation: Sequence[int], ceil_mode: bool) -> Tensor:
    """Max pooling values only (inference: no indices written, no autograd)."""
    shape = _pool2d_shape(input, kernel_size, stride, padding, dilation, ceil_mode)
    be = device_backend(input)
    if be is not None and input.shape[0] > 0:
        return _gpu_pool.max_pool2d(be, input.contiguous(), kernel_size, stride, padding,
                                    dilation, ceil_mode, shape[2:], False)[0]
    out = input.new_empty(shape)
    if input.shape[0] > 0:
        launch("max_pool2d_forward", input.contiguous(), out, None, kernel_size, stride, padding,
               dilation, ceil_mode)
    return out


@max_pool2d.register_fake
def _(input, kernel_size, stride, padding, dilation, ceil_mode):
    return input.new_empty(_pool2d_shape(input, kernel_size, stride, padding, dilation, ceil_mode))


@torch.library.custom_op("fastconv::max_pool2d_with_indices", mutates_args=())
def max_pool2d_with_indices(input: Tensor, kernel_size: Sequence[int], stride: Sequence[int],
                            padding: Sequence[int], dilation: Sequence[int],
                            ceil_mode: bool) -> Tuple[Tensor, Tensor]:
    """Max pooling values and the int64 argmax of each window (flat h * W + w, as torch's)."""
    shape = _pool2d_shape(input, kernel_size, stride, padding, dilation, ceil_mode)
    be = device_backend(input)
    if be is not None and input.shape[0] > 0:
        return _gpu_pool.max_pool2d(be, input.contiguous(), kernel_size, stride, padding,
                                    dilation, ceil_mode, shape[2:], True)
    out, indices = input.new_empty(shape), input.new_empty(shape, dtype=torch.int64)
    if input.shape[0] > 0:
        launch("max_pool2d_forward", input.contiguous(), out, indices, kernel_size, stride, padding,
               dilation, ceil_mode)
    return out, indices


@max_pool2d_with_indices.register_fake
def _(input, kernel_size, stride, padding, dilation, ceil_mode):
    shape = _pool2d_shape(input, kernel_size, stride, padding, dilation, ceil_mode)
    return input.new_empty(shape), input.new_empty(shape, dtype=torch.int64)


@torch.library.custom_op("fastconv::max_pool2d_backward", mutates_args=())
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


@max_pool2d_backward.register_fake
def _(grad_output, indices, input_size, kernel_size=None, stride=None, padding=None,
      dilation=None):
    return grad_output.new_empty(input_size)


def _max_pool2d_setup(ctx, inputs, output):
    ctx.save_for_backward(output[1])
    ctx.input_size = inputs[0].shape
    ctx.geometry = inputs[1:5]  # kernel_size, stride, padding, dilation


def _max_pool2d_backward(ctx, grad, grad_indices):
    (indices,) = ctx.saved_tensors
    return (max_pool2d_backward(grad, indices, ctx.input_size, *ctx.geometry),
            None, None, None, None, None)


max_pool2d_with_indices.register_autograd(_max_pool2d_backward, setup_context=_max_pool2d_setup)


# ---- avg_pool2d -------------------------------------------------------------------------------

@torch.library.custom_op("fastconv::avg_pool2d", mutates_args=())
def avg_pool2d(input: Tensor, kernel_size: Sequence[int], stride: Sequence[int],
               padding: Sequence[int], ceil_mode: bool, count_include_pad: bool,
               divisor_override: int) -> Tensor:
    """Average pooling (divisor_override 0: none)."""
    shape = _pool2d_shape(input, kernel_size, stride, padding, (1, 1), ceil_mode)
    be = device_backend(input)
    if be is not None and input.shape[0] > 0:
        return _gpu_pool.avg_pool2d(be, input.contiguous(), kernel_size, stride, padding,
                                    ceil_mode, count_include_pad, divisor_override, shape[2:])
    out = input.new_empty(shape)
    if input.shape[0] > 0:
        launch("avg_pool2d_forward", input.contiguous(), out, kernel_size, stride, padding,
               ceil_mode, count_include_pad, divisor_override)
    return out


@avg_pool2d.register_fake
def _(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    return input.new_empty(_pool2d_shape(input, kernel_size, stride, padding, (1, 1), ceil_mode))


@torch.library.custom_op("fastconv::avg_pool2d_backward", mutates_args=())
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


@avg_pool2d_backward.register_fake
def _(grad_output, input_size, kernel_size, stride, padding, ceil_mode, count_include_pad,
      divisor_override):
    return grad_output.new_empty(input_size)


def _avg_pool2d_setup(ctx, inputs, output):
    ctx.input_size = inputs[0].shape
    ctx.args = inputs[1:]


def _avg_pool2d_backward(ctx, grad):
    return (avg_pool2d_backward(grad, ctx.input_size, *ctx.args),) + (None,) * len(ctx.args)


avg_pool2d.register_autograd(_avg_pool2d_backward, setup_context=_avg_pool2d_setup)


# ---- adaptive_avg_pool2d ----------------------------------------------------------------------

@torch.library.custom_op("fastconv::adaptive_avg_pool2d", mutates_args=())
def adaptive_avg_pool2d(input: Tensor, output_size: Sequence[int]) -> Tensor:
    """Adaptive average pooling to output_size (P, Q)."""
    be = device_backend(input)
    if be is not None and input.shape[0] > 0:
        return _gpu_pool.adaptive_avg_pool2d(be, input.contiguous(), tuple(output_size))
    out = input.new_empty(tuple(input.shape[:2]) + tuple(output_size))
    if input.shape[0] > 0:
        launch("adaptive_avg_pool2d_forward", input.contiguous(), out)
    return out


@adaptive_avg_pool2d.register_fake
def _(input, output_size):
    return input.new_empty(tuple(input.shape[:2]) + tuple(output_size))


@torch.library.custom_op("fastconv::adaptive_avg_pool2d_backward", mutates_args=())
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


@adaptive_avg_pool2d_backward.register_fake
def _(grad_output, input_size):
    return grad_output.new_empty(input_size)


def _adaptive_avg_pool2d_setup(ctx, inputs, output):
    ctx.input_size = inputs[0].shape


def _adaptive_avg_pool2d_backward(ctx, grad):
    return adaptive_avg_pool2d_backward(grad, ctx.input_size), None


adaptive_avg_pool2d.register_autograd(_adaptive_avg_pool2d_backward,
                                      setup_context=_adaptive_avg_pool2d_setup)
