"""Element types shared by the readers and writers: torch dtype names, torch storage classes,
safetensors dtype strings, and their numpy equivalents.

numpy has no bfloat16: bfloat16 data is read as its raw 16 bits and widened to float32 (exact:
bfloat16 is the top half of a float32). The float8 types have no numpy equivalent either and are
refused.
"""
from __future__ import annotations

import numpy as np

from fastconv.io.errors import FileFormatError

# torch dtype name -> numpy dtype; bfloat16 maps to its raw storage type, see widen_bfloat16.
TORCH_TO_NUMPY = {
    "float64": np.dtype(np.float64), "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16), "bfloat16": np.dtype(np.uint16),
    "complex128": np.dtype(np.complex128), "complex64": np.dtype(np.complex64),
    "int64": np.dtype(np.int64), "int32": np.dtype(np.int32), "int16": np.dtype(np.int16),
    "int8": np.dtype(np.int8), "uint64": np.dtype(np.uint64), "uint32": np.dtype(np.uint32),
    "uint16": np.dtype(np.uint16), "uint8": np.dtype(np.uint8), "bool": np.dtype(np.bool_),
}

# Names torch pickles as dtype globals (torch.<name>) that have no numpy equivalent: allowed as
# inert values in a pickle, refused when a tensor of that type is read.
TORCH_UNSUPPORTED_DTYPES = ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
                            "float8_e8m0fnu", "complex32", "qint8", "quint8", "qint32",
                            "quint4x2", "quint2x4")

# Legacy typed storage classes (torch.<Name>, torch.cuda.<Name>) -> torch dtype name.
STORAGE_TO_TORCH = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool",
    # torch.UntypedStorage / torch.storage.UntypedStorage: plain bytes.
    "UntypedStorage": "uint8",
}
TORCH_TO_STORAGE = {t: s for s, t in STORAGE_TO_TORCH.items() if s != "UntypedStorage"}

# safetensors dtype string -> torch-style dtype name (the same names as above).
SAFETENSORS_TO_TORCH = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "C64": "complex64", "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
}


def numpy_dtype(torch_name: str, source: str) -> np.dtype:
    """The numpy dtype that holds elements of torch dtype `torch_name` (uint16 for bfloat16),
    or FileFormatError naming `source` for types numpy cannot hold."""
    try:
        return TORCH_TO_NUMPY[torch_name]
    except KeyError:
        raise FileFormatError(f"{source}: tensors of dtype {torch_name} are not supported "
                              f"(supported: {', '.join(TORCH_TO_NUMPY)})") from None


def widen_bfloat16(raw: np.ndarray) -> np.ndarray:
    """float32 values of bfloat16 numbers given as their raw native-endian uint16 bits."""
    return (raw.astype(np.uint32) << 16).view(np.float32)
