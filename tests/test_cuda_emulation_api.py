"""The public API on the CUDA path, run on the CPU: inside fastconv.testing.cuda_emulation() every
op that the CPU path serves from a fastconv._C kernel runs the CUDA kernels of csrc/cuda/ through
fastconv._cuda_emu. Each op takes the CPU kernels' whole case list and must agree with the CPU
path (which the other test files check against ref.py and torch): float64 tightly, float32 by the
tolerance table, float16 (returned as float16) against the float64 result of the same
float16-rounded inputs. Then layers, a training step of a small depthwise network, and
fastconv.torch's ops on CPU tensors take the same route."""
import numpy as np
import pytest

import fastconv
import fastconv.nn as nn
import fastconv.nn.functional as F
import fastconv.nn.grad as G
from fastconv.nn import _array as A
from fastconv.testing import assert_close, cuda_emulation
from helpers import randn
from test_adaptive_avg_pool2d import CASES as ADAPTIVE_CASES
from test_avg_pool2d import FLAGS as AVG_FLAGS
from test_avg_pool2d import GEOMETRIES as AVG_GEOMETRIES
from test_conv2d import CASES as CONV_CASES
from test_depthwise_conv2d import CASES as DW_CASES
from test_max_pool2d import CASES as MAX_CASES

DTYPES = (np.float64, np.float32, np.float16)
ids = lambda d: np.dtype(d).name  # noqa: E731


def agree(emulated, cpu64, dtype, name, reduction=1):
    """emulated (in dtype) against the float64 CPU result of the same (dtype-rounded) inputs."""
    assert emulated.dtype == dtype, f"{name}: dtype {emulated.dtype}, expected {np.dtype(dtype)}"
    if dtype == np.float16:  # float32 accumulation, one float16 rounding of the result
        scale = max(1.0, float(np.abs(cpu64).max(initial=0)))
        assert_close(emulated.astype(np.float64), cpu64, rtol=2e-3, atol=2e-3 * scale, name=name)
    else:
        assert_close(emulated, cpu64.astype(dtype), dtype=dtype, name=name)


def inputs(rng, shape, dtype):
    """Random inputs rounded to dtype, and the same values in float64 for the CPU path."""
    x = randn(rng, shape, dtype)
    return x, x.astype(np.float64)


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
@pytest.mark.parametrize("case", MAX_CASES.values(), ids=MAX_CASES.keys())
def test_max_pool2d(rng, case, dtype):
    xshape, kernel, stride, padding, dilation, ceil_mode = case
    x, x64 = inputs(rng, xshape, dtype)
    kw = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation,
              ceil_mode=ceil_mode)
    y64, idx64 = F.max_pool2d(x64, return_indices=True, **kw)
    g = randn(rng, y64.shape, dtype)
    dx64 = G.max_pool2d_input(xshape, g.astype(np.float64), idx64)
    with cuda_emulation():
        y, idx = F.max_pool2d(x, return_indices=True, **kw)
        y_only = F.max_pool2d(x, **kw)
        dx = G.max_pool2d_input(xshape, g, idx)
    np.testing.assert_array_equal(y.astype(np.float64), y64)   # max is exact in any dtype
    np.testing.assert_array_equal(y_only, y)
    np.testing.assert_array_equal(idx, idx64)
    agree(dx, dx64, dtype, "max_pool2d_input")


@pytest.mark.parametrize("flags", list(AVG_FLAGS.values()) + [(True, -2)],
                         ids=list(AVG_FLAGS.keys()) + ["negative_divisor"])
@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
@pytest.mark.parametrize("geometry", AVG_GEOMETRIES.values(), ids=AVG_GEOMETRIES.keys())
def test_avg_pool2d(rng, geometry, dtype, flags):
    xshape, kernel, stride, padding, ceil_mode = geometry
    count_include_pad, divisor = flags
    x, x64 = inputs(rng, xshape, dtype)
    kw = dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
              count_include_pad=count_include_pad, divisor_override=divisor)
    y64 = F.avg_pool2d(x64, **kw)
    g = randn(rng, y64.shape, dtype)
    dx64 = G.avg_pool2d_input(xshape, g.astype(np.float64), **kw)
    with cuda_emulation():
        y = F.avg_pool2d(x, **kw)
        dx = G.avg_pool2d_input(xshape, g, **kw)
    agree(y, y64, dtype, "avg_pool2d")
    agree(dx, dx64, dtype, "avg_pool2d_input")


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
@pytest.mark.parametrize("case", ADAPTIVE_CASES.values(), ids=ADAPTIVE_CASES.keys())
def test_adaptive_avg_pool2d(rng, case, dtype):
    xshape, output_size = case
    x, x64 = inputs(rng, xshape, dtype)
    y64 = F.adaptive_avg_pool2d(x64, output_size)
    g = randn(rng, y64.shape, dtype)
    dx64 = G.adaptive_avg_pool2d_input(xshape, g.astype(np.float64))
    with cuda_emulation():
        y = F.adaptive_avg_pool2d(x, output_size)
        dx = G.adaptive_avg_pool2d_input(xshape, g)
    agree(y, y64, dtype, "adaptive_avg_pool2d")
    agree(dx, dx64, dtype, "adaptive_avg_pool2d_input")


