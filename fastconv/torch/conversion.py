"""convert / revert: swap the conv and pooling layers of an existing torch model for fastconv's
and back.

    model = torchvision_style_resnet()
    fastconv.torch.convert(model)          # Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d
    ...train or evaluate...
    fastconv.torch.revert(model)           # the torch layers again

A layer is swapped by changing its class to the fastconv subclass (which only overrides
`forward`), as torch's lazy modules do when they materialize: the module object, its Parameter
objects (so an existing optimizer keeps working), buffers, hooks, state-dict keys and repr stay
the same. Only instances of exactly torch.nn.Conv2d / MaxPool2d / AvgPool2d / AdaptiveAvgPool2d
are swapped. Left as they are, each with a warning naming the layer and the reason: conv layers
whose parameters fastconv's kernels cannot take (float16/bfloat16, or on a device without
fastconv kernels: CUDA in this build), and subclasses of those torch classes (their forward may
compute something else: lazy modules before their first call, QAT layers, user subclasses).
"""
from __future__ import annotations

import copy
import warnings
from typing import Optional

import torch

from fastconv.torch import modules
from fastconv.torch._launch import unsupported

__all__ = ["convert", "revert"]

_TO_FASTCONV = {
    torch.nn.Conv2d: modules.Conv2d,
    torch.nn.MaxPool2d: modules.MaxPool2d,
    torch.nn.AvgPool2d: modules.AvgPool2d,
    torch.nn.AdaptiveAvgPool2d: modules.AdaptiveAvgPool2d,
}
_TO_TORCH = {fc: t for t, fc in _TO_FASTCONV.items()}


def _check(fn: str, model, inplace) -> None:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{fn}: model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(inplace, bool):
        raise TypeError(f"{fn}: inplace must be a bool, got {inplace!r}")


def _why_not(layer: torch.nn.Module) -> Optional[str]:
    """Why fastconv cannot compute this torch layer, or None."""
    if isinstance(layer, torch.nn.Conv2d):
        err = unsupported("conv2d", weight=layer.weight, bias=layer.bias)
        return None if err is None else str(err)
    return None


def convert(model: torch.nn.Module, inplace: bool = True) -> torch.nn.Module:
    """Swap the torch.nn.Conv2d, MaxPool2d, AvgPool2d and AdaptiveAvgPool2d layers of model
    (the model itself included) for their fastconv.torch twins, keeping modules and parameters.

    Args:
        model: any torch.nn.Module.
        inplace: swap in model itself (the default; parameters stay the same objects) or in a
            deep copy.
    Returns:
        the converted model (model itself when inplace).
    """
    _check("convert", model, inplace)
    if not inplace:
        model = copy.deepcopy(model)
    for path, layer in model.named_modules():
        where = path or "the model itself"
        cls = type(layer)
        if cls in _TO_FASTCONV:
            reason = _why_not(layer)
            if reason is None:
                layer.__class__ = _TO_FASTCONV[cls]
            else:
                warnings.warn(f"fastconv.torch.convert: {where} ({cls.__name__}) stays a torch "
                              f"layer: {reason}", stacklevel=2)
        elif isinstance(layer, tuple(_TO_FASTCONV)) and cls not in _TO_TORCH:
            base = next(t for t in _TO_FASTCONV if isinstance(layer, t))
            warnings.warn(f"fastconv.torch.convert: {where} ({cls.__module__}.{cls.__qualname__}) "
                          f"stays as it is: it subclasses torch.nn.{base.__name__} and its forward "
                          f"may compute something else (only the torch classes themselves are "
                          f"swapped)", stacklevel=2)
    return model


def revert(model: torch.nn.Module, inplace: bool = True) -> torch.nn.Module:
    """Swap fastconv.torch's Conv2d, MaxPool2d, AvgPool2d and AdaptiveAvgPool2d layers of model
    back to the torch.nn classes (undoes convert; also turns layers built as fastconv's into
    torch's).

    Args:
        model: any torch.nn.Module.
        inplace: swap in model itself (the default) or in a deep copy.
    Returns:
        the reverted model (model itself when inplace).
    """
    _check("revert", model, inplace)
    if not inplace:
        model = copy.deepcopy(model)
    for layer in model.modules():
        if type(layer) in _TO_TORCH:
            layer.__class__ = _TO_TORCH[type(layer)]
    return model
