"""avg_pool2d: forward and input gradient against ref.py under every kernel variant and against
torch, over PyTorch's divisor rules (count_include_pad, ceil_mode windows cut at the padding,
divisor_override), TensorFlow 'same', asymmetric padding, odd layouts, unbatched and empty inputs,
numerical gradients and random shapes."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv
import fastconv.nn.functional as F
import fastconv.nn.grad as G
from fastconv.testing import assert_close, gradcheck
from helpers import (DTYPES, LAYOUTS, check_avg_pool2d, check_avg_pool2d_torch, layouts,
                     pool_config, randn, torch_can_pool)

# (input (N, C, H, W), kernel_size, stride, padding, ceil_mode)
GEOMETRIES = {
    "2x2": ((2, 3, 8, 8), 2, None, 0, False),
    "2x2_odd_ceil": ((2, 3, 9, 7), 2, None, 0, True),
    "3x3_stride2_pad1": ((2, 4, 12, 11), 3, 2, 1, False),
    "3x3_stride2_pad1_ceil": ((1, 3, 12, 11), 3, 2, 1, True),
    "3x3_stride1_pad1": ((2, 3, 7, 9), 3, 1, 1, False),
    "ceil_last_window_in_padding": ((1, 2, 6, 6), 3, 2, 1, True),
    "ceil_window_past_padding": ((1, 2, 6, 7), 4, 3, 2, True),
    "ceil_stride3": ((1, 2, 10, 8), 3, 3, 1, True),
    "per_axis": ((1, 3, 10, 9), (3, 2), (2, 1), (1, 0), False),
    "one_element_tuples": ((1, 2, 7, 7), (3,), [2], (1,), True),
    "pad4_asymmetric": ((1, 3, 8, 9), 3, 2, (0, 1, 1, 0), False),
    "pad4_asymmetric_ceil": ((1, 3, 8, 9), 3, 2, (1, 0, 0, 1), True),
    "same": ((2, 3, 9, 9), 3, 1, "same", False),
    "same_stride2": ((1, 2, 10, 9), 3, 2, "same", False),
    "wide_rows_stride1": ((1, 2, 5, 41), 3, 1, 1, False),
    "wide_rows_stride2": ((1, 2, 5, 40), 2, 2, 0, False),
    "global": ((2, 4, 7, 6), (7, 6), None, 0, False),
    "global_large": ((1, 3, 23, 29), (23, 29), None, 0, False),
    # ResNet's 7x7 head over more planes than one block of the small-plane CUDA kernel takes
    "global_many_planes": ((3, 100, 7, 7), 7, None, 0, False),
    "global_padded": ((2, 3, 5, 4), (7, 6), None, (1, 1, 1, 1), False),
    "kernel1_stride2": ((1, 3, 5, 6), 1, 2, 0, False),
    "large_kernel": ((1, 2, 15, 15), 11, 2, 5, False),
    "many_planes": ((3, 16, 6, 6), 2, 2, 0, False),
    "1x1_input": ((2, 3, 1, 1), 1, 1, 0, False),
    "2x2_input_pad1_ceil": ((1, 2, 2, 2), 3, 2, 1, True),
}
# (count_include_pad, divisor_override)
# (torch accepts any non-zero divisor_override, negative included)
FLAGS = {"include_pad": (True, None), "exclude_pad": (False, None), "divisor3": (True, 3),
         "divisor7_exclude": (False, 7), "divisor_negative": (True, -2),
         "divisor_minus1_exclude": (False, -1)}


@pytest.mark.parametrize("flags", FLAGS.values(), ids=FLAGS.keys())
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=GEOMETRIES.keys())
def test_avg_pool2d_vs_ref(isa, rng, geometry, dtype, flags):
    xshape, kernel, stride, padding, ceil_mode = geometry
    check_avg_pool2d(rng, xshape, kernel, stride, padding, ceil_mode, *flags, dtype)


@pytest.mark.parametrize("flags", FLAGS.values(), ids=FLAGS.keys())
@pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=GEOMETRIES.keys())
def test_avg_pool2d_vs_torch(torch, rng, geometry, flags):
    xshape, kernel, stride, padding, ceil_mode = geometry
    k, s, pad, _ = pool_config(xshape, kernel, stride, padding)
    if not torch_can_pool(k, pad):
        pytest.skip("padding torch cannot express")
    check_avg_pool2d_torch(torch, rng, xshape, kernel, stride, padding, ceil_mode, *flags)
    check_avg_pool2d_torch(torch, rng, xshape, kernel, stride, padding, ceil_mode, *flags,
                           dtype=np.float32)


def test_avg_pool2d_divisors_by_hand():
    """3x3 window, stride 2, padding 1, ceil_mode on a 4x4 input of ones: the corner window holds
    4 input elements of 9 (6 inside the padded input is what torch divides by past the edge)."""
    x = np.ones((1, 1, 4, 4))
    y = F.avg_pool2d(x, 3, 2, 1, ceil_mode=True)
    # rows [-1, 2) -> 2 in-input rows (3 with padding); [1, 4) -> 3; [3, 6) cut at 4 + 1 = 5 -> 1 (2)
    np.testing.assert_allclose(y[0, 0], np.outer([2, 3, 1], [2, 3, 1]) / np.outer([3, 3, 2], [3, 3, 2]))
    y = F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)
    np.testing.assert_allclose(y, 1.0)
    y = F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, divisor_override=2)
    np.testing.assert_allclose(y[0, 0], np.outer([2, 3, 1], [2, 3, 1]) / 2)
    y = F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, divisor_override=-4)
    np.testing.assert_allclose(y[0, 0], np.outer([2, 3, 1], [2, 3, 1]) / -4)


def test_avg_pool2d_huge_kernel_is_fast_and_right():
    """A huge but valid window (2**31 - 1 rows, padding 2**30 - 1 each side) covers all 5 rows
    of every column: one O(1) geometry step per window, never a loop over its taps."""
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 4))
    y = F.avg_pool2d(x, (2**31 - 1, 1), stride=1, padding=(2**30 - 1, 0), divisor_override=5)
    np.testing.assert_allclose(y, np.broadcast_to(x.sum(axis=2, keepdims=True) / 5, y.shape))


def test_avg_pool2d_keras_same(rng):
    """Keras AveragePooling2D(padding='same'): average of the in-input elements only."""
    x = randn(rng, (1, 2, 7, 7))
    y = F.avg_pool2d(x, 2, 2, "same", count_include_pad=False)
    assert y.shape == (1, 2, 4, 4)
    assert_close(y[..., 3, 3], x[..., 6, 6])
    assert_close(y[..., 0, 0], x[..., :2, :2].mean(axis=(-1, -2)))


def test_avg_pool2d_nan_inf_propagate():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 0, 0], x[0, 0, 3, 3] = np.nan, np.inf
    y = F.avg_pool2d(x, 2)
    assert np.isnan(y[0, 0, 0, 0]) and y[0, 0, 1, 1] == np.inf and (y[0, 0, [0, 1], [1, 0]] == 0).all()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_avg_pool2d_layouts(rng, layout):
    x = randn(rng, (2, 3, 9, 10), np.float32)
    y = F.avg_pool2d(x, 3, 2, 1, ceil_mode=True)
    assert_close(F.avg_pool2d(layouts(x)[layout], 3, 2, 1, ceil_mode=True), y)
    gy = randn(rng, y.shape, np.float32)
    assert_close(G.avg_pool2d_input(x.shape, layouts(gy)[layout], 3, 2, 1, ceil_mode=True),
                 G.avg_pool2d_input(x.shape, gy, 3, 2, 1, ceil_mode=True))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_avg_pool2d_unbatched(rng, dtype):
    x = randn(rng, (3, 7, 8), dtype)
    y = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
    assert y.shape == (3, 4, 4)
    assert_close(y, F.avg_pool2d(x[None], 3, 2, 1, count_include_pad=False)[0])
    gy = randn(rng, y.shape, dtype)
    dx = G.avg_pool2d_input(x.shape, gy, 3, 2, 1, count_include_pad=False)
    assert dx.shape == x.shape
    assert_close(dx, G.avg_pool2d_input((1,) + x.shape, gy[None], 3, 2, 1, count_include_pad=False)[0])


def test_avg_pool2d_unbatched_vs_torch(torch, rng):
    import torch.nn.functional as TF
    x = randn(rng, (3, 7, 8))
    assert_close(F.avg_pool2d(x, 3, 2, 1), TF.avg_pool2d(torch.tensor(x), 3, 2, 1).numpy())


def test_avg_pool2d_empty_batch(rng, monkeypatch):
    from fastconv import _C

    def boom(*args):
        raise AssertionError("the kernel must not run on an empty batch")
    monkeypatch.setattr(_C, "avg_pool2d_forward", boom)
    monkeypatch.setattr(_C, "avg_pool2d_backward", boom)
    x = randn(rng, (0, 3, 9, 8))
    y = F.avg_pool2d(x, 3, 2, 1)
    assert y.shape == (0, 3, 5, 4)
    assert G.avg_pool2d_input(x.shape, y, 3, 2, 1).shape == x.shape


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_avg_pool2d_thread_counts(rng, threads):
    old = fastconv.num_threads()
    fastconv.set_num_threads(threads)
    try:
        for shape in [(3, 5, 11, 12), (1, 1, 40, 9)]:
            check_avg_pool2d(rng, shape, 3, 2, 1, True, False, None, np.float32)
    finally:
        fastconv.set_num_threads(old)


@pytest.mark.parametrize("kernel,stride,padding,ceil_mode,count_include_pad,divisor_override", [
    (2, None, 0, False, True, None), (3, 2, 1, True, False, None), (3, 2, (0, 1, 1, 0), True, True, None),
    (3, 1, 1, False, True, 5)])
def test_avg_pool2d_numerical_gradient(rng, kernel, stride, padding, ceil_mode, count_include_pad,
                                       divisor_override):
    x = randn(rng, (2, 2, 7, 8))
    args = dict(stride=stride, padding=padding, ceil_mode=ceil_mode,
                count_include_pad=count_include_pad, divisor_override=divisor_override)
    gy = randn(rng, F.avg_pool2d(x, kernel, **args).shape)
    gradcheck(lambda x_: F.avg_pool2d(x_, kernel, **args), [x],
              [G.avg_pool2d_input(x.shape, gy, kernel, **args)], gy)


@st.composite
def avg_pool_shapes(draw):
    R, S = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 4), st.integers(1, 4))))
    padding = draw(st.one_of(
        st.just(0), st.just("same"), st.tuples(st.integers(0, R // 2), st.integers(0, S // 2)),
        st.tuples(st.integers(0, R // 2), st.integers(0, R // 2),
                  st.integers(0, S // 2), st.integers(0, S // 2))))
    H, W = draw(st.integers(R, R + 10)), draw(st.integers(S, S + 20))
    N, C = draw(st.integers(1, 2)), draw(st.integers(1, 4))
    return ((N, C, H, W), (R, S), stride, padding, draw(st.booleans()), draw(st.booleans()),
            draw(st.one_of(st.none(), st.integers(1, 9))), draw(st.integers(0, 2**32 - 1)))


@given(avg_pool_shapes(), st.sampled_from(DTYPES))
def test_avg_pool2d_random_shapes_vs_ref(case, dtype):
    *case, seed = case
    check_avg_pool2d(np.random.default_rng(seed), *case, dtype)


@given(avg_pool_shapes())
def test_avg_pool2d_random_shapes_vs_torch(torch, case):
    *case, seed = case
    xshape, kernel, stride, padding, *flags = case
    k, s, pad, _ = pool_config(xshape, kernel, stride, padding)
    if not torch_can_pool(k, pad):
        padding = 0
    check_avg_pool2d_torch(torch, np.random.default_rng(seed), xshape, kernel, stride, padding, *flags)
