"""TF32 tensor cores for float32 dense and grouped conv2d (csrc/cuda/conv2d_cuda.cu, tiles 3 and 4 on
float; fastconv.backends.cuda.allow_tf32) under the CPU emulation: forward, input and weight
gradients on every geometry family of the float32 tests (groups, stride, dilation, padding,
asymmetric, odd sizes, tile edges, 1x1, stride phases, split-K) against float64 within the derived
TF32 bound, and against a numpy model of the rounding (each input rounded to TF32, nearest, ties
away from zero), so that TF32 demonstrably happened; the switch (off: bit for bit the float32 SIMT
path; not a bool: TypeError), the heuristic's choice, bad tiles, and the autotuner's candidates and
cache key. conftest.py turns the switch off for every other test, as torch's suite does."""
import numpy as np
import pytest

import fastconv
import fastconv.nn.functional as F
import fastconv.nn.grad as G
from fastconv import backends, ref
from fastconv._gpu import autotune
from fastconv._gpu import conv_dense as cd
from fastconv._gpu.backend import EmulationBackend
from fastconv.testing import cuda_emulation
from helpers import randn
from test_conv2d import CASES
from test_conv2d_cuda import EDGES, GROUPED, SPLITK, STRIDED_DGRAD, _resolved

U11 = 2.0**-11  # TF32 keeps 11 significant bits: rounding to nearest errs by at most 2^-11 relative
U24 = 2.0**-24  # float32's unit roundoff


@pytest.fixture(scope="module")
def be():
    return EmulationBackend()


@pytest.fixture
def tf32_on():
    backends.cuda.allow_tf32 = True
    yield
    backends.cuda.allow_tf32 = False


def tf32(a):
    """float32 -> the nearest TF32 value, ties away from zero (cvt.rna.tf32.f32), as float32."""
    u = np.asarray(a, np.float32).view(np.uint32)
    finite = (u & np.uint32(0x7F800000)) != np.uint32(0x7F800000)
    r = np.where(finite, (u + np.uint32(0x1000)) & np.uint32(0xFFFFE000), u)
    return r.astype(np.uint32).view(np.float32)


def _abs(a):
    return None if a is None else np.abs(a)


def _run(be, x, w, b, gy, geo, tile, splits=0):
    s, pad, d, groups, out_hw = geo
    return (cd.conv2d(be, x, w, b, s, pad, d, groups, out_hw, tile=tile),
            cd.conv2d_backward_input(be, gy, w, x.shape, s, pad, d, groups, tile=tile),
            cd.conv2d_backward_weight(be, gy, x, w.shape, s, pad, d, groups, tile=tile,
                                      splits=splits))


def _refs(x, w, b, gy, geo):
    """float64 results of the three directions for these inputs, and of their magnitudes (each
    element's sum of |products|)."""
    s, pad, d, groups, _ = geo
    return ((ref.conv2d(x, w, b, s, pad, d, groups),
             ref.conv2d_input(gy, w, x.shape, s, pad, d, groups),
             ref.conv2d_weight(gy, x, w.shape, s, pad, d, groups)),
            (ref.conv2d(np.abs(x), np.abs(w), _abs(b), s, pad, d, groups),
             ref.conv2d_input(np.abs(gy), np.abs(w), x.shape, s, pad, d, groups),
             ref.conv2d_weight(np.abs(gy), np.abs(x), w.shape, s, pad, d, groups)))


def _terms(xshape, wshape, yshape, groups, bias):
    """Products summed per result element: forward C/groups*R*S (+ the bias), input gradient at
    most K/groups*R*S, weight gradient N*P*Q."""
    RS = wshape[2] * wshape[3]
    return (wshape[1] * RS + bias, wshape[0] // groups * RS, yshape[0] * yshape[2] * yshape[3])


def _check(actual, expected, mag, rel, name):
    """|actual - expected| <= 1.05 * (rel * mag + 2^-24 |expected|) elementwise (the float32
    output rounding beside the a-priori bound rel of the sum of |products| mag)."""
    err = np.abs(actual.astype(np.float64) - expected)
    bound = 1.05 * (rel * mag + U24 * np.abs(expected)) + 1e-30
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), (f"{name}: error {err[worst]:.3g} exceeds {bound[worst]:.3g} at "
                                  f"{worst} (actual {actual[worst]!r}, expected {expected[worst]!r})")


