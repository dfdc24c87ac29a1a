"""Choosing a dense conv kernel's tile configuration by timing, once per problem (shape, dtype,
geometry, device), when fastconv.backends.cuda.benchmark is on; the heuristic inside the
kernels (tile -1) otherwise. See fastconv/backends.py."""
from __future__ import annotations

import threading
from typing import Callable, Dict, Hashable, Sequence

from fastconv import backends

# Tile configurations of csrc/cuda/conv2d_cuda.cu: 0, 1, 2 = SIMT 128x128, 64x64, 32x32 block
# tiles (every dtype); 3, 4 = tensor cores (WMMA) 64x64, 128x128 (float16 / bfloat16 only).
SIMT_TILES = (0, 1, 2)
WMMA_TILES = (3, 4)
_SIXTEEN_BIT = (1, 2)  # dtype codes of float16 and bfloat16 (cuda::DType)

_lock = threading.Lock()
_chosen: Dict[Hashable, int] = {}


def candidates(dtype_code: int) -> Sequence[int]:
    return WMMA_TILES + SIMT_TILES if dtype_code in _SIXTEEN_BIT else SIMT_TILES


def clear() -> None:
    with _lock:
        _chosen.clear()


def cached() -> Dict[Hashable, int]:
    """A copy of the choices made so far (problem key -> tile)."""
    with _lock:
        return dict(_chosen)


def choose(be, key: Hashable, dtype_code: int, launch: Callable[[int], None]) -> int:
    """The tile to launch with: -1 (the kernels' heuristic) when benchmarking is off; else the
    fastest configuration for this problem, timed now if it is new. `launch(tile)` runs the
    kernel once into scratch outputs; a configuration the kernels refuse for this problem
    (ValueError) is skipped."""
    if not backends.cuda.benchmark:
        return -1
    full = (be.name, be.device_key(), key)
    with _lock:
        if full in _chosen:
            return _chosen[full]
    times = {}
    for tile in candidates(dtype_code):
        try:
            launch(tile)                        # warm-up (and validity)
        except ValueError:
            continue
        times[tile] = be.time(lambda: launch(tile))
    best = min(times, key=times.get) if times else -1
    with _lock:
        _chosen[full] = best
    return best
