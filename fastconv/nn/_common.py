"""Argument checks shared by fastconv.nn.functional and fastconv.nn.grad: array types (and the
import of other libraries' CPU arrays through DLPack), dtypes, ranks, shapes, and the convolution /
pooling geometry. Every check raises TypeError (wrong kind of thing) or ValueError (right kind,
wrong value) with a message that names the op, the argument, what was expected and what came.
fastconv._C checks again; these checks exist so that the message speaks in the user's terms
(unbatched shapes, tuples, 'same') and so that empty batches never reach the kernels.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from fastconv import _gpu, _shape
from fastconv._shape import Pair, Quad

_DLPACK_CPU = 1  # kDLCPU, DLPack's DLDeviceType for host memory


def _library(a) -> str:
    # The top-level module of a's type: 'numpy', 'torch', 'cupy', 'jaxlib', ... (never imported).
    return type(a).__module__.split(".")[0]


def _is_cupy(a) -> bool:
    return _library(a) == "cupy"


def _type_name(a) -> str:
    t = type(a)
    return f"{t.__module__}.{t.__qualname__}" if t.__module__ != "builtins" else t.__qualname__


def shape_str(shape: Sequence[int]) -> str:
    shape = tuple(int(s) for s in shape)
    return str(shape)


def _on_gpu(op: str, name: str, a) -> bool:
    """Whether array argument `a` lives on a GPU; TypeError when it is not an array at all."""
    if isinstance(a, np.ndarray):
        return False
    if _is_cupy(a) or hasattr(a, "__cuda_array_interface__"):
        return True
    device = getattr(a, "__dlpack_device__", None)
    if device is not None and hasattr(a, "__dlpack__"):
        return device()[0] != _DLPACK_CPU
    raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {_type_name(a)} (arrays of other "
                    f"libraries are accepted through DLPack: a CPU torch.Tensor, JAX or CuPy host "
                    f"array)")


def check_required(op: str, name: str, a) -> None:
    """TypeError when a required array argument is None."""
    if a is None:
        raise TypeError(f"{op}: {name} is required (an array or a fastconv Tensor), got None")


def _where(a, gpu: bool) -> str:
    lib = _library(a)
    if lib in ("numpy", "cupy"):
        return f"{lib} array"
    return f"{lib} array on the {'GPU' if gpu else 'CPU'}"


def _from_dlpack(op: str, name: str, a) -> np.ndarray:
    """A CPU array of another library as a numpy array sharing its memory."""
    if getattr(a, "requires_grad", False) is True:
        raise TypeError(f"{op}: {name} is a {_type_name(a)} that requires grad, but the array "
                        f"functions record no autograd; use the ops of fastconv.torch for "
                        f"autograd, or pass {name}.detach()")
    try:
        return np.from_dlpack(a)
    except (BufferError, TypeError, ValueError, RuntimeError) as e:
        dtype = getattr(a, "dtype", None)
        what = f" (dtype {dtype})" if dtype is not None else ""
        raise TypeError(f"{op}: {name} is a {_type_name(a)}{what} that numpy cannot import through "
                        f"DLPack: {e}") from None


class _Back:
    """Hands an entry point's results back in the caller's library; `.device` is the CUDA backend
    (fastconv._gpu) that serves the op's arrays, or None on the CPU kernels."""
    def __init__(self, convert=None, device=None):
        self.convert, self.device = convert, device

    def __call__(self, result):
        return result if self.convert is None else self.convert(result)


# ---- remembered plans: the common call without the checks ------------------------------------
# A model calls each layer with the same shapes and arguments every step. Once a call of plain
# numpy arrays in the kernels' layout has passed every check, what the checks derived (output
# shape, kernel arguments) is remembered under the call's shapes, dtypes and arguments, and the
# next such call goes straight to the kernel: a handful of bytecodes instead of ~10 functions,
# which matters most right after a large op has evicted the interpreter's data from the caches
# (~60 us of checks and allocation then, against ~16 us when hot). Any other call (another
# library's arrays, odd layouts, lists, numpy scalars, the CUDA emulation, an argument that
# fails) takes the full path, so errors and results are the full path's.
_PLAN_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int64))
_PLANS: dict = {}


