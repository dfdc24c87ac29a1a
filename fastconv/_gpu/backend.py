"""Device backends for the CUDA kernels (fastconv._cuda, or fastconv._cuda_emu under
fastconv.testing.cuda_emulation()): where an op's arrays live, how outputs and workspace are
allocated (from the array library's caching allocator, never cudaMalloc per call), the raw
addresses and dtype codes the bindings take, and the stream to launch on (the library's current
stream; no host synchronisation).

    be = backend_for_array(x)            # CupyBackend, TorchBackend or EmulationBackend
    y = be.empty((N, C, P, Q), x.dtype)
    be.mod.max_pool2d_forward(be.dtype_code(x), be.ptr(x), be.ptr(y), ..., be.stream())

Every backend offers the same small surface, so the op twins in fastconv/_gpu/ (pool.py, conv.py,
affine.py) are written once for CuPy, torch and the emulation.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

# Storage dtype codes shared with csrc/cuda/runtime.h (cuda::DType).
DTYPE_CODES = {"float32": 0, "float16": 1, "bfloat16": 2, "float64": 3}
NCHW, NHWC = "nchw", "nhwc"


def _dtype_name(dtype) -> str:
    name = str(dtype)
    return name[len("torch."):] if name.startswith("torch.") else name


class Backend:
    """What the op twins need from an array library. Subclasses fill in the library specifics."""
    name = "?"
    mod = None          # the extension module: fastconv._cuda or fastconv._cuda_emu
    xp = None           # the array module for elementwise helpers (numpy, cupy or torch)

    # ---- arrays
    def empty(self, shape: Sequence[int], dtype):
        raise NotImplementedError

    def zeros(self, shape: Sequence[int], dtype):
        raise NotImplementedError

    def ptr(self, a) -> int:
        """The address of a's first element (0 for None)."""
        raise NotImplementedError

    def stream(self) -> int:
        """The handle of the stream to launch on (the library's current stream)."""
        raise NotImplementedError

    def device_key(self) -> int:
        """Which device the arrays are on (for per-device caches)."""
        return 0

    def time(self, fn) -> float:
        """Seconds fn() takes on the device (synchronises: for autotuning only)."""
        import time
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def workspace(self, nbytes: int):
        """A scratch buffer of at least nbytes from the library's caching allocator; keep the
        returned array alive until the launch that uses it is enqueued (the allocator's stream
        ordering keeps it valid for the kernels)."""
        return self.empty((max(int(nbytes), 1),), self.byte_dtype)

    byte_dtype = np.uint8

    def strides(self, a) -> Tuple[int, ...]:
        """a's strides in elements."""
        raise NotImplementedError

    def contiguous(self, a):
        """a as a C-contiguous array (a itself when it already is)."""
        raise NotImplementedError

    def dtype_code(self, op: str, name: str, a) -> int:
        dt = _dtype_name(a.dtype)
        if dt not in DTYPE_CODES:
            raise TypeError(f"{op}: {name} must be float32, float16, bfloat16 or float64 on the "
                            f"GPU, got dtype {dt}")
        return DTYPE_CODES[dt]

    # ---- layout
    def layout(self, a) -> Optional[str]:
        """NCHW when 4-D a is C-contiguous, NHWC when it is channels-last contiguous (torch's
        channels_last memory format, or a NHWC array transposed to NCHW), else None."""
        if not self.usable(a):
            return None
        st = self.strides(a)
        if _dense(a.shape, st, (0, 1, 2, 3)):
            return NCHW
        if _dense(a.shape, st, (0, 2, 3, 1)):
            return NHWC
        return None

    def nchw_or_nhwc(self, a) -> Tuple[object, str]:
        """a unchanged in its layout when it is NCHW or NHWC contiguous, else a C-contiguous copy."""
        lay = self.layout(a)
        return (a, lay) if lay is not None else (self.contiguous(a), NCHW)

    def empty_like_layout(self, shape: Sequence[int], dtype, layout: str):
        """A new 4-D (N, C, H, W)-shaped array in the given memory layout."""
        if layout == NCHW:
            return self.empty(shape, dtype)
        n, c, h, w = shape
        return self.transpose(self.empty((n, h, w, c), dtype), (0, 3, 1, 2))

    def transpose(self, a, axes):
        raise NotImplementedError

    def usable(self, a) -> bool:
        """Whether the kernels can read a's memory as it is, given dense strides (native byte
        order and aligned elements; always so for CuPy and torch)."""
        return True


def _dense(shape, strides, order) -> bool:
    """Whether strides describe a dense array whose dimensions, in `order` from outermost to
    innermost, are laid out row-major (size-1 dimensions may have any stride)."""
    expect = 1
    for d in reversed(order):
        if shape[d] != 1 and strides[d] != expect:
            return False
        expect *= shape[d]
    return True


