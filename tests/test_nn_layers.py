"""fastconv.nn layers against torch.nn with copied weights (float32): outputs, input and parameter
gradients, running statistics after several training steps; PyTorch's default initialisation;
Dropout's statistics; and bad input getting a clear error that names the argument."""
import math

import numpy as np
import pytest

import fastconv as fc
import fastconv.nn as nn
import fastconv.nn.functional as F
from fastconv import Tensor
from fastconv.testing import assert_close, gradcheck_autograd


def torch_separable(T, C, K, k, mult, padding):
    """torch's twin of SeparableConv2d: the same attribute (state dict) names."""
    m = T.nn.Module()
    m.depthwise = T.nn.Conv2d(C, C * mult, k, padding=padding, groups=C, bias=False)
    m.pointwise = T.nn.Conv2d(C * mult, K, 1)
    m.forward = lambda x: m.pointwise(m.depthwise(x))
    return m


def small_cnn(nn):
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 5))


# (id, fastconv layer, torch layer (given torch), input shape, train mode, forward steps)
LAYERS = [
    ("conv2d", lambda: nn.Conv2d(3, 5, 3), lambda T: T.nn.Conv2d(3, 5, 3), (2, 3, 6, 7), True, 1),
    ("conv2d_groups_dilation", lambda: nn.Conv2d(4, 6, (3, 2), stride=2, padding=1, dilation=(1, 2), groups=2),
     lambda T: T.nn.Conv2d(4, 6, (3, 2), stride=2, padding=1, dilation=(1, 2), groups=2), (2, 4, 7, 8), True, 1),
    ("conv2d_same_nobias", lambda: nn.Conv2d(3, 4, 3, padding="same", bias=False),
     lambda T: T.nn.Conv2d(3, 4, 3, padding="same", bias=False), (2, 3, 5, 6), True, 1),
    ("conv2d_same_even_dilated", lambda: nn.Conv2d(3, 4, (2, 4), padding="same", dilation=2),
     lambda T: T.nn.Conv2d(3, 4, (2, 4), padding="same", dilation=2), (1, 3, 6, 7), True, 1),
    ("depthwise", lambda: nn.DepthwiseConv2d(3, 3, padding=1, depth_multiplier=2),
     lambda T: T.nn.Conv2d(3, 6, 3, padding=1, groups=3), (2, 3, 5, 6), True, 1),
    ("depthwise_stride_nobias", lambda: nn.DepthwiseConv2d(4, 3, stride=2, bias=False),
     lambda T: T.nn.Conv2d(4, 4, 3, stride=2, groups=4, bias=False), (2, 4, 7, 7), True, 1),
    ("separable", lambda: nn.SeparableConv2d(3, 5, 3, padding=1, depth_multiplier=2),
     lambda T: torch_separable(T, 3, 5, 3, 2, 1), (2, 3, 5, 6), True, 1),
    ("max_pool_ceil", lambda: nn.MaxPool2d(3, 2, 1, ceil_mode=True),
     lambda T: T.nn.MaxPool2d(3, 2, 1, ceil_mode=True), (2, 3, 6, 7), True, 1),
    ("max_pool", lambda: nn.MaxPool2d(2), lambda T: T.nn.MaxPool2d(2), (2, 3, 5, 7), True, 1),
    ("avg_pool_exclude_pad", lambda: nn.AvgPool2d(3, 2, 1, count_include_pad=False),
     lambda T: T.nn.AvgPool2d(3, 2, 1, count_include_pad=False), (2, 3, 6, 7), True, 1),
    ("avg_pool_divisor", lambda: nn.AvgPool2d(2, divisor_override=3),
     lambda T: T.nn.AvgPool2d(2, divisor_override=3), (2, 3, 5, 6), True, 1),
    ("adaptive_avg_pool", lambda: nn.AdaptiveAvgPool2d((2, 3)), lambda T: T.nn.AdaptiveAvgPool2d((2, 3)),
     (2, 3, 5, 7), True, 1),
    ("global_avg_pool", lambda: nn.GlobalAvgPool2d(),
     lambda T: T.nn.Sequential(T.nn.AdaptiveAvgPool2d(1), T.nn.Flatten()), (2, 3, 5, 7), True, 1),
    ("global_avg_pool_keepdims", lambda: nn.GlobalAvgPool2d(keepdims=True),
     lambda T: T.nn.AdaptiveAvgPool2d(1), (2, 3, 5, 7), True, 1),
    ("batchnorm2d_train", lambda: nn.BatchNorm2d(3), lambda T: T.nn.BatchNorm2d(3), (4, 3, 3, 5), True, 3),
    ("batchnorm2d_eval", lambda: nn.BatchNorm2d(3), lambda T: T.nn.BatchNorm2d(3), (4, 3, 3, 5), False, 2),
    ("batchnorm2d_cumulative", lambda: nn.BatchNorm2d(3, momentum=None),
     lambda T: T.nn.BatchNorm2d(3, momentum=None), (2, 3, 3, 4), True, 3),
    ("batchnorm2d_no_affine", lambda: nn.BatchNorm2d(3, affine=False),
     lambda T: T.nn.BatchNorm2d(3, affine=False), (2, 3, 3, 4), True, 2),
    ("batchnorm2d_no_affine_eval", lambda: nn.BatchNorm2d(3, affine=False),
     lambda T: T.nn.BatchNorm2d(3, affine=False), (2, 3, 3, 4), False, 1),
    ("batchnorm2d_untracked", lambda: nn.BatchNorm2d(3, track_running_stats=False),
     lambda T: T.nn.BatchNorm2d(3, track_running_stats=False), (2, 3, 3, 4), True, 2),
    ("batchnorm2d_untracked_eval", lambda: nn.BatchNorm2d(3, track_running_stats=False),
     lambda T: T.nn.BatchNorm2d(3, track_running_stats=False), (2, 3, 3, 4), False, 1),
    ("batchnorm1d_2d_train", lambda: nn.BatchNorm1d(3), lambda T: T.nn.BatchNorm1d(3), (5, 3), True, 3),
    ("batchnorm1d_3d_train", lambda: nn.BatchNorm1d(3, eps=1e-3, momentum=0.3),
     lambda T: T.nn.BatchNorm1d(3, eps=1e-3, momentum=0.3), (4, 3, 5), True, 2),
    ("batchnorm1d_eval", lambda: nn.BatchNorm1d(3), lambda T: T.nn.BatchNorm1d(3), (5, 3), False, 1),
    ("lrn", lambda: nn.LocalResponseNorm(3, alpha=0.5, beta=0.75, k=1.5),
     lambda T: T.nn.LocalResponseNorm(3, alpha=0.5, beta=0.75, k=1.5), (2, 5, 3, 4), True, 1),
    ("lrn_even_default", lambda: nn.LocalResponseNorm(4), lambda T: T.nn.LocalResponseNorm(4),
     (2, 6, 3, 3), True, 1),
    ("linear_3d", lambda: nn.Linear(5, 4), lambda T: T.nn.Linear(5, 4), (2, 3, 5), True, 1),
    ("linear_nobias", lambda: nn.Linear(5, 4, bias=False), lambda T: T.nn.Linear(5, 4, bias=False),
     (3, 5), True, 1),
    ("flatten", lambda: nn.Flatten(), lambda T: T.nn.Flatten(), (2, 3, 2, 2), True, 1),
    ("flatten_range", lambda: nn.Flatten(0, 1), lambda T: T.nn.Flatten(0, 1), (2, 3, 2, 2), True, 1),
    ("identity", lambda: nn.Identity(), lambda T: T.nn.Identity(), (2, 3), True, 1),
    ("relu", lambda: nn.ReLU(), lambda T: T.nn.ReLU(), (3, 7), True, 1),
    ("relu6", lambda: nn.ReLU6(), lambda T: T.nn.ReLU6(), (3, 7), True, 1),
    ("leaky_relu", lambda: nn.LeakyReLU(0.1), lambda T: T.nn.LeakyReLU(0.1), (3, 7), True, 1),
    ("silu", lambda: nn.SiLU(), lambda T: T.nn.SiLU(), (3, 7), True, 1),
    ("sigmoid", lambda: nn.Sigmoid(), lambda T: T.nn.Sigmoid(), (3, 7), True, 1),
    ("tanh", lambda: nn.Tanh(), lambda T: T.nn.Tanh(), (3, 7), True, 1),
    ("softmax", lambda: nn.Softmax(dim=1), lambda T: T.nn.Softmax(dim=1), (2, 4, 3), True, 1),
    ("log_softmax", lambda: nn.LogSoftmax(dim=1), lambda T: T.nn.LogSoftmax(dim=1), (2, 4, 3), True, 1),
    ("dropout_p0_train", lambda: nn.Dropout(0.0), lambda T: T.nn.Dropout(0.0), (3, 7), True, 1),
    ("dropout_eval", lambda: nn.Dropout(0.5), lambda T: T.nn.Dropout(0.5), (3, 7), False, 1),
    ("small_cnn_train", lambda: small_cnn(nn), lambda T: small_cnn(T.nn), (3, 3, 6, 6), True, 2),
    ("small_cnn_eval", lambda: small_cnn(nn), lambda T: small_cnn(T.nn), (3, 3, 6, 6), False, 1),
]


