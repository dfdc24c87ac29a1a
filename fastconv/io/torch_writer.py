"""Writing a state dict in torch's zip checkpoint format, without torch.

The file is what ``torch.save(state_dict, path)`` writes and ``torch.load(path,
weights_only=True)`` reads: a zip archive of uncompressed records under one top-level folder
(``archive/``):

    archive/data.pkl     a protocol-2 pickle, built opcode by opcode below: an OrderedDict of
                         torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False,
                         OrderedDict()) calls, each storage a persistent id
                         ('storage', torch.<Type>Storage, '<n>', 'cpu', numel)
    archive/byteorder    b"little" (the data is written little-endian)
    archive/data/<n>     the raw bytes of tensor n, C order, starting at a multiple of 64 bytes
                         (padded with torch's "FB" zip extra field)
    archive/version      b"3\\n"

``.format_version`` is left out on purpose: with it, torch may compute record offsets assuming
the data descriptors its own zip writer (miniz) adds, which Python's zipfile does not write.
"""
from __future__ import annotations

import struct
import zipfile

import numpy as np

from fastconv.io._dtypes import TORCH_TO_STORAGE

ALIGNMENT = 64
PREFIX = "archive/"
_LOCAL_HEADER = 30           # bytes of a zip local file header before its name
_ZIP64_EXTRA = 20            # the zip64 extra field zipfile adds for records near 2 GiB or more

_ORDERED_DICT = b"ccollections\nOrderedDict\n"
_REBUILD = b"ctorch._utils\n_rebuild_tensor_v2\n"


def _int(v: int) -> bytes:
    if 0 <= v < 1 << 8:
        return b"K" + bytes([v])                             # BININT1
    if 0 <= v < 1 << 16:
        return b"M" + struct.pack("<H", v)                   # BININT2
    if -(1 << 31) <= v < 1 << 31:
        return b"J" + struct.pack("<i", v)                   # BININT
    raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw                 # LONG1


def _str(s: str) -> bytes:
    raw = s.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(raw)) + raw          # BINUNICODE


def _tuple(values) -> bytes:
    body = b"".join(_int(v) for v in values)
    if not values:
        return b")"                                          # EMPTY_TUPLE
    if len(values) <= 3:
        return body + bytes([0x84 + len(values)])            # TUPLE1..3
    return b"(" + body + b"t"                                # MARK ... TUPLE


def state_dict_pickle(arrays: dict) -> bytes:
    """The data.pkl of `arrays` (name -> C-contiguous array); storage n is the n-th array."""
    out = [b"\x80\x02", _ORDERED_DICT, b")R", b"("]          # PROTO 2; OrderedDict(); MARK
    for n, (name, a) in enumerate(arrays.items()):
        storage = f"torch\n{TORCH_TO_STORAGE[a.dtype.name]}\n".encode()
        strides = tuple(s // a.itemsize for s in a.strides)
        out += [_str(name), _REBUILD,
                b"((", _str("storage"), b"c", storage, _str(str(n)), _str("cpu"), _int(a.size),
                b"tQ",                                       # the persistent id; BINPERSID
                _int(0), _tuple(a.shape), _tuple(strides),
                b"\x89", _ORDERED_DICT, b")R",               # requires_grad False; hooks
                b"tR"]                                       # the argument tuple; REDUCE
    out.append(b"u.")                                        # SETITEMS; STOP
    return b"".join(out)


def _write_record(zf: zipfile.ZipFile, name: str, data, offset: int) -> int:
    """Store `data` as member `name`, whose local header starts at byte `offset` of the file,
    with its first data byte at a multiple of ALIGNMENT. Returns where the next header starts."""
    nbytes = memoryview(data).nbytes
    info = zipfile.ZipInfo(name)
    info.compress_type, info.file_size = zipfile.ZIP_STORED, nbytes
    zip64 = nbytes * 1.05 > zipfile.ZIP64_LIMIT              # zipfile's own rule
    header = _LOCAL_HEADER + len(name.encode()) + 4 + (_ZIP64_EXTRA if zip64 else 0)
    pad = -(offset + header) % ALIGNMENT
    info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
    with zf.open(info, "w", force_zip64=zip64) as f:
        f.write(data)
    if info.header_offset != offset:
        raise RuntimeError(f"zip record {name} starts at byte {info.header_offset}, not at the "
                           f"{offset} its {ALIGNMENT}-byte alignment was computed for")
    return offset + header + pad + nbytes


def save_torch_zip(arrays: dict, path) -> None:
    """Write `arrays` (name -> numpy array of a dtype torch has a storage type for) to `path`."""
    arrays = {k: np.asarray(a, a.dtype.newbyteorder("<"), order="C") for k, a in arrays.items()}
    records = [("data.pkl", state_dict_pickle(arrays)), ("byteorder", b"little")]
    records += [(f"data/{n}", a.reshape(-1).view(np.uint8)) for n, a in enumerate(arrays.values())]
    records.append(("version", b"3\n"))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        offset = 0
        for name, data in records:
            offset = _write_record(zf, PREFIX + name, data, offset)
