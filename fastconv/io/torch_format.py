"""Reading torch checkpoints without torch: the zip format (torch >= 1.6, the default) and the
legacy format (``torch.save(..., _use_new_zipfile_serialization=False)``, torch < 1.6).

Both formats hold a pickle of the saved object whose tensors refer to raw storages by persistent
id. The pickles are read with the allow-list interpreter in ``_unpickler``; each tensor comes out
as a TensorRef, and only the tensors of the selected state dict are turned into numpy arrays
(a copy per tensor: C-contiguous, native byte order, never sharing memory with another).
Every storage size, offset and stride is checked against the bytes the file really holds.

Checkpoint layout (see ``select_state``): a plain state dict is used as it is; a dict with no
tensors at its top level that holds a dict under "state_dict", "model_state_dict" or "model" (in
that order) is unwrapped to it; ``key=`` picks a top-level entry instead. Values that are not
tensors (an ``epoch`` int, the ``_metadata`` of a state dict, nested dicts) are skipped.

Refused with FileFormatError: TorchScript archives (``torch.jit.save``) and the pre-1.0 tar
format, as torch itself refuses them under ``weights_only=True``.
"""
from __future__ import annotations

import math
import os
import zipfile

import numpy as np
from numpy.lib.stride_tricks import as_strided

from fastconv.io._dtypes import numpy_dtype, widen_bfloat16
from fastconv.io._unpickler import StorageRef, StorageType, TensorRef, load_pickle
from fastconv.io._zip import read_member
from fastconv.io.errors import CorruptFileError, FileFormatError

# The first pickle of a legacy file: pickle.dumps(LEGACY_MAGIC_NUMBER, protocol=2).
LEGACY_MAGIC = bytes.fromhex("80028a0a6cfc9c46f9206aa850192e")
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model")
# A tensor may hold more elements than its storage (an expanded view) only up to this many.
MAX_EXPANDED_NUMEL = 1 << 24
MAX_ID_LENGTH = 256             # characters in a storage key or location


# ---- shared by both formats ---------------------------------------------------------------------

def select_state(obj, key, source: str) -> dict:
    """The name -> TensorRef dict of the state dict inside the unpickled checkpoint `obj`."""
    if key is not None:
        if type(obj) is not dict or key not in obj:
            keys = list(obj)[:20] if type(obj) is dict else []
            raise ValueError(f"{source}: key={key!r} is not a top-level key of the checkpoint "
                             f"(its keys: {keys})")
        obj = obj[key]
    elif type(obj) is dict and not any(isinstance(v, TensorRef) for v in obj.values()):
        obj = next((obj[k] for k in CHECKPOINT_KEYS if type(obj.get(k)) is dict), obj)
    if type(obj) is not dict:
        what = "tensor" if isinstance(obj, TensorRef) else type(obj).__name__
        raise FileFormatError(f"{source}: the checkpoint holds a {what}, not a dict of tensors")
    state = {k: v for k, v in obj.items() if isinstance(v, TensorRef)}
    if obj and not state:
        raise FileFormatError(f"{source}: no tensors at the top level of the checkpoint; pick "
                              f"the entry that holds them with key= (top-level keys: "
                              f"{list(obj)[:20]})")
    for name in state:
        if type(name) is not str:
            raise FileFormatError(f"{source}: a tensor is stored under a {type(name).__name__} "
                                  "key, not a str name")
    return state


