"""The CPU kernels behind training-mode BatchNorm (batch_norm_stats / _forward / _backward_reduce /
_backward_input) and the ReLU / ReLU6 gradient (clamp_backward), against float64 numpy under
every kernel variant: odd sizes and vector tails, L = 1 (2-D input), N = 1, several parallel
chunks, a mean far from zero beside a small spread, poisoned outputs, results identical for every
thread count, and clear errors. Then the BatchNorm layer on the kernels against its array-code
path and float64, forward, gradients and running statistics."""
import numpy as np
import pytest

import fastconv
import fastconv.nn.functional as F
from fastconv import _C
from fastconv.nn import _functions as FN
from fastconv.testing import assert_close
from helpers import DTYPES, poisoned, randn

SHAPES = {
    "nchw": (2, 3, 5, 7),
    "odd_tail": (3, 5, 67),          # rows of 67: eight accumulators, a tail of 3
    "L1_2d": (16, 6),
    "N1": (1, 4, 9, 9),
    "below_vector": (4, 2, 3),
    "several_chunks": (4, 8, 4100),  # 32 rows of 4100: chunks of 8 rows over the threads
}


def _stats64(x):
    x3 = x.astype(np.float64).reshape(x.shape[0], x.shape[1], -1)
    mean = x3.mean(axis=(0, 2))
    return mean, ((x3 - mean[:, None]) ** 2).mean(axis=(0, 2))


def _bshape(x):
    return (1, -1) + (1,) * (x.ndim - 2)


def _stats(x):
    mean, var = poisoned(x.shape[1], np.float64), poisoned(x.shape[1], np.float64)
    _C.batch_norm_stats(x, mean, var)
    return mean, var


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_kernels_vs_float64(isa, rng, shape, dtype):
    x = randn(rng, shape, dtype) * 2 + 0.5
    g = randn(rng, shape, dtype)
    C, bs = shape[1], _bshape(x)
    mean, var = _stats(x)
    m64, v64 = _stats64(x)
    # float64 sums of the exact inputs: only the summation's own rounding
    assert_close(mean, m64, np.float64, rtol=1e-12, atol=1e-12)
    assert_close(var, v64, np.float64, rtol=1e-12, atol=1e-12)

    mean_t, scale, shift = m64.astype(dtype), randn(rng, C, dtype), randn(rng, C, dtype)
    y = poisoned(shape, dtype)
    _C.batch_norm_forward(x, mean_t, scale, shift, y)
    ref = ((x.astype(np.float64) - mean_t.reshape(bs)) * scale.reshape(bs)
           + shift.reshape(bs))
    assert_close(y, ref, dtype)

    sum_g, sum_gxc = poisoned(C, np.float64), poisoned(C, np.float64)
    _C.batch_norm_backward_reduce(g, x, m64, sum_g, sum_gxc)
    g64, xc64 = g.astype(np.float64), x.astype(np.float64) - m64.reshape(bs)
    axes = tuple(i for i in range(x.ndim) if i != 1)
    assert_close(sum_g, g64.sum(axis=axes), np.float64, rtol=1e-12, atol=1e-10)
    assert_close(sum_gxc, (g64 * xc64).sum(axis=axes), np.float64, rtol=1e-12, atol=1e-10)

    a, b, e = (randn(rng, C, dtype) for _ in range(3))
    dx = poisoned(shape, dtype)
    _C.batch_norm_backward_input(g, x, mean_t, a, b, e, dx)
    ref = (g64 * a.reshape(bs) + (x.astype(np.float64) - mean_t.reshape(bs)) * b.reshape(bs)
           + e.reshape(bs))
    assert_close(dx, ref, dtype)