def plan_key(op: str, arrays: tuple, args: tuple):
    """The key of a call whose arrays are numpy arrays (or None) that the CPU kernels take as they
    are (native float32 / float64 / int64, C-contiguous, aligned) and whose other arguments are
    plain (_shape._key); None for any other call."""
    if _gpu.emulation_backend() is not None:
        return None
    shapes = []
    for a in arrays:
        if a is None:
            shapes.append(None)
            continue
        if type(a) is not np.ndarray:
            return None
        dt, fl = a.dtype, a.flags
        if dt not in _PLAN_DTYPES or not dt.isnative or not (fl.c_contiguous and fl.aligned):
            return None
        shapes.append((a.shape, dt.num))
    try:
        return op, tuple(shapes), _shape._key(args)
    except _shape._NotPlain:
        return None


def plan(key):
    """What a call with this key derived before (see remember_plan), or None."""
    return None if key is None else _PLANS.get(key)


def remember_plan(key, value) -> None:
    """Remember value (a tuple) for key after the full path's checks passed (key None: nothing)."""
    if key is not None:
        if len(_PLANS) >= 4096:
            _PLANS.clear()
        _PLANS[key] = value


def import_arrays(op: str, **arrays) -> Tuple[List[Optional[np.ndarray]], Callable]:
    """The array arguments of an entry point, in the order given (None stays None), and the
    function that hands its results back in the caller's library (its `.device` attribute says
    which CUDA backend serves the op, None for the CPU kernels).

    CPU path: numpy arrays pass through; CPU arrays of other libraries that speak DLPack (torch
    tensors, JAX and CuPy host arrays, ...) are imported with np.from_dlpack, sharing their memory
    (`prepare` copies later only when the layout requires). Inside
    fastconv.testing.cuda_emulation() the same numpy arrays go to the emulated CUDA kernels.
    GPU path: CuPy arrays as they are; torch CUDA tensors and other `__cuda_array_interface__` /
    CUDA DLPack arrays through CuPy without a copy (results go back as torch tensors for torch).
    Mixing CPU and GPU arrays, arrays on two GPUs, or non-arrays raise TypeError naming the
    arguments."""
    # The common case, plain numpy arrays on the CPU kernels, without the checks below (~4 us).
    if _gpu.emulation_backend() is None and all(
            a is None or type(a) is np.ndarray for a in arrays.values()):
        return list(arrays.values()), _NUMPY_BACK
    gpu = {name: _on_gpu(op, name, a) for name, a in arrays.items() if a is not None}
    if len(set(gpu.values())) > 1:
        first = next(iter(gpu))
        other = next(n for n in gpu if gpu[n] != gpu[first])
        raise TypeError(f"{op}: {first} is a {_where(arrays[first], gpu[first])} but {other} is a "
                        f"{_where(arrays[other], gpu[other])}; all arrays must be on the same "
                        f"device (move them with .get() / cupy.asarray, or Tensor.to())")
    torch_in = any(_library(a) == "torch" for a in arrays.values() if a is not None)
    if any(gpu.values()):
        return _import_gpu(op, arrays, torch_in)
    out = [a if a is None or isinstance(a, np.ndarray) else _from_dlpack(op, name, a)
           for name, a in arrays.items()]
    device = _gpu.emulation_backend()
    return out, _Back(_to_torch if torch_in else None, device)


_NUMPY_BACK = _Back(None, None)


