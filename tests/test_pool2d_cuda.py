"""The CUDA pooling kernels (csrc/cuda/pool2d_cuda.cu) through their Python twins
(fastconv/_gpu/pool.py) under the CPU emulation (fastconv._cuda_emu), against the float64
references of fastconv/ref.py and the CPU path (fastconv.nn.functional / fastconv.nn.grad on numpy):
the CPU tests' case lists, NCHW and channels-last inputs, float64 / float32 / float16 and bfloat16
(bit patterns at the binding), NaN / inf / ties, NaN-poisoned outputs (every output comes from a
backend whose allocations are poisoned), negative divisor_override, and clear errors. The `gpu`
cases run the same kernels on a real GPU against torch CUDA (cuDNN) and against the emulation."""
import numpy as np
import pytest

import fastconv
import fastconv.nn.functional as F
import fastconv.nn.grad as G
from fastconv import _shape, ref
from fastconv._gpu import pool
from fastconv._gpu.backend import NCHW, NHWC, EmulationBackend
from fastconv.testing import assert_close
from helpers import pool_config
from test_adaptive_avg_pool2d import CASES as ADAPTIVE_CASES
from test_adaptive_avg_pool2d import _resolved
from test_avg_pool2d import FLAGS, GEOMETRIES
from test_max_pool2d import CASES as MAX_CASES
from test_max_pool2d import SPECIAL_CASES, SPECIAL_VALUES, _special_input

DTYPES = (np.float64, np.float32, np.float16)
LAYOUTS = (NCHW, NHWC)
BF16_TOL = (8e-3, 8e-3)  # about twice bfloat16's own rounding error (2**-8) on order-1 results


class PoisonedBackend(EmulationBackend):
    """The emulation backend with every allocation filled with NaN (floats) or -12345 (ints), so
    an output element the kernels fail to write shows up."""

    def empty(self, shape, dtype):
        dt = np.dtype(dtype)
        return np.full(tuple(shape), np.nan if dt.kind == "f" else -12345, dtype=dt)


@pytest.fixture(scope="module")
def be():
    return PoisonedBackend()


def in_layout(a, layout):
    """a (N, C, H, W) with the same values, stored NCHW or NHWC."""
    if layout == NCHW:
        return np.ascontiguousarray(a)
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def check_layout(be, a, layout, source=None):
    """a is stored in `layout` (or is in both layouts). A gradient follows its grad_output's
    layout (`source`), which is NCHW when the grad_output is in both (e.g. (N, C, 1, 1))."""
    if source is not None and be.layout(source) == NCHW:
        layout = NCHW
    assert be.layout(a) == layout or 1 in (a.shape[1], a.shape[2] * a.shape[3]), \
        f"output layout {be.layout(a)} != input layout {layout}"


