"""Adam and AdamW, PyTorch's torch.optim.Adam / AdamW (including amsgrad and maximize)."""
from __future__ import annotations

from typing import Any, Dict, Optional

from fastconv import _C
from fastconv.autograd import Tensor, array_module
from fastconv.optim.optimizer import Optimizer, on_cpu_kernels

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """Adam, with PyTorch's update (in this order, per parameter, t counting its steps from 1):

        g = -grad if maximize else grad
        p = p * (1 - lr * weight_decay)   if decoupled_weight_decay (AdamW)
        g = g + weight_decay * p          otherwise (if weight_decay)
        m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
        v_max = max(v_max, v)             (if amsgrad; used instead of v below)
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    State per parameter: `step` (an int), `exp_avg` (m), `exp_avg_sq` (v) and, with amsgrad,
    `max_exp_avg_sq`.

    Args:
        params: Parameters or parameter-group dicts (see Optimizer).
        lr: learning rate (>= 0).
        betas: decay rates (beta1, beta2) of the averages of the gradient and its square, each
            in [0, 1).
        eps: added to the denominator (>= 0).
        weight_decay: L2 penalty (>= 0), added to the gradient, or decoupled (see below).
        amsgrad: use the maximum of the past squared-gradient averages (AMSGrad).
        maximize: ascend the objective instead of descending.
        decoupled_weight_decay: shrink the weights directly, as AdamW does.

    Example:
        >>> opt = fc.optim.Adam(model.parameters(), lr=1e-3)
        >>> opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *, maximize: bool = False,
                 decoupled_weight_decay: bool = False):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay, "amsgrad": amsgrad,
                                  "maximize": maximize,
                                  "decoupled_weight_decay": decoupled_weight_decay})

    def _check_group(self, group: Dict[str, Any], index: Optional[int]) -> None:
        for key in ("lr", "eps", "weight_decay"):
            self._check_real(group[key], key, index)
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"{self._name}: {self._label('betas', index)} must be a pair "
                            f"(beta1, beta2), got {betas!r}")
        for beta in betas:
            self._check_real(beta, "betas", index, below=1.0)
        for key in ("amsgrad", "maximize", "decoupled_weight_decay"):
            self._check_bool(group, key, index)

    def _update(self, p: Tensor, group: Dict[str, Any]) -> None:
        xp = array_module(p.data)
        lr, eps = float(group["lr"]), float(group["eps"])
        weight_decay = float(group["weight_decay"])
        beta1, beta2 = (float(b) for b in group["betas"])
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        if group["amsgrad"] and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] = step = int(state["step"]) + 1
        vmax = state.get("max_exp_avg_sq") if group["amsgrad"] else None
        arrays = (p.grad, state["exp_avg"], state["exp_avg_sq"]) + (() if vmax is None else (vmax,))
        if on_cpu_kernels(p.data, *arrays):  # the same bits as below, in one threaded pass
            _C.adam_step(p.data, p.grad, state["exp_avg"], state["exp_avg_sq"], vmax, lr, beta1,
                         beta2, eps, weight_decay, lr / (1 - beta1 ** step),
                         (1 - beta2 ** step) ** 0.5, bool(group["decoupled_weight_decay"]),
                         bool(group["amsgrad"]), bool(group["maximize"]))
            return
        g = -p.grad if group["maximize"] else p.grad
        if weight_decay != 0:
            if group["decoupled_weight_decay"]:
                p.data *= 1 - lr * weight_decay
            else:
                g = g + weight_decay * p.data
        m, v = state["exp_avg"], state["exp_avg_sq"]
        _lerp_(m, g, 1 - beta1)
        v *= beta2
        v += (1 - beta2) * g * g
        if group["amsgrad"]:
            v = xp.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
        step_size = lr / (1 - beta1 ** step)
        denom = xp.sqrt(v)
        denom /= (1 - beta2 ** step) ** 0.5
        denom += eps
        update = -step_size * m
        update /= denom
        p.data += update


def _lerp_(start, end, weight: float) -> None:
    """start += weight * (end - start) in place, rounded as torch.lerp does."""
    diff = end - start
    if abs(weight) < 0.5:
        diff *= weight
        start += diff
    else:
        diff *= 1 - weight
        start[...] = end - diff


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): the weights shrink by
    lr * weight_decay each step instead of weight_decay * p joining the gradient. PyTorch's
    torch.optim.AdamW; options and state as for Adam, with weight_decay defaulting to 1e-2.

    Args:
        params: Parameters or parameter-group dicts (see Optimizer); for fine-tuning, often
            fc.optim.param_groups_no_decay(model, weight_decay).
        lr: learning rate (>= 0).
        betas: decay rates (beta1, beta2), each in [0, 1).
        eps: added to the denominator (>= 0).
        weight_decay: decoupled weight decay (>= 0).
        amsgrad: use the maximum of the past squared-gradient averages (AMSGrad).
        maximize: ascend the objective instead of descending.

    Example:
        >>> opt = fc.optim.AdamW(fc.optim.param_groups_no_decay(model, 0.05), lr=3e-4)
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)
