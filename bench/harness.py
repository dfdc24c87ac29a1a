"""The benchmark harness now lives in the package (fastconv/bench/harness.py, shipped with the
wheel); this module re-exports it for the scripts beside it (run_models.py, run_torch_step.py),
which `import harness`. HERE stays this directory, so their default results folder is still
bench/results/."""
import os

from fastconv.bench.harness import *  # noqa: F401,F403
from fastconv.bench.harness import SUITE  # noqa: F401  (explicit: the suite inside the package)

HERE = os.path.dirname(os.path.abspath(__file__))

passive_omp_wait()  # the scripts import this module before torch
