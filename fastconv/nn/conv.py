"""Convolution layers: Conv2d (dense, grouped, depthwise), DepthwiseConv2d, SeparableConv2d."""
from __future__ import annotations

import math

import numpy as np

from fastconv import _shape
from fastconv.nn import functional as F
from fastconv.nn import init
from fastconv.nn.module import Module, Parameter

__all__ = ["Conv2d", "DepthwiseConv2d", "SeparableConv2d"]


def _positive(op: str, name: str, v) -> int:
    return _shape.check_int(op, name, v, minimum=1)


class Conv2d(Module):
    """2-D convolution over (N, C, H, W) input.

    Args:
        in_channels, out_channels: C and K.
        kernel_size, stride, dilation: int or (h, w).
        padding: int, (h, w), (top, bottom, left, right), 'valid' or 'same' ('same' with stride > 1
            pads like TensorFlow/Keras: output ceil(in / stride)).
        groups: split channels into groups (groups == in_channels: depthwise).
        bias: add a learnable bias.
    Input shape: (N, C, H, W) or (C, H, W). Output shape: (N, K, P, Q).
    Example:
        >>> conv = Conv2d(3, 8, 3, padding="same")
        >>> conv(fc.zeros(2, 3, 32, 32)).shape
        (2, 8, 32, 32)
    Weights start kaiming-uniform (a = sqrt(5)) and the bias uniform(+-1/sqrt(fan_in)), as in
    PyTorch.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 dtype=np.float32):
        super().__init__()
        op = type(self).__name__
        self.in_channels = _positive(op, "in_channels", in_channels)
        self.out_channels = _positive(op, "out_channels", out_channels)
        self.groups = _positive(op, "groups", groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{op}: in_channels ({in_channels}) and out_channels ({out_channels}) "
                             f"must both be divisible by groups ({groups})")
        if padding_mode != "zeros":
            raise ValueError(f"{op}: padding_mode must be 'zeros', got {padding_mode!r}")
        self.kernel_size = _shape.pair(op, "kernel_size", kernel_size, minimum=1)
        self.stride = _shape.pair(op, "stride", stride, minimum=1)
        self.dilation = _shape.pair(op, "dilation", dilation, minimum=1)
        # checked now (for a nominal 64x64 input) so that a bad padding fails at construction
        _shape.resolve_padding(op, padding, (64, 64), self.kernel_size, self.stride, self.dilation)
        self.padding = tuple(padding) if isinstance(padding, list) else padding
        self.weight = Parameter(np.empty((out_channels, in_channels // groups) + self.kernel_size,
                                         dtype=dtype))
        self.register_parameter("bias", Parameter(np.empty(out_channels, dtype=dtype))
                                if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1]
            bound = 1 / math.sqrt(fan_in)
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding not in (0, (0, 0)):  # written as torch does: padding=(2, 2), padding=same
            p = self.padding
            s += f", padding={(p, p) if isinstance(p, int) else p}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class DepthwiseConv2d(Conv2d):
    """Depthwise convolution (Keras DepthwiseConv2D): each input channel is convolved with its
    own depth_multiplier filters; groups = in_channels.

    Input shape: (N, C, H, W). Output shape: (N, C * depth_multiplier, P, Q).
    Example:
        >>> DepthwiseConv2d(32, 3, padding=1)(fc.zeros(1, 32, 8, 8)).shape
        (1, 32, 8, 8)
    """

    def __init__(self, in_channels: int, kernel_size, stride=1, padding=0, depth_multiplier: int = 1,
                 dilation=1, bias: bool = True, dtype=np.float32):
        mult = _positive("DepthwiseConv2d", "depth_multiplier", depth_multiplier)
        super().__init__(in_channels, in_channels * mult, kernel_size, stride, padding, dilation,
                         groups=in_channels, bias=bias, dtype=dtype)


class SeparableConv2d(Module):
    """Depthwise-separable convolution (Xception, Keras SeparableConv2D): a depthwise
    convolution (no bias) followed by a 1x1 pointwise convolution.

    State keys: depthwise.weight, pointwise.weight, pointwise.bias.
    Example:
        >>> SeparableConv2d(32, 64, 3, padding=1)(fc.zeros(1, 32, 8, 8)).shape
        (1, 64, 8, 8)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, depth_multiplier: int = 1, bias: bool = True, dtype=np.float32):
        super().__init__()
        self.depthwise = DepthwiseConv2d(in_channels, kernel_size, stride, padding,
                                         depth_multiplier, dilation, bias=False, dtype=dtype)
        self.pointwise = Conv2d(in_channels * depth_multiplier, out_channels, 1, bias=bias,
                                dtype=dtype)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))
