"""fastconv's CUDA path: picks the backend that serves an op's arrays (fastconv._cuda for CuPy
arrays and torch CUDA tensors; fastconv._cuda_emu for numpy arrays inside
fastconv.testing.cuda_emulation()) and holds the op twins that call the CUDA kernels:

    pool.py    max/avg/adaptive pooling, forward and backward
    conv.py    conv2d forward, input/weight/bias gradients (depthwise kernels; other shapes go to
    conv_dense.py, the implicit-GEMM kernels; autotune.py picks their tiles by timing on request)
    affine.py  channel_affine (inference BatchNorm + ReLU/ReLU6)

The twins take arrays that fastconv.nn._array / fastconv.nn.grad have already checked (4-D,
matching dtypes, resolved geometry) and return arrays of the same library on the same device.
"""
from __future__ import annotations

import threading

from fastconv._gpu.backend import Backend, CupyBackend, EmulationBackend, TorchBackend

__all__ = ["Backend", "CupyBackend", "EmulationBackend", "TorchBackend", "backend_for_array",
           "cuda_module", "emulating", "emulation_backend", "set_emulation"]

_state = threading.local()


def emulating() -> bool:
    """Whether numpy arrays are served by the emulated CUDA kernels on this thread."""
    return getattr(_state, "emulation", None) is not None


def emulation_backend():
    """The emulation backend when numpy arrays are routed to fastconv._cuda_emu, else None."""
    return getattr(_state, "emulation", None)


def set_emulation(on: bool):
    """Route numpy arrays to fastconv._cuda_emu (True) or back to the CPU kernels (False); returns
    the previous setting (fastconv.testing.cuda_emulation() is the public switch)."""
    previous = emulating()
    _state.emulation = EmulationBackend() if on else None
    return previous


def cuda_module(op: str, what: str):
    """fastconv._cuda, or the error that says why the GPU path is unavailable: TypeError when this
    build has no CUDA extension, RuntimeError when the CUDA runtime sees no GPU. `what` names the
    argument for the message ("input is a cupy array")."""
    from fastconv._backend import _cuda
    if _cuda is None:
        raise TypeError(f"{op}: {what}; the GPU kernels need the fastconv._cuda extension, which "
                        f"this fastconv was built without (nvcc was not found at install time): "
                        f"reinstall where the CUDA toolkit is on PATH (pip install \".[cuda]\"), "
                        f"or pass CPU arrays")
    if _cuda.device_count() == 0:
        raise RuntimeError(f"{op}: {what}, but the CUDA runtime sees no usable GPU (no device, or "
                           f"the driver is missing or too old); pass CPU arrays")
    return _cuda


def backend_for_array(op: str, name: str, a) -> Backend:
    """The backend for device array `a` (a CuPy array, a torch CUDA tensor, or under the emulation
    a numpy array)."""
    module = type(a).__module__.split(".")[0]
    if module == "numpy":
        be = getattr(_state, "emulation", None)
        if be is None:
            raise TypeError(f"{op}: {name} is a numpy array; the CUDA path takes CuPy arrays or "
                            f"torch CUDA tensors")
        return be
    if module == "cupy":
        return _device_backend(("cupy", a.device.id), lambda: CupyBackend(
            cuda_module(op, f"{name} is a cupy array"), a.device.id))
    if module == "torch":
        return _device_backend(("torch", str(a.device)), lambda: TorchBackend(
            cuda_module(op, f"{name} is a torch CUDA tensor"), a.device))
    raise TypeError(f"{op}: {name} is a {type(a).__module__}.{type(a).__qualname__} on a GPU; "
                    f"pass a CuPy array or a torch CUDA tensor (other libraries: cupy.from_dlpack)")


# One backend per device, made on first use (the GPU checks run then): backends hold no per-call
# state, and ops are called per layer, so their construction stays off the hot path.
_backends = {}


def _device_backend(key, make) -> Backend:
    be = _backends.get(key)
    if be is None:
        be = _backends[key] = make()
    return be
