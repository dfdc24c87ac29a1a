"""Functional neural-network ops with torch.nn.functional's signatures.

    import fastconv.nn.functional as F
    y = F.conv2d(x, w, b, stride=2, padding="same")

Every op takes plain arrays or `fastconv.Tensor`s: arrays in give an array out (nothing is
recorded); a Tensor in gives a Tensor out, recorded for autograd. Convolution and pooling run the
fastconv kernels (numpy arrays: the C++ kernels; see fastconv.nn._array for their exact
semantics and the extensions: 4-tuple padding and TensorFlow-style 'same' for any stride).
"""
from __future__ import annotations

import numpy as np

from fastconv import _random, amp
from fastconv.autograd import Tensor, array_module, no_grad
from fastconv.nn import _array as A
from fastconv.nn import _common as c
from fastconv.nn import _functions as fn

__all__ = ["conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "linear", "relu", "relu6",
           "leaky_relu", "sigmoid", "tanh", "silu", "softmax", "log_softmax", "dropout",
           "batch_norm", "local_response_norm", "flatten", "cross_entropy", "nll_loss",
           "binary_cross_entropy", "binary_cross_entropy_with_logits", "mse_loss"]

_REDUCTIONS = ("mean", "sum", "none")


def _run(function, tensors, **options):
    """Apply an autograd Function to Tensors (recorded) or arrays (plain result)."""
    if any(isinstance(t, Tensor) for t in tensors if t is not None):
        args = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors if t is not None]
        return function.apply(*args, **options)
    with no_grad():
        return function.apply(*[Tensor(t) for t in tensors if t is not None], **options).data


def _data(a):
    return a.data if isinstance(a, Tensor) else a


