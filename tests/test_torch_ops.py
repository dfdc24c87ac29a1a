"""fastconv.torch's functional ops and the fastconv:: custom ops under them: float64 gradcheck over
stride / padding / dilation / groups / ceil_mode, float32 forward and gradients against
torch.nn.functional, odd layouts (unbatched, channels_last, strided, empty batch), torch.library
.opcheck, torch.compile(fullgraph=True) and torch.export, and the errors (dtypes, devices)."""
import re
import subprocess
import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as TF  # noqa: E402

import fastconv  # noqa: E402
import fastconv.testing  # noqa: E402
import fastconv.torch as fct  # noqa: E402
from fastconv.testing import assert_close  # noqa: E402
from fastconv.torch import _launch  # noqa: E402

f32, f64 = torch.float32, torch.float64
# torch's own modules (dynamo, opcheck) still touch torch.jit.script_method
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")


@pytest.fixture
def gen(rng):
    """A torch Generator seeded from the test's numpy rng (seed printed by conftest)."""
    return torch.Generator().manual_seed(int(rng.integers(2**62)))


def randn(gen, *shape, dtype=f64, requires_grad=False):
    return torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_(requires_grad)


def close(actual, expected, name):
    assert actual.shape == expected.shape, name
    assert_close(actual.detach().numpy(), expected.detach().numpy(), name=name)


def run_fresh(code):
    """Run code in a fresh interpreter (this one's environment); fail with its stderr."""
    r = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_import_fastconv_does_not_import_torch():
    run_fresh("import sys, fastconv; assert 'torch' not in sys.modules, 'torch was imported'")


def test_first_call_keeps_nothing_alive():
    """The first op call of a process must not put the caller's objects in a reference cycle
    (torch's lazy import of torch._dynamo did, through torch.fx.wrap's frame; see _ops.py): a
    model, or a DistributedDataParallel wrapper, must die with its last reference."""
    run_fresh("import gc, weakref, torch, fastconv.torch as fct\n"
              "gc.disable()\n"
              "m = fct.Conv2d(1, 2, 3)\n"
              "m(torch.randn(1, 1, 5, 5)).sum().backward()\n"
              "r = weakref.ref(m)\n"
              "del m\n"
              "assert r() is None, 'the layer outlived its last reference'\n")


# ---- gradients in float64 ---------------------------------------------------------------------

