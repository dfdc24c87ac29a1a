"""fastconv.nn.Module semantics against torch.nn's: parameter, buffer, module and state-dict names
and order; loading our own and torch's checkpoints; strict-loading errors; train/eval;
requires_grad_; freeze/unfreeze (frozen BatchNorm keeps its statistics even after train());
zero_grad; to(dtype); summary(); repr()."""
from types import SimpleNamespace

import numpy as np
import pytest

import fastconv as fc
import fastconv.nn as nn
from fastconv import Tensor
from fastconv.testing import assert_close


def cnn(nn):
    """The 3x32x32 CNN of the transfer-learning notes (227,026 parameters)."""
    return nn.Sequential(nn.Conv2d(3, 7, 5), nn.BatchNorm2d(7), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(7, 15, 5, padding=2), nn.BatchNorm2d(15), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(735, 300), nn.Linear(300, 10))


def nested(L):
    """A custom module whose attribute order differs from its forward order, with a Sequential,
    ModuleList and ModuleDict, a parameter of its own and a non-persistent buffer."""
    class Block(L.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = L.nn.Linear(4, 3)
            self.scale = L.nn.Parameter(L.ones(1))
            self.features = L.nn.Sequential(L.nn.Conv2d(3, 4, 3, padding=1, bias=False),
                                            L.nn.BatchNorm2d(4), L.nn.ReLU(),
                                            L.nn.AdaptiveAvgPool2d(1), L.nn.Flatten())
            self.extra = L.nn.ModuleList([L.nn.Linear(3, 3), L.nn.BatchNorm1d(3)])
            self.named = L.nn.ModuleDict({"b": L.nn.Linear(3, 2), "a": L.nn.Linear(2, 2)})
            self.register_buffer("step", L.count(), persistent=False)

        def forward(self, x):
            h = self.extra[1](self.extra[0](self.head(self.features(x)) * self.scale))
            return self.named["a"](self.named["b"](h))
    return Block()


FASTCONV = SimpleNamespace(nn=nn, ones=lambda n: np.ones(n, np.float32),
                           count=lambda: np.zeros((), np.int64))


def torch_lib(torch):
    return SimpleNamespace(nn=torch.nn, ones=lambda n: torch.ones(n),
                           count=lambda: torch.zeros((), dtype=torch.int64))


ARCHS = {"cnn": lambda L: cnn(L.nn), "nested": nested}


def tiny(rng):
    return rng.standard_normal((2, 3, 32, 32)).astype(np.float32)


def to_numpy(state):
    return {k: v.detach().numpy() for k, v in state.items()}


def assert_same_state(ours, theirs):
    """State dicts with the same keys in the same order, integers equal, floats within the
    float32 table's tolerance."""
    a, b = ours.state_dict(), to_numpy(theirs.state_dict())
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        if a[k].dtype.kind == "f":
            assert_close(a[k], b[k], name=k)
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ---- names and order ---------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_names_and_order_equal_torch(arch, torch):
    ours, theirs = ARCHS[arch](FASTCONV), ARCHS[arch](torch_lib(torch))
    pairs = lambda it: [(n, tuple(v.shape)) for n, v in it]  # noqa: E731
    assert pairs(ours.named_parameters()) == pairs(theirs.named_parameters())
    assert [tuple(p.shape) for p in ours.parameters()] == [tuple(p.shape) for p in theirs.parameters()]
    assert pairs(ours.named_buffers()) == pairs(theirs.named_buffers())
    assert pairs(ours.state_dict().items()) == pairs(theirs.state_dict().items())
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [type(m).__name__ for m in ours.modules()] == [type(m).__name__ for m in theirs.modules()]
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    assert len(list(ours.children())) == len(list(theirs.children()))
    visited = {"ours": [], "theirs": []}
    ours.apply(lambda m: visited["ours"].append(type(m).__name__))
    theirs.apply(lambda m: visited["theirs"].append(type(m).__name__))
    assert visited["ours"] == visited["theirs"]  # children first, then the module itself
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in ours.parameters())


