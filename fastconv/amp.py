"""Mixed precision, as torch.autocast and torch.amp.GradScaler:

    with fastconv.autocast("cuda", dtype=np.float16):       # or "bfloat16"
        loss = F.cross_entropy(model(x), y)                 # conv2d / linear in float16
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()

Inside `autocast`, conv2d and linear cast their float32 inputs, weights and biases on the device
path (CuPy arrays, or numpy arrays inside fastconv.testing.cuda_emulation()) to the autocast dtype
and compute in it (the CUDA kernels accumulate in float32); the cast is recorded, so the float32
parameters (the master weights) receive float32 gradients. Softmax, log-softmax and the losses
take float32 inputs (a float16 input is cast up), as torch's autocast does. CPU arrays on the CPU
kernels are left alone: those kernels have no 16-bit types.

float16's range is small, so its gradients can underflow: GradScaler multiplies the loss by a
scale, divides the gradients by it before the step, skips steps whose gradients hold inf or NaN
(halving the scale) and doubles the scale after `growth_interval` clean steps. bfloat16 has
float32's range and needs no scaler. bfloat16 arrays need a library that has the dtype (numpy
with ml_dtypes, or torch through fastconv.torch, where `torch.autocast` casts fastconv's ops on
CUDA tensors to the autocast dtype).
"""
from __future__ import annotations

import contextlib
import math
import threading
from typing import Iterator, Optional

import numpy as np

__all__ = ["autocast", "autocast_dtype", "GradScaler"]

_state = threading.local()


def _resolve_dtype(dtype):
    name = getattr(dtype, "__name__", None) or str(dtype)
    name = name.replace("torch.", "")
    if name in ("float16", "half"):
        return np.dtype(np.float16)
    if name in ("bfloat16", "bf16"):
        try:
            import ml_dtypes
        except ImportError:
            raise TypeError("autocast: dtype bfloat16 needs the ml_dtypes package for numpy/CuPy "
                            "arrays (pip install ml_dtypes), or use fastconv.torch under "
                            "torch.autocast") from None
        return np.dtype(ml_dtypes.bfloat16)
    raise TypeError(f"autocast: dtype must be float16 or bfloat16, got {dtype!r}")


@contextlib.contextmanager
def autocast(device_type: str = "cuda", dtype=np.float16, enabled: bool = True) -> Iterator[None]:
    """Run conv2d and linear in a 16-bit dtype on the device path inside the block (per thread,
    nests; `enabled=False` turns it off inside an outer autocast).

    Args:
        device_type: 'cuda' (the only device with 16-bit kernels).
        dtype: np.float16 / 'float16', or 'bfloat16'.
        enabled: False runs the block in full precision.
    """
    if device_type != "cuda":
        raise ValueError(f"autocast: device_type must be 'cuda' (fastconv's CPU kernels have no "
                         f"16-bit types), got {device_type!r}")
    if not isinstance(enabled, bool):
        raise TypeError(f"autocast: enabled must be a bool, got {enabled!r}")
    previous = getattr(_state, "dtype", None)
    _state.dtype = _resolve_dtype(dtype) if enabled else None
    try:
        yield
    finally:
        _state.dtype = previous


def autocast_dtype():
    """The dtype autocast runs conv2d / linear in on this thread, or None."""
    return getattr(_state, "dtype", None)


def _on_device(a) -> bool:
    from fastconv import _gpu
    module = type(a).__module__.split(".")[0]
    return module == "cupy" or (module == "numpy" and _gpu.emulating())


def cast_inputs(*tensors):
    """conv2d / linear arguments cast to the autocast dtype (recorded for Tensors) when autocast is
    on and they are float32 arrays on the device path; otherwise unchanged."""
    dtype = autocast_dtype()
    if dtype is None:
        return tensors
    from fastconv.autograd import Tensor
    out = []
    for t in tensors:
        a = t.data if isinstance(t, Tensor) else t
        if a is not None and a.dtype == np.float32 and _on_device(a):
            t = t.astype(dtype) if isinstance(t, Tensor) else a.astype(dtype)
        out.append(t)
    return tuple(out)


