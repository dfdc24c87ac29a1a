"""`Optimizer`: the base class of fastconv's optimizers (PyTorch's torch.optim.Optimizer semantics).

An optimizer holds `param_groups`, a list of dicts each with its own options (`lr`,
`weight_decay`, ...) and a `params` list, and `state`, per-parameter arrays such as momentum
buffers. `step()` updates, in place on `p.data`, every parameter that has a gradient; parameters
whose `.grad` is None or that do not require grad (frozen) are left untouched (no weight decay
either). State and updates use the array module of each parameter (numpy on CPU, cupy on GPU).

`state_dict()` has PyTorch's layout, with numpy arrays and Python numbers as values:

    {"state": {0: {"momentum_buffer": array(...)}, ...},
     "param_groups": [{"lr": 0.01, ..., "params": [0, 1]}, {"lr": 0.001, ..., "params": [2]}]}

where the integers number the parameters in group order.
"""
from __future__ import annotations

import numbers
from collections import defaultdict
from typing import Any, Callable, Dict, Iterable, List, Optional

import numpy as np

from fastconv.autograd import Tensor, array_module, enable_grad
from fastconv.nn.module import Module

__all__ = ["Optimizer"]


def on_cpu_kernels(param, *others) -> bool:
    """Whether fastconv._C's optimizer steps (csrc/cpu/optim_cpu.h: one multi-threaded pass,
    bit-identical to the array code) take these arrays as they are: numpy arrays of one native
    float32/float64 dtype and one shape, C-contiguous and aligned, the parameter (first) and the
    state writeable, no two sharing memory. Otherwise the optimizers run their array code (CuPy
    arrays, the CUDA emulation, odd layouts)."""
    from fastconv import _gpu
    arrays = (param,) + others
    if _gpu.emulating() or param.dtype not in (np.float32, np.float64) or not param.dtype.isnative:
        return False
    for i, a in enumerate(arrays):
        if (type(a) is not np.ndarray or a.dtype != param.dtype or a.shape != param.shape
                or not (a.flags.c_contiguous and a.flags.aligned)
                or (i != 1 and not a.flags.writeable)):
            return False
        if any(np.may_share_memory(a, b) for b in arrays[:i]):
            return False
    return True