# (C, K, H, W, kernel, stride, padding, dilation, groups)
CONV_CASES = [
    (3, 4, 7, 6, 3, 1, 1, 1, 1),
    (4, 6, 9, 8, 3, 2, 1, 1, 2),
    (4, 4, 8, 8, 3, 1, 2, 2, 4),            # depthwise, dilated
    (2, 3, 7, 9, (3, 2), (2, 1), (0, 1), (1, 2), 1),
    (3, 2, 6, 6, 2, 1, "same", 1, 1),        # even kernel: the odd pixel bottom / right
    (2, 4, 9, 7, 3, 2, "same", 1, 2),        # TensorFlow 'SAME' at stride 2 (an extension)
    (2, 2, 5, 5, 3, 1, (0, 1, 2, 0), 1, 1),  # (top, bottom, left, right)
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[f"conv{i}" for i in range(len(CONV_CASES))])
def test_conv2d_gradcheck(gen, case):
    C, K, H, W, k, s, p, d, g = case
    kh, kw = (k, k) if isinstance(k, int) else k
    x = randn(gen, 2, C, H, W, requires_grad=True)
    w = randn(gen, K, C // g, kh, kw, requires_grad=True)
    b = randn(gen, K, requires_grad=True)
    torch.autograd.gradcheck(lambda x, w, b: fct.conv2d(x, w, b, s, p, d, g), (x, w, b),
                             fast_mode=True)


# (H, W, kernel, stride, padding, dilation, ceil_mode)
POOL_CASES = [
    (7, 7, 3, 2, 1, 1, False),
    (7, 8, 3, 2, 1, 1, True),
    (9, 9, 3, 1, 0, 2, False),
    (8, 6, (3, 2), (2, 1), (1, 0), 1, True),
    (6, 6, 2, None, 0, 1, False),
]


@pytest.mark.parametrize("case", POOL_CASES, ids=[f"pool{i}" for i in range(len(POOL_CASES))])
def test_pooling_gradcheck(gen, case):
    H, W, k, s, p, d, ceil = case
    # distinct values: max pooling's gradient is only defined away from ties
    x = (torch.randperm(2 * 3 * H * W, generator=gen, dtype=f64) / 10).reshape(2, 3, H, W)
    x.requires_grad_(True)
    for fn in (lambda x: fct.max_pool2d(x, k, s, p, d, ceil),
               lambda x: fct.avg_pool2d(x, k, s, p, ceil, True),
               lambda x: fct.avg_pool2d(x, k, s, p, ceil, False),
               lambda x: fct.avg_pool2d(x, k, s, p, ceil, True, 5),
               lambda x: fct.adaptive_avg_pool2d(x, (3, 4))):
        torch.autograd.gradcheck(fn, (x,), fast_mode=True)


# ---- against torch.nn.functional in float32 ---------------------------------------------------

def forward_backward(fn, inputs, grad_out_gen):
    """fn's output and the gradients of <output, g> for a random g (the same g for both)."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    y = fn(*leaves)
    g = torch.randn(y.shape, generator=grad_out_gen(), dtype=y.dtype)
    y.backward(g)
    return y, [t.grad for t in leaves]


@pytest.mark.parametrize("case", CONV_CASES[:4], ids=[f"conv{i}" for i in range(4)])
def test_conv2d_float32_matches_torch(rng, case):
    C, K, H, W, k, s, p, d, g = case
    kh, kw = (k, k) if isinstance(k, int) else k
    seed = int(rng.integers(2**62))
    gen = torch.Generator().manual_seed(seed)
    x = randn(gen, 4, C, H, W, dtype=f32)
    w = randn(gen, K, C // g, kh, kw, dtype=f32)
    b = randn(gen, K, dtype=f32)
    grads = lambda: torch.Generator().manual_seed(seed + 1)  # noqa: E731
    ours = forward_backward(lambda x, w, b: fct.conv2d(x, w, b, s, p, d, g), (x, w, b), grads)
    ref = forward_backward(lambda x, w, b: TF.conv2d(x, w, b, s, p, d, g), (x, w, b), grads)
    close(ours[0], ref[0], "conv2d")
    for name, a, e in zip(("input", "weight", "bias"), ours[1], ref[1]):
        close(a, e, f"conv2d grad {name}")


@pytest.mark.parametrize("case", POOL_CASES, ids=[f"pool{i}" for i in range(len(POOL_CASES))])
def test_pooling_float32_matches_torch(rng, case):
    H, W, k, s, p, d, ceil = case
    seed = int(rng.integers(2**62))
    x = randn(torch.Generator().manual_seed(seed), 3, 5, H, W, dtype=f32)
    grads = lambda: torch.Generator().manual_seed(seed + 1)  # noqa: E731

    y, i = fct.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    yt, it = TF.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    assert torch.equal(y, yt) and torch.equal(i, it)
    calls = [  # (function name, arguments after the input)
        ("max_pool2d", (k, s, p, d, ceil)),
        ("avg_pool2d", (k, s, p, ceil, False)),
        ("avg_pool2d", (k, s, p, ceil, True, 3)),
        ("adaptive_avg_pool2d", ((3, None),)),
    ]
    for name, args in calls:
        ours_fn = lambda x: getattr(fct, name)(x, *args)  # noqa: E731
        torch_fn = lambda x: getattr(TF, name)(x, *args)  # noqa: E731
        ours, ref = forward_backward(ours_fn, (x,), grads), forward_backward(torch_fn, (x,), grads)
        close(ours[0], ref[0], f"{name}{args} forward")
        close(ours[1][0], ref[1][0], f"{name}{args} input gradient")


def test_max_pool2d_nan_propagates_and_indices_unpool():
    x = torch.arange(16, dtype=f32).reshape(1, 1, 4, 4)
    x[0, 0, 1, 1] = float("nan")
    y = fct.max_pool2d(x, 2)
    assert torch.isnan(y[0, 0, 0, 0]) and y[0, 0, 1, 1] == 15
    x = torch.rand(2, 3, 8, 8) + 0.5  # positive: the zeros max_unpool2d fills in never win
    y, i = fct.max_pool2d(x, 2, return_indices=True)
    up = TF.max_unpool2d(y, i, 2)
    assert torch.equal(TF.max_pool2d(up, 2), y)


# ---- layouts ----------------------------------------------------------------------------------

def test_unbatched_channels_last_strided_and_empty(gen):
    x = randn(gen, 2, 4, 10, 10, dtype=f32)
    w = randn(gen, 6, 4, 3, 3, dtype=f32)
    ref = TF.conv2d(x, w, padding=1)
    close(fct.conv2d(x[0], w, padding=1), ref[0], "unbatched conv2d")
    assert fct.max_pool2d(x[0], 2, return_indices=True)[1].shape == (4, 5, 5)
    cl = x.contiguous(memory_format=torch.channels_last)
    y = fct.conv2d(cl, w, padding=1)
    close(y, ref, "channels_last conv2d")
    assert y.is_contiguous()
    strided = randn(gen, 2, 4, 10, 20, dtype=f32)[..., ::2]
    close(fct.conv2d(strided, w, padding=1), TF.conv2d(strided, w, padding=1), "strided conv2d")
    close(fct.avg_pool2d(cl, 3, 2, 1), TF.avg_pool2d(x, 3, 2, 1), "channels_last avg_pool2d")

    empty = torch.zeros(0, 4, 10, 10, requires_grad=True)
    wg = w.clone().requires_grad_(True)
    out = fct.conv2d(empty, wg, padding=1)
    assert out.shape == (0, 6, 10, 10)
    out.sum().backward()
    assert empty.grad.shape == empty.shape and torch.equal(wg.grad, torch.zeros_like(w))
    for y in (fct.max_pool2d(empty, 2), fct.avg_pool2d(empty, 2),
              fct.adaptive_avg_pool2d(empty, 3)):
        y.sum().backward()
        assert y.shape[0] == 0


def test_outputs_are_fresh_tensors_and_meta_gives_shapes():
    x = torch.randn(1, 2, 5, 5)
    y = fct.avg_pool2d(x, 1)
    assert torch.equal(y, x) and y.data_ptr() != x.data_ptr()
    meta = torch.empty(2, 3, 17, 17, device="meta")
    assert fct.conv2d(meta, torch.empty(8, 3, 3, 3, device="meta"), stride=2).shape == (2, 8, 8, 8)
    assert fct.max_pool2d(meta, 3, 2, 1, ceil_mode=True).shape == (2, 3, 9, 9)


def test_max_pool2d_computes_indices_only_for_autograd(monkeypatch):
    calls = []  # per max_pool2d_forward launch: whether it went without indices

    def spy(kernel, *args):
        if kernel == "max_pool2d_forward":
            calls.append(args[2] is None)
        _launch.launch(kernel, *args)
    monkeypatch.setattr("fastconv.torch._kernels.launch", spy)
    x = torch.randn(1, 2, 6, 6)
    fct.max_pool2d(x, 2)
    with torch.no_grad():
        fct.max_pool2d(x.requires_grad_(True), 2)
    fct.max_pool2d(x, 2).sum().backward()
    assert calls == [True, True, False]  # no indices, no indices (no grad), indices


# ---- custom ops, torch.compile, torch.export --------------------------------------------------

def test_opcheck(gen):
    x = randn(gen, 2, 4, 7, 7, requires_grad=True)
    w = randn(gen, 6, 2, 3, 3, requires_grad=True)
    b = randn(gen, 6, requires_grad=True)
    ops = torch.ops.fastconv
    geom = ([2, 1], [1, 0, 1, 1], [1, 1], 2)
    dy = randn(gen, 2, 6, 3, 7)  # conv2d's output shape for x, w and geom
    pool = ([3, 3], [2, 2], [1, 1, 1, 1])
    y, idx = ops.max_pool2d_with_indices(x.detach(), *pool, [1, 1], True)
    cases = [
        (ops.conv2d, (x, w, b) + geom),
        (ops.conv2d, (x, w, None) + geom),
        (ops.conv2d_backward_input, (dy, w.detach(), [2, 4, 7, 7]) + geom),
        (ops.conv2d_backward_weight, (dy, x.detach(), [6, 2, 3, 3]) + geom),
        (ops.conv2d_backward_bias, (dy,)),
        (ops.max_pool2d_with_indices, (x,) + pool + ([1, 1], True)),
        (ops.max_pool2d, (x.detach(),) + pool + ([1, 1], True)),
        (ops.max_pool2d_backward, (torch.randn_like(y), idx, [2, 4, 7, 7])),
        (ops.avg_pool2d, (x,) + pool + (True, False, 0)),
        (ops.avg_pool2d_backward, (torch.randn_like(y), [2, 4, 7, 7]) + pool + (True, False, 0)),
        (ops.adaptive_avg_pool2d, (x, [3, 2])),
        (ops.adaptive_avg_pool2d_backward, (randn(gen, 2, 4, 3, 2), [2, 4, 7, 7])),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


def test_double_backward_is_a_clear_error(gen):
    x = randn(gen, 1, 2, 5, 5, requires_grad=True)
    w = randn(gen, 3, 2, 3, 3, requires_grad=True)
    (gx,) = torch.autograd.grad(fct.conv2d(x, w).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="fastconv.conv2d_backward_input.* no autograd formula"):
        gx.sum().backward()


class SmallNet(torch.nn.Module):
    """Every fastconv op, with torch's pointwise ops and a linear layer between them."""

    def __init__(self):
        super().__init__()
        self.conv1 = fct.Conv2d(3, 8, 3, padding=1)
        self.conv2 = fct.Conv2d(8, 8, 3, stride=2, padding=1, groups=2)
        self.pool1 = fct.MaxPool2d(3, 2, 1)
        self.pool2 = fct.AvgPool2d(2, ceil_mode=True)
        self.gap = fct.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        x = self.pool1(torch.relu(self.conv1(x)))
        x = self.pool2(torch.relu(self.conv2(x)))
        return self.fc(torch.flatten(self.gap(x), 1))


def run_and_grads(model, x):
    model.zero_grad()
    y = model(x)
    y.square().sum().backward()
    return y.detach(), [p.grad.clone() for p in model.parameters()]


def test_torch_compile_fullgraph_sees_the_custom_ops():
    """Dynamo traces the model in one graph holding the fastconv ops (no graph break), and
    AOTAutograd (aot_eager: no C++ toolchain needed) gives eager's outputs and gradients."""
    torch.manual_seed(0)
    model, x = SmallNet(), torch.randn(2, 3, 16, 16)
    seen = []

    def recording_backend(gm, example_inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return torch._dynamo.backends.debugging.aot_eager(gm, example_inputs)

    compiled = torch.compile(model, fullgraph=True, backend=recording_backend)
    y, grads = run_and_grads(compiled, x)
    y_ref, grads_ref = run_and_grads(model, x)
    assert {"fastconv.conv2d.default", "fastconv.max_pool2d_with_indices.default",
            "fastconv.avg_pool2d.default", "fastconv.adaptive_avg_pool2d.default"} <= set(seen)
    close(y, y_ref, "compiled forward")
    for a, e in zip(grads, grads_ref):
        close(a, e, "compiled gradient")


def test_torch_compile_inductor():
    """Inductor on a graph of fastconv ops only: no generated C++ kernel, so no C++ toolchain
    is needed and a cold compile takes about a second."""
    def f(x, w):
        return fct.avg_pool2d(fct.max_pool2d(fct.conv2d(x, w, padding=1), 2), 2)
    x = torch.randn(2, 3, 12, 12, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    y = torch.compile(f, fullgraph=True, backend="inductor")(x, w)
    y.backward(torch.ones_like(y))
    xr, wr = x.detach().requires_grad_(True), w.detach().requires_grad_(True)
    yr = f(xr, wr)
    yr.backward(torch.ones_like(yr))
    close(y, yr, "inductor forward")
    close(x.grad, xr.grad, "inductor input gradient")
    close(w.grad, wr.grad, "inductor weight gradient")


def test_torch_export():
    torch.manual_seed(0)
    model, x = SmallNet().eval(), torch.randn(2, 3, 16, 16)
    exported = torch.export.export(model, (x,))
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert {"fastconv.conv2d.default", "fastconv.adaptive_avg_pool2d.default"} <= targets
    assert targets & {"fastconv.max_pool2d.default", "fastconv.max_pool2d_with_indices.default"}
    close(exported.module()(x), model(x), "exported module")


# ---- errors -----------------------------------------------------------------------------------

def test_errors_name_the_argument():
    x, w = torch.randn(1, 4, 8, 8), torch.randn(6, 4, 3, 3)
    cases = [
        (lambda: fct.conv2d(x.half(), w.half()), TypeError,
         r"conv2d: input has dtype torch.float16, but fastconv's CPU kernels support float32 and "
         r"float64 only .* \.float\(\)"),
        (lambda: fct.max_pool2d(x.bfloat16(), 2), TypeError,
         r"max_pool2d: input has dtype torch.bfloat16"),
        (lambda: fct.avg_pool2d(x.long(), 2), TypeError,
         r"avg_pool2d: input must be a float32 or float64 tensor, got dtype torch.int64"),
        (lambda: fct.conv2d(x, w.double()), TypeError,
         r"conv2d: weight has dtype torch.float64 but input has dtype torch.float32; they "
         r"must match"),
        (lambda: fct.conv2d(x.numpy(), w), TypeError,
         r"conv2d: input must be a torch.Tensor, got ndarray"),
        (lambda: fct.conv2d(x, w, torch.zeros(5)), ValueError,
         r"conv2d: bias must have shape \(6,\)"),
        (lambda: fct.conv2d(x, w, groups=2), ValueError, r"weight has 4 input channels per group"),
        (lambda: fct.conv2d(x[0, 0], w), ValueError,
         r"conv2d: input must be 3-D \(C, H, W\) or 4-D"),
        (lambda: fct.max_pool2d(x, 3, padding=2), ValueError, r"at most half the kernel size"),
        (lambda: fct.avg_pool2d(x, 2, divisor_override=0), ValueError,
         r"divisor_override must be a non-zero int"),
        (lambda: fct.adaptive_avg_pool2d(x, (2, 0)), ValueError, r"output_size must be positive"),
        (lambda: fct.conv2d(x, torch.empty(6, 4, 3, 3, device="meta")), ValueError,
         r"conv2d: weight is on meta but input is on cpu"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()


def test_cuda_tensors_without_a_gpu_are_unsupported():
    """No CUDA tensor can be made on a machine without a GPU: a stand-in with a CUDA device takes
    the same checks, and the reason names the tensor and what is missing (the CUDA build or a GPU),
    so the modules fall back to torch."""
    cuda_like = types.SimpleNamespace(device=torch.device("cuda", 0), dtype=f32)
    if fastconv.cuda_available():  # pragma: no cover - GPU machines
        assert _launch.unsupported("max_pool2d", input=cuda_like) is None
        return
    err = _launch.unsupported("conv2d", input=cuda_like)
    assert isinstance(err, NotImplementedError)
    assert re.search(r"conv2d: input is on cuda:0(; the GPU kernels need the fastconv._cuda "
                     r"extension|, but the CUDA runtime sees no usable GPU).*fall back to "
                     r"torch.nn.functional.conv2d", str(err)), str(err)


def test_the_device_path_takes_16_bit_tensors():
    """Under the emulation (the CUDA path on CPU tensors) float16 and bfloat16 are accepted; on
    the CPU kernels they are not."""
    x = torch.ones(1, 4, 5, 5)
    with fastconv.testing.cuda_emulation():
        assert _launch.unsupported("conv2d", input=x.half()) is None
        assert _launch.unsupported("avg_pool2d", input=x.bfloat16()) is None
        assert isinstance(_launch.unsupported("avg_pool2d", input=x.int()), TypeError)
    assert isinstance(_launch.unsupported("avg_pool2d", input=x.half()), TypeError)

def test_autocast_casts_a_layers_bfloat16_output_and_the_next_float32_weight(gen):
    """Under torch.autocast on the device path (here: the emulation), conv2d's float32 and
    bfloat16 arguments all run in the autocast dtype, as torch's own conv2d: the second conv of
    a chain meets a bfloat16 input and a float32 weight (the H200 run of 2026-12-04 refused that
    pair with a dtype error)."""
    x = randn(gen, 2, 3, 9, 8, dtype=f32)
    w1, w2 = randn(gen, 4, 3, 3, 3, dtype=f32), randn(gen, 5, 4, 3, 3, dtype=f32)
    b2 = randn(gen, 5, dtype=f32)
    with fastconv.testing.cuda_emulation(), torch.autocast("cpu", dtype=torch.bfloat16):
        h = fct.conv2d(x, w1, None, 1, 1)
        y = fct.conv2d(h, w2, b2, 1, 1)
        ht = TF.conv2d(x, w1, None, 1, 1)
        yt = TF.conv2d(ht, w2, b2, 1, 1)
    assert h.dtype == y.dtype == yt.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), yt.float(), rtol=3e-2, atol=0.1)
    x64 = x.double()
    with fastconv.testing.cuda_emulation(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert fct.conv2d(x64, w1.double(), None, 1, 1).dtype == f64  # float64 is not cast
