"""Depthwise conv2d and the conv bias gradient on the CUDA path (csrc/cuda/depthwise_conv2d_cuda.cu,
csrc/cuda/conv2d_bias_cuda.cu), run on the CPU through the emulation build (fastconv._cuda_emu):
the Python twins (fastconv/_gpu/conv.py) against the CPU path (fastconv.nn.functional / grad on
numpy) and the float64 references, on the CPU tests' case list plus shapes that exercise the tiling
(several row / column tiles, batch groups, tap chunks); poisoned outputs at the binding level;
float64 tight, float32 by the table, float16 and bfloat16 (bit patterns) with tolerances from the
accumulation length; a bitwise-deterministic weight gradient under every block schedule; and, on a
real GPU (`pytest -m gpu`), the same kernels on CuPy arrays against torch CUDA (cuDNN) and against
the emulation."""
import os

import numpy as np
import pytest
from hypothesis import given

import fastconv
import fastconv.nn.functional as F
import fastconv.nn.grad as G
from fastconv import ref
from fastconv._gpu import conv as gconv
from fastconv._gpu.backend import DTYPE_CODES, EmulationBackend
from fastconv.testing import assert_close
from helpers import conv_config, layouts, poisoned, randn
from test_conv2d import CASES as DENSE_CASES
from test_depthwise_conv2d import CASES as DW_CASES
from test_depthwise_conv2d import depthwise_shapes, dw_case

# Shapes that exercise the CUDA tiling: several column tiles (Q > 128), several row tiles,
# batch groups in the weight gradient (big planes, one image per step), generic tap chunks
# (R*S > 16), the strided input gradient with a multiplier, dilation per axis, multipliers too
# large for one tile.
TILING_CASES = {
    "two_column_tiles": dw_case(1, 2, 5, 151, 1, 3, 3, True, 1, 1, 1),
    "strided_column_tiles": dw_case(1, 2, 9, 301, 1, 3, 3, True, 2, 1, 1),
    "two_row_tiles": dw_case(1, 2, 120, 12, 1, 3, 3, False, 1, 1, 1),
    "batch_groups": dw_case(3, 2, 40, 40, 1, 3, 3, True, 1, 1, 1),
    "5x5_s2_batch_groups_m2": dw_case(3, 2, 41, 37, 2, 5, 5, True, 2, "same", 1),
    "7x7_stride2": dw_case(2, 3, 17, 19, 1, 7, 7, True, 2, 3, 1),
    "5x6_taps_dilated": dw_case(1, 3, 15, 16, 1, 5, 6, True, (1, 2), (2, 1, 3, 0), (2, 1)),
    "strided_3x2_m3": dw_case(2, 2, 13, 14, 3, 3, 3, True, (3, 2), (1, 0, 2, 1), 1),
    "single_channel": dw_case(2, 1, 10, 11, 2, 3, 3, True, 1, 1, 1),
    "pad_larger_than_kernel": dw_case(1, 2, 6, 7, 1, 1, 1, True, 1, (2, 1, 3, 0), 1),
    # the M dy planes of a dx plane do not fit one tile: the input gradient runs in chunks of M
    "multiplier_chunks": dw_case(1, 1, 4, 5, 300, 3, 3, True, 1, 1, 1),
    "multiplier_chunks_strided": dw_case(1, 1, 7, 6, 300, 3, 3, False, 2, 1, 1),
}
CASES = {**DW_CASES, **TILING_CASES}


@pytest.fixture(scope="module")
def be():
    return EmulationBackend()


def _resolve(case):
    xshape, wshape, bias, stride, padding, dilation, groups = case
    s, pad, d = conv_config(xshape, wshape, stride, padding, dilation)
    return xshape, wshape, bias, s, pad, d, groups


def _args(s, pad, d, groups):
    return dict(stride=s, padding=pad, dilation=d, groups=groups)


def _refs(x, w, b, gy, s, pad, d, groups):
    return (ref.conv2d(x, w, b, s, pad, d, groups), ref.conv2d_input(gy, w, x.shape, s, pad, d, groups),
            ref.conv2d_weight(gy, x, w.shape, s, pad, d, groups), ref.conv2d_bias(gy))


def _twins(be, x, w, b, gy, s, pad, d, groups):
    y = gconv.conv2d(be, x, w, b, s, pad, d, groups, gy.shape[2:])
    dx = gconv.conv2d_backward_input(be, gy, w, x.shape, s, pad, d, groups)
    dw = gconv.conv2d_backward_weight(be, gy, x, w.shape, s, pad, d, groups)
    db = gconv.conv2d_backward_bias(be, gy)
    return y, dx, dw, db


