"""Pooling layers: MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, GlobalAvgPool2d."""
from __future__ import annotations

from fastconv.nn import functional as F
from fastconv.nn.module import Module

__all__ = ["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "GlobalAvgPool2d"]


class MaxPool2d(Module):
    """2-D max pooling (torch.nn.MaxPool2d arguments; padding may also be 4-tuple or 'same').

    Input shape: (N, C, H, W). Output shape: (N, C, P, Q).
    Example:
        >>> MaxPool2d(2)(fc.zeros(1, 3, 8, 8)).shape
        (1, 3, 4, 4)
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.return_indices, self.ceil_mode = dilation, return_indices, ceil_mode

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            self.ceil_mode, self.return_indices)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}, "
                f"padding={self.padding}, dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """2-D average pooling (torch.nn.AvgPool2d arguments).

    Example:
        >>> AvgPool2d(3, stride=1, padding=1)(fc.zeros(1, 3, 8, 8)).shape
        (1, 3, 8, 8)
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        self.divisor_override = divisor_override

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}, "
                f"padding={self.padding}")


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size (int or (P, Q)).

    Example:
        >>> AdaptiveAvgPool2d((1, 1))(fc.zeros(1, 3, 7, 7)).shape
        (1, 3, 1, 1)
    """

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class GlobalAvgPool2d(Module):
    """Mean over H and W (Keras GlobalAveragePooling2D).

    Input shape: (N, C, H, W). Output shape: (N, C), or (N, C, 1, 1) with keepdims=True.
    """

    def __init__(self, keepdims: bool = False):
        super().__init__()
        self.keepdims = keepdims

    def forward(self, x):
        y = F.adaptive_avg_pool2d(x, 1)
        return y if self.keepdims else y.reshape(tuple(y.shape[:-2]))  # (N, C) or (C,)
