"""Facts about the machine a benchmark ran on (CPU model, fastconv's instruction-set path, threads,
GPU name and driver, library versions) and the ceilings measured in the same run that the reports
give percentages of: CPU float32 GEMM GFLOP/s and copy GB/s; GPU device-to-device copy GB/s.

A ceiling is what this machine reaches on the simplest kernel of its kind, measured here, not a
datasheet figure: "% of peak" in the reports is a share of it.
"""
from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import time
from typing import Optional

from fastconv.bench import harness


def cpu_facts(threads: int) -> dict:
    """CPU model, usable cores, fastconv's ISA path (active and best available), threads, and the
    versions of fastconv, numpy, torch (if importable) and Python."""
    import numpy as np

    import fastconv
    from fastconv import _C
    facts = dict(cpu=harness.cpu_model(), cores=harness.usable_cpus(), isa=_C.isa(),
                 best_isa=_C.best_isa(), threads=threads, fastconv_version=fastconv.__version__,
                 numpy_version=np.__version__, python_version=platform.python_version(),
                 platform=platform.platform())
    torch = sys.modules.get("torch")
    facts["torch_version"] = torch.__version__ if torch is not None else None
    return facts


def _nvidia_smi(field: str) -> Optional[str]:
    """One --query-gpu field of the first GPU from nvidia-smi (None when it is absent or fails)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, f"--query-gpu={field}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    line = out.stdout.strip().splitlines()
    return line[0].strip() if out.returncode == 0 and line else None


def gpu_facts(torch) -> dict:
    """Name, memory, SMs, L2 size, driver, CUDA runtime, cuDNN and CuPy versions of the current
    GPU (torch must see one)."""
    dev = torch.cuda.current_device()
    prop = torch.cuda.get_device_properties(dev)
    facts = dict(gpu=prop.name, gpu_memory_gib=round(prop.total_memory / 2**30, 1),
                 gpu_sms=prop.multi_processor_count,
                 gpu_l2_bytes=getattr(prop, "L2_cache_size", None),
                 gpu_capability=f"{prop.major}.{prop.minor}",
                 driver=_nvidia_smi("driver_version"), cuda_runtime=torch.version.cuda,
                 cudnn_version=torch.backends.cudnn.version())
    try:
        import cupy
        facts["cupy_version"] = cupy.__version__
    except ImportError:
        facts["cupy_version"] = None
    return facts


# ---- ceilings ---------------------------------------------------------------------------------


def cpu_ceilings(torch, quick: bool = False) -> dict:
    """Float32 GEMM GFLOP/s (torch.mm, torch's current thread count) and copy GB/s (numpy copy of
    a 256 MiB array, read + write counted), best of a few tries."""
    import numpy as np
    n = 1024 if quick else 2048
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(3 if quick else 5):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    gemm = 2.0 * n ** 3 / best / 1e9
    src = np.ones((64 if quick else 256) << 18, np.float32)  # 64 or 256 MiB
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return {"GFLOP/s": gemm, "GB/s": 2.0 * src.nbytes / best / 1e9}


def gpu_copy_gbps(torch, nbytes: int = 1 << 30) -> float:
    """Device-to-device copy GB/s (read + write counted), median of 10 CUDA-event-timed copies of
    nbytes."""
    src = torch.empty(nbytes // 4, device="cuda", dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3)
    times.sort()
    del src, dst
    return 2.0 * nbytes / times[len(times) // 2] / 1e9