def _reduction(op: str, reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


# ---------------------------------------------------------------------- convolution and pooling
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution; see fastconv.nn._array.conv2d for shapes and padding forms. Inside
    fastconv.autocast, float32 device arrays are cast to the autocast dtype first."""
    c.check_required("conv2d", "weight", weight)
    input, weight, bias = amp.cast_inputs(input, weight, bias)
    if not any(isinstance(t, Tensor) for t in (input, weight, bias)):
        return A.conv2d(input, weight, bias, stride, padding, dilation, groups)
    return _run(fn.Conv2d, (input, weight, bias), stride=stride, padding=padding,
                dilation=dilation, groups=groups)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """2-D max pooling (NaN propagates; ties keep the first element). The backward pass uses the
    saved argmax. With return_indices, also returns the flat h * W + w index of each maximum."""
    if not isinstance(input, Tensor):
        return A.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode,
                            return_indices)
    sink = {} if return_indices else None
    out = fn.MaxPool2d.apply(input, sink=sink, kernel_size=kernel_size, stride=stride,
                             padding=padding, dilation=dilation, ceil_mode=ceil_mode)
    return (out, Tensor(sink["indices"])) if return_indices else out


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """2-D average pooling; see fastconv.nn._array.avg_pool2d."""
    if not isinstance(input, Tensor):
        return A.avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                            divisor_override)
    return fn.AvgPool2d.apply(input, kernel_size=kernel_size, stride=stride, padding=padding,
                              ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                              divisor_override=divisor_override)


def adaptive_avg_pool2d(input, output_size):
    """Adaptive average pooling to output_size (int or (P, Q); None keeps that input size)."""
    if not isinstance(input, Tensor):
        return A.adaptive_avg_pool2d(input, output_size)
    return fn.AdaptiveAvgPool2d.apply(input, output_size=output_size)


def linear(input, weight, bias=None):
    """y = input @ weight.T + bias, for input (..., in_features) and weight (out, in). Inside
    fastconv.autocast, float32 device arrays are cast to the autocast dtype first."""
    input, weight, bias = amp.cast_inputs(input, weight, bias)
    x, w = _data(input), _data(weight)
    if w.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (out_features, in_features), got shape "
                         f"{tuple(w.shape)}")
    if x.ndim < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"linear: input's last dimension must be in_features={w.shape[1]}, got "
                         f"input shape {tuple(x.shape)}")
    if bias is not None and tuple(_data(bias).shape) != (w.shape[0],):
        raise ValueError(f"linear: bias must have shape ({w.shape[0]},), got "
                         f"{tuple(_data(bias).shape)}")
    return _run(fn.Linear, (input, weight, bias))


def flatten(input, start_dim: int = 1, end_dim: int = -1):
    """Merge dimensions start_dim..end_dim (default: all but the batch dimension)."""
    if isinstance(input, Tensor):
        return input.flatten(start_dim, end_dim)
    return Tensor(input).flatten(start_dim, end_dim).data


# ------------------------------------------------------------------------------- activations
def relu(input):
    return input.relu() if isinstance(input, Tensor) else array_module(input).maximum(input, 0)


def relu6(input):
    return _run(fn.ReLU6, (input,))


def leaky_relu(input, negative_slope: float = 0.01):
    return _run(fn.LeakyReLU, (input,), slope=float(negative_slope))


def sigmoid(input):
    return input.sigmoid() if isinstance(input, Tensor) else Tensor(input).sigmoid().data


def tanh(input):
    return input.tanh() if isinstance(input, Tensor) else array_module(input).tanh(input)


def silu(input):
    """x * sigmoid(x) (also called swish)."""
    return _run(fn.SiLU, (input,))


def softmax(input, dim: int = -1):
    return _run(fn.Softmax, (amp.float32_input(input),), axis=dim)


def log_softmax(input, dim: int = -1):
    return _run(fn.LogSoftmax, (amp.float32_input(input),), axis=dim)


def dropout(input, p: float = 0.5, training: bool = True, rng=None):
    """Zero each element with probability p and scale the rest by 1/(1-p) (when training).
    rng: a numpy Generator (default: fastconv's global one, seeded by fc.manual_seed)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    return _run(fn.Dropout, (input,), p=float(p), rng=rng or _random.get_rng())


# ----------------------------------------------------------------------------- normalisation
def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalisation over axis 1 of (N, C) or (N, C, H, W) input. When training, batch
    statistics normalise and running_mean/running_var (arrays, updated in place) move by
    `momentum`; otherwise the running statistics normalise. Under fastconv.autocast a 16-bit
    input is normalised in float32."""
    input = amp.float32_input(input)
    x = _data(input)
    if x.ndim not in (2, 3, 4, 5):
        raise ValueError(f"batch_norm: input must be (N, C) or (N, C, ...) , got shape "
                         f"{tuple(x.shape)}")
    C = x.shape[1]
    for name, a in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if a is not None and tuple(_data(a).shape) != (C,):
            raise ValueError(f"batch_norm: {name} must have shape ({C},) (one per channel), got "
                             f"{tuple(_data(a).shape)}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm: running_mean and running_var are needed when not training")
    if weight is None and bias is not None:  # the Function takes (input, weight, bias) in order
        weight = array_module(x).ones(C, dtype=x.dtype)
    return _run(fn.BatchNorm, (input, weight, bias), running_mean=_data(running_mean),
                running_var=_data(running_var), training=bool(training),
                momentum=float(momentum), eps=float(eps))


def local_response_norm(input, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
    """Local response normalisation across channels (AlexNet), as torch.nn.functional."""
    if _data(input).ndim < 3:
        raise ValueError(f"local_response_norm: input must be (N, C, ...) with at least 3 "
                         f"dimensions, got shape {tuple(_data(input).shape)}")
    if int(size) < 1:
        raise ValueError(f"local_response_norm: size must be >= 1, got {size}")
    return _run(fn.LocalResponseNorm, (input,), size=int(size), alpha=float(alpha),
                beta=float(beta), k=float(k))


# ------------------------------------------------------------------------------------ losses
def _class_target(op: str, logits, target, weight, ignore_index: int):
    """Targets as an int64 index array (N,) (each a class or ignore_index) or a float
    probability array (N, C); also checks that the class weights have shape (C,)."""
    t = _data(target)
    xp = array_module(_data(logits))
    t = xp.asarray(t)
    N, C = _data(logits).shape
    if weight is not None and tuple(_data(weight).shape) != (C,):
        raise ValueError(f"{op}: weight must have shape ({C},) (one per class), got "
                         f"{tuple(_data(weight).shape)}")
    if t.dtype.kind in "iu":
        if t.shape != (N,):
            raise ValueError(f"{op}: class-index target must have shape ({N},), got {tuple(t.shape)}")
        t = t.astype(np.int64, copy=False)
        bad = (t != ignore_index) & ((t < 0) | (t >= C))
        if bool(bad.any()):
            raise ValueError(f"{op}: target holds class {int(t[bad][0])} but input has {C} classes "
                             f"(valid: 0..{C - 1}, or ignore_index={ignore_index})")
        return t
    if t.dtype.kind == "f":
        if t.shape != (N, C):
            raise ValueError(f"{op}: probability target must have shape ({N}, {C}), got "
                             f"{tuple(t.shape)}")
        return t
    raise TypeError(f"{op}: target must hold class indices (int) or probabilities (float), got "
                    f"dtype {t.dtype}")


def _to_2d(op: str, input, target):
    """(N, C, d1, ...) logits and (N, d1, ...) targets as (N*d, C) and (N*d,)."""
    x = _data(input)
    if x.ndim == 2:
        return input, target
    if x.ndim < 2:
        raise ValueError(f"{op}: input must be (N, C) or (N, C, d1, ...), got shape {tuple(x.shape)}")
    C = x.shape[1]
    moved = (input if isinstance(input, Tensor) else Tensor(input)).permute(
        (0,) + tuple(range(2, x.ndim)) + (1,)).reshape(-1, C)
    t = array_module(x).asarray(_data(target))
    want = (x.shape[0],) + tuple(x.shape[2:]) if t.dtype.kind in "iu" else tuple(x.shape)
    if tuple(t.shape) != want:
        raise ValueError(f"{op}: target must have shape {want} for input of shape "
                         f"{tuple(x.shape)}, got {tuple(t.shape)}")
    t = t.reshape(-1) if t.dtype.kind in "iu" else \
        Tensor(t).permute((0,) + tuple(range(2, x.ndim)) + (1,)).reshape(-1, C).data
    return (moved if isinstance(input, Tensor) else moved.data), t


def _unflatten_loss(loss, shape, reduction: str):
    """Per-element losses of (N, C, d1, ...) input back in (N, d1, ...) shape."""
    return loss.reshape((shape[0],) + tuple(shape[2:])) if reduction == "none" else loss


def cross_entropy(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0):
    """Softmax cross-entropy of logits (N, C) (or (N, C, d...)) against class indices (N,) or
    class probabilities (N, C)."""
    op = "cross_entropy"
    input = amp.float32_input(input)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")
    shape = _data(input).shape
    input, target = _to_2d(op, input, target)
    t = _class_target(op, input, target, weight, ignore_index)
    loss = _run(fn.CrossEntropy, (input,), target=t, weight=_data(weight),
                ignore_index=ignore_index, reduction=_reduction(op, reduction),
                label_smoothing=float(label_smoothing))
    return _unflatten_loss(loss, shape, reduction)


def nll_loss(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean"):
    """Negative log-likelihood of log-probabilities (N, C) against class indices (N,)."""
    op = "nll_loss"
    input = amp.float32_input(input)
    shape = _data(input).shape
    input, target = _to_2d(op, input, target)
    t = _class_target(op, input, target, weight, ignore_index)
    if t.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold class indices (an int array)")
    loss = _run(fn.NLLLoss, (input,), target=t, weight=_data(weight), ignore_index=ignore_index,
                reduction=_reduction(op, reduction))
    return _unflatten_loss(loss, shape, reduction)


def _binary_target(op: str, input, target):
    x, t = _data(input), array_module(_data(input)).asarray(_data(target))
    if t.shape != x.shape:
        raise ValueError(f"{op}: target must have the input's shape {tuple(x.shape)}, got "
                         f"{tuple(t.shape)}")
    return t


def binary_cross_entropy(input, target, weight=None, reduction: str = "mean"):
    """Binary cross-entropy of probabilities in [0, 1]."""
    op = "binary_cross_entropy"
    input = amp.float32_input(input)
    return _run(fn.BCE, (input,), target=_binary_target(op, input, target), weight=_data(weight),
                reduction=_reduction(op, reduction))


def binary_cross_entropy_with_logits(input, target, weight=None, reduction: str = "mean",
                                     pos_weight=None):
    """Binary cross-entropy of raw scores (sigmoid folded in, numerically stable)."""
    op = "binary_cross_entropy_with_logits"
    input = amp.float32_input(input)
    return _run(fn.BCEWithLogits, (input,), target=_binary_target(op, input, target),
                weight=_data(weight), pos_weight=_data(pos_weight),
                reduction=_reduction(op, reduction))


def mse_loss(input, target, reduction: str = "mean"):
    """Mean squared error."""
    op = "mse_loss"
    input = amp.float32_input(input)
    if tuple(_data(input).shape) != tuple(_data(target).shape):
        raise ValueError(f"{op}: input and target must have the same shape, got "
                         f"{tuple(_data(input).shape)} and {tuple(_data(target).shape)}")
    return _run(fn.MSE, (input, target), reduction=_reduction(op, reduction))