def materialize(ref: TensorRef, record, little_endian: bool, what: str) -> np.ndarray:
    """The numpy array of tensor `ref`, whose storage's record (the whole zip record, or the whole
    legacy raw storage) is the buffer `record`; `what` names the tensor in errors."""
    storage = ref.storage
    dtype = numpy_dtype(ref.dtype, what).newbyteorder("<" if little_endian else ">")
    start = storage.offset * numpy_dtype(storage.dtype, what).itemsize
    nbytes = storage.numel * numpy_dtype(storage.dtype, what).itemsize
    if start + nbytes > len(record) or nbytes % dtype.itemsize:
        raise CorruptFileError(f"{what}: its storage of {nbytes} bytes at byte {start} does not "
                               f"fit a record of {len(record)} bytes as {ref.dtype} elements")
    numel, count = nbytes // dtype.itemsize, math.prod(ref.size)
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
    if count and last >= numel:
        raise CorruptFileError(f"{what}: offset {ref.offset}, size {ref.size} and stride "
                               f"{ref.stride} reach element {last} of a storage of {numel}")
    if math.prod(n for n in ref.size if n) > max(numel, MAX_EXPANDED_NUMEL):
        raise CorruptFileError(f"{what}: size {ref.size} spans more elements than its storage "
                               f"of {numel}; refusing to expand it")
    if count == 0:
        out = np.empty(ref.size, dtype.newbyteorder("="))
    else:                      # the stride of a size-1 dimension is never used: any value is valid
        strides = [s * dtype.itemsize if n > 1 else 0 for n, s in zip(ref.size, ref.stride)]
        flat = np.frombuffer(record, dtype, count=numel, offset=start)
        view = as_strided(flat[ref.offset:], ref.size, strides, writeable=False)
        out = view.astype(dtype.newbyteorder("="), order="C")
    return widen_bfloat16(out) if ref.dtype == "bfloat16" else out


def _ascii(value, what: str) -> str:
    """A short str field of a persistent id (bytes in files written by Python 2)."""
    if type(value) is bytes:
        value = value.decode("ascii", "replace")
    if type(value) is not str or len(value) > MAX_ID_LENGTH:
        raise CorruptFileError(f"{what} is not a str of at most {MAX_ID_LENGTH} characters")
    return value


def _storage_fields(pid: tuple, n: int):
    """(dtype, key, numel) of a ('storage', type, key, location, numel, ...) persistent id."""
    if len(pid) != n:
        raise CorruptFileError(f"a storage id has {len(pid)} fields, expected {n}")
    stype, key, numel = pid[1], _ascii(pid[2], "a storage key"), pid[4]
    _ascii(pid[3], "a storage location")             # 'cpu', 'cuda:0': everything loads to CPU
    if not isinstance(stype, StorageType) or type(numel) is not int or numel < 0:
        raise CorruptFileError(f"storage {key!r}: bad storage type or element count")
    return stype.dtype, key, numel


# ---- zip format ---------------------------------------------------------------------------------

def load_zip(zf: zipfile.ZipFile, key, source: str) -> dict:
    """The state dict of the torch zip checkpoint open as `zf` (name -> numpy array)."""
    first = zf.namelist()[0]
    if "/" not in first:
        raise CorruptFileError(f"{source}: zip record {first!r} is not in a top-level folder, "
                               "as every record of a torch checkpoint is")
    prefix = first.split("/", 1)[0] + "/"
    records = {i.filename[len(prefix):]: i for i in zf.infolist()
               if i.filename.startswith(prefix)}
    if "constants.pkl" in records or any(r.startswith("code/") for r in records):
        raise FileFormatError(f"{source} is a TorchScript archive (torch.jit.save), which holds "
                              "code; load it with torch.jit.load and save its state_dict()")
    if "data.pkl" not in records:
        raise CorruptFileError(f"{source}: no {prefix}data.pkl record")
    byteorder = b"little"
    if "byteorder" in records:
        byteorder = read_member(zf, records["byteorder"], source)
        if byteorder not in (b"little", b"big"):
            raise CorruptFileError(f"{source}: byteorder record is {byteorder[:16]!r}, expected "
                                   "b'little' or b'big'")

    storages: dict = {}

    def persistent_load(pid):
        dtype, skey, numel = _storage_fields(pid, 5)
        info = records.get(f"data/{skey}")
        itemsize = numpy_dtype(dtype, f"storage {skey!r}").itemsize
        if info is None or info.file_size != numel * itemsize:
            size = "no record" if info is None else f"a record of {info.file_size} bytes"
            raise CorruptFileError(f"storage {skey!r} declares {numel} {dtype} elements "
                                   f"({numel * itemsize} bytes) but has {size}")
        ref = storages.setdefault(skey, StorageRef(skey, dtype, numel))
        if (ref.dtype, ref.numel) != (dtype, numel):
            raise CorruptFileError(f"storage {skey!r} is declared with two types or sizes")
        return ref

    pickle = read_member(zf, records["data.pkl"], source)
    obj, _ = load_pickle(pickle, source=f"{source} ({prefix}data.pkl)",
                         persistent_load=persistent_load)
    state = select_state(obj, key, source)
    loaded: dict = {}
    out = {}
    for name, ref in state.items():
        skey = ref.storage.key
        if skey not in loaded:
            loaded[skey] = read_member(zf, records[f"data/{skey}"], source)
        out[name] = materialize(ref, loaded[skey], byteorder == b"little",
                                f"{source}: tensor {name!r}")
    return out


