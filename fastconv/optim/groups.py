"""Parameter groups for fine-tuning: weight decay on weights only (timm's default)."""
from __future__ import annotations

from typing import Any, Dict, Iterable, List

from fastconv.nn.module import Module

__all__ = ["param_groups_no_decay"]


def param_groups_no_decay(model: Module, weight_decay: float = 1e-5,
                          no_weight_decay_list: Iterable[str] = ()) -> List[Dict[str, Any]]:
    """Split the trainable parameters of a model into two optimizer groups: one without weight
    decay (biases, normalisation scales and shifts: every parameter with at most one dimension,
    and those named in no_weight_decay_list) and one with it. Frozen parameters are left out, as
    in timm's param_groups_weight_decay; after unfreezing, add them with add_param_group.

    Args:
        model: the Module whose parameters to group.
        weight_decay: the weight decay of the second group.
        no_weight_decay_list: parameter names (as in model.named_parameters()) that also get none.
    Returns:
        [{"params": [...], "weight_decay": 0.0}, {"params": [...], "weight_decay": weight_decay}]

    Example:
        >>> opt = fc.optim.AdamW(fc.optim.param_groups_no_decay(model, 0.05), lr=3e-4)
    """
    if not isinstance(model, Module):
        raise TypeError(f"param_groups_no_decay: model must be a fastconv Module, got "
                        f"{type(model).__name__}")
    if isinstance(no_weight_decay_list, str):
        raise TypeError(f"param_groups_no_decay: no_weight_decay_list must be a collection of "
                        f"parameter names, got the string {no_weight_decay_list!r}")
    skip = set(no_weight_decay_list)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or name in skip:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": no_decay, "weight_decay": 0.0},
            {"params": decay, "weight_decay": weight_decay}]
