"""fastconv._C.add / copy (csrc/cpu/elementwise_cpu.h), which the autograd uses for large numpy
arrays (gradient sums, leaf gradients, Tensor + Tensor): numpy's bits under every kernel variant
and thread count, poisoned outputs, in place, errors; and the autograd paths through them."""
import numpy as np
import pytest

import fastconv
from fastconv import _C
from fastconv import autograd
from helpers import DTYPES, poisoned


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(3, 70001), (5,), (2, 0)], ids=str)
def test_add_and_copy_match_numpy(isa, rng, shape, dtype, threads):
    a = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(shape).astype(dtype)
    if a.size:
        a.flat[::97] = np.nan
        b.flat[1::89] = -np.inf
        a.flat[2::83] = -0.0
    before = fastconv.num_threads()
    try:
        fastconv.set_num_threads(threads)
        out = poisoned(shape, dtype)
        _C.add(a, b, out)
        np.testing.assert_array_equal(out, a + b)
        assert np.array_equal(np.signbit(out), np.signbit(a + b))
        c = poisoned(shape, dtype)
        _C.copy(a, c)
        assert c.tobytes() == a.tobytes()
        in_place = a.copy()
        _C.add(in_place, b, in_place)
        np.testing.assert_array_equal(in_place, a + b)
    finally:
        fastconv.set_num_threads(before)


def test_errors():
    a = np.zeros((4, 5), np.float32)
    with pytest.raises(ValueError, match=r"add: b must have shape \(4, 5\)"):
        _C.add(a, np.zeros((5, 4), np.float32), np.zeros_like(a))
    with pytest.raises(TypeError, match="add: a has dtype float64"):
        _C.add(a.astype(np.float64), a, np.zeros_like(a))
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.add(a, np.zeros((5, 4), np.float32).T, np.zeros_like(a))
    with pytest.raises(ValueError, match="out overlaps a"):
        big = np.zeros(40, np.float32)
        _C.add(big[:20].reshape(4, 5), a, big[5:25].reshape(4, 5))
    with pytest.raises(ValueError, match="copy: out is src"):
        _C.copy(a, a)


def test_autograd_sums_and_copies_on_the_threads(rng, monkeypatch):
    """Large gradients take the threaded helpers (counted), small ones numpy; results equal."""
    calls = {"add": 0, "copy": 0}
    for name in calls:
        real = getattr(_C, name)

        def counted(*args, _real=real, _name=name):
            calls[_name] += 1
            return _real(*args)
        monkeypatch.setattr(_C, name, counted)
    n = autograd._THREADED_MIN_BYTES // 4 + 3
    x = rng.standard_normal(n).astype(np.float32)
    w = rng.standard_normal(n).astype(np.float32)
    xt, wt = fastconv.tensor(x, requires_grad=True), fastconv.tensor(w, requires_grad=True)
    g = rng.standard_normal(n).astype(np.float32)
    y = xt * wt + xt            # x feeds two ops: its gradient is a sum
    y.backward(g)
    np.testing.assert_array_equal(xt.grad, g * w + g)
    np.testing.assert_array_equal(wt.grad, g * x)
    assert calls["add"] >= 2 and calls["copy"] >= 1    # forward add, gradient sum; leaf copy
    assert not np.shares_memory(xt.grad, wt.grad)
    small = fastconv.tensor(np.ones(3, np.float32), requires_grad=True)
    before = dict(calls)
    (small + small).sum().backward()
    assert calls == before and small.grad.tolist() == [2, 2, 2]