def random(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def rtol_atol(dtype):
    from fastconv.testing import tolerance
    return tolerance(dtype)


# ---- bfloat16 bit patterns --------------------------------------------------------------------

def to_bf16_bits(a):
    """float32 -> bfloat16 bits (uint16), round to nearest even (finite values)."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def from_bf16_bits(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


BF16 = 2  # cuda::DType::bf16


def bf16_poisoned(shape):
    return np.full(shape, 0x7FC0, np.uint16)  # NaN


def ptr(a):
    """a's address (keep a referenced until the call that uses it returns)."""
    return a.__array_interface__["data"][0]


def assert_serial_close(dx, gy, idx, xshape, eps, name):
    """The serial max_pool2d backward adds in the storage type: each of an element's k
    contributions may round once, so it may err by k * eps * (sum of |contributions|), eps being
    the storage type's half ulp (2**-11 float16, 2**-8 bfloat16)."""
    gy = np.asarray(gy, np.float64)
    expected = ref.max_pool2d_input(gy, idx, xshape)
    k = ref.max_pool2d_input(np.ones_like(gy), idx, xshape)
    bound = k * eps * ref.max_pool2d_input(np.abs(gy), idx, xshape)
    err = np.abs(np.asarray(dx, np.float64) - expected)
    assert (err <= bound).all(), f"{name}: worst error {err.max():.3g} exceeds the bound"


# ---- max pooling ------------------------------------------------------------------------------

def max_geometry(xshape, kernel, stride, padding, dilation, ceil_mode):
    k, s, pad, d = pool_config(xshape, kernel, stride, padding, dilation)
    P, Q = _shape.pool_output_hw("t", xshape[2:], k, s, pad, d, ceil_mode)
    return k, s, pad, d, (P, Q)


def check_max(be, rng, case, dtype, layout, x=None):
    xshape, kernel, stride, padding, dilation, ceil_mode = case
    if x is None:
        x = random(rng, xshape, dtype)
    k, s, pad, d, out_hw = max_geometry(*case)
    y_ref, idx_ref = ref.max_pool2d(x, k, s, pad, d, ceil_mode)
    xl = in_layout(x, layout)
    y, idx = pool.max_pool2d(be, xl, k, s, pad, d, ceil_mode, out_hw, True)
    assert y.dtype == dtype and idx.dtype == np.int64
    check_layout(be, y, layout)
    check_layout(be, idx, layout)
    np.testing.assert_array_equal(y, y_ref.astype(dtype), err_msg="max_pool2d values")
    np.testing.assert_array_equal(idx, idx_ref, err_msg="max_pool2d indices")
    y2, none = pool.max_pool2d(be, xl, k, s, pad, d, ceil_mode, out_hw, False)
    assert none is None
    np.testing.assert_array_equal(y2, y, err_msg="max_pool2d without indices")
    if dtype != np.float16:  # the CPU path: float32 / float64
        yc, ic = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
        np.testing.assert_array_equal(y, yc)
        np.testing.assert_array_equal(idx, ic)

    gy = random(rng, y.shape, dtype)
    dx_ref = ref.max_pool2d_input(gy, idx_ref, xshape)
    gyl, idxl = in_layout(gy, layout), in_layout(idx, layout)
    dx = pool.max_pool2d_backward(be, gyl, idxl, xshape, k, s, pad, d)
    dx_serial = pool.max_pool2d_backward(be, gyl, idxl, xshape)
    for v in (dx, dx_serial):
        assert v.dtype == dtype
        check_layout(be, v, layout, gyl)
    assert_close(dx, dx_ref, dtype, name="max_pool2d_backward (gather)")
    if dtype == np.float16:
        assert_serial_close(dx_serial, gy, idx_ref, xshape, 2.0**-11, "serial float16 backward")
    else:
        assert_close(dx_serial, dx_ref, dtype, name="max_pool2d_backward (serial)")
    if dtype != np.float16:  # same summation order as the CPU scatter: bitwise equal
        dx_cpu = G.max_pool2d_input(xshape, gy, idx)
        np.testing.assert_array_equal(dx, dx_cpu, err_msg="gather vs CPU")
        np.testing.assert_array_equal(dx_serial, dx_cpu, err_msg="serial vs CPU")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", MAX_CASES.values(), ids=MAX_CASES.keys())
def test_max_pool2d_cuda(be, rng, case, dtype, layout):
    check_max(be, rng, case, dtype, layout)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("values", [(), ("nan",), ("-inf",), ("nan", "-inf", "inf")],
                         ids=["ties", "nan", "-inf", "all"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", SPECIAL_CASES)
def test_max_pool2d_cuda_special_values(be, rng, case, dtype, values, layout):
    x = _special_input(rng, case[0], dtype, [SPECIAL_VALUES[v] for v in values])
    check_max(be, rng, case, dtype, layout, x=x)


def test_max_pool2d_cuda_all_minus_inf_window(be):
    x = np.full((1, 1, 4, 5), -np.inf)
    x[0, 0, 3, 4] = 1.0
    y, idx = pool.max_pool2d(be, x, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), True, (3, 3), True)
    ninf = -np.inf
    np.testing.assert_array_equal(y[0, 0], [[ninf, ninf, ninf], [ninf, ninf, 1], [ninf, ninf, 1]])
    np.testing.assert_array_equal(idx[0, 0], [[0, 1, 3], [5, 6, 19], [15, 16, 19]])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_max_pool2d_cuda_int32_indices(be, rng, layout):
    x = random(rng, (1, 3, 7, 6), np.float32)
    y, idx = pool.max_pool2d(be, in_layout(x, layout), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1),
                             False, (3, 3), True)
    gy = random(rng, y.shape, np.float32)
    expected = G.max_pool2d_input(x.shape, gy, idx)
    for dt in (np.int32, np.uint16, np.dtype(">i8")):
        got = pool.max_pool2d_backward(be, in_layout(gy, layout), idx.astype(dt), x.shape)
        np.testing.assert_array_equal(got, expected)


def test_max_pool2d_cuda_bad_indices(be, rng):
    """Indices outside [0, H*W) (serial form) or outside their window (gather form) are ignored."""
    gy = random(rng, (1, 1, 2, 2), np.float64)
    idx = np.array([[[[0, 99], [-1, 15]]]], np.int64)
    dx = pool.max_pool2d_backward(be, gy, idx, (1, 1, 4, 4))
    expected = np.zeros((1, 1, 16))
    expected[0, 0, 0], expected[0, 0, 15] = gy[0, 0, 0, 0], gy[0, 0, 1, 1]
    np.testing.assert_array_equal(dx, expected.reshape(1, 1, 4, 4))
    dx = pool.max_pool2d_backward(be, gy, idx, (1, 1, 4, 4), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1))
    np.testing.assert_array_equal(dx, expected.reshape(1, 1, 4, 4))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", [MAX_CASES[k] for k in
                                  ("3x3_stride2_pad1_ceil", "dilation_per_axis_ceil", "per_axis",
                                   "pad4_asymmetric")])
