"""fastconv.torch's two routes to the kernels (fastconv/torch/_eager.py): plain eager calls skip the
dispatcher, and anything that may watch a call (a torch-function or dispatch mode, functorch, the
profiler, torch.compile) goes through the fastconv:: custom ops. Both routes must give the same
values and gradients bit for bit, and each must be taken exactly when it should be."""
import pytest

torch = pytest.importorskip("torch")

import fastconv.torch as fct  # noqa: E402
from fastconv.torch import _eager, _kernels, _ops  # noqa: E402

f64 = torch.float64
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")


@pytest.fixture
def gen(rng):
    return torch.Generator().manual_seed(int(rng.integers(2**62)))


class PassThrough(torch.overrides.TorchFunctionMode):
    """A torch-function mode that changes nothing: any such mode sends calls to the custom ops."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


@pytest.fixture
def op_calls(monkeypatch):
    """The names of the fastconv:: custom ops called through _ops (forward and backward)."""
    calls = []
    for name in ("conv2d", "conv2d_backward_input", "conv2d_backward_weight",
                 "conv2d_backward_bias", "max_pool2d", "max_pool2d_with_indices",
                 "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
                 "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward"):
        op = getattr(_ops, name)

        def spy(*args, _op=op, _name=name, **kwargs):
            calls.append(_name)
            return _op(*args, **kwargs)
        monkeypatch.setattr(_ops, name, spy)
    return calls


def every_op(x, w, b):
    """One differentiable expression through every fastconv op with a gradient."""
    y = fct.conv2d(x, w, b, stride=(2, 1), padding=(1, 0, 2, 1), dilation=(1, 2), groups=2)
    y = fct.max_pool2d(y, 3, 1, 1, ceil_mode=True)
    y = fct.avg_pool2d(y, 2, 1, 1, ceil_mode=True, count_include_pad=False)
    return fct.adaptive_avg_pool2d(y, (3, 2))


def values_and_grads(gen, dtype=f64):
    state = gen.get_state()
    x = torch.randn(2, 4, 9, 8, generator=gen, dtype=dtype, requires_grad=True)
    w = torch.randn(6, 2, 3, 2, generator=gen, dtype=dtype, requires_grad=True)
    b = torch.randn(6, generator=gen, dtype=dtype, requires_grad=True)
    gen.set_state(state)  # the next call draws the same inputs
    y = every_op(x, w, b)
    y.backward(torch.ones_like(y) + y.detach())
    return [y.detach(), x.grad, w.grad, b.grad]


def test_plain_calls_skip_the_custom_ops(gen, op_calls):
    values_and_grads(gen)
    x = torch.randn(1, 2, 6, 6, generator=gen, dtype=f64)
    with torch.no_grad():
        every_op(x, torch.randn(4, 1, 3, 3, dtype=f64), None)
    fct.max_pool2d(x, 2, return_indices=True)
    with torch.inference_mode():
        y = every_op(x, torch.randn(4, 1, 3, 3, dtype=f64), None)
    assert op_calls == [] and y.is_inference()


@pytest.mark.parametrize("dtype", [torch.float32, f64])
def test_both_routes_agree_bit_for_bit(gen, op_calls, dtype):
    eager = values_and_grads(gen, dtype)
    assert op_calls == []
    with PassThrough():
        dispatched = values_and_grads(gen, dtype)
    assert {"conv2d", "max_pool2d_with_indices", "avg_pool2d", "adaptive_avg_pool2d",
            "conv2d_backward_input", "conv2d_backward_weight", "conv2d_backward_bias",
            "max_pool2d_backward", "avg_pool2d_backward",
            "adaptive_avg_pool2d_backward"} <= set(op_calls)
    for name, a, e in zip(("output", "input grad", "weight grad", "bias grad"), eager, dispatched):
        assert torch.equal(a, e), name


def test_non_contiguous_inputs_and_gradients(gen):
    """Strided and channels_last inputs, and a strided output gradient, on the eager path."""
    x = torch.randn(2, 4, 10, 9, generator=gen, dtype=f64)[:, :, ::2]
    x = x.to(memory_format=torch.channels_last).requires_grad_(True)
    w = torch.randn(6, 4, 3, 3, generator=gen, dtype=f64).transpose(2, 3).requires_grad_(True)
    y = fct.avg_pool2d(fct.max_pool2d(fct.conv2d(x, w, padding=1), 2, 1), 2, 1)
    g = torch.randn(y.shape[::-1], generator=gen, dtype=f64).permute(3, 2, 1, 0)
    y.backward(g)
    xr, wr = x.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    TF = torch.nn.functional
    yr = TF.avg_pool2d(TF.max_pool2d(TF.conv2d(xr, wr, padding=1), 2, 1), 2, 1)
    yr.backward(g)
    for a, e in ((y, yr), (x.grad, xr.grad), (w.grad, wr.grad)):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)


def test_only_the_needed_gradients_are_computed(gen, monkeypatch):
    calls = []
    for name in ("conv2d_backward_input", "conv2d_backward_weight", "conv2d_backward_bias"):
        fn = getattr(_kernels, name)
        monkeypatch.setattr(_kernels, name,
                            lambda *a, _fn=fn, _name=name: calls.append(_name) or _fn(*a))
    x = torch.randn(1, 2, 5, 5, generator=gen, dtype=f64)
    w = torch.randn(3, 2, 3, 3, generator=gen, dtype=f64, requires_grad=True)
    b = torch.randn(3, generator=gen, dtype=f64)
    fct.conv2d(x, w, b).sum().backward()
    assert calls == ["conv2d_backward_weight"]
    assert w.grad is not None


def test_watchers_get_the_custom_ops(gen):
    x = torch.randn(1, 2, 6, 6, generator=gen)
    w = torch.randn(3, 2, 3, 3, generator=gen)
    assert _eager.applies(x, w, None)
    assert not _eager.applies(x, w.to("meta"))
    with PassThrough():
        assert not _eager.applies(x, w)
    with torch.device("cpu"):
        assert not _eager.applies(x, w)
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode() as mode:
        assert not _eager.applies(mode.from_tensor(x))
    assert torch.func.vmap(lambda t: torch.tensor(_eager.applies(t)))(x).tolist() == [False]
    with torch.profiler.profile() as prof:
        assert not _eager.applies(x, w)
        fct.conv2d(x, w)
    assert "fastconv::conv2d" in {e.name for e in prof.events()}
    assert _eager.applies(x, w)


def test_double_backward_is_the_custom_ops_error(gen):
    x = torch.randn(1, 2, 5, 5, generator=gen, dtype=f64, requires_grad=True)
    y = fct.avg_pool2d(fct.max_pool2d(x, 2, 1), 2, 1)
    (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError,
                       match="fastconv.(max|avg)_pool2d_backward.* no autograd formula"):
        gx.sum().backward()


def test_a_parameter_subclass_takes_the_custom_ops(op_calls):
    class Tagged(torch.Tensor):
        pass
    x = torch.randn(1, 2, 5, 5).as_subclass(Tagged)
    y = fct.conv2d(x, torch.randn(3, 2, 3, 3))
    assert op_calls == ["conv2d"] and y.shape == (1, 3, 3, 3)
