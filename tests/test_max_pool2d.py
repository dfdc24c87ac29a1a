"""max_pool2d: values and indices exactly, and the input gradient, against ref.py under every
kernel variant and against torch (NaN / -inf / ties included), with poisoned outputs, ceil_mode
corners, dilation, odd layouts, unbatched and empty inputs, numerical gradients, random shapes."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv
import fastconv.nn.functional as F
import fastconv.nn.grad as G
from fastconv import _shape
from fastconv.testing import assert_close, gradcheck
from helpers import (DTYPES, LAYOUTS, check_max_pool2d, check_max_pool2d_torch, layouts,
                     pool_config, randn, torch_can_pool)

# (input (N, C, H, W), kernel_size, stride, padding, dilation, ceil_mode)
CASES = {
    "2x2": ((2, 3, 8, 8), 2, None, 0, 1, False),
    "2x2_odd_input": ((2, 3, 9, 7), 2, None, 0, 1, False),
    "2x2_odd_input_ceil": ((2, 3, 9, 7), 2, None, 0, 1, True),
    "3x3_stride2_pad1": ((2, 4, 12, 12), 3, 2, 1, 1, False),
    "3x3_stride2_pad1_ceil": ((1, 3, 12, 11), 3, 2, 1, 1, True),
    "3x3_stride1_pad1": ((2, 3, 7, 9), 3, 1, 1, 1, False),
    "3x3_stride2_ceil": ((1, 2, 13, 14), 3, 2, 0, 1, True),  # GoogLeNet
    "ceil_last_window_in_padding": ((1, 2, 6, 6), 3, 2, 1, 1, True),
    "ceil_adds_partial": ((1, 2, 5, 5), 2, 2, 0, 1, True),
    "ceil_no_change": ((1, 2, 7, 7), 3, 2, 0, 1, True),
    "ceil_stride3": ((1, 2, 10, 8), 3, 3, 1, 1, True),
    "per_axis": ((1, 3, 10, 9), (3, 2), (2, 1), (1, 0), 1, False),
    "one_element_tuples": ((1, 2, 7, 7), (3,), [2], (1,), (1,), False),
    "stride_empty_tuple": ((1, 2, 6, 6), 2, (), 0, 1, False),
    "dilation2": ((1, 3, 11, 11), 3, 1, 1, 2, False),
    "dilation_per_axis_ceil": ((2, 2, 12, 13), 3, 2, 1, (2, 3), True),
    "dilation_pad_half_kernel": ((1, 2, 9, 9), 2, 1, 1, 3, False),
    "pad4_asymmetric": ((1, 3, 8, 9), 3, 2, (0, 1, 1, 0), 1, False),
    "same": ((2, 3, 9, 9), 3, 1, "same", 1, False),
    "same_stride2_even": ((1, 2, 10, 9), 2, 2, "same", 1, False),
    "same_stride2_3x3": ((1, 2, 9, 10), 3, 2, "same", 1, False),
    "wide_rows_stride1": ((1, 2, 5, 41), 3, 1, 1, 1, False),
    "wide_rows_stride2": ((1, 2, 5, 41), 3, 2, 1, 1, False),
    "wide_rows_stride2_even_kernel": ((1, 3, 4, 40), 2, 2, 0, 1, False),
    "global": ((2, 4, 7, 6), (7, 6), None, 0, 1, False),
    "kernel1": ((1, 3, 5, 6), 1, 1, 0, 1, False),
    "kernel1_stride2": ((1, 3, 5, 6), 1, 2, 0, 1, False),
    "large_kernel": ((1, 2, 15, 15), 11, 2, 5, 1, False),
    "many_planes": ((3, 16, 6, 6), 2, 2, 0, 1, False),
    "single_plane_tall": ((1, 1, 33, 6), 3, 2, 1, 1, True),
    "1x1_input": ((2, 3, 1, 1), 1, 1, 0, 1, False),
    "2x2_input_pad1_ceil": ((1, 2, 2, 2), 3, 2, 1, 1, True),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_max_pool2d_vs_ref(isa, rng, case, dtype):
    check_max_pool2d(rng, *case, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_max_pool2d_vs_torch(torch, rng, case, dtype):
    xshape, kernel, stride, padding, dilation, ceil_mode = case
    k, s, pad, d = pool_config(xshape, kernel, stride, padding, dilation)
    if not torch_can_pool(k, pad):
        pytest.skip("padding torch cannot express")
    check_max_pool2d_torch(torch, randn(rng, xshape, dtype), kernel, stride, padding, dilation,
                           ceil_mode)


# Special values: NaN propagates (index of the last NaN in row-major order), ties keep the first
# element, windows of -inf give -inf with their first in-input element.
SPECIAL_CASES = [((2, 3, 8, 8), 2, None, 0, 1, False), ((2, 3, 9, 9), 3, 2, 1, 1, True),
                 ((1, 4, 7, 30), 3, 1, 1, 1, False), ((1, 4, 7, 30), 3, 2, 1, 1, False),
                 ((1, 2, 10, 10), 3, 1, 1, 2, False), ((1, 2, 6, 33), 2, 2, 0, 1, True),
                 ((2, 2, 9, 9), (2, 3), (1, 2), (1, 1), 1, True)]
SPECIAL_VALUES = {"nan": np.nan, "-inf": -np.inf, "inf": np.inf}


def _special_input(rng, shape, dtype, values):
    """Few distinct values (many ties), plus NaN / ±inf sprinkled in."""
    x = rng.integers(-2, 3, size=shape).astype(dtype)
    for v in values:
        mask = rng.random(shape) < 0.12
        x[mask] = v
    return x


@pytest.mark.parametrize("values", [(), ("nan",), ("-inf",), ("nan", "-inf", "inf")],
                         ids=["ties", "nan", "-inf", "all"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", SPECIAL_CASES)
def test_max_pool2d_special_values_vs_ref(isa, rng, case, dtype, values):
    x = _special_input(rng, case[0], dtype, [SPECIAL_VALUES[v] for v in values])
    check_max_pool2d(rng, *case, dtype, x=x)


@pytest.mark.parametrize("values", [(), ("nan",), ("-inf",), ("nan", "-inf", "inf")],
                         ids=["ties", "nan", "-inf", "all"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", SPECIAL_CASES)
def test_max_pool2d_special_values_vs_torch(torch, rng, case, dtype, values):
    x = _special_input(rng, case[0], dtype, [SPECIAL_VALUES[v] for v in values])
    check_max_pool2d_torch(torch, x, *case[1:])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_max_pool2d_all_minus_inf_window(isa, dtype):
    x = np.full((1, 1, 4, 5), -np.inf, dtype)
    x[0, 0, 3, 4] = 1.0
    y, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True, ceil_mode=True)
    ninf = -np.inf
    np.testing.assert_array_equal(y[0, 0], [[ninf, ninf, ninf], [ninf, ninf, 1], [ninf, ninf, 1]])
    # windows rows [-1, 2), [1, 4), [3, 6) and columns likewise: where all are -inf the index is
    # the window's first in-input element (rows 0, 1, 3; columns 0, 1, 3)
    np.testing.assert_array_equal(idx[0, 0], [[0, 1, 3], [5, 6, 19], [15, 16, 19]])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_max_pool2d_huge_kernel_is_fast_and_right(isa, rng, dtype):
    """A huge but valid window: 2**31 - 1 rows (or columns) with padding 2**30 - 1 covers the whole
    axis for every output. The window start is found in O(1) (a loop over the taps before the
    input ran 2**30 times per window), in the binding's empty-window check and in the kernels."""
    x = randn(rng, (1, 2, 5, 6), dtype)
    y, idx = F.max_pool2d(x, (2**31 - 1, 1), stride=1, padding=(2**30 - 1, 0),
                          return_indices=True)
    np.testing.assert_array_equal(y, np.broadcast_to(x.max(axis=2, keepdims=True), y.shape))
    np.testing.assert_array_equal(idx[0, :, 0], x.argmax(axis=2)[0] * 6 + np.arange(6))
    y = F.max_pool2d(x, (1, 2**31 - 1), stride=(1, 2**31 - 1), padding=(0, 2**30 - 1))
    np.testing.assert_array_equal(y, x.max(axis=3, keepdims=True))


