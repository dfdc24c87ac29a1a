"""fastconv's kernels called from eager PyTorch without the dispatcher.

A torch.library.custom_op call costs about 50 us of Python in torch 2.13 before the kernel runs
(its autograd and backend wrappers, torch._dynamo's disable guard, an aliasing check; see
pytorch#176592): more than a small convolution takes. When nothing can watch the call, the same
implementations (_kernels.py) run here instead, under a torch.autograd.Function made of the same
setup and gradient formulas, or directly when no gradient is needed. "Nothing can watch" means
(`applies`): not inside torch.compile or torch.export, no torch.jit trace, no dispatch or
torch-function mode (FakeTensorMode, `with torch.device(...)`, FlopCounterMode, ...), no
functorch transform (vmap, grad), no profiler, and every tensor a plain CPU or CUDA
torch.Tensor / Parameter (no subclass, no meta tensor). Anything else goes through the custom ops
of _ops.py, which give the same results.

The backward runs the plain functions too, unless it is itself recorded (create_graph=True) or
traced: then it calls the backward custom ops, so double backward stops with the same error as
on the custom-op path.
"""
from __future__ import annotations

import torch

from fastconv.torch import _kernels as K
from fastconv.torch import _ops

_PLAIN = (torch.Tensor, torch.nn.Parameter)
_C = torch._C


def applies(*tensors) -> bool:
    """Whether calling the kernels straight from Python is invisible to everything that could
    watch a torch op (see the module docstring); None entries are skipped."""
    if torch.compiler.is_compiling():  # first: dynamo folds it and traces nothing below
        return False
    for t in tensors:
        if t is not None and (type(t) not in _PLAIN or t.is_meta):
            return False
    return (_C._len_torch_dispatch_stack() == 0 and not _C._is_torch_function_mode_enabled()
            and _C._functorch.peek_interpreter_stack() is None
            and _C._get_tracing_state() is None and not torch.autograd._profiler_enabled())


def _backward_ops(grad):
    """The backward functions a gradient formula runs: the plain ones unless the backward is
    recorded for a higher derivative or watched."""
    return K if not torch.is_grad_enabled() and applies(grad) else _ops


def _needs_graph(*tensors) -> bool:
    if not torch.is_grad_enabled():
        return False
    return any(t is not None and t.requires_grad for t in tensors)


# forward(ctx, ...) rather than a separate setup_context: with setup_context, Function.apply
# binds its arguments through inspect.signature on every call (about 15 us).

class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, *inputs):
        output = K.conv2d(*inputs)
        K.conv2d_setup(ctx, inputs, output)
        return output

    @staticmethod
    def backward(ctx, grad):
        return K.conv2d_vjp(_backward_ops(grad), ctx, grad)


class _MaxPool2dWithIndices(torch.autograd.Function):
    @staticmethod
    def forward(ctx, *inputs):
        output = K.max_pool2d_with_indices(*inputs)
        K.max_pool2d_with_indices_setup(ctx, inputs, output)
        ctx.mark_non_differentiable(output[1])
        return output

    @staticmethod
    def backward(ctx, grad, grad_indices):
        return K.max_pool2d_with_indices_vjp(_backward_ops(grad), ctx, grad, grad_indices)


class _AvgPool2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, *inputs):
        output = K.avg_pool2d(*inputs)
        K.avg_pool2d_setup(ctx, inputs, output)
        return output

    @staticmethod
    def backward(ctx, grad):
        return K.avg_pool2d_vjp(_backward_ops(grad), ctx, grad)


class _AdaptiveAvgPool2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, *inputs):
        output = K.adaptive_avg_pool2d(*inputs)
        K.adaptive_avg_pool2d_setup(ctx, inputs, output)
        return output

    @staticmethod
    def backward(ctx, grad):
        return K.adaptive_avg_pool2d_vjp(_backward_ops(grad), ctx, grad)


# The ops functional.py calls: the same signatures as the custom ops of _ops.py.

def conv2d(input, weight, bias, stride, padding, dilation, groups):
    if not applies(input, weight, bias):
        return _ops.conv2d(input, weight, bias, stride, padding, dilation, groups)
    if _needs_graph(input, weight, bias):
        return _Conv2d.apply(input, weight, bias, stride, padding, dilation, groups)
    return K.conv2d(input, weight, bias, stride, padding, dilation, groups)


def max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode):
    if not applies(input):
        return _ops.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode)
    return K.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode)


def max_pool2d_with_indices(input, kernel_size, stride, padding, dilation, ceil_mode):
    if not applies(input):
        return _ops.max_pool2d_with_indices(input, kernel_size, stride, padding, dilation,
                                            ceil_mode)
    if _needs_graph(input):
        return _MaxPool2dWithIndices.apply(input, kernel_size, stride, padding, dilation,
                                           ceil_mode)
    return K.max_pool2d_with_indices(input, kernel_size, stride, padding, dilation, ceil_mode)


def avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
               divisor_override):
    args = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    if not applies(input):
        return _ops.avg_pool2d(input, *args)
    if _needs_graph(input):
        return _AvgPool2d.apply(input, *args)
    return K.avg_pool2d(input, *args)


def adaptive_avg_pool2d(input, output_size):
    if not applies(input):
        return _ops.adaptive_avg_pool2d(input, output_size)
    if _needs_graph(input):
        return _AdaptiveAvgPool2d.apply(input, output_size)
    return K.adaptive_avg_pool2d(input, output_size)
