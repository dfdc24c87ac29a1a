"""Dense and grouped conv2d CUDA kernels (csrc/cuda/conv2d_cuda.cu through fastconv._gpu.conv_dense)
under the CPU emulation: forward, input and weight gradients against ref.py (float64 tight, float32
by the tolerance table) and the CPU path, on the CPU suite's case list, every tile configuration,
tiles that do not divide M/N/K, the 1x1 GEMM path, split-K (forced and heuristic, bitwise
deterministic), float16 and bfloat16 with bounds derived from the accumulation length, poisoned
outputs, empty batches and bad arguments. GPU cases (marked gpu) against torch CUDA (cuDNN)."""
import numpy as np
import pytest
from hypothesis import given, settings

import fastconv
import fastconv.nn.functional as F
import fastconv.nn.grad as G
from fastconv import ref
from fastconv._gpu import conv_dense as cd
from fastconv._gpu.backend import EmulationBackend
from fastconv.testing import assert_close
from helpers import conv_config, poisoned, randn
from test_conv2d import CASES, conv_shapes

TILES = (0, 1, 2)  # 128x128, 64x64, 32x32 block tiles


@pytest.fixture(scope="module")
def be():
    return EmulationBackend()


def _resolved(xshape, wshape, stride, padding, dilation):
    s, pad, d = conv_config(xshape, wshape, stride, padding, dilation)
    P = fastconv._shape.output_size(xshape[2], wshape[2], s[0], pad[0], pad[1], d[0], False)
    Q = fastconv._shape.output_size(xshape[3], wshape[3], s[1], pad[2], pad[3], d[1], False)
    return s, pad, d, (P, Q)