def test_max_pool2d_nan_index_is_last_nan(isa):
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 0, 2] = x[0, 0, 2, 0] = np.nan
    x[0, 0, 1, 1] = 5.0
    y, idx = F.max_pool2d(x, 3, return_indices=True)
    assert np.isnan(y).all() and idx.item() == 6


@pytest.mark.parametrize("layout", LAYOUTS)
def test_max_pool2d_layouts(rng, layout):
    x = randn(rng, (2, 3, 9, 10), np.float32)
    y, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    ly, lidx = F.max_pool2d(layouts(x)[layout], 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(ly, y)
    np.testing.assert_array_equal(lidx, idx)
    gy = randn(rng, y.shape, np.float32)
    assert_close(G.max_pool2d_input(x.shape, layouts(gy)[layout], layouts(idx)[layout]),
                 G.max_pool2d_input(x.shape, gy, idx))


def test_max_pool2d_indices_other_int_dtypes(rng):
    x = randn(rng, (1, 2, 6, 6))
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    gy = randn(rng, y.shape)
    expected = G.max_pool2d_input(x.shape, gy, idx)
    for dt in (np.int32, np.uint16, np.dtype(">i8")):
        np.testing.assert_array_equal(G.max_pool2d_input(x.shape, gy, idx.astype(dt)), expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_max_pool2d_unbatched(rng, dtype):
    x = randn(rng, (3, 7, 8), dtype)
    y, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    yb, idxb = F.max_pool2d(x[None], 3, 2, 1, return_indices=True)
    assert y.shape == idx.shape == (3, 4, 4)
    np.testing.assert_array_equal(y, yb[0])
    np.testing.assert_array_equal(idx, idxb[0])
    np.testing.assert_array_equal(F.max_pool2d(x, 3, 2, 1), y)
    gy = randn(rng, y.shape, dtype)
    dx = G.max_pool2d_input(x.shape, gy, idx)
    assert dx.shape == x.shape
    assert_close(dx, G.max_pool2d_input((1,) + x.shape, gy[None], idx[None])[0])


def test_max_pool2d_unbatched_vs_torch(torch, rng):
    import torch.nn.functional as TF
    x = randn(rng, (3, 7, 8))
    y, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    yt, it = TF.max_pool2d(torch.tensor(x), 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(y, yt.numpy())
    np.testing.assert_array_equal(idx, it.numpy())


def test_max_pool2d_empty_batch(rng, monkeypatch):
    from fastconv import _C

    def boom(*args):
        raise AssertionError("the kernel must not run on an empty batch")
    monkeypatch.setattr(_C, "max_pool2d_forward", boom)
    monkeypatch.setattr(_C, "max_pool2d_backward", boom)
    x = randn(rng, (0, 3, 9, 8))
    y, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert y.shape == idx.shape == (0, 3, 5, 4) and idx.dtype == np.int64
    assert F.max_pool2d(x, 3, 2, 1, ceil_mode=True).shape == (0, 3, 5, 5)
    assert G.max_pool2d_input(x.shape, y, idx).shape == x.shape


def test_max_pool2d_empty_batch_like_torch(torch):
    import torch.nn.functional as TF
    x = np.zeros((0, 2, 7, 7), np.float32)
    assert F.max_pool2d(x, 3, 2, 1).shape == tuple(TF.max_pool2d(torch.tensor(x), 3, 2, 1).shape)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_max_pool2d_thread_counts(rng, threads):
    """Planes split across threads, and one plane split in row blocks (few planes per thread)."""
    old = fastconv.num_threads()
    fastconv.set_num_threads(threads)
    try:
        for shape in [(3, 5, 11, 12), (1, 1, 40, 9)]:
            check_max_pool2d(rng, shape, 3, 2, 1, 1, True, np.float32)
    finally:
        fastconv.set_num_threads(old)


@pytest.mark.parametrize("kernel,stride,padding,dilation,ceil_mode", [
    (2, None, 0, 1, False), (3, 2, 1, 1, True), (3, 1, (0, 1, 1, 0), 2, False)])
def test_max_pool2d_numerical_gradient(rng, kernel, stride, padding, dilation, ceil_mode):
    # distinct values far apart (>> eps), so no perturbation changes a window's argmax
    x = (rng.permutation(2 * 2 * 7 * 8).reshape(2, 2, 7, 8) * 0.01).astype(np.float64)
    args = dict(stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
    y, idx = F.max_pool2d(x, kernel, return_indices=True, **args)
    gy = randn(rng, y.shape)
    gradcheck(lambda x_: F.max_pool2d(x_, kernel, **args), [x],
              [G.max_pool2d_input(x.shape, gy, idx)], gy)


@st.composite
def pool_shapes(draw):
    R, S = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 4), st.integers(1, 4))))
    eh, ew = dh * (R - 1) + 1, dw * (S - 1) + 1
    padding = draw(st.one_of(
        st.just(0), st.just("same"),
        st.tuples(st.integers(0, R // 2), st.integers(0, S // 2)),
        st.tuples(st.integers(0, R // 2), st.integers(0, R // 2),
                  st.integers(0, S // 2), st.integers(0, S // 2))))
    H, W = draw(st.integers(eh, eh + 10)), draw(st.integers(ew, ew + 20))
    N, C = draw(st.integers(1, 2)), draw(st.integers(1, 4))
    ceil_mode = draw(st.booleans())
    k, s = (R, S), ((R, S) if stride is None else stride)
    pad = _shape.resolve_padding("t", padding, (H, W), k, s, (dh, dw))
    try:
        _shape.pool_output_hw("t", (H, W), k, s, pad, (dh, dw), ceil_mode)
    except ValueError:  # 'same' over half the kernel, or a dilated window that sees only padding:
        # rejected, tested in test_errors
        padding = 0
    return (N, C, H, W), k, stride, padding, (dh, dw), ceil_mode, draw(st.integers(0, 2**32 - 1))


@given(pool_shapes(), st.sampled_from(DTYPES))
def test_max_pool2d_random_shapes_vs_ref(case, dtype):
    *case, seed = case
    check_max_pool2d(np.random.default_rng(seed), *case, dtype)


@given(pool_shapes())
def test_max_pool2d_random_shapes_vs_torch(torch, case):
    *case, seed = case
    xshape, kernel, stride, padding, dilation, ceil_mode = case
    k, s, pad, d = pool_config(xshape, kernel, stride, padding, dilation)
    if not torch_can_pool(k, pad):
        padding = 0
    x = np.random.default_rng(seed).standard_normal(xshape).astype(np.float32)
    check_max_pool2d_torch(torch, x, kernel, stride, padding, dilation, ceil_mode)
