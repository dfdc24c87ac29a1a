"""Module.summary(): run one forward pass on zeros and tabulate each layer's output shape and
parameter count, Keras-style."""
from __future__ import annotations

import numpy as np

from fastconv.autograd import Tensor, no_grad
from fastconv.nn import module as _module


def _shape_of(out) -> str:
    if isinstance(out, Tensor):
        return str((None,) + tuple(out.shape[1:]))
    if isinstance(out, (tuple, list)):
        return ", ".join(_shape_of(o) for o in out)
    return "?"


def summarize(model, input_shape, dtype=np.float32) -> str:
    input_shape = tuple(int(s) for s in input_shape)
    names = {id(m): name for name, m in model.named_modules()}
    rows = []

    def hook(m, out):
        own = list(m._parameters.values())
        if m is model or (m._modules and not any(p is not None for p in own)):
            return  # containers: their layers are listed instead
        count = sum(p.numel() for p in own if p is not None)
        rows.append((f"{names.get(id(m), '?')} ({type(m).__name__})", _shape_of(out), count))

    _module._forward_hooks.append(hook)
    try:
        with model.evaluating(), no_grad():
            model(Tensor(np.zeros((1,) + input_shape, dtype=dtype)))
    finally:
        _module._forward_hooks.remove(hook)

    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    w1 = max([len("Layer (type)")] + [len(r[0]) for r in rows]) + 2
    w2 = max([len("Output Shape")] + [len(r[1]) for r in rows]) + 2
    width = w1 + w2 + 12
    lines = [f'Model: "{type(model).__name__}"', "=" * width,
             f"{'Layer (type)':<{w1}}{'Output Shape':<{w2}}{'Param #':>12}", "=" * width]
    lines += [f"{name:<{w1}}{shape:<{w2}}{count:>12,}" for name, shape, count in rows]
    lines += ["=" * width, f"Total params: {total:,}", f"Trainable params: {trainable:,}",
              f"Non-trainable params: {total - trainable:,}", "=" * width]
    return "\n".join(lines)