def test_variance_beside_a_large_mean(rng):
    """Two passes per row: the variance of 1e4 + N(0, 1) in float32 stays exact to float64
    rounding of the float32 inputs (a one-pass sum of squares would lose about 8 digits)."""
    x = (1e4 + rng.standard_normal((8, 3, 31, 29))).astype(np.float32)
    mean, var = _stats(x)
    m64, v64 = _stats64(x)
    assert_close(var, v64, np.float64, rtol=1e-9, atol=0)
    assert_close(mean, m64, np.float64, rtol=1e-12, atol=0)


def test_same_bits_for_every_thread_count(rng):
    x = randn(rng, (6, 5, 3000), np.float32)
    g = randn(rng, x.shape, np.float32)
    m = x.astype(np.float64).mean(axis=(0, 2))
    before = fastconv.num_threads()
    results = []
    try:
        for t in (1, 2, 3, 5):
            fastconv.set_num_threads(t)
            mean, var = _stats(x)
            sg, sgx = np.empty(5), np.empty(5)
            _C.batch_norm_backward_reduce(g, x, m, sg, sgx)
            results.append(np.concatenate([mean, var, sg, sgx]))
    finally:
        fastconv.set_num_threads(before)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_kernel_errors():
    x = np.zeros((2, 3, 4), np.float32)
    c64, c32 = np.zeros(3), np.zeros(3, np.float32)
    with pytest.raises(TypeError, match="batch_norm_stats: mean must be float64"):
        _C.batch_norm_stats(x, c32, np.zeros(3))
    with pytest.raises(ValueError, match=r"batch_norm_stats: var must have shape \(3,\)"):
        _C.batch_norm_stats(x, c64, np.zeros(4))
    with pytest.raises(ValueError, match="at least 2-D"):
        _C.batch_norm_stats(np.zeros(3, np.float32), c64, np.zeros(3))
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.batch_norm_stats(np.zeros((3, 2, 4), np.float32).transpose(1, 0, 2), c64, np.zeros(3))
    with pytest.raises(ValueError, match="at least one value per channel"):
        _C.batch_norm_stats(np.zeros((0, 3, 4), np.float32), c64, np.zeros(3))
    with pytest.raises(ValueError, match="overlaps"):
        _C.batch_norm_stats(x, c64, c64)
    with pytest.raises(TypeError, match="batch_norm_forward: scale has dtype float64"):
        _C.batch_norm_forward(x, c32, c64, c32, np.empty_like(x))
    with pytest.raises(ValueError, match="batch_norm_forward: out must have shape"):
        _C.batch_norm_forward(x, c32, c32, c32, np.empty((2, 3, 5), np.float32))
    with pytest.raises(ValueError, match="out overlaps x"):
        _C.batch_norm_forward(x, c32, c32, c32, x)
    with pytest.raises(ValueError, match="grad_output must have shape"):
        _C.batch_norm_backward_reduce(np.zeros((2, 3, 5), np.float32), x, c64, np.zeros(3),
                                      np.zeros(3))
    with pytest.raises(ValueError, match="out overlaps grad_output"):
        g = np.zeros_like(x)
        _C.batch_norm_backward_input(g, x, c32, c32, c32, c32, g)


# ---- clamp_backward: the ReLU / ReLU6 gradient from the output ---------------------------------

BOUNDS = {"relu": (0.0, None), "relu6": (0.0, 6.0), "none": (None, None), "hi_only": (None, 1.5)}


@pytest.mark.parametrize("bounds", BOUNDS.values(), ids=BOUNDS.keys())
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(3, 7, 5), (70001,), (2, 1)], ids=str)
def test_clamp_backward(isa, rng, shape, dtype, bounds):
    lo, hi = bounds
    y = (randn(rng, shape, dtype) * 4).astype(dtype)
    y.flat[::7] = 0
    y.flat[3::11] = 6
    y.flat[5::13] = np.nan
    if lo is not None:
        y = np.where(y < lo, dtype(lo), y)
    g = randn(rng, shape, dtype)
    dx = poisoned(shape, dtype)
    _C.clamp_backward(g, y, dx, lo, hi)
    inside = np.ones(shape, bool)
    with np.errstate(invalid="ignore"):
        if lo is not None:
            inside &= y > lo
        if hi is not None:
            inside &= y < hi
    np.testing.assert_array_equal(dx, np.where(inside, g, 0))


