"""Depthwise conv2d (groups == C, K = C * multiplier; the kernels take their own path for it):
forward and every gradient against ref.py under every kernel variant and against torch, with
multipliers 1 and 2, TensorFlow 'same' on stride 2 (EfficientNet), odd channel counts and sizes."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv.nn.functional as F
import fastconv.nn.grad as G
from fastconv.testing import assert_close, gradcheck
from helpers import DTYPES, LAYOUTS, check_conv2d, check_conv2d_torch, layouts, randn


def dw_case(N, C, H, W, m, R, S, bias, stride, padding, dilation):
    return ((N, C, H, W), (C * m, 1, R, S), bias, stride, padding, dilation, C)


CASES = {
    "3x3_pad1_m1": dw_case(2, 8, 9, 9, 1, 3, 3, True, 1, 1, 1),
    "3x3_pad1_m2": dw_case(2, 5, 8, 7, 2, 3, 3, True, 1, 1, 1),
    "3x3_stride2_same_tf": dw_case(2, 8, 16, 16, 1, 3, 3, False, 2, "same", 1),
    "5x5_stride2_same_tf_odd": dw_case(1, 6, 15, 14, 1, 5, 5, False, 2, "same", 1),
    "5x5_pad2_m2": dw_case(1, 4, 10, 11, 2, 5, 5, True, 1, 2, 1),
    "3x3_dilation2_m2": dw_case(1, 3, 11, 12, 2, 3, 3, True, 1, 2, 2),
    "3x3_stride2_m2": dw_case(2, 4, 9, 10, 2, 3, 3, True, 2, 1, 1),
    "m3": dw_case(1, 2, 7, 7, 3, 3, 3, True, 1, 1, 1),
    "odd_channels_wide": dw_case(1, 17, 5, 37, 1, 3, 3, True, 1, 1, 1),
    "many_channels": dw_case(2, 32, 8, 8, 1, 3, 3, True, 1, 1, 1),
    "1x1": dw_case(2, 6, 5, 5, 1, 1, 1, True, 1, 0, 1),
    "7x7_same": dw_case(1, 4, 9, 9, 1, 7, 7, False, 1, "same", 1),
    "11x11_pad5": dw_case(1, 3, 13, 12, 1, 11, 11, True, 1, 5, 1),
    "stride_per_axis": dw_case(1, 4, 9, 10, 1, 3, 3, True, (1, 2), (1, 0), 1),
    "pad4_asymmetric": dw_case(2, 4, 8, 9, 1, 3, 3, True, 1, (0, 2, 2, 0), 1),
    "pad4_stride2_m2": dw_case(1, 3, 9, 9, 2, 4, 4, False, 2, (1, 2, 2, 1), 1),
    "tiny_input": dw_case(3, 4, 2, 3, 1, 3, 3, True, 1, 1, 1),
    "rect_kernel": dw_case(1, 5, 9, 9, 1, 1, 5, True, 1, (0, 2), 1),
    "stride3": dw_case(1, 4, 13, 13, 1, 3, 3, True, 3, 1, 1),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_depthwise_conv2d_vs_ref(isa, rng, case, dtype):
    check_conv2d(rng, *case, dtype)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_depthwise_conv2d_vs_torch(torch, rng, case):
    check_conv2d_torch(torch, rng, *case)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_depthwise_conv2d_layouts(rng, layout):
    x, w, b = randn(rng, (2, 6, 7, 9), np.float32), randn(rng, (12, 1, 3, 3), np.float32), None
    y = F.conv2d(x, w, b, stride=2, padding="same", groups=6)
    gy = randn(rng, y.shape, np.float32)
    lx, lw, lgy = (layouts(a)[layout] for a in (x, w, gy))
    args = dict(stride=2, padding="same", groups=6)
    assert_close(F.conv2d(lx, lw, None, **args), y)
    assert_close(G.conv2d_input(x.shape, lw, lgy, **args), G.conv2d_input(x.shape, w, gy, **args))
    assert_close(G.conv2d_weight(lx, w.shape, lgy, **args), G.conv2d_weight(x, w.shape, gy, **args))


def test_depthwise_conv2d_unbatched(rng):
    x, w = randn(rng, (4, 6, 7)), randn(rng, (8, 1, 3, 3))
    y = F.conv2d(x, w, None, 2, "same", 1, 4)
    assert_close(y, F.conv2d(x[None], w, None, 2, "same", 1, 4)[0])
    gy = randn(rng, y.shape)
    assert_close(G.conv2d_input(x.shape, w, gy, 2, "same", 1, 4),
                 G.conv2d_input((1,) + x.shape, w, gy[None], 2, "same", 1, 4)[0])
    assert_close(G.conv2d_weight(x, w.shape, gy, 2, "same", 1, 4),
                 G.conv2d_weight(x[None], w.shape, gy[None], 2, "same", 1, 4))


def test_depthwise_conv2d_empty_batch(rng):
    x, w = randn(rng, (0, 4, 6, 7)), randn(rng, (8, 1, 3, 3))
    y = F.conv2d(x, w, None, 2, "same", 1, 4)
    assert y.shape == (0, 8, 3, 4)
    np.testing.assert_array_equal(G.conv2d_weight(x, w.shape, y, 2, "same", 1, 4), 0)


@pytest.mark.parametrize("m,stride,padding,dilation", [(1, 1, 1, 1), (2, 2, "same", 1),
                                                        (2, 1, (2, 0, 1, 1), 2)])
def test_depthwise_conv2d_numerical_gradients(rng, m, stride, padding, dilation):
    C = 3
    x, w, b = randn(rng, (2, C, 5, 6)), randn(rng, (C * m, 1, 3, 3)), randn(rng, (C * m,))
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=C)
    gy = randn(rng, F.conv2d(x, w, b, **args).shape)
    gradcheck(lambda x_, w_, b_: F.conv2d(x_, w_, b_, **args), [x, w, b],
              [G.conv2d_input(x.shape, w, gy, **args), G.conv2d_weight(x, w.shape, gy, **args),
               G.conv2d_bias(gy)], gy)


@st.composite
def depthwise_shapes(draw):
    C, m = draw(st.integers(1, 9)), draw(st.integers(1, 2))
    R, S = draw(st.sampled_from([1, 3, 5])), draw(st.sampled_from([1, 3, 5]))
    stride = draw(st.tuples(st.integers(1, 3), st.integers(1, 3)))
    dilation = draw(st.tuples(st.integers(1, 2), st.integers(1, 2)))
    padding = draw(st.one_of(st.just("same"), st.integers(0, 2), st.tuples(*[st.integers(0, 2)] * 4)))
    H = draw(st.integers(dilation[0] * (R - 1) + 1, 14))
    W = draw(st.integers(dilation[1] * (S - 1) + 1, 20))
    N = draw(st.integers(1, 3))
    return dw_case(N, C, H, W, m, R, S, draw(st.booleans()), stride, padding, dilation), \
        draw(st.integers(0, 2**32 - 1)), draw(st.sampled_from(DTYPES))


@given(depthwise_shapes())
def test_depthwise_conv2d_random_shapes_vs_ref(args):
    case, seed, dtype = args
    check_conv2d(np.random.default_rng(seed), *case, dtype)


@pytest.mark.parametrize("stride", [2, 3])
def test_depthwise_conv2d_wide_strided_rows_vs_ref(isa, rng, stride):
    # Regression: with a column stride > 1 the rows above/below the image used a zero row one
    # phase long, so the last vector of the first output row read past it (garbage on
    # multi-channel inputs). Needs a row wide enough for full vectors in every phase.
    from fastconv import ref
    x = randn(rng, (2, 6, 20, 112), np.float32)
    w = randn(rng, (6, 1, 3, 3), np.float32)
    y = F.conv2d(x, w, None, stride, 1, 1, 6)
    assert_close(y, ref.conv2d(x, w, None, (stride, stride), (1, 1, 1, 1), (1, 1), 6), np.float32)