def check_tf32(be, rng, xshape, wshape, bias, stride, padding, dilation, groups, tile, splits=0):
    """The three directions on TF32 tiles against (1) float64 within the derived TF32 bound
    (2 * 2^-11 + 2^-22 + n * 2^-24) * sum|products| (each input rounded to 11 significant bits,
    then a float32 sum of n terms), and (2) the model: float64 of the TF32-rounded inputs, within
    the float32 accumulation alone (n * 2^-24 * sum|products|)."""
    s, pad, d, out_hw = _resolved(xshape, wshape, stride, padding, dilation)
    geo = (s, pad, d, groups, out_hw)
    yshape = (xshape[0], wshape[0]) + out_hw
    x, w = randn(rng, xshape, np.float32), randn(rng, wshape, np.float32)
    b = randn(rng, (wshape[0],), np.float32) if bias else None
    gy = randn(rng, yshape, np.float32)
    got = _run(be, x, w, b, gy, geo, tile, splits)
    exact, mags = _refs(x, w, b, gy, geo)
    model, _ = _refs(tf32(x), tf32(w), b, tf32(gy), geo)  # the bias is added in float32
    names = ("conv2d", "conv2d_backward_input", "conv2d_backward_weight")
    for a, e, m, mag, n, name in zip(got, exact, model, mags,
                                     _terms(xshape, wshape, yshape, groups, bool(bias)), names):
        assert a.dtype == np.float32 and a.shape == e.shape
        _check(a, e, mag, 2 * U11 + U11**2 + n * U24, f"TF32 {name} vs float64")
        _check(a, m, mag, n * U24, f"TF32 {name} vs the TF32 model")
    return got


FAMILIES = {**CASES, **GROUPED, **EDGES, **STRIDED_DGRAD}


@pytest.mark.parametrize("case", FAMILIES.values(), ids=FAMILIES.keys())
def test_tf32_every_family(be, rng, case):
    check_tf32(be, rng, *case, tile=3)


@pytest.mark.parametrize("case", {**GROUPED, **EDGES}.values(), ids={**GROUPED, **EDGES}.keys())
def test_tf32_large_tile(be, rng, case):
    check_tf32(be, rng, *case, tile=4)


SPLITK_CASE = SPLITK[:2] + (False,) + SPLITK[2:]
SPLITK_GROUPED = ((2, 4, 13, 11), (4, 2, 3, 3), True, 2, (1, 0, 2, 1), (1, 2), 2)


@pytest.mark.parametrize("tile", (3, 4))
@pytest.mark.parametrize("splits", (0, 2, 3, 7))
def test_tf32_split_k(be, rng, tile, splits):
    check_tf32(be, rng, *SPLITK_CASE, tile=tile, splits=splits)
    check_tf32(be, rng, *SPLITK_GROUPED, tile=tile, splits=splits)
    n = be.mod.conv2d_backward_weight_workspace_bytes(0, SPLITK[0], SPLITK[1], *SPLITK[2:5],
                                                      SPLITK[5], tile, splits)
    assert (n > 0) == (splits != 1)  # the heuristic splits this short output too


def test_tf32_wgrad_deterministic(be, rng):
    xshape, wshape, s, pad, d, groups = SPLITK
    x, gy = randn(rng, xshape, np.float32), randn(rng, (2, 2, 16, 16), np.float32)
    for splits in (0, 1, 4):
        a = cd.conv2d_backward_weight(be, gy, x, wshape, s, pad, d, groups, tile=3, splits=splits)
        b = cd.conv2d_backward_weight(be, gy, x, wshape, s, pad, d, groups, tile=3, splits=splits)
        assert a.tobytes() == b.tobytes()


def test_tf32_happened(be, rng):
    """Random float32 inputs have low mantissa bits set: the TF32 tiles err far more than the exact
    float32 tiles do (check_tf32 shows they match the model of TF32 rounding)."""
    xshape, wshape = (2, 16, 9, 9), (24, 16, 3, 3)
    geo = ((1, 1), (1, 1, 1, 1), (1, 1), 1, (9, 9))
    x, w = randn(rng, xshape, np.float32), randn(rng, wshape, np.float32)
    gy = randn(rng, (2, 24, 9, 9), np.float32)
    exact, mags = _refs(x, w, None, gy, geo)
    simt = _run(be, x, w, None, gy, geo, -1)
    for tile in (3, 4, -2):
        for a, s_, e, mag, n in zip(_run(be, x, w, None, gy, geo, tile), simt, exact, mags,
                                    _terms(xshape, wshape, (2, 24, 9, 9), 1, False)):
            _check(s_, e, mag, n * U24, "SIMT float32")
            assert np.abs(a - e).max() > 64 * np.abs(s_ - e).max()


