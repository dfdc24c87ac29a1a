"""Normalisation layers: BatchNorm1d, BatchNorm2d, LocalResponseNorm."""
from __future__ import annotations

import numpy as np

from fastconv import _shape
from fastconv.nn import functional as F
from fastconv.nn.module import Module, Parameter

__all__ = ["BatchNorm1d", "BatchNorm2d", "LocalResponseNorm"]


class _BatchNorm(Module):
    _ndims = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum=0.1, affine: bool = True,
                 track_running_stats: bool = True, dtype=np.float32):
        super().__init__()
        op = type(self).__name__
        self.num_features = _shape.check_int(op, "num_features", num_features, minimum=1)
        self.eps, self.momentum = eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        C = num_features
        self.register_parameter("weight", Parameter(np.ones(C, dtype)) if affine else None)
        self.register_parameter("bias", Parameter(np.zeros(C, dtype)) if affine else None)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(C, dtype))
            self.register_buffer("running_var", np.ones(C, dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))

    @property
    def uses_batch_stats(self) -> bool:
        """Batch statistics in training mode, unless frozen or not tracking running stats."""
        return (self.training and not self.frozen) or not self.track_running_stats

    def forward(self, x):
        shape = tuple(x.shape)
        if len(shape) not in self._ndims or shape[1] != self.num_features:
            ranks = " or ".join(f"{n}-D" for n in self._ndims)
            raise ValueError(f"{type(self).__name__}: expected {ranks} input with "
                             f"{self.num_features} channels on axis 1, got shape {shape}")
        momentum = self.momentum
        update = self.training and not self.frozen and self.track_running_stats
        if update and momentum is None:  # cumulative moving average
            momentum = 1.0 / float(self.num_batches_tracked + 1)
        y = F.batch_norm(x, self.running_mean if update or not self.uses_batch_stats else None,
                         self.running_var if update or not self.uses_batch_stats else None,
                         self.weight, self.bias, training=self.uses_batch_stats,
                         momentum=momentum or 0.0, eps=self.eps)
        if update:  # counted only once the batch was accepted
            self.num_batches_tracked += 1
        return y

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) input per channel.

    In training mode it normalises with the batch statistics and updates running_mean /
    running_var (momentum 0.1, PyTorch's convention); in eval mode, or when frozen with
    freeze(), it uses the running statistics and leaves them unchanged.
    Example:
        >>> BatchNorm2d(8)(fc.zeros(2, 8, 4, 4)).shape
        (2, 8, 4, 4)
    """
    _ndims = (4,)


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) input per channel (see BatchNorm2d)."""
    _ndims = (2, 3)


class LocalResponseNorm(Module):
    """Local response normalisation across channels (AlexNet):
    y = x / (k + alpha / size * sum of x^2 over `size` neighbouring channels) ** beta."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x):
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
