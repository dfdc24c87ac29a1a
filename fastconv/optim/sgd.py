"""Stochastic gradient descent with optional (Nesterov) momentum, PyTorch's torch.optim.SGD."""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from fastconv import _C
from fastconv.autograd import Tensor
from fastconv.optim.optimizer import Optimizer, on_cpu_kernels

__all__ = ["SGD"]


class SGD(Optimizer):
    """Stochastic gradient descent, with PyTorch's update (in this order, per parameter):

        g = -grad if maximize else grad
        g = g + weight_decay * p                      (if weight_decay)
        buf = g (first step) or momentum * buf + (1 - dampening) * g   (if momentum)
        g = g + momentum * buf if nesterov else buf   (if momentum)
        p = p - lr * g

    State per parameter: `momentum_buffer` (when momentum is used).

    Args:
        params: Parameters or parameter-group dicts (see Optimizer).
        lr: learning rate (>= 0).
        momentum: momentum factor (>= 0).
        dampening: dampening of the momentum (0 = none).
        weight_decay: L2 penalty added to the gradient (>= 0).
        nesterov: Nesterov momentum (needs momentum > 0 and dampening 0).
        maximize: ascend the objective instead of descending.

    Example:
        >>> opt = fc.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        >>> opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False):
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "weight_decay": weight_decay, "nesterov": nesterov,
                                  "maximize": maximize})

    def _check_group(self, group: Dict[str, Any], index: Optional[int]) -> None:
        for key in ("lr", "momentum", "weight_decay"):
            self._check_real(group[key], key, index)
        self._check_real(group["dampening"], "dampening", index, low=float("-inf"))
        self._check_bool(group, "nesterov", index)
        self._check_bool(group, "maximize", index)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"{self._name}: {self._label('nesterov', index)}=True needs "
                             f"momentum > 0 and dampening 0, got momentum={group['momentum']} "
                             f"and dampening={group['dampening']}")

    def _update(self, p: Tensor, group: Dict[str, Any]) -> None:
        lr, momentum = float(group["lr"]), float(group["momentum"])
        weight_decay = float(group["weight_decay"])
        if self._step_on_kernel(p, group, lr, momentum, weight_decay):
            return
        g = -p.grad if group["maximize"] else p.grad
        if weight_decay != 0:
            g = g + weight_decay * p.data
        if momentum != 0:
            state = self.state[p]
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf *= momentum
                buf += (1 - float(group["dampening"])) * g
            g = g + momentum * buf if group["nesterov"] else buf
        p.data += -lr * g

    def _step_on_kernel(self, p: Tensor, group: Dict[str, Any], lr: float, momentum: float,
                        weight_decay: float) -> bool:
        """The step on fastconv._C.sgd_step (numpy arrays; the same bits as the array code
        below, in one multi-threaded pass). False when the arrays do not suit it."""
        buf = self.state[p].get("momentum_buffer") if momentum != 0 else None
        first = momentum != 0 and buf is None
        if first:
            if not on_cpu_kernels(p.data, p.grad):
                return False
            buf = np.empty_like(p.data)  # the kernel writes the step's gradient into it
        elif not on_cpu_kernels(p.data, p.grad, *(() if buf is None else (buf,))):
            return False
        _C.sgd_step(p.data, p.grad, buf, lr, momentum, float(group["dampening"]), weight_decay,
                    bool(group["nesterov"]), bool(group["maximize"]), first)
        if first:
            self.state[p]["momentum_buffer"] = buf
        return True