# ---- legacy format ------------------------------------------------------------------------------

def load_torch_legacy(path, key) -> dict:
    """The state dict of the legacy-format torch checkpoint at `path`: five pickles (magic
    number, protocol version, system info, the object, the sorted storage keys), then for each
    key an int64 little-endian element count and the storage's little-endian bytes."""
    source = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    magic, pos = load_pickle(data, 0, source=f"{source} (magic number)")
    version, pos = load_pickle(data, pos, source=f"{source} (protocol version)")
    if magic != LEGACY_MAGIC_NUMBER or version != LEGACY_PROTOCOL_VERSION:
        raise CorruptFileError(f"{source}: not a legacy torch checkpoint (bad magic number or "
                               "protocol version)")
    sys_info, pos = load_pickle(data, pos, source=f"{source} (system info)")
    if type(sys_info) is not dict:             # raw storages are little-endian whatever it says
        raise CorruptFileError(f"{source}: the system-info pickle is not a dict")

    roots: dict = {}

    def persistent_load(pid):
        dtype, root, numel = _storage_fields(pid, 6)
        ref = roots.setdefault(root, StorageRef(root, dtype, numel))
        if (ref.dtype, ref.numel) != (dtype, numel):
            raise CorruptFileError(f"storage {root!r} is declared with two types or sizes")
        view = pid[5]
        if view is None:
            return ref
        if type(view) is not tuple or len(view) != 3 or \
                not all(type(v) is int and v >= 0 for v in view[1:]) or view[1] + view[2] > numel:
            raise CorruptFileError(f"storage {root!r}: bad view (key, offset, size)")
        return StorageRef(root, dtype, view[2], view[1])

    obj, pos = load_pickle(data, pos, source=f"{source} (object)",
                           persistent_load=persistent_load)
    keys, pos = load_pickle(data, pos, source=f"{source} (storage keys)")
    if type(keys) is not list:
        raise CorruptFileError(f"{source}: the storage-key pickle is not a list")
    records = {}
    for root in keys:
        if type(root) is not str:
            raise CorruptFileError(f"{source}: a storage key is a {type(root).__name__}, not a str")
        ref = roots.get(root)
        if ref is None or pos + 8 > len(data):
            raise CorruptFileError(f"{source}: storage {root!r} is not referenced by the object "
                                   "or the file ends before it")
        count = int.from_bytes(data[pos:pos + 8], "little", signed=True)
        nbytes = ref.numel * numpy_dtype(ref.dtype, source).itemsize
        if count != ref.numel or pos + 8 + nbytes > len(data):
            raise CorruptFileError(f"{source}: storage {root!r} declares {ref.numel} elements, "
                                   f"its record {count}, with {len(data) - pos - 8} bytes left")
        records[root] = memoryview(data)[pos + 8:pos + 8 + nbytes]
        pos += 8 + nbytes
    if pos != len(data):
        raise CorruptFileError(f"{source}: {len(data) - pos} bytes follow the last storage")
    out = {}
    for name, ref in select_state(obj, key, source).items():
        if ref.storage.key not in records:
            raise CorruptFileError(f"{source}: tensor {name!r} uses storage "
                                   f"{ref.storage.key!r}, which the file does not hold")
        out[name] = materialize(ref, records[ref.storage.key], True,
                                f"{source}: tensor {name!r}")
    return out