def check_dense(be, rng, xshape, wshape, bias, stride, padding, dilation, groups, dtype,
                tile=-1, splits=0, cpu=True):
    """conv_dense's three directions vs ref.py (and the CPU path when cpu), then the bindings
    again with NaN-poisoned outputs, which must give the same bits."""
    s, pad, d, out_hw = _resolved(xshape, wshape, stride, padding, dilation)
    x, w = randn(rng, xshape, dtype), randn(rng, wshape, dtype)
    b = randn(rng, (wshape[0],), dtype) if bias else None
    y_ref = ref.conv2d(x, w, b, s, pad, d, groups)
    gy = randn(rng, y_ref.shape, dtype)
    dx_ref = ref.conv2d_input(gy, w, xshape, s, pad, d, groups)
    dw_ref = ref.conv2d_weight(gy, x, wshape, s, pad, d, groups)

    y = cd.conv2d(be, x, w, b, s, pad, d, groups, out_hw, tile=tile)
    dx = cd.conv2d_backward_input(be, gy, w, xshape, s, pad, d, groups, tile=tile)
    dw = cd.conv2d_backward_weight(be, gy, x, wshape, s, pad, d, groups, tile=tile, splits=splits)
    assert y.dtype == dx.dtype == dw.dtype == dtype
    assert_close(y, y_ref, dtype, name="conv2d")
    assert_close(dx, dx_ref, dtype, name="conv2d_backward_input")
    assert_close(dw, dw_ref, dtype, name="conv2d_backward_weight")
    if cpu:
        args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        assert_close(y, F.conv2d(x, w, b, **args), dtype, name="conv2d vs CPU")
        assert_close(dx, G.conv2d_input(xshape, w, gy, **args), dtype, name="dgrad vs CPU")
        assert_close(dw, G.conv2d_weight(x, wshape, gy, **args), dtype, name="wgrad vs CPU")

    code = be.dtype_code("t", "x", x)
    out = poisoned(y_ref.shape, dtype)
    be.mod.conv2d_forward(code, be.ptr(x), be.ptr(w), be.ptr(b), be.ptr(out), xshape, wshape, s,
                          pad, d, groups, tile, 0)
    np.testing.assert_array_equal(out, y)
    dxp = poisoned(xshape, dtype)
    be.mod.conv2d_backward_input(code, be.ptr(gy), be.ptr(w), be.ptr(dxp), xshape, wshape, s, pad,
                                 d, groups, tile, 0)
    np.testing.assert_array_equal(dxp, dx)
    dwp = poisoned(wshape, dtype)
    nbytes = be.mod.conv2d_backward_weight_workspace_bytes(code, xshape, wshape, s, pad, d, groups,
                                                           tile, splits)
    ws = np.full(max(nbytes // 4, 1), np.nan, np.float32)  # poisoned workspace too
    be.mod.conv2d_backward_weight(code, be.ptr(gy), be.ptr(x), be.ptr(dwp), be.ptr(ws), nbytes,
                                  xshape, wshape, s, pad, d, groups, tile, splits, 0)
    np.testing.assert_array_equal(dwp, dw)


# ---- the CPU suite's cases ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", (np.float64, np.float32), ids=("float64", "float32"))
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_cpu_cases(be, rng, case, dtype):
    check_dense(be, rng, *case, dtype)


GROUPED = {
    "groups4_stride2_dil2": ((2, 8, 11, 10), (12, 2, 3, 3), True, 2, 2, 2, 4),
    "groups3_asym_pad": ((1, 9, 7, 8), (6, 3, 2, 3), False, (1, 2), (0, 2, 1, 1), 1, 3),
    "groups2_same_stride2": ((2, 6, 9, 9), (4, 3, 3, 3), True, 2, "same", 1, 2),
    "groups5_cg1": ((1, 5, 6, 6), (10, 1, 3, 3), True, 1, 1, 1, 5),
    "groups2_1x1": ((2, 6, 4, 5), (10, 3, 1, 1), True, 1, 0, 1, 2),
}


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("case", GROUPED.values(), ids=GROUPED.keys())
def test_grouped_every_tile(be, rng, case, tile):
    check_dense(be, rng, *case, np.float32, tile=tile)


# ---- tiles that do not divide M / N / K ---------------------------------------------------------

EDGES = {
    # forward M = K = 70, N = P*Q = 47, Kd = 13*9 = 117; dgrad M = 13, Kd = 70*9
    "k70_c13_pq47": ((1, 13, 1, 47), (70, 13, 3, 3), True, 1, 1, 1, 1),
    # 1x1 GEMM path with the same awkward sizes: N = 47 pixels, Kd = 13
    "k70_c13_pq47_1x1": ((1, 13, 1, 47), (70, 13, 1, 1), True, 1, 0, 1, 1),
    "odd_everything": ((2, 7, 5, 9), (33, 7, 3, 2), True, (2, 1), (1, 0, 0, 1), (1, 2), 1),
}


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("case", EDGES.values(), ids=EDGES.keys())
def test_tiles_not_dividing(be, rng, case, tile):
    check_dense(be, rng, *case, np.float32, tile=tile)


@pytest.mark.parametrize("tile", TILES)
def test_tiles_not_dividing_float64(be, rng, tile):
    check_dense(be, rng, *EDGES["k70_c13_pq47"], np.float64, tile=tile)


STRIDED_DGRAD = {
    # the input gradient runs one GEMM per stride phase over the taps that reach it
    "s2_d2_gcd2": ((1, 3, 11, 10), (4, 3, 3, 3), False, 2, 2, 2, 1),
    "s4_d2": ((1, 2, 13, 14), (3, 2, 5, 4), True, 4, (3, 1, 0, 2), 2, 1),
    "s3_d3_pad_odd": ((2, 2, 10, 9), (2, 2, 3, 2), True, 3, (2, 0, 1, 1), 3, 1),
    "s3_k2_phase_without_taps": ((1, 3, 10, 8), (4, 3, 2, 2), True, 3, 0, 1, 1),
    "input_smaller_than_stride": ((2, 2, 2, 5), (3, 2, 1, 1), True, 3, 0, 1, 1),
    "s2_1x1_grouped": ((1, 6, 9, 7), (4, 3, 1, 1), True, 2, 0, 1, 2),
}


@pytest.mark.parametrize("tile", (-1, 0, 2))
@pytest.mark.parametrize("case", STRIDED_DGRAD.values(), ids=STRIDED_DGRAD.keys())
def test_strided_input_gradient_phases(be, rng, case, tile):
    check_dense(be, rng, *case, np.float64, tile=tile, cpu=False)


def test_one_by_one_gemm_path(be, rng):
    """1x1 stride-1 unpadded: plain GEMMs (batch of 3 so the pixel columns cross images)."""
    for case in (((3, 8, 5, 5), (16, 8, 1, 1), True, 1, 0, 1, 1),
                 ((3, 9, 3, 7), (6, 3, 1, 1), False, 1, 0, 1, 3)):
        for tile in (-1, 2):
            check_dense(be, rng, *case, np.float64, tile=tile)


# ---- split-K weight gradient ------------------------------------------------------------------

SPLITK = ((2, 3, 16, 16), (2, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1)  # output 54, reduction 512


def test_split_k_heuristic_engages(be):
    s, pad, d, groups = (1, 1), (1, 1, 1, 1), (1, 1), 1
    n = be.mod.conv2d_backward_weight_workspace_bytes(0, SPLITK[0], SPLITK[1], s, pad, d, groups)
    assert n > 0 and n % (4 * 2 * 3 * 9) == 0  # splits x K x C x R x S float partials
    n64 = be.mod.conv2d_backward_weight_workspace_bytes(3, SPLITK[0], SPLITK[1], s, pad, d, groups)
    assert n64 == 2 * n  # double partials for float64
    # a large output needs no split
    assert be.mod.conv2d_backward_weight_workspace_bytes(0, (1, 256, 8, 8), (256, 256, 3, 3), s,
                                                         pad, d, groups) == 0


@pytest.mark.parametrize("dtype", (np.float64, np.float32), ids=("float64", "float32"))
@pytest.mark.parametrize("splits", (0, 1, 2, 3, 7))
def test_split_k(be, rng, splits, dtype):
    xshape, wshape, stride, pad, dil, groups = SPLITK
    x, gy = randn(rng, xshape, dtype), randn(rng, (2, 2, 16, 16), dtype)
    dw = cd.conv2d_backward_weight(be, gy, x, wshape, stride, pad, dil, groups, splits=splits)
    assert_close(dw, ref.conv2d_weight(gy, x, wshape, stride, pad, dil, groups), dtype,
                 name=f"split-K wgrad ({splits} splits)")


def test_split_k_grouped_and_strided(be, rng):
    case = ((2, 4, 13, 11), (4, 2, 3, 3), True, 2, (1, 0, 2, 1), (1, 2), 2)
    for splits in (2, 5):
        check_dense(be, rng, *case, np.float32, tile=2, splits=splits, cpu=False)


@pytest.mark.parametrize("splits", (0, 1, 4))
def test_wgrad_deterministic(be, rng, splits):
    xshape, wshape, stride, pad, dil, groups = SPLITK
    x, gy = randn(rng, xshape, np.float32), randn(rng, (2, 2, 16, 16), np.float32)
    a = cd.conv2d_backward_weight(be, gy, x, wshape, stride, pad, dil, groups, splits=splits)
    b = cd.conv2d_backward_weight(be, gy, x, wshape, stride, pad, dil, groups, splits=splits)
    assert a.tobytes() == b.tobytes()


# ---- 16-bit storage ----------------------------------------------------------------------------

# The smallest subnormal of the 16-bit type with that epsilon: below 2^-14 (float16) the output
# rounds to multiples of it, not to out_eps relative.
_SUBNORMAL = {2.0**-10: 2.0**-24, 2.0**-7: 2.0**-133}


def _bound(absref, kd, out_eps):
    """Largest error allowed for a 16-bit result whose float64 reference of the rounded inputs is
    ref: the output rounding (half an ulp, out_eps/2 relative, of |value| <= absref, and at least
    half the smallest subnormal) plus the float32 accumulation over kd terms (kd * 2^-24 of the
    sum of |terms|), with 2x headroom."""
    rounding = np.maximum(0.5 * out_eps * absref, 0.5 * _SUBNORMAL[out_eps])
    return 2.0 * (rounding + kd * 2.0**-24 * absref) + 1e-30


def _check16(actual, expected, absref, kd, eps, name):
    err = np.abs(actual.astype(np.float64) - expected)
    bound = _bound(absref, kd, eps)
    worst = np.argmax(err - bound)
    where = np.unravel_index(worst, err.shape)
    assert np.all(err <= bound), (f"{name}: error {err.flat[worst]:.3g} exceeds "
                                  f"{bound.flat[worst]:.3g} at {where}")


HALF_CASES = {
    "3x3_pad1": ((2, 3, 8, 8), (4, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "grouped_strided": ((1, 6, 9, 8), (9, 2, 3, 3), (2, 1), (1, 1, 0, 1), (1, 2), 3),
    "1x1": ((2, 8, 5, 5), (16, 8, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "split_k": SPLITK,
    "k70_c13_pq47": ((1, 13, 1, 47), (70, 13, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "k70_c13_pq47_1x1": ((1, 13, 1, 47), (70, 13, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
}
TILES16 = (3, 4, 2, 0)  # tensor cores 64x64 (the default here) and 128x128, SIMT 32x32, 128x128


def _half_inputs(rng, xshape, wshape, yshape, round_):
    x, w = round_(randn(rng, xshape)), round_(randn(rng, wshape))
    b, gy = round_(randn(rng, (wshape[0],))), round_(randn(rng, yshape))
    return x, w, b, gy


def _refs(x, w, b, gy, xshape, wshape, st, pad, dl, groups):
    y = ref.conv2d(x, w, b, st, pad, dl, groups)
    ya = ref.conv2d(np.abs(x), np.abs(w), np.abs(b), st, pad, dl, groups)
    dx = ref.conv2d_input(gy, w, xshape, st, pad, dl, groups)
    dxa = ref.conv2d_input(np.abs(gy), np.abs(w), xshape, st, pad, dl, groups)
    dw = ref.conv2d_weight(gy, x, wshape, st, pad, dl, groups)
    dwa = ref.conv2d_weight(np.abs(gy), np.abs(x), wshape, st, pad, dl, groups)
    return (y, ya), (dx, dxa), (dw, dwa)


def _yshape(xshape, wshape, st, pad, dl):
    P = fastconv._shape.output_size(xshape[2], wshape[2], st[0], pad[0], pad[1], dl[0], False)
    Q = fastconv._shape.output_size(xshape[3], wshape[3], st[1], pad[2], pad[3], dl[1], False)
    return (xshape[0], wshape[0], P, Q)


@pytest.mark.parametrize("tile", TILES16)
@pytest.mark.parametrize("case", HALF_CASES.values(), ids=HALF_CASES.keys())
def test_float16(be, rng, case, tile):
    xshape, wshape, st, pad, dl, groups = case
    yshape = _yshape(xshape, wshape, st, pad, dl)
    r16 = lambda a: a.astype(np.float16).astype(np.float64)
    x, w, b, gy = _half_inputs(rng, xshape, wshape, yshape, r16)
    (y, ya), (dx, dxa), (dw, dwa) = _refs(x, w, b, gy, xshape, wshape, st, pad, dl, groups)
    h = lambda a: a.astype(np.float16)
    yh = cd.conv2d(be, h(x), h(w), h(b), st, pad, dl, groups, yshape[2:], tile=tile)
    dxh = cd.conv2d_backward_input(be, h(gy), h(w), xshape, st, pad, dl, groups, tile=tile)
    dwh = cd.conv2d_backward_weight(be, h(gy), h(x), wshape, st, pad, dl, groups, tile=tile)
    assert yh.dtype == dxh.dtype == dwh.dtype == np.float16
    eps = 2.0**-10
    RS = wshape[2] * wshape[3]
    _check16(yh, y, ya, wshape[1] * RS, eps, "float16 conv2d")
    _check16(dxh, dx, dxa, wshape[0] // groups * RS, eps, "float16 dgrad")
    _check16(dwh, dw, dwa, yshape[0] * yshape[2] * yshape[3], eps, "float16 wgrad")


def _to_bf16_bits(a):
    """float values -> bfloat16 bit patterns (uint16), round to nearest even."""
    u = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def _from_bf16_bits(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


@pytest.mark.parametrize("tile", TILES16)
@pytest.mark.parametrize("case", HALF_CASES.values(), ids=HALF_CASES.keys())
def test_bfloat16(be, rng, case, tile):
    """bfloat16 (dtype code 2) through the bindings directly, on uint16 bit patterns."""
    xshape, wshape, st, pad, dl, groups = case
    yshape = _yshape(xshape, wshape, st, pad, dl)
    rb = lambda a: _from_bf16_bits(_to_bf16_bits(a))
    x, w, b, gy = _half_inputs(rng, xshape, wshape, yshape, rb)
    (y, ya), (dx, dxa), (dw, dwa) = _refs(x, w, b, gy, xshape, wshape, st, pad, dl, groups)
    xb, wb, bb, gyb = (_to_bf16_bits(a) for a in (x, w, b, gy))
    out = np.full(yshape, 0xFFFF, np.uint16)  # NaN bit patterns
    be.mod.conv2d_forward(2, be.ptr(xb), be.ptr(wb), be.ptr(bb), be.ptr(out), xshape, wshape, st,
                          pad, dl, groups, tile, 0)
    dxb = np.full(xshape, 0xFFFF, np.uint16)
    be.mod.conv2d_backward_input(2, be.ptr(gyb), be.ptr(wb), be.ptr(dxb), xshape, wshape, st, pad,
                                 dl, groups, tile, 0)
    dwb = np.full(wshape, 0xFFFF, np.uint16)
    nbytes = be.mod.conv2d_backward_weight_workspace_bytes(2, xshape, wshape, st, pad, dl, groups,
                                                           tile, 0)
    ws = np.empty(max(nbytes, 1), np.uint8)
    be.mod.conv2d_backward_weight(2, be.ptr(gyb), be.ptr(xb), be.ptr(dwb), be.ptr(ws), nbytes,
                                  xshape, wshape, st, pad, dl, groups, tile, 0, 0)
    eps = 2.0**-7
    RS = wshape[2] * wshape[3]
    _check16(_from_bf16_bits(out), y, ya, wshape[1] * RS, eps, "bfloat16 conv2d")
    _check16(_from_bf16_bits(dxb), dx, dxa, wshape[0] // groups * RS, eps, "bfloat16 dgrad")
    _check16(_from_bf16_bits(dwb), dw, dwa, yshape[0] * yshape[2] * yshape[3], eps,
             "bfloat16 wgrad")


# ---- layouts, empty batches, errors --------------------------------------------------------------

def test_non_contiguous_inputs(be, rng):
    """Channels-last and strided views are made contiguous by the twin."""
    x = randn(rng, (2, 6, 7, 3), np.float32).transpose(0, 3, 1, 2)  # NHWC memory, NCHW shape
    w = randn(rng, (8, 3, 3, 3), np.float32)[:, :, ::-1, :]
    y = cd.conv2d(be, x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1, (6, 7))
    assert_close(y, ref.conv2d(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1), np.float32)


def test_empty_batch_launches_nothing(rng):
    be = EmulationBackend()
    be.mod = None  # any launch or query would fail
    x, w = randn(rng, (0, 4, 6, 6), np.float32), randn(rng, (6, 2, 3, 3), np.float32)
    gy = randn(rng, (0, 6, 6, 6), np.float32)
    y = cd.conv2d(be, x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 2, (6, 6))
    assert y.shape == (0, 6, 6, 6) and y.dtype == np.float32
    dx = cd.conv2d_backward_input(be, gy, w, (0, 4, 6, 6), (1, 1), (1, 1, 1, 1), (1, 1), 2)
    assert dx.shape == (0, 4, 6, 6)
    dw = cd.conv2d_backward_weight(be, gy, x, (6, 2, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2)
    assert dw.shape == (6, 2, 3, 3) and not dw.any()


def test_bad_arguments_raise(be, rng):
    x, w = randn(rng, (1, 4, 6, 6), np.float32), randn(rng, (6, 3, 3, 3), np.float32)
    y = np.empty((1, 6, 4, 4), np.float32)
    s, p, d = (1, 1), (0, 0, 0, 0), (1, 1)
    with pytest.raises(ValueError, match="3 input channels per group but input has 4"):
        be.mod.conv2d_forward(0, be.ptr(x), be.ptr(w), 0, be.ptr(y), x.shape, w.shape, s, p, d, 1,
                              -1, 0)
    w = randn(rng, (6, 4, 3, 3), np.float32)
    with pytest.raises(ValueError, match="tile"):
        be.mod.conv2d_forward(0, be.ptr(x), be.ptr(w), 0, be.ptr(y), x.shape, w.shape, s, p, d, 1,
                              5, 0)
    x64, w64, y64 = (a.astype(np.float64) for a in (x, w, y))
    with pytest.raises(ValueError, match="tile 4 .tensor cores. needs float32 .TF32., float16 or "
                                         "bfloat16"):
        be.mod.conv2d_forward(3, be.ptr(x64), be.ptr(w64), 0, be.ptr(y64), x.shape, w.shape, s, p,
                              d, 1, 4, 0)
    with pytest.raises(TypeError, match="unknown dtype code 9"):
        be.mod.conv2d_forward(9, be.ptr(x), be.ptr(w), 0, be.ptr(y), x.shape, w.shape, s, p, d, 1,
                              -1, 0)
    with pytest.raises(ValueError, match="out_hw"):
        cd.conv2d(be, x, w, None, s, p, d, 1, (5, 5))
    x, gy = randn(rng, (2, 4, 12, 12), np.float32), randn(rng, (2, 6, 10, 10), np.float32)
    dw = np.empty(w.shape, np.float32)
    need = be.mod.conv2d_backward_weight_workspace_bytes(0, x.shape, w.shape, s, p, d, 1, 2, 2)
    assert need > 0
    with pytest.raises(ValueError, match="workspace"):
        be.mod.conv2d_backward_weight(0, be.ptr(gy), be.ptr(x), be.ptr(dw), 0, 0, x.shape,
                                      w.shape, s, p, d, 1, 2, 2, 0)


# ---- random shapes -----------------------------------------------------------------------------

@settings(max_examples=25)
@given(conv_shapes())
def test_random_shapes_vs_ref(be, c):
    rng = np.random.default_rng(c["seed"])
    check_dense(be, rng, c["xshape"], c["wshape"], c["bias"], c["stride"], c["padding"],
                c["dilation"], c["groups"], np.float64, tile=int(rng.integers(-1, 3)), cpu=False)


@settings(max_examples=20)
@given(conv_shapes())
def test_random_shapes_float16_tensor_cores(be, c):
    """float16 on the WMMA path (and bias always) for random geometry, bounds as test_float16."""
    rng = np.random.default_rng(c["seed"])
    xshape, wshape, groups = c["xshape"], c["wshape"], c["groups"]
    st, pad, dl, out_hw = _resolved(xshape, wshape, c["stride"], c["padding"], c["dilation"])
    yshape = (xshape[0], wshape[0]) + out_hw
    r16 = lambda a: a.astype(np.float16).astype(np.float64)
    x, w, b, gy = _half_inputs(rng, xshape, wshape, yshape, r16)
    (y, ya), (dx, dxa), (dw, dwa) = _refs(x, w, b, gy, xshape, wshape, st, pad, dl, groups)
    h = lambda a: a.astype(np.float16)
    RS = wshape[2] * wshape[3]
    _check16(cd.conv2d(be, h(x), h(w), h(b), st, pad, dl, groups, out_hw), y, ya, wshape[1] * RS,
             2.0**-10, "float16 conv2d")
    _check16(cd.conv2d_backward_input(be, h(gy), h(w), xshape, st, pad, dl, groups), dx, dxa,
             wshape[0] // groups * RS, 2.0**-10, "float16 dgrad")
    _check16(cd.conv2d_backward_weight(be, h(gy), h(x), wshape, st, pad, dl, groups), dw, dwa,
             int(np.prod(yshape)) // wshape[0], 2.0**-10, "float16 wgrad")


# ---- on a GPU, against cuDNN -------------------------------------------------------------------

needs_gpu = pytest.mark.skipif(not fastconv.cuda_available(),
                               reason="needs a CUDA GPU and the fastconv._cuda module")

GPU_CASES = {
    "resnet_3x3": ((4, 64, 28, 28), (64, 64, 3, 3), 1, 1, 1, 1),
    "stride2": ((2, 32, 29, 31), (48, 32, 3, 3), 2, 1, 1, 1),
    "grouped": ((2, 64, 14, 14), (128, 8, 3, 3), 1, 1, 1, 8),
    "1x1": ((4, 96, 14, 14), (70, 96, 1, 1), 1, 0, 1, 1),
    "7x7_stride2": ((2, 3, 64, 64), (64, 3, 7, 7), 2, 3, 1, 1),
    "split_k": ((16, 64, 28, 28), (32, 64, 3, 3), 1, 1, 1, 1),
}


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", ("float32", "tf32", "float16", "bfloat16"))
@pytest.mark.parametrize("case", GPU_CASES.values(), ids=GPU_CASES.keys())
def test_gpu_vs_cudnn(case, dtype):
    """CuPy arrays (float32, float16) or torch CUDA tensors (bfloat16: CuPy has no bfloat16)
    through the twin, against cuDNN and a float64 cuDNN reference of the same inputs; float32 also
    against the emulation. "tf32": float32 arrays with fastconv.backends.cuda.allow_tf32 and
    torch.backends.cudnn.allow_tf32 on (torch's default), else both off."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    from fastconv._gpu import backend_for_array
    xshape, wshape, stride, padding, dil, groups = case
    dev = torch.device("cuda")
    tf32 = dtype == "tf32"
    tdt = torch.float32 if tf32 else getattr(torch, dtype)
    gen = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(xshape, device=dev, generator=gen).to(tdt)
    w = (torch.randn(wshape, device=dev, generator=gen) * 0.1).to(tdt)
    b = torch.randn(wshape[0], device=dev, generator=gen).to(tdt)
    s, pad, d, out_hw = _resolved(xshape, wshape, stride, padding, dil)
    x64, w64, b64 = (t.double().requires_grad_() for t in (x, w, b))
    y64 = torch.nn.functional.conv2d(x64, w64, b64, s, padding, d, groups)
    gy = torch.randn(y64.shape, device=dev, generator=gen).to(tdt)
    y64.backward(gy.double())
    if dtype == "bfloat16":
        arr, back = (lambda t: t), (lambda a: a)
    else:
        import cupy
        arr, back = cupy.from_dlpack, torch.from_dlpack
    xa, wa, ba, gya = (arr(t) for t in (x, w, b, gy))
    be = backend_for_array("conv2d", "input", xa)
    fastconv.backends.cuda.allow_tf32 = tf32
    try:
        y = back(cd.conv2d(be, xa, wa, ba, s, pad, d, groups, out_hw))
        dx = back(cd.conv2d_backward_input(be, gya, wa, xshape, s, pad, d, groups))
        dw = back(cd.conv2d_backward_weight(be, gya, xa, wshape, s, pad, d, groups))
    finally:
        fastconv.backends.cuda.allow_tf32 = False
    xc, wc, bc = (t.detach().clone().requires_grad_() for t in (x, w, b))
    torch_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        yc = torch.nn.functional.conv2d(xc, wc, bc, s, padding, d, groups)
        yc.backward(gy)
    finally:
        torch.backends.cudnn.allow_tf32 = torch_tf32
    # Each result element against float64 within the a-priori bound of a float32 accumulation
    # of its n products (n * 2^-24 * the sum of their magnitudes, any summation order) plus the
    # rounding to the storage type: a criterion of the arithmetic, not of how close cuDNN's
    # algorithm happens to come (its float32 dgrad was 8x closer than a plain sum on resnet_3x3).
    # TF32 adds the rounding of both factors to 11 significant bits: (2 * 2^-11 + 2^-22) * the
    # same sum.
    ax, aw, ab, agy = (t.detach().abs() for t in (x64, w64, b64, gy.double()))
    tg = torch.nn.grad
    C, K, RS = xshape[1], wshape[0], wshape[2] * wshape[3]
    mags = (torch.nn.functional.conv2d(ax, aw, ab, s, padding, d, groups),
            tg.conv2d_input(xshape, aw, agy, s, padding, d, groups),
            tg.conv2d_weight(ax, wshape, agy, s, padding, d, groups))
    terms = (C // groups * RS + 1, K // groups * RS, y64.shape[0] * y64.shape[2] * y64.shape[3])
    u_out = {"float32": 2.0 ** -24, "tf32": 2.0 ** -24, "float16": 2.0 ** -11,
             "bfloat16": 2.0 ** -8}[dtype]
    u_in = 2 * 2.0 ** -11 + 2.0 ** -22 if tf32 else 0.0
    tiny = 2.0 ** -24 if dtype == "float16" else 0.0  # float16's subnormal spacing
    for (name, ours, theirs, exact), mag, n in zip(
            (("y", y, yc, y64), ("dx", dx, xc.grad, x64.grad), ("dw", dw, wc.grad, w64.grad)),
            mags, terms):
        exact = exact.detach()
        err = (ours.double() - exact).abs()
        bound = 1.05 * ((u_in + n * 2.0 ** -24) * mag + u_out * exact.abs()) + tiny
        worst = (err - bound).max().item()
        e_cudnn = (theirs.double() - exact).abs().max().item()
        assert worst <= 0, (f"{name} {dtype}: error beyond the accumulation bound by {worst:.3g} "
                            f"(max error ours {err.max().item():.3g}, cuDNN {e_cudnn:.3g})")
    if dtype == "float32" and xshape[0] <= 4 and xshape[1] <= 64:
        emu = EmulationBackend()
        xn, wn, bn = (t.cpu().numpy() for t in (x, w, b))
        y_emu = cd.conv2d(emu, xn, wn, bn, s, pad, d, groups, out_hw)
        assert_close(y.cpu().numpy(), y_emu, np.float32, name="GPU vs emulation")
