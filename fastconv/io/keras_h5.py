"""Reading Keras HDF5 weight files through h5py (the optional `h5` extra).

The three layouts Keras writes (see /work/shared/notes/weight-formats.md, section 5):

(a) legacy whole model (``model.save("x.h5")``): weights under ``/model_weights``;
(b) legacy weights only (Keras 2 ``save_weights("x.h5")``): the same at the root;
    both list their layers in the ``layer_names`` attribute (chunked into ``layer_names0``,
    ``layer_names1``, ... when large) and each layer's datasets in ``weight_names``;
(c) Keras 3 ``.weights.h5`` (also inside a ``.keras`` zip): ``/layers/<snake_class>/vars`` groups
    of datasets ``0..n-1``, the user's layer name in the ``name`` attribute of ``vars``.

The result maps ``"<layer>/<weight>"`` to the Keras array, unchanged (kernels (kh, kw, in, out),
Dense (in, out)), in file order. Weight names lose the TF ``:0`` suffix and the leading
``<layer>/``; when what remains has several parts, the last one is used if it is unique within the
layer (``conv1/kernel:0`` -> ``conv1/kernel``). Layout (c) stores no variable names: they come
from the layer class (``KERAS3_VARIABLES``) and fall back to the index (``conv1/0``). A depthwise
kernel is always named ``depthwise_kernel`` (Keras 3 calls it ``kernel``; its class is read from
the group name or from the ``model_config`` attribute), so that keras_to_torch_layout can tell it
from a dense convolution kernel. Sub-layers (nested models) are keyed ``outer/inner/weight``.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
from collections import Counter

import numpy as np

from fastconv.io.errors import CorruptFileError, FileFormatError

INSTALL_HINT = 'pip install "fastconv[h5]"'
MAX_GROUPS = 100_000             # groups visited in a Keras 3 file
MAX_DEPTH = 64                   # layer nesting in a Keras 3 file
MAX_INFLATION = 1100             # a compressed dataset may hold this many bytes per file byte

_CONV = {1: ("kernel",), 2: ("kernel", "bias")}
_DEPTHWISE = {1: ("depthwise_kernel",), 2: ("depthwise_kernel", "bias")}
_SEPARABLE = {2: ("depthwise_kernel", "pointwise_kernel"),
              3: ("depthwise_kernel", "pointwise_kernel", "bias")}
# Keras 3 layer class (snake case) -> {number of variables: their names, in storage order}.
KERAS3_VARIABLES = {
    **{c: _CONV for c in ("conv1d", "conv2d", "conv3d", "conv1d_transpose", "conv2d_transpose",
                          "conv3d_transpose", "dense")},
    "depthwise_conv1d": _DEPTHWISE, "depthwise_conv2d": _DEPTHWISE,
    "separable_conv1d": _SEPARABLE, "separable_conv2d": _SEPARABLE,
    "batch_normalization": {2: ("moving_mean", "moving_variance"),
                            4: ("gamma", "beta", "moving_mean", "moving_variance")},
    "layer_normalization": {2: ("gamma", "beta")},
    "embedding": {1: ("embeddings",)},
}
_DEPTHWISE_CLASSES = ("DepthwiseConv1D", "DepthwiseConv2D")

# What h5py raises on a damaged file (it maps HDF5's errors onto these).
_H5_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError, UnicodeError)


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError(f"Keras .h5 files need the h5py package: {INSTALL_HINT}") from None
    return h5py


def _names(group, attr: str) -> list:
    """A list-of-strings attribute, joined from its chunks attr0, attr1, ... when chunked."""
    if attr in group.attrs:
        chunks = [group.attrs[attr]]
    else:
        chunks, i = [], 0
        while f"{attr}{i}" in group.attrs:
            chunks.append(group.attrs[f"{attr}{i}"])
            i += 1
    values = [v for chunk in chunks for v in np.atleast_1d(np.asarray(chunk)).tolist()]
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _read(ds, limit: int, what: str) -> np.ndarray:
    """The dataset `ds` as an array, refusing sizes the file cannot hold."""
    if not isinstance(ds, _h5py().Dataset) or ds.shape is None:
        raise CorruptFileError(f"{what} is not a dataset with data")
    if ds.dtype.kind not in "biufc":
        raise FileFormatError(f"{what} has dtype {ds.dtype}, not a numeric type")
    nbytes = math.prod(ds.shape) * ds.dtype.itemsize
    if ds.id.get_create_plist().get_nfilters():      # compressed: allow deflate's best ratio
        limit *= MAX_INFLATION
    if nbytes > limit:
        raise CorruptFileError(f"{what} declares shape {ds.shape} ({nbytes} bytes), more than "
                               "the file can hold")
    return np.asarray(ds[()])


def _layer_classes(f) -> dict:
    """Layer name -> Keras class name, from the model_config attribute of layout (a)."""
    config = f.attrs.get("model_config")
    if config is None:
        return {}
    todo, classes = [json.loads(config)], {}
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            config = node.get("config")
            if isinstance(config, dict) and isinstance(config.get("name"), str):
                classes[config["name"]] = str(node.get("class_name"))
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return classes


def _weight_keys(layer: str, weight_names: list) -> list:
    """The "<layer>/<weight>" keys of a legacy layer's weight names (see the module docstring)."""
    rests = []
    for name in weight_names:
        name = re.sub(r":\d+$", "", name)
        rests.append(name[len(layer) + 1:] if name.startswith(layer + "/") else name)
    lasts = [r.rsplit("/", 1)[-1] for r in rests]
    counts = Counter(lasts)
    return [f"{layer}/{last if counts[last] == 1 else rest}" for rest, last in zip(rests, lasts)]


