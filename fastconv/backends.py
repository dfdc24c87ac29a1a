"""Switches of fastconv's kernel back ends, read at every call (as torch.backends.cudnn's):

    import fastconv
    fastconv.backends.cuda.benchmark = True     # time the dense conv tile configurations once
                                                # per shape and keep the fastest (like
                                                # torch.backends.cudnn.benchmark)

`cuda.benchmark` (default False): on the first dense or grouped convolution (forward, input or
weight gradient) of each shape, dtype and device, every tile configuration the CUDA kernels have
for it is run and timed once (CUDA events on the current stream; this first call synchronises),
and the fastest is used from then on; fastconv.backends.cuda.clear_cache() forgets the choices.
Off, a heuristic picks the configuration without timing anything. Results differ between
configurations only by float rounding (their summation orders differ); each configuration alone
is deterministic.
"""
from __future__ import annotations

__all__ = ["cuda"]


class _Cuda:
    """fastconv.backends.cuda: `benchmark` (bool) and `clear_cache()`."""

    def __init__(self):
        self._benchmark = False

    @property
    def benchmark(self) -> bool:
        return self._benchmark

    @benchmark.setter
    def benchmark(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"fastconv.backends.cuda.benchmark must be a bool, got {value!r}")
        self._benchmark = value

    def clear_cache(self) -> None:
        """Forget the tile configurations chosen by timing."""
        from fastconv._gpu import autotune
        autotune.clear()

    def __repr__(self) -> str:
        return f"fastconv.backends.cuda(benchmark={self._benchmark})"


cuda = _Cuda()