class Optimizer:
    """Base class: subclasses pass their default options and implement `_check_group` (option
    validation) and `_update` (one parameter's step).

    Args:
        params: an iterable of Parameters (or other leaf Tensors), of `(name, Parameter)` pairs
            (e.g. `model.named_parameters()`), or of dicts, one per parameter group, each with a
            `params` entry and any options that override the defaults for that group.
        defaults: the default value of every option of the optimizer.

    Example:
        >>> opt = fc.optim.SGD([{"params": model[0].parameters(), "lr": 1e-4},
        ...                     {"params": model[1].parameters()}], lr=1e-2, momentum=0.9)
        >>> opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
        >>> [group["lr"] for group in opt.param_groups]
        [0.0001, 0.01]
    """

    def __init__(self, params, defaults: Dict[str, Any]):
        self.defaults = dict(defaults)
        self._check_group(self.defaults, None)
        if isinstance(params, (Tensor, Module)) or not isinstance(params, Iterable):
            hint = " (pass model.parameters())" if isinstance(params, Module) else ""
            raise TypeError(f"{self._name}: params must be an iterable of Parameters or of "
                            f"parameter-group dicts, got {type(params).__name__}{hint}")
        if isinstance(params, (set, frozenset)):
            raise TypeError(f"{self._name}: params must be an ordered collection (a list), not a "
                            f"set: the order of the parameters numbers them in state_dict()")
        self.state: Dict[Tensor, Dict[str, Any]] = defaultdict(dict)
        self.param_groups: List[Dict[str, Any]] = []
        groups = list(params)
        if not groups:
            raise ValueError(f"{self._name}: got an empty parameter list (if the model is "
                             f"frozen, unfreeze the layers to train first)")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)
        if not any(group["params"] for group in self.param_groups):
            raise ValueError(f"{self._name}: every parameter group is empty")

    @property
    def _name(self) -> str:
        return type(self).__name__

    # ------------------------------------------------------------------------- parameter groups
    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Add a group of parameters with its own options (the others take the defaults), e.g.
        the layers just unfrozen for fine-tuning.

        Args:
            param_group: a dict with `params` (a Parameter or an iterable of them) and options.

        Example:
            >>> model[0].freeze().num_parameters(trainable_only=True)
            0
            >>> opt = fc.optim.AdamW(model[1].parameters(), lr=1e-3)   # train the head
            >>> model[0].unfreeze().num_parameters(trainable_only=True)  # then fine-tune
            40
            >>> opt.add_param_group({"params": model[0].parameters(), "lr": 1e-5})
        """
        index = len(self.param_groups)
        where = f"{self._name}: param_groups[{index}]"
        if not isinstance(param_group, dict):
            raise TypeError(f"{where} must be a dict with a 'params' entry, got "
                            f"{type(param_group).__name__} (give either parameters or groups)")
        if "params" not in param_group:
            raise ValueError(f"{where} has no 'params' entry")
        unknown = [k for k in param_group if k != "params" and k not in self.defaults]
        if unknown:
            raise ValueError(f"{where} has unknown option(s) {', '.join(map(repr, unknown))}; "
                             f"{self._name} options are: {', '.join(self.defaults)}")
        group = {"params": self._collect(param_group["params"], where)}
        if group["params"] and isinstance(group["params"][0], tuple):
            group["param_names"] = [name for name, _ in group["params"]]
            group["params"] = [p for _, p in group["params"]]
        for key, default in self.defaults.items():
            group[key] = param_group.get(key, default)
        self._check_group(group, index)
        seen = {id(p): i for i, g in enumerate(self.param_groups) for p in g["params"]}
        for p in group["params"]:
            if id(p) in seen:
                raise ValueError(f"{where}: a parameter of shape {p.shape} is already in "
                                 f"param_groups[{seen[id(p)]}] (each parameter may appear in "
                                 f"one group only)")
        self.param_groups.append(group)

    def _collect(self, params, where: str) -> list:
        """The group's parameters as a list, each checked: Tensors (optionally (name, Tensor)
        pairs, all or none), leaves, floating-point, no duplicates."""
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(f"{where}['params'] must be an ordered collection (a list), not a set")
        elif isinstance(params, Module) or not isinstance(params, Iterable):
            hint = " (pass model.parameters())" if isinstance(params, Module) else ""
            raise TypeError(f"{where}['params'] must be an iterable of Parameters, got "
                            f"{type(params).__name__}{hint}")
        params = list(params)
        named = [isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in params]
        if any(named) and not all(named):
            raise ValueError(f"{where}['params'] mixes (name, parameter) pairs and bare "
                             f"parameters; give all with names or none")
        seen = set()
        for i, item in enumerate(params):
            p = item[1] if named[i] else item
            what = f"{where}['params'][{i}]"
            if not isinstance(p, Tensor):
                raise TypeError(f"{what} is a {type(p).__name__}, expected a fastconv Parameter "
                                f"(e.g. from model.parameters())")
            if not p.is_leaf:
                raise ValueError(f"{what} is not a leaf tensor (it was computed from others); "
                                 f"only leaves such as Parameters can be optimized")
            if p.dtype.kind != "f":
                raise TypeError(f"{what} has dtype {p.dtype}; only floating-point tensors can "
                                f"be optimized")
            if id(p) in seen:
                raise ValueError(f"{what} appears twice in the group")
            seen.add(id(p))
        return params

    def _check_group(self, group: Dict[str, Any], index: Optional[int]) -> None:
        """Validate a group's options (index None: the defaults). Subclasses override."""
        raise NotImplementedError

    def _label(self, key: str, index: Optional[int]) -> str:
        return key if index is None else f"param_groups[{index}]['{key}']"

    def _check_real(self, value, key: str, index: Optional[int], low: float = 0.0,
                    below: Optional[float] = None) -> None:
        """Raise unless value (the option key) is a real number with low <= value (< below)."""
        label = self._label(key, index)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError(f"{self._name}: {label} must be a number, got "
                            f"{type(value).__name__}")
        if not (value >= low and (below is None or value < below)):
            expected = f">= {low}" if below is None else f"in [{low}, {below})"
            raise ValueError(f"{self._name}: {label} must be {expected}, got {value!r}")

    def _check_bool(self, group: Dict[str, Any], key: str, index: Optional[int]) -> None:
        if not isinstance(group[key], (bool, np.bool_)):
            raise TypeError(f"{self._name}: {self._label(key, index)} must be True or False, got "
                            f"{group[key]!r}")

    # ---------------------------------------------------------------------------------- steps
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of all parameters: set them to None (default) or fill with 0."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    if set_to_none:
                        p.grad = None
                    else:
                        p.grad[...] = 0

    def step(self, closure: Optional[Callable[[], Any]] = None):
        """Update every parameter that has a gradient and requires grad.

        Args:
            closure: optional function that clears the gradients, recomputes the loss, calls
                backward() and returns the loss; it is called (with grad enabled) first.
        Returns:
            The closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            for i, p in enumerate(group["params"]):
                if p.grad is None or not p.requires_grad:
                    continue
                if tuple(p.grad.shape) != p.shape:
                    raise ValueError(f"{self._name}: the gradient of param_groups[{index}]"
                                     f"['params'][{i}] has shape {tuple(p.grad.shape)} but the "
                                     f"parameter has shape {p.shape}")
                self._update(p, group)
        return loss

    def _update(self, p: Tensor, group: Dict[str, Any]) -> None:
        """Update p.data in place from p.grad with the group's options; keep state in
        self.state[p]. Subclasses implement."""
        raise NotImplementedError

    # ---------------------------------------------------------------------------------- state
    def state_dict(self) -> Dict[str, Any]:
        """A snapshot of the optimizer: per-parameter state (numpy copies of the arrays, so
        later steps do not change it) and the groups' options, parameters given by number.

        Example:
            >>> opt = fc.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
            >>> loss_fn(model(x), y).backward(); opt.step()
            >>> state = opt.state_dict()                # e.g. saved with the model's
            >>> sorted(state["state"][0]), state["param_groups"][0]["params"]
            (['momentum_buffer'], [0, 1, 2, 3])
            >>> opt.load_state_dict(state)
        """
        numbers_of = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [numbers_of.setdefault(id(p), len(numbers_of))
                                for p in group["params"]]
            groups.append(packed)
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                if self.state.get(p):
                    state[numbers_of[id(p)]] = {k: _snapshot(v) for k, v in self.state[p].items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore a state_dict() of an optimizer of the same kind over parameters of the same
        shapes, in the same groups and order (also one saved by torch.optim and read with
        fastconv.load). Arrays are copied onto each parameter's device and cast to its dtype.

        Args:
            state_dict: {"state": {number: {name: array or number}}, "param_groups": [...]}.
        """
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            got = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(f"{self._name}.load_state_dict: expected a dict with the keys "
                             f"'param_groups' and 'state', got {got}")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{self._name}.load_state_dict: the state has {len(saved_groups)} "
                             f"parameter groups but the optimizer has {len(self.param_groups)}")
        by_number = {}
        groups = []
        for index, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if not isinstance(saved, dict) or "params" not in saved:
                raise ValueError(f"{self._name}.load_state_dict: param_groups[{index}] of the "
                                 f"state is not a dict with a 'params' entry")
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"{self._name}.load_state_dict: param_groups[{index}] has "
                                 f"{len(saved['params'])} parameters in the state but "
                                 f"{len(group['params'])} in the optimizer")
            by_number.update(zip((int(n) for n in saved["params"]), group["params"]))
            new = {k: v for k, v in group.items() if k != "params"}
            new.update((k, v) for k, v in saved.items() if k != "params")
            new["params"] = group["params"]
            self._check_group(new, index)
            groups.append(new)
        state = defaultdict(dict)
        for number, values in state_dict["state"].items():
            if int(number) not in by_number:
                raise ValueError(f"{self._name}.load_state_dict: the state has an entry for "
                                 f"parameter {number} but the groups number "
                                 f"{len(by_number)} parameters")
            p = by_number[int(number)]
            state[p] = {k: _restore(v, p, f"{self._name}.load_state_dict: state[{number}]"
                                           f"['{k}']") for k, v in values.items()}
        self.param_groups = groups
        self.state = state

    def __repr__(self) -> str:
        lines = [f"{self._name} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {group[k]}" for k in sorted(group) if k not in
                      ("params", "param_names")]
        return "\n".join(lines) + "\n)"


def _snapshot(value):
    """A state value for state_dict(): arrays as numpy copies, numbers unchanged."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if array_module(value) is not np:
        return value.get()
    return value


def _restore(value, p: Tensor, what: str):
    """A loaded state value for parameter p: arrays copied to p's device (floating ones cast to
    p's dtype) and checked against p's shape; 0-d arrays become Python numbers."""
    if value is None or isinstance(value, (bool, numbers.Number, str)):
        return value
    on_gpu = array_module(value) is not np
    if not on_gpu:
        value = np.asarray(value)
    if value.ndim == 0:
        return value.item()
    if tuple(value.shape) != p.shape:
        raise ValueError(f"{what} has shape {tuple(value.shape)} but the parameter has shape "
                         f"{p.shape}")
    xp = array_module(p.data)
    if xp is np and on_gpu:
        value = value.get()
    dtype = p.dtype if value.dtype.kind == "f" else value.dtype
    return xp.array(value, dtype=dtype, copy=True)