def test_max_pool2d_cuda_bfloat16(be, rng, case, layout):
    xshape, kernel, stride, padding, dilation, ceil_mode = case
    k, s, pad, d, (P, Q) = max_geometry(*case)
    xb = to_bf16_bits(random(rng, xshape, np.float32))
    x = from_bf16_bits(xb)
    y_ref, idx_ref = ref.max_pool2d(x, k, s, pad, d, ceil_mode)
    N, C = xshape[:2]
    xl = in_layout(xb, layout)
    y, idx = (in_layout(bf16_poisoned((N, C, P, Q)), layout),
              in_layout(np.full((N, C, P, Q), -12345, np.int64), layout))
    be.mod.max_pool2d_forward(BF16, ptr(xl), ptr(y), ptr(idx), xshape, (P, Q), k, s, pad, d,
                              ceil_mode, layout == NHWC, 0)
    np.testing.assert_array_equal(from_bf16_bits(y), y_ref.astype(np.float32))
    np.testing.assert_array_equal(idx, idx_ref)
    gb = to_bf16_bits(random(rng, (N, C, P, Q), np.float32))
    dx_ref = ref.max_pool2d_input(from_bf16_bits(gb), idx_ref, xshape)
    gl, il = in_layout(gb, layout), in_layout(idx, layout)  # kept alive across the calls
    for kernel_arg in (k, (0, 0)):
        dx = in_layout(bf16_poisoned(xshape), layout)
        be.mod.max_pool2d_backward(BF16, ptr(gl), ptr(il), ptr(dx), xshape, (P, Q), kernel_arg, s,
                                   pad, d, layout == NHWC, 0)
        if kernel_arg == k:  # the gather: float32 sums, one rounding
            assert_close(from_bf16_bits(dx), dx_ref, np.float32, *BF16_TOL, name="bf16 backward")
        else:
            assert_serial_close(from_bf16_bits(dx), from_bf16_bits(gb), idx_ref, xshape, 2.0**-8,
                                "bf16 serial backward")


# ---- average pooling --------------------------------------------------------------------------

AVG_FLAGS = dict(FLAGS, divisor_negative=(True, -3))


def check_avg(be, rng, geometry, flags, dtype, layout):
    xshape, kernel, stride, padding, ceil_mode = geometry
    count_include_pad, divisor = flags
    x = random(rng, xshape, dtype)
    k, s, pad, _ = pool_config(xshape, kernel, stride, padding)
    P, Q = _shape.pool_output_hw("t", xshape[2:], k, s, pad, (1, 1), ceil_mode)
    rflags = (ceil_mode, count_include_pad, divisor)
    y_ref = ref.avg_pool2d(x, k, s, pad, *rflags)
    y = pool.avg_pool2d(be, in_layout(x, layout), k, s, pad, ceil_mode, count_include_pad,
                        divisor or 0, (P, Q))
    assert y.dtype == dtype
    check_layout(be, y, layout)
    assert_close(y, y_ref, dtype, name="avg_pool2d")
    gy = random(rng, y.shape, dtype)
    dx_ref = ref.avg_pool2d_input(gy, xshape, k, s, pad, *rflags)
    gyl = in_layout(gy, layout)
    dx = pool.avg_pool2d_backward(be, gyl, xshape, k, s, pad, ceil_mode, count_include_pad,
                                  divisor or 0)
    assert dx.dtype == dtype
    check_layout(be, dx, layout, gyl)
    assert_close(dx, dx_ref, dtype, name="avg_pool2d_backward")
    if dtype != np.float16 and (divisor or 0) >= 0:  # the CPU path takes positive divisors
        args = dict(stride=stride, padding=padding, ceil_mode=ceil_mode,
                    count_include_pad=count_include_pad, divisor_override=divisor)
        assert_close(y, F.avg_pool2d(x, kernel, **args), dtype, name="avg vs CPU")
        assert_close(dx, G.avg_pool2d_input(xshape, gy, kernel, **args), dtype,
                     name="avg backward vs CPU")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("flags", AVG_FLAGS.values(), ids=AVG_FLAGS.keys())
@pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=GEOMETRIES.keys())
def test_avg_pool2d_cuda(be, rng, geometry, flags, dtype, layout):
    check_avg(be, rng, geometry, flags, dtype, layout)


def test_avg_pool2d_cuda_nan_inf_propagate(be):
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 0, 0], x[0, 0, 3, 3] = np.nan, np.inf
    y = pool.avg_pool2d(be, x, (2, 2), (2, 2), (0, 0, 0, 0), False, True, 0, (2, 2))
    assert np.isnan(y[0, 0, 0, 0]) and y[0, 0, 1, 1] == np.inf
    assert (y[0, 0, [0, 1], [1, 0]] == 0).all()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("flags", AVG_FLAGS.values(), ids=AVG_FLAGS.keys())
@pytest.mark.parametrize("geometry", [GEOMETRIES[k] for k in
                                      ("3x3_stride2_pad1_ceil", "ceil_window_past_padding",
                                       "pad4_asymmetric_ceil")])
def test_avg_pool2d_cuda_bfloat16(be, rng, geometry, flags, layout):
    xshape, kernel, stride, padding, ceil_mode = geometry
    count_include_pad, divisor = flags
    k, s, pad, _ = pool_config(xshape, kernel, stride, padding)
    P, Q = _shape.pool_output_hw("t", xshape[2:], k, s, pad, (1, 1), ceil_mode)
    rflags = (ceil_mode, count_include_pad, divisor)
    N, C = xshape[:2]
    xb = to_bf16_bits(random(rng, xshape, np.float32))
    y = in_layout(bf16_poisoned((N, C, P, Q)), layout)
    xl = in_layout(xb, layout)
    be.mod.avg_pool2d_forward(BF16, ptr(xl), ptr(y), xshape, (P, Q), k, s, pad,
                              ceil_mode, count_include_pad, divisor or 0, layout == NHWC, 0)
    assert_close(from_bf16_bits(y), ref.avg_pool2d(from_bf16_bits(xb), k, s, pad, *rflags),
                 np.float32, *BF16_TOL, name="bf16 avg_pool2d")
    gb = to_bf16_bits(random(rng, (N, C, P, Q), np.float32))
    dx = in_layout(bf16_poisoned(xshape), layout)
    gl = in_layout(gb, layout)
    be.mod.avg_pool2d_backward(BF16, ptr(gl), ptr(dx), xshape, (P, Q), k, s,
                               pad, ceil_mode, count_include_pad, divisor or 0, layout == NHWC, 0)
    assert_close(from_bf16_bits(dx),
                 ref.avg_pool2d_input(from_bf16_bits(gb), xshape, k, s, pad, *rflags),
                 np.float32, *BF16_TOL, name="bf16 avg_pool2d_backward")


