"""Opening and reading zip archives (torch checkpoints, .npz, .keras) with every error of a damaged
archive turned into CorruptFileError."""
from __future__ import annotations

import struct
import zipfile
import zlib

from fastconv.io._limits import InflationBudget
from fastconv.io.errors import CorruptFileError

# What Python's zipfile raises on a damaged archive (RuntimeError: an "encrypted" flag bit,
# NotImplementedError: an unknown compression method, ValueError/OverflowError: impossible sizes).
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, struct.error,
              zlib.error, NotImplementedError, RuntimeError, ValueError, KeyError,
              UnicodeDecodeError, OverflowError)


def open_zip(path, source: str) -> zipfile.ZipFile:
    """`path` opened as a zip archive for reading."""
    try:
        return zipfile.ZipFile(path)
    except ZIP_ERRORS as e:
        raise CorruptFileError(f"{source}: not a readable zip archive: {e}") from None


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, source: str) -> bytes:
    """The bytes of member `info` (CRC-checked by zipfile)."""
    try:
        return zf.read(info)
    except ZIP_ERRORS as e:
        raise CorruptFileError(f"{source}: cannot read zip member {info.filename}: {e}") from None


def check_inflation(zf: zipfile.ZipFile, budget: InflationBudget) -> None:
    """Spend `budget` on the declared sizes of every compressed member, before any is read
    (zipfile inflates a member to at most its declared size and then checks its CRC)."""
    for info in zf.infolist():
        if info.compress_type != zipfile.ZIP_STORED:
            budget.spend(info.file_size, f"zip member {info.filename}")
