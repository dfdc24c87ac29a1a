"""Where fastconv's kernels meet torch tensors: which tensors the kernels can take, and the one
function that launches a kernel on tensors.

CPU: every tensor argument becomes a zero-copy numpy view (`t.detach().numpy()`, the tensors are
C-contiguous by then) and the fastconv._C function of that name runs on the views with the GIL
released, writing into outputs that torch allocated. CUDA: the launch through fastconv._cuda will
take raw pointers (`t.data_ptr()`) and torch's current stream
(`torch.cuda.current_stream(device).cuda_stream`) in `_launch_cuda`; this build has no CUDA
kernels, so it raises NotImplementedError. 'meta' tensors (and the fake tensors of torch.compile)
never reach `launch`: the ops' fake implementations give their shapes.
"""
from __future__ import annotations

from typing import Optional

import torch

from fastconv import _C

DTYPES = (torch.float32, torch.float64)
# Devices whose tensors the ops accept: the CPU kernels, and shape-only tensors.
DEVICES = ("cpu", "meta")


def unsupported(op: str, **tensors) -> Optional[Exception]:
    """The exception op raises for these tensors (None entries skipped) because of their device
    or dtype, or None when fastconv's kernels can take them. The modules fall back to torch's
    implementation exactly when this is not None."""
    for name, t in tensors.items():
        if t is None:
            continue
        if t.device.type not in DEVICES:
            return NotImplementedError(
                f"{op}: {name} is on {t.device}, but this build of fastconv has no CUDA kernels "
                f"(fastconv._cuda is not built with them yet); pass CPU tensors, or use "
                f"torch.nn.functional.{op} (fastconv.torch's modules fall back to it)")
        if t.dtype in (torch.float16, torch.bfloat16):
            return TypeError(
                f"{op}: {name} has dtype {t.dtype}, but fastconv's CPU kernels support float32 "
                f"and float64 only (half precision is for the GPU kernels); convert with .float()")
        if t.dtype not in DTYPES:
            return TypeError(f"{op}: {name} must be a float32 or float64 tensor, got dtype "
                             f"{t.dtype}")
    return None


def _array(a):
    return a.detach().numpy() if isinstance(a, torch.Tensor) else a


def launch(kernel: str, *args) -> None:
    """Run fastconv._C.<kernel>(*args) with the tensors among args as numpy views (all tensors
    C-contiguous and on one device; outputs included, written in place)."""
    device = next(a.device for a in args if isinstance(a, torch.Tensor))
    if device.type == "cpu":
        getattr(_C, kernel)(*(_array(a) for a in args))
    else:
        _launch_cuda(kernel, device)


def _launch_cuda(kernel: str, device: torch.device) -> None:
    """The slot of the CUDA launch (fastconv._cuda.<kernel> on data pointers and the current
    stream); no CUDA kernels exist in this build."""
    raise NotImplementedError(f"fastconv.torch: {kernel} got tensors on {device}, but this build "
                              f"of fastconv has no CUDA kernels (fastconv._cuda is not built "
                              f"with them yet); pass CPU tensors")
