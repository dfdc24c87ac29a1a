"""Linear, Flatten, Dropout, Identity."""
from __future__ import annotations

import math

import numpy as np

from fastconv import _shape
from fastconv.nn import functional as F
from fastconv.nn import init
from fastconv.nn.module import Module, Parameter

__all__ = ["Linear", "Flatten", "Dropout", "Identity"]


class Linear(Module):
    """Fully connected layer y = x @ weight.T + bias (Keras Dense).

    Input shape: (..., in_features). Output shape: (..., out_features).
    Example:
        >>> Linear(735, 300)(fc.zeros(2, 735)).shape
        (2, 300)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=np.float32):
        super().__init__()
        self.in_features = _shape.check_int("Linear", "in_features", in_features, minimum=1)
        self.out_features = _shape.check_int("Linear", "out_features", out_features, minimum=1)
        self.weight = Parameter(np.empty((out_features, in_features), dtype=dtype))
        self.register_parameter("bias", Parameter(np.empty(out_features, dtype=dtype))
                                if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Flatten(Module):
    """Merge dims start_dim..end_dim (default: everything but the batch) in C, H, W order."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Dropout(Module):
    """Zero elements with probability p during training (scaling the rest by 1/(1-p))."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)  # active when frozen too, as in Keras

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Identity(Module):
    """Returns its input (a placeholder, e.g. for a removed classifier)."""

    def forward(self, x):
        return x