class EmulationBackend(Backend):
    """numpy arrays run through fastconv._cuda_emu: the CUDA kernels on the CPU (tests)."""
    name = "emulation"
    xp = np

    def __init__(self):
        from fastconv import _cuda_emu
        self.mod = _cuda_emu

    def empty(self, shape, dtype):
        return np.empty(tuple(shape), dtype=dtype)

    def zeros(self, shape, dtype):
        return np.zeros(tuple(shape), dtype=dtype)

    def ptr(self, a) -> int:
        return 0 if a is None else a.__array_interface__["data"][0]

    def stream(self) -> int:
        return 0

    def strides(self, a):
        return tuple(s // a.itemsize for s in a.strides)

    def contiguous(self, a):
        if a.flags.c_contiguous and self.usable(a):
            return a
        return np.array(a, dtype=a.dtype.newbyteorder("="), order="C", copy=True)

    def transpose(self, a, axes):
        return a.transpose(axes)

    def usable(self, a) -> bool:
        return a.dtype.isnative and a.flags.aligned


class OnDevice:
    """An extension module whose every function call runs inside `context()` (the arrays' device
    made current), so kernels launch on, and CUDA calls go to, the device that holds the arrays
    even when another device is current."""

    def __init__(self, mod, context):
        self._mod, self._context = mod, context

    def __getattr__(self, name):
        fn = getattr(self._mod, name)
        if not callable(fn):
            return fn

        def call(*args, **kwargs):
            with self._context():
                return fn(*args, **kwargs)
        return call


class CupyBackend(Backend):
    """CuPy arrays on the GPU through fastconv._cuda, on the arrays' device (made current for
    every launch and allocation), its current stream and CuPy's memory pool."""
    name = "cupy"

    def __init__(self, mod, device_id=None):
        import cupy
        self.xp = cupy
        self.device_id = int(cupy.cuda.Device().id if device_id is None else device_id)
        self.mod = OnDevice(mod, self._device)

    def _device(self):
        return self.xp.cuda.Device(self.device_id)

    def empty(self, shape, dtype):
        with self._device():
            return self.xp.empty(tuple(shape), dtype=dtype)

    def zeros(self, shape, dtype):
        with self._device():
            return self.xp.zeros(tuple(shape), dtype=dtype)

    def ptr(self, a) -> int:
        return 0 if a is None else int(a.data.ptr)

    def stream(self) -> int:
        with self._device():
            return int(self.xp.cuda.get_current_stream().ptr)

    def device_key(self) -> int:
        return self.device_id

    def time(self, fn) -> float:
        with self._device():
            stream = self.xp.cuda.get_current_stream()
            start, end = self.xp.cuda.Event(), self.xp.cuda.Event()
            start.record(stream)
            fn()
            end.record(stream)
            end.synchronize()
            return self.xp.cuda.get_elapsed_time(start, end) / 1e3

    def strides(self, a):
        return tuple(s // a.itemsize for s in a.strides)

    def contiguous(self, a):
        return self.xp.ascontiguousarray(a)

    def transpose(self, a, axes):
        return a.transpose(axes)


class TorchBackend(Backend):
    """torch CUDA tensors through fastconv._cuda, on torch's current stream and caching allocator
    (fastconv.torch's ops); torch CPU tensors through fastconv._cuda_emu under the emulation."""
    name = "torch"

    def __init__(self, mod, device):
        import torch
        self.xp, self.device = torch, device
        self.byte_dtype = torch.uint8
        # CUDA tensors: their device made current for every launch (torch allocates on
        # self.device already); CPU tensors under the emulation need no device.
        self.mod = OnDevice(mod, lambda: torch.cuda.device(device)) \
            if device.type == "cuda" else mod

    def empty(self, shape, dtype):
        return self.xp.empty(tuple(shape), dtype=dtype, device=self.device)

    def zeros(self, shape, dtype):
        return self.xp.zeros(tuple(shape), dtype=dtype, device=self.device)

    def ptr(self, a) -> int:
        return 0 if a is None else int(a.data_ptr())

    def stream(self) -> int:
        if self.device.type != "cuda":  # CPU tensors under the emulation
            return 0
        return int(self.xp.cuda.current_stream(self.device).cuda_stream)

    def device_key(self) -> int:
        return -1 if self.device.type != "cuda" else int(self.device.index or 0)

    def time(self, fn) -> float:
        if self.device.type != "cuda":
            return super().time(fn)
        stream = self.xp.cuda.current_stream(self.device)
        start = self.xp.cuda.Event(enable_timing=True)
        end = self.xp.cuda.Event(enable_timing=True)
        start.record(stream)
        fn()
        end.record(stream)
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    def strides(self, a):
        return tuple(a.stride())

    def contiguous(self, a):
        return a.contiguous()

    def transpose(self, a, axes):
        return a.permute(*axes)