def float32_input(t):
    """A 16-bit input of softmax / log-softmax / a loss cast up to float32 under autocast."""
    if autocast_dtype() is None:
        return t
    from fastconv.autograd import Tensor
    a = t.data if isinstance(t, Tensor) else t
    if a is not None and getattr(a, "dtype", None) is not None and a.dtype.itemsize == 2 \
            and a.dtype.kind in "fV":
        return t.astype(np.float32) if isinstance(t, Tensor) else a.astype(np.float32)
    return t


class GradScaler:
    """Dynamic loss scaling for float16 training (torch.amp.GradScaler's rules).

    Args:
        init_scale: the first scale (2**16).
        growth_factor, backoff_factor: applied after `growth_interval` clean steps / on an
            overflow.
        growth_interval: clean steps between growths.
        enabled: False makes every method a pass-through.

    Example:
        >>> scaler = GradScaler()
        >>> scaler.get_scale()
        65536.0
    """

    def __init__(self, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000, enabled: bool = True):
        for name, v in (("init_scale", init_scale), ("growth_factor", growth_factor)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"GradScaler: {name} must be a positive finite number, got {v!r}")
        if growth_factor <= 1.0:
            raise ValueError(f"GradScaler: growth_factor must be > 1, got {growth_factor!r}")
        if not (isinstance(backoff_factor, (int, float)) and 0 < backoff_factor < 1):
            raise ValueError(f"GradScaler: backoff_factor must be in (0, 1), got {backoff_factor!r}")
        if isinstance(growth_interval, bool) or not isinstance(growth_interval, int) \
                or growth_interval < 1:
            raise ValueError(f"GradScaler: growth_interval must be a positive int, got "
                             f"{growth_interval!r}")
        self.scale_value = float(init_scale)
        self.growth_factor, self.backoff_factor = float(growth_factor), float(backoff_factor)
        self.growth_interval, self.enabled = growth_interval, bool(enabled)
        self._good_steps = 0
        self._found_inf: Optional[bool] = None
        self._unscaled = set()

    def get_scale(self) -> float:
        return self.scale_value if self.enabled else 1.0

    def scale(self, loss):
        """loss * scale (a Tensor stays recorded)."""
        return loss * self.scale_value if self.enabled else loss

    def _params(self, optimizer):
        return [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]

    def unscale_(self, optimizer) -> None:
        """Divide the gradients of optimizer's parameters by the scale, in place (once per step;
        call it before gradient clipping) and note whether any is inf or NaN."""
        if not self.enabled or id(optimizer) in self._unscaled:
            return
        inv = 1.0 / self.scale_value
        found = False
        for p in self._params(optimizer):
            g = p.grad
            g *= g.dtype.type(inv)
            found = found or not bool(_finite(g))
        self._found_inf = bool(self._found_inf) or found
        self._unscaled.add(id(optimizer))

    def step(self, optimizer):
        """Unscale (if not done yet) and run optimizer.step() unless a gradient overflowed.
        Returns the step's return value, or None when the step was skipped."""
        if not self.enabled:
            return optimizer.step()
        self.unscale_(optimizer)
        if self._found_inf:
            return None
        return optimizer.step()

    def update(self) -> None:
        """Back off after an overflow, grow after growth_interval clean steps."""
        if not self.enabled:
            return
        if self._found_inf:
            self.scale_value *= self.backoff_factor
            self._good_steps = 0
        else:
            self._good_steps += 1
            if self._good_steps >= self.growth_interval:
                self.scale_value *= self.growth_factor
                self._good_steps = 0
        self._found_inf = None
        self._unscaled.clear()

    def state_dict(self) -> dict:
        return {"scale": self.scale_value, "growth_factor": self.growth_factor,
                "backoff_factor": self.backoff_factor, "growth_interval": self.growth_interval,
                "_growth_tracker": self._good_steps}

    def load_state_dict(self, state: dict) -> None:
        self.scale_value = float(state["scale"])
        self.growth_factor = float(state["growth_factor"])
        self.backoff_factor = float(state["backoff_factor"])
        self.growth_interval = int(state["growth_interval"])
        self._good_steps = int(state["_growth_tracker"])


def _finite(g) -> bool:
    xp = np if isinstance(g, np.ndarray) else __import__("cupy")
    return bool(xp.isfinite(g).all())