def test_buffers_and_state_dict_contents():
    m = nested(FASTCONV)
    assert "step" not in m.state_dict()  # non-persistent
    assert [n for n, _ in m.named_buffers()][0] == "step"  # own buffers before the children's
    bn = m.features[1]
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var",
                                     "num_batches_tracked"]
    assert bn.num_batches_tracked.dtype == np.int64 and bn.num_batches_tracked.shape == ()
    assert bn.state_dict()["weight"] is bn.weight.data  # arrays, not copies
    shared = nn.Linear(2, 2)
    pair = nn.Sequential(shared, nn.ReLU(), shared)
    assert [n for n, _ in pair.named_parameters()] == ["0.weight", "0.bias"]  # listed once
    no_bias = nn.Conv2d(2, 2, 1, bias=False)
    assert no_bias.bias is None and list(no_bias.state_dict()) == ["weight"]


def test_attribute_registration():
    m = nn.Module()
    m.w = nn.Parameter(np.ones(2, np.float32))
    m.child = nn.Linear(2, 2)
    m.plain = 3
    assert [n for n, _ in m.named_parameters()] == ["w", "child.weight", "child.bias"]
    m.child = nn.ReLU()  # replacing a child drops its parameters
    assert [n for n, _ in m.named_parameters()] == ["w"]
    del m.w
    assert list(m.parameters()) == [] and m.plain == 3
    with pytest.raises(AttributeError, match="'Module' object has no attribute 'w'"):
        m.w

    class Early(nn.Module):
        def __init__(self):
            self.x = 1

    with pytest.raises(AttributeError, match="call super\\(\\).__init__\\(\\) before"):
        Early()


# ---- state dicts -------------------------------------------------------------------------------
def test_state_dict_round_trip(rng):
    fc.manual_seed(1)
    a = cnn(nn)
    a.train()
    a(Tensor(tiny(rng)))  # running statistics away from their defaults
    fc.manual_seed(2)
    b = cnn(nn)
    x = Tensor(tiny(rng))
    assert not np.allclose(a.eval()(x).data, b.eval()(x).data)
    params_before = [p for p in b.parameters()]
    result = b.load_state_dict(a.state_dict())
    assert result == nn.IncompatibleKeys([], []) and list(b.parameters()) == params_before
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert va is not vb, k  # copied into b's own arrays
        np.testing.assert_array_equal(va, vb, err_msg=k)
    np.testing.assert_array_equal(a(x).data, b(x).data)
    assert b[1].num_batches_tracked == 1