def randomize(torch, module, rng):
    """Non-default float state (weights, biases, running statistics) for a sharper comparison."""
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                v = (rng.uniform(0.5, 2.0, t.shape) if name.endswith("running_var")
                     else 0.5 * rng.standard_normal(t.shape))
                t.copy_(torch.from_numpy(v))


def numpy_state(state):
    return {k: v.detach().numpy() for k, v in state.items()}


@pytest.mark.parametrize("case", LAYERS, ids=[c[0] for c in LAYERS])
def test_layer_matches_torch(case, torch, rng):
    name, make, make_torch, shape, train, steps = case
    ours, theirs = make(), make_torch(torch)
    randomize(torch, theirs, rng)
    ours.load_state_dict(numpy_state(theirs.state_dict()))
    ours.train(train)
    theirs.train(train)
    names = [n for n, _ in ours.named_parameters()]
    assert names == [n for n, _ in theirs.named_parameters()]
    for step in range(steps):
        x = (2 * rng.standard_normal(shape)).astype(np.float32)
        xo, xt = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        y, yt = ours(xo), theirs(xt)
        assert y.dtype == np.float32
        assert_close(y.data, yt.detach().numpy(), name=f"{name} step {step} forward")
        gy = rng.standard_normal(y.shape).astype(np.float32)
        y.backward(gy)
        yt.backward(torch.from_numpy(gy))
        assert_close(xo.grad, xt.grad.numpy(), name=f"{name} step {step} input grad")
        for (n, p), (_, pt) in zip(ours.named_parameters(), theirs.named_parameters()):
            assert p.grad is not None and p.grad.dtype == np.float32, n
            assert_close(p.grad, pt.grad.numpy(), name=f"{name} step {step} {n}.grad")
        ours.zero_grad()
        theirs.zero_grad()
    state, state_t = ours.state_dict(), numpy_state(theirs.state_dict())
    assert list(state) == list(state_t)
    for k in state:
        assert state[k].dtype == state_t[k].dtype, k
        if k.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(state[k], state_t[k], err_msg=k)
            assert state[k] == (steps if train else 0), k
        else:
            assert_close(state[k], state_t[k], name=f"{name} {k}")


