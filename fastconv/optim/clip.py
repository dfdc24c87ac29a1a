"""Gradient clipping, PyTorch's torch.nn.utils.clip_grad_norm_ / clip_grad_value_ (also available
as fastconv.nn.utils.clip_grad_norm_ / clip_grad_value_)."""
from __future__ import annotations

import math

import numpy as np

from fastconv.autograd import Tensor, array_module

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False):
    """Scale the gradients in place so that their joint norm is at most max_norm.

    The total norm is the norm of the vector of the per-gradient norms (the norm of all
    gradients concatenated); every gradient is multiplied by min(1, max_norm / (total + 1e-6)).
    Parameters whose grad is None are ignored. As in PyTorch, a non-finite total norm (an inf or
    NaN in some gradient) still scales the gradients (by 0 or NaN) unless error_if_nonfinite.

    Args:
        parameters: a Parameter or an iterable of Parameters (e.g. model.parameters()).
        max_norm: the largest allowed total norm (>= 0).
        norm_type: the p of the p-norm: any real number, or float('inf') / float('-inf') for
            the largest / smallest absolute value (0 counts the nonzero elements).
        error_if_nonfinite: raise a RuntimeError instead of scaling when the total norm is inf
            or NaN.
    Returns:
        The total norm before clipping: a 0-d array (numpy or cupy, like the gradients; float()
        it to log). 0.0 when no parameter has a gradient.

    Example:
        >>> loss_fn(model(x), y).backward()
        >>> norm = fc.optim.clip_grad_norm_(model.parameters(), max_norm=1.0)
        >>> opt.step()
    """
    grads = [p.grad for p in _parameters(parameters, "clip_grad_norm_") if p.grad is not None]
    max_norm = _number(max_norm, "max_norm", "clip_grad_norm_")
    norm_type = _number(norm_type, "norm_type", "clip_grad_norm_")
    if max_norm < 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be >= 0, got {max_norm}")
    if not grads:
        return np.asarray(0.0, dtype=np.float32)
    xp = array_module(grads[0])
    total = _norm(xp.stack([_norm(g.reshape(-1), norm_type) for g in grads]), norm_type)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the "
                           f"gradients is {float(total)}, so it cannot be clipped; pass "
                           f"error_if_nonfinite=False to scale the gradients by it anyway")
    coef = xp.minimum(max_norm / (total + 1e-6), 1.0)
    with np.errstate(invalid="ignore"):  # inf * 0 = NaN, as in torch, without numpy's warning
        for g in grads:
            g *= coef
    return total


def clip_grad_value_(parameters, clip_value: float) -> None:
    """Clamp every gradient in place to [-clip_value, clip_value] (NaNs stay NaN).

    Args:
        parameters: a Parameter or an iterable of Parameters (e.g. model.parameters()).
        clip_value: the largest allowed absolute value of a gradient element (>= 0).

    Example:
        >>> loss_fn(model(x), y).backward()
        >>> fc.optim.clip_grad_value_(model.parameters(), 0.5)
        >>> opt.step()
    """
    params = _parameters(parameters, "clip_grad_value_")
    clip_value = _number(clip_value, "clip_value", "clip_grad_value_")
    if clip_value < 0:
        raise ValueError(f"clip_grad_value_: clip_value must be >= 0, got {clip_value}")
    for p in params:
        if p.grad is not None:
            array_module(p.grad).clip(p.grad, -clip_value, clip_value, out=p.grad)


def _parameters(parameters, caller: str) -> list:
    params = [parameters] if isinstance(parameters, Tensor) else parameters
    try:
        params = list(params)
    except TypeError:
        raise TypeError(f"{caller}: parameters must be a Parameter or an iterable of Parameters, "
                        f"got {type(parameters).__name__} (pass model.parameters())") from None
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"{caller}: parameters[{i}] is a {type(p).__name__}, expected a "
                            f"fastconv Parameter (pass model.parameters())")
    return params


def _number(value, name: str, caller: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{caller}: {name} must be a number, got {value!r}") from None
    if math.isnan(value):
        raise ValueError(f"{caller}: {name} must not be NaN")
    return value


def _norm(a, p: float):
    """torch.linalg.vector_norm of a 1-D array: a 0-d array of a's dtype (accumulated in at
    least float32)."""
    xp = array_module(a)
    dtype = a.dtype
    a = xp.abs(a).astype(np.promote_types(dtype, np.float32), copy=False)
    if p == 0:
        out = (a != 0).sum()
    elif a.size == 0:
        out = 0.0
    elif p == math.inf:
        out = a.max()
    elif p == -math.inf:
        out = a.min()
    elif p == 1:
        out = a.sum()
    elif p == 2:
        out = xp.sqrt((a * a).sum())
    else:
        out = (a ** p).sum() ** (1.0 / p)
    return xp.asarray(out, dtype=dtype)