@pytest.mark.parametrize("train", [False, True])
def test_torch_state_dict_gives_torch_outputs(train, torch, rng):
    theirs = cnn(torch.nn)
    with torch.no_grad():  # non-default running statistics and affine parameters
        for bn in (theirs[1], theirs[5]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
            bn.num_batches_tracked.fill_(7)
    ours = cnn(nn)
    ours.load_state_dict(to_numpy(theirs.state_dict()))
    ours.train(train)
    theirs.train(train)
    x = tiny(rng)
    assert_close(ours(Tensor(x)).data, theirs(torch.tensor(x)).detach().numpy(), name="logits")
    assert_same_state(ours, theirs)  # the same statistics updates
    assert ours[1].num_batches_tracked == (8 if train else 7)


def test_strict_loading_names_missing_unexpected_and_mismatched_keys():
    model = cnn(nn)
    good = {k: v.copy() for k, v in model.state_dict().items()}
    before = {k: v.copy() for k, v in good.items()}
    bad = dict(good)
    del bad["0.weight"], bad["5.num_batches_tracked"]
    bad["11.weight"] = np.zeros(3, np.float32)
    bad["9.weight"] = np.zeros((300, 734), np.float32)
    bad["0.bias"] = np.full(7, 5.0, np.float32)
    with pytest.raises(ValueError) as e:
        model.load_state_dict(bad)
    msg = str(e.value)
    assert "size mismatch for 9.weight: checkpoint (300, 734) vs model (300, 735)" in msg
    assert "missing keys: 0.weight, 5.num_batches_tracked" in msg
    assert "unexpected keys: 11.weight" in msg
    for k, v in model.state_dict().items():  # nothing was loaded
        np.testing.assert_array_equal(v, before[k], err_msg=k)

    del bad["9.weight"]
    bad["9.weight"] = good["9.weight"] + 1
    missing, unexpected = model.load_state_dict(bad, strict=False)
    assert (missing, unexpected) == (["0.weight", "5.num_batches_tracked"], ["11.weight"])
    np.testing.assert_array_equal(model[0].bias.data, 5.0)  # the rest was loaded
    np.testing.assert_array_equal(model[9].weight.data, good["9.weight"] + 1)
    bad["9.weight"] = np.zeros((300, 734), np.float32)
    with pytest.raises(ValueError, match="size mismatch for 9.weight"):
        model.load_state_dict(bad, strict=False)


def test_module_prefix_is_accepted():
    src, dst = cnn(nn), cnn(nn)
    dst.load_state_dict({"module." + k: v for k, v in src.state_dict().items()})
    for k, v in src.state_dict().items():
        np.testing.assert_array_equal(dst.state_dict()[k], v, err_msg=k)


def test_loading_casts_to_the_models_dtype():
    m = nn.Linear(3, 2)
    m.load_state_dict({"weight": np.ones((2, 3)), "bias": np.arange(2)})
    assert m.weight.dtype == np.float32 and m.bias.dtype == np.float32
    np.testing.assert_array_equal(m.bias.data, [0.0, 1.0])


# ---- modes, gradients, freezing --------------------------------------------------------------------
def test_train_eval_recurse():
    m = nested(FASTCONV)
    assert all(x.training for x in m.modules())
    assert m.eval() is m and not any(x.training for x in m.modules())
    assert m.train() is m and all(x.training for x in m.modules())
    m.train(False)
    assert not any(x.training for x in m.modules())


def test_requires_grad_():
    m = cnn(nn)
    assert m.requires_grad_(False) is m
    assert not any(p.requires_grad for p in m.parameters())
    x = Tensor(np.ones((1, 3, 32, 32), np.float32), requires_grad=True)
    m(x).sum().backward()
    assert all(p.grad is None for p in m.parameters()) and x.grad is not None
    m.requires_grad_()
    assert all(p.requires_grad for p in m.parameters())


def bn_stats(bn):
    return bn.running_mean.copy(), bn.running_var.copy(), int(bn.num_batches_tracked)


def test_freeze_stops_gradients_and_batchnorm_statistics(rng):
    model = cnn(nn)
    features = [model[i] for i in range(8)]
    for layer in features:
        layer.freeze()
    model.train()  # the usual pitfall: must not wake the frozen BatchNorms up
    assert all(m.training for m in model.modules())
    frozen_bn, x = model[1], tiny(rng)
    stats = bn_stats(frozen_bn)
    xt = Tensor(x, requires_grad=True)
    model(xt).sum().backward()
    for name, p in model.named_parameters():
        if int(name.split(".")[0]) < 8:
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.grad is not None and np.abs(p.grad).sum() > 0, name
    assert xt.grad is not None  # gradients still flow through frozen layers
    for a, b in zip(bn_stats(frozen_bn), stats):
        np.testing.assert_array_equal(a, b)
    # a frozen BatchNorm in training mode normalises with its running statistics, as in eval
    h = Tensor(rng.standard_normal((4, 7, 3, 3)).astype(np.float32) * 3 + 2)
    np.testing.assert_array_equal(frozen_bn(h).data, frozen_bn.eval()(h).data)

    model.train()
    model[0].unfreeze()
    model[1].unfreeze()
    model.zero_grad()
    model(Tensor(x)).sum().backward()
    assert model[0].weight.grad is not None and model[1].weight.grad is not None
    assert model[4].weight.grad is None
    mean, var, count = bn_stats(model[1])
    assert count == stats[2] + 1
    assert not np.allclose(mean, stats[0]) and not np.allclose(var, stats[1])


def test_unfrozen_batchnorm_statistics_move(torch, rng):
    ours, theirs = nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    for _ in range(2):
        x = rng.standard_normal((4, 3, 2, 2)).astype(np.float32) * 2 + 1
        ours(Tensor(x))
        theirs(torch.tensor(x))
    assert_same_state(ours, theirs)
    assert ours.num_batches_tracked == 2


def test_freezing_a_parent_and_unfreezing_a_child():
    model = cnn(nn)
    model.freeze()
    assert all(m.frozen for m in model.modules())
    assert model.num_parameters(trainable_only=True) == 0
    model[10].unfreeze()
    assert model.num_parameters(trainable_only=True) == 3010
    assert model.num_parameters() == 227026
    model.unfreeze()
    assert model.num_parameters(trainable_only=True) == 227026
    assert not any(m.frozen for m in model.modules())


def test_summary_counts_and_layout():
    model = cnn(nn)
    lines = []
    text = model.summary((3, 32, 32), print_fn=lines.append)
    assert lines == [text]
    rows = [line.split() for line in text.splitlines()]
    assert ["0", "(Conv2d)", "(None,", "7,", "28,", "28)", "532"] in rows
    assert ["4", "(Conv2d)", "(None,", "15,", "14,", "14)", "2,640"] in rows
    assert ["5", "(BatchNorm2d)", "(None,", "15,", "14,", "14)", "30"] in rows
    assert ["8", "(Flatten)", "(None,", "735)", "0"] in rows
    assert ["9", "(Linear)", "(None,", "300)", "220,800"] in rows
    assert ["10", "(Linear)", "(None,", "10)", "3,010"] in rows
    assert "Total params: 227,026" in lines[0]
    assert "Trainable params: 227,026" in text and "Non-trainable params: 0" in text

    model[0].freeze()
    model[4].freeze()
    text = model.summary((3, 32, 32), print_fn=None)
    assert "Total params: 227,026" in text
    assert "Trainable params: 223,854" in text and "Non-trainable params: 3,172" in text
    model[1].freeze()
    model[5].freeze()
    text = model.summary((3, 32, 32), print_fn=None)
    assert "Trainable params: 223,810" in text and "Non-trainable params: 3,216" in text


def test_summary_leaves_modes_and_statistics_alone():
    model = cnn(nn)
    model.train()
    model[5].eval()
    stats = bn_stats(model[1])
    model.summary((3, 32, 32), print_fn=None)
    assert [m.training for m in model.modules()] == [i != 6 for i in range(12)]
    for a, b in zip(bn_stats(model[1]), stats):
        np.testing.assert_array_equal(a, b)


def test_zero_grad():
    m = nn.Linear(3, 2)
    m(Tensor(np.ones((4, 3), np.float32))).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad(set_to_none=False)
    for p in m.parameters():
        assert p.grad.shape == p.shape and not p.grad.any()
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_to_dtype_keeps_parameter_identity(rng):
    m = cnn(nn)
    params = list(m.parameters())
    x = tiny(rng)
    m(Tensor(x)).sum().backward()
    assert m.to(np.float64) is m
    assert [id(p) for p in m.parameters()] == [id(p) for p in params]
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in params)
    assert m[1].running_mean.dtype == np.float64 and m[1].num_batches_tracked.dtype == np.int64
    y = m(Tensor(x.astype(np.float64)))
    assert y.dtype == np.float64
    m.float()
    assert all(p.dtype == np.float32 for p in params) and m(Tensor(x)).dtype == np.float32
    assert m.to("cpu") is m


def test_repr_matches_torch(torch):
    def convnet(nn):
        return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.ReLU(),
                             nn.Conv2d(8, 8, 3, padding="same", groups=2, dilation=2),
                             nn.MaxPool2d(2), nn.AvgPool2d(3, 1, 1), nn.Flatten(),
                             nn.Linear(8, 4), nn.Sequential(nn.Tanh(), nn.Identity()))
    assert repr(convnet(nn)) == repr(convnet(torch.nn))


def test_repr_of_the_cnn():
    assert repr(cnn(nn)) == """Sequential(
  (0): Conv2d(3, 7, kernel_size=(5, 5), stride=(1, 1))
  (1): BatchNorm2d(7, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
  (2): ReLU()
  (3): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
  (4): Conv2d(7, 15, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2))
  (5): BatchNorm2d(15, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
  (6): ReLU()
  (7): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
  (8): Flatten(start_dim=1, end_dim=-1)
  (9): Linear(in_features=735, out_features=300, bias=True)
  (10): Linear(in_features=300, out_features=10, bias=True)
)"""
    p = nn.Parameter(np.zeros(2, np.float32))
    assert repr(p).startswith("Parameter containing:\ntensor([0., 0.], dtype=float32, requires_grad=True")
