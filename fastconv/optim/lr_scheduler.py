"""Learning-rate schedulers, PyTorch's torch.optim.lr_scheduler with the same values.

    opt = fc.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = fc.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=30)
    for epoch in range(30):
        train_one_epoch(model, opt)
        sched.step()                     # after the optimizer's steps of the epoch

A scheduler sets `group["lr"]` of every parameter group of its optimizer at creation and on each
step(). It computes the new rates as PyTorch does (mostly recursively, from the current rates), so
it composes with other changes of the rates and its values agree with torch's to the last bits.
Its state_dict() holds its attributes (the optimizer excluded), as in PyTorch; keys it does not
know (such as PyTorch's internal flags) are ignored by load_state_dict().
"""
from __future__ import annotations

import copy
import math
import numbers
import types
from collections import Counter
from typing import Any, Callable, Dict, Iterable, List, Sequence, Union

from fastconv.autograd import Tensor
from fastconv.optim.optimizer import Optimizer

__all__ = ["LRScheduler", "LambdaLR", "StepLR", "MultiStepLR", "ExponentialLR",
           "CosineAnnealingLR", "LinearLR", "OneCycleLR", "ReduceLROnPlateau"]


def _check_int(caller: str, name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{caller}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_real(caller: str, name: str, value, low: float, high: float = math.inf,
                low_open: bool = False) -> float:
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real) and
          (value > low if low_open else value >= low) and value <= high)
    if not ok:
        bounds = f"{'(' if low_open else '['}{low}, {high}{']' if high < math.inf else ')'}"
        raise ValueError(f"{caller}: {name} must be a number in {bounds}, got {value!r}")
    return value


def _per_group(caller: str, name: str, value, optimizer: Optimizer) -> list:
    """One value per parameter group: a list/tuple of that length, or one value for all."""
    if isinstance(value, (list, tuple)):
        if len(value) != len(optimizer.param_groups):
            raise ValueError(f"{caller}: {name} has {len(value)} values but the optimizer has "
                             f"{len(optimizer.param_groups)} parameter groups")
        return list(value)
    return [value] * len(optimizer.param_groups)


