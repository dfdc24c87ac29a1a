"""fastconv.nn.functional with autograd: every op's gradients against float64 central differences,
and (float32) outputs and gradients equal torch.nn.functional's. Each case is written once as a
function of the functional library, so the same line runs fastconv and torch."""
from types import SimpleNamespace

import numpy as np
import pytest

import fastconv.nn.functional as F
from fastconv import Tensor
from fastconv.testing import assert_close, gradcheck_autograd

# constants (targets, weights, running statistics) as fresh arrays: batch_norm updates its
# running statistics in place
FC = SimpleNamespace(F=F, c=lambda a: np.array(a))


def torch_lib(torch):
    """torch.nn.functional, with constants as tensors (floating ones in float32, as torch needs
    them to match the float32 inputs; fastconv gets the float64 arrays and must cope)."""
    import torch.nn.functional as TF

    def const(a):
        a = np.array(a)
        return torch.from_numpy(a.astype(np.float32) if a.dtype.kind == "f" else a)
    return SimpleNamespace(F=TF, c=const)


# ---- inputs ---------------------------------------------------------------------------------------
def normal(*shape, scale=1.0):
    return lambda rng: scale * rng.standard_normal(shape)


def uniform(*shape, lo=0.1, hi=0.9):
    return lambda rng: rng.uniform(lo, hi, shape)


def distinct(*shape):
    """Shuffled values at least 0.05 apart: max pooling windows without near-ties."""
    def make(rng):
        n = int(np.prod(shape))
        return ((rng.permutation(n) + rng.uniform(0.1, 0.4, n)) * 0.05 - 0.025 * n).reshape(shape)
    return make


def away(*shape, points=(0.0,), scale=1.0, margin=0.05):
    """Normal values kept `margin` away from the kinks at `points`."""
    def make(rng):
        x = scale * rng.standard_normal(shape)
        for p in points:
            near = np.abs(x - p) < margin
            x[near] = p + np.where(x[near] >= p, 2, -2) * margin
        return x
    return make


RM, RV = np.array([0.3, -0.2, 0.5]), np.array([0.8, 1.5, 0.6])  # running statistics
T5 = np.array([1, 0, 3, 3, 2])                                    # class indices, 4 classes
T5_IGN = np.array([1, -100, 3, 1, -100])
T5_IGN1 = np.array([1, 0, 3, 1, 2])                               # with ignore_index=1: 2 ignored
W4 = np.array([0.5, 2.0, 1.0, 1.5])                               # class weights
P5 = np.random.default_rng(0).dirichlet(np.ones(4), 5)            # probability targets
T_SEG = np.array([[[0, 2], [1, 1]], [[2, 0], [0, 1]]])           # (N, H, W) for (2, 3, 2, 2)
P_SEG = np.random.default_rng(1).dirichlet(np.ones(3), (2, 2, 2)).transpose(0, 3, 1, 2)
Y34 = np.random.default_rng(2).uniform(0, 1, (3, 4))              # soft binary targets
B34 = (Y34 > 0.5).astype(np.float64)                              # hard binary targets