def test_clamp_backward_errors():
    y = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="grad_input must have shape"):
        _C.clamp_backward(y.copy(), y, np.zeros((3, 2), np.float32), 0.0, None)
    with pytest.raises(TypeError, match="grad_output has dtype float64"):
        _C.clamp_backward(y.astype(np.float64), y, np.zeros_like(y), 0.0, None)
    with pytest.raises(ValueError, match="lo must not exceed hi"):
        _C.clamp_backward(y.copy(), y, np.zeros_like(y), 1.0, 0.0)
    with pytest.raises(ValueError, match="grad_input overlaps out"):
        _C.clamp_backward(y.copy(), y, y, 0.0, None)


# ---- the BatchNorm layer on the kernels ----------------------------------------------------------

def _bn_step(x, w, b, kernels, g):
    """Training-mode batch_norm forward and backward: y, dx, dw, db, running mean and var."""
    saved = FN._bn_kernel_ok
    if not kernels:
        FN._bn_kernel_ok = lambda a: False
    try:
        xt, wt, bt = (fastconv.tensor(a, requires_grad=True) for a in (x, w, b))
        rm, rv = np.zeros(x.shape[1], x.dtype), np.ones(x.shape[1], x.dtype)
        y = F.batch_norm(xt, rm, rv, wt, bt, training=True, momentum=0.1, eps=1e-5)
        (y * fastconv.tensor(g)).sum().backward()
        return y.data, xt.grad, wt.grad, bt.grad, rm, rv
    finally:
        FN._bn_kernel_ok = saved


@pytest.mark.parametrize("shape,offset", [((4, 8, 5, 7), 0.0), ((3, 5, 33), 0.0), ((16, 3), 0.0),
                                          ((2, 6, 9, 9), 100.0)], ids=str)
def test_batch_norm_layer_on_kernels(rng, shape, offset):
    """float32 on the kernels against float64 on the array-code path (the reference here)."""
    x = (randn(rng, shape) * 2 + offset).astype(np.float32)
    C = shape[1]
    w, b, g = randn(rng, C, np.float32), randn(rng, C, np.float32), randn(rng, shape, np.float32)
    got = _bn_step(x, w, b, True, g)
    want = _bn_step(*(a.astype(np.float64) for a in (x, w, b)), False, g.astype(np.float64))
    names = ("y", "grad_input", "grad_weight", "grad_bias", "running_mean", "running_var")
    for a, e, name in zip(got, want, names):
        assert a.dtype == np.float32, name
        scale = max(float(np.abs(e).max()), 1.0)
        assert_close(a, e, np.float32, atol=1e-5 * scale, name=name)


def test_batch_norm_layer_float64_paths_agree(rng):
    x, g = randn(rng, (5, 4, 6, 3)), randn(rng, (5, 4, 6, 3))
    w, b = randn(rng, 4), randn(rng, 4)
    for a, e in zip(_bn_step(x, w, b, True, g), _bn_step(x, w, b, False, g)):
        assert_close(a, e, np.float64, rtol=1e-10, atol=1e-12)


def test_relu_gradients_on_the_kernel(rng):
    x = randn(rng, (3, 4, 5, 6), np.float32) * 4
    x.flat[::9] = 0
    x.flat[1::10] = 6
    g = randn(rng, x.shape, np.float32)
    for fn, inside in ((F.relu, x > 0), (F.relu6, (x > 0) & (x < 6))):
        xt = fastconv.tensor(x, requires_grad=True)
        (fn(xt) * fastconv.tensor(g)).sum().backward()
        np.testing.assert_array_equal(xt.grad, np.where(inside, g, 0))