@pytest.mark.parametrize("tile", (3, 4))
def test_tf32_rounds_ties_away_from_zero(be, tile):
    """1 + 2^-11 lies halfway between two TF32 values: round to nearest with ties away gives
    1 + 2^-10 (ties to even and truncation would give 1); likewise for its negative. 16 channels
    of it times weights 1 sum exactly in float32."""
    x = np.full((1, 16, 4, 5), 1 + 2.0**-11, np.float32)
    x[:, :, 2:] *= -1
    w = np.ones((16, 16, 1, 1), np.float32)
    y = cd.conv2d(be, x, w, None, (1, 1), (0, 0, 0, 0), (1, 1), 1, (4, 5), tile=tile)
    expect = np.full(y.shape, 16 * (1 + 2.0**-10), np.float32)
    expect[:, :, 2:] *= -1
    np.testing.assert_array_equal(y, expect)
    y_exact = cd.conv2d(be, x, w, None, (1, 1), (0, 0, 0, 0), (1, 1), 1, (4, 5), tile=-1)
    np.testing.assert_array_equal(y_exact, x.sum(axis=1, keepdims=True).repeat(16, 1))


def test_tf32_special_values(be):
    """Inf and NaN inputs stay Inf and NaN through the rounding."""
    x = np.ones((1, 16, 2, 2), np.float32)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = np.inf, np.nan
    w = np.ones((16, 16, 1, 1), np.float32)
    y = cd.conv2d(be, x, w, None, (1, 1), (0, 0, 0, 0), (1, 1), 1, (2, 2), tile=3)
    assert np.all(np.isposinf(y[0, :, 0, 0])) and np.all(np.isnan(y[0, :, 0, 1]))
    assert np.all(y[0, :, 1] == 16)


# ---- the switch, the heuristic and the autotuner --------------------------------------------------

def test_switch_default_on_and_validated():
    assert type(backends.cuda)().allow_tf32 is True  # a fresh instance: torch's default
    assert backends.cuda.allow_tf32 is False         # conftest.py's setting for the suite
    for bad in (1, 0, "yes", None, np.bool_(True)):
        with pytest.raises(TypeError, match="fastconv.backends.cuda.allow_tf32 must be a bool"):
            backends.cuda.allow_tf32 = bad
    assert backends.cuda.allow_tf32 is False
    assert "allow_tf32=False" in repr(backends.cuda)


def _public(x, w, gy, **kw):
    with cuda_emulation():
        return (F.conv2d(x, w, **kw), G.conv2d_input(x.shape, w, gy, **kw),
                G.conv2d_weight(x, w.shape, gy, **kw))