class LRScheduler:
    """Base class of the schedulers: subclasses implement get_lr(), the new rates from
    `last_epoch` (already advanced), `base_lrs` and the current rates.

    Args:
        optimizer: the Optimizer whose learning rates to set.
        last_epoch: the index of the last epoch done; -1 (default) starts the schedule, a value
            >= 0 resumes it (the groups then need their 'initial_lr', as restored by the
            optimizer's load_state_dict).
    """

    _not_state = ("optimizer",)

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1):
        name = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{name}: optimizer must be a fastconv.optim Optimizer, got "
                            f"{type(optimizer).__name__}")
        _check_int(name, "last_epoch", last_epoch, -1)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        for i, group in enumerate(optimizer.param_groups):
            if "initial_lr" not in group:
                raise ValueError(f"{name}: last_epoch={last_epoch} resumes a schedule but "
                                 f"param_groups[{i}] of the optimizer has no 'initial_lr' (load "
                                 f"the optimizer's state_dict first, or start at last_epoch=-1)")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._step_count = 0
        self._is_initial = True
        self.step()
        self._is_initial = False

    def get_lr(self) -> List[float]:
        """The learning rates for epoch `last_epoch`, one per parameter group."""
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch (or iteration) and set the optimizer's learning rates."""
        groups = self.optimizer.param_groups
        if len(groups) != len(self.base_lrs):
            raise ValueError(f"{type(self).__name__}.step: the optimizer has {len(groups)} "
                             f"parameter groups but had {len(self.base_lrs)} when the scheduler "
                             f"was made; make a new scheduler after add_param_group")
        self._step_count += 1
        self.last_epoch += 1
        for group, lr in zip(groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in groups]

    def get_last_lr(self) -> List[float]:
        """The learning rates set by the last step(), one per parameter group."""
        return list(self._last_lr)

    def _current_lrs(self) -> List[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> Dict[str, Any]:
        """The scheduler's attributes (copies), without the optimizer."""
        return {k: copy.deepcopy(v) for k, v in self.__dict__.items() if k not in self._not_state}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore a state_dict() of a scheduler of the same kind (or of its PyTorch twin)."""
        name = type(self).__name__
        if not isinstance(state_dict, dict):
            raise TypeError(f"{name}.load_state_dict: expected a dict, got "
                            f"{type(state_dict).__name__}")
        keys = [k for k in self.__dict__ if k not in self._not_state]
        missing = [k for k in keys if k not in state_dict]
        if missing:
            raise ValueError(f"{name}.load_state_dict: the state lacks {', '.join(missing)} "
                             f"(is it the state of a {name}?)")
        self.__dict__.update({k: copy.deepcopy(state_dict[k]) for k in keys})


class LambdaLR(LRScheduler):
    """lr = initial_lr * lr_lambda(epoch).

    Args:
        optimizer: the Optimizer.
        lr_lambda: a function of the epoch (an int) giving the factor, or a list of such
            functions, one per parameter group.
        last_epoch: see LRScheduler.

    Example:
        >>> warmup = fc.optim.lr_scheduler.LambdaLR(opt, lambda e: min(1.0, (e + 1) / 5))
        >>> warmup.get_last_lr()                    # opt made with lr=0.1
        [0.020000000000000004]
    """

    _not_state = ("optimizer", "lr_lambdas")

    def __init__(self, optimizer: Optimizer,
                 lr_lambda: Union[Callable[[int], float], Sequence[Callable[[int], float]]],
                 last_epoch: int = -1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"LambdaLR: optimizer must be a fastconv.optim Optimizer, got "
                            f"{type(optimizer).__name__}")
        self.lr_lambdas = _per_group("LambdaLR", "lr_lambda", lr_lambda, optimizer)
        for fn in self.lr_lambdas:
            if not callable(fn):
                raise TypeError(f"LambdaLR: lr_lambda must be a function of the epoch, got "
                                f"{type(fn).__name__}")
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        return [base * fn(self.last_epoch) for fn, base in zip(self.lr_lambdas, self.base_lrs)]

    def state_dict(self) -> Dict[str, Any]:
        """As LRScheduler's, plus `lr_lambdas`: the attributes of callable objects (None for
        plain functions, which are not saved)."""
        state = super().state_dict()
        state["lr_lambdas"] = [None if isinstance(fn, types.FunctionType) else
                               copy.deepcopy(fn.__dict__) for fn in self.lr_lambdas]
        return state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for fn, attributes in zip(self.lr_lambdas, state_dict.get("lr_lambdas", ())):
            if attributes is not None:
                fn.__dict__.update(attributes)


class StepLR(LRScheduler):
    """Multiply the learning rate by gamma every step_size epochs.

    Args:
        optimizer: the Optimizer.
        step_size: the period of the decay, in epochs (>= 1).
        gamma: the factor.
        last_epoch: see LRScheduler.

    Example:
        >>> sched = fc.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        >>> for epoch in range(4):
        ...     opt.step(); sched.step()
        >>> sched.get_last_lr()                     # opt made with lr=0.1
        [0.025]
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1,
                 last_epoch: int = -1):
        self.step_size = _check_int("StepLR", "step_size", step_size, 1)
        self.gamma = _check_real("StepLR", "gamma", gamma, 0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]


