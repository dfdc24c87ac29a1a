"""channel_affine: out = act(x * scale[c] + shift[c]) against a float64 numpy reference under every
kernel variant (odd sizes, vector tails, L = 1, N = 0, C = 1, chunks over several threads), in
place, NaN / inf through relu / relu6 exactly as numpy's maximum / minimum, poisoned outputs, odd
input layouts, and clear errors for bad arguments (in Python and in fastconv._C)."""
import numpy as np
import pytest

from fastconv import _C
from fastconv.nn import _array as A
from fastconv.testing import assert_close
from helpers import DTYPES, layouts, poisoned, randn

ACTIVATIONS = (None, "relu", "relu6")

SHAPES = {
    "nchw": (2, 3, 5, 7),
    "odd_tail": (2, 7, 3, 67),        # 201 = 12 * 16 + 9: unrolled body, single vectors, tail
    "vector_multiple": (2, 3, 8, 8),
    "L1_2d": (4, 6),
    "L1_4d": (3, 5, 1, 1),
    "L_below_vector": (3, 4, 3),
    "C1": (2, 1, 37),
    "N0": (0, 3, 4, 4),
    "C0": (2, 0, 4),
    "5d": (1, 2, 3, 4, 5),
    "several_chunks": (4, 8, 4100),   # 32 rows of 4100: parallel chunks of 8 rows
}


def reference(x, scale, shift, activation):
    """act(x * scale + shift) in float64 (numpy's maximum / minimum: NaN propagates)."""
    bshape = (1, -1) + (1,) * (x.ndim - 2)
    y = x.astype(np.float64) * scale.astype(np.float64).reshape(bshape)
    y += shift.astype(np.float64).reshape(bshape)
    if activation is not None:
        y = np.maximum(y, 0.0)
    if activation == "relu6":
        y = np.minimum(y, 6.0)
    return y


def inputs(rng, shape, dtype):
    C = shape[1]
    return randn(rng, shape, dtype) * 3, randn(rng, (C,), dtype), randn(rng, (C,), dtype)


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_channel_affine_vs_ref(isa, rng, shape, dtype, activation):
    x, s, b = inputs(rng, shape, dtype)
    out = poisoned(shape, dtype)
    y = A.channel_affine(x, s, b, activation, out=out)
    assert y is out
    assert_close(y, reference(x, s, b, activation), dtype)
    y2 = A.channel_affine(x, s, b, activation)
    assert y2.dtype == dtype and y2.shape == shape
    assert_close(y2, y, dtype)


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_channel_affine_in_place(isa, rng, dtype, activation):
    x, s, b = inputs(rng, (3, 5, 9, 11), dtype)
    want = reference(x, s, b, activation)
    y = A.channel_affine(x, s, b, activation, out=x)
    assert y is x
    assert_close(x, want, dtype)


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_channel_affine_nan_inf(isa, rng, dtype, activation):
    """NaN and inf in x, scale and shift give what numpy's own expression gives, in the vector
    body and in the scalar tail of a row."""
    shape = (2, 4, 85)  # 85 = 5 * 16 + 5
    x, s, b = inputs(rng, shape, dtype)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, 1e30, -1e30], dtype)
    mask = rng.random(shape) < 0.3
    x[mask] = rng.choice(specials, size=int(mask.sum()))
    x[..., 0], x[..., -1], x[..., -2] = np.nan, np.inf, -np.inf
    s[1], b[2], b[3] = 0.0, np.inf, np.nan  # inf * 0, inf - inf, NaN shift
    with np.errstate(invalid="ignore", over="ignore"):
        want = x * s[:, None] + b[:, None]
        if activation is not None:
            want = np.maximum(want, 0)
        if activation == "relu6":
            want = np.minimum(want, 6)
    y = A.channel_affine(x, s, b, activation, out=poisoned(shape, dtype))
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    assert_close(y, want, dtype)
    assert np.isnan(y[..., 0]).all()
    if activation == "relu6":
        assert np.nanmax(y) <= 6 and np.nanmin(y) >= 0


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_channel_affine_bounds(isa, rng, dtype):
    """_C's lo / hi each apply on their own."""
    x, s, b = inputs(rng, (2, 3, 37), dtype)
    ref = reference(x, s, b, None)
    for lo, hi in ((None, None), (-0.5, None), (None, 0.25), (-1, 2)):
        y = poisoned(x.shape, dtype)
        _C.channel_affine(x, s, b, y, lo, hi)
        want = ref if lo is None else np.maximum(ref, lo)
        want = want if hi is None else np.minimum(want, hi)
        assert_close(y, want, dtype)


@pytest.mark.parametrize("layout", ["strided", "fortran", "big_endian", "misaligned", "read_only"])
def test_channel_affine_layouts(rng, layout):
    x, s, b = inputs(rng, (2, 3, 4, 6), np.float32)
    want = reference(x, s, b, "relu6")
    assert_close(A.channel_affine(layouts(x)[layout], layouts(s)[layout], b, "relu6"), want,
                 np.float32)


def arr(*shape, dtype=np.float32):
    return np.ones(shape, dtype)


X, S = arr(2, 3, 4), arr(3)


def overlap_x_out():
    """(x, scale, shift, activation, out) with out one element past x in the same buffer."""
    buf = np.zeros(2 * 3 * 4 + 1, np.float32)
    return buf[:24].reshape(2, 3, 4), S, S, None, buf[1:].reshape(2, 3, 4)


