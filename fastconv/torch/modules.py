"""Drop-in torch layers computed by fastconv's kernels: Conv2d, MaxPool2d, AvgPool2d and
AdaptiveAvgPool2d subclass the torch.nn classes of the same names and only override `forward`, so
the constructor arguments, parameters, state-dict keys, `extra_repr` and everything else are
torch's.

    import fastconv.torch as fct
    conv = fct.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
    y = conv(x)                                   # fastconv's conv2d, torch autograd

Every configuration the torch layers accept is computed by fastconv: `padding_mode` 'reflect' /
'replicate' / 'circular' pads with torch.nn.functional.pad first (as torch's own Conv2d does) and
MaxPool2d(return_indices=True) returns torch-compatible indices. An input whose device or dtype
fastconv's kernels cannot take (a CUDA tensor in this build, float16/bfloat16) runs through the
torch implementation instead, with a RuntimeWarning the first time for each layer.
"""
from __future__ import annotations

import warnings
import weakref

import torch

from fastconv.torch import functional as F
from fastconv.torch._launch import unsupported

__all__ = ["Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"]

# Layers that have warned about running torch's implementation (once each).
_warned: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()


def _runs_torch(layer: torch.nn.Module, op: str, **tensors) -> bool:
    """Whether this call must use torch's implementation (fastconv's kernels cannot take the
    tensors); warns the first time for each layer."""
    err = unsupported(op, **tensors)
    if err is None:
        return False
    if layer not in _warned:
        _warned.add(layer)
        warnings.warn(f"fastconv.torch.{type(layer).__name__}({layer.extra_repr()}) runs torch's "
                      f"implementation for this input: {err} (warned once per layer)",
                      RuntimeWarning, stacklevel=3)
    return True


class Conv2d(torch.nn.Conv2d):
    """torch.nn.Conv2d (same arguments, parameters and state dict) computed by
    fastconv.torch.conv2d. Non-'zeros' padding modes pad with torch.nn.functional.pad first.

    Input shape: (N, C, H, W) or (C, H, W). Output shape: (N, K, P, Q) or (K, P, Q).

    Example:
        >>> conv = Conv2d(3, 8, 3, padding=1)
        >>> conv(torch.randn(2, 3, 16, 16)).shape
        torch.Size([2, 8, 16, 16])
    """

    def forward(self, input):
        if _runs_torch(self, "conv2d", input=input, weight=self.weight, bias=self.bias):
            return super().forward(input)
        if self.padding_mode != "zeros":
            padded = torch.nn.functional.pad(input, self._reversed_padding_repeated_twice,
                                             mode=self.padding_mode)
            return F.conv2d(padded, self.weight, self.bias, self.stride, 0, self.dilation,
                            self.groups)
        return F.conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


class MaxPool2d(torch.nn.MaxPool2d):
    """torch.nn.MaxPool2d computed by fastconv.torch.max_pool2d (return_indices included).

    Example:
        >>> MaxPool2d(3, stride=2, padding=1)(torch.randn(1, 4, 8, 8)).shape
        torch.Size([1, 4, 4, 4])
    """

    def forward(self, input):
        if _runs_torch(self, "max_pool2d", input=input):
            return super().forward(input)
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class AvgPool2d(torch.nn.AvgPool2d):
    """torch.nn.AvgPool2d computed by fastconv.torch.avg_pool2d.

    Example:
        >>> AvgPool2d(2)(torch.randn(1, 4, 8, 8)).shape
        torch.Size([1, 4, 4, 4])
    """

    def forward(self, input):
        if _runs_torch(self, "avg_pool2d", input=input):
            return super().forward(input)
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)


class AdaptiveAvgPool2d(torch.nn.AdaptiveAvgPool2d):
    """torch.nn.AdaptiveAvgPool2d computed by fastconv.torch.adaptive_avg_pool2d.

    Example:
        >>> AdaptiveAvgPool2d(1)(torch.randn(2, 4, 7, 7)).shape
        torch.Size([2, 4, 1, 1])
    """

    def forward(self, input):
        if _runs_torch(self, "adaptive_avg_pool2d", input=input):
            return super().forward(input)
        return F.adaptive_avg_pool2d(input, self.output_size)
