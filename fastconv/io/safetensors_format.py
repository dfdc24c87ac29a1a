"""Reading and writing .safetensors through the safetensors package (the `pretrained` extra).

The package validates the header (size, JSON, dtypes, offsets that tile the data exactly, the
file length) before anything is read; its errors become CorruptFileError naming the file.
Files of numpy dtypes are read with ``safetensors.numpy.load_file``. numpy has no bfloat16, so a
file holding BF16 tensors is read with ``safetensors.deserialize`` (the raw bytes behind
``safetensors.numpy.load``) and those tensors are widened to float32, exactly. Other dtypes numpy
lacks (F8_*, F4, F6) are refused with FileFormatError.
"""
from __future__ import annotations

import os

import numpy as np

from fastconv.io._dtypes import SAFETENSORS_TO_TORCH, numpy_dtype, widen_bfloat16
from fastconv.io.errors import CorruptFileError

INSTALL_HINT = 'pip install "fastconv[pretrained]"'
# The dtypes safetensors.numpy reads and writes (as safetensors and as numpy names).
_NUMPY_NATIVE = {d for d, t in SAFETENSORS_TO_TORCH.items() if t != "bfloat16"}
_SAVABLE = {SAFETENSORS_TO_TORCH[d] for d in _NUMPY_NATIVE}


def _safetensors():
    try:
        import safetensors
        import safetensors.numpy
    except ImportError:
        raise ImportError(f".safetensors files need the safetensors package: {INSTALL_HINT}"
                          ) from None
    return safetensors


def _from_raw(name: str, view: dict, source: str) -> np.ndarray:
    """The array of one entry of safetensors.deserialize: {'dtype', 'shape', 'data'}."""
    torch_name = SAFETENSORS_TO_TORCH.get(view["dtype"], view["dtype"])
    dtype = numpy_dtype(torch_name, f"{source}: tensor {name!r}").newbyteorder("<")
    a = np.frombuffer(view["data"], dtype).reshape(view["shape"]).astype(dtype.newbyteorder("="))
    return widen_bfloat16(a) if torch_name == "bfloat16" else a


def load_safetensors(path) -> dict:
    """name -> array of the .safetensors file at `path` (in the order the package lists them)."""
    st, source = _safetensors(), os.fspath(path)
    try:
        with st.safe_open(path, framework="np") as f:
            dtypes = [f.get_slice(k).get_dtype() for k in f.keys()]
        if set(dtypes) <= _NUMPY_NATIVE:
            return dict(st.numpy.load_file(path))
        with open(path, "rb") as f:
            raw = st.deserialize(f.read())
    except st.SafetensorError as e:
        raise CorruptFileError(f"{source}: not a valid .safetensors file: {e}") from None
    return {name: _from_raw(name, view, source) for name, view in raw}


def save_safetensors(arrays: dict, path) -> None:
    """Write `arrays` (name -> numpy array) to the .safetensors file `path`."""
    for name, a in arrays.items():
        if a.dtype.name not in _SAVABLE:
            raise TypeError(f"save: {name!r} has dtype {a.dtype}, which .safetensors cannot "
                            f"hold (supported: {', '.join(sorted(_SAVABLE))})")
    _safetensors().numpy.save_file({k: np.asarray(a, order="C") for k, a in arrays.items()}, path)