# (id, fn(lib, *inputs), input makers, where else it runs: "torch" (torch can express it),
# "arrays" (it uses nothing but functional ops, so plain numpy arrays work too))
CASES = [
    # convolution
    ("conv2d", lambda L, x, w, b: L.F.conv2d(x, w, b), [normal(2, 3, 5, 6), normal(4, 3, 3, 3), normal(4)], "torch arrays"),
    ("conv2d_stride2_pad1", lambda L, x, w, b: L.F.conv2d(x, w, b, stride=2, padding=1), [normal(2, 3, 5, 6), normal(4, 3, 3, 3), normal(4)], "torch arrays"),
    ("conv2d_same_even_kernel", lambda L, x, w, b: L.F.conv2d(x, w, b, padding="same"), [normal(1, 3, 5, 6), normal(4, 3, 2, 3), normal(4)], "torch arrays"),
    ("conv2d_same_stride2", lambda L, x, w, b: L.F.conv2d(x, w, b, stride=2, padding="same"), [normal(1, 3, 5, 6), normal(4, 3, 3, 3), normal(4)], "arrays"),
    ("conv2d_pad_4tuple", lambda L, x, w: L.F.conv2d(x, w, padding=(1, 0, 2, 1)), [normal(1, 3, 5, 6), normal(2, 3, 3, 3)], "arrays"),
    ("conv2d_dilation", lambda L, x, w, b: L.F.conv2d(x, w, b, stride=(1, 2), padding=(2, 1), dilation=(2, 1)), [normal(1, 2, 6, 7), normal(3, 2, 3, 3), normal(3)], "torch arrays"),
    ("conv2d_groups_nobias", lambda L, x, w: L.F.conv2d(x, w, None, padding=1, groups=2), [normal(2, 4, 5, 5), normal(6, 2, 3, 3)], "torch arrays"),
    ("conv2d_depthwise", lambda L, x, w, b: L.F.conv2d(x, w, b, padding="same", groups=3), [normal(2, 3, 6, 5), normal(6, 1, 3, 3), normal(6)], "torch arrays"),
    ("conv2d_valid_1x1", lambda L, x, w: L.F.conv2d(x, w, padding="valid"), [normal(2, 3, 4, 5), normal(5, 3, 1, 1)], "torch arrays"),
    ("conv2d_unbatched", lambda L, x, w, b: L.F.conv2d(x, w, b, padding=1), [normal(3, 5, 6), normal(2, 3, 3, 3), normal(2)], "torch arrays"),
    # pooling
    ("max_pool2d", lambda L, x: L.F.max_pool2d(x, 2), [distinct(2, 3, 5, 7)], "torch arrays"),
    ("max_pool2d_ceil_pad", lambda L, x: L.F.max_pool2d(x, 3, 2, 1, ceil_mode=True), [distinct(2, 2, 6, 7)], "torch arrays"),
    ("max_pool2d_dilation", lambda L, x: L.F.max_pool2d(x, (2, 3), (1, 2), dilation=2), [distinct(1, 2, 6, 9)], "torch arrays"),
    ("max_pool2d_same_stride2", lambda L, x: L.F.max_pool2d(x, 3, 2, "same"), [distinct(1, 2, 6, 7)], "arrays"),
    ("max_pool2d_unbatched", lambda L, x: L.F.max_pool2d(x, 2, 1), [distinct(2, 4, 5)], "torch arrays"),
    ("avg_pool2d", lambda L, x: L.F.avg_pool2d(x, 3, 2, 1), [normal(2, 2, 5, 7)], "torch arrays"),
    ("avg_pool2d_exclude_pad", lambda L, x: L.F.avg_pool2d(x, 3, 2, 1, count_include_pad=False), [normal(2, 2, 5, 7)], "torch arrays"),
    ("avg_pool2d_ceil", lambda L, x: L.F.avg_pool2d(x, 3, 2, 1, ceil_mode=True), [normal(2, 2, 6, 7)], "torch arrays"),
    ("avg_pool2d_ceil_exclude_pad", lambda L, x: L.F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False), [normal(2, 2, 6, 7)], "torch arrays"),
    ("avg_pool2d_divisor", lambda L, x: L.F.avg_pool2d(x, (3, 2), (2, 1), (1, 0), divisor_override=5), [normal(2, 2, 5, 7)], "torch arrays"),
    ("avg_pool2d_same", lambda L, x: L.F.avg_pool2d(x, 3, 2, "same", count_include_pad=False), [normal(1, 2, 6, 7)], "arrays"),
    ("adaptive_avg_pool2d", lambda L, x: L.F.adaptive_avg_pool2d(x, (3, 2)), [normal(2, 2, 7, 5)], "torch arrays"),
    ("adaptive_avg_pool2d_1", lambda L, x: L.F.adaptive_avg_pool2d(x, 1), [normal(2, 3, 4, 5)], "torch arrays"),
    ("adaptive_avg_pool2d_none", lambda L, x: L.F.adaptive_avg_pool2d(x, (None, 2)), [normal(1, 2, 3, 5)], "torch arrays"),
    # linear, flatten
    ("linear", lambda L, x, w, b: L.F.linear(x, w, b), [normal(5, 3), normal(4, 3), normal(4)], "torch arrays"),
    ("linear_3d_nobias", lambda L, x, w: L.F.linear(x, w), [normal(2, 3, 5), normal(4, 5)], "torch arrays"),
    ("linear_1d", lambda L, x, w, b: L.F.linear(x, w, b), [normal(3), normal(2, 3), normal(2)], "torch arrays"),
    ("flatten", lambda L, x: L.F.flatten(x), [normal(2, 3, 2, 2)], "arrays"),
    ("flatten_range", lambda L, x: L.F.flatten(x, 0, 1), [normal(2, 3, 2, 2)], "arrays"),
    # activations
    ("relu", lambda L, x: L.F.relu(x), [away(3, 7)], "torch arrays"),
    ("relu6", lambda L, x: L.F.relu6(x), [away(3, 7, points=(0.0, 6.0), scale=5.0)], "torch arrays"),
    ("leaky_relu", lambda L, x: L.F.leaky_relu(x, 0.2), [away(3, 7)], "torch arrays"),
    ("leaky_relu_default", lambda L, x: L.F.leaky_relu(x), [away(3, 7)], "torch arrays"),
    ("sigmoid", lambda L, x: L.F.sigmoid(x), [normal(3, 7, scale=3.0)], "torch arrays"),
    ("tanh", lambda L, x: L.F.tanh(x), [normal(3, 7, scale=2.0)], "torch arrays"),
    ("silu", lambda L, x: L.F.silu(x), [normal(3, 7, scale=3.0)], "torch arrays"),
    ("softmax_dim1", lambda L, x: L.F.softmax(x, dim=1), [normal(2, 3, 4, scale=2.0)], "torch arrays"),
    ("softmax_last", lambda L, x: L.F.softmax(x, dim=-1), [normal(3, 5, scale=2.0)], "torch arrays"),
    ("log_softmax_dim0", lambda L, x: L.F.log_softmax(x, dim=0), [normal(3, 5, scale=2.0)], "torch arrays"),
    ("log_softmax_last", lambda L, x: L.F.log_softmax(x, dim=-1), [normal(2, 3, 4, scale=2.0)], "torch arrays"),
    ("dropout_fixed_mask", lambda L, x: L.F.dropout(x, 0.3, rng=np.random.default_rng(7)), [normal(4, 6)], "arrays"),
    # normalisation
    ("batch_norm_train_4d", lambda L, x, w, b: L.F.batch_norm(x, L.c(RM), L.c(RV), w, b, training=True), [normal(3, 3, 2, 3), normal(3), normal(3)], "torch arrays"),
    ("batch_norm_train_2d", lambda L, x, w, b: L.F.batch_norm(x, L.c(RM), L.c(RV), w, b, training=True), [normal(5, 3), normal(3), normal(3)], "torch arrays"),
    ("batch_norm_train_3d_no_affine", lambda L, x: L.F.batch_norm(x, L.c(RM), L.c(RV), training=True, momentum=0.3), [normal(2, 3, 4)], "torch arrays"),
    ("batch_norm_train_no_stats", lambda L, x, w, b: L.F.batch_norm(x, None, None, w, b, training=True), [normal(2, 3, 2, 2), normal(3), normal(3)], "torch arrays"),
    ("batch_norm_bias_only", lambda L, x, b: L.F.batch_norm(x, None, None, None, b, training=True), [normal(4, 3), normal(3)], "torch arrays"),
    ("batch_norm_weight_only", lambda L, x, w: L.F.batch_norm(x, L.c(RM), L.c(RV), w, training=False), [normal(4, 3), normal(3)], "torch arrays"),
    ("batch_norm_eval_4d", lambda L, x, w, b: L.F.batch_norm(x, L.c(RM), L.c(RV), w, b, training=False, eps=1e-3), [normal(2, 3, 2, 3), normal(3), normal(3)], "torch arrays"),
    ("batch_norm_eval_2d_no_affine", lambda L, x: L.F.batch_norm(x, L.c(RM), L.c(RV)), [normal(4, 3)], "torch arrays"),
    ("lrn_odd", lambda L, x: L.F.local_response_norm(x, 3, alpha=1.0, beta=0.75, k=1.0), [normal(2, 5, 2, 3)], "torch arrays"),
    ("lrn_even", lambda L, x: L.F.local_response_norm(x, 4, alpha=0.8, beta=0.6, k=2.0), [normal(2, 5, 2, 3)], "torch arrays"),
    ("lrn_size2", lambda L, x: L.F.local_response_norm(x, 2, alpha=1.0), [normal(1, 4, 3, 2)], "torch arrays"),
    ("lrn_size_gt_channels", lambda L, x: L.F.local_response_norm(x, 5, alpha=2.0, beta=0.5), [normal(2, 3, 2, 2)], "torch arrays"),
    ("lrn_3d", lambda L, x: L.F.local_response_norm(x, 3, alpha=1.0), [normal(2, 4, 5)], "torch arrays"),
    ("lrn_default", lambda L, x: L.F.local_response_norm(x, 5), [normal(1, 6, 2, 2)], "torch arrays"),
    # losses
    ("cross_entropy", lambda L, x: L.F.cross_entropy(x, L.c(T5)), [normal(5, 4)], "torch arrays"),
    ("cross_entropy_sum", lambda L, x: L.F.cross_entropy(x, L.c(T5), reduction="sum"), [normal(5, 4)], "torch arrays"),
    ("cross_entropy_none", lambda L, x: L.F.cross_entropy(x, L.c(T5), reduction="none"), [normal(5, 4)], "torch arrays"),
    ("cross_entropy_weight", lambda L, x: L.F.cross_entropy(x, L.c(T5), weight=L.c(W4)), [normal(5, 4)], "torch arrays"),
    ("cross_entropy_weight_none", lambda L, x: L.F.cross_entropy(x, L.c(T5), weight=L.c(W4), reduction="none"), [normal(5, 4)], "torch arrays"),
    ("cross_entropy_ignore", lambda L, x: L.F.cross_entropy(x, L.c(T5_IGN)), [normal(5, 4)], "torch arrays"),
    ("cross_entropy_ignore_index1_sum", lambda L, x: L.F.cross_entropy(x, L.c(T5_IGN1), ignore_index=1, reduction="sum"), [normal(5, 4)], "torch arrays"),
    ("cross_entropy_smoothing", lambda L, x: L.F.cross_entropy(x, L.c(T5), label_smoothing=0.2), [normal(5, 4)], "torch arrays"),
    ("cross_entropy_smoothing_weight_ignore", lambda L, x: L.F.cross_entropy(x, L.c(T5_IGN), weight=L.c(W4), label_smoothing=0.3), [normal(5, 4)], "torch arrays"),
    ("cross_entropy_smoothing_weight_ignore_none", lambda L, x: L.F.cross_entropy(x, L.c(T5_IGN), weight=L.c(W4), reduction="none", label_smoothing=0.3), [normal(5, 4)], "torch arrays"),
    ("cross_entropy_probs", lambda L, x: L.F.cross_entropy(x, L.c(P5)), [normal(5, 4)], "torch arrays"),
    ("cross_entropy_probs_sum_weight", lambda L, x: L.F.cross_entropy(x, L.c(P5), weight=L.c(W4), reduction="sum"), [normal(5, 4)], "torch arrays"),
    ("cross_entropy_probs_smoothing_weight", lambda L, x: L.F.cross_entropy(x, L.c(P5), weight=L.c(W4), label_smoothing=0.25), [normal(5, 4)], "torch arrays"),
    ("cross_entropy_probs_none", lambda L, x: L.F.cross_entropy(x, L.c(P5), reduction="none", label_smoothing=0.1), [normal(5, 4)], "torch arrays"),
    ("cross_entropy_4d", lambda L, x: L.F.cross_entropy(x, L.c(T_SEG)), [normal(2, 3, 2, 2)], "torch arrays"),
    ("cross_entropy_4d_none", lambda L, x: L.F.cross_entropy(x, L.c(T_SEG), reduction="none"), [normal(2, 3, 2, 2)], "torch arrays"),
    ("cross_entropy_4d_probs", lambda L, x: L.F.cross_entropy(x, L.c(P_SEG)), [normal(2, 3, 2, 2)], "torch arrays"),
    ("nll_loss", lambda L, x: L.F.nll_loss(x, L.c(T5)), [normal(5, 4)], "torch arrays"),
    ("nll_loss_sum", lambda L, x: L.F.nll_loss(x, L.c(T5), reduction="sum"), [normal(5, 4)], "torch arrays"),
    ("nll_loss_none_weight", lambda L, x: L.F.nll_loss(x, L.c(T5), weight=L.c(W4), reduction="none"), [normal(5, 4)], "torch arrays"),
    ("nll_loss_weight_ignore", lambda L, x: L.F.nll_loss(x, L.c(T5_IGN), weight=L.c(W4)), [normal(5, 4)], "torch arrays"),
    ("nll_loss_ignore_index1", lambda L, x: L.F.nll_loss(x, L.c(T5_IGN1), ignore_index=1), [normal(5, 4)], "torch arrays"),
    ("nll_loss_4d", lambda L, x: L.F.nll_loss(x, L.c(T_SEG), weight=L.c(W4[:3])), [normal(2, 3, 2, 2)], "torch arrays"),
    ("nll_of_log_softmax", lambda L, x: L.F.nll_loss(L.F.log_softmax(x, dim=1), L.c(T5)), [normal(5, 4)], "torch arrays"),
    ("bce", lambda L, p: L.F.binary_cross_entropy(p, L.c(Y34)), [uniform(3, 4)], "torch arrays"),
    ("bce_sum_hard", lambda L, p: L.F.binary_cross_entropy(p, L.c(B34), reduction="sum"), [uniform(3, 4)], "torch arrays"),
    ("bce_none_weight", lambda L, p: L.F.binary_cross_entropy(p, L.c(Y34), weight=L.c(W4), reduction="none"), [uniform(3, 4)], "torch arrays"),
    ("bce_weight_mean", lambda L, p: L.F.binary_cross_entropy(p, L.c(B34), weight=L.c(np.ones((3, 4)) * W4)), [uniform(3, 4)], "torch arrays"),
    ("bce_logits", lambda L, x: L.F.binary_cross_entropy_with_logits(x, L.c(Y34)), [normal(3, 4, scale=3.0)], "torch arrays"),
    ("bce_logits_sum", lambda L, x: L.F.binary_cross_entropy_with_logits(x, L.c(B34), reduction="sum"), [normal(3, 4, scale=3.0)], "torch arrays"),
    ("bce_logits_none_weight", lambda L, x: L.F.binary_cross_entropy_with_logits(x, L.c(Y34), weight=L.c(W4), reduction="none"), [normal(3, 4, scale=3.0)], "torch arrays"),
    ("bce_logits_pos_weight", lambda L, x: L.F.binary_cross_entropy_with_logits(x, L.c(B34), pos_weight=L.c(W4)), [normal(3, 4, scale=3.0)], "torch arrays"),
    ("bce_logits_weight_pos_weight_sum", lambda L, x: L.F.binary_cross_entropy_with_logits(x, L.c(Y34), weight=L.c(W4[:, None][:3]), reduction="sum", pos_weight=L.c(W4 + 1)), [normal(3, 4, scale=3.0)], "torch arrays"),
    ("mse", lambda L, x, y: L.F.mse_loss(x, y), [normal(3, 4), normal(3, 4)], "torch arrays"),
    ("mse_sum", lambda L, x, y: L.F.mse_loss(x, y, reduction="sum"), [normal(3, 4), normal(3, 4)], "torch arrays"),
    ("mse_none", lambda L, x, y: L.F.mse_loss(x, y, reduction="none"), [normal(2, 3, 2), normal(2, 3, 2)], "torch arrays"),
    # small composite graphs through several ops
    ("conv_bn_relu_pool_linear_ce", lambda L, x, w, g, b, lw: L.F.cross_entropy(L.F.linear(L.F.max_pool2d(L.F.relu(L.F.batch_norm(L.F.conv2d(x, w, padding=1), None, None, g, b, training=True)), 2).reshape(3, -1), lw), L.c(np.array([2, 0, 1]))),
     [normal(3, 2, 4, 4), normal(3, 2, 3, 3), normal(3), normal(3), normal(3, 12)], "torch arrays"),
    ("input_used_twice", lambda L, x, w: L.F.conv2d(x, w, padding=1) * x[:, :1] + L.F.avg_pool2d(x, 3, 1, 1).sum(1, keepdims=True), [normal(2, 2, 4, 5), normal(1, 2, 3, 3)], "torch arrays"),
    # non-contiguous inputs and non-contiguous incoming gradients (Tensor views)
    ("conv2d_permuted_input", lambda L, x, w: L.F.conv2d(x.permute(0, 1, 3, 2), w, padding=1), [normal(2, 3, 6, 5), normal(4, 3, 3, 3)], "torch"),
    ("conv2d_permuted_output", lambda L, x, w, b: L.F.conv2d(x, w, b, stride=2).permute(0, 2, 3, 1), [normal(2, 3, 6, 5), normal(4, 3, 3, 3), normal(4)], "torch"),
    ("max_pool2d_strided_views", lambda L, x: L.F.max_pool2d(x[:, :, ::2], 2).permute(3, 2, 1, 0), [distinct(2, 2, 8, 5)], "torch"),
    ("avg_pool2d_permuted", lambda L, x: L.F.avg_pool2d(x.permute(0, 3, 1, 2), 2, 1).permute(0, 2, 3, 1), [normal(2, 5, 4, 3)], "torch"),
    ("linear_transposed_weight", lambda L, x, w: L.F.linear(x, w.permute(1, 0)), [normal(3, 4), normal(4, 5)], "torch"),
    ("batch_norm_permuted", lambda L, x: L.F.batch_norm(x.permute(0, 3, 1, 2), None, None, training=True), [normal(2, 3, 2, 3)], "torch"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_gradient_numeric(case, rng):
    name, fn, makers, _ = case
    gradcheck_autograd(lambda *t: fn(FC, *t), [m(rng) for m in makers], rng, name=name)


ARRAY_CASES = [c for c in CASES if "arrays" in c[3]]


@pytest.mark.parametrize("case", ARRAY_CASES, ids=[c[0] for c in ARRAY_CASES])
def test_arrays_in_give_the_same_arrays_out(case, rng):
    """Plain arrays run the same op without recording; the result is an array, not a Tensor."""
    name, fn, makers, _ = case
    xs = [m(rng).astype(np.float32) for m in makers]
    with_arrays = fn(FC, *xs)
    with_tensors = fn(FC, *[Tensor(x) for x in xs])
    assert isinstance(with_arrays, np.ndarray) and isinstance(with_tensors, Tensor)
    assert with_arrays.dtype == with_tensors.dtype == np.float32, name
    assert_close(with_arrays, with_tensors.data, name=name)


TORCH_CASES = [c for c in CASES if "torch" in c[3]]


@pytest.mark.parametrize("case", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_float32_matches_torch(case, torch, rng):
    name, fn, makers, _ = case
    xs = [m(rng).astype(np.float32) for m in makers]
    ours = [Tensor(x.copy(), requires_grad=True) for x in xs]
    theirs = [torch.tensor(x, requires_grad=True) for x in xs]
    y, yt = fn(FC, *ours), fn(torch_lib(torch), *theirs)
    assert y.dtype == np.float32, name
    assert_close(y.data, yt.detach().numpy(), name=f"{name} forward")
    gy = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(gy)
    yt.backward(torch.from_numpy(gy))
    for i, (a, t) in enumerate(zip(ours, theirs)):
        assert a.grad.dtype == np.float32
        assert_close(a.grad, t.grad.numpy(), name=f"{name} grad[{i}]")


@pytest.mark.parametrize("momentum", [0.1, 0.0, 1.0])
@pytest.mark.parametrize("shape", [(4, 3), (3, 3, 5), (2, 3, 2, 3)])
def test_batch_norm_running_stats_match_torch(shape, momentum, torch, rng):
    x = rng.standard_normal(shape).astype(np.float32) * 2 + 1
    rm, rv = RM.astype(np.float32), RV.astype(np.float32)
    rmt, rvt = torch.tensor(rm), torch.tensor(rv)
    F.batch_norm(Tensor(x), rm, rv, training=True, momentum=momentum)
    torch.nn.functional.batch_norm(torch.tensor(x), rmt, rvt, training=True, momentum=momentum)
    assert rm.dtype == rv.dtype == np.float32
    assert_close(rm, rmt.numpy(), name="running_mean")
    assert_close(rv, rvt.numpy(), name="running_var")


def test_dropout_function_statistics(rng):
    x = np.ones((200, 500), np.float32)
    for p in (0.2, 0.5, 0.9):
        t = Tensor(x, requires_grad=True)
        y = F.dropout(t, p, rng=rng)
        kept = y.data != 0
        # the kept fraction of 1e5 Bernoulli(1-p) draws lies within 5 standard deviations
        assert abs(kept.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / x.size), p
        np.testing.assert_allclose(y.data[kept], 1 / (1 - p), rtol=1e-6)
        y.backward(np.full(x.shape, 2.0, np.float32))
        np.testing.assert_array_equal(t.grad, 2 * y.data)  # the same mask and scale
    assert F.dropout(x, 0.5, training=False) is x and F.dropout(x, 0.0) is x
    np.testing.assert_array_equal(F.dropout(Tensor(x), 1.0).data, 0 * x)