def test_gradient_numeric_through_a_module(rng):
    """The small CNN in float64, training mode: gradients of a loss with respect to the input
    and to every parameter against central differences."""
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 2 * 2, 3)).double()
    params = [p.data.copy() for p in model.parameters()]
    x = rng.standard_normal((3, 2, 4, 4))
    target = np.array([2, 0, 1])
    gradcheck_autograd(lambda x, *ps: module_call(model, ps, x, target), [x] + params, rng,
                       name="small_cnn")


def test_gradient_numeric_through_a_shared_layer(rng):
    """A layer used twice in one model: its parameters' gradients sum over both uses."""
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.Tanh(), shared, nn.Sigmoid(), nn.Linear(3, 2)).double()
    assert len(list(model.parameters())) == 4
    params = [p.data.copy() for p in model.parameters()]
    gradcheck_autograd(lambda x, *ps: module_call(model, ps, x, np.array([1, 0, 1, 1])),
                       [rng.standard_normal((4, 3))] + params, rng, name="shared")


def module_call(model, values, x, target):
    """model(x) with its Parameters, in order, replaced by the Tensors in `values` (the checker's
    leaves), then cross-entropy against target; the Parameters are put back afterwards."""
    owners = [(m, n) for m in model.modules() for n, p in m._parameters.items()
              if p is not None]
    saved = [m._parameters[n] for m, n in owners]
    try:
        for (m, n), v in zip(owners, values):
            m._parameters[n] = v
        return F.cross_entropy(model(x), target)
    finally:
        for (m, n), p in zip(owners, saved):
            m._parameters[n] = p


