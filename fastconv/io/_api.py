"""fastconv.io.load and fastconv.io.save: format detection from the file's bytes, and dispatch."""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Optional

import numpy as np

from fastconv.io._dtypes import TORCH_TO_STORAGE
from fastconv.io._limits import InflationBudget, inflation_cap
from fastconv.io._zip import check_inflation, open_zip, read_member
from fastconv.io.errors import CorruptFileError, FileFormatError
from fastconv.io.keras_h5 import load_h5
from fastconv.io.keras_layout import keras_to_torch_layout
from fastconv.io.npz_format import load_npz, save_npz
from fastconv.io.safetensors_format import load_safetensors, save_safetensors
from fastconv.io.torch_format import LEGACY_MAGIC, load_torch_legacy, load_zip
from fastconv.io.torch_writer import save_torch_zip

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_KERAS_MEMBER = "model.weights.h5"           # the weights inside a .keras zip
_PREFIX = "module."                          # what (Distributed)DataParallel adds to every key
_TORCH_KINDS = ("torch zip", "torch legacy")
_REFUSED = {
    "tar": "a tar archive, like torch's oldest checkpoint format, which fastconv does not read "
           "(torch refuses it under weights_only=True too)",
    "npy": "a single .npy array, not a dict of weights (read it with np.load)",
    "pickle": "a pickle that is not a torch checkpoint (fastconv never loads arbitrary pickles)",
}