def check_conv_case(rng, xshape, wshape, has_bias, stride, padding, dilation, groups, dtype):
    x, x64 = inputs(rng, xshape, dtype)
    w, w64 = inputs(rng, wshape, dtype)
    b, b64 = inputs(rng, (wshape[0],), dtype) if has_bias else (None, None)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y64 = F.conv2d(x64, w64, b64, **kw)
    g, g64 = inputs(rng, y64.shape, dtype)
    dx64 = G.conv2d_input(xshape, w64, g64, **kw)
    dw64 = G.conv2d_weight(x64, wshape, g64, **kw)
    db64 = G.conv2d_bias(g64)
    with cuda_emulation():
        y = F.conv2d(x, w, b, **kw)
        dx = G.conv2d_input(xshape, w, g, **kw)
        dw = G.conv2d_weight(x, wshape, g, **kw)
        db = G.conv2d_bias(g)
    agree(y, y64, dtype, "conv2d")
    agree(dx, dx64, dtype, "conv2d_input")
    agree(dw, dw64, dtype, "conv2d_weight")
    agree(db, db64, dtype, "conv2d_bias")


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
@pytest.mark.parametrize("case", DW_CASES.values(), ids=DW_CASES.keys())
def test_depthwise_conv2d(rng, case, dtype):
    check_conv_case(rng, *case, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
@pytest.mark.parametrize("activation", [None, "relu", "relu6"])
def test_channel_affine(rng, dtype, activation):
    x, x64 = inputs(rng, (2, 5, 3, 7), dtype)
    x[0, 1, 0, :3] = [np.nan, np.inf, -np.inf]
    x64 = x.astype(np.float64)
    scale, s64 = inputs(rng, (5,), dtype)
    shift, t64 = inputs(rng, (5,), dtype)
    y64 = A.channel_affine(x64, s64, t64, activation)
    with cuda_emulation():
        y = A.channel_affine(x, scale, shift, activation)
    agree(y, y64, dtype, "channel_affine")


def test_unbatched_and_empty_inputs(rng):
    x = randn(rng, (3, 7, 6), np.float32)
    with cuda_emulation():
        y = F.max_pool2d(x, 2)
        e = F.avg_pool2d(np.zeros((0, 3, 4, 4), np.float32), 2)
    np.testing.assert_array_equal(y, F.max_pool2d(x, 2))
    assert e.shape == (0, 3, 2, 2)


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
@pytest.mark.parametrize("case", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_dense_and_grouped_conv2d(rng, case, dtype):
    xshape, wshape, has_bias, stride, padding, dilation, groups = case
    check_conv_case(rng, xshape, wshape, has_bias, stride, padding, dilation, groups, dtype)


def test_switch_restores_the_cpu_kernels_after_an_error(rng):
    x = randn(rng, (1, 2, 4, 4), np.float32)
    with pytest.raises(ZeroDivisionError):
        with cuda_emulation():
            1 / 0
    assert not fastconv._gpu.emulating()
    np.testing.assert_array_equal(F.max_pool2d(x, 2), x.reshape(1, 2, 2, 2, 2, 2).max((3, 5)))


def small_net():
    fastconv.manual_seed(0)
    return nn.Sequential(
        nn.DepthwiseConv2d(3, 3, padding=1, bias=False), nn.BatchNorm2d(3), nn.ReLU6(),
        nn.MaxPool2d(2), nn.DepthwiseConv2d(3, 5, stride=2, padding="same", depth_multiplier=2),
        nn.ReLU(), nn.AvgPool2d(2, ceil_mode=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(6, 4))


def test_training_step_matches_the_cpu_path(rng):
    """A small depthwise network: loss and every parameter gradient under the emulation equal the
    CPU path's (float32), in training mode (batch statistics) and in eval mode."""
    x = randn(rng, (2, 3, 16, 16), np.float32)
    target = np.array([1, 3])
    results = []
    for emulate in (False, True):
        net = small_net()
        with cuda_emulation() if emulate else _nothing():
            loss = F.cross_entropy(net(fastconv.tensor(x)), target)
            loss.backward()
            net.eval()
            logits = net(fastconv.tensor(x)).numpy()
        results.append((loss.item(), {k: p.grad for k, p in net.named_parameters()}, logits))
    (l0, g0, e0), (l1, g1, e1) = results
    assert abs(l0 - l1) <= 1e-5 * max(1.0, abs(l0))
    assert g0.keys() == g1.keys()
    for k in g0:
        assert_close(g1[k], g0[k], dtype=np.float32, name=k)
    assert_close(e1, e0, dtype=np.float32, name="eval logits")


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_fastconv_torch_ops_take_the_cuda_path(rng, torch):
    """fastconv.torch on CPU tensors inside the switch: the CUDA twins through TorchBackend, with
    autograd, against torch's own ops; dense conv falls back to torch in the modules."""
    import fastconv.torch as fct
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    with cuda_emulation():
        y = fct.conv2d(x, w, None, 2, 1, 1, 4)
        z = fct.max_pool2d(y, 2) + fct.avg_pool2d(y, 2, divisor_override=3)
        z.sum().backward()
        gx, gw = x.grad.clone(), w.grad.clone()
        x.grad = w.grad = None
        y_ref = torch.nn.functional.conv2d(x, w, None, 2, 1, 1, 4)
        z_ref = (torch.nn.functional.max_pool2d(y_ref, 2)
                 + torch.nn.functional.avg_pool2d(y_ref, 2, divisor_override=3))
        z_ref.sum().backward()
        torch.testing.assert_close(z, z_ref)
        torch.testing.assert_close(gx, x.grad)
        torch.testing.assert_close(gw, w.grad)
        dense = fct.Conv2d(4, 6, 3).double()
        torch.testing.assert_close(dense(x.detach()),
                                   torch.nn.Conv2d.forward(dense, x.detach()))


def test_fastconv_torch_under_torch_autocast_runs_16_bit(torch):
    """torch.autocast on the tensors' device casts fastconv.torch's conv2d to the autocast dtype
    on the CUDA path (here bfloat16 through the emulated kernels), with float32 weight gradients."""
    import fastconv.torch as fct
    x = torch.randn(2, 4, 9, 9)
    w = torch.randn(4, 1, 3, 3, requires_grad=True)
    with cuda_emulation():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = fct.conv2d(x, w, None, 1, 1, 1, 4)
        assert y.dtype == torch.bfloat16
        y.float().sum().backward()
    assert w.grad.dtype == torch.float32
    ref = torch.nn.functional.conv2d(x, w.detach(), None, 1, 1, 1, 4)
    torch.testing.assert_close(y.float(), ref, rtol=2e-2, atol=5e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):   # the CPU kernels: no cast, float32
        assert fct.conv2d(x, w, None, 1, 1, 1, 4).dtype == torch.float32


def test_resnet18_training_step_matches_the_cpu_path(rng):
    """ResNet-18 end to end on the emulated CUDA kernels (dense, strided and 1x1 convs, max
    pooling, BatchNorm, global pooling), batch 2 at 32x32: loss and every gradient equal the CPU
    path's. float64, because at 32x32 the last stage's BatchNorm sees a 1x1 map of 2 samples,
    whose gradient amplifies float32 rounding differences ~1e4-fold; float64 shows the kernels
    agree to rounding."""
    x = rng.standard_normal((2, 3, 32, 32))
    y = np.array([1, 7])
    results = []
    for emulate in (False, True):
        fastconv.manual_seed(0)
        model = fastconv.models.resnet18(num_classes=10).to(np.float64)
        with cuda_emulation() if emulate else _nothing():
            loss = F.cross_entropy(model(fastconv.tensor(x)), y)
            loss.backward()
        results.append((loss.item(), {k: p.grad for k, p in model.named_parameters()}))
    (l0, g0), (l1, g1) = results
    assert abs(l1 - l0) <= 1e-10 * abs(l0)
    for k in g0:
        scale = max(1e-12, float(np.abs(g0[k]).max()))
        assert float(np.abs(g1[k] - g0[k]).max()) <= 1e-8 * scale, k
