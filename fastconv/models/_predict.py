"""Preparing an image for a zoo model (`preprocess`) and classifying it (`predict_image`), with
the model's preprocessing config, and the class names that go with its weights."""
from __future__ import annotations

import math
import os
from functools import lru_cache
from importlib import resources
from typing import List, Optional, Tuple

import numpy as np

from fastconv.autograd import Tensor, no_grad
from fastconv.data.transforms import (CenterCrop, Compose, Grayscale, Normalize, Resize,
                                      ToFloat)
from fastconv.models._registry import get_preprocessing
from fastconv.nn import functional as F

__all__ = ["preprocess", "predict_image", "class_names", "imagenet_classes"]


@lru_cache(maxsize=None)
def _read_names(filename: str) -> Tuple[str, ...]:
    text = resources.files("fastconv.models").joinpath(filename).read_text(encoding="utf-8")
    return tuple(text.splitlines())


def imagenet_classes() -> List[str]:
    """The 1000 ImageNet-1k class names in index order (WordNet's first lemma for each class,
    as Keras' imagenet_class_index.json lists them, with spaces for underscores).

    Example:
        >>> fc.models.imagenet_classes()[285]
        'Egyptian cat'
    """
    return list(_read_names("imagenet_classes.txt"))


def class_names(cfg) -> Optional[List[str]]:
    """The class names of a config (or model, or model name), or None when it has none."""
    cfg = _as_cfg("class_names", cfg)
    return list(_read_names(cfg["classes"])) if cfg.get("classes") else None


def _as_cfg(op: str, cfg) -> dict:
    if isinstance(cfg, str) or hasattr(cfg, "pretrained_cfg"):
        cfg = get_preprocessing(cfg)
    if not isinstance(cfg, dict):
        raise TypeError(f"{op}: cfg must be a preprocessing dict, a model or a model name, got "
                        f"{type(cfg).__name__}")
    if "input_size" not in cfg:
        raise ValueError(f"{op}: the config has no input_size; models made by a zoo constructor "
                         f"(fastconv.models.resnet18() ...) carry a complete one")
    return cfg


def _load(image) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        from fastconv.data.folder import load_image
        return load_image(image)
    if hasattr(image, "convert") and hasattr(image, "mode"):  # a PIL image: palette, CMYK ...
        return np.asarray(image if image.mode in ("L", "RGB") else image.convert("RGB"))
    return np.asarray(image)


def preprocess(image, cfg) -> np.ndarray:
    """Turn an image into the model input its weights expect: channels converted to the
    config's (grey <-> RGB), resized (crop_mode "center": shorter side to
    floor(size / crop_pct), then the central size x size; "squash": the whole image to size x
    size) with Pillow's antialiased bilinear filter, scaled to [0, 1] and normalised with the
    config's mean and std.

    Args:
        image: a path (read with Pillow), a PIL image, or an array (H, W, C) or (H, W), uint8
            (0-255) or float (0-1).
        cfg: a preprocessing config (get_preprocessing), a zoo model or a model name.
    Returns:
        float32 array (C, H, W) as given by cfg["input_size"].
    Example:
        >>> x = fc.models.preprocess(np.zeros((300, 400, 3), np.uint8), "resnet18")
        >>> x.shape
        (3, 224, 224)
    """
    cfg = _as_cfg("preprocess", cfg)
    channels, height, width = cfg["input_size"]
    if cfg.get("interpolation", "bilinear") != "bilinear":
        raise ValueError(f"preprocess: only 'bilinear' interpolation is supported, the config "
                         f"asks for {cfg['interpolation']!r}")
    img = ToFloat()(_load(image))
    if img.shape[0] not in (1, 3, 4):
        raise ValueError(f"preprocess: expected a grey, RGB or RGBA image, got {img.shape[0]} "
                         f"channels")
    img = img[:3]
    if img.shape[0] != channels:
        img = Grayscale(channels)(img)
    mode = cfg.get("crop_mode", "center")
    if mode == "squash":
        steps = [Resize((height, width))]
    elif mode == "center":
        scale = math.floor(min(height, width) / cfg.get("crop_pct", 1.0))
        steps = [Resize(scale), CenterCrop((height, width))]
    else:
        raise ValueError(f"preprocess: crop_mode must be 'center' or 'squash', got {mode!r}")
    return Compose(steps + [Normalize(cfg["mean"], cfg["std"])])(img)


def predict_image(model, image, topk: int = 5) -> List[Tuple[int, str, float]]:
    """Classify one image with a zoo model: preprocess with model.pretrained_cfg, run in eval
    mode without recording gradients (the model's mode is restored), softmax.

    Args:
        model: a zoo model (or any Module with a pretrained_cfg).
        image: see preprocess.
        topk: how many classes to return.
    Returns:
        [(class index, class name, probability), ...], most probable first; the name is the
        config's class name when the model has that many classes, else str(index).
    Example:
        >>> m = fc.models.efficientnet_lite0(pretrained=True)  # doctest: +SKIP
        >>> fc.models.predict_image(m, skimage.data.chelsea(), topk=1)  # doctest: +SKIP
        [(285, 'Egyptian cat', 0.799...)]
    """
    cfg = _as_cfg("predict_image", model)
    x = preprocess(image, cfg)[None]
    with model.evaluating(), no_grad():
        logits = model(Tensor(x))
    probs = F.softmax(logits, dim=1).numpy()[0]
    names = class_names(cfg)
    if names is None or len(names) != probs.shape[0]:
        names = [str(i) for i in range(probs.shape[0])]
    order = np.argsort(-probs, kind="stable")[:max(1, int(topk))]
    return [(int(i), names[i], float(probs[i])) for i in order]
