"""Input gradient of strided dense / grouped conv2d (csrc/cpu/conv2d_cpu.cpp), both algorithms
forced with _C.set_strided_dgrad: 'phase' (one stride-1 convolution of dY per stride phase of the
input pixels) and 'col2im' (column buffer + scatter-add), against ref.py (float64 tightly, float32
by the tolerance table) under every kernel variant with NaN-poisoned outputs; phases that no tap
reaches (1x1 / stride 2, stride larger than the kernel) must come out zero, last phases shorter
than the others, dilation, asymmetric stride and padding, groups, channel, reduction and column
counts past one cache block; numerical gradients in float64; NaN propagation; thread counts;
against torch; the rule 'auto' follows; the switch itself."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastconv
import fastconv.nn.functional as F
import fastconv.nn.grad as G
from fastconv import _C, ref
from fastconv.testing import assert_close, gradcheck
from helpers import (DTYPES, check_conv2d, check_conv2d_torch, conv_config, poisoned, randn,
                     switched)


def strided_dgrad(name):
    return switched(_C.strided_dgrad, _C.set_strided_dgrad, name)


ALGOS = ("phase", "col2im")


@pytest.fixture(params=ALGOS)
def algo(request):
    """Runs the test once per algorithm of the strided input gradient, forced on."""
    with strided_dgrad(request.param):
        yield request.param


# (input (N, C, H, W), weight (K, C/groups, R, S), stride, padding, dilation, groups)
CASES = {
    "3x3_s2_pad1": ((1, 4, 9, 9), (6, 4, 3, 3), 2, 1, 1, 1),
    "3x3_s2_pad0_even": ((3, 3, 10, 8), (5, 3, 3, 3), 2, 0, 1, 1),
    "3x3_s2_pad2": ((1, 3, 7, 8), (4, 3, 3, 3), 2, 2, 1, 1),
    "3x3_s3_pad1_odd": ((3, 2, 11, 13), (3, 2, 3, 3), 3, 1, 1, 1),
    "3x3_stride_2x3": ((1, 3, 10, 11), (4, 3, 3, 3), (2, 3), 1, 1, 1),
    "3x3_stride_1x2": ((2, 3, 7, 9), (5, 3, 3, 3), (1, 2), (1, 0), 1, 1),
    "3x2_stride_3x1": ((1, 2, 12, 6), (3, 2, 3, 2), (3, 1), (0, 1), 1, 1),
    "5x5_s2_pad2": ((3, 5, 13, 12), (4, 5, 5, 5), 2, 2, 1, 1),
    "7x7_s2_pad3": ((1, 3, 17, 16), (8, 3, 7, 7), 2, 3, 1, 1),
    "4x4_s2_asymmetric_pad": ((1, 2, 9, 8), (3, 2, 4, 4), 2, (1, 2, 2, 1), 1, 1),
    # Phases that no tap reaches: their pixels of dx must be written as zeros.
    "1x1_s2": ((3, 6, 7, 7), (5, 6, 1, 1), 2, 0, 1, 1),
    "1x1_s2_pad1": ((1, 4, 8, 9), (3, 4, 1, 1), 2, 1, 1, 1),
    "1x1_s3_pad1": ((1, 3, 10, 11), (2, 3, 1, 1), 3, 1, 1, 1),
    "2x2_s3": ((2, 2, 10, 10), (3, 2, 2, 2), 3, 0, 1, 1),
    "2x2_s5_pad1": ((1, 3, 17, 19), (4, 3, 2, 2), 5, 1, 1, 1),
    "input_smaller_than_stride": ((2, 3, 1, 5), (4, 3, 1, 3), 2, (0, 0, 1, 1), 1, 1),
    # Dilation: gcd(stride, dilation) 2 (every other tap per phase) and 1.
    "3x3_s2_dil2": ((2, 3, 13, 12), (5, 3, 3, 3), 2, (1, 0, 2, 1), 2, 1),
    "3x3_s2_dil3": ((1, 2, 14, 13), (3, 2, 3, 3), 2, 3, 3, 1),
    "3x3_s3_dil2": ((1, 2, 11, 10), (2, 2, 3, 3), 3, 2, 2, 1),
    # Groups.
    "groups2_s2": ((3, 4, 9, 8), (6, 2, 3, 3), 2, 1, 1, 2),
    "groups3_s2_1x1": ((1, 6, 9, 8), (9, 2, 1, 1), 2, 0, 1, 3),
    "groups2_stride_3x2": ((2, 4, 14, 11), (6, 2, 4, 3), (3, 2), (2, 1), 1, 2),
    # Blocks of the GEMM: rows past a panel block (Cg > 64) and not a multiple of the register
    # rows, a reduction past one kc block (Kg * taps > 208), columns past one column block
    # (N * phase pixels > 384) that cross image and row ends.
    "rows_past_a_block": ((1, 70, 9, 9), (5, 70, 3, 3), 2, 1, 1, 1),
    "long_reduction": ((1, 5, 9, 11), (130, 5, 3, 3), 2, 1, 1, 1),
    "many_columns": ((3, 5, 31, 29), (6, 5, 3, 3), 2, 1, 1, 1),
    "all_blocks_grouped": ((2, 200, 12, 10), (104, 100, 3, 3), 2, 1, 1, 2),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_strided_dgrad_vs_ref(isa, rng, algo, case, dtype):
    """Forward and every gradient (the input gradient through the forced algorithm), through F / G
    and through _C into NaN-poisoned outputs."""
    xshape, wshape, stride, padding, dilation, groups = case
    check_conv2d(rng, xshape, wshape, True, stride, padding, dilation, groups, dtype)


@pytest.mark.parametrize("case", ["1x1_s2", "1x1_s3_pad1", "2x2_s3", "2x2_s5_pad1"])
def test_untouched_phases_are_zero(rng, algo, case):
    """Pixels of dx that no output reads get exactly 0, not whatever the array held before."""
    xshape, wshape, stride, padding, dilation, groups = CASES[case]
    s, pad, d = conv_config(xshape, wshape, stride, padding, dilation)
    w = randn(rng, wshape)
    gy = randn(rng, ref.conv2d(randn(rng, xshape), w, None, s, pad, d, groups).shape)
    reached = ref.conv2d_input(np.ones_like(gy), np.ones_like(w), xshape, s, pad, d, groups) != 0
    assert not reached.all()  # the case has such pixels
    dx = poisoned(xshape, np.float64)
    _C.conv2d_backward_input(gy, w, dx, s, pad, d, groups)
    np.testing.assert_array_equal(dx[~reached], 0.0)
    assert_close(dx, ref.conv2d_input(gy, w, xshape, s, pad, d, groups))


@pytest.mark.parametrize("case", ["3x3_s2_pad1", "3x3_stride_2x3", "7x7_s2_pad3", "1x1_s2_pad1",
                                  "3x3_s2_dil3", "groups2_stride_3x2"])
def test_strided_dgrad_vs_torch(torch, rng, algo, case):
    xshape, wshape, stride, padding, dilation, groups = CASES[case]
    check_conv2d_torch(torch, rng, xshape, wshape, False, stride, padding, dilation, groups)


@pytest.mark.parametrize("stride,padding,dilation,groups", [
    (2, 1, 1, 1), (3, 2, 1, 1), ((2, 3), (1, 0, 2, 1), 1, 1), (2, 1, 2, 2), (2, 0, 1, 1)])
def test_strided_dgrad_numerical_gradient(rng, algo, stride, padding, dilation, groups):
    """The input gradient against central differences of the forward convolution (float64)."""
    x, w = randn(rng, (3, 4, 7, 8)), randn(rng, (4, 4 // groups, 3, 3))
    if padding == 0:
        w = w[:, :, :1, :1].copy()  # 1x1 / stride 2: three of the four phases get no taps
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    gy = randn(rng, F.conv2d(x, w, None, **args).shape)
    gradcheck(lambda x_: F.conv2d(x_, w, None, **args), [x],
              [G.conv2d_input(x.shape, w, gy, **args)], gy, name="conv2d_input")


@pytest.mark.parametrize("threads", [1, 2, 3, 16])
def test_strided_dgrad_thread_counts(rng, algo, threads):
    """Against ref.py at several thread counts, and bit-identical from one call to the next."""
    xshape, wshape, stride, padding, dilation, groups = CASES["all_blocks_grouped"]
    x, w = randn(rng, xshape, np.float32), randn(rng, wshape, np.float32)
    s, pad, d = conv_config(xshape, wshape, stride, padding, dilation)
    gy = randn(rng, ref.conv2d(x, w, None, s, pad, d, groups).shape, np.float32)
    old = fastconv.num_threads()
    fastconv.set_num_threads(threads)
    try:
        dx, again = poisoned(xshape, np.float32), poisoned(xshape, np.float32)
        _C.conv2d_backward_input(gy, w, dx, s, pad, d, groups)
        _C.conv2d_backward_input(gy, w, again, s, pad, d, groups)
    finally:
        fastconv.set_num_threads(old)
    assert_close(dx, ref.conv2d_input(gy, w, xshape, s, pad, d, groups), np.float32)
    np.testing.assert_array_equal(again, dx)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_strided_dgrad_nan_propagates(rng, algo, dtype):
    """A NaN in dY reaches exactly the dx pixels its taps reach (one that reaches none, in the
    last row of a padding-2 convolution's dY, reaches none), as in the reference."""
    xshape, w = (1, 3, 9, 8), randn(rng, (4, 3, 3, 3), dtype)
    s, pad, d = (2, 2), (2, 2, 2, 2), (1, 1)
    gy = randn(rng, (1, 4, 6, 5), dtype)
    gy[0, 1, 2, 3] = np.nan
    gy[0, 2, 5, 0] = np.nan  # output row 5 reads input rows 8..10 shifted by -2: row 8 only
    dx_ref = ref.conv2d_input(gy, w, xshape, s, pad, d, 1)
    dx = poisoned(xshape, dtype)
    _C.conv2d_backward_input(gy, w, dx, s, pad, d, 1)
    np.testing.assert_array_equal(np.isnan(dx), np.isnan(dx_ref))
    assert np.isnan(dx_ref).any() and not np.isnan(dx_ref).all()
    finite = np.isfinite(dx_ref)
    assert_close(dx[finite], dx_ref[finite], dtype)


def test_auto_follows_the_rule(rng):
    """'auto' takes the phases on a layer with many input channels (r50 res4 3x3/2, batch 2) and
    col2im on a 3-channel stem: bit-identical to the forced algorithm, and the two
    algorithms differ in the last bits (so the check can tell them apart)."""
    for xshape, wshape, pick in (((2, 256, 28, 28), (256, 256, 3, 3), "phase"),
                                 ((1, 3, 32, 32), (16, 3, 7, 7), "col2im")):
        w = randn(rng, wshape, np.float32)
        p = (wshape[2] - 1) // 2
        gy = randn(rng, (xshape[0], wshape[0], xshape[2] // 2, xshape[3] // 2), np.float32)
        out = {}
        for name in ("auto", "phase", "col2im"):
            with strided_dgrad(name):
                out[name] = G.conv2d_input(xshape, w, gy, stride=2, padding=p)
        assert not np.array_equal(out["phase"], out["col2im"])
        np.testing.assert_array_equal(out["auto"], out[pick])
        # 2304-term float32 sums: both within ~1e-6 of the largest element (ref.py agrees).
        np.testing.assert_allclose(out["phase"], out["col2im"], rtol=0,
                                   atol=1e-5 * np.abs(out["col2im"]).max())


def test_strided_dgrad_switch_errors():
    assert _C.strided_dgrad() in ("auto", "phase", "col2im")
    with pytest.raises(ValueError, match="expected 'auto', 'phase' or 'col2im', got 'im2col'"):
        _C.set_strided_dgrad("im2col")
    for name in ("phase", "col2im", "auto"):
        with strided_dgrad(name):
            assert _C.strided_dgrad() == name


def test_strided_dgrad_environment_variable(tmp_path):
    code = "from fastconv import _C; print(_C.strided_dgrad())"
    for value, expected in (("phase", "phase"), ("col2im", "col2im"), ("bogus", "auto")):
        env = dict(os.environ, FASTCONV_STRIDED_DGRAD=value,
                   PYTHONPATH=os.pathsep.join(p for p in sys.path if p))  # this fastconv
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             check=True, cwd=tmp_path).stdout.strip()
        assert out == expected