def _import_gpu(op: str, arrays: dict, torch_in: bool):
    """GPU arrays as CuPy arrays on one device, and the _Back that serves them."""
    name = next(n for n, a in arrays.items() if a is not None)
    _gpu.cuda_module(op, f"{name} is a {_where(arrays[name], True)}")  # raises without _cuda/GPU
    try:
        import cupy
    except ImportError:
        raise TypeError(f"{op}: {name} is a {_where(arrays[name], True)}; fastconv's GPU path takes "
                        f"CuPy arrays (pip install \"fastconv[cuda]\")") from None
    out, devices = [], {}
    for name, a in arrays.items():
        if a is not None and not _is_cupy(a):
            if getattr(a, "requires_grad", False) is True:
                raise TypeError(f"{op}: {name} is a {_type_name(a)} that requires grad, but the "
                                f"array functions record no autograd; use the ops of "
                                f"fastconv.torch for autograd, or pass {name}.detach()")
            a = cupy.from_dlpack(a) if hasattr(a, "__dlpack__") else cupy.asarray(a)
        if a is not None:
            devices[name] = a.device.id
        out.append(a)
    names = list(devices)
    for n in names[1:]:
        if devices[n] != devices[names[0]]:
            raise TypeError(f"{op}: {names[0]} is on GPU {devices[names[0]]} but {n} is on GPU "
                            f"{devices[n]}; all arrays must be on the same device")
    first = next(iter(devices))
    device = _gpu.backend_for_array(op, first, out[list(arrays).index(first)])
    return out, _Back(_cupy_to_torch if torch_in else None, device)


def _cupy_to_torch(result):
    import torch
    if isinstance(result, tuple):
        return tuple(torch.from_dlpack(r) for r in result)
    return torch.from_dlpack(result)


def _to_torch(result):
    """numpy results (an array or a tuple of arrays) as torch tensors sharing their memory."""
    import torch  # already imported: the caller passed a torch tensor
    if isinstance(result, tuple):
        return tuple(torch.from_dlpack(r) for r in result)
    return torch.from_dlpack(result)


def check_float(op: str, name: str, a, device=None) -> None:
    """float32 or float64 (any byte order) on the CPU kernels; on the CUDA path (device: the
    backend from import_arrays) also float16 (and bfloat16 where the library has it). TypeError
    otherwise."""
    dt = a.dtype
    if dt.kind == "f" and dt.itemsize in (4, 8):
        return
    if device is not None and (dt.name in ("float16", "bfloat16")):
        return
    if dt.kind == "f" and dt.itemsize == 2:
        raise TypeError(f"{op}: {name} has dtype float16, but the CPU kernels support float32 and "
                        f"float64 only (float16 is for the GPU); convert with .astype(np.float32)")
    where = "on the GPU" if device is not None else "on the CPU"
    raise TypeError(f"{op}: {name} must be a float32 or float64 array {where}, got dtype "
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
                  groups, bias_shape: Optional[Sequence[int]] = None
                  ) -> Tuple[Pair, Quad, Pair, int, Pair]:
    """Remembered (_shape.remember) for plain arguments: _conv_geometry."""
    return _conv_geometry(op, tuple(xshape), tuple(wshape), stride, padding, dilation, groups,
                          None if bias_shape is None else tuple(bias_shape))


@_shape.remember
def _conv_geometry(op: str, xshape: Sequence[int], wshape: Sequence[int], stride, padding, dilation,
                   groups, bias_shape: Optional[Sequence[int]] = None
                   ) -> Tuple[Pair, Quad, Pair, int, Pair]:
    """Checks a convolution of an (N, C, H, W) input with a (K, C/groups, R, S) weight (and a (K,)
    bias when bias_shape is given) and returns
    (stride, padding as (top, bottom, left, right), dilation, groups, (P, Q))."""
    if len(wshape) != 4:
        raise ValueError(f"{op}: weight must be 4-D (out_channels, in_channels/groups, kH, kW), "
                         f"got shape {shape_str(wshape)}")
    stride = _shape.pair(op, "stride", stride, minimum=1)
    dilation = _shape.pair(op, "dilation", dilation, minimum=1)
    groups = _shape.check_int(op, "groups", groups, minimum=1, maximum=_shape.MAX_GEOMETRY)
    _, C, H, W = xshape
    K, Cg, R, S = wshape
    if min(K, Cg, R, S) < 1:
        raise ValueError(f"{op}: weight must have non-zero sizes (out_channels, in_channels/groups, "
                         f"kH, kW), got shape {shape_str(wshape)}")
    _shape.check_geometry(op, "the kernel size (weight.shape[2:])", (R, S), (R, S))
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
    if bias_shape is not None and tuple(bias_shape) != (K,):
        raise ValueError(f"{op}: bias must have shape ({K},) (one per output channel), got shape "
                         f"{shape_str(bias_shape)}")
    return stride, pad, dilation, groups, PQ


