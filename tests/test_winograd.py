"""Winograd paths of conv2d (csrc/cpu/winograd_cpu.cpp), forced on with _C.set_conv_algo:
'winograd' (F(2x2, 3x3)) against ref.py (float64 tightly, float32 by the tolerance table) and
'winograd4' (F(4x4, 3x3), float64 by the table, float32 by STYLE 7's rule only: its float32 error
exceeds the table from about 64 channels), both under every kernel variant with poisoned outputs,
forward and input gradient; against torch (float32 no worse than twice torch's error); odd sizes,
tiles that do not divide the output, every kind of padding, groups, channel counts past one cache
block, large magnitudes, non-finite values; and the algorithm switch itself."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastconv.nn.functional as F
import fastconv.nn.grad as G
from fastconv import _C, ref
from fastconv.testing import assert_close, assert_no_worse_than, gradcheck_autograd, max_error
from helpers import DTYPES, check_conv2d, check_conv2d_torch, conv_config, randn, switched


def conv_algo(name):
    return switched(_C.conv_algo, _C.set_conv_algo, name)


ALGOS = ("winograd", "winograd4")


@pytest.fixture(params=ALGOS)
def winograd(request):
    """Runs the test once per Winograd variant, forced on."""
    with conv_algo(request.param):
        yield request.param


# (input (N, C, H, W), weight (K, C/groups, 3, 3), bias, padding, groups); stride 1, dilation 1.
CASES = {
    "pad1_one_tile": ((2, 3, 4, 4), (4, 3, 3, 3), True, 1, 1),
    "pad1_odd_sizes": ((3, 5, 13, 11), (7, 5, 3, 3), True, 1, 1),
    "pad0_valid": ((1, 4, 9, 10), (5, 4, 3, 3), False, 0, 1),
    "pad0_output_1x1": ((2, 3, 3, 3), (2, 3, 3, 3), True, 0, 1),
    "pad2_grows_output": ((1, 3, 5, 6), (4, 3, 3, 3), True, 2, 1),
    "pad3_larger_than_kernel": ((1, 2, 4, 5), (3, 2, 3, 3), True, 3, 1),
    "asymmetric_pad": ((2, 3, 7, 9), (4, 3, 3, 3), True, (0, 2, 1, 0), 1),
    "asymmetric_pad_bottom_right": ((1, 6, 10, 6), (5, 6, 3, 3), False, (2, 0, 0, 1), 1),
    "same": ((2, 3, 7, 7), (4, 3, 3, 3), True, "same", 1),
    "per_axis_pad": ((1, 3, 6, 13), (2, 3, 3, 3), True, (0, 1), 1),
    "tall_row": ((1, 2, 1, 37), (3, 2, 3, 3), True, 1, 1),
    "groups2": ((2, 4, 7, 7), (6, 2, 3, 3), True, 1, 2),
    "groups4_many_channels": ((1, 64, 9, 7), (32, 16, 3, 3), True, 1, 4),
    "k_not_multiple_of_rows": ((2, 3, 9, 9), (13, 3, 3, 3), True, 1, 1),
    "single_channel": ((1, 1, 10, 10), (1, 1, 3, 3), True, 1, 1),
    "channels_past_a_block": ((1, 150, 6, 5), (9, 150, 3, 3), True, 1, 1),
    "rows_past_a_block": ((1, 5, 6, 6), (150, 5, 3, 3), True, 1, 1),
    "many_tiles_and_images": ((3, 4, 30, 29), (5, 4, 3, 3), True, 1, 1),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_winograd_vs_ref(isa, rng, winograd, case, dtype):
    if winograd == "winograd4" and dtype == np.float32:
        pytest.skip("F(4x4, 3x3) float32 is held to STYLE 7's rule (test_winograd_vs_torch)")
    xshape, wshape, bias, padding, groups = case
    check_conv2d(rng, xshape, wshape, bias, 1, padding, 1, groups, dtype)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_winograd_vs_torch(torch, rng, winograd, case):
    xshape, wshape, bias, padding, groups = case
    check_conv2d_torch(torch, rng, xshape, wshape, bias, 1, padding, 1, groups)


def test_winograd_is_the_path_taken(rng):
    """The switch changes the arithmetic (float32 results differ in the last bits), and 'auto'
    takes Winograd on a layer with many channels."""
    x, w = randn(rng, (1, 32, 12, 12), np.float32), randn(rng, (32, 32, 3, 3), np.float32)
    with conv_algo("gemm"):
        y_gemm = F.conv2d(x, w, padding=1)
    with conv_algo("winograd"):
        y_wino = F.conv2d(x, w, padding=1)
    with conv_algo("auto"):
        y_auto = F.conv2d(x, w, padding=1)
    with conv_algo("winograd4"):
        y_wino4 = F.conv2d(x, w, padding=1)
    assert not np.array_equal(y_gemm, y_wino)
    assert not np.array_equal(y_wino4, y_wino)
    np.testing.assert_array_equal(y_auto, y_wino)
    assert_close(y_wino, y_gemm)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_winograd_thread_counts(rng, winograd, threads):
    import fastconv
    x, w = randn(rng, (3, 20, 11, 13)), randn(rng, (70, 20, 3, 3))
    old = fastconv.num_threads()
    fastconv.set_num_threads(threads)
    try:
        y = F.conv2d(x, w, None, padding=1)
        gy = randn(rng, y.shape)
        dx = G.conv2d_input(x.shape, w, gy, padding=1)
    finally:
        fastconv.set_num_threads(old)
    pad = (1, 1, 1, 1)
    assert_close(y, ref.conv2d(x, w, None, (1, 1), pad, (1, 1), 1))
    assert_close(dx, ref.conv2d_input(gy, w, x.shape, (1, 1), pad, (1, 1), 1))


# Worst cases of rounding: reductions of thousands of terms and inputs far from order 1 (see the
# figures in the header of csrc/cpu/winograd_cpu.cpp), checked by STYLE 7's rule and, for F(2x2),
# by the table itself.
@pytest.mark.parametrize("c,k,hw,scale", [(512, 16, 7, 1.0), (256, 24, 14, 1e4), (64, 8, 9, 1e-3),
                                          (8, 512, 8, 30.0)])
def test_winograd_large_channels_and_magnitudes(torch, isa, rng, winograd, c, k, hw, scale):
    import torch.nn.functional as TF
    x = (randn(rng, (2, c, hw, hw)) * scale).astype(np.float32)
    w = randn(rng, (k, c, 3, 3)).astype(np.float32)
    y64 = ref.conv2d(x.astype(np.float64), w.astype(np.float64), None, (1, 1), (1,) * 4, (1, 1), 1)
    gy = randn(rng, y64.shape).astype(np.float32) * np.float32(scale)
    dx64 = ref.conv2d_input(gy.astype(np.float64), w.astype(np.float64), x.shape, (1, 1), (1,) * 4,
                            (1, 1), 1)
    ty = TF.conv2d(torch.tensor(x), torch.tensor(w), padding=1).numpy()
    tdx = torch.nn.grad.conv2d_input(x.shape, torch.tensor(w), torch.tensor(gy), padding=1).numpy()
    y = F.conv2d(x, w, padding=1)
    dx = G.conv2d_input(x.shape, w, gy, padding=1)
    rel = max(max_error(y, y64) / np.abs(y64).max(), max_error(dx, dx64) / np.abs(dx64).max())
    print(f"{winograd} worst error / max |reference| (isa {isa}): {rel:.2e}")
    if winograd == "winograd4":
        # F(4x4, 3x3) at 512 channels is outside STYLE 7's rule (about 40x torch's error); what
        # it promises is an error below 3e-5 of the largest output.
        assert rel < 3e-5
        return
    assert_no_worse_than(y, ty, y64, name="winograd forward float32 vs torch")
    assert_no_worse_than(dx, tdx, dx64, name="winograd input gradient float32 vs torch")
    assert rel < 2e-6
    # The float32 table (atol scaled like the inputs) holds elementwise for reductions of up to
    # 128 channels (1152 terms): over 25 seeds of the 1e4-magnitude case the worst element used
    # under 0.82 of it at 128 channels, but up to 1.04 at 256 (the baseline ISA; CI met a 1.04,
    # 2026-12-04), and ~1.5x at 512. Past 128 channels STYLE 7's rule above is the criterion.
    rtol, atol = 2e-5, 1e-4 * scale
    if c <= 128:
        assert_close(y, y64, rtol=rtol, atol=atol, name="F(2x2) forward, float32 table")
    if k <= 128:
        assert_close(dx, dx64, rtol=rtol, atol=atol, name="F(2x2) input gradient, float32 table")


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_winograd_nonfinite_like_gemm(isa, rng, dtype, algo):
    """NaN and inf give what the direct path gives: a non-finite value spreads to its 6x6 tile
    patch in the transforms, so the kernel falls back to the GEMM path when an output is not
    finite, also where the non-finite value feeds no output at all (the first row of dY of a
    padding-3 convolution reaches no input pixel)."""
    x, w = randn(rng, (1, 3, 10, 9), dtype), randn(rng, (4, 3, 3, 3), dtype)
    x[0, 1, 2, 3] = np.nan
    x[0, 0, 7, 7] = np.inf
    y_ref = ref.conv2d(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    with conv_algo(algo):
        y = np.full(y_ref.shape, 7.0, dtype)
        _C.conv2d_forward(x, w, None, y, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    with conv_algo("gemm"):
        y_gemm = F.conv2d(x, w, padding=1)
    np.testing.assert_array_equal(np.isfinite(y), np.isfinite(y_ref))
    np.testing.assert_array_equal(y, y_gemm)

    # Input gradient of a padding-3 convolution: the last row of dY reaches no input pixel, but it
    # lies in the last row of tiles (H = 9 is no multiple of 2 or 4).
    xshape = (1, 3, 9, 8)
    gy = randn(rng, (1, 4, 13, 12), dtype)
    gy[0, 2, 12, 5] = np.nan
    dx_ref = ref.conv2d_input(gy, w, xshape, (1, 1), (3, 3, 3, 3), (1, 1), 1)
    assert np.isfinite(dx_ref).all()
    for weight_inf in (False, True):
        if weight_inf:
            w[2, 1, 0, 0] = np.inf
        with conv_algo(algo):
            dx = G.conv2d_input(xshape, w, gy, padding=3)
        with conv_algo("gemm"):
            dx_gemm = G.conv2d_input(xshape, w, gy, padding=3)
        np.testing.assert_array_equal(dx, dx_gemm)


def test_winograd_numerical_gradient(rng, winograd):
    import fastconv
    x, w, b = randn(rng, (2, 3, 6, 5)), randn(rng, (4, 3, 3, 3)), randn(rng, (4,))
    gradcheck_autograd(lambda x, w, b: fastconv.nn.functional.conv2d(x, w, b, padding=1),
                       [x, w, b], rng, name="conv2d winograd")


def test_conv_algo_switch_errors():
    assert _C.conv_algo() in ("auto", "winograd", "gemm")
    with pytest.raises(ValueError, match="expected 'auto', 'winograd', 'winograd4' or 'gemm', got 'fft'"):
        _C.set_conv_algo("fft")
    for name in ("winograd", "winograd4", "gemm", "auto"):
        with conv_algo(name):
            assert _C.conv_algo() == name


def test_conv_algo_environment_variable(tmp_path):
    code = "from fastconv import _C; print(_C.conv_algo())"
    for value, expected in (("winograd", "winograd"), ("winograd4", "winograd4"), ("gemm", "gemm"),
                            ("bogus", "auto")):
        env = dict(os.environ, FASTCONV_CONV_ALGO=value,
                   PYTHONPATH=os.pathsep.join(p for p in sys.path if p))  # this fastconv
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             check=True, cwd=tmp_path).stdout.strip()
        assert out == expected
