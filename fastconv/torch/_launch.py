"""Where fastconv's kernels meet torch tensors: which tensors the kernels can take, and the one
function that launches a kernel on tensors.

CPU: every tensor argument becomes a zero-copy numpy view (`t.detach().numpy()`, the tensors are
C-contiguous by then) and the fastconv._C function of that name runs on the views with the GIL
released, writing into outputs that torch allocated. CUDA: `device_backend` gives the
fastconv._gpu backend (raw pointers `t.data_ptr()`, torch's current stream, torch's caching
allocator) that the ops hand CUDA tensors to; inside fastconv.testing.cuda_emulation() CPU tensors
take the same route to the emulated kernels. 'meta' tensors (and the fake tensors of
torch.compile) never reach a kernel: the ops' fake implementations give their shapes.
"""
from __future__ import annotations

from typing import Optional

import torch

from fastconv import _C, _gpu

DTYPES = (torch.float32, torch.float64)
# dtypes the CUDA kernels take (16-bit storage, float32 accumulation).
DEVICE_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# Devices whose tensors the ops accept: the CPU kernels, the CUDA kernels, and shape-only tensors.
DEVICES = ("cpu", "cuda", "meta")
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def device_backend(t: torch.Tensor):
    """The fastconv._gpu backend that serves tensor t: fastconv._cuda for CUDA tensors, the
    emulation for CPU tensors inside fastconv.testing.cuda_emulation(); None for the CPU kernels."""
    if t.device.type == "cuda":
        return _gpu.backend_for_array("fastconv.torch", "a tensor", t)
    if t.device.type == "cpu" and _gpu.emulating():
        return _gpu.TorchBackend(_gpu.emulation_backend().mod, t.device)
    return None


def plain_cpu(*tensors) -> bool:
    """The common case, told apart in well under a microsecond: every tensor (None skipped) a
    plain CPU torch.Tensor or Parameter, all of one dtype that the CPU kernels take, outside
    fastconv.testing.cuda_emulation(). False only means "check in full"."""
    dtype = None
    for t in tensors:
        if t is None:
            continue
        if type(t) not in _PLAIN or t.device.type != "cpu":
            return False
        if dtype is None:
            dtype = t.dtype
            if dtype not in DTYPES:
                return False
        elif t.dtype != dtype:
            return False
    return not _gpu.emulating()


def unsupported(op: str, **tensors) -> Optional[Exception]:
    """The exception op raises for these tensors (None entries skipped) because of their device
    or dtype, or None when fastconv's kernels can take them. The modules fall back to torch's
    implementation exactly when this is not None."""
    if plain_cpu(*tensors.values()):
        return None
    for name, t in tensors.items():
        if t is None:
            continue
        if t.device.type not in DEVICES:
            return NotImplementedError(
                f"{op}: {name} is on {t.device}, but fastconv has kernels for CPU and CUDA tensors "
                f"only; use torch.nn.functional.{op} (fastconv.torch's modules fall back to it)")
        on_device = t.device.type == "cuda" or (t.device.type == "cpu" and _gpu.emulating())
        if t.device.type == "cuda":
            try:
                _gpu.cuda_module(op, f"{name} is on {t.device}")
            except (TypeError, RuntimeError) as e:
                return NotImplementedError(f"{e} (fastconv.torch's modules fall back to "
                                           f"torch.nn.functional.{op})")
        if on_device:
            if t.dtype not in DEVICE_DTYPES:
                return TypeError(f"{op}: {name} must be a float32, float16, bfloat16 or float64 "
                                 f"tensor, got dtype {t.dtype}")
            continue
        if t.dtype in (torch.float16, torch.bfloat16):
            return TypeError(
                f"{op}: {name} has dtype {t.dtype}, but fastconv's CPU kernels support float32 "
                f"and float64 only (half precision is for the GPU kernels); convert with .float()")
        if t.dtype not in DTYPES:
            return TypeError(f"{op}: {name} must be a float32 or float64 tensor, got dtype "
                             f"{t.dtype}")
    return None


def _array(a):
    if isinstance(a, torch.Tensor):
        return (a.detach() if a.requires_grad else a).numpy()
    return a


def launch(kernel: str, *args) -> None:
    """Run fastconv._C.<kernel>(*args) with the tensors among args as numpy views (all tensors
    C-contiguous and on the CPU; outputs included, written in place). CUDA tensors never get here:
    the ops hand them to the CUDA twins (device_backend)."""
    getattr(_C, kernel)(*(_array(a) for a in args))
