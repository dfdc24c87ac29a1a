"""The model registry: constructors by name (`list_models`, `create_model`), their
preprocessing configs (`get_preprocessing`), and `build_model`, which every constructor uses to
make the model, attach its config and load weights."""
from __future__ import annotations

import fnmatch
from typing import Callable, Dict, List, Optional

from fastconv.models._pretrained import PRETRAINED_CFGS, load_pretrained

__all__ = ["register_model", "list_models", "create_model", "get_preprocessing", "build_model"]

_MODELS: Dict[str, Callable] = {}


def register_model(fn: Callable) -> Callable:
    """Decorator: make a constructor available to create_model() under its function name."""
    if fn.__name__ not in PRETRAINED_CFGS:
        raise KeyError(f"register_model: {fn.__name__} has no entry in PRETRAINED_CFGS")
    _MODELS[fn.__name__] = fn
    return fn


def list_models(pattern: Optional[str] = None) -> List[str]:
    """Sorted names of the zoo's models, optionally filtered by a shell-style pattern.

    Example:
        >>> fc.models.list_models("resnet*")
        ['resnet18', 'resnet34', 'resnet50']
    """
    names = sorted(_MODELS)
    return names if pattern is None else [n for n in names if fnmatch.fnmatch(n, pattern)]


def _check_name(op: str, name) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{op}: model name must be a str, got {type(name).__name__}")
    if name not in _MODELS:
        raise ValueError(f"{op}: unknown model {name!r}; available: {', '.join(list_models())}")
    return name


def create_model(name: str, **kwargs):
    """Build a zoo model by name: create_model("resnet18", num_classes=2) is
    resnet18(num_classes=2).

    Example:
        >>> fc.models.create_model("lenet5").num_parameters()
        61706
    """
    return _MODELS[_check_name("create_model", name)](**kwargs)


def get_preprocessing(name) -> dict:
    """A copy of the preprocessing config of a model (by name, or a model instance): input_size
    (C, H, W), mean, std, interpolation, crop_pct, crop_mode, num_classes and classes (the
    class-names file, or None), plus a note on which checkpoint it matches.

    Example:
        >>> fc.models.get_preprocessing("resnet18")["input_size"]
        (3, 224, 224)
    """
    if hasattr(name, "pretrained_cfg"):
        return dict(name.pretrained_cfg)
    return dict(PRETRAINED_CFGS[_check_name("get_preprocessing", name)], architecture=name)


def build_model(name: str, cls, num_classes, pretrained, kwargs: dict):
    """cls(num_classes=num_classes, **kwargs) with its pretrained_cfg attached and, when
    `pretrained` is given, weights loaded (see load_pretrained)."""
    model = cls(num_classes=num_classes, **kwargs)
    model.pretrained_cfg = dict(PRETRAINED_CFGS[name], architecture=name)
    load_pretrained(model, name, pretrained)
    return model
