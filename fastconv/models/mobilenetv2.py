"""MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", 2018)
with torchvision's layout and keys.

features.0: 3x3/2 conv-BN-ReLU6 (keys features.0.0, features.0.1); features.1-17: inverted
residual blocks, each `conv` = [1x1 expand conv-BN-ReLU6,] 3x3 depthwise conv-BN-ReLU6, 1x1
project conv, BN (keys features.N.conv.M); features.18: 1x1 conv-BN-ReLU6 to 1280; classifier:
Dropout(0.2), Linear (classifier.1). 3,504,872 parameters.
"""
from __future__ import annotations

from fastconv.models._base import (ImageClassifier, check_num_classes, init_conv_kaiming,
                                   init_linear_normal)
from fastconv.models._registry import build_model, register_model
from fastconv.nn import functional as F
from fastconv.nn.activation import ReLU6
from fastconv.nn.container import Sequential
from fastconv.nn.conv import Conv2d
from fastconv.nn.linear import Dropout, Identity, Linear
from fastconv.nn.module import Module
from fastconv.nn.norm import BatchNorm2d

__all__ = ["MobileNetV2", "InvertedResidual", "mobilenet_v2"]

# (expand ratio t, output channels c, repeats n, stride of the first repeat s), from the paper.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(v: float, divisor: int = 8) -> int:
    """v rounded to the nearest multiple of divisor, never down by more than 10% (torchvision)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def conv_bn_relu6(cin: int, cout: int, kernel_size: int = 3, stride: int = 1,
                  groups: int = 1) -> Sequential:
    """torchvision's Conv2dNormActivation: conv (no bias, 'same' padding), BN, ReLU6."""
    return Sequential(Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2,
                             groups=groups, bias=False),
                      BatchNorm2d(cout), ReLU6())


class InvertedResidual(Module):
    """Expand (1x1) -> depthwise 3x3 (stride) -> linear projection (1x1), with the input added
    when stride is 1 and inp == oup.

    Input shape: (N, inp, H, W). Output shape: (N, oup, H / stride, W / stride).
    """

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = [conv_bn_relu6(inp, hidden, 1)] if expand_ratio != 1 else []
        layers += [conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   Conv2d(hidden, oup, 1, bias=False), BatchNorm2d(oup)]
        self.conv = Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(ImageClassifier):
    """MobileNetV2: `features` (stem, 17 inverted residuals, 1x1 conv to 1280), global average
    pool, `classifier` (Dropout, Linear).

    Args:
        num_classes: outputs of classifier.1 (0: none; forward returns the 1280 features).
        width_mult: channel multiplier (channels rounded to multiples of 8).
        dropout: before the classifier.
        in_channels: input channels.
    Input shape: (N, in_channels, H, W). Output shape: (N, num_classes).
    forward_features: (N, 1280, H / 32, W / 32).
    Example:
        >>> m = fc.models.mobilenet_v2(num_classes=10)
        >>> m(fc.zeros(2, 3, 64, 64)).shape
        (2, 10)
    """
    classifier_name = "classifier.1"

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2,
                 in_channels: int = 3):
        super().__init__()
        self.num_classes = check_num_classes("MobileNetV2", num_classes)
        channels = make_divisible(32 * width_mult)
        self.num_features = make_divisible(1280 * max(1.0, width_mult))
        layers = [conv_bn_relu6(in_channels, channels, 3, stride=2)]
        for t, c, n, s in SETTINGS:
            out = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(channels, out, s if i == 0 else 1, t))
                channels = out
        layers.append(conv_bn_relu6(channels, self.num_features, 1))
        self.features = Sequential(*layers)
        self.classifier = Sequential(Dropout(dropout),
                                     Linear(self.num_features, num_classes) if num_classes
                                     else Identity())
        init_conv_kaiming(self)
        init_linear_normal(self, 0.01)

    def init_classifier(self, fc: Linear) -> None:
        init_linear_normal(fc, 0.01)

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, x):
        return self.classifier(F.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@register_model
def mobilenet_v2(num_classes: int = 1000, pretrained=None, **kwargs) -> MobileNetV2:
    """MobileNetV2, 3,504,872 parameters; torchvision keys. kwargs: width_mult, dropout,
    in_channels."""
    return build_model("mobilenet_v2", MobileNetV2, num_classes, pretrained, kwargs)