NAMES = ("conv2d", "conv2d_backward_input", "conv2d_backward_weight", "conv2d_backward_bias")


# ---- float64 / float32: the twins against ref.py and the CPU path ------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_depthwise_conv2d_cuda_vs_ref_and_cpu(be, rng, case, dtype):
    xshape, wshape, bias, s, pad, d, groups = _resolve(case)
    x, w = randn(rng, xshape, dtype), randn(rng, wshape, dtype)
    b = randn(rng, (wshape[0],), dtype) if bias else None
    y_ref = ref.conv2d(x, w, b, s, pad, d, groups)
    gy = randn(rng, y_ref.shape, dtype)
    got = _twins(be, x, w, b, gy, s, pad, d, groups)
    refs = _refs(x, w, b, gy, s, pad, d, groups)
    cpu = (F.conv2d(x, w, b, **_args(s, pad, d, groups)),
           G.conv2d_input(xshape, w, gy, **_args(s, pad, d, groups)),
           G.conv2d_weight(x, wshape, gy, **_args(s, pad, d, groups)), G.conv2d_bias(gy))
    for name, g, r, c in zip(NAMES, got, refs, cpu):
        assert type(g) is np.ndarray and g.dtype == dtype and g.shape == r.shape, name
        assert_close(g, r, dtype, name=name)
        assert_close(g, c, dtype, name=name + " vs CPU")


@given(depthwise_shapes())
def test_depthwise_conv2d_cuda_random_shapes_vs_ref(args):
    """Random geometry (the CPU tests' strategy): every direction against ref.py."""
    case, seed, dtype = args
    rng = np.random.default_rng(seed)
    xshape, wshape, bias, s, pad, d, groups = _resolve(case)
    x, w = randn(rng, xshape, dtype), randn(rng, wshape, dtype)
    b = randn(rng, (wshape[0],), dtype) if bias else None
    gy = randn(rng, ref.conv2d(x, w, None, s, pad, d, groups).shape, dtype)
    got = _twins(EmulationBackend(), x, w, b, gy, s, pad, d, groups)
    for name, g, r in zip(NAMES, got, _refs(x, w, b, gy, s, pad, d, groups)):
        assert_close(g, r, dtype, name=name)


@pytest.mark.parametrize("case", ["3x3_pad1_m2", "5x5_stride2_same_tf_odd", "11x11_pad5",
                                  "strided_3x2_m3", "two_row_tiles", "multiplier_chunks",
                                  "multiplier_chunks_strided"])