# ---- adaptive average pooling -----------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", ADAPTIVE_CASES.values(), ids=ADAPTIVE_CASES.keys())
def test_adaptive_avg_pool2d_cuda(be, rng, case, dtype, layout):
    xshape, output_size = case
    P, Q = _resolved(xshape, output_size)
    x = random(rng, xshape, dtype)
    y = pool.adaptive_avg_pool2d(be, in_layout(x, layout), (P, Q))
    assert y.dtype == dtype
    check_layout(be, y, layout)
    assert_close(y, ref.adaptive_avg_pool2d(x, (P, Q)), dtype, name="adaptive_avg_pool2d")
    gy = random(rng, y.shape, dtype)
    gyl = in_layout(gy, layout)
    dx = pool.adaptive_avg_pool2d_backward(be, gyl, xshape)
    check_layout(be, dx, layout, gyl)
    assert_close(dx, ref.adaptive_avg_pool2d_input(gy, xshape), dtype,
                 name="adaptive_avg_pool2d_backward")
    if dtype != np.float16:
        assert_close(y, F.adaptive_avg_pool2d(x, output_size), dtype, name="adaptive vs CPU")
        assert_close(dx, G.adaptive_avg_pool2d_input(xshape, gy), dtype,
                     name="adaptive backward vs CPU")
    # bfloat16 through the binding
    xb = to_bf16_bits(x.astype(np.float32))
    yb = in_layout(bf16_poisoned(y.shape), layout)
    xl = in_layout(xb, layout)
    be.mod.adaptive_avg_pool2d_forward(BF16, ptr(xl), ptr(yb), xshape, (P, Q),
                                       layout == NHWC, 0)
    assert_close(from_bf16_bits(yb), ref.adaptive_avg_pool2d(from_bf16_bits(xb), (P, Q)),
                 np.float32, *BF16_TOL, name="bf16 adaptive")
    gb = to_bf16_bits(gy.astype(np.float32))
    dxb = in_layout(bf16_poisoned(xshape), layout)
    gl = in_layout(gb, layout)
    be.mod.adaptive_avg_pool2d_backward(BF16, ptr(gl), ptr(dxb), xshape,
                                        (P, Q), layout == NHWC, 0)
    assert_close(from_bf16_bits(dxb), ref.adaptive_avg_pool2d_input(from_bf16_bits(gb), xshape),
                 np.float32, *BF16_TOL, name="bf16 adaptive backward")


# ---- empty arrays, non-contiguous inputs, errors ----------------------------------------------

def test_pool_cuda_empty_batch(be):
    x = np.zeros((0, 3, 6, 6), np.float32)
    y, idx = pool.max_pool2d(be, x, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False, (3, 3), True)
    assert y.shape == idx.shape == (0, 3, 3, 3)
    assert pool.max_pool2d_backward(be, y, idx, x.shape).shape == x.shape
    y2 = pool.avg_pool2d(be, x, (2, 2), (2, 2), (0, 0, 0, 0), False, True, 0, (3, 3))
    assert y2.shape == y.shape
    assert pool.adaptive_avg_pool2d_backward(be, y, x.shape).shape == x.shape


def test_pool_cuda_strided_input_is_copied(be, rng):
    x = random(rng, (2, 3, 8, 16), np.float32)[..., ::2]
    y = pool.adaptive_avg_pool2d(be, x, (3, 3))
    assert_close(y, ref.adaptive_avg_pool2d(x, (3, 3)), np.float32)


ERRORS = [
    ("out_hw", lambda be, x: pool.max_pool2d(be, x, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False,
                                             (4, 3), False), ValueError, "out has spatial size"),
    ("padding", lambda be, x: pool.avg_pool2d(be, x, (2, 2), (1, 1), (2, 0, 0, 0), False, True, 0,
                                              (8, 5)), ValueError, "at most half the kernel"),
    ("only_padding", lambda be, x: pool.max_pool2d(be, x, (2, 2), (1, 1), (1, 1, 1, 1), (1, 7),
                                                   False, (8, 1), False),
     ValueError, "covers no input element"),
    ("grad_hw", lambda be, x: pool.avg_pool2d_backward(be, np.zeros((1, 2, 2, 2), np.float32),
                                                       x.shape, (2, 2), (2, 2), (0, 0, 0, 0),
                                                       False, True, 0),
     ValueError, "grad_output has spatial size"),
    ("dtype", lambda be, x: pool.adaptive_avg_pool2d(be, x.astype(np.int32), (2, 2)), TypeError,
     "float32, float16, bfloat16 or float64"),
    ("indices_dtype", lambda be, x: pool.max_pool2d_backward(be, x, x, x.shape), TypeError,
     "indices must be an integer array"),
    ("half_geometry", lambda be, x: pool.max_pool2d_backward(be, x, x.astype(np.int64), x.shape,
                                                             (2, 2)),
     ValueError, "together"),
]