def read_only():
    a = arr(2, 3, 4)
    a.setflags(write=False)
    return a


# (id, call, exception, message fragment (regex))
ERRORS = [
    ("x_list", lambda: A.channel_affine(X.tolist(), S, S), TypeError, r"channel_affine: x must be a numpy.ndarray, got list"),
    ("scale_list", lambda: A.channel_affine(X, [1.0] * 3, S), TypeError, r"channel_affine: scale must be a numpy.ndarray, got list"),
    ("x_int", lambda: A.channel_affine(X.astype(np.int32), S, S), TypeError, r"channel_affine: x must be a float32 or float64 array.*int32"),
    ("x_float16", lambda: A.channel_affine(X.astype(np.float16), S, S), TypeError, r"channel_affine: x has dtype float16"),
    ("scale_dtype", lambda: A.channel_affine(X, S.astype(np.float64), S), TypeError, r"channel_affine: scale has dtype float64 but x has dtype float32"),
    ("shift_dtype", lambda: A.channel_affine(X, S, S.astype(np.float64)), TypeError, r"channel_affine: shift has dtype float64 but x has dtype float32"),
    ("x_1d", lambda: A.channel_affine(S, S, S), ValueError, r"channel_affine: x must be at least 2-D \(N, C, \.\.\.\), got shape \(3,\)"),
    ("scale_shape", lambda: A.channel_affine(X, arr(4), S), ValueError, r"channel_affine: scale must have shape \(3,\).*got shape \(4,\)"),
    ("shift_2d", lambda: A.channel_affine(X, S, arr(3, 1)), ValueError, r"channel_affine: shift must have shape \(3,\).*got shape \(3, 1\)"),
    ("activation", lambda: A.channel_affine(X, S, S, "gelu"), ValueError, r"channel_affine: activation must be None, 'relu' or 'relu6', got 'gelu'"),
    ("activation_list", lambda: A.channel_affine(X, S, S, ["relu"]), ValueError, r"channel_affine: activation must be"),
    ("out_shape", lambda: A.channel_affine(X, S, S, out=arr(2, 3, 5)), ValueError, r"channel_affine: out must have x's shape \(2, 3, 4\), got shape \(2, 3, 5\)"),
    ("out_dtype", lambda: A.channel_affine(X, S, S, out=arr(2, 3, 4, dtype=np.float64)), TypeError, r"channel_affine: out has dtype float64 but x has dtype float32"),
    ("out_strided", lambda: A.channel_affine(X, S, S, out=arr(2, 3, 8)[..., ::2]), ValueError, r"channel_affine: out must be a writeable, aligned, C-contiguous"),
    ("out_read_only", lambda: A.channel_affine(X, S, S, out=read_only()), ValueError, r"channel_affine: out must be a writeable"),
    ("out_partial_overlap", lambda: A.channel_affine(*overlap_x_out()), ValueError, r"channel_affine: out overlaps x in memory"),
    # fastconv._C checks again, for callers that skip the Python layer
    ("C_x_strided", lambda: _C.channel_affine(arr(2, 3, 8)[..., ::2], S, S, arr(2, 3, 4)), ValueError, r"channel_affine: x must be C-contiguous and aligned"),
    ("C_out_shape", lambda: _C.channel_affine(X, S, S, arr(2, 3, 5)), ValueError, r"channel_affine: out must have shape \(2, 3, 4\), got \(2, 3, 5\)"),
    ("C_out_dtype", lambda: _C.channel_affine(X, S, S, arr(2, 3, 4, dtype=np.float64)), TypeError, r"channel_affine: out has dtype float64 but x has dtype float32"),
    ("C_x_int", lambda: _C.channel_affine(X.astype(np.int64), S, S, X.copy()), TypeError, r"channel_affine: x must be float32 or float64"),
    ("C_x_1d", lambda: _C.channel_affine(S, S, S, S.copy()), ValueError, r"channel_affine: x must be at least 2-D"),
    ("C_scale_shape", lambda: _C.channel_affine(X, arr(2), S, X.copy()), ValueError, r"channel_affine: scale must have shape \(3,\), got \(2,\)"),
    ("C_out_read_only", lambda: _C.channel_affine(X, S, S, read_only()), ValueError, r"channel_affine: out \(an output\) must be writeable"),
    ("C_out_overlaps_scale", lambda: _C.channel_affine(X, (o := arr(2, 3, 4)).reshape(-1)[:3], S, o), ValueError, r"channel_affine: out overlaps scale in memory"),
    ("C_lo_above_hi", lambda: _C.channel_affine(X, S, S, X.copy(), 6.0, 0.0), ValueError, r"channel_affine: lo must not exceed hi, got lo=6 and hi=0"),
    ("C_lo_nan", lambda: _C.channel_affine(X, S, S, X.copy(), float("nan")), ValueError, r"channel_affine: lo must not be NaN"),
    ("C_hi_str", lambda: _C.channel_affine(X, S, S, X.copy(), None, "6"), TypeError, r"channel_affine: hi must be a real number or None, got str"),
    ("C_lo_bool", lambda: _C.channel_affine(X, S, S, X.copy(), True), TypeError, r"channel_affine: lo must be a real number or None, got bool"),
]



@pytest.mark.parametrize("call,exc,match", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_channel_affine_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
