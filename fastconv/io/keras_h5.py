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

Untrusted files: every object is reached link by link; external links (h5py.ExternalLink),
user-defined links, datasets with external storage (``external=``) and virtual datasets would make
HDF5 open or read other files and raise UnsafeFileError before anything is opened; soft links
are followed only inside the file (at most MAX_SOFT_LINKS hops). Attributes are checked (a string
type, at most one dimension, MAX_NAMES entries, MAX_ATTR_BYTES of fixed-size data) before they are
read, datasets (a numeric type, at most MAX_NDIM dimensions, no more bytes than the file holds or,
when compressed, than the inflation budget of _limits allows) before they are read. HDF5 itself
still parses the damaged metadata of a hostile file, and bit flips can make it loop or crash:
the parse runs in a forked child (_isolate; in this process where there is no fork), so that
either becomes a CorruptFileError (a hang after H5_TIMEOUT_S).
"""
from __future__ import annotations

import io
import json
import math
import os
import re
from collections import Counter

import numpy as np

from fastconv.io._isolate import run_isolated
from fastconv.io._limits import InflationBudget
from fastconv.io.errors import CorruptFileError, FileFormatError, UnsafeFileError

INSTALL_HINT = 'pip install "fastconv[h5]"'
MAX_GROUPS = 100_000             # groups visited in a Keras 3 file
MAX_DEPTH = 64                   # layer nesting in a Keras 3 file
MAX_SOFT_LINKS = 32              # soft links followed to reach one object
MAX_NAMES = 100_000              # entries of a list-of-strings attribute (layer_names, ...)
MAX_ATTR_BYTES = 64 << 20        # bytes of a fixed-size attribute (model_config, ...)
MAX_NDIM = 32                    # dimensions of a dataset
H5_TIMEOUT_S = 120.0             # seconds HDF5 may take to read one file (a damaged one can loop)

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

# What h5py raises on a damaged file (it maps HDF5's errors onto these); RecursionError: a
# model_config JSON nested too deeply.
_H5_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError, UnicodeError,
              RecursionError, OverflowError)


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError(f"Keras .h5 files need the h5py package: {INSTALL_HINT}") from None
    return h5py


def _attr(obj, name: str, what: str):
    """Attribute `name` of `obj` (None when absent), read only after its type and size are
    checked: a string or a 0-/1-D array of strings (an empty one of any type: Keras writes []
    as float64), at most MAX_NAMES of them and MAX_ATTR_BYTES of fixed-size data."""
    h5py = _h5py()
    key = name.encode()
    if not h5py.h5a.exists(obj.id, key):
        return None
    aid = h5py.h5a.open(obj.id, key)
    shape, dtype = aid.shape, aid.dtype
    count = math.prod(shape) if shape else 1
    is_string = dtype.kind in "SU" or h5py.check_string_dtype(dtype) is not None
    if (not is_string and count) or len(shape) > 1 or count > MAX_NAMES or \
            (dtype.kind in "SU" and count * dtype.itemsize > MAX_ATTR_BYTES):
        raise CorruptFileError(f"{what}: attribute {name!r} has type {dtype} and shape {shape}; "
                               f"expected at most {MAX_NAMES} strings ({MAX_ATTR_BYTES} bytes)")
    return obj.attrs[name]


def _names(group, attr: str, source: str) -> list:
    """A list-of-strings attribute, joined from its chunks attr0, attr1, ... when chunked."""
    what = f"{source}: group {group.name!r}"
    first = _attr(group, attr, what)
    chunks = [] if first is None else [first]
    while first is None and len(chunks) <= MAX_NAMES:
        chunk = _attr(group, f"{attr}{len(chunks)}", what)
        if chunk is None:
            break
        chunks.append(chunk)
    values = [v for chunk in chunks for v in np.atleast_1d(np.asarray(chunk)).tolist()]
    if len(values) > MAX_NAMES:
        raise CorruptFileError(f"{what}: attribute {attr!r} lists more than {MAX_NAMES} names")
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _link(group, name: str, what: str, hops: list):
    """The object `name` (one path component) of `group`, or None when there is no such link,
    reached without leaving the file: hard links are opened, soft links resolved inside the file
    (at most MAX_SOFT_LINKS hops, counted in hops[0]), external and user-defined links refused.
    (Group.get / `in` would follow an external link and open the other file.)"""
    h5py = _h5py()
    key = name.encode()
    if not group.id.links.exists(key):
        return None
    kind = group.id.links.get_info(key).type
    if kind == h5py.h5l.TYPE_HARD:
        return group[name]
    if kind == h5py.h5l.TYPE_SOFT:
        hops[0] += 1
        if hops[0] > MAX_SOFT_LINKS:
            raise CorruptFileError(f"{what}: more than {MAX_SOFT_LINKS} soft links (a loop?)")
        target = group.id.links.get_val(key).decode("utf-8", "replace")
        return _resolve(group, target, what, hops)
    if kind == h5py.h5l.TYPE_EXTERNAL:
        filename, path = group.id.links.get_val(key)
        raise UnsafeFileError(f"{what}: {group.name.rstrip('/')}/{name} is an external link to "
                              f"{path.decode('utf-8', 'replace')!r} in the file "
                              f"{filename.decode('utf-8', 'replace')!r}; weights that live in "
                              "other files are never read")
    raise UnsafeFileError(f"{what}: {group.name.rstrip('/')}/{name} is a user-defined link "
                          f"(type {kind}), which is never followed")


def _resolve(group, path: str, what: str, hops: list = None):
    """The object at `path` (absolute, or relative to `group`), link by link as in _link;
    CorruptFileError when it does not exist."""
    hops = [0] if hops is None else hops
    node = group.file if path.startswith("/") else group
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if not isinstance(node, _h5py().Group):
            raise CorruptFileError(f"{what}: {path!r} passes through a dataset")
        child = _link(node, part, what, hops)
        if child is None:
            raise CorruptFileError(f"{what}: no object {path!r} in the file")
        node = child
    return node


def _read(ds, limit: int, budget: InflationBudget, what: str) -> np.ndarray:
    """The dataset `ds` as an array, refusing other files' data (external storage, virtual
    datasets) and sizes the file cannot hold (`limit`: its size) or, when compressed, that pass
    the inflation budget."""
    if not isinstance(ds, _h5py().Dataset) or ds.shape is None:
        raise CorruptFileError(f"{what} is not a dataset with data")
    h5py = _h5py()
    plist = ds.id.get_create_plist()
    if plist.get_layout() == h5py.h5d.VIRTUAL:
        raise UnsafeFileError(f"{what} is a virtual dataset, made of data in other files or "
                              "datasets; it is never read")
    if plist.get_external_count():
        name = plist.get_external(0)[0].decode("utf-8", "replace")
        raise UnsafeFileError(f"{what} keeps its data in the external file {name!r}; weights "
                              "that live in other files are never read")
    if ds.dtype.kind not in "biufc":
        raise FileFormatError(f"{what} has dtype {ds.dtype}, not a numeric type")
    if len(ds.shape) > MAX_NDIM:
        raise CorruptFileError(f"{what} has {len(ds.shape)} dimensions (at most {MAX_NDIM})")
    nbytes = math.prod(ds.shape) * ds.dtype.itemsize
    if plist.get_nfilters():                 # compressed: the inflation budget decides
        budget.spend(nbytes, what)
    elif nbytes > limit:
        raise CorruptFileError(f"{what} declares shape {ds.shape} ({nbytes} bytes), more than "
                               "the file can hold")
    return np.asarray(ds[()])


def _layer_classes(f, source: str) -> dict:
    """Layer name -> Keras class name, from the model_config attribute of layout (a)."""
    config = _attr(f, "model_config", f"{source}: the model_config attribute")
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


def _load_legacy(g, classes: dict, limit: int, budget: InflationBudget, source: str) -> dict:
    out = {}
    for layer in _names(g, "layer_names", source):
        lg = _resolve(g, layer, f"{source}: layer {layer!r}")
        weight_names = _names(lg, "weight_names", source)
        for name, key in zip(weight_names, _weight_keys(layer, weight_names)):
            if classes.get(layer) in _DEPTHWISE_CLASSES and key.endswith("/kernel"):
                key = key[:-len("kernel")] + "depthwise_kernel"
            what = f"{source}: weight {name!r} of layer {layer!r}"
            out[key] = _read(_resolve(lg, name, what), limit, budget, what)
    return out


def _load_keras3(layers, h5py, limit: int, budget: InflationBudget, source: str) -> dict:
    out, todo, visited = {}, [(layers, "", 0)], 0
    while todo:                     # depth first, children in h5py's (name) order
        group, prefix, depth = todo.pop()
        children = []
        for child_name in group:     # link names only: nothing is opened or followed here
            visited += 1
            if visited > MAX_GROUPS or depth > MAX_DEPTH:
                raise CorruptFileError(f"{source}: more than {MAX_GROUPS} groups or layers "
                                       f"nested deeper than {MAX_DEPTH}")
            if child_name == "vars":
                continue
            what = f"{source}: group {group.name.rstrip('/')}/{child_name}"
            child = _link(group, child_name, what, [0])
            if not isinstance(child, h5py.Group):
                continue
            child_prefix = prefix
            vars_ = _link(child, "vars", what, [0])
            if isinstance(vars_, h5py.Group):
                layer = (_names(vars_, "name", source) or [child_name])[0]
                child_prefix = f"{prefix}{layer}/"
                out.update(_layer_vars(vars_, child_name, child_prefix, limit, budget, source))
            children.append((child, child_prefix, depth + 1))
        todo.extend(reversed(children))
    return out


def _layer_vars(vars_, group_name: str, prefix: str, limit: int, budget: InflationBudget,
                source: str) -> dict:
    indices = [str(i) for i in range(len(vars_))]
    if set(vars_) != set(indices):
        raise CorruptFileError(f"{source}: the variables of layer {prefix[:-1]!r} are named "
                               f"{sorted(vars_)[:8]}, expected 0..n-1")
    names = KERAS3_VARIABLES.get(re.sub(r"_\d+$", "", group_name), {}).get(len(indices), indices)
    out = {}
    for i, name in zip(indices, names):
        what = f"{source}: variable {i} of layer {prefix[:-1]!r}"
        out[f"{prefix}{name}"] = _read(_link(vars_, i, what, [0]), limit, budget, what)
    return out


def load_h5(path_or_bytes, source: str, budget: InflationBudget) -> dict:
    """'layer/weight' -> Keras array of a Keras HDF5 weight file (a path, or the bytes of a
    .weights.h5 taken from a .keras zip); compressed datasets spend `budget`. HDF5 parses the
    file in a forked child (see _isolate): a crash or a hang there (past H5_TIMEOUT_S) becomes
    a CorruptFileError."""
    _h5py()                           # the ImportError with the install hint, in this process
    return run_isolated(_load_h5_here, (path_or_bytes, source, budget), source, H5_TIMEOUT_S,
                        "HDF5 (h5py)")


def _load_h5_here(path_or_bytes, source: str, budget: InflationBudget) -> dict:
    h5py = _h5py()
    if isinstance(path_or_bytes, bytes):
        target, limit = io.BytesIO(path_or_bytes), len(path_or_bytes)
    else:
        target, limit = path_or_bytes, os.path.getsize(path_or_bytes)
    try:
        with h5py.File(target, "r") as f:
            model_weights = _link(f, "model_weights", f"{source}: /model_weights", [0])
            if model_weights is not None:
                return _load_legacy(model_weights, _layer_classes(f, source), limit, budget,
                                    source)
            if _names(f, "layer_names", source):
                return _load_legacy(f, {}, limit, budget, source)
            layers = _link(f, "layers", f"{source}: /layers", [0])
            if isinstance(layers, h5py.Group):
                return _load_keras3(layers, h5py, limit, budget, source)
    except FileFormatError:
        raise
    except _H5_ERRORS as e:
        raise CorruptFileError(f"{source}: not a readable Keras HDF5 weight file: {e}") from None
    raise FileFormatError(f"{source}: an HDF5 file without Keras weights (no model_weights group, "
                          "layer_names attribute or layers group)")
