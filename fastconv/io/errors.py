"""The errors fastconv.io raises for files it will not or cannot read.

All are ValueError subclasses, so ``except ValueError`` catches every bad-file case; a missing file
is the usual FileNotFoundError and a missing optional package the usual ImportError.
"""
from __future__ import annotations


class FileFormatError(ValueError):
    """The file is not a weight file fastconv.io can read: an unknown or unsupported format
    (TorchScript, the old torch tar format, a bare .npy), or a feature it does not support
    (quantized or sparse tensors, float8)."""


class CorruptFileError(FileFormatError):
    """The file claims a supported format but its content is inconsistent: truncated, bytes
    changed, sizes or offsets that do not fit the data it holds; or its bytes match no format at
    all (garbage, an empty file)."""


class UnsafeFileError(FileFormatError):
    """A pickle in the file asks for something outside the allow-list (an arbitrary global such as
    ``os.system``, a call of a non-allow-listed callable, a forbidden opcode). Nothing in the file
    was executed: the reader interprets pickles itself and never imports or calls their globals.
    Also: a Keras HDF5 file that points at other files (external links, external storage, virtual
    datasets), and compressed content that would inflate past the cap (``fastconv.load``'s
    ``max_bytes``)."""
