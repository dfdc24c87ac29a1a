"""Choosing a dense conv kernel's tile configuration by timing, once per problem (shape, dtype,
geometry, device, TF32 switch), when fastconv.backends.cuda.benchmark is on; the heuristic inside
the kernels otherwise (tile -2 where fastconv.backends.cuda.allow_tf32 lets float32 use TF32
tensor cores, else -1). See fastconv/backends.py."""
from __future__ import annotations

import threading
from typing import Callable, Dict, Hashable, Sequence

from fastconv import backends

# Tile configurations of csrc/cuda/conv2d_cuda.cu: 0, 1, 2 = SIMT 128x128, 64x64, 32x32 block
# tiles (every dtype); 3, 4 = tensor cores (WMMA) 64x64, 128x128 (float16 / bfloat16, and float32
# through TF32); -1, -2 = the kernels' heuristic without / with TF32 for float32.
SIMT_TILES = (0, 1, 2)
WMMA_TILES = (3, 4)
HEURISTIC, HEURISTIC_TF32 = -1, -2
_FLOAT32 = 0           # dtype code of float32 (cuda::DType)
_SIXTEEN_BIT = (1, 2)  # dtype codes of float16 and bfloat16

_lock = threading.Lock()
_chosen: Dict[Hashable, int] = {}


def candidates(dtype_code: int, allow_tf32: bool = False) -> Sequence[int]:
    """The configurations timed for a dtype: tensor cores for the 16-bit types, and for float32
    when TF32 is allowed; the SIMT tiles always."""
    if dtype_code in _SIXTEEN_BIT or (dtype_code == _FLOAT32 and allow_tf32):
        return WMMA_TILES + SIMT_TILES
    return SIMT_TILES


def heuristic() -> int:
    """The tile argument that asks the kernels' heuristic, under the current TF32 switch."""
    return HEURISTIC_TF32 if backends.cuda.allow_tf32 else HEURISTIC


def clear() -> None:
    with _lock:
        _chosen.clear()


def cached() -> Dict[Hashable, int]:
    """A copy of the choices made so far (problem key -> tile)."""
    with _lock:
        return dict(_chosen)


def choose(be, key: Hashable, dtype_code: int, launch: Callable[[int], None]) -> int:
    """The tile to launch with: the kernels' heuristic (heuristic()) when benchmarking is off;
    else the fastest configuration for this problem and TF32 setting, timed now if it is new.
    `launch(tile)` runs the kernel once into scratch outputs; a configuration the kernels refuse
    for this problem (ValueError, e.g. TF32 on a GPU older than sm_80) is skipped."""
    if not backends.cuda.benchmark:
        return heuristic()
    tf32 = backends.cuda.allow_tf32
    full = (be.name, be.device_key(), tf32, key)
    with _lock:
        if full in _chosen:
            return _chosen[full]
    times = {}
    for tile in candidates(dtype_code, tf32):
        try:
            launch(tile)                        # warm-up (and validity)
        except ValueError:
            continue
        times[tile] = be.time(lambda: launch(tile))
    best = min(times, key=times.get) if times else heuristic()
    with _lock:
        _chosen[full] = best
    return best
