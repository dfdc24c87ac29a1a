"""Utilities on parameters, PyTorch's torch.nn.utils: gradient clipping (implemented in
fastconv.optim.clip).

    from fastconv.nn.utils import clip_grad_norm_
    clip_grad_norm_(model.parameters(), max_norm=1.0)
"""
from fastconv.optim.clip import clip_grad_norm_, clip_grad_value_

__all__ = ["clip_grad_norm_", "clip_grad_value_"]
