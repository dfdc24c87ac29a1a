"""The optimizer steps on fastconv._C (sgd_step, adam_step) give the same bits as the optimizers'
array code, for every option combination, float32 and float64, under every kernel variant and
thread count, over several steps (the momentum buffer created by the kernel on the first); odd
arrays (non-contiguous gradients, state shared with the gradient) fall back to the array code;
bad arrays get clear errors."""
import itertools

import numpy as np
import pytest

import fastconv
from fastconv import _C, optim
from fastconv.nn import Parameter
from fastconv.optim import adam as adam_mod
from fastconv.optim import sgd as sgd_mod
from helpers import DTYPES

SGD_OPTIONS = [dict(momentum=m, dampening=d, weight_decay=wd, nesterov=n, maximize=mx)
               for m, d, wd, n, mx in itertools.product((0.0, 0.9), (0.0, 0.3), (0.0, 1e-2),
                                                       (False, True), (False, True))
               if not (n and (m == 0 or d != 0))]
ADAM_OPTIONS = [dict(weight_decay=wd, amsgrad=a, maximize=mx, betas=b)
                for wd, a, mx, b in itertools.product((0.0, 1e-2), (False, True), (False, True),
                                                      ((0.9, 0.999), (0.3, 0.9)))]


def _run(make, dtype, rng_seed, kernels, threads, steps=4):
    rng = np.random.default_rng(rng_seed)
    shapes = [(70001,), (3, 5, 7), (1,)]   # several parallel chunks, a vector tail, one element
    params = [Parameter(rng.standard_normal(s).astype(dtype)) for s in shapes]
    opt = make(params)
    modules = (sgd_mod, adam_mod)
    saved = [m.on_cpu_kernels for m in modules]
    before = fastconv.num_threads()
    try:
        fastconv.set_num_threads(threads)
        if not kernels:
            for m in modules:
                m.on_cpu_kernels = lambda *a: False
        for _ in range(steps):
            for p in params:
                p.grad = rng.standard_normal(p.shape).astype(dtype)
            opt.step()
    finally:
        fastconv.set_num_threads(before)
        for m, f in zip(modules, saved):
            m.on_cpu_kernels = f
    state = [np.concatenate([np.ravel(v) for k, v in sorted(opt.state[p].items())
                             if isinstance(v, np.ndarray)] or [np.zeros(0)]) for p in params]
    return [p.data for p in params], state


def _same(a, b):
    for x, y in zip(a[0] + a[1], b[0] + b[1]):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("options", SGD_OPTIONS, ids=str)
def test_sgd_step_same_bits(isa, dtype, options):
    make = lambda ps: optim.SGD(ps, lr=0.05, **options)  # noqa: E731
    _same(_run(make, dtype, 7, True, 2), _run(make, dtype, 7, False, 1))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("options", ADAM_OPTIONS, ids=str)
@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
def test_adam_step_same_bits(isa, dtype, options, cls):
    make = lambda ps: getattr(optim, cls)(ps, lr=0.01, **options)  # noqa: E731
    _same(_run(make, dtype, 3, True, 3), _run(make, dtype, 3, False, 1))


def test_odd_arrays_fall_back(rng):
    p = Parameter(rng.standard_normal((4, 6)).astype(np.float32))
    ref = Parameter(p.data.copy())
    g = rng.standard_normal((6, 4)).astype(np.float32).T  # not C-contiguous
    for q in (p, ref):
        q.grad = g.copy() if q is ref else g
    opt, opt_ref = optim.SGD([p], lr=0.1, momentum=0.9), optim.SGD([ref], lr=0.1, momentum=0.9)
    opt.step()
    saved = sgd_mod.on_cpu_kernels
    sgd_mod.on_cpu_kernels = lambda *a: False
    try:
        opt_ref.step()
    finally:
        sgd_mod.on_cpu_kernels = saved
    np.testing.assert_array_equal(p.data, ref.data)
    assert not sgd_mod.on_cpu_kernels(p.data, p.grad)
    assert not sgd_mod.on_cpu_kernels(p.data, p.data)            # shares memory
    assert not sgd_mod.on_cpu_kernels(p.data, p.data.astype(np.float64))
    assert sgd_mod.on_cpu_kernels(p.data, np.zeros_like(p.data))


def test_kernel_errors():
    p, g = np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"sgd_step: grad must have shape \(2, 3\)"):
        _C.sgd_step(p, np.zeros((3, 2), np.float32), None, 0.1, 0.0, 0.0, 0.0, False, False, False)
    with pytest.raises(TypeError, match="sgd_step: momentum_buffer must be an array"):
        _C.sgd_step(p, g, None, 0.1, 0.9, 0.0, 0.0, False, False, True)
    with pytest.raises(TypeError, match="grad has dtype float64"):
        _C.sgd_step(p, g.astype(np.float64), None, 0.1, 0.0, 0.0, 0.0, False, False, False)
    with pytest.raises(ValueError, match="param overlaps grad"):
        _C.sgd_step(p, p, None, 0.1, 0.0, 0.0, 0.0, False, False, False)
    ro = np.zeros((2, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="exp_avg .an output. must be writeable"):
        _C.adam_step(p, g, ro, np.zeros_like(p), None, 0.1, 0.9, 0.999, 1e-8, 0.0, 1.0, 1.0,
                     False, False, False)
    with pytest.raises(TypeError, match="max_exp_avg_sq must be an array with amsgrad"):
        _C.adam_step(p, g, np.zeros_like(p), np.zeros_like(p), None, 0.1, 0.9, 0.999, 1e-8, 0.0,
                     1.0, 1.0, False, True, False)
