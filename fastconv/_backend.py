"""Backend selection: which extension module serves an array (numpy -> fastconv._C,
cupy -> fastconv._cuda), and whether CUDA is usable at all."""
from __future__ import annotations

import os
from importlib.machinery import EXTENSION_SUFFIXES

try:
    from fastconv import _C
except ImportError as e:  # no _C beside this file: Python found the source tree, not a build
    _here = os.path.dirname(os.path.abspath(__file__))
    if any(os.path.exists(os.path.join(_here, "_C" + suffix)) for suffix in EXTENSION_SUFFIXES):
        raise                       # the extension is there but does not load: keep its error
    raise ImportError(
        f"fastconv's compiled extension (fastconv._C) is missing: Python is importing the "
        f"fastconv source tree at {_here}, which has no build (this happens when Python runs "
        f"from the repository root, whose fastconv/ folder shadows the installed package). "
        f"Run Python from another directory after `pip install .`, or, to work on the source, "
        f"build it with `tools/dev_build.sh NAME` and use PYTHONPATH=build/dev-NAME/site.") from e

try:  # the CUDA extension is optional: absent in CPU-only builds
    from fastconv import _cuda
except ImportError:  # pragma: no cover - depends on the build
    _cuda = None


def cuda_available() -> bool:
    """True when fastconv was built with CUDA support and a CUDA GPU is visible."""
    return _cuda is not None and _cuda.device_count() > 0


def num_threads() -> int:
    """Number of threads the CPU kernels use (the caller's thread included)."""
    return _C.num_threads()


def set_num_threads(n: int) -> None:
    """Set the number of threads the CPU kernels use (default: the CPUs this process may use,
    or the FASTCONV_NUM_THREADS environment variable)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int, got {n!r}")
    _C.set_num_threads(n)