# ---- default initialisation -------------------------------------------------------------------
@pytest.mark.parametrize("make, fan_in", [
    (lambda: nn.Conv2d(64, 96, 3), 64 * 9),
    (lambda: nn.Conv2d(32, 64, (5, 3), groups=4), 8 * 15),
    (lambda: nn.DepthwiseConv2d(256, 5, depth_multiplier=2), 25),
    (lambda: nn.Linear(1000, 300), 1000),
], ids=["conv2d", "conv2d_groups", "depthwise", "linear"])
def test_default_init_is_pytorchs_kaiming_uniform(make, fan_in):
    """Weights and biases uniform in +-1/sqrt(fan_in) (kaiming_uniform with a = sqrt(5)), as in
    torch.nn: the range reaches the bound, and the std is bound / sqrt(3)."""
    fc.manual_seed(0)
    layer = make()
    bound = 1 / math.sqrt(fan_in)
    w, b = layer.weight.data, layer.bias.data
    assert w.dtype == b.dtype == np.float32
    for name, v in (("weight", w), ("bias", b)):
        assert np.abs(v).max() <= bound * (1 + 1e-6), name  # float32 rounding of the bound
        assert np.abs(v).max() > bound * (1 - 20 / v.size), name  # near the bound
    # the sample std of n uniform draws is within 5 standard errors (sd of s^2: bound^2 / sqrt(5 n))
    assert abs(w.std() ** 2 - bound ** 2 / 3) < 5 * bound ** 2 * math.sqrt(4 / 45 / w.size)
    assert abs(w.mean()) < 5 * bound / math.sqrt(3 * w.size)


def test_default_init_matches_torch_statistics(torch):
    fc.manual_seed(0)
    torch.manual_seed(0)
    ours, theirs = nn.Conv2d(16, 32, 3).weight.data, torch.nn.Conv2d(16, 32, 3).weight
    theirs = theirs.detach().numpy()
    assert abs(np.abs(ours).max() - np.abs(theirs).max()) < 1e-3
    assert abs(ours.std() / theirs.std() - 1) < 0.05


def test_manual_seed_makes_init_repeatable():
    fc.manual_seed(3)
    a = nn.Linear(4, 3).weight.numpy().copy()
    fc.manual_seed(3)
    np.testing.assert_array_equal(nn.Linear(4, 3).weight.numpy(), a)


# ---- Dropout ---------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_layer_statistics_and_scaling(p):
    fc.manual_seed(5)
    layer = nn.Dropout(p)
    x = Tensor(np.ones((100, 1000), np.float32), requires_grad=True)
    y = layer(x)
    kept = y.data != 0
    assert abs(kept.mean() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / kept.size)
    np.testing.assert_allclose(y.data[kept], 1 / (1 - p), rtol=1e-6)
    assert y.dtype == np.float32
    y.backward(np.ones(x.shape, np.float32))
    np.testing.assert_array_equal(x.grad, y.data)  # the same mask and scale
    fc.manual_seed(5)
    np.testing.assert_array_equal(layer(x).data, y.data)  # repeatable from the seed
    layer.eval()
    assert layer(x) is x
    assert repr(layer) == f"Dropout(p={p})"