def _kind(path, source: str) -> str:
    """The format of the file at `path`, from its first bytes (and, for zips, member names)."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):          # a zip, or an empty one
        with open_zip(path, source) as zf:
            names = zf.namelist()
        if _KERAS_MEMBER in names:
            return "keras zip"
        return "npz" if all(n.endswith(".npy") for n in names) else "torch zip"
    if head.startswith(LEGACY_MAGIC):
        return "torch legacy"
    if head.startswith(_HDF5_SIGNATURE):
        return "h5"
    if head[8:9] == b"{":                                   # u64 header length, JSON header
        return "safetensors"
    if head[257:262] == b"ustar":
        return "tar"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head[:1] == b"\x80":
        return "pickle"
    return "unknown"


def load(path, key: Optional[str] = None, map_prefix: bool = True,
         convert: Optional[str] = None, max_bytes: Optional[int] = None) -> dict:
    """Read the weights in the file at `path` as a dict of numpy arrays, without torch and
    without running code from the file.

    The format comes from the file's content, not its extension: torch checkpoints (.pth/.pt/
    .bin, zip or legacy format), .safetensors, .npz, Keras .h5 / .weights.h5 / .keras.

    Args:
        path: the file (str or os.PathLike).
        key: torch checkpoints only: the top-level entry of a checkpoint dict that holds the
            state dict. By default a dict with no tensors at its top level is unwrapped from its
            "state_dict", "model_state_dict" or "model" entry. Non-tensor values (an epoch,
            nested dicts such as optimizer state) are skipped.
        map_prefix: strip the "module." prefix that (Distributed)DataParallel puts on every key
            (only when every key has it).
        convert: Keras files only: "torch" converts the layouts and names to torch's (see
            keras_to_torch_layout; a Dense layer after Flatten needs that function's
            flatten_shapes). None keeps Keras's arrays keyed "<layer>/<weight>".
        max_bytes: the most bytes the compressed content of the file (zip members of .pth,
            .npz and .keras files, compressed HDF5 datasets) may inflate to, in total. None: the
            FASTCONV_LOAD_MAX_BYTES environment variable, else max(256 MiB, 100 x the file's
            size). Uncompressed content is bounded by the file itself.

    Returns:
        An insertion-ordered dict name -> numpy array (C-contiguous, native byte order,
        writeable, sharing memory with no other entry). bfloat16 tensors are widened to float32;
        0-d tensors (num_batches_tracked) are 0-d arrays.

    Raises:
        FileNotFoundError: no file at `path`.
        UnsafeFileError: a pickle in the file asks for code outside the allow-list (nothing
            from the file is executed), a Keras file points at data in other files (external
            links or storage, virtual datasets), or compressed content inflates past max_bytes.
        CorruptFileError: the file is truncated, inconsistent, or matches no supported format;
            or HDF5 crashed or looped on it (Keras .h5 files are parsed in a forked child, given
            fastconv.io.keras_h5.H5_TIMEOUT_S seconds).
        FileFormatError: a recognised format fastconv does not read (TorchScript, torch's tar
            format, a bare .npy, a pickle that is not a checkpoint, an HDF5 file without Keras
            weights); the base of the two above.
        ValueError: a bad `key`, `convert` or `max_bytes`.
        ImportError: a .safetensors or .h5 file without the optional package that reads it.
    """
    source = os.fspath(path)
    if convert not in (None, "torch"):
        raise ValueError(f"load: convert must be None or 'torch', got {convert!r}")
    kind = _kind(path, source)
    budget = InflationBudget(inflation_cap(max_bytes, os.path.getsize(path)), source)
    if key is not None and kind not in _TORCH_KINDS:
        raise ValueError(f"load: key= picks an entry of a torch checkpoint, but {source} is a "
                         f"{kind} file")
    if convert is not None and kind not in ("h5", "keras zip"):
        raise ValueError(f"load: convert='torch' applies to Keras files, but {source} is a "
                         f"{kind} file")
    if kind in ("torch zip", "npz", "keras zip"):
        with open_zip(path, source) as zf:
            check_inflation(zf, budget)
            if kind == "torch zip":
                arrays = load_zip(zf, key, source)
            elif kind == "npz":
                arrays = load_npz(path, zf, source)
            else:
                member = read_member(zf, zf.getinfo(_KERAS_MEMBER), source)
                arrays = load_h5(member, f"{source} ({_KERAS_MEMBER})", budget)
    elif kind == "torch legacy":
        arrays = load_torch_legacy(path, key)
    elif kind == "safetensors":
        arrays = load_safetensors(path)
    elif kind == "h5":
        arrays = load_h5(path, source, budget)
    else:               # a recognised format it does not read, or bytes that match none
        size = os.path.getsize(path)
        error = FileFormatError if kind in _REFUSED else CorruptFileError
        raise error(f"{source} ({size} bytes) is "
                    f"{_REFUSED.get(kind, 'not a weight file: its first bytes match no format')}; "
                    "supported: torch .pth/.pt (zip or legacy), .safetensors, .npz, "
                    "Keras .h5/.keras")
    arrays = {k: np.asarray(a, a.dtype.newbyteorder("="), order="C") for k, a in arrays.items()}
    if convert == "torch":
        arrays = keras_to_torch_layout(arrays)
    if map_prefix and arrays and all(k.startswith(_PREFIX) for k in arrays):
        arrays = {k[len(_PREFIX):]: v for k, v in arrays.items()}
    return arrays


def _as_array(name: str, value) -> np.ndarray:
    """`value` as a numpy array: an ndarray, a numpy scalar, or an object whose `.data` is an
    ndarray (fastconv's Tensor) or that has `.numpy()` (torch tensors; via `.data` first, which
    also works for parameters that require grad)."""
    if isinstance(value, (np.ndarray, np.generic)):
        return np.asarray(value)
    data = getattr(value, "data", None)
    if isinstance(data, np.ndarray):
        return data
    for obj in (data, value):
        to_numpy = getattr(obj, "numpy", None)
        if callable(to_numpy):
            array = to_numpy()
            if isinstance(array, np.ndarray):
                return array
    raise TypeError(f"save: state[{name!r}] is a {type(value).__name__}; expected a numpy array "
                    "(or an object with an ndarray .data or a .numpy() method)")


def save(state: Mapping, path) -> None:
    """Write `state` (name -> array) to `path`, in the format its extension names.

    Args:
        state: a mapping of str names to numpy arrays (or fastconv Tensors / torch tensors,
            see _as_array).
        path: ``.pth`` / ``.pt``: torch's zip checkpoint format, written without torch and
            readable by ``torch.load(path, weights_only=True)`` (dtypes with a torch storage
            type: float16/32/64, complex64/128, int8/16/32/64, uint8, bool); ``.safetensors``;
            ``.npz`` (uncompressed).

    Raises:
        TypeError: `state` is not a mapping of str to arrays, or a dtype the format cannot hold.
        ValueError: an extension other than the above.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"save: state must be a mapping of names to arrays, got "
                        f"{type(state).__name__}")
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in (".pth", ".pt", ".safetensors", ".npz"):
        raise ValueError(f"save: cannot tell the format of {os.fspath(path)!r} from its "
                         "extension; use .pth, .pt, .safetensors or .npz")
    arrays = {}
    for name, value in state.items():
        if not isinstance(name, str):
            raise TypeError(f"save: state keys must be str, got {type(name).__name__} {name!r}")
        arrays[name] = _as_array(name, value)
        if arrays[name].dtype.hasobject:
            raise TypeError(f"save: state[{name!r}] is an object array; only numeric arrays "
                            "can be saved")
    if ext == ".safetensors":
        save_safetensors(arrays, path)
    elif ext == ".npz":
        save_npz(arrays, path)
    else:
        for name, a in arrays.items():
            if a.dtype.name not in TORCH_TO_STORAGE:
                raise TypeError(f"save: state[{name!r}] has dtype {a.dtype}, which a .pth file "
                                f"cannot hold (supported: {', '.join(TORCH_TO_STORAGE)})")
        save_torch_zip(arrays, path)
