"""fastconv.backends.cuda.benchmark: the dense conv kernels' tile configuration chosen by timing
each once per problem (here on the emulated kernels, timed by the host clock), cached, and the
results those configurations give equal to the heuristic's within float rounding."""
import numpy as np
import pytest

import fastconv
import fastconv.nn.functional as F
import fastconv.nn.grad as G
from fastconv import _gpu
from fastconv._gpu import autotune
from fastconv.testing import assert_close, cuda_emulation
from helpers import randn


class CountingModule:
    """Wraps the extension module, counting the calls of each function."""

    def __init__(self, mod):
        self._mod, self.calls = mod, {}

    def __getattr__(self, name):
        fn = getattr(self._mod, name)

        def counted(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            return fn(*args, **kwargs)
        return counted


@pytest.fixture
def benchmark_on():
    fastconv.backends.cuda.clear_cache()
    fastconv.backends.cuda.benchmark = True
    yield
    fastconv.backends.cuda.benchmark = False
    fastconv.backends.cuda.clear_cache()


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_each_problem_is_timed_once_and_the_choice_is_cached(rng, benchmark_on, dtype):
    x, w = randn(rng, (2, 6, 9, 8), dtype), randn(rng, (10, 3, 3, 3), dtype)
    kw = dict(stride=1, padding=1, groups=2)
    with cuda_emulation():
        be = _gpu.emulation_backend()
        be.mod = counting = CountingModule(be.mod)
        y1 = F.conv2d(x, w, **kw)
        n = len(autotune.candidates(1 if dtype == np.float16 else 0))
        assert counting.calls["conv2d_forward"] == 2 * n + 1     # warm-up + timed each, then run
        y2 = F.conv2d(x, w, **kw)
        assert counting.calls["conv2d_forward"] == 2 * n + 2     # cached: one launch
        g = randn(rng, y1.shape, dtype)
        dx = G.conv2d_input(x.shape, w, g, **kw)
        dw = G.conv2d_weight(x, w.shape, g, **kw)
    np.testing.assert_array_equal(y1, y2)
    assert len(autotune.cached()) == 3                            # fwd, dgrad, wgrad
    assert all(t in autotune.candidates(1 if dtype == np.float16 else 0)
               for t in autotune.cached().values())
    fastconv.backends.cuda.benchmark = False
    with cuda_emulation():                                          # the heuristic's results
        y0 = F.conv2d(x, w, **kw)
        dx0 = G.conv2d_input(x.shape, w, g, **kw)
        dw0 = G.conv2d_weight(x, w.shape, g, **kw)
    tol = dict(rtol=2e-3, atol=2e-2) if dtype == np.float16 else dict(dtype=np.float32)
    for a, b, name in ((y1, y0, "fwd"), (dx, dx0, "dgrad"), (dw, dw0, "wgrad")):
        assert_close(a.astype(np.float32), b.astype(np.float32), name=name, **tol)


def test_off_by_default_and_clear_cache(rng):
    assert fastconv.backends.cuda.benchmark is False
    x, w = randn(rng, (1, 4, 6, 6), np.float32), randn(rng, (4, 4, 3, 3), np.float32)
    with cuda_emulation():
        F.conv2d(x, w)
    assert autotune.cached() == {}
    with pytest.raises(TypeError, match="fastconv.backends.cuda.benchmark must be a bool"):
        fastconv.backends.cuda.benchmark = 1