def test_depthwise_conv2d_cuda_poisoned_outputs(be, rng, case):
    """Every output element is written, through the bindings with NaN-filled outputs."""
    xshape, wshape, bias, s, pad, d, groups = _resolve(CASES[case])
    dt = np.float64
    x, w, b = randn(rng, xshape), randn(rng, wshape), randn(rng, (wshape[0],))
    y_ref = ref.conv2d(x, w, b, s, pad, d, groups)
    gy = randn(rng, y_ref.shape)
    code = DTYPE_CODES["float64"]
    geo = (tuple(xshape), tuple(wshape), s, pad, d, groups)
    y = poisoned(y_ref.shape, dt)
    be.mod.depthwise_conv2d_forward(code, be.ptr(x), be.ptr(w), be.ptr(b), be.ptr(y), *geo, 0)
    assert_close(y, y_ref, dt, name="conv2d (poisoned)")
    dx = poisoned(xshape, dt)
    be.mod.depthwise_conv2d_backward_input(code, be.ptr(gy), be.ptr(w), be.ptr(dx), *geo, 0)
    assert_close(dx, ref.conv2d_input(gy, w, xshape, s, pad, d, groups), dt, name="dx (poisoned)")
    nbytes = be.mod.depthwise_conv2d_backward_weight_workspace_bytes(code, *geo)
    ws = np.full(max(nbytes, 8) // 8, np.nan)  # the partial sums are written before they are read
    dw = poisoned(wshape, dt)
    be.mod.depthwise_conv2d_backward_weight(code, be.ptr(gy), be.ptr(x), be.ptr(dw), be.ptr(ws),
                                            nbytes, *geo, 0)
    assert_close(dw, ref.conv2d_weight(gy, x, wshape, s, pad, d, groups), dt, name="dw (poisoned)")
    nbytes = be.mod.conv2d_backward_bias_workspace_bytes(code, gy.shape)
    ws = np.full(max(nbytes, 8) // 8, np.nan)
    db = poisoned((wshape[0],), dt)
    be.mod.conv2d_backward_bias(code, be.ptr(gy), be.ptr(db), be.ptr(ws), nbytes, gy.shape, 0)
    assert_close(db, ref.conv2d_bias(gy), dt, name="db (poisoned)")


# ---- float16 and bfloat16 (float32 accumulation) -----------------------------------------------

def _to_bf16_bits(a):
    """float32 -> bfloat16 bit patterns (uint16), rounded to nearest even (finite inputs)."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def _from_bf16_bits(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _low_precision_check(got, expected, terms, ulp, name, acc=2.0 ** -24):
    """|got - expected| <= ulp * |expected| (rounding of the result to the storage type, with 2x
    headroom) + terms * acc * 4 * max|expected| (accumulation with unit roundoff `acc`, float32's
    by default, over `terms` products of order-1 rounded inputs) + ulp * 2^-14 (results near zero
    round to the smallest normals)."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    assert_close(got, expected, rtol=ulp, atol=terms * acc * 4 * scale + ulp * 2.0 ** -14,
                 name=name)


LOW_CASES = ["3x3_pad1_m2", "3x3_stride2_same_tf", "5x5_stride2_same_tf_odd", "3x3_dilation2_m2",
             "11x11_pad5", "stride_per_axis", "pad4_stride2_m2", "7x7_stride2", "strided_3x2_m3",
             "multiplier_chunks", "multiplier_chunks_strided"]


def _terms(xshape, wshape, yshape):
    N, C, _, _ = xshape
    K, _, R, S = wshape
    return max(R * S * (K // C), N * yshape[2] * yshape[3])


@pytest.mark.parametrize("case", LOW_CASES)
def test_depthwise_conv2d_cuda_float16(be, rng, case):
    xshape, wshape, bias, s, pad, d, groups = _resolve(CASES[case])
    x, w = randn(rng, xshape, np.float16), randn(rng, wshape, np.float16)
    b = randn(rng, (wshape[0],), np.float16) if bias else None
    gy = randn(rng, ref.conv2d(x, w, None, s, pad, d, groups).shape, np.float16)
    got = _twins(be, x, w, b, gy, s, pad, d, groups)
    refs = _refs(x, w, b, gy, s, pad, d, groups)  # float64 of the float16-rounded inputs
    terms = _terms(xshape, wshape, gy.shape)
    for name, g, r in zip(NAMES, got, refs):
        assert g.dtype == np.float16, name
        _low_precision_check(g, r, terms, 2.0 ** -10, name + " float16")


@pytest.mark.parametrize("case", LOW_CASES)
def test_depthwise_conv2d_cuda_bfloat16_bits(be, rng, case):
    xshape, wshape, bias, s, pad, d, groups = _resolve(CASES[case])
    bits = [_to_bf16_bits(randn(rng, shape, np.float32))
            for shape in (xshape, wshape, (wshape[0],))]
    xb, wb, bb = bits
    x, w, b = (_from_bf16_bits(v) for v in bits)
    y_ref = ref.conv2d(x, w, b, s, pad, d, groups)
    gyb = _to_bf16_bits(randn(rng, y_ref.shape, np.float32))
    gy = _from_bf16_bits(gyb)
    code, geo = DTYPE_CODES["bfloat16"], (tuple(xshape), tuple(wshape), s, pad, d, groups)
    terms, ulp = _terms(xshape, wshape, y_ref.shape), 2.0 ** -7
    y = np.full(y_ref.shape, 0xFFFF, np.uint16)  # NaN bit patterns
    be.mod.depthwise_conv2d_forward(code, be.ptr(xb), be.ptr(wb), be.ptr(bb), be.ptr(y), *geo, 0)
    _low_precision_check(_from_bf16_bits(y), y_ref, terms, ulp, "conv2d bfloat16")
    dx = np.full(xshape, 0xFFFF, np.uint16)
    be.mod.depthwise_conv2d_backward_input(code, be.ptr(gyb), be.ptr(wb), be.ptr(dx), *geo, 0)
    _low_precision_check(_from_bf16_bits(dx), ref.conv2d_input(gy, w, xshape, s, pad, d, groups),
                         terms, ulp, "dx bfloat16")
    nbytes = be.mod.depthwise_conv2d_backward_weight_workspace_bytes(code, *geo)
    ws = be.workspace(nbytes)
    dw = np.full(wshape, 0xFFFF, np.uint16)
    be.mod.depthwise_conv2d_backward_weight(code, be.ptr(gyb), be.ptr(xb), be.ptr(dw), be.ptr(ws),
                                            nbytes, *geo, 0)
    _low_precision_check(_from_bf16_bits(dw), ref.conv2d_weight(gy, x, wshape, s, pad, d, groups),
                         terms, ulp, "dw bfloat16")
    nbytes = be.mod.conv2d_backward_bias_workspace_bytes(code, gyb.shape)
    ws = be.workspace(nbytes)
    db = np.full((wshape[0],), 0xFFFF, np.uint16)
    be.mod.conv2d_backward_bias(code, be.ptr(gyb), be.ptr(db), be.ptr(ws), nbytes, gyb.shape, 0)
    _low_precision_check(_from_bf16_bits(db), ref.conv2d_bias(gy), terms, ulp, "db bfloat16")


# ---- determinism, layouts, the bias gradient of any conv, errors --------------------------------

@pytest.mark.parametrize("case", ["batch_groups", "5x5_s2_batch_groups_m2", "11x11_pad5"])
def test_depthwise_conv2d_cuda_weight_gradient_is_deterministic(be, rng, case, monkeypatch):
    """The two-stage reductions give bitwise equal results run to run, whatever order the blocks
    and their threads run in (EMU_SCHED) and however many run at once (EMU_WORKERS)."""
    xshape, wshape, _, s, pad, d, groups = _resolve(CASES[case])
    x, w = randn(rng, xshape, np.float32), randn(rng, wshape, np.float32)
    gy = randn(rng, ref.conv2d(x, w, None, s, pad, d, groups).shape, np.float32)
    runs = []
    for sched, workers in [("shuffle", "1"), ("shuffle", "1"), ("fwd", "1"), ("rev", "3")]:
        monkeypatch.setenv("EMU_SCHED", sched)
        monkeypatch.setenv("EMU_WORKERS", workers)
        runs.append((gconv.conv2d_backward_weight(be, gy, x, wshape, s, pad, d, groups),
                     gconv.conv2d_backward_bias(be, gy)))
    for dw, db in runs[1:]:
        np.testing.assert_array_equal(dw.view(np.uint32), runs[0][0].view(np.uint32))
        np.testing.assert_array_equal(db.view(np.uint32), runs[0][1].view(np.uint32))


@pytest.mark.parametrize("layout", ["strided", "fortran", "swapped_axes", "negative_strides"])
def test_depthwise_conv2d_cuda_layouts(be, rng, layout):
    x, w, b = randn(rng, (2, 3, 7, 9)), randn(rng, (6, 1, 3, 3)), randn(rng, (6,))
    s, pad, d = (2, 2), (0, 1, 1, 1), (1, 1)
    y = ref.conv2d(x, w, b, s, pad, d, 3)
    gy = randn(rng, y.shape)
    lx, lw, lb, lgy = (layouts(a)[layout] for a in (x, w, b, gy))
    got = _twins(be, lx, lw, lb, lgy, s, pad, d, 3)
    for name, g, r in zip(NAMES, got, _refs(x, w, b, gy, s, pad, d, 3)):
        assert_close(g, r, np.float64, name=name)


@pytest.mark.parametrize("dy_shape", [(2, 3, 5, 7), (2, 2, 70, 70), (4, 600, 1, 3), (3, 1, 1, 1),
                                      (0, 4, 3, 3), (2, 5, 0, 3)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_conv2d_backward_bias_cuda(be, rng, dy_shape, dtype):
    """Any convolution's bias gradient, including chunked batches and plane segments."""
    gy = randn(rng, dy_shape, dtype)
    db = gconv.conv2d_backward_bias(be, gy)
    assert db.dtype == dtype and db.shape == (dy_shape[1],)
    assert_close(db, ref.conv2d_bias(gy), dtype, name="conv2d_backward_bias")
    if min(dy_shape) > 0:  # the CPU path takes non-empty batches and planes only
        assert_close(db, G.conv2d_bias(gy), dtype, name="conv2d_backward_bias vs CPU")


def test_depthwise_conv2d_cuda_empty_batch(be, rng):
    x, w = randn(rng, (0, 4, 6, 7)), randn(rng, (8, 1, 3, 3))
    s, pad, d = (2, 2), (0, 1, 1, 1), (1, 1)
    y = gconv.conv2d(be, x, w, None, s, pad, d, 4, (3, 4))
    assert y.shape == (0, 8, 3, 4)
    dx = gconv.conv2d_backward_input(be, y, w, x.shape, s, pad, d, 4)
    assert dx.shape == x.shape
    np.testing.assert_array_equal(gconv.conv2d_backward_weight(be, y, x, w.shape, s, pad, d, 4), 0)


@pytest.mark.parametrize("case", ["3x3_pad1", "groups2", "groups3_stride2", "1x1"])
def test_dense_and_grouped_shapes_go_to_the_dense_kernels(be, rng, case):
    """conv.py routes shapes that are not depthwise to the implicit-GEMM kernels (conv_dense.py,
    tested in test_conv2d_cuda.py); here only that the route gives the reference's answers."""
    xshape, wshape, _, s, pad, d, groups = _resolve(DENSE_CASES[case])
    x, w = randn(rng, xshape), randn(rng, wshape)
    y = ref.conv2d(x, w, None, s, pad, d, groups)
    gy = randn(rng, y.shape)
    assert_close(gconv.conv2d(be, x, w, None, s, pad, d, groups, gy.shape[2:]), y, np.float64)
    assert_close(gconv.conv2d_backward_input(be, gy, w, xshape, s, pad, d, groups),
                 ref.conv2d_input(gy, w, xshape, s, pad, d, groups), np.float64)
    assert_close(gconv.conv2d_backward_weight(be, gy, x, wshape, s, pad, d, groups),
                 ref.conv2d_weight(gy, x, wshape, s, pad, d, groups), np.float64)
    assert_close(gconv.conv2d_backward_bias(be, gy), ref.conv2d_bias(gy), np.float64)


def test_depthwise_conv2d_cuda_binding_errors(be, rng):
    x, w, gy = randn(rng, (1, 4, 6, 6)), randn(rng, (4, 1, 3, 3)), randn(rng, (1, 4, 6, 6))
    geo = ((1, 4, 6, 6), (4, 1, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 4)
    code = DTYPE_CODES["float64"]
    nbytes = be.mod.depthwise_conv2d_backward_weight_workspace_bytes(code, *geo)
    assert nbytes > 0
    dw = np.empty((4, 1, 3, 3))
    with pytest.raises(ValueError, match="depthwise_conv2d_backward_weight: workspace of 8 bytes"):
        be.mod.depthwise_conv2d_backward_weight(code, be.ptr(gy), be.ptr(x), be.ptr(dw),
                                                be.ptr(np.empty(1)), 8, *geo, 0)
    with pytest.raises(ValueError, match="depthwise_conv2d_forward: not a depthwise convolution"):
        be.mod.depthwise_conv2d_forward(code, be.ptr(x), be.ptr(w), 0, be.ptr(gy), (1, 4, 6, 6),
                                        (4, 2, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2, 0)
    with pytest.raises(ValueError, match="depthwise_conv2d_backward_input: stride must be positive"):
        be.mod.depthwise_conv2d_backward_input(code, be.ptr(gy), be.ptr(w), be.ptr(x),
                                               (1, 4, 6, 6), (4, 1, 3, 3), (0, 1), (1, 1, 1, 1),
                                               (1, 1), 4, 0)
    with pytest.raises(TypeError, match="depthwise_conv2d_forward: unknown dtype code 7"):
        be.mod.depthwise_conv2d_forward(7, be.ptr(x), be.ptr(w), 0, be.ptr(gy), *geo, 0)
    with pytest.raises(TypeError, match="conv2d: input must be float32, float16, bfloat16 or "
                                        "float64 on the GPU, got dtype int32"):
        gconv.conv2d(be, x.astype(np.int32), w, None, (1, 1), (1, 1, 1, 1), (1, 1), 4, (6, 6))


# ---- on a real GPU: CuPy arrays against torch CUDA (cuDNN) and the emulation -------------------

GPU_CASES = {**{k: DW_CASES[k] for k in ("3x3_pad1_m2", "5x5_stride2_same_tf_odd", "11x11_pad5",
                                         "pad4_stride2_m2", "stride_per_axis")},
             **TILING_CASES,
             "mbv2_dw_96_112s2_small": dw_case(2, 8, 112, 112, 1, 3, 3, True, 2, 1, 1),
             "effl0_dw5_672_14_small": dw_case(4, 64, 14, 14, 1, 5, 5, True, 1, 2, 1)}


@pytest.mark.gpu
@pytest.mark.parametrize("lib,dtype", [("cupy", "float32"), ("cupy", "float16"), ("torch", "float32"),
                                       ("torch", "bfloat16")])
@pytest.mark.parametrize("case", GPU_CASES.values(), ids=GPU_CASES.keys())
def test_depthwise_conv2d_cuda_gpu_vs_torch(be, rng, case, lib, dtype, monkeypatch):
    if not fastconv.cuda_available():
        pytest.skip("needs a CUDA GPU and fastconv._cuda")
    cp = pytest.importorskip("cupy")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs torch with CUDA")
    from fastconv._backend import _cuda
    from fastconv._gpu.backend import CupyBackend, TorchBackend
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # a float32 baseline
    xshape, wshape, bias, s, pad, d, groups = _resolve(case)
    tdt = getattr(torch, dtype)
    x, w = randn(rng, xshape, np.float32), randn(rng, wshape, np.float32)
    b = randn(rng, (wshape[0],), np.float32) if bias else None
    tx, tw = (torch.tensor(a, device="cuda", dtype=tdt, requires_grad=True) for a in (x, w))
    tb = None if b is None else torch.tensor(b, device="cuda", dtype=tdt, requires_grad=True)
    txp = torch.nn.functional.pad(tx, (pad[2], pad[3], pad[0], pad[1]))
    ty = torch.nn.functional.conv2d(txp, tw, tb, s, 0, d, groups)
    tgy = torch.randn_like(ty)
    ty.backward(tgy)
    # the same (rounded) values on the device for fastconv: CuPy arrays through DLPack, or torch
    if lib == "cupy":
        gbe = CupyBackend(_cuda)
        dev = [None if t is None else cp.from_dlpack(t.detach()) for t in (tx, tw, tb, tgy)]
        host = cp.asnumpy
    else:
        gbe = TorchBackend(_cuda, tx.device)
        dev = [None if t is None else t.detach() for t in (tx, tw, tb, tgy)]
        host = lambda a: a.float().cpu().numpy()  # noqa: E731
    cx, cw, cb, cgy = dev
    y = gconv.conv2d(gbe, cx, cw, cb, s, pad, d, groups, tuple(ty.shape[2:]))
    dx = gconv.conv2d_backward_input(gbe, cgy, cw, xshape, s, pad, d, groups)
    dw = gconv.conv2d_backward_weight(gbe, cgy, cx, wshape, s, pad, d, groups)
    db = gconv.conv2d_backward_bias(gbe, cgy)
    dw2 = gconv.conv2d_backward_weight(gbe, cgy, cx, wshape, s, pad, d, groups)
    np.testing.assert_array_equal(host(dw), host(dw2))  # deterministic on the device too
    hx, hw, hgy = (t.detach().float().cpu().numpy() for t in (tx, tw, tgy))
    hb = None if tb is None else tb.detach().float().cpu().numpy()
    refs = _refs(hx, hw, hb, hgy, s, pad, d, groups)
    torch_out = (ty, tx.grad, tw.grad, None if tb is None else tb.grad)
    terms = _terms(xshape, wshape, ty.shape)
    ulp = {"float32": 2.0 ** -22, "float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}[dtype]
    emu = [None] * 4
    if dtype != "bfloat16":  # numpy has no bfloat16: the emulation's bf16 path has its own test
        npdt = np.dtype(dtype)
        emu = _twins(be, hx.astype(npdt), hw.astype(npdt), None if hb is None else hb.astype(npdt),
                     hgy.astype(npdt), s, pad, d, groups)
    for name, g, r, t, e in zip(NAMES, (y, dx, dw, db), refs, torch_out, emu):
        g = host(g).astype(np.float64)
        _low_precision_check(g, r, terms, ulp, name + " vs ref")
        if t is not None:
            # cuDNN's 16-bit depthwise kernels may round partial sums to the storage type (seen
            # on the H200, 2026-12-04: 32 float16 ulps off on a cancelling sum where the float64
            # reference check above held): torch's side gets an accumulation in the storage type
            # (terms * ulp * max|y|: twice the worst case of rounding every partial sum)
            _low_precision_check(g, t.detach().double().cpu().numpy(), terms, 2 * ulp,
                                 name + " vs torch",
                                 acc=2.0 ** -24 if dtype == "float32" else ulp / 4)
        if e is not None:
            _low_precision_check(g, e.astype(np.float64), terms, ulp, name + " vs emulation")