@_shape.remember
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
    # Any non-zero int, negative included, as in torch; 0 is the kernels' "no override".
    divisor = _shape.check_int(op, "divisor_override", divisor_override)
    if divisor == 0:
        raise ValueError(f"{op}: divisor_override must be a non-zero int or None, got 0")
    if abs(divisor) > _shape.MAX_GEOMETRY:
        raise ValueError(f"{op}: divisor_override must be at most {_shape.MAX_GEOMETRY} (2**31 - 1) "
                         f"in magnitude, got {divisor}")
    return ceil_mode, count_include_pad, divisor


@_shape.remember
def max_pool_geometry(op: str, hw: Pair, kernel_size, stride, padding, dilation, ceil_mode
                      ) -> Tuple[Pair, Pair, Quad, Pair, bool, Pair]:
    """Checks max pooling of an (H, W) plane and returns (kernel, stride, padding as (top,
    bottom, left, right), dilation, ceil_mode, (P, Q)); one remembered call instead of four."""
    kernel, stride, dilation = pool_args(op, kernel_size, stride, dilation)
    ceil_mode = check_bool(op, "ceil_mode", ceil_mode)
    pad = _shape.resolve_padding(op, padding, hw, kernel, stride, dilation)
    PQ = _shape.pool_output_hw(op, hw, kernel, stride, pad, dilation, ceil_mode)
    return kernel, stride, pad, dilation, ceil_mode, PQ


@_shape.remember
def avg_pool_geometry(op: str, hw: Pair, kernel_size, stride, padding, ceil_mode,
                      count_include_pad, divisor_override
                      ) -> Tuple[Pair, Pair, Quad, bool, bool, int, Pair]:
    """Checks average pooling of an (H, W) plane and returns (kernel, stride, padding as (top,
    bottom, left, right), ceil_mode, count_include_pad, divisor (0: none), (P, Q))."""
    kernel, stride, _ = pool_args(op, kernel_size, stride, 1)
    ceil_mode, count_include_pad, divisor = avg_pool_flags(op, ceil_mode, count_include_pad,
                                                           divisor_override)
    pad = _shape.resolve_padding(op, padding, hw, kernel, stride, (1, 1))
    PQ = _shape.pool_output_hw(op, hw, kernel, stride, pad, (1, 1), ceil_mode)
    return kernel, stride, pad, ceil_mode, count_include_pad, divisor, PQ


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
    _shape.check_geometry(op, "output_size", out, output_size)
    return out[0], out[1]


def empty_output(op: str, shape: Sequence[int], dtype) -> np.ndarray:
    """np.empty(shape, dtype) for an op's result; an output too large to allocate raises
    MemoryError naming the op and the shape (numpy's own message does neither)."""
    try:
        return np.empty(tuple(shape), dtype=dtype)
    except (ValueError, MemoryError) as e:   # numpy: "array is too big" / "Unable to allocate"
        nbytes = np.dtype(dtype).itemsize
        for s in shape:
            nbytes *= int(s)
        raise MemoryError(f"{op}: cannot allocate the output of shape {shape_str(shape)} "
                          f"({nbytes:,} bytes): {e}") from None
