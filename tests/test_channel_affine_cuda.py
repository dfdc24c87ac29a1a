"""The CUDA channel_affine kernel (csrc/cuda/channel_affine_cuda.cu) through its Python twin
(fastconv/_gpu/affine.py) under the CPU emulation (fastconv._cuda_emu): against the float64
reference and the CPU kernel on the CPU test's shapes (both kernels: rows of L >= 128 and the flat
one), float64 / float32 / float16 and bfloat16 (bit patterns at the binding), channels-last 4-D
inputs, in place, NaN / inf through relu / relu6, poisoned outputs and clear errors; `gpu` cases
against torch CUDA and the emulation on a real GPU."""
import numpy as np
import pytest

import fastconv
from fastconv._gpu import affine
from fastconv._gpu.backend import NHWC, EmulationBackend
from fastconv.nn import _array as A
from fastconv.testing import assert_close
from test_channel_affine import ACTIVATIONS, SHAPES, reference

DTYPES = (np.float64, np.float32, np.float16)
BOUNDS = {None: (None, None), "relu": (0.0, None), "relu6": (0.0, 6.0)}
SHAPES_CUDA = dict(SHAPES, long_rows=(2, 3, 300), long_rows_odd=(1, 5, 2, 129))


class PoisonedBackend(EmulationBackend):
    """Allocations filled with NaN, so an element the kernel fails to write shows up."""

    def empty(self, shape, dtype):
        return np.full(tuple(shape), np.nan, dtype=dtype)


@pytest.fixture(scope="module")
def be():
    return PoisonedBackend()


def inputs(rng, shape, dtype):
    C = shape[1]
    return ((rng.standard_normal(shape) * 3).astype(dtype), rng.standard_normal(C).astype(dtype),
            rng.standard_normal(C).astype(dtype))


def nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES_CUDA.values(), ids=SHAPES_CUDA.keys())
def test_channel_affine_cuda(be, rng, shape, dtype, activation):
    x, s, b = inputs(rng, shape, dtype)
    lo, hi = BOUNDS[activation]
    y = affine.channel_affine(be, x, s, b, lo, hi, None)
    assert y.dtype == dtype and y.shape == x.shape
    assert_close(y, reference(x, s, b, activation), dtype, name="channel_affine")
    if dtype != np.float16:
        assert_close(y, A.channel_affine(x, s, b, activation), dtype, name="vs CPU")
    if len(shape) == 4:  # channels-last: served in place of layout, output channels-last
        yl = affine.channel_affine(be, nhwc(x), s, b, lo, hi, None)
        assert be.layout(yl) == NHWC or 1 in (shape[1], shape[2] * shape[3]) or yl.size == 0
        assert_close(yl, reference(x, s, b, activation), dtype, name="channel_affine NHWC")


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_channel_affine_cuda_in_place_and_out(be, rng, dtype, activation, layout):
    x, s, b = inputs(rng, (2, 3, 5, 67), dtype)
    x = nhwc(x) if layout == "nhwc" else x
    lo, hi = BOUNDS[activation]
    ref = reference(x, s, b, activation)
    out = np.full_like(x, np.nan)  # same layout as x (empty_like keeps strides)
    assert affine.channel_affine(be, x, s, b, lo, hi, out) is out
    assert_close(out, ref, dtype, name="given out")
    assert affine.channel_affine(be, x, s, b, lo, hi, x) is x
    assert_close(x, ref, dtype, name="in place")


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 4, 200)], ids=["flat", "rows"])
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_channel_affine_cuda_nan_inf(be, rng, dtype, activation, shape):
    x, s, b = inputs(rng, shape, dtype)
    flat = x.reshape(-1)
    flat[::7] = np.nan
    flat[1::11] = np.inf
    flat[2::13] = -np.inf
    y = affine.channel_affine(be, x, s, b, *BOUNDS[activation], None)
    with np.errstate(invalid="ignore"):
        assert_close(y, reference(x, s, b, activation), dtype, name="nan / inf")


def test_channel_affine_cuda_bounds_any_value(be, rng):
    x, s, b = inputs(rng, (2, 3, 150), np.float64)
    y = affine.channel_affine(be, x, s, b, -0.5, 0.25, None)
    expected = np.clip(x * s[None, :, None] + b[None, :, None], -0.5, 0.25)
    assert_close(y, expected, np.float64)
    y = affine.channel_affine(be, x, s, b, None, 1.5, None)
    assert_close(y, np.minimum(x * s[None, :, None] + b[None, :, None], 1.5), np.float64)


