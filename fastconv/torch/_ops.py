"""The fastconv:: custom ops: fastconv's kernels (_kernels.py) registered with
torch.library.custom_op, each with a fake implementation (output shapes from
fastconv._shape.output_size, the one Python output-size helper) and, for the forward ops, an
autograd formula made of the backward ops. torch.compile (fullgraph), torch.export and
AOTAutograd therefore see them as single opaque ops.

    torch.ops.fastconv.conv2d(x, w, b, stride, padding, dilation, groups)
        -> conv2d_backward_input / conv2d_backward_weight / conv2d_backward_bias
    torch.ops.fastconv.max_pool2d_with_indices(x, kernel_size, stride, padding, dilation, ceil_mode)
        -> max_pool2d_backward(grad_output, indices, input_size)      (the indices are saved)
    torch.ops.fastconv.max_pool2d(...)       values only (no autograd: for inputs without grad)
    torch.ops.fastconv.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                  divisor_override)      -> avg_pool2d_backward
    torch.ops.fastconv.adaptive_avg_pool2d(x, output_size) -> adaptive_avg_pool2d_backward

Arguments are already resolved (see _kernels.py); argument checking and the
torch.nn.functional-style front (unbatched input, 'same', defaults) are in functional.py, which
calls these ops whenever something may be watching the call (torch.compile, torch.export, a
dispatch mode, a functorch transform, the profiler) and the same kernels without the dispatcher
otherwise (_eager.py).

The backward ops have no autograd formula, so double backward (create_graph=True through
fastconv's backward, e.g. a gradient penalty) stops with torch's error "Trying to backward through
fastconv.<op>_backward... but no autograd formula was registered" rather than dropping a term.
"""
from __future__ import annotations

import sys

import torch
# The first call of any custom op imports torch._dynamo (torch/_compile.py), and during that
# import torch.fx.wrap keeps its own frame in a local, a reference cycle holding the whole call
# stack: the caller's model (and a DistributedDataParallel wrapper with its process group) would
# then live until the garbage collector runs, or until interpreter shutdown, where destroying a
# gloo process group can abort the process. Importing it here, from module level, leaves no user
# frame on that stack; the first op call would pay the same second of import time anyway.
import torch._dynamo  # noqa: F401

from fastconv.torch import _kernels as K

_this = sys.modules[__name__]  # the namespace the autograd formulas take their backward ops from


def _op(name: str):
    return torch.library.custom_op(f"fastconv::{name}", getattr(K, name), mutates_args=())


# ---- conv2d -----------------------------------------------------------------------------------

conv2d = _op("conv2d")
conv2d_backward_input = _op("conv2d_backward_input")
conv2d_backward_weight = _op("conv2d_backward_weight")
conv2d_backward_bias = _op("conv2d_backward_bias")


@conv2d.register_fake
def _(input, weight, bias, stride, padding, dilation, groups):
    return input.new_empty(K.conv2d_shape(input, weight, stride, padding, dilation))


@conv2d_backward_input.register_fake
def _(grad_output, weight, input_size, stride, padding, dilation, groups):
    return grad_output.new_empty(input_size)


@conv2d_backward_weight.register_fake
def _(grad_output, input, weight_size, stride, padding, dilation, groups):
    return grad_output.new_empty(weight_size)


@conv2d_backward_bias.register_fake
def _(grad_output):
    return grad_output.new_empty(grad_output.shape[1])


conv2d.register_autograd(lambda ctx, grad: K.conv2d_vjp(_this, ctx, grad),
                         setup_context=K.conv2d_setup)


# ---- max_pool2d -------------------------------------------------------------------------------

max_pool2d = _op("max_pool2d")
max_pool2d_with_indices = _op("max_pool2d_with_indices")
max_pool2d_backward = _op("max_pool2d_backward")


@max_pool2d.register_fake
def _(input, kernel_size, stride, padding, dilation, ceil_mode):
    return input.new_empty(K.pool2d_shape(input, kernel_size, stride, padding, dilation,
                                          ceil_mode))


@max_pool2d_with_indices.register_fake
def _(input, kernel_size, stride, padding, dilation, ceil_mode):
    shape = K.pool2d_shape(input, kernel_size, stride, padding, dilation, ceil_mode)
    return input.new_empty(shape), input.new_empty(shape, dtype=torch.int64)


@max_pool2d_backward.register_fake
def _(grad_output, indices, input_size, kernel_size=None, stride=None, padding=None,
      dilation=None):
    return grad_output.new_empty(input_size)


max_pool2d_with_indices.register_autograd(
    lambda ctx, grad, grad_indices: K.max_pool2d_with_indices_vjp(_this, ctx, grad, grad_indices),
    setup_context=K.max_pool2d_with_indices_setup)


# ---- avg_pool2d -------------------------------------------------------------------------------

avg_pool2d = _op("avg_pool2d")
avg_pool2d_backward = _op("avg_pool2d_backward")


@avg_pool2d.register_fake
def _(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    return input.new_empty(K.pool2d_shape(input, kernel_size, stride, padding, (1, 1), ceil_mode))


@avg_pool2d_backward.register_fake
def _(grad_output, input_size, kernel_size, stride, padding, ceil_mode, count_include_pad,
      divisor_override):
    return grad_output.new_empty(input_size)


avg_pool2d.register_autograd(lambda ctx, grad: K.avg_pool2d_vjp(_this, ctx, grad),
                             setup_context=K.avg_pool2d_setup)


# ---- adaptive_avg_pool2d ----------------------------------------------------------------------

adaptive_avg_pool2d = _op("adaptive_avg_pool2d")
adaptive_avg_pool2d_backward = _op("adaptive_avg_pool2d_backward")


@adaptive_avg_pool2d.register_fake
def _(input, output_size):
    return input.new_empty(tuple(input.shape[:2]) + tuple(output_size))


@adaptive_avg_pool2d_backward.register_fake
def _(grad_output, input_size):
    return grad_output.new_empty(input_size)


adaptive_avg_pool2d.register_autograd(
    lambda ctx, grad: K.adaptive_avg_pool2d_vjp(_this, ctx, grad),
    setup_context=K.adaptive_avg_pool2d_setup)