class MultiStepLR(LRScheduler):
    """Multiply the learning rate by gamma at each milestone epoch.

    Args:
        optimizer: the Optimizer.
        milestones: the epochs (integers) at which to decay; a repeated epoch decays repeatedly.
        gamma: the factor.
        last_epoch: see LRScheduler.

    Example:
        >>> sched = fc.optim.lr_scheduler.MultiStepLR(opt, milestones=[30, 80], gamma=0.1)
    """

    def __init__(self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1,
                 last_epoch: int = -1):
        milestones = list(milestones)
        for m in milestones:
            _check_int("MultiStepLR", "each of milestones", m, 0)
        self.milestones = Counter(int(m) for m in milestones)
        self.gamma = _check_real("MultiStepLR", "gamma", gamma, 0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        if self.last_epoch not in self.milestones:
            return self._current_lrs()
        factor = self.gamma ** self.milestones[self.last_epoch]
        return [lr * factor for lr in self._current_lrs()]


class ExponentialLR(LRScheduler):
    """Multiply the learning rate by gamma every epoch.

    Args:
        optimizer: the Optimizer.
        gamma: the factor.
        last_epoch: see LRScheduler.

    Example:
        >>> sched = fc.optim.lr_scheduler.ExponentialLR(opt, gamma=0.95)
    """

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1):
        self.gamma = _check_real("ExponentialLR", "gamma", gamma, 0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        if self._is_initial:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from the initial rate to eta_min over T_max epochs (then back up, as a
    cosine continues): lr = eta_min + (initial_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2,
    computed recursively as PyTorch does.

    Args:
        optimizer: the Optimizer.
        T_max: the number of epochs of the half period (> 0).
        eta_min: the smallest learning rate.
        last_epoch: see LRScheduler.

    Example:
        >>> sched = fc.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=50, eta_min=1e-6)
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0,
                 last_epoch: int = -1):
        self.T_max = _check_real("CosineAnnealingLR", "T_max", T_max, 0.0, low_open=True)
        self.eta_min = _check_real("CosineAnnealingLR", "eta_min", eta_min, 0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        epoch, t_max, eta_min = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._current_lrs()
        if self._step_count == 1 and epoch > 0:  # resumed: the closed form
            return [eta_min + (base - eta_min) * (1 + math.cos(epoch * math.pi / t_max)) / 2
                    for base in self.base_lrs]
        if (epoch - 1 - t_max) % (2 * t_max) == 0:  # at the bottom of the cosine
            return [lr + (base - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
                    for base, lr in zip(self.base_lrs, self._current_lrs())]
        return [(1 + math.cos(math.pi * epoch / t_max)) /
                (1 + math.cos(math.pi * (epoch - 1) / t_max)) * (lr - eta_min) + eta_min
                for lr in self._current_lrs()]


class LinearLR(LRScheduler):
    """Linear warm-up (or decay): the factor of the initial rate goes linearly from
    start_factor to end_factor over total_iters steps, then stays.

    Args:
        optimizer: the Optimizer.
        start_factor: the factor at the first epoch, in (0, 1].
        end_factor: the factor from total_iters on, in [0, 1].
        total_iters: the number of steps of the ramp (>= 1).
        last_epoch: see LRScheduler.

    Example:
        >>> warmup = fc.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=5)
    """

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3,
                 end_factor: float = 1.0, total_iters: int = 5, last_epoch: int = -1):
        self.start_factor = _check_real("LinearLR", "start_factor", start_factor, 0.0, 1.0,
                                        low_open=True)
        self.end_factor = _check_real("LinearLR", "end_factor", end_factor, 0.0, 1.0)
        self.total_iters = _check_int("LinearLR", "total_iters", total_iters, 1)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        if self.last_epoch == 0:
            return [lr * self.start_factor for lr in self._current_lrs()]
        if self._is_initial or self.last_epoch > self.total_iters:
            return self._current_lrs()
        change = self.end_factor - self.start_factor
        factor = 1.0 + change / (self.total_iters * self.start_factor +
                                 (self.last_epoch - 1) * change)
        return [lr * factor for lr in self._current_lrs()]


class OneCycleLR(LRScheduler):
    """The 1cycle policy, stepped once per batch: the rate rises from max_lr / div_factor to
    max_lr over the first pct_start of total_steps, then anneals to
    max_lr / (div_factor * final_div_factor); the momentum (SGD's momentum or Adam's beta1)
    moves the other way between max_momentum and base_momentum. Adds the keys max_lr, min_lr,
    max_momentum and base_momentum to the parameter groups, as PyTorch does.

    Args:
        optimizer: the Optimizer.
        max_lr: the peak learning rate, or one per parameter group.
        total_steps: the number of steps of the cycle, or give epochs and steps_per_epoch.
        epochs, steps_per_epoch: total_steps = epochs * steps_per_epoch.
        pct_start: the fraction of the cycle spent rising, in [0, 1].
        anneal_strategy: 'cos' or 'linear'.
        cycle_momentum: also cycle the momentum.
        base_momentum, max_momentum: the momentum range (one value, or one per group).
        div_factor: initial_lr = max_lr / div_factor.
        final_div_factor: min_lr = initial_lr / final_div_factor.
        three_phase: rise, fall back to initial_lr symmetrically, then anneal to min_lr.
        last_epoch: see LRScheduler (here counted in steps).

    Example:
        >>> sched = fc.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, epochs=10,
        ...                                          steps_per_epoch=100)
        >>> round(sched.get_last_lr()[0], 9)         # max_lr / div_factor at the start
        0.0004
    """

    def __init__(self, optimizer: Optimizer, max_lr, total_steps: int = None, epochs: int = None,
                 steps_per_epoch: int = None, pct_start: float = 0.3, anneal_strategy: str = "cos",
                 cycle_momentum: bool = True, base_momentum=0.85, max_momentum=0.95,
                 div_factor: float = 25.0, final_div_factor: float = 1e4,
                 three_phase: bool = False, last_epoch: int = -1):
        name = "OneCycleLR"
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{name}: optimizer must be a fastconv.optim Optimizer, got "
                            f"{type(optimizer).__name__}")
        if total_steps is not None:
            self.total_steps = _check_int(name, "total_steps", total_steps, 1)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = (_check_int(name, "epochs", epochs, 1) *
                                _check_int(name, "steps_per_epoch", steps_per_epoch, 1))
        else:
            raise ValueError(f"{name}: give total_steps, or epochs and steps_per_epoch")
        pct_start = _check_real(name, "pct_start", pct_start, 0.0, 1.0)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"{name}: anneal_strategy must be 'cos' or 'linear', got "
                             f"{anneal_strategy!r}")
        self._anneal_func_type = anneal_strategy
        up_end = float(pct_start * self.total_steps) - 1
        if three_phase:
            self._schedule_phases = [
                dict(end_step=up_end, start_lr="initial_lr", end_lr="max_lr",
                     start_momentum="max_momentum", end_momentum="base_momentum"),
                dict(end_step=float(2 * pct_start * self.total_steps) - 2, start_lr="max_lr",
                     end_lr="initial_lr", start_momentum="base_momentum",
                     end_momentum="max_momentum"),
                dict(end_step=self.total_steps - 1, start_lr="initial_lr", end_lr="min_lr",
                     start_momentum="max_momentum", end_momentum="max_momentum")]
        else:
            self._schedule_phases = [
                dict(end_step=up_end, start_lr="initial_lr", end_lr="max_lr",
                     start_momentum="max_momentum", end_momentum="base_momentum"),
                dict(end_step=self.total_steps - 1, start_lr="max_lr", end_lr="min_lr",
                     start_momentum="base_momentum", end_momentum="max_momentum")]
        groups = optimizer.param_groups
        if last_epoch == -1:
            for group, peak in zip(groups, _per_group(name, "max_lr", max_lr, optimizer)):
                group["initial_lr"] = _check_real(name, "max_lr", peak, 0.0) / div_factor
                group["max_lr"] = peak
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = bool(cycle_momentum)
        if self.cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ValueError(f"{name}: cycle_momentum=True needs an optimizer with momentum "
                                 f"or betas; pass cycle_momentum=False")
            self.use_beta1 = "betas" in optimizer.defaults
            if last_epoch == -1:
                for group, high, low in zip(
                        groups, _per_group(name, "max_momentum", max_momentum, optimizer),
                        _per_group(name, "base_momentum", base_momentum, optimizer)):
                    if self.use_beta1:
                        group["betas"] = (high, *group["betas"][1:])
                    else:
                        group["momentum"] = high
                    group["max_momentum"] = high
                    group["base_momentum"] = low
        super().__init__(optimizer, last_epoch)

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self) -> List[float]:
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(f"OneCycleLR.step: stepped {step} times but total_steps is "
                             f"{self.total_steps}")
        lrs = []
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for i, phase in enumerate(self._schedule_phases):
                end_step = phase["end_step"]
                if step <= end_step or i == len(self._schedule_phases) - 1:
                    pct = (step - start_step) / (end_step - start_step)
                    lrs.append(self._anneal(group[phase["start_lr"]], group[phase["end_lr"]],
                                            pct))
                    if self.cycle_momentum:
                        momentum = self._anneal(group[phase["start_momentum"]],
                                                group[phase["end_momentum"]], pct)
                        if self.use_beta1:
                            group["betas"] = (momentum, *group["betas"][1:])
                        else:
                            group["momentum"] = momentum
                    break
                start_step = end_step
        return lrs


