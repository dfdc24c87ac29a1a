"""conv2d (dense and grouped): forward and the input / weight / bias gradients against ref.py
(float64 tight, float32 by the tolerance table) under every kernel variant, against torch, with
poisoned outputs, odd layouts, unbatched and empty inputs, numerical gradients, and random shapes."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv
import fastconv.nn.functional as F
import fastconv.nn.grad as G
from fastconv import _C, _shape, ref
from fastconv.testing import assert_close, gradcheck
from helpers import (DTYPES, LAYOUTS, check_conv2d, check_conv2d_torch, conv_config, layouts, poisoned,
                     randn, switched)

# (input (N, C, H, W), weight (K, C/groups, R, S), bias, stride, padding, dilation, groups)
CASES = {
    "3x3_pad1": ((2, 3, 8, 8), (4, 3, 3, 3), True, 1, 1, 1, 1),
    "3x3_stride2": ((2, 4, 9, 9), (6, 4, 3, 3), True, 2, 1, 1, 1),
    "per_axis_tuples": ((1, 3, 10, 7), (5, 3, 3, 2), False, (2, 1), (1, 0), (1, 2), 1),
    "one_element_tuples": ((1, 2, 7, 7), (3, 2, 3, 3), True, (2,), [1], (1,), 1),
    "pad4_asymmetric": ((2, 3, 7, 9), (4, 3, 3, 3), True, 1, (0, 2, 1, 0), 1, 1),
    "pad4_stride2": ((1, 2, 8, 8), (3, 2, 4, 4), True, 2, (1, 2, 2, 1), 1, 1),
    "same_odd_kernel": ((2, 3, 7, 7), (4, 3, 3, 3), True, 1, "same", 1, 1),
    "same_even_kernel": ((1, 2, 6, 7), (3, 2, 4, 2), False, 1, "same", 1, 1),
    "same_dilated": ((1, 2, 9, 9), (3, 2, 3, 3), True, 1, "same", 2, 1),
    "same_stride2_tf": ((2, 3, 8, 8), (4, 3, 3, 3), True, 2, "same", 1, 1),
    "same_stride2_5x5_odd": ((1, 2, 9, 10), (3, 2, 5, 5), False, 2, "same", 1, 1),
    "same_stride3_dilated": ((1, 2, 11, 10), (2, 2, 3, 3), True, 3, "same", 2, 1),
    "valid": ((1, 3, 9, 9), (2, 3, 3, 3), True, 1, "valid", 1, 1),
    "dilation2": ((1, 2, 11, 11), (3, 2, 3, 3), True, 1, 2, 2, 1),
    "dilation_per_axis": ((1, 2, 12, 10), (3, 2, 3, 3), False, (1, 2), (2, 3), (2, 3), 1),
    "groups2": ((2, 4, 7, 7), (6, 2, 3, 3), True, 1, 1, 1, 2),
    "groups3_stride2": ((1, 6, 9, 8), (9, 2, 3, 3), True, 2, 1, 1, 3),
    "groups2_cg1_k4": ((1, 2, 6, 6), (4, 1, 3, 3), True, 1, 1, 1, 2),
    "1x1": ((2, 8, 5, 5), (16, 8, 1, 1), True, 1, 0, 1, 1),
    "1x1_stride2": ((1, 6, 7, 7), (5, 6, 1, 1), False, 2, 0, 1, 1),
    "1x1_on_1x1": ((3, 4, 1, 1), (2, 4, 1, 1), True, 1, 0, 1, 1),
    "11x11_stride4": ((1, 3, 27, 27), (4, 3, 11, 11), True, 4, 2, 1, 1),
    "11x11_same": ((1, 2, 13, 13), (3, 2, 11, 11), True, 1, "same", 1, 1),
    "7x7_stride2_pad3": ((1, 3, 16, 16), (8, 3, 7, 7), True, 2, 3, 1, 1),
    "1x7": ((1, 4, 9, 9), (4, 4, 1, 7), False, 1, (0, 3), 1, 1),
    "7x1": ((1, 4, 9, 9), (4, 4, 7, 1), False, 1, (3, 0), 1, 1),
    "odd_sizes": ((3, 5, 13, 11), (7, 5, 3, 5), True, (1, 2), (1, 2), 1, 1),
    "kernel_equals_input": ((2, 3, 5, 5), (4, 3, 5, 5), True, 1, 0, 1, 1),
    "kernel_larger_than_input_padded": ((1, 2, 3, 3), (3, 2, 5, 5), True, 1, 1, 1, 1),
    "single_channel": ((1, 1, 10, 10), (1, 1, 3, 3), True, 1, 1, 1, 1),
    "wide_rows": ((1, 2, 5, 37), (3, 2, 3, 3), True, 1, 1, 1, 1),
    "many_channels": ((1, 32, 6, 6), (24, 32, 3, 3), True, 1, 1, 1, 1),
    "k_not_multiple_of_vector": ((2, 3, 9, 9), (13, 3, 3, 3), True, 1, 1, 1, 1),
    "stride_larger_than_kernel": ((1, 2, 10, 10), (3, 2, 2, 2), True, 3, 0, 1, 1),
    "stride_leaves_remainder": ((1, 2, 10, 11), (3, 2, 3, 3), True, 4, 0, 1, 1),
    # Several column blocks of the packed GEMM, panels that cross image and row ends.
    "1x1_many_columns": ((3, 7, 17, 19), (10, 7, 1, 1), True, 1, 0, 1, 1),
    "3x3_stride2_many_columns": ((3, 5, 23, 21), (6, 5, 3, 3), True, 2, 1, 1, 1),
    # Strided forward on the direct path (phases of the padded input): dilation, asymmetric
    # padding, unequal strides, a stride larger than the dilated kernel.
    "stride2_dilation2_asymmetric": ((2, 3, 13, 12), (5, 3, 3, 3), True, 2, (1, 0, 2, 1), 2, 1),
    "stride_3x2_groups": ((2, 4, 14, 11), (6, 2, 4, 3), True, (3, 2), (2, 1), 1, 2),
    "stride5_kernel2": ((1, 3, 17, 19), (4, 3, 2, 2), False, 5, 1, 1, 1),
    # Strided forward on the packed path (Kg > 96) from the phases of the padded input.
    "stride2_packed_phases": ((2, 5, 11, 10), (100, 5, 3, 3), True, 2, 1, 1, 1),
    "stride2_dilated_groups_packed_phases": ((1, 4, 12, 9), (194, 2, 3, 3), True, 2, (2, 1, 0, 3), 2, 2),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_conv2d_vs_ref(isa, rng, case, dtype):
    check_conv2d(rng, *case, dtype)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_conv2d_vs_torch(torch, rng, case):
    check_conv2d_torch(torch, rng, *case)


@pytest.mark.parametrize("case", ["3x3_pad1", "3x3_stride2", "groups3_stride2", "dilation_per_axis",
                                  "odd_sizes"])
def test_conv2d_grad_matches_torch_nn_grad(torch, rng, case):
    """Same call, same arguments as torch.nn.grad (the API is a drop-in)."""
    xshape, wshape, _, stride, padding, dilation, groups = CASES[case]
    x, w = randn(rng, xshape), randn(rng, wshape)
    args = (stride, padding, dilation, groups)
    gy = randn(rng, F.conv2d(x, w, None, *args).shape)
    tx, tw, tgy = torch.tensor(x), torch.tensor(w), torch.tensor(gy)
    assert_close(G.conv2d_input(xshape, w, gy, *args),
                 torch.nn.grad.conv2d_input(xshape, tw, tgy, *args).numpy(), name="conv2d_input")
    assert_close(G.conv2d_weight(x, wshape, gy, *args),
                 torch.nn.grad.conv2d_weight(tx, wshape, tgy, *args).numpy(), name="conv2d_weight")


@pytest.mark.parametrize("k,stride,size", [(3, 2, 8), (3, 2, 9), (5, 2, 8), (4, 2, 7), (1, 2, 6),
                                           (3, 3, 10), (7, 2, 15)])
def test_same_strided_is_tf_explicit_pad_then_valid(rng, k, stride, size):
    """TensorFlow 'SAME': output ceil(in / stride), the odd pixel of padding at the bottom/right,
    checked against an explicit np.pad followed by a 'valid' convolution."""
    x, w, b = randn(rng, (2, 3, size, size + 1)), randn(rng, (4, 3, k, k)), randn(rng, (4,))
    out_h, out_w = -(-size // stride), -(-(size + 1) // stride)
    tot_h = max((out_h - 1) * stride + k - size, 0)
    tot_w = max((out_w - 1) * stride + k - (size + 1), 0)
    xp = np.pad(x, ((0, 0), (0, 0), (tot_h // 2, tot_h - tot_h // 2),
                    (tot_w // 2, tot_w - tot_w // 2)))
    y = F.conv2d(x, w, b, stride=stride, padding="same")
    assert y.shape == (2, 4, out_h, out_w)
    assert_close(y, F.conv2d(xp, w, b, stride=stride, padding="valid"), name="same vs pad+valid")
    assert_close(y, ref.conv2d(xp, w, b, (stride, stride), (0, 0, 0, 0), (1, 1), 1), name="same")


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_conv2d_thread_counts(rng, threads):
    """The same answer whatever the thread count (work splitting covers every output once)."""
    xshape, wshape, _, stride, padding, dilation, groups = CASES["odd_sizes"]
    x, w = randn(rng, (5,) + xshape[1:]), randn(rng, wshape)
    s, pad, d = conv_config(x.shape, wshape, stride, padding, dilation)
    old = fastconv.num_threads()
    fastconv.set_num_threads(threads)
    try:
        y = F.conv2d(x, w, None, stride, padding, dilation, groups)
        gy = randn(rng, y.shape)
        dx = G.conv2d_input(x.shape, w, gy, stride, padding, dilation, groups)
        dw = G.conv2d_weight(x, wshape, gy, stride, padding, dilation, groups)
    finally:
        fastconv.set_num_threads(old)
    assert_close(y, ref.conv2d(x, w, None, s, pad, d, groups))
    assert_close(dx, ref.conv2d_input(gy, w, x.shape, s, pad, d, groups))
    assert_close(dw, ref.conv2d_weight(gy, x, wshape, s, pad, d, groups))


# Weight-gradient shapes whose reduction (over the pixels of the batch) is split into partial sums
# at some thread count: few output channels and few columns, reductions of 1700-2400 terms (long
# enough to split, short enough for the float32 tolerance of testing.py). The packed-GEMM path
# (stride 2, 7x7, dilation) and the dot-product path (1x1, grouped 3x3), with odd sizes and
# remainders of every block (k not a multiple of 3 or 6, kd not of 4, pixels not of the vector).
WGRAD_SPLIT_CASES = {
    "gemm_7x7_stride2": ((2, 3, 70, 64), (5, 3, 7, 7), 2, 3, 1, 1),
    "gemm_3x3_dilated_stride2": ((2, 4, 41, 45), (3, 4, 3, 3), (2, 1), (2, 1), (2, 3), 1),
    "gemm_grouped_stride2": ((2, 6, 65, 61), (9, 2, 3, 3), 2, 1, 1, 3),
    "dot_1x1": ((2, 5, 30, 35), (7, 5, 1, 1), 1, 0, 1, 1),
    "dot_grouped_3x3": ((2, 6, 35, 33), (4, 3, 3, 3), 1, 1, 1, 2),
    "dot_dilated": ((1, 4, 50, 47), (5, 4, 3, 2), 1, (2, 1), (2, 1), 1),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("threads", [1, 2, 3, 16])
@pytest.mark.parametrize("case", WGRAD_SPLIT_CASES.values(), ids=WGRAD_SPLIT_CASES.keys())
def test_conv2d_weight_reduction_split(isa, rng, case, threads, dtype):
    """Weight gradient against ref.py at thread counts that split the reduction into 1, 2, 3 and
    16+ partial sums (poisoned output), and bit-identical from one call to the next."""
    xshape, wshape, stride, padding, dilation, groups = case
    x, w = randn(rng, xshape, dtype), randn(rng, wshape, dtype)
    s, pad, d = conv_config(xshape, wshape, stride, padding, dilation)
    gy = randn(rng, ref.conv2d(x, w, None, s, pad, d, groups).shape, dtype)
    dw_ref = ref.conv2d_weight(gy, x, wshape, s, pad, d, groups)
    old = fastconv.num_threads()
    fastconv.set_num_threads(threads)
    try:
        dw = poisoned(wshape, dtype)
        _C.conv2d_backward_weight(gy, x, dw, s, pad, d, groups)
        again = poisoned(wshape, dtype)
        _C.conv2d_backward_weight(gy, x, again, s, pad, d, groups)
    finally:
        fastconv.set_num_threads(old)
    assert_close(dw, dw_ref, dtype, name=f"conv2d_backward_weight ({threads} threads)")
    np.testing.assert_array_equal(again, dw)


# ---- layouts, unbatched, empty ------------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_conv2d_layouts(rng, layout, dtype):
    x, w, b = randn(rng, (2, 3, 7, 6), dtype), randn(rng, (4, 3, 3, 3), dtype), randn(rng, (4,), dtype)
    y = F.conv2d(x, w, b, padding=1)
    gy = randn(rng, y.shape, dtype)
    lx, lw, lb, lgy = (layouts(a)[layout] for a in (x, w, b, gy))
    assert_close(F.conv2d(lx, lw, lb, padding=1), y, name="conv2d")
    assert_close(G.conv2d_input(x.shape, lw, lgy, padding=1), G.conv2d_input(x.shape, w, gy, padding=1))
    assert_close(G.conv2d_weight(lx, w.shape, lgy, padding=1), G.conv2d_weight(x, w.shape, gy, padding=1))
    assert_close(G.conv2d_bias(lgy), G.conv2d_bias(gy))
    assert F.conv2d(lx, lw, lb, padding=1).dtype == np.dtype(dtype)


def test_conv2d_does_not_modify_inputs(rng):
    x, w, b = randn(rng, (2, 3, 6, 6)), randn(rng, (4, 3, 3, 3)), randn(rng, (4,))
    copies = [a.copy() for a in (x, w, b)]
    F.conv2d(x, w, b, padding=1)
    for a, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(a, c)


def test_conv2d_input_and_weight_may_share_memory(rng):
    buf = randn(rng, (1, 3, 3, 3))
    assert_close(F.conv2d(buf, buf), ref.conv2d(buf, buf, None, (1, 1), (0,) * 4, (1, 1), 1))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_conv2d_unbatched(rng, dtype):
    x, w, b = randn(rng, (3, 7, 8), dtype), randn(rng, (4, 3, 3, 3), dtype), randn(rng, (4,), dtype)
    y = F.conv2d(x, w, b, stride=2, padding="same")
    assert y.shape == (4, 4, 4)
    assert_close(y, F.conv2d(x[None], w, b, stride=2, padding="same")[0])
    gy = randn(rng, y.shape, dtype)
    dx = G.conv2d_input(x.shape, w, gy, stride=2, padding="same")
    assert dx.shape == x.shape
    assert_close(dx, G.conv2d_input((1,) + x.shape, w, gy[None], stride=2, padding="same")[0])
    dw = G.conv2d_weight(x, w.shape, gy, stride=2, padding="same")
    assert_close(dw, G.conv2d_weight(x[None], w.shape, gy[None], stride=2, padding="same"))
    assert_close(G.conv2d_bias(gy), gy.sum(axis=(1, 2)), dtype)


def test_conv2d_unbatched_vs_torch(torch, rng):
    import torch.nn.functional as TF
    x, w = randn(rng, (3, 7, 8)), randn(rng, (4, 3, 3, 3))
    assert_close(F.conv2d(x, w, padding=1), TF.conv2d(torch.tensor(x), torch.tensor(w), padding=1).numpy())


def test_conv2d_empty_batch(rng, monkeypatch):
    """N = 0: outputs of the right shape, gradients zero or empty, and no kernel call."""
    def boom(*args):
        raise AssertionError("the kernel must not run on an empty batch")
    for name in ("conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight",
                 "conv2d_backward_bias"):
        monkeypatch.setattr(_C, name, boom)
    x, w, b = randn(rng, (0, 3, 9, 8)), randn(rng, (4, 3, 3, 3)), randn(rng, (4,))
    y = F.conv2d(x, w, b, stride=2, padding=1)
    assert y.shape == (0, 4, 5, 4) and y.dtype == np.float64
    assert G.conv2d_input(x.shape, w, y, stride=2, padding=1).shape == x.shape
    np.testing.assert_array_equal(G.conv2d_weight(x, w.shape, y, stride=2, padding=1), np.zeros(w.shape))
    np.testing.assert_array_equal(G.conv2d_bias(y), np.zeros(4))


def test_conv2d_empty_batch_like_torch(torch):
    import torch.nn.functional as TF
    x, w = np.zeros((0, 2, 5, 5), np.float32), np.ones((3, 2, 3, 3), np.float32)
    assert F.conv2d(x, w, stride=2).shape == tuple(TF.conv2d(torch.tensor(x), torch.tensor(w), stride=2).shape)


def test_conv2d_nan_and_inf_propagate(rng):
    x, w = randn(rng, (1, 2, 6, 6)), randn(rng, (3, 2, 3, 3))
    x[0, 1, 2, 3] = np.nan
    x[0, 0, 5, 5] = np.inf
    y = F.conv2d(x, w, padding=1)
    assert_close(y, ref.conv2d(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1))
    assert np.isnan(y[:, :, 1:4, 2:5]).all()


# ---- numerical gradients ------------------------------------------------------------------------

@pytest.mark.parametrize("stride,padding,dilation,groups", [
    (1, 1, 1, 1), (2, (1, 0, 2, 1), 1, 1), (1, "same", 2, 2), (2, "same", 1, 2)])
def test_conv2d_numerical_gradients(rng, stride, padding, dilation, groups):
    x, w, b = randn(rng, (2, 4, 5, 6)), randn(rng, (4, 4 // groups, 3, 3)), randn(rng, (4,))
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    gy = randn(rng, F.conv2d(x, w, b, **args).shape)
    gradcheck(lambda x_, w_, b_: F.conv2d(x_, w_, b_, **args), [x, w, b],
              [G.conv2d_input(x.shape, w, gy, **args), G.conv2d_weight(x, w.shape, gy, **args),
               G.conv2d_bias(gy)], gy)


# ---- random shapes ------------------------------------------------------------------------------

@st.composite
def conv_shapes(draw):
    groups = draw(st.integers(1, 3))
    cg, kg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    R, S = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = draw(st.one_of(
        st.just("same"), st.just("valid"), st.integers(0, 2),
        st.tuples(*[st.integers(0, 3)] * 4)))
    H = draw(st.integers(max(1, dh * (R - 1) + 1 - 4), 12))
    W = draw(st.integers(max(1, dw * (S - 1) + 1 - 4), 12))
    if padding == "valid":
        H, W = max(H, dh * (R - 1) + 1), max(W, dw * (S - 1) + 1)
    pad = _shape.resolve_padding("t", padding, (H, W), (R, S), (sh, sw), (dh, dw))
    H = max(H, dh * (R - 1) + 1 - pad[0] - pad[1])
    W = max(W, dw * (S - 1) + 1 - pad[2] - pad[3])
    if padding == "same":  # 'same' depends on the input size: resolve again
        pad = _shape.resolve_padding("t", padding, (H, W), (R, S), (sh, sw), (dh, dw))
    N = draw(st.integers(1, 3))
    return dict(xshape=(N, cg * groups, H, W), wshape=(kg * groups, cg, R, S),
                stride=(sh, sw), padding=padding, dilation=(dh, dw), groups=groups,
                bias=draw(st.booleans()), seed=draw(st.integers(0, 2**32 - 1)))


@given(conv_shapes())
def test_conv2d_random_shapes_vs_ref(c):
    rng = np.random.default_rng(c["seed"])
    check_conv2d(rng, c["xshape"], c["wshape"], c["bias"], c["stride"], c["padding"],
                 c["dilation"], c["groups"], np.float64)


@given(conv_shapes())
def test_conv2d_random_shapes_float32_vs_ref(c):
    rng = np.random.default_rng(c["seed"])
    check_conv2d(rng, c["xshape"], c["wshape"], c["bias"], c["stride"], c["padding"],
                 c["dilation"], c["groups"], np.float32)


@given(conv_shapes())
def test_conv2d_random_shapes_phase_dgrad_vs_ref(c):
    """The stride-phase input gradient forced on (auto leaves most of these small shapes to
    col2im; tests/test_conv2d_strided_dgrad.py covers both by name)."""
    rng = np.random.default_rng(c["seed"])
    with switched(_C.strided_dgrad, _C.set_strided_dgrad, "phase"):
        check_conv2d(rng, c["xshape"], c["wshape"], c["bias"], c["stride"], c["padding"],
                     c["dilation"], c["groups"], np.float64)