# ---- losses as modules -----------------------------------------------------------------------
W = np.array([0.5, 2.0, 1.0], np.float32)
LOSSES = [
    ("cross_entropy", lambda M, c: M.CrossEntropyLoss(weight=c(W), label_smoothing=0.1),
     lambda r: r.standard_normal((5, 3)), np.array([0, 2, -100, 1, 1])),
    ("cross_entropy_sum_ignore", lambda M, c: M.CrossEntropyLoss(ignore_index=2, reduction="sum"),
     lambda r: r.standard_normal((5, 3)), np.array([0, 2, 2, 1, 1])),
    ("nll", lambda M, c: M.NLLLoss(weight=c(W), reduction="none"),
     lambda r: r.standard_normal((5, 3)), np.array([0, 2, 1, 1, 0])),
    ("bce", lambda M, c: M.BCELoss(), lambda r: r.uniform(0.05, 0.95, (4, 3)),
     np.random.default_rng(0).uniform(0, 1, (4, 3)).astype(np.float32)),
    ("bce_logits", lambda M, c: M.BCEWithLogitsLoss(pos_weight=c(W), reduction="sum"),
     lambda r: 3 * r.standard_normal((4, 3)), (np.arange(12).reshape(4, 3) % 2).astype(np.float32)),
    ("mse", lambda M, c: M.MSELoss(), lambda r: r.standard_normal((4, 3)),
     np.ones((4, 3), np.float32)),
]


@pytest.mark.parametrize("case", LOSSES, ids=[c[0] for c in LOSSES])
def test_loss_module_matches_torch(case, torch, rng):
    name, make, make_input, target = case
    ours, theirs = make(nn, lambda a: a), make(torch.nn, torch.from_numpy)
    x = make_input(rng).astype(np.float32)
    xo, xt = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, yt = ours(xo, target), theirs(xt, torch.from_numpy(target))
    assert_close(y.data, yt.detach().numpy(), name=name)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(gy)
    yt.backward(torch.from_numpy(gy))
    assert_close(xo.grad, xt.grad.numpy(), name=f"{name} grad")


# ---- bad input -------------------------------------------------------------------------------
def T(*shape):
    return Tensor(np.ones(shape, np.float32))