@pytest.mark.parametrize("call,exc,match", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_pool_cuda_errors(be, call, exc, match):
    with pytest.raises(exc, match=match):
        call(be, np.zeros((1, 2, 7, 6), np.float32))


# ---- real GPU: against torch CUDA (cuDNN) and against the emulation ---------------------------

def _gpu_backend():
    if not fastconv.cuda_available():
        pytest.skip("needs a CUDA GPU and fastconv._cuda")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs torch with CUDA")
    from fastconv import _cuda
    from fastconv._gpu.backend import TorchBackend
    return torch, TorchBackend(_cuda, torch.device("cuda"))


GPU_DTYPES = ("float32", "float16", "bfloat16", "float64")


def _torch_in_layout(torch, x, layout):
    return x.contiguous(memory_format=torch.channels_last) if layout == NHWC else x.contiguous()


@pytest.mark.gpu
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("case", MAX_CASES.values(), ids=MAX_CASES.keys())
def test_max_pool2d_gpu(rng, case, dtype, layout):
    torch, gbe = _gpu_backend()
    import torch.nn.functional as TF
    xshape, kernel, stride, padding, dilation, ceil_mode = case
    k, s, pad, d, out_hw = max_geometry(*case)
    if not (pad[0] == pad[1] and pad[2] == pad[3]):
        pytest.skip("padding torch cannot express")
    tdt = getattr(torch, dtype)
    x = _torch_in_layout(torch, torch.tensor(random(rng, xshape, np.float32)).to("cuda", tdt),
                         layout)
    y, idx = pool.max_pool2d(gbe, x, k, s, pad, d, ceil_mode, out_hw, True)
    xt = x.clone().requires_grad_(True)
    yt, it = TF.max_pool2d(xt, k, s, (pad[0], pad[2]), d, ceil_mode, return_indices=True)
    assert torch.equal(y, yt.detach()) and torch.equal(idx, it)
    gy = torch.randn_like(yt)
    yt.backward(gy)
    dx = pool.max_pool2d_backward(gbe, gy, idx, xshape, k, s, pad, d)
    tol = {"float32": 1e-6, "float64": 1e-12}.get(dtype, 1e-2)
    torch.testing.assert_close(dx, xt.grad, rtol=tol, atol=tol)
    if dtype != "bfloat16":  # the emulation on the same inputs: bitwise equal
        ebe = EmulationBackend()
        xn = x.float().cpu().numpy().astype(dtype) if dtype == "float16" else x.cpu().numpy()
        ye, ie = pool.max_pool2d(ebe, in_layout(xn, layout), k, s, pad, d, ceil_mode, out_hw, True)
        np.testing.assert_array_equal(y.cpu().float().numpy(), ye.astype(np.float32))
        np.testing.assert_array_equal(idx.cpu().numpy(), ie)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("flags", FLAGS.values(), ids=FLAGS.keys())
@pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=GEOMETRIES.keys())
def test_avg_pool2d_gpu(rng, geometry, flags, dtype, layout):
    torch, gbe = _gpu_backend()
    import torch.nn.functional as TF
    xshape, kernel, stride, padding, ceil_mode = geometry
    count_include_pad, divisor = flags
    k, s, pad, _ = pool_config(xshape, kernel, stride, padding)
    if not (pad[0] == pad[1] and pad[2] == pad[3]):
        pytest.skip("padding torch cannot express")
    P, Q = _shape.pool_output_hw("t", xshape[2:], k, s, pad, (1, 1), ceil_mode)
    tdt = getattr(torch, dtype)
    x = _torch_in_layout(torch, torch.tensor(random(rng, xshape, np.float32)).to("cuda", tdt),
                         layout)
    y = pool.avg_pool2d(gbe, x, k, s, pad, ceil_mode, count_include_pad, divisor or 0, (P, Q))
    # torch's reference from an NCHW copy: torch's own channels-last CUDA backward is wrong when
    # padding > 0 (pytorch/pytorch#188344; torch 2.11 on the H200, 2026-12-04)
    xt = x.detach().contiguous().clone().requires_grad_(True)
    yt = TF.avg_pool2d(xt, k, s, (pad[0], pad[2]), ceil_mode, count_include_pad, divisor)
    tol = {"float32": 1e-5, "float64": 1e-12, "float16": 4e-3}.get(dtype, 2e-2)
    torch.testing.assert_close(y, yt.detach(), rtol=tol, atol=tol)
    gy = torch.randn_like(yt)
    yt.backward(gy)
    dx = pool.avg_pool2d_backward(gbe, _torch_in_layout(torch, gy, layout), xshape, k, s, pad,
                                  ceil_mode, count_include_pad, divisor or 0)
    assert gbe.layout(dx) == gbe.layout(x)
    torch.testing.assert_close(dx, xt.grad, rtol=tol, atol=tol)
    if dtype in ("float32", "float64"):
        ye = pool.avg_pool2d(EmulationBackend(), in_layout(x.cpu().numpy(), layout), k, s, pad,
                             ceil_mode, count_include_pad, divisor or 0, (P, Q))
        assert_close(y.cpu().numpy(), ye, np.dtype(dtype), name="GPU vs emulation")


