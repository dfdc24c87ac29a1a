"""fastconv.optim against torch.optim: optimizers (every option, parameter groups, frozen and
grad-less parameters, random gradients and a real loss through a small model), state_dict round
trips (also from torch), learning-rate schedulers over 30 epochs, ReduceLROnPlateau on a metric
sequence, gradient clipping (with inf/NaN) and the error messages. Each optimizer test runs on
numpy and, where cupy and a GPU are present, on cupy."""
import doctest
import math

import numpy as np
import pytest

import fastconv as fc
import fastconv.nn as nn
import fastconv.optim as optim
from fastconv.nn import Parameter
from fastconv.optim import lr_scheduler as sched
from fastconv.testing import assert_close

DTYPES = (np.float32, np.float64)
SHAPES = [(3, 4), (5,), (2, 3, 2, 2)]


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    """The array library of the parameters: numpy, or cupy (skipped without cupy and a GPU)."""
    if request.param == "numpy":
        return np
    cupy = pytest.importorskip("cupy")
    if not cupy.cuda.is_available():  # False (not an exception) without a driver or a GPU
        pytest.skip("no CUDA device")
    return cupy


@pytest.fixture
def torch_one_thread(torch):
    """torch limited to one thread for the test: its tiny convolutions are then not slowed down
    by other processes competing for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


def host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def make_params(torch, rng, xp, dtype, shapes=SHAPES):
    """fastconv Parameters and torch Parameters holding the same values."""
    values = [rng.standard_normal(s).astype(dtype) for s in shapes]
    ours = [Parameter(xp.asarray(v.copy())) for v in values]
    theirs = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
    return ours, theirs


def set_grads(torch, rng, xp, ours, theirs, skip=()):
    """The same random gradients on both sides; parameters numbered in skip get none."""
    for i, (p, q) in enumerate(zip(ours, theirs)):
        if i in skip:
            p.grad, q.grad = None, None
            continue
        g = rng.standard_normal(p.shape).astype(p.dtype)
        p.grad, q.grad = xp.asarray(g), torch.from_numpy(g.copy())


def assert_same_params(ours, theirs, what):
    for i, (p, q) in enumerate(zip(ours, theirs)):
        assert_close(host(p.data), q.detach().numpy(), name=f"{what}: parameter {i}")


OPTIMIZERS = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.3}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    ("SGD", {"lr": 0.1, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.2,
             "maximize": True}),
    ("Adam", {"lr": 0.01}),
    ("Adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("Adam", {"lr": 0.01, "amsgrad": True}),
    ("Adam", {"lr": 0.01, "betas": (0.3, 0.8), "eps": 1e-3, "maximize": True}),
    ("Adam", {"lr": 0.02, "amsgrad": True, "weight_decay": 0.3, "maximize": True}),
    ("Adam", {"lr": 0.02, "weight_decay": 0.3, "decoupled_weight_decay": True}),
    ("AdamW", {}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.5, "amsgrad": True}),
    ("AdamW", {"lr": 0.01, "betas": (0.5, 0.9), "maximize": True}),
]
IDS = [f"{name}-" + "-".join(f"{k}={v}" for k, v in kw.items()) for name, kw in OPTIMIZERS]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,options", OPTIMIZERS, ids=IDS)
def test_optimizer_matches_torch(torch, xp, rng, name, options, dtype):
    ours, theirs = make_params(torch, rng, xp, dtype)
    frozen = Parameter(xp.asarray(rng.standard_normal((2, 2)).astype(dtype)), requires_grad=False)
    tfrozen = torch.nn.Parameter(torch.from_numpy(host(frozen.data).copy()), requires_grad=False)
    before = host(frozen.data).copy()
    opt = getattr(optim, name)(ours + [frozen], **options)
    topt = getattr(torch.optim, name)(theirs + [tfrozen], **options)
    for step in range(6):
        # parameter 1 has no gradient in steps 0 and 3: skipped, its state starts late
        set_grads(torch, rng, xp, ours, theirs, skip=(1,) if step % 3 == 0 else ())
        opt.step()
        topt.step()
        assert_same_params(ours, theirs, f"{name} step {step}")
    np.testing.assert_array_equal(host(frozen.data), before)
    assert frozen not in opt.state or not opt.state[frozen]


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_param_groups_match_torch(torch, xp, rng, name):
    ours, theirs = make_params(torch, rng, xp, np.float64)
    extra = {"momentum": 0.5} if name == "SGD" else {"betas": (0.8, 0.99)}

    def groups(ps):
        return [{"params": ps[:1], "lr": 1e-3, "weight_decay": 0.5},
                {"params": ps[1:2], **extra},
                {"params": ps[2:], "lr": 0.2, "weight_decay": 0.0}]

    opt = getattr(optim, name)(groups(ours), lr=0.05, weight_decay=0.01)
    topt = getattr(torch.optim, name)(groups(theirs), lr=0.05, weight_decay=0.01)
    for step in range(4):
        set_grads(torch, rng, xp, ours, theirs)
        opt.step()
        topt.step()
        assert_same_params(ours, theirs, f"{name} groups step {step}")
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 0.05, 0.2]


def tiny_models(torch, rng):
    """The same small CNN in fastconv and torch (float64), the first conv frozen on both."""
    ours = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 4, 3),
                         nn.ReLU(), nn.Flatten(), nn.Linear(4 * 2 * 2, 5)).double()
    theirs = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3),
                                 torch.nn.ReLU(), torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
                                 torch.nn.Flatten(), torch.nn.Linear(4 * 2 * 2, 5)).double()
    for p in ours.parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.5
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                            ours.state_dict().items()})
    ours[0].freeze()
    theirs[0].requires_grad_(False)
    return ours, theirs


@pytest.mark.parametrize("name,options", [("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
                                          ("Adam", {"lr": 0.01, "amsgrad": True}),
                                          ("AdamW", {"lr": 0.01})])
def test_training_a_model_matches_torch(torch_one_thread, rng, name, options):
    torch = torch_one_thread
    ours, theirs = tiny_models(torch, rng)
    groups = optim.param_groups_no_decay(ours, weight_decay=0.1)
    names = {id(p): n for n, p in ours.named_parameters()}
    tparams = dict(theirs.named_parameters())
    tgroups = [{**g, "params": [tparams[names[id(p)]] for p in g["params"]]} for g in groups]
    opt = getattr(optim, name)(groups, **options)
    topt = getattr(torch.optim, name)(tgroups, **options)
    x = rng.standard_normal((6, 2, 6, 6))
    y = rng.integers(0, 5, 6)
    frozen = ours[0].weight.data.copy()
    for step in range(5):
        opt.zero_grad()
        topt.zero_grad()
        loss = nn.CrossEntropyLoss()(ours(fc.tensor(x)), fc.tensor(y))
        tloss = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        tloss.backward()
        assert_close(loss.item(), tloss.item(), name=f"loss at step {step}")
        opt.step()
        topt.step()
        for key, p in ours.named_parameters():
            assert_close(p.data, tparams[key].detach().numpy(), rtol=1e-9, atol=1e-9,
                         name=f"{name} step {step}: {key}")
    np.testing.assert_array_equal(ours[0].weight.data, frozen)


def test_param_groups_no_decay(rng):
    ours = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 4, 3),
                         nn.ReLU(), nn.Flatten(), nn.Linear(4 * 2 * 2, 5))
    ours[0].freeze()
    no_decay, decay = optim.param_groups_no_decay(ours, 0.05, no_weight_decay_list=["6.weight"])
    names = {id(p): n for n, p in ours.named_parameters()}
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.05
    assert [names[id(p)] for p in no_decay["params"]] == ["1.weight", "1.bias", "3.bias",
                                                          "6.weight", "6.bias"]
    assert [names[id(p)] for p in decay["params"]] == ["3.weight"]  # 0.* is frozen


@pytest.mark.parametrize("name,options", [("SGD", {"lr": 0.1, "momentum": 0.9}),
                                          ("Adam", {"lr": 0.01, "amsgrad": True}),
                                          ("AdamW", {"lr": 0.01, "weight_decay": 0.1})])
def test_state_dict_round_trip(xp, rng, name, options):
    """Save after 3 steps, load into a new optimizer over copies of the parameters, continue:
    identical to the uninterrupted run. The saved state holds only numpy arrays and numbers
    and does not change with later steps."""
    ours = [Parameter(xp.asarray(rng.standard_normal(s).astype(np.float32))) for s in SHAPES]
    opt = getattr(optim, name)([{"params": ours[:1], "lr": 0.3}, {"params": ours[1:]}], **options)
    grads = [[xp.asarray(rng.standard_normal(p.shape).astype(np.float32)) for p in ours]
             for _ in range(6)]

    def run(params, optimizer, steps):
        for gs in steps:
            for p, g in zip(params, gs):
                p.grad = g.copy()
            optimizer.step()

    run(ours, opt, grads[:3])
    saved = opt.state_dict()
    copies = [Parameter(p.data.copy()) for p in ours]
    reference = {k: {n: v.copy() if isinstance(v, np.ndarray) else v for n, v in s.items()}
                 for k, s in saved["state"].items()}
    run(ours, opt, grads[3:])
    for k, entry in saved["state"].items():
        for n, v in entry.items():
            assert isinstance(v, (np.ndarray, int, float)), (n, type(v))
            np.testing.assert_array_equal(v, reference[k][n])
    assert [g["params"] for g in saved["param_groups"]] == [[0], [1, 2]]
    resumed = getattr(optim, name)([{"params": copies[:1]}, {"params": copies[1:]}], lr=1.0)
    resumed.load_state_dict(saved)
    assert [g["lr"] for g in resumed.param_groups] == [0.3, options["lr"]]
    run(copies, resumed, grads[3:])
    for p, q in zip(ours, copies):
        np.testing.assert_array_equal(host(p.data), host(q.data))


@pytest.mark.parametrize("name,options", [("SGD", {"lr": 0.1, "momentum": 0.9}),
                                          ("Adam", {"lr": 0.01, "amsgrad": True}),
                                          ("AdamW", {"lr": 0.01})])
def test_load_state_dict_from_torch(torch, rng, name, options):
    """A torch.optim state_dict (tensors turned into numpy arrays, as fastconv.load gives them)
    resumes the same trajectory."""
    ours, theirs = make_params(torch, rng, np, np.float64)
    topt = getattr(torch.optim, name)(theirs, **options)
    for _ in range(3):
        set_grads(torch, rng, np, ours, theirs)
        topt.step()
    for p, q in zip(ours, theirs):
        p.data[...] = q.detach().numpy()
    state = topt.state_dict()
    state["state"] = {k: {n: v.numpy() if torch.is_tensor(v) else v for n, v in s.items()}
                      for k, s in state["state"].items()}
    opt = getattr(optim, name)(ours, lr=123.0)
    opt.load_state_dict(state)
    for step in range(3):
        set_grads(torch, rng, np, ours, theirs)
        opt.step()
        topt.step()
        assert_same_params(ours, theirs, f"{name} resumed step {step}")


def test_updates_in_place_zero_grad_and_closure(rng):
    model = nn.Linear(3, 2).double()
    weight, arrays = model.weight, [p.data for p in model.parameters()]
    opt = optim.SGD(model.parameters(), lr=0.1)
    x = fc.tensor(rng.standard_normal((4, 3)))

    def closure():
        opt.zero_grad()
        loss = (model(x) * model(x)).mean()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, fc.Tensor) and model.weight is weight
    assert all(p.data is a for p, a in zip(model.parameters(), arrays))
    opt.zero_grad(set_to_none=False)
    assert all(np.all(p.grad == 0) for p in model.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_frozen_parameter_with_a_stale_gradient_is_not_updated(rng):
    """Freezing after a backward leaves a gradient behind; the frozen weight still must not move
    (nor decay)."""
    p, q = Parameter(rng.standard_normal(3)), Parameter(rng.standard_normal(3))
    opt = optim.AdamW([p, q], lr=0.1, weight_decay=0.5)
    p.grad, q.grad = np.ones(3), np.ones(3)
    p.requires_grad_(False)
    before = p.data.copy()
    opt.step()
    np.testing.assert_array_equal(p.data, before)
    assert not opt.state.get(p) and opt.state[q]["step"] == 1


def test_named_parameters_and_add_param_group(rng):
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    opt = optim.SGD(model[0].named_parameters(prefix="0"), lr=0.1)
    opt.add_param_group({"params": model[1].parameters(), "lr": 0.01})
    state = opt.state_dict()
    assert state["param_groups"][0]["param_names"] == ["0.weight", "0.bias"]
    assert state["param_groups"][1]["params"] == [2, 3]
    assert state["param_groups"][1]["lr"] == 0.01 and state["param_groups"][1]["momentum"] == 0
    assert "Parameter Group 1" in repr(opt) and "lr: 0.01" in repr(opt)


# ------------------------------------------------------------------------------------ schedulers
def optimizer_pair(torch, name="SGD", lrs=(0.1, 0.01), **options):
    """One optimizer of each library with a parameter group per learning rate."""
    ours = getattr(optim, name)([{"params": [Parameter(np.zeros(2))], "lr": lr} for lr in lrs],
                                **options)
    theirs = getattr(torch.optim, name)(
        [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in lrs], **options)
    return ours, theirs


class Halving:
    """A callable object with state, as LambdaLR saves it."""

    def __init__(self):
        self.base = 0.5

    def __call__(self, epoch):
        return self.base ** (epoch // 4)


SCHEDULERS = [
    ("StepLR", {"step_size": 7, "gamma": 0.5}),
    ("MultiStepLR", {"milestones": [5, 12, 12, 20], "gamma": 0.3}),
    ("ExponentialLR", {"gamma": 0.9}),
    ("CosineAnnealingLR", {"T_max": 10, "eta_min": 0.001}),
    ("CosineAnnealingLR", {"T_max": 30}),
    ("LambdaLR", {"lr_lambda": lambda e: 0.95 ** e}),
    ("LambdaLR", {"lr_lambda": [lambda e: 1.0 / (e + 1), Halving()]}),
    ("LinearLR", {"start_factor": 0.25, "total_iters": 8}),
    ("LinearLR", {"start_factor": 1.0, "end_factor": 0.1, "total_iters": 20}),
    ("OneCycleLR", {"max_lr": [1.0, 0.1], "total_steps": 31}),
    ("OneCycleLR", {"max_lr": 0.5, "epochs": 3, "steps_per_epoch": 11, "pct_start": 0.25,
                    "anneal_strategy": "linear", "three_phase": True}),
]
SCHED_IDS = [f"{n}-{i}" for i, (n, _) in enumerate(SCHEDULERS)]


@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
@pytest.mark.parametrize("name,options", SCHEDULERS, ids=SCHED_IDS)
def test_scheduler_matches_torch(torch, name, options, opt_name):
    ours, theirs = optimizer_pair(torch, opt_name)
    s, t = getattr(sched, name)(ours, **options), getattr(torch.optim.lr_scheduler, name)(theirs,
                                                                                         **options)
    assert s.get_last_lr() == t.get_last_lr()
    for epoch in range(30):
        ours.step()
        theirs.step()
        s.step()
        t.step()
        assert s.get_last_lr() == t.get_last_lr(), f"epoch {epoch}"
        assert [g["lr"] for g in ours.param_groups] == [g["lr"] for g in theirs.param_groups]
        for key in ("momentum", "betas"):
            if key in ours.defaults:
                assert ([tuple(np.atleast_1d(g[key])) for g in ours.param_groups] ==
                        [tuple(np.atleast_1d(g[key])) for g in theirs.param_groups]), key


@pytest.mark.parametrize("name,options", [SCHEDULERS[3], SCHEDULERS[6], SCHEDULERS[9]],
                         ids=["cosine", "lambda", "onecycle"])
def test_scheduler_state_dict_round_trip(torch, name, options):
    """Save optimizer and scheduler after 10 epochs; make a new optimizer and scheduler, load the
    optimizer's state then the scheduler's (ours, and torch's twin's): the next 10 epochs give
    the rates of the uninterrupted run."""
    ours, theirs = optimizer_pair(torch)
    s = getattr(sched, name)(ours, **options)
    t = getattr(torch.optim.lr_scheduler, name)(theirs, **options)
    for _ in range(10):
        theirs.step()
        s.step()
        t.step()
    restored = []
    for state in (s.state_dict(), t.state_dict()):
        fresh = optimizer_pair(torch, lrs=(5.0, 5.0))[0]
        r = getattr(sched, name)(fresh, **options)
        fresh.load_state_dict(ours.state_dict())
        r.load_state_dict(state)
        restored.append(r)
    for epoch in range(10):
        for scheduler in [s] + restored:
            scheduler.step()
        for r in restored:
            assert r.get_last_lr() == s.get_last_lr(), f"epoch {epoch}"


def test_lambda_lr_saves_callable_objects():
    ours = optim.SGD([Parameter(np.zeros(2))], lr=0.1)
    ours.add_param_group({"params": [Parameter(np.zeros(2))]})
    fn = Halving()
    s = sched.LambdaLR(ours, [lambda e: 1.0, fn])
    state = s.state_dict()
    assert state["lr_lambdas"] == [None, {"base": 0.5}]
    fn.base = 0.1
    s.load_state_dict(state)
    assert fn.base == 0.5


METRICS = [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.89, 0.8999, 0.9, 0.91, 0.92, 0.93, 0.5, 0.6,
           0.6, 0.6, 0.6, 0.6, 0.6, 0.6, float("nan"), 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4]


@pytest.mark.parametrize("options", [
    {},
    {"patience": 2},
    {"patience": 1, "cooldown": 2, "factor": 0.5, "min_lr": [0.02, 0.0]},
    {"mode": "max", "patience": 2, "threshold": 0.05},
    {"patience": 0, "threshold_mode": "abs", "threshold": 0.01, "min_lr": 0.004},
    {"mode": "max", "threshold_mode": "abs", "patience": 1, "eps": 0.05},
], ids=["default", "patience", "cooldown-minlr", "max-rel", "abs", "max-abs-eps"])
def test_reduce_lr_on_plateau_matches_torch(torch, options):
    ours, theirs = optimizer_pair(torch)
    s = sched.ReduceLROnPlateau(ours, **options)
    t = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs, **options)
    for epoch, metric in enumerate(METRICS):
        s.step(fc.tensor(np.array(metric)) if epoch % 2 else metric)
        t.step(metric)
        assert s.get_last_lr() == t.get_last_lr(), f"epoch {epoch}"
        assert (s.num_bad_epochs, s.cooldown_counter) == (t.num_bad_epochs, t.cooldown_counter)
    restored = sched.ReduceLROnPlateau(optimizer_pair(torch)[0])
    restored.load_state_dict(t.state_dict())
    assert restored.state_dict() == s.state_dict()


# ------------------------------------------------------------------------------------- clipping
def grads_pair(torch, rng, dtype, special=None):
    """Parameters of both libraries with the same gradients (one parameter without a gradient);
    special = 'inf' / 'nan' puts one such value into a gradient."""
    ours, theirs = make_params(torch, rng, np, dtype)
    set_grads(torch, rng, np, ours, theirs, skip=(1,))
    if special:
        ours[2].grad[0, 1, 0, 1] = float(special)
        theirs[2].grad[0, 1, 0, 1] = float(special)
    return ours, theirs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_type", [2.0, 1, 3.5, float("inf"), float("-inf"), 0, "inf"])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(torch, rng, dtype, norm_type, max_norm):
    ours, theirs = grads_pair(torch, rng, dtype)
    total = optim.clip_grad_norm_(ours, max_norm, norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert total.dtype == dtype and total.shape == ()
    assert_close(total, ttotal.numpy(), name="total norm")
    for p, q in zip(ours, theirs):
        assert (p.grad is None) == (q.grad is None)
        if p.grad is not None:
            assert_close(p.grad, q.grad.numpy(), name="clipped gradient")


@pytest.mark.parametrize("special", ["inf", "nan"])
@pytest.mark.parametrize("norm_type", [2.0, float("inf")])
def test_clip_grad_norm_nonfinite(torch, rng, special, norm_type):
    ours, theirs = grads_pair(torch, rng, np.float32, special)
    total = optim.clip_grad_norm_(ours, 1.0, norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(theirs, 1.0, norm_type)
    assert_close(total, ttotal.numpy(), name="total norm")
    for p, q in zip(ours, theirs):
        if p.grad is not None:
            assert_close(p.grad, q.grad.numpy(), name="scaled gradient")
    ours, theirs = grads_pair(torch, rng, np.float32, special)
    before = [None if p.grad is None else p.grad.copy() for p in ours]
    with pytest.raises(RuntimeError, match=r"clip_grad_norm_: the total norm of order .* is "
                                           r"(inf|nan).*error_if_nonfinite=False"):
        optim.clip_grad_norm_(ours, 1.0, norm_type, error_if_nonfinite=True)
    with pytest.raises(RuntimeError):
        torch.nn.utils.clip_grad_norm_(theirs, 1.0, norm_type, error_if_nonfinite=True)
    for p, b in zip(ours, before):
        if b is not None:
            np.testing.assert_array_equal(p.grad, b)


def test_clip_grad_norm_edge_cases(rng):
    p = Parameter(np.ones(3, np.float32))
    assert float(optim.clip_grad_norm_(p, 1.0)) == 0.0  # no gradient anywhere
    p.grad = np.full(3, 4.0, np.float32)
    assert float(optim.clip_grad_norm_(p, 1.0)) == pytest.approx(math.sqrt(48))
    assert np.linalg.norm(p.grad) == pytest.approx(1.0, rel=1e-5)
    from fastconv.nn.utils import clip_grad_norm_, clip_grad_value_
    assert clip_grad_norm_ is optim.clip_grad_norm_ and clip_grad_value_ is optim.clip_grad_value_


@pytest.mark.parametrize("special", [None, "inf", "nan"])
def test_clip_grad_value_matches_torch(torch, rng, special):
    ours, theirs = grads_pair(torch, rng, np.float32, special)
    assert optim.clip_grad_value_(ours, 0.7) is None
    torch.nn.utils.clip_grad_value_(theirs, 0.7)
    for p, q in zip(ours, theirs):
        if p.grad is not None:
            np.testing.assert_array_equal(p.grad, q.grad.numpy())


# ------------------------------------------------------------------------------------------ errors
P = Parameter(np.zeros((2, 3), np.float32))
Q = Parameter(np.zeros(3, np.float32))


def _sgd():
    return optim.SGD([P], lr=0.1)


def _bad_grad():
    opt = optim.SGD([P, Q], lr=0.1)
    P.grad, Q.grad = np.zeros(3, np.float32), np.zeros(3, np.float32)
    try:
        opt.step()
    finally:
        P.grad = Q.grad = None


def _scheduler_after_new_group():
    opt = _sgd()
    s = sched.StepLR(opt, 2)
    opt.add_param_group({"params": [Q]})
    s.step()


# (id, call, exception, message (regex))
ERRORS = [
    ("empty", lambda: optim.SGD([]), ValueError, r"SGD: got an empty parameter list"),
    ("empty_groups", lambda: optim.Adam([{"params": []}]), ValueError,
     r"Adam: every parameter group is empty"),
    ("module", lambda: optim.SGD(nn.Linear(2, 2)), TypeError,
     r"SGD: params must be an iterable of Parameters.*got Linear \(pass model.parameters\(\)\)"),
    ("tensor", lambda: optim.SGD(P), TypeError, r"SGD: params must be an iterable.*got Parameter"),
    ("set", lambda: optim.SGD({P}), TypeError, r"SGD: params must be an ordered collection"),
    ("array", lambda: optim.SGD([np.zeros(3)]), TypeError,
     r"SGD: param_groups\[0\]\['params'\]\[0\] is a ndarray, expected a fastconv Parameter"),
    ("non_leaf", lambda: optim.SGD([fc.tensor([1.0], requires_grad=True) * 2]), ValueError,
     r"SGD: param_groups\[0\]\['params'\]\[0\] is not a leaf tensor"),
    ("integer", lambda: optim.SGD([fc.tensor([1, 2])]), TypeError,
     r"param_groups\[0\]\['params'\]\[0\] has dtype int64; only floating-point"),
    ("duplicate", lambda: optim.SGD([P, P]), ValueError,
     r"SGD: param_groups\[0\]\['params'\]\[1\] appears twice in the group"),
    ("two_groups", lambda: optim.SGD([{"params": [P]}, {"params": [Q, P]}]), ValueError,
     r"SGD: param_groups\[1\]: a parameter of shape \(2, 3\) is already in param_groups\[0\]"),
    ("mixed", lambda: optim.SGD([{"params": [P]}, Q]), TypeError,
     r"SGD: param_groups\[1\] must be a dict with a 'params' entry, got Parameter"),
    ("no_params_key", lambda: optim.SGD([{"lr": 0.1}]), ValueError,
     r"SGD: param_groups\[0\] has no 'params' entry"),
    ("unknown_option", lambda: optim.SGD([{"params": [P], "lrr": 0.1}]), ValueError,
     r"SGD: param_groups\[0\] has unknown option\(s\) 'lrr'; SGD options are: lr, momentum"),
    ("negative_lr", lambda: optim.SGD([P], lr=-0.1), ValueError,
     r"SGD: lr must be >= 0.0, got -0.1"),
    ("nan_lr", lambda: optim.Adam([P], lr=float("nan")), ValueError,
     r"Adam: lr must be >= 0.0, got nan"),
    ("string_lr", lambda: optim.Adam([P], lr="0.1"), TypeError,
     r"Adam: lr must be a number, got str"),
    ("group_lr", lambda: optim.SGD([{"params": [P], "lr": -1}]), ValueError,
     r"SGD: param_groups\[0\]\['lr'\] must be >= 0.0, got -1"),
    ("momentum", lambda: optim.SGD([P], momentum=-0.9), ValueError,
     r"SGD: momentum must be >= 0.0"),
    ("weight_decay", lambda: optim.AdamW([P], weight_decay=-1e-2), ValueError,
     r"AdamW: weight_decay must be >= 0.0"),
    ("nesterov", lambda: optim.SGD([P], nesterov=True), ValueError,
     r"SGD: nesterov=True needs momentum > 0 and dampening 0, got momentum=0 and dampening=0"),
    ("nesterov_flag", lambda: optim.SGD([P], momentum=0.9, nesterov="yes"), TypeError,
     r"SGD: nesterov must be True or False, got 'yes'"),
    ("beta", lambda: optim.Adam([P], betas=(0.9, 1.0)), ValueError,
     r"Adam: betas must be in \[0.0, 1.0\), got 1.0"),
    ("betas_pair", lambda: optim.Adam([P], betas=0.9), TypeError,
     r"Adam: betas must be a pair \(beta1, beta2\), got 0.9"),
    ("eps", lambda: optim.Adam([P], eps=-1.0), ValueError, r"Adam: eps must be >= 0.0"),
    ("grad_shape", _bad_grad, ValueError,
     r"SGD: the gradient of param_groups\[0\]\['params'\]\[0\] has shape \(3,\) but the parameter "
     r"has shape \(2, 3\)"),
    ("load_not_dict", lambda: _sgd().load_state_dict([1]), ValueError,
     r"SGD.load_state_dict: expected a dict with the keys 'param_groups' and 'state', got list"),
    ("load_groups", lambda: _sgd().load_state_dict({"state": {}, "param_groups": []}), ValueError,
     r"SGD.load_state_dict: the state has 0 parameter groups but the optimizer has 1"),
    ("load_sizes", lambda: _sgd().load_state_dict({"state": {},
                                                   "param_groups": [{"params": [0, 1]}]}),
     ValueError, r"param_groups\[0\] has 2 parameters in the state but 1 in the optimizer"),
    ("load_shape", lambda: _sgd().load_state_dict(
        {"state": {0: {"momentum_buffer": np.zeros(3)}}, "param_groups": [{"params": [0]}]}),
     ValueError, r"SGD.load_state_dict: state\[0\]\['momentum_buffer'\] has shape \(3,\) but the "
                 r"parameter has shape \(2, 3\)"),
    ("load_index", lambda: _sgd().load_state_dict(
        {"state": {4: {}}, "param_groups": [{"params": [0]}]}),
     ValueError, r"the state has an entry for parameter 4 but the groups number 1 parameters"),
    ("load_bad_lr", lambda: _sgd().load_state_dict({"state": {}, "param_groups": [
        {"params": [0], "lr": -2.0}]}), ValueError, r"SGD: param_groups\[0\]\['lr'\] must be >= 0"),
    ("sched_optimizer", lambda: sched.StepLR(object(), 3), TypeError,
     r"StepLR: optimizer must be a fastconv.optim Optimizer, got object"),
    ("step_size", lambda: sched.StepLR(_sgd(), 0), ValueError,
     r"StepLR: step_size must be an integer >= 1, got 0"),
    ("milestones", lambda: sched.MultiStepLR(_sgd(), [3, 2.5]), ValueError,
     r"MultiStepLR: each of milestones must be an integer >= 0, got 2.5"),
    ("t_max", lambda: sched.CosineAnnealingLR(_sgd(), 0), ValueError,
     r"CosineAnnealingLR: T_max must be a number in \(0.0, inf\), got 0"),
    ("lambda", lambda: sched.LambdaLR(_sgd(), 0.5), TypeError,
     r"LambdaLR: lr_lambda must be a function of the epoch, got float"),
    ("lambdas", lambda: sched.LambdaLR(_sgd(), [abs, abs]), ValueError,
     r"LambdaLR: lr_lambda has 2 values but the optimizer has 1 parameter groups"),
    ("resume", lambda: sched.StepLR(_sgd(), 3, last_epoch=4), ValueError,
     r"StepLR: last_epoch=4 resumes a schedule but param_groups\[0\] of the optimizer has no "
     r"'initial_lr'"),
    ("linear", lambda: sched.LinearLR(_sgd(), start_factor=0), ValueError,
     r"LinearLR: start_factor must be a number in \(0.0, 1.0\], got 0"),
    ("one_cycle_steps", lambda: sched.OneCycleLR(_sgd(), 0.1), ValueError,
     r"OneCycleLR: give total_steps, or epochs and steps_per_epoch"),
    ("one_cycle_anneal", lambda: sched.OneCycleLR(_sgd(), 0.1, total_steps=4,
                                                      anneal_strategy="exp"), ValueError,
     r"OneCycleLR: anneal_strategy must be 'cos' or 'linear', got 'exp'"),
    ("one_cycle_overrun", lambda: [s.step() for s in [sched.OneCycleLR(_sgd(), 0.1, total_steps=2)]
                                   for _ in range(3)], ValueError,
     r"OneCycleLR.step: stepped 3 times but total_steps is 2"),
    ("new_group", _scheduler_after_new_group, ValueError,
     r"StepLR.step: the optimizer has 2 parameter groups but had 1 when the scheduler was made"),
    ("sched_load", lambda: sched.StepLR(_sgd(), 3).load_state_dict({"last_epoch": 3}), ValueError,
     r"StepLR.load_state_dict: the state lacks .*step_size.*\(is it the state of a StepLR\?\)"),
    ("plateau_mode", lambda: sched.ReduceLROnPlateau(_sgd(), mode="avg"), ValueError,
     r"ReduceLROnPlateau: mode must be 'min' or 'max', got 'avg'"),
    ("plateau_factor", lambda: sched.ReduceLROnPlateau(_sgd(), factor=1.0), ValueError,
     r"ReduceLROnPlateau: factor must be < 1.0, got 1.0"),
    ("plateau_threshold_mode", lambda: sched.ReduceLROnPlateau(_sgd(), threshold_mode="pct"),
     ValueError, r"ReduceLROnPlateau: threshold_mode must be 'rel' or 'abs', got 'pct'"),
    ("plateau_min_lr", lambda: sched.ReduceLROnPlateau(_sgd(), min_lr=[0, 0]), ValueError,
     r"ReduceLROnPlateau: min_lr has 2 values but the optimizer has 1 parameter groups"),
    ("plateau_metric", lambda: sched.ReduceLROnPlateau(_sgd()).step("low"), TypeError,
     r"ReduceLROnPlateau.step: metrics must be a number, got str"),
    ("clip_array", lambda: optim.clip_grad_norm_([np.zeros(3)], 1.0), TypeError,
     r"clip_grad_norm_: parameters\[0\] is a ndarray, expected a fastconv Parameter"),
    ("clip_module", lambda: optim.clip_grad_norm_(nn.Linear(2, 2), 1.0), TypeError,
     r"clip_grad_norm_: parameters must be a Parameter or an iterable of Parameters, got Linear"),
    ("clip_max_norm", lambda: optim.clip_grad_norm_([P], -1.0), ValueError,
     r"clip_grad_norm_: max_norm must be >= 0, got -1.0"),
    ("clip_norm_type", lambda: optim.clip_grad_norm_([P], 1.0, norm_type="fro"), TypeError,
     r"clip_grad_norm_: norm_type must be a number, got 'fro'"),
    ("clip_value", lambda: optim.clip_grad_value_([P], -1), ValueError,
     r"clip_grad_value_: clip_value must be >= 0, got -1.0"),
    ("no_decay_model", lambda: optim.param_groups_no_decay([P], 0.1), TypeError,
     r"param_groups_no_decay: model must be a fastconv Module, got list"),
]


@pytest.mark.parametrize("call,exception,message", [c[1:] for c in ERRORS],
                         ids=[c[0] for c in ERRORS])
def test_errors(call, exception, message):
    with pytest.raises(exception, match=message):
        call()


def test_docstring_examples_run(rng):
    """Every `>>>` example of fastconv.optim runs, with the names the package docstring gives."""
    from fastconv.optim import adam, clip, groups, lr_scheduler, optimizer, sgd

    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for module in (optimizer, sgd, adam, lr_scheduler, clip, groups):
        for test in finder.find(module):
            model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 3))
            test.globs.update(fc=fc, nn=nn, model=model, loss_fn=nn.CrossEntropyLoss(),
                              x=fc.tensor(rng.standard_normal((5, 4)).astype(np.float32)),
                              y=fc.tensor(np.array([0, 2, 1, 1, 0])),
                              opt=optim.SGD(model.parameters(), lr=0.1))
            runner.run(test)
    assert runner.tries > 20 and runner.failures == 0