@pytest.mark.parametrize("groups", (1, 2))
def test_switch_selects_the_path(be, rng, groups):
    """Through the public API under the emulation: off, float32 runs the SIMT heuristic (tile -1)
    bit for bit; on, the TF32 heuristic (tile -2), which takes tensor cores for these GEMMs of at
    least 16 x 16 and differs from the exact path."""
    x, w = randn(rng, (2, 32, 9, 9), np.float32), randn(rng, (32, 32 // groups, 3, 3), np.float32)
    gy = randn(rng, (2, 32, 9, 9), np.float32)
    geo = ((1, 1), (1, 1, 1, 1), (1, 1), groups, (9, 9))
    off = _public(x, w, gy, padding=1, groups=groups)
    backends.cuda.allow_tf32 = True
    try:
        on = _public(x, w, gy, padding=1, groups=groups)
    finally:
        backends.cuda.allow_tf32 = False
    for a, e in zip(off, _run(be, x, w, None, gy, geo, -1)):
        assert a.tobytes() == e.tobytes()
    for a, e, forced in zip(on, _run(be, x, w, None, gy, geo, -2),
                            _run(be, x, w, None, gy, geo, 3)):
        assert a.tobytes() == e.tobytes() == forced.tobytes()
    assert all(a.tobytes() != b.tobytes() for a, b in zip(on, off))


def test_heuristic_keeps_small_gemms_and_other_dtypes_exact(be, rng, tf32_on):
    """Fewer than 16 output channels (forward M) stay on the exact tiles under TF32 too; float64
    ignores the switch."""
    x, w = randn(rng, (1, 20, 6, 6), np.float32), randn(rng, (8, 20, 3, 3), np.float32)
    geo = ((1, 1), (1, 1, 1, 1), (1, 1), 1, (6, 6))
    assert cd.conv2d(be, x, w, None, *geo, tile=-2).tobytes() == \
        cd.conv2d(be, x, w, None, *geo, tile=-1).tobytes()
    x64, w64 = x.astype(np.float64), randn(rng, (32, 20, 3, 3))
    with cuda_emulation():
        y = F.conv2d(x64, w64, padding=1)
    assert y.tobytes() == cd.conv2d(be, x64, w64, None, *geo, tile=-1).tobytes()


def test_bad_tiles_raise(be, rng):
    x, w = randn(rng, (1, 4, 6, 6)), randn(rng, (6, 4, 3, 3))
    y = np.empty((1, 6, 4, 4))
    s, p, d = (1, 1), (0, 0, 0, 0), (1, 1)
    with pytest.raises(ValueError, match=r"tile 3 \(tensor cores\) needs float32 \(TF32\), "
                                         r"float16 or bfloat16"):
        be.mod.conv2d_forward(3, be.ptr(x), be.ptr(w), 0, be.ptr(y), x.shape, w.shape, s, p, d, 1,
                              3, 0)
    x32, w32, y32 = (a.astype(np.float32) for a in (x, w, y))
    with pytest.raises(ValueError, match="tile must be -2 .heuristic, TF32 allowed., -1"):
        be.mod.conv2d_forward(0, be.ptr(x32), be.ptr(w32), 0, be.ptr(y32), x.shape, w.shape, s, p,
                              d, 1, -3, 0)


@pytest.fixture
def benchmark_on():
    backends.cuda.clear_cache()
    backends.cuda.benchmark = True
    yield
    backends.cuda.benchmark = False
    backends.cuda.clear_cache()


def test_autotune_candidates_follow_the_switch():
    assert autotune.candidates(0, True) == (3, 4, 0, 1, 2)
    assert autotune.candidates(0, False) == (0, 1, 2)
    assert autotune.candidates(3, True) == (0, 1, 2)           # float64: no tensor cores
    assert autotune.candidates(1, False) == (3, 4, 0, 1, 2)    # float16: tensor cores natively


def test_autotune_keys_by_the_switch(rng, benchmark_on):
    """The same problem is timed once per TF32 setting; each choice comes from that setting's
    candidates, and with TF32 off the result is an exact-float32 tile's."""
    x, w = randn(rng, (2, 8, 9, 9), np.float32), randn(rng, (32, 8, 3, 3), np.float32)
    gy = randn(rng, (2, 32, 9, 9), np.float32)
    backends.cuda.allow_tf32 = True
    try:
        on = _public(x, w, gy, padding=1)
    finally:
        backends.cuda.allow_tf32 = False
    chosen_on = autotune.cached()
    assert len(chosen_on) == 3 and all(key[2] is True for key in chosen_on)
    off = _public(x, w, gy, padding=1)
    chosen = autotune.cached()
    assert len(chosen) == 6
    assert all(t in (0, 1, 2) for key, t in chosen.items() if key[2] is False)
    assert all(t in (3, 4, 0, 1, 2) for t in chosen_on.values())
    geo = ((1, 1), (1, 1, 1, 1), (1, 1), 1, (9, 9))
    exact, mags = _refs(x, w, None, gy, geo)
    for a, e, mag, n in zip(off, exact, mags, _terms(x.shape, w.shape, gy.shape, 1, False)):
        _check(a, e, mag, n * U24, "autotuned, TF32 off")
    for a, e, mag, n in zip(on, exact, mags, _terms(x.shape, w.shape, gy.shape, 1, False)):
        _check(a, e, mag, 2 * U11 + U11**2 + n * U24, "autotuned, TF32 on")
