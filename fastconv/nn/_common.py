"""Argument checks shared by fastconv.nn.functional and fastconv.nn.grad: array types, dtypes,
ranks, shapes, and the convolution / pooling geometry. Every check raises TypeError (wrong kind
of thing) or ValueError (right kind, wrong value) with a message that names the op, the argument,
what was expected and what came. fastconv._C checks again; these checks exist so that the message
speaks in the user's terms (unbatched shapes, tuples, 'same') and so that empty batches never
reach the kernels.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from fastconv import _shape
from fastconv._shape import Pair, Quad

_GPU_HINT = ("the GPU kernels need the fastconv._cuda extension built with CUDA "
             "(pip install \".[cuda]\" on a machine with nvcc); they are not available in this "
             "build, so pass numpy arrays")


def _is_cupy(a) -> bool:
    # Detected by the module of its type, so that cupy is never imported here.
    return type(a).__module__.split(".")[0] == "cupy"


def _type_name(a) -> str:
    t = type(a)
    return f"{t.__module__}.{t.__qualname__}" if t.__module__ != "builtins" else t.__qualname__


def shape_str(shape: Sequence[int]) -> str:
    shape = tuple(int(s) for s in shape)
    return str(shape)


def check_arrays(op: str, **arrays) -> None:
    """Each named argument (None entries are skipped) must be a numpy array; cupy arrays get the
    GPU hint, a mix of libraries a TypeError naming both."""
    kinds = {}
    for name, a in arrays.items():
        if a is None:
            continue
        if _is_cupy(a):
            kinds[name] = "cupy"
        elif isinstance(a, np.ndarray):
            kinds[name] = "numpy"
        else:
            raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {_type_name(a)}")
    if len(set(kinds.values())) > 1:
        first = next(iter(kinds))
        other = next(n for n in kinds if kinds[n] != kinds[first])
        raise TypeError(f"{op}: {first} is a {kinds[first]} array but {other} is a "
                        f"{kinds[other]} array; all arrays must come from the same library")
    for name, kind in kinds.items():
        if kind == "cupy":
            raise TypeError(f"{op}: {name} is a cupy array; {_GPU_HINT}")


def check_float(op: str, name: str, a: np.ndarray) -> None:
    """float32 or float64 (any byte order); TypeError otherwise."""
    dt = a.dtype
    if dt.kind == "f" and dt.itemsize in (4, 8):
        return
    if dt.kind == "f" and dt.itemsize == 2:
        raise TypeError(f"{op}: {name} has dtype float16, but the CPU kernels support float32 and "
                        f"float64 only (float16 is for the GPU); convert with .astype(np.float32)")
    raise TypeError(f"{op}: {name} must be a float32 or float64 array on the CPU, got dtype "
                    f"{dt.name}")


def check_same_dtype(op: str, ref_name: str, ref: np.ndarray, name: str, a: np.ndarray) -> None:
    if a.dtype.type is not ref.dtype.type:
        raise TypeError(f"{op}: {name} has dtype {a.dtype.name} but {ref_name} has dtype "
                        f"{ref.dtype.name}; they must match")


def native_dtype(a: np.ndarray) -> np.dtype:
    """The canonical native-byte-order dtype of a (the builtin descriptor object)."""
    return np.dtype(a.dtype.type)


def prepare(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """a as a native-byte-order, aligned, C-contiguous array, copying only when needed."""
    if a is None:
        return None
    canon = native_dtype(a)
    if not a.dtype.isnative:
        a = a.astype(canon)
    elif a.dtype is not canon:  # an equal but distinct descriptor: _C compares by identity
        a = a.view(canon)
    if not a.flags.aligned:
        a = np.array(a, order="C", copy=True)
    return np.ascontiguousarray(a)


def batched(op: str, name: str, a: np.ndarray, what: str = "(N, C, H, W)") -> Tuple[np.ndarray, bool]:
    """a as 4-D (a 3-D unbatched (C, H, W) array gets a leading batch axis) and whether it was
    unbatched. Channels, height and width must be non-zero; the batch may be empty."""
    if a.ndim not in (3, 4):
        raise ValueError(f"{op}: {name} must be 3-D (C, H, W) or 4-D {what}, got shape "
                         f"{shape_str(a.shape)}")
    unbatched = a.ndim == 3
    a4 = a[None] if unbatched else a
    if min(a4.shape[1:]) < 1:
        raise ValueError(f"{op}: {name} must have non-zero channels, height and width, got shape "
                         f"{shape_str(a.shape)}")
    return a4, unbatched


def check_bool(op: str, name: str, v) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool, got {v!r} ({type(v).__name__})")
    return bool(v)


def size_arg(op: str, name: str, size, lengths: Tuple[int, ...], what: str) -> Tuple[int, ...]:
    """A shape given as a tuple/list of ints (torch.Size included) with one of the given lengths;
    the first entry may be 0 when the shape is batched (len 4), every other must be positive."""
    if not isinstance(size, (tuple, list)):
        raise TypeError(f"{op}: {name} must be a tuple of ints {what}, got {size!r} "
                        f"({type(size).__name__})")
    if len(size) not in lengths:
        raise ValueError(f"{op}: {name} must have {' or '.join(map(str, lengths))} entries {what}, "
                         f"got {tuple(size)!r}")
    for s in size:
        if not _shape.is_int(s):
            raise TypeError(f"{op}: {name} must contain ints, got {s!r} ({type(s).__name__}) in "
                            f"{tuple(size)!r}")
    out = tuple(int(s) for s in size)
    batch = 1 if len(out) == 4 else 0
    if min(out[:batch], default=0) < 0 or min(out[batch:]) < 1:
        raise ValueError(f"{op}: {name} must have positive sizes (the batch may be 0) {what}, got "
                         f"{out!r}")
    return out


# ---- geometry -------------------------------------------------------------------------------

def conv_geometry(op: str, xshape: Sequence[int], wshape: Sequence[int], stride, padding, dilation,
                  groups) -> Tuple[Pair, Quad, Pair, int, Pair]:
    """Checks a convolution of an (N, C, H, W) input with a (K, C/groups, R, S) weight and returns
    (stride, padding as (top, bottom, left, right), dilation, groups, (P, Q))."""
    stride = _shape.pair(op, "stride", stride, minimum=1)
    dilation = _shape.pair(op, "dilation", dilation, minimum=1)
    groups = _shape.check_int(op, "groups", groups, minimum=1)
    _, C, H, W = xshape
    K, Cg, R, S = wshape
    if min(K, Cg, R, S) < 1:
        raise ValueError(f"{op}: weight must have non-zero sizes (out_channels, in_channels/groups, "
                         f"kH, kW), got shape {shape_str(wshape)}")
    if C % groups:
        raise ValueError(f"{op}: input has {C} channels, which is not divisible by groups={groups}")
    if K % groups:
        raise ValueError(f"{op}: weight has {K} output channels, which is not divisible by "
                         f"groups={groups}")
    if Cg != C // groups:
        raise ValueError(f"{op}: weight has {Cg} input channels per group but input has {C} "
                         f"channels and groups={groups} (expected weight.shape[1] == "
                         f"{C // groups})")
    pad = _shape.resolve_padding(op, padding, (H, W), (R, S), stride, dilation)
    PQ = _shape.conv_output_hw(op, (H, W), (R, S), stride, pad, dilation)
    return stride, pad, dilation, groups, PQ


def pool_args(op: str, kernel_size, stride, dilation) -> Tuple[Pair, Pair, Pair]:
    """kernel_size, stride (None or empty = kernel_size) and dilation as (h, w) pairs."""
    kernel = _shape.pair(op, "kernel_size", kernel_size, minimum=1)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        stride = kernel
    else:
        stride = _shape.pair(op, "stride", stride, minimum=1)
    dilation = _shape.pair(op, "dilation", dilation, minimum=1)
    return kernel, stride, dilation


def avg_pool_flags(op: str, ceil_mode, count_include_pad, divisor_override) -> Tuple[bool, bool, int]:
    ceil_mode = check_bool(op, "ceil_mode", ceil_mode)
    count_include_pad = check_bool(op, "count_include_pad", count_include_pad)
    if divisor_override is None:
        return ceil_mode, count_include_pad, 0
    return ceil_mode, count_include_pad, _shape.check_int(op, "divisor_override", divisor_override,
                                                          minimum=1)


def adaptive_size(op: str, output_size, H: int, W: int) -> Pair:
    """output_size (int, or a pair of ints / None = keep the input size) as (P, Q)."""
    if _shape.is_int(output_size):
        items = [output_size, output_size]
    elif isinstance(output_size, (tuple, list)):
        if len(output_size) != 2:
            raise ValueError(f"{op}: output_size must be an int or a tuple of 2 ints (or None), "
                             f"got {len(output_size)} values {tuple(output_size)!r}")
        items = list(output_size)
    else:
        raise TypeError(f"{op}: output_size must be an int or a tuple of 2 ints (or None), got "
                        f"{output_size!r} ({type(output_size).__name__})")
    out = []
    for item, full in zip(items, (H, W)):
        if item is None:
            out.append(full)
        elif not _shape.is_int(item):
            raise TypeError(f"{op}: output_size must contain ints or None, got {item!r} "
                            f"({type(item).__name__}) in {output_size!r}")
        elif item < 1:
            raise ValueError(f"{op}: output_size must be positive, got {output_size!r}")
        else:
            out.append(int(item))
    return out[0], out[1]