def to_bf16_bits(a):
    u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16_bits(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("shape", [(2, 3, 7), (2, 3, 300), (5, 4)], ids=["flat", "rows", "2d"])
def test_channel_affine_cuda_bfloat16(be, rng, shape, activation):
    x, s, b = (to_bf16_bits(a) for a in inputs(rng, shape, np.float32))
    out = np.full(shape, 0x7FC0, np.uint16)
    L = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    lo, hi = BOUNDS[activation]
    ptr = lambda a: a.__array_interface__["data"][0]  # noqa: E731
    be.mod.channel_affine(2, ptr(x), ptr(s), ptr(b), ptr(out), shape[0], shape[1], L, lo, hi, 0)
    ref = reference(from_bf16_bits(x), from_bf16_bits(s), from_bf16_bits(b), activation)
    assert_close(from_bf16_bits(out), ref, np.float32, 8e-3, 8e-3, name="bfloat16")


ERRORS = [
    ("dtype", lambda be, x, s: affine.channel_affine(be, x.astype(np.int32), s, s, None, None,
                                                     None), TypeError, "x must be float32"),
    ("scale_dtype", lambda be, x, s: affine.channel_affine(be, x, s.astype(np.float64), s, None,
                                                           None, None),
     TypeError, "scale must have"),
    ("scale_shape", lambda be, x, s: affine.channel_affine(be, x, s[:2], s, None, None, None),
     ValueError, r"scale must have shape \(3,\)"),
    ("out_shape", lambda be, x, s: affine.channel_affine(be, x, s, s, None, None, x[:1]),
     ValueError, "out must have x's shape"),
    ("out_layout", lambda be, x, s: affine.channel_affine(be, x, s, s, None, None, nhwc(x.copy())),
     ValueError, "C-contiguous"),
    ("lo_above_hi", lambda be, x, s: affine.channel_affine(be, x, s, s, 2.0, 1.0, None),
     ValueError, "lo must not exceed hi"),
    ("nan_bound", lambda be, x, s: affine.channel_affine(be, x, s, s, float("nan"), None, None),
     ValueError, "lo must not be NaN"),
]


@pytest.mark.parametrize("call,exc,match", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_channel_affine_cuda_errors(be, call, exc, match):
    with pytest.raises(exc, match=match):
        call(be, np.zeros((2, 3, 4, 5), np.float32), np.ones(3, np.float32))


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
def test_channel_affine_gpu(rng, dtype, activation, layout):
    if not fastconv.cuda_available():
        pytest.skip("needs a CUDA GPU and fastconv._cuda")
    torch = pytest.importorskip("torch")
    from fastconv import _cuda
    from fastconv._gpu.backend import TorchBackend
    gbe = TorchBackend(_cuda, torch.device("cuda"))
    tdt = getattr(torch, dtype)
    x, s, b = (torch.tensor(a).to("cuda", tdt) for a in inputs(rng, (4, 24, 17, 33), np.float32))
    if layout == "nhwc":
        x = x.contiguous(memory_format=torch.channels_last)
    lo, hi = BOUNDS[activation]
    y = affine.channel_affine(gbe, x, s, b, lo, hi, None)
    # the reference in float64 (a float32 one is 1e-7 off, beyond float64's tolerance)
    yt = x.double() * s.double()[None, :, None, None] + b.double()[None, :, None, None]
    if lo is not None:
        yt = yt.clamp_min(lo)
    if hi is not None:
        yt = yt.clamp_max(hi)
    tol = {"float32": 1e-5, "float64": 1e-12, "float16": 2e-3}.get(dtype, 8e-3)
    torch.testing.assert_close(y.double(), yt.to(tdt).double(), rtol=tol, atol=tol)
    if dtype in ("float32", "float64"):  # the emulation on the same inputs
        ye = affine.channel_affine(EmulationBackend(), x.cpu().numpy(), s.cpu().numpy(),
                                   b.cpu().numpy(), lo, hi, None)
        assert_close(y.cpu().numpy(), ye, np.dtype(dtype), name="GPU vs emulation")


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 4, 200)], ids=["flat", "rows"])
def test_channel_affine_cuda_int64_kernels(be, rng, monkeypatch, shape):
    monkeypatch.setenv("FASTCONV_EMU_INT64", "1")
    x, s, b = inputs(rng, shape, np.float64)
    y = affine.channel_affine(be, x, s, b, 0.0, 6.0, None)
    assert_close(y, reference(x, s, b, "relu6"), np.float64)


def _misaligned(a):
    """a's values in an array whose address is off 16-byte alignment by one element."""
    buf = np.empty(a.size + 1, a.dtype)
    off = buf[1:] if buf.ctypes.data % 16 == 0 else buf[:-1]
    out = off.reshape(a.shape)
    out[...] = a
    assert out.ctypes.data % 16 != 0
    return out


@pytest.mark.parametrize("layout", ["rows", "nhwc"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_channel_affine_cuda_vector_paths(be, rng, dtype, layout):
    """16-byte vector accesses where sizes and alignment allow (rows with L % V == 0; channels-last
    with C % V == 0), scalar ones otherwise: same results (the emulation checks the alignment)."""
    shape = (2, 3, 256) if layout == "rows" else (2, 16, 3, 5)
    x, s, b = inputs(rng, shape, dtype)
    expected = reference(x, s, b, "relu6")
    if layout == "nhwc":
        xa = nhwc(x)
        xm = _misaligned(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    else:
        xa, xm = np.ascontiguousarray(x), _misaligned(x)
    assert xa.ctypes.data % 16 == 0
    for arr in (xa, xm):
        y = affine.channel_affine(be, arr, s, b, 0.0, 6.0, None)
        assert_close(y, expected, dtype, name=f"{layout} vector path")
    ym = _misaligned(np.zeros_like(x)) if layout == "rows" else None
    if ym is not None:
        assert affine.channel_affine(be, xa, s, b, 0.0, 6.0, ym) is ym
        assert_close(ym, expected, dtype, name="misaligned out")