def _load_legacy(g, classes: dict, limit: int, source: str) -> dict:
    out = {}
    for layer in _names(g, "layer_names"):
        lg = g[layer]
        weight_names = _names(lg, "weight_names")
        for name, key in zip(weight_names, _weight_keys(layer, weight_names)):
            if classes.get(layer) in _DEPTHWISE_CLASSES and key.endswith("/kernel"):
                key = key[:-len("kernel")] + "depthwise_kernel"
            out[key] = _read(lg[name], limit, f"{source}: weight {name!r} of layer {layer!r}")
    return out


def _load_keras3(layers, h5py, limit: int, source: str) -> dict:
    out, todo, visited = {}, [(layers, "", 0)], 0
    while todo:                     # depth first, children in h5py's (name) order
        group, prefix, depth = todo.pop()
        children = []
        for child_name, child in group.items():
            visited += 1
            if visited > MAX_GROUPS or depth > MAX_DEPTH:
                raise CorruptFileError(f"{source}: more than {MAX_GROUPS} groups or layers "
                                       f"nested deeper than {MAX_DEPTH}")
            if not isinstance(child, h5py.Group) or child_name == "vars":
                continue
            child_prefix = prefix
            if isinstance(child.get("vars"), h5py.Group):
                layer = (_names(child["vars"], "name") or [child_name])[0]
                child_prefix = f"{prefix}{layer}/"
                out.update(_layer_vars(child["vars"], child_name, child_prefix, limit, source))
            children.append((child, child_prefix, depth + 1))
        todo.extend(reversed(children))
    return out


def _layer_vars(vars_, group_name: str, prefix: str, limit: int, source: str) -> dict:
    indices = [str(i) for i in range(len(vars_))]
    if set(vars_) != set(indices):
        raise CorruptFileError(f"{source}: the variables of layer {prefix[:-1]!r} are named "
                               f"{sorted(vars_)[:8]}, expected 0..n-1")
    names = KERAS3_VARIABLES.get(re.sub(r"_\d+$", "", group_name), {}).get(len(indices), indices)
    return {f"{prefix}{name}": _read(vars_[i], limit, f"{source}: variable {i} of layer "
                                                     f"{prefix[:-1]!r}")
            for i, name in zip(indices, names)}


def load_h5(path_or_bytes, source: str) -> dict:
    """'layer/weight' -> Keras array of a Keras HDF5 weight file (a path, or the bytes of a
    .weights.h5 taken from a .keras zip)."""
    h5py = _h5py()
    if isinstance(path_or_bytes, bytes):
        target, limit = io.BytesIO(path_or_bytes), len(path_or_bytes)
    else:
        target, limit = path_or_bytes, os.path.getsize(path_or_bytes)
    try:
        with h5py.File(target, "r") as f:
            if "model_weights" in f:
                return _load_legacy(f["model_weights"], _layer_classes(f), limit, source)
            if _names(f, "layer_names"):
                return _load_legacy(f, {}, limit, source)
            if isinstance(f.get("layers"), h5py.Group):
                return _load_keras3(f["layers"], h5py, limit, source)
    except FileFormatError:
        raise
    except _H5_ERRORS as e:
        raise CorruptFileError(f"{source}: not a readable Keras HDF5 weight file: {e}") from None
    raise FileFormatError(f"{source}: an HDF5 file without Keras weights (no model_weights group, "
                          "layer_names attribute or layers group)")