@pytest.mark.gpu
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("case", ADAPTIVE_CASES.values(), ids=ADAPTIVE_CASES.keys())
def test_adaptive_avg_pool2d_gpu(rng, case, dtype, layout):
    torch, gbe = _gpu_backend()
    import torch.nn.functional as TF
    xshape, output_size = case
    P, Q = _resolved(xshape, output_size)
    tdt = getattr(torch, dtype)
    x = _torch_in_layout(torch, torch.tensor(random(rng, xshape, np.float32)).to("cuda", tdt),
                         layout)
    y = pool.adaptive_avg_pool2d(gbe, x, (P, Q))
    xt = x.clone().requires_grad_(True)
    yt = TF.adaptive_avg_pool2d(xt, (P, Q))
    tol = {"float32": 1e-5, "float64": 1e-12, "float16": 4e-3}.get(dtype, 2e-2)
    torch.testing.assert_close(y, yt.detach(), rtol=tol, atol=tol)
    gy = torch.randn_like(yt)
    yt.backward(gy)
    dx = pool.adaptive_avg_pool2d_backward(gbe, gy, xshape)
    torch.testing.assert_close(dx, xt.grad, rtol=tol, atol=tol)


@pytest.mark.gpu
def test_max_pool2d_gpu_cupy(rng):
    """The CuPy backend: CuPy arrays in, CuPy arrays out, on CuPy's current stream."""
    if not fastconv.cuda_available():
        pytest.skip("needs a CUDA GPU and fastconv._cuda")
    cupy = pytest.importorskip("cupy")
    from fastconv import _cuda
    from fastconv._gpu.backend import CupyBackend
    cbe = CupyBackend(_cuda)
    x = random(rng, (2, 5, 13, 12), np.float32)
    y, idx = pool.max_pool2d(cbe, cupy.asarray(x), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), True,
                             (7, 7), True)
    assert isinstance(y, cupy.ndarray)
    y_ref, idx_ref = ref.max_pool2d(x, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), True)
    np.testing.assert_array_equal(cupy.asnumpy(y), y_ref.astype(np.float32))
    np.testing.assert_array_equal(cupy.asnumpy(idx), idx_ref)


# ---- the int64-index kernels (chosen for huge arrays; forced here on small ones) ----------------

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", (np.float64, np.float16), ids=lambda d: np.dtype(d).name)
def test_pool_cuda_int64_kernels(be, rng, monkeypatch, dtype, layout):
    monkeypatch.setenv("FASTCONV_EMU_INT64", "1")
    for name in ("3x3_stride2_pad1_ceil", "dilation_per_axis_ceil", "many_planes", "global"):
        check_max(be, rng, MAX_CASES[name], dtype, layout)
    for name in ("ceil_window_past_padding", "global_large", "pad4_asymmetric_ceil"):
        for flags in AVG_FLAGS.values():
            check_avg(be, rng, GEOMETRIES[name], flags, dtype, layout)
    for name in ("overlapping", "global", "larger_than_input"):
        xshape, output_size = ADAPTIVE_CASES[name]
        P, Q = _resolved(xshape, output_size)
        x = random(rng, xshape, dtype)
        y = pool.adaptive_avg_pool2d(be, in_layout(x, layout), (P, Q))
        assert_close(y, ref.adaptive_avg_pool2d(x, (P, Q)), dtype, name="adaptive int64")
        gy = random(rng, y.shape, dtype)
        dx = pool.adaptive_avg_pool2d_backward(be, in_layout(gy, layout), xshape)
        assert_close(dx, ref.adaptive_avg_pool2d_input(gy, xshape), dtype,
                     name="adaptive int64 bwd")
