"""Remembered plans (fastconv/nn/_common.py, plan_key / remember_plan): a plain numpy call that
passed the checks once goes straight to the kernel the next time. The shortcut must give the
full path's results bit for bit, and every call the full path would treat differently (other
layouts, dtypes, argument types, bad values, the CUDA emulation) must still take the full path,
with its errors."""
import numpy as np
import pytest

import fastconv.nn.functional as F
import fastconv.nn.grad as G
from fastconv import testing
from fastconv.nn import _common as c


@pytest.fixture
def fresh_plans():
    c._PLANS.clear()
    yield c._PLANS
    c._PLANS.clear()


def _calls(rng, dtype):
    x = rng.standard_normal((2, 4, 9, 8)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    dy = rng.standard_normal((2, 6, 5, 4)).astype(dtype)
    geo = dict(stride=2, padding=1, dilation=1, groups=2)
    _, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    gp = rng.standard_normal(idx.shape).astype(dtype)
    return {
        "conv2d": lambda: F.conv2d(x, w, b, **geo),
        "conv2d_input": lambda: G.conv2d_input(x.shape, w, dy, **geo),
        "conv2d_weight": lambda: G.conv2d_weight(x, w.shape, dy, **geo),
        "max_pool2d": lambda: F.max_pool2d(x, 3, 2, 1, return_indices=True),
        "max_pool2d_input": lambda: G.max_pool2d_input(x.shape, gp, idx),
        "avg_pool2d": lambda: F.avg_pool2d(x, (3, 2), None, "same", ceil_mode=True),
        "avg_pool2d_input": lambda: G.avg_pool2d_input(x.shape, gp, 3, 2, 1),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_remembered_calls_give_the_full_paths_bits(rng, fresh_plans, dtype):
    for name, call in _calls(rng, dtype).items():
        first = call()                     # full path, remembers
        assert any(k[0] == name for k in fresh_plans), name
        again = call()                     # the remembered plan
        for a, b in zip(first if isinstance(first, tuple) else (first,),
                        again if isinstance(again, tuple) else (again,)):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert a.tobytes() == b.tobytes(), name


def test_other_calls_take_the_full_path(rng, fresh_plans):
    x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    ref = F.conv2d(x, w, None, 1, 1)
    assert len(fresh_plans) == 1
    # odd layouts, lists, another library's arrays: same results, nothing new remembered
    np.testing.assert_array_equal(F.conv2d(np.asfortranarray(x), w, None, 1, 1), ref)
    np.testing.assert_array_equal(F.conv2d(x, w, None, [1, 1], 1), ref)
    np.testing.assert_array_equal(F.conv2d(x.astype(">f4"), w, None, 1, 1), ref)
    assert len(fresh_plans) == 1
    # arguments the full path rejects still raise after the same shapes were remembered
    with pytest.raises(TypeError, match="stride must be an int"):
        F.conv2d(x, w, None, True, 1)
    with pytest.raises(TypeError, match="dtype"):
        F.conv2d(x, w.astype(np.float64), None, 1, 1)
    with pytest.raises(TypeError, match="dtype"):
        F.conv2d(x.astype(np.int64), w, None, 1, 1)
    # unbatched inputs are not remembered (their results are views of a batched output)
    assert F.conv2d(x[0], w, None, 1, 1).shape == ref.shape[1:]
    assert len(fresh_plans) == 1


def test_bad_indices_after_a_remembered_call(rng, fresh_plans):
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    _, idx = F.max_pool2d(x, 2, return_indices=True)
    g = np.ones(idx.shape, np.float32)
    G.max_pool2d_input(x.shape, g, idx)
    G.max_pool2d_input(x.shape, g, idx)          # remembered
    bad = idx.copy()
    bad[0, 0, 0, 0] = 36
    with pytest.raises(ValueError, match=r"indices must lie in \[0, H\*W\) = \[0, 36\)"):
        G.max_pool2d_input(x.shape, g, bad)


def test_no_plans_under_the_cuda_emulation(rng, fresh_plans, monkeypatch):
    from fastconv import _C
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    F.avg_pool2d(x, 2)
    assert len(fresh_plans) == 1

    def cpu_kernel(*args):
        raise AssertionError("the CPU kernel ran under the CUDA emulation")
    with testing.cuda_emulation(), monkeypatch.context() as m:
        m.setattr(_C, "avg_pool2d_forward", cpu_kernel)
        y = F.avg_pool2d(x, 2)                   # the emulated CUDA kernel, not the CPU plan
        F.avg_pool2d(x, 3)
    testing.assert_close(y, F.avg_pool2d(x, 2), np.float32)  # another summation order
    assert len(fresh_plans) == 1
