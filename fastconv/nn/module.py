"""`Module` and `Parameter`: the base of every layer and model (PyTorch's nn.Module semantics,
plus Keras-style `freeze()`/`unfreeze()` and `summary()`).

A Module holds Parameters (trainable tensors), buffers (arrays such as BatchNorm's running
statistics, saved in the state dict) and child Modules, in the order they were assigned; their
dotted names (`layer1.0.conv1.weight`) are the checkpoint keys.
"""
from __future__ import annotations

from collections import OrderedDict, namedtuple
from contextlib import contextmanager
from typing import Dict, Iterator, Optional, Tuple

import numpy as np

from fastconv.autograd import Tensor, _move, array_module

__all__ = ["Module", "Parameter", "IncompatibleKeys"]

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])

_forward_hooks = []  # callables (module, output) run after every Module call; used by summary()


class Parameter(Tensor):
    """A Tensor that is a trainable weight of a Module (requires_grad by default)."""

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data.data if isinstance(data, Tensor) else data,
                         requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class Module:
    """Base class of layers and models: subclasses assign Parameters, buffers and sub-Modules in
    __init__ and implement forward()."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "frozen", False)

    # ------------------------------------------------------------------------ attributes
    def __setattr__(self, name: str, value) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before "
                                 f"assigning attributes")
        is_buffer = name in self.__dict__.get("_buffer_names", ())
        if is_buffer and not isinstance(value, (Parameter, Module)):
            self._buffers[name] = value.data if isinstance(value, Tensor) else value
            return
        for store in (self._parameters, self._buffers, self._modules):
            store.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        else:
            object.__setattr__(self, name, value)
            return
        self.__dict__.pop(name, None)

    def __getattr__(self, name: str):
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name: str, array, persistent: bool = True) -> None:
        """Add an array (or None) that is state but not a parameter, e.g. running statistics.
        Persistent buffers are saved in the state dict."""
        if isinstance(array, Tensor):
            array = array.data
        self.__dict__.setdefault("_buffer_names", set()).add(name)
        self.__dict__.pop(name, None)
        self._buffers[name] = array
        if not persistent:
            self._non_persistent.add(name)

    def register_parameter(self, name: str, param: Optional[Parameter]) -> None:
        if param is None:
            self._parameters[name] = None
            self.__dict__.pop(name, None)
        else:
            setattr(self, name, param)

    def add_module(self, name: str, module: Optional["Module"]) -> None:
        self._modules[name] = module
        self.__dict__.pop(name, None)

    # ---------------------------------------------------------------------------- calling
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def __call__(self, *args, **kwargs):
        out = self.forward(*args, **kwargs)
        for hook in _forward_hooks:
            hook(self, out)
        return out

    # -------------------------------------------------------------------------- traversal
    def named_modules(self, prefix: str = "", _seen=None) -> Iterator[Tuple[str, "Module"]]:
        seen = set() if _seen is None else _seen
        if id(self) in seen:
            return
        seen.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(f"{prefix}.{name}" if prefix else name, seen)

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[Tuple[str, "Module"]]:
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self) -> Iterator["Module"]:
        for _, m in self.named_children():
            yield m

    def named_parameters(self, prefix: str = "", recurse: bool = True
                         ) -> Iterator[Tuple[str, Parameter]]:
        """(dotted name, Parameter) pairs; a parameter shared by two modules is listed once."""
        seen = set()
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mprefix, m in mods:
            for name, p in m._parameters.items():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{mprefix}.{name}" if mprefix else name), p

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True):
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mprefix, m in mods:
            for name, b in m._buffers.items():
                if b is not None:
                    yield (f"{mprefix}.{name}" if mprefix else name), b

    def buffers(self, recurse: bool = True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def apply(self, fn) -> "Module":
        """Call fn(module) on every submodule (children first) and self."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Parameters and persistent buffers by dotted name, as arrays (not copies)."""
        return OrderedDict((key, m._parameters[name].data if is_param else m._buffers[name])
                           for key, (m, name, is_param) in self._state_slots().items())

    def _state_slots(self) -> Dict[str, Tuple["Module", str, bool]]:
        slots = {}
        for mprefix, m in self.named_modules():
            for name, p in m._parameters.items():
                if p is not None:
                    slots[f"{mprefix}.{name}" if mprefix else name] = (m, name, True)
            for name, b in m._buffers.items():
                if b is not None and name not in m._non_persistent:
                    slots[f"{mprefix}.{name}" if mprefix else name] = (m, name, False)
        return slots

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy arrays into the parameters and buffers (in place, cast to their dtype).

        Keys carrying a `module.` prefix (data-parallel checkpoints) are accepted. A shape
        mismatch always raises; with strict=True, missing or unexpected keys raise too (a
        ValueError naming them); otherwise they are returned as (missing_keys, unexpected_keys).
        """
        if not hasattr(state_dict, "items"):
            raise TypeError(f"load_state_dict: expected a dict of arrays, got "
                            f"{type(state_dict).__name__}")
        state = OrderedDict((k, v) for k, v in state_dict.items())
        slots = self._state_slots()
        if state and all(k.startswith("module.") for k in state) and \
                not any(k.startswith("module.") for k in slots):
            state = OrderedDict((k[len("module."):], v) for k, v in state.items())
        missing = [k for k in slots if k not in state]
        unexpected = [k for k in state if k not in slots]
        pairs = []  # (key, the model's array, the checkpoint's value) for the shared keys
        for key, value in state.items():
            if key in slots:
                m, name, is_param = slots[key]
                target = m._parameters[name].data if is_param else m._buffers[name]
                pairs.append((key, target, value.data if isinstance(value, Tensor) else value))
        mismatched = [f"{key}: checkpoint {tuple(np.shape(value))} vs model {tuple(target.shape)}"
                      for key, target, value in pairs
                      if tuple(np.shape(value)) != tuple(target.shape)]
        errors = []
        if mismatched:
            errors.append("size mismatch for " + "; ".join(mismatched))
        if strict and missing:
            errors.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            errors.append("unexpected keys: " + ", ".join(unexpected))
        if errors:
            raise ValueError(f"load_state_dict: cannot load into {type(self).__name__}: " +
                             " | ".join(errors))
        for _, target, value in pairs:
            xp = array_module(target)
            target[...] = xp.asarray(_move(np.asarray(value) if xp is np else value,
                                           "cpu" if xp is np else "cuda")).astype(target.dtype)
        return IncompatibleKeys(missing, unexpected)

    # ---------------------------------------------------------------------- modes and devices
    def train(self, mode: bool = True) -> "Module":
        """Training mode (dropout active, BatchNorm on batch statistics) for this module and its
        children. A frozen BatchNorm stays in inference mode regardless (see freeze())."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    @contextmanager
    def evaluating(self):
        """`with model.evaluating():` eval mode for the block, then every submodule gets back
        its own mode (a model with some parts in eval mode stays that way)."""
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            yield self
        finally:
            for m, mode in modes:
                object.__setattr__(m, "training", mode)

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        for p in self.parameters():
            p.requires_grad = bool(requires_grad)
        return self

    def freeze(self) -> "Module":
        """Keras-style freezing: no parameter of this module gets gradients, and its BatchNorm
        layers run in inference mode (running statistics used and left unchanged) even after a
        later train() — the usual pitfall of requires_grad_(False) alone."""
        for m in self.modules():
            object.__setattr__(m, "frozen", True)
        return self.requires_grad_(False)

    def unfreeze(self) -> "Module":
        """Undo freeze(): parameters trainable again, BatchNorm follows train()/eval() again."""
        for m in self.modules():
            object.__setattr__(m, "frozen", False)
        return self.requires_grad_(True)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad[...] = 0

    def to(self, target) -> "Module":
        """Move parameters and buffers to 'cpu' / 'cuda', or cast floating ones to a dtype, in
        place (the Parameter objects stay the same, so optimizers keep working)."""
        is_device = isinstance(target, str) and target.split(":")[0] in ("cpu", "cuda")

        def convert(a):
            if is_device:
                return _move(a, target.split(":")[0])
            return a.astype(target) if a.dtype.kind == "f" else a

        for m in self.modules():
            for p in m._parameters.values():
                if p is not None:
                    p.data = convert(p.data)
                    if p.grad is not None:
                        p.grad = convert(p.grad)
            for name, b in list(m._buffers.items()):
                if b is not None:
                    m._buffers[name] = convert(b)
        return self

    def cpu(self) -> "Module":
        return self.to("cpu")

    def cuda(self) -> "Module":
        return self.to("cuda")

    def float(self) -> "Module":
        return self.to(np.float32)

    def double(self) -> "Module":
        return self.to(np.float64)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------------------------ display
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self.named_children()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"

    def summary(self, input_shape, dtype=np.float32, print_fn=print) -> str:
        """Print (and return) a Keras-style table: Layer (type) / Output Shape / Param #, then
        Total / Trainable / Non-trainable params. input_shape excludes the batch dimension."""
        from fastconv.nn.summary import summarize
        text = summarize(self, input_shape, dtype)
        if print_fn is not None:
            print_fn(text)
        return text
