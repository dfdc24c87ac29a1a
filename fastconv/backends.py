"""Switches of fastconv's kernel back ends, read at every call (as torch.backends.cudnn's):

    import fastconv
    fastconv.backends.cuda.benchmark = True     # time the dense conv tile configurations once
                                                # per shape and keep the fastest (like
                                                # torch.backends.cudnn.benchmark)
    fastconv.backends.cuda.allow_tf32 = False   # float32 dense conv on exact float32 arithmetic
                                                # only (like torch.backends.cudnn.allow_tf32)

`cuda.benchmark` (default False): on the first dense or grouped convolution (forward, input or
weight gradient) of each shape, dtype and device, every tile configuration the CUDA kernels have
for it is run and timed once (CUDA events on the current stream; this first call synchronises),
and the fastest is used from then on; fastconv.backends.cuda.clear_cache() forgets the choices.
Off, a heuristic picks the configuration without timing anything. Results differ between
configurations only by float rounding (their summation orders differ); each configuration alone
is deterministic.

`cuda.allow_tf32` (default True, as torch.backends.cudnn.allow_tf32, so that float32 convolutions
compare like with like against torch's): float32 dense and grouped convolutions (forward, input
and weight gradient) may run on TF32 tensor cores (GPUs of compute capability 8.0 and newer): each
input element is rounded to TF32 (10 explicit mantissa bits, round to nearest, ties away from
zero) and the products are summed in float32, so each result may err by about 2 * 2^-11 of the
sum of its products' magnitudes, where exact float32 gives n * 2^-24 (n products). The heuristic
takes TF32 for GEMMs of at least 16 x 16 (a guess: the TF32 tiles have not been timed on a GPU
yet; with `benchmark` on, the TF32 and float32 tiles are timed against each other and the faster
kept). False keeps float32 on the exact SIMT tiles, bit for bit as before the switch existed.
Other dtypes ignore it; the choices `benchmark` caches are kept per setting.

    fastconv.backends.cpu.small_op_us = 50.0    # the CPU kernels' small-op threshold

`cpu.small_op_us` (default 50, or the FASTCONV_SMALL_OP_US environment variable): a CPU op whose
estimated single-thread time W (from its shape) is below it runs on the calling thread plus the
pool workers still awake from the previous op, instead of waking sleeping ones (a wake costs
tens of microseconds); and every op plans for at most max(1, W / (small_op_us / 5)) threads.
The plan, and so the result, depends only on the shape and fastconv.num_threads(), never on
timing. 0 turns both rules off (every op uses fastconv.num_threads() threads).

    fastconv.backends.cpu.thread_pool = "auto"  # where the CPU kernels' threads come from

`cpu.thread_pool` (default "auto", or the FASTCONV_THREAD_POOL environment variable): "auto" runs
the CPU kernels' parallel loops started on the main thread on the OpenMP threads of a library
already loaded in the process
(PyTorch's libgomp, once torch is imported) when those threads busy-wait between calls
(OMP_WAIT_POLICY unset or ACTIVE, libgomp's default), and on fastconv's own pool otherwise.
PyTorch's idle OpenMP threads spin for milliseconds after each torch op; on fastconv's own pool
they competed with fastconv's threads for the cores, while on the same OpenMP threads the spinning
ones simply take fastconv's work. "fastconv" always uses fastconv's own pool; "openmp" uses a
loaded OpenMP runtime whatever its wait policy (fastconv's pool while none is loaded). The work
is cut into the same chunks either way, so results are the same bit for bit. Other threads (a
data loader's) always use fastconv's own pool.
`cpu.thread_pool_in_use` says which: the OpenMP library's path, or "fastconv".
"""
from __future__ import annotations

__all__ = ["cpu", "cuda"]


class _Cuda:
    """fastconv.backends.cuda: `benchmark` (bool), `allow_tf32` (bool) and `clear_cache()`."""

    def __init__(self):
        self._benchmark = False
        self._allow_tf32 = True

    @property
    def benchmark(self) -> bool:
        return self._benchmark

    @benchmark.setter
    def benchmark(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"fastconv.backends.cuda.benchmark must be a bool, got {value!r}")
        self._benchmark = value

    @property
    def allow_tf32(self) -> bool:
        return self._allow_tf32

    @allow_tf32.setter
    def allow_tf32(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"fastconv.backends.cuda.allow_tf32 must be a bool, got {value!r}")
        self._allow_tf32 = value

    def clear_cache(self) -> None:
        """Forget the tile configurations chosen by timing."""
        from fastconv._gpu import autotune
        autotune.clear()

    def __repr__(self) -> str:
        return (f"fastconv.backends.cuda(benchmark={self._benchmark}, "
                f"allow_tf32={self._allow_tf32})")


cuda = _Cuda()


class _Cpu:
    """fastconv.backends.cpu: `small_op_us` (float, microseconds; 0 = off), `thread_pool` ("auto",
    "fastconv" or "openmp") and `thread_pool_in_use` (read only)."""

    @property
    def small_op_us(self) -> float:
        from fastconv._backend import _C
        return _C.small_op_ns() / 1000.0

    @small_op_us.setter
    def small_op_us(self, value: float) -> None:
        from fastconv._backend import _C
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 \
                or value > 1e9:
            raise ValueError("fastconv.backends.cpu.small_op_us must be a number of microseconds "
                             f"in [0, 1e9], got {value!r}")
        _C.set_small_op_ns(int(round(value * 1000)))

    _POOLS = ("auto", "fastconv", "openmp")

    @property
    def thread_pool(self) -> str:
        from fastconv._backend import _C
        return _C.thread_pool()

    @thread_pool.setter
    def thread_pool(self, value: str) -> None:
        from fastconv._backend import _C
        if value not in self._POOLS:
            raise ValueError("fastconv.backends.cpu.thread_pool must be one of "
                             f"{', '.join(map(repr, self._POOLS))}, got {value!r}")
        _C.set_thread_pool(value)

    @property
    def thread_pool_in_use(self) -> str:
        """Where a parallel loop started now runs: the path of the OpenMP library, or "fastconv"."""
        from fastconv._backend import _C
        return _C.thread_pool_in_use() or "fastconv"

    def __repr__(self) -> str:
        return (f"fastconv.backends.cpu(small_op_us={self.small_op_us:g}, "
                f"thread_pool={self.thread_pool!r})")


cpu = _Cpu()
