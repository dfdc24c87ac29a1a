"""The cap on decompressed data, shared by every reader that inflates: zip members of torch
checkpoints, .npz and .keras archives, and compressed (filtered) HDF5 datasets.

Uncompressed content cannot exceed the file itself (the readers check declared sizes against the
bytes there). Compressed content can: deflate inflates about 1000x, so a 1 MB file could ask for
1 GiB. The compressed content of one file may therefore inflate to at most `max_bytes` in total:

    fastconv.load(path, max_bytes=N)            # per call
    FASTCONV_LOAD_MAX_BYTES=N                   # environment variable, when max_bytes is None
    default: max(256 MiB, 100 x the file's size)

Going past the cap raises UnsafeFileError naming the member or dataset and the cap; nothing past
the cap is inflated (the checks use the sizes the file declares, and zipfile and HDF5 never
inflate more than they declare).
"""
from __future__ import annotations

import os
from typing import Optional

from fastconv.io.errors import UnsafeFileError

ENV_VAR = "FASTCONV_LOAD_MAX_BYTES"
DEFAULT_FLOOR = 256 << 20        # bytes any file may inflate to
DEFAULT_RATIO = 100              # bytes per file byte beyond the floor


def inflation_cap(max_bytes: Optional[int], file_size: int) -> int:
    """The cap for a file of `file_size` bytes: max_bytes, else the environment variable, else
    the default (see the module docstring)."""
    if max_bytes is None:
        env = os.environ.get(ENV_VAR, "").strip()
        if not env:
            return max(DEFAULT_FLOOR, DEFAULT_RATIO * file_size)
        try:
            max_bytes = int(env)
        except ValueError:
            raise ValueError(f"load: the {ENV_VAR} environment variable must be a number of "
                             f"bytes, got {env!r}") from None
        what = f"the {ENV_VAR} environment variable"
    else:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
            raise TypeError(f"load: max_bytes must be an int or None, got {max_bytes!r}")
        what = "max_bytes"
    if max_bytes < 0:
        raise ValueError(f"load: {what} must be >= 0, got {max_bytes}")
    return max_bytes


class InflationBudget:
    """What is left of the cap while one file is read."""

    def __init__(self, cap: int, source: str):
        self.cap, self.used, self.source = cap, 0, source

    def spend(self, nbytes: int, what: str) -> None:
        """Account for `nbytes` of decompressed data of `what` (a zip member, a dataset), or
        raise UnsafeFileError before it is inflated."""
        if self.used + nbytes > self.cap:
            raise UnsafeFileError(
                f"{self.source}: {what} inflates to {nbytes:,} bytes, which with the "
                f"{self.used:,} bytes inflated before it passes the cap of {self.cap:,} bytes on "
                f"decompressed data; if you trust the file, raise the cap with "
                f"fastconv.load(..., max_bytes=N) or the {ENV_VAR} environment variable")
        self.used += nbytes
