"""Reading and writing .npz archives (numpy's zip of .npy members), never unpickling.

Before ``np.load(path, allow_pickle=False)`` reads a member, its .npy header is checked: the
declared shape and dtype must account for exactly the bytes the member holds (numpy would
otherwise allocate whatever a damaged header declares), and object arrays (pickles) are refused
with UnsafeFileError.
"""
from __future__ import annotations

import math
import zipfile

import numpy as np

from fastconv.io._zip import ZIP_ERRORS
from fastconv.io.errors import CorruptFileError, FileFormatError, UnsafeFileError

_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}


def _check_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, source: str) -> None:
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version not in _HEADER_READERS:
            raise CorruptFileError(f"{source}: member {info.filename} is .npy version {version}, "
                                   "expected 1.0 or 2.0")
        shape, _, dtype = _HEADER_READERS[version](f)
        if dtype.hasobject:
            raise UnsafeFileError(f"{source}: member {info.filename} holds pickled Python "
                                  "objects, which are never loaded")
        declared = math.prod(shape) * dtype.itemsize
        if declared != info.file_size - f.tell():
            raise CorruptFileError(f"{source}: member {info.filename} declares shape {shape} of "
                                   f"{dtype} ({declared} bytes) but holds "
                                   f"{info.file_size - f.tell()} bytes of data")


def load_npz(path, zf: zipfile.ZipFile, source: str) -> dict:
    """name -> array of the .npz archive at `path`, already open as `zf`."""
    try:
        for info in zf.infolist():
            _check_member(zf, info, source)
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except FileFormatError:
        raise
    except ZIP_ERRORS as e:      # includes numpy's ValueError for a bad .npy header
        raise CorruptFileError(f"{source}: not a valid .npz archive: {e}") from None


def save_npz(arrays: dict, path) -> None:
    """Write `arrays` (name -> numpy array) to the .npz archive `path`, uncompressed, as
    ``np.savez`` does (but any key is allowed, 'file' included)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, a in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, a, allow_pickle=False)
