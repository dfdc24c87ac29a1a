"""Shared fixtures: every kernel variant (ISA) this CPU supports, fresh random generators (seed
printed on failure, fixed with FASTCONV_TEST_SEED), torch when installed, and the hypothesis
profile (no deadline: the references are slow; a modest example count for CI's budget)."""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from fastconv.testing import supported_isas, use_isa

settings.register_profile("fastconv", deadline=None, max_examples=40, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture])
settings.register_profile("thorough", parent=settings.get_profile("fastconv"), max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fastconv"))

ISAS = supported_isas()


@pytest.fixture(autouse=True, scope="session")
def _no_small_op_rules():
    """The small-op rules (fastconv.backends.cpu.small_op_us) would run the suite's small inputs on
    one thread; off, every thread count a test sets reaches its work splits. tests/test_small_ops.py
    turns them on where it tests them."""
    import fastconv
    fastconv.backends.cpu.small_op_us = 0
    yield


@pytest.fixture(params=ISAS)
def isa(request):
    """Runs the test once per instruction set of fastconv._C, restoring the default afterwards."""
    with use_isa(request.param):
        yield request.param


@pytest.fixture
def rng(request):
    """A numpy Generator with a fresh seed per test (printed, so a failure can be replayed with
    FASTCONV_TEST_SEED=<seed>)."""
    seed = int(os.environ.get("FASTCONV_TEST_SEED", np.random.SeedSequence().entropy % 2**63))
    print(f"rng seed: FASTCONV_TEST_SEED={seed}")
    request.node.user_properties.append(("seed", seed))
    return np.random.default_rng(seed)


@pytest.fixture(autouse=True)
def exact_float32_conv():
    """fastconv.backends.cuda.allow_tf32 off in every test (torch's own suite turns TF32 off the
    same way): float32 results are held to float32's tolerances. test_conv2d_cuda_tf32.py turns it
    on where it tests TF32."""
    import fastconv
    old = fastconv.backends.cuda.allow_tf32
    fastconv.backends.cuda.allow_tf32 = False
    yield
    fastconv.backends.cuda.allow_tf32 = old


@pytest.fixture(scope="session")
def torch():
    """The torch module (float64 default unchanged), or skip the test when torch is not installed."""
    return pytest.importorskip("torch")


def pytest_configure(config):
    # torch's own note on even 'same' kernels is not about fastconv
    config.addinivalue_line("filterwarnings", "ignore:Using padding='same' with even kernel")