class ReduceLROnPlateau(LRScheduler):
    """Multiply the learning rate by factor when a metric has stopped improving for more than
    `patience` epochs. step(metric) once per epoch, e.g. with the validation loss.

    A metric is an improvement over the best so far when (mode 'min', threshold_mode 'rel')
    metric < best * (1 - threshold); 'abs': metric < best - threshold; mode 'max' mirrors.
    After a reduction, `cooldown` epochs pass before bad epochs count again. A rate is never
    lowered below min_lr, and a change smaller than eps is skipped.

    Args:
        optimizer: the Optimizer.
        mode: 'min' (lower is better, e.g. a loss) or 'max' (e.g. an accuracy).
        factor: the factor of a reduction, in [0, 1).
        patience: the number of epochs without improvement that are tolerated.
        threshold: the least change that counts as an improvement.
        threshold_mode: 'rel' or 'abs'.
        cooldown: epochs to wait after a reduction.
        min_lr: the lower bound of the rate, or one per parameter group.
        eps: the least change of the rate that is applied.

    Example:
        >>> sched = fc.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", patience=1)
        >>> for validation_loss in [1.0, 0.8, 0.8, 0.8]:
        ...     sched.step(validation_loss)
        >>> sched.get_last_lr()                     # opt made with lr=0.1
        [0.010000000000000002]
    """

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: Union[float, Sequence[float]] = 0,
                 eps: float = 1e-8):
        name = "ReduceLROnPlateau"
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{name}: optimizer must be a fastconv.optim Optimizer, got "
                            f"{type(optimizer).__name__}")
        if mode not in ("min", "max"):
            raise ValueError(f"{name}: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"{name}: threshold_mode must be 'rel' or 'abs', got "
                             f"{threshold_mode!r}")
        self.factor = _check_real(name, "factor", factor, 0.0)
        if factor >= 1.0:
            raise ValueError(f"{name}: factor must be < 1.0, got {factor!r}")
        self.optimizer = optimizer
        self.default_min_lr = None if isinstance(min_lr, (list, tuple)) else min_lr
        self.min_lrs = _per_group(name, "min_lr", min_lr, optimizer)
        for value in self.min_lrs:
            _check_real(name, "min_lr", value, 0.0)
        self.patience = _check_int(name, "patience", patience, 0)
        self.cooldown = _check_int(name, "cooldown", cooldown, 0)
        self.eps = _check_real(name, "eps", eps, 0.0)
        self.threshold = _check_real(name, "threshold", threshold, 0.0)
        self.mode, self.threshold_mode = mode, threshold_mode
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.last_epoch = 0
        self._last_lr = self._current_lrs()
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def step(self, metrics) -> None:
        """Record one epoch's metric (a number or a one-element Tensor/array)."""
        value = metrics.item() if isinstance(metrics, Tensor) else metrics
        try:
            current = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"ReduceLROnPlateau.step: metrics must be a number, got "
                            f"{type(metrics).__name__}") from None
        self.last_epoch += 1
        if self._is_better(current):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = self._current_lrs()

    def _is_better(self, current: float) -> bool:
        if self.mode == "min":
            if self.threshold_mode == "rel":
                return current < self.best * (1.0 - self.threshold)
            return current < self.best - self.threshold
        if self.threshold_mode == "rel":
            return current > self.best * (self.threshold + 1.0)
        return current > self.best + self.threshold

    def _reduce_lr(self) -> None:
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise ValueError(f"ReduceLROnPlateau.step: the optimizer has {len(groups)} "
                                 f"parameter groups but min_lr gives {len(self.min_lrs)}; set "
                                 f"the scheduler's min_lrs to one value per group")
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, min_lr in zip(groups, self.min_lrs):
            old = float(group["lr"])
            new = max(old * self.factor, min_lr)
            if old - new > self.eps:
                group["lr"] = new