X3 = np.array([0, 1, 2])
# (id, call, exception, message fragment (regex))
BAD = [
    ("conv_channels", lambda: nn.Conv2d(3, 4, 3)(T(1, 4, 8, 8)), ValueError, r"conv2d: weight has 3 input channels per group but input has 4 channels"),
    ("conv_rank", lambda: nn.Conv2d(3, 4, 3)(T(8, 8)), ValueError, r"conv2d: input must be 3-D \(C, H, W\) or 4-D \(N, C, H, W\), got shape \(8, 8\)"),
    ("conv_too_small", lambda: nn.Conv2d(3, 4, 5)(T(1, 3, 3, 3)), ValueError, r"conv2d: the dilated kernel 5 x 5 is larger than the padded input"),
    ("conv_padding_string", lambda: nn.Conv2d(3, 4, 3, padding="sme"), TypeError, r"Conv2d: padding must be an int, a tuple of ints, 'valid' or 'same', got 'sme'"),
    ("conv_groups", lambda: nn.Conv2d(4, 6, 3, groups=4), ValueError, r"Conv2d: in_channels \(4\) and out_channels \(6\) must both be divisible by groups \(4\)"),
    ("conv_in_channels", lambda: nn.Conv2d(0, 4, 3), ValueError, r"Conv2d: in_channels must be positive, got 0"),
    ("conv_kernel", lambda: nn.Conv2d(3, 4, 0), ValueError, r"Conv2d: kernel_size must be positive"),
    ("conv_padding_mode", lambda: nn.Conv2d(3, 4, 3, padding_mode="reflect"), ValueError, r"Conv2d: padding_mode must be 'zeros'"),
    ("conv_dtype", lambda: F.conv2d(T(1, 3, 5, 5), Tensor(np.ones((2, 3, 3, 3)))), TypeError, r"conv2d: weight has dtype float64 but input has dtype float32"),
    ("conv_bias_shape", lambda: F.conv2d(T(1, 3, 5, 5), T(2, 3, 3, 3), T(3)), ValueError, r"conv2d: bias must have shape \(2,\)"),
    ("depthwise_multiplier", lambda: nn.DepthwiseConv2d(3, 3, depth_multiplier=0), ValueError, r"DepthwiseConv2d: depth_multiplier must be positive"),
    ("separable_channels", lambda: nn.SeparableConv2d(3, 4, 3)(T(1, 2, 5, 5)), ValueError, r"conv2d: input has 2 channels, which is not divisible by groups=3"),
    ("linear_features", lambda: nn.Linear(5, 4)(T(2, 6)), ValueError, r"linear: input's last dimension must be in_features=5, got input shape \(2, 6\)"),
    ("linear_out_features", lambda: nn.Linear(5, 0), ValueError, r"Linear: out_features must be positive, got 0"),
    ("linear_weight_rank", lambda: F.linear(T(2, 3), T(2, 3, 1)), ValueError, r"linear: weight must be 2-D"),
    ("linear_bias", lambda: F.linear(T(2, 3), T(4, 3), T(3)), ValueError, r"linear: bias must have shape \(4,\), got \(3,\)"),
    ("batchnorm_channels", lambda: nn.BatchNorm2d(3)(T(2, 4, 5, 5)), ValueError, r"BatchNorm2d: expected 4-D input with 3 channels on axis 1, got shape \(2, 4, 5, 5\)"),
    ("batchnorm2d_rank", lambda: nn.BatchNorm2d(3)(T(2, 3)), ValueError, r"BatchNorm2d: expected 4-D input .* got shape \(2, 3\)"),
    ("batchnorm1d_rank", lambda: nn.BatchNorm1d(3)(T(2, 3, 4, 4)), ValueError, r"BatchNorm1d: expected 2-D or 3-D input with 3 channels"),
    ("batchnorm_one_value", lambda: nn.BatchNorm1d(3)(T(1, 3)), ValueError, r"batch_norm: training needs more than one value per channel, got input shape \(1, 3\)"),
    ("batchnorm_features", lambda: nn.BatchNorm2d(0), ValueError, r"BatchNorm2d: num_features must be positive"),
    ("batch_norm_running_mean", lambda: F.batch_norm(T(2, 3), np.zeros(4), np.ones(3)), ValueError, r"batch_norm: running_mean must have shape \(3,\)"),
    ("batch_norm_weight", lambda: F.batch_norm(T(2, 3), None, None, T(2), training=True), ValueError, r"batch_norm: weight must have shape \(3,\)"),
    ("batch_norm_eval_no_stats", lambda: F.batch_norm(T(2, 3), None, None), ValueError, r"batch_norm: running_mean and running_var are needed when not training"),
    ("batch_norm_rank", lambda: F.batch_norm(T(3), None, None, training=True), ValueError, r"batch_norm: input must be \(N, C\) or \(N, C, ...\)"),
    ("lrn_size", lambda: nn.LocalResponseNorm(0)(T(1, 3, 2, 2)), ValueError, r"local_response_norm: size must be >= 1, got 0"),
    ("lrn_rank", lambda: nn.LocalResponseNorm(2)(T(3, 2)), ValueError, r"local_response_norm: input must be \(N, C, ...\) with at least 3 dimensions, got shape \(3, 2\)"),
    ("max_pool_kernel", lambda: nn.MaxPool2d(0)(T(1, 1, 4, 4)), ValueError, r"max_pool2d: kernel_size must be positive, got 0"),
    ("max_pool_padding", lambda: nn.MaxPool2d(2, padding=2)(T(1, 1, 4, 4)), ValueError, r"max_pool2d: padding must be at most half the kernel size"),
    ("max_pool_rank", lambda: nn.MaxPool2d(2)(T(4, 4)), ValueError, r"max_pool2d: input must be 3-D"),
    ("max_pool_ceil_mode", lambda: F.max_pool2d(T(1, 1, 4, 4), 2, ceil_mode="yes"), TypeError, r"max_pool2d: ceil_mode must be a bool, got 'yes'"),
    ("avg_pool_divisor", lambda: nn.AvgPool2d(2, divisor_override=0)(T(1, 1, 4, 4)), ValueError, r"avg_pool2d: divisor_override must be a non-zero int or None, got 0"),
    ("avg_pool_padding_string", lambda: nn.AvgPool2d(2, padding="full")(T(1, 1, 4, 4)), TypeError, r"avg_pool2d: padding must be an int, a tuple of ints, 'valid' or 'same', got 'full'"),
    ("adaptive_size", lambda: nn.AdaptiveAvgPool2d(0)(T(1, 1, 4, 4)), ValueError, r"adaptive_avg_pool2d: output_size must be positive, got 0"),
    ("dropout_p", lambda: F.dropout(T(3), 1.5), ValueError, r"dropout: p must be in \[0, 1\], got 1.5"),
    ("dropout_layer_p", lambda: nn.Dropout(-0.1), ValueError, r"Dropout: p must be in \[0, 1\], got -0.1"),
    ("ce_reduction", lambda: F.cross_entropy(T(3, 4), X3, reduction="avg"), ValueError, r"cross_entropy: reduction must be one of \('mean', 'sum', 'none'\), got 'avg'"),
    ("ce_class_high", lambda: F.cross_entropy(T(3, 4), np.array([0, 4, 2])), ValueError, r"cross_entropy: target holds class 4 but input has 4 classes \(valid: 0..3, or ignore_index=-100\)"),
    ("ce_class_negative", lambda: F.cross_entropy(T(3, 4), np.array([0, -1, 2])), ValueError, r"cross_entropy: target holds class -1"),
    ("ce_target_shape", lambda: F.cross_entropy(T(3, 4), np.array([0, 1])), ValueError, r"cross_entropy: class-index target must have shape \(3,\), got \(2,\)"),
    ("ce_target_shape_4d", lambda: F.cross_entropy(T(2, 3, 2, 4), np.zeros((2, 4, 2), np.int64)), ValueError, r"cross_entropy: target must have shape \(2, 2, 4\) for input of shape \(2, 3, 2, 4\), got \(2, 4, 2\)"),
    ("ce_probability_shape", lambda: F.cross_entropy(T(3, 4), np.ones((3, 3))), ValueError, r"cross_entropy: probability target must have shape \(3, 4\), got \(3, 3\)"),
    ("ce_target_dtype", lambda: F.cross_entropy(T(3, 4), np.array(["a", "b", "c"])), TypeError, r"cross_entropy: target must hold class indices \(int\) or probabilities \(float\)"),
    ("ce_label_smoothing", lambda: F.cross_entropy(T(3, 4), X3, label_smoothing=1.5), ValueError, r"cross_entropy: label_smoothing must be in \[0, 1\], got 1.5"),
    ("ce_weight_length", lambda: F.cross_entropy(T(3, 4), X3, weight=np.ones(3)), ValueError, r"cross_entropy: weight must have shape \(4,\) \(one per class\), got \(3,\)"),
    ("ce_input_rank", lambda: F.cross_entropy(T(4), np.array([0])), ValueError, r"cross_entropy: input must be \(N, C\) or \(N, C, d1, ...\), got shape \(4,\)"),
    ("nll_class_negative", lambda: F.nll_loss(T(3, 4), np.array([0, -1, 2])), ValueError, r"nll_loss: target holds class -1 but input has 4 classes"),
    ("nll_class_high", lambda: F.nll_loss(T(3, 4), np.array([0, 4, 2])), ValueError, r"nll_loss: target holds class 4"),
    ("nll_weight_length", lambda: F.nll_loss(T(3, 4), X3, weight=np.ones(2)), ValueError, r"nll_loss: weight must have shape \(4,\)"),
    ("nll_float_target", lambda: F.nll_loss(T(3, 4), np.ones((3, 4))), TypeError, r"nll_loss: target must hold class indices"),
    ("nll_reduction", lambda: F.nll_loss(T(3, 4), X3, reduction=None), ValueError, r"nll_loss: reduction must be one of"),
    ("mse_shape", lambda: F.mse_loss(T(3, 4), T(4, 3)), ValueError, r"mse_loss: input and target must have the same shape, got \(3, 4\) and \(4, 3\)"),
    ("mse_reduction", lambda: nn.MSELoss(reduction="avg")(T(3, 4), T(3, 4)), ValueError, r"mse_loss: reduction must be one of"),
    ("bce_range", lambda: F.binary_cross_entropy(T(3, 4) * 2, np.ones((3, 4))), ValueError, r"binary_cross_entropy: input must hold probabilities in \[0, 1\]"),
    ("bce_target_shape", lambda: F.binary_cross_entropy(T(3, 4) * 0.5, np.ones((4, 3))), ValueError, r"binary_cross_entropy: target must have the input's shape \(3, 4\), got \(4, 3\)"),
    ("bce_logits_target_shape", lambda: F.binary_cross_entropy_with_logits(T(3, 4), np.ones(3)), ValueError, r"binary_cross_entropy_with_logits: target must have the input's shape"),
    ("bce_logits_reduction", lambda: nn.BCEWithLogitsLoss(reduction="max")(T(3, 4), np.ones((3, 4))), ValueError, r"binary_cross_entropy_with_logits: reduction must be one of"),
    ("flatten_dim", lambda: F.flatten(T(3)), ValueError, r"flatten: dim 1 is out of range for a tensor with 1 dimensions"),
    ("sum_axis", lambda: T(2, 3).sum(axis=2), ValueError, r"sum: dim 2 is out of range for a tensor with 2 dimensions"),
    ("mean_axis", lambda: T(2, 3).mean(axis=-3), ValueError, r"mean: dim -3 is out of range"),
    ("permute_dims", lambda: T(2, 3, 4).permute(0, 1, 1), ValueError, r"permute: dims must be a permutation of the 3 dimensions, got \(0, 1, 1\)"),
    ("unsqueeze_dim", lambda: T(2, 3).unsqueeze(3), ValueError, r"unsqueeze: dim 3 is out of range for a tensor with 3 dimensions"),
    ("squeeze_dim", lambda: T(2, 1).squeeze(2), ValueError, r"squeeze: dim 2 is out of range"),
    ("transpose_dim", lambda: T(2, 3).transpose(0, 2), ValueError, r"transpose: dim 2 is out of range"),
    ("matmul_1d", lambda: T(3) @ T(3), ValueError, r"matmul: both operands must have at least 2 dimensions"),
    ("tensor_strings", lambda: Tensor(["a"]), TypeError, r"tensor: cannot make a tensor from data of dtype <U1"),
    ("tensor_int_grad", lambda: Tensor([1, 2], requires_grad=True), TypeError, r"Tensor: only floating-point tensors can require gradients, got dtype int64"),
    ("sequential_entry", lambda: nn.Sequential(nn.ReLU(), lambda x: x), TypeError, r"container: entry 1 must be a fastconv.nn.Module, got function"),
    ("load_state_dict_type", lambda: nn.Linear(2, 2).load_state_dict([1, 2]), TypeError, r"load_state_dict: expected a dict of arrays, got list"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_raises_a_clear_error(case):
    _, call, exc, message = case
    with pytest.raises(exc, match=message):
        call()


def test_failed_batchnorm_call_does_not_count_a_batch():
    bn = nn.BatchNorm1d(3)
    with pytest.raises(ValueError):
        bn(T(1, 3))
    assert bn.num_batches_tracked == 0
    np.testing.assert_array_equal(bn.running_mean, np.zeros(3))
