"""Squeeze-and-excitation (Hu, Shen, Sun: "Squeeze-and-Excitation Networks", CVPR 2018)."""
from __future__ import annotations

from fastconv import _shape
from fastconv.nn import functional as F
from fastconv.nn.conv import Conv2d
from fastconv.nn.module import Module

__all__ = ["SEBlock"]


class SEBlock(Module):
    """Channel attention: squeeze (global average pool), excite (1x1 conv to channels // r,
    ReLU, 1x1 conv back, sigmoid), then scale the input channels by the result.

    The two 1x1 convolutions (with bias) are the paper's fully connected layers; their keys
    `fc1`/`fc2` are those of timm's SEModule. The bottleneck width is channels // reduction
    (at least 1), as in the paper.

    Args:
        channels: C, the number of input (and output) channels.
        reduction: r, the bottleneck ratio (paper: 16).
    Input shape: (N, C, H, W). Output shape: (N, C, H, W).
    Example:
        >>> se = fc.models.SEBlock(64, reduction=16)
        >>> se(fc.zeros(2, 64, 8, 8)).shape
        (2, 64, 8, 8)
        >>> se.num_parameters()  # 64*4 + 4 + 4*64 + 64
        580
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        channels = _shape.check_int("SEBlock", "channels", channels, minimum=1)
        self.reduction = _shape.check_int("SEBlock", "reduction", reduction, minimum=1)
        hidden = max(1, channels // self.reduction)
        self.fc1 = Conv2d(channels, hidden, 1)
        self.fc2 = Conv2d(hidden, channels, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        s = F.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s
