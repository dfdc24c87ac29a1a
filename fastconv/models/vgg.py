"""VGG-11 and VGG-16, with and without BatchNorm (Simonyan & Zisserman, "Very Deep
Convolutional Networks for Large-Scale Image Recognition", 2014), torchvision's layout and keys.

features.N: 3x3 convolutions (padding 1) [+ BatchNorm] + ReLU, with 2x2 max pools between
stages; avgpool: adaptive average pool to 7x7 (so any input of at least 32x32 works);
classifier.0/3/6: Linear 25088 -> 4096 -> 4096 -> num_classes with ReLU and Dropout(0.5).
Parameters: vgg11 132,863,336, vgg11_bn 132,868,840, vgg16 138,357,544, vgg16_bn 138,365,992.
"""
from __future__ import annotations

from fastconv.models._base import (ImageClassifier, check_num_classes, init_conv_kaiming,
                                   init_linear_normal)
from fastconv.models._registry import build_model, register_model
from fastconv.nn import functional as F
from fastconv.nn.activation import ReLU
from fastconv.nn.container import Sequential
from fastconv.nn.conv import Conv2d
from fastconv.nn.linear import Dropout, Identity, Linear
from fastconv.nn.norm import BatchNorm2d
from fastconv.nn.pooling import AdaptiveAvgPool2d, MaxPool2d

__all__ = ["VGG", "make_layers", "CFGS", "vgg11", "vgg11_bn", "vgg16", "vgg16_bn"]

# Output channels of each 3x3 convolution; "M" is a 2x2 max pool (the paper's configs A and D).
CFGS = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


def make_layers(cfg, batch_norm: bool = False, in_channels: int = 3) -> Sequential:
    """The `features` Sequential for a config such as CFGS["D"]."""
    layers = []
    for v in cfg:
        if v == "M":
            layers.append(MaxPool2d(2, stride=2))
            continue
        layers.append(Conv2d(in_channels, v, 3, padding=1))
        if batch_norm:
            layers.append(BatchNorm2d(v))
        layers.append(ReLU())
        in_channels = v
    return Sequential(*layers)


class VGG(ImageClassifier):
    """VGG: `features`, 7x7 adaptive average pool, three-layer `classifier`.

    reset_classifier(n) replaces only classifier.6 (the 4096 -> 1000 layer), keeping the two
    4096-wide layers (timm's convention); with n = 0, forward returns their 4096 features.

    Args:
        features: the convolutional Sequential (see make_layers).
        num_classes: outputs of classifier.6 (0: none).
        dropout: dropout probability in the classifier.
    Input shape: (N, 3, H, W), H and W >= 32. Output shape: (N, num_classes).
    forward_features: (N, 512, H / 32, W / 32).
    Example:
        >>> m = fc.models.vgg11(num_classes=10)
        >>> m(fc.zeros(1, 3, 32, 32)).shape
        (1, 10)
    """
    classifier_name = "classifier.6"

    def __init__(self, features: Sequential, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.num_classes = check_num_classes("VGG", num_classes)
        self.num_features = 4096
        self.features = features
        self.avgpool = AdaptiveAvgPool2d((7, 7))
        self.classifier = Sequential(
            Linear(512 * 7 * 7, 4096), ReLU(), Dropout(dropout),
            Linear(4096, 4096), ReLU(), Dropout(dropout),
            Linear(4096, num_classes) if num_classes else Identity())
        init_conv_kaiming(self)
        init_linear_normal(self, 0.01)

    def init_classifier(self, fc: Linear) -> None:
        init_linear_normal(fc, 0.01)

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, x):
        return self.classifier(F.flatten(self.avgpool(x), 1))


def _vgg(name: str, cfg: str, batch_norm: bool, num_classes, pretrained, kwargs) -> VGG:
    in_channels = kwargs.pop("in_channels", 3)
    return build_model(name, VGG, num_classes, pretrained,
                       dict(features=make_layers(CFGS[cfg], batch_norm, in_channels), **kwargs))


@register_model
def vgg11(num_classes: int = 1000, pretrained=None, **kwargs) -> VGG:
    """VGG-11 (config A), 132,863,336 parameters; torchvision keys. kwargs: in_channels,
    dropout."""
    return _vgg("vgg11", "A", False, num_classes, pretrained, kwargs)


@register_model
def vgg11_bn(num_classes: int = 1000, pretrained=None, **kwargs) -> VGG:
    """VGG-11 with BatchNorm after every convolution, 132,868,840 parameters."""
    return _vgg("vgg11_bn", "A", True, num_classes, pretrained, kwargs)


@register_model
def vgg16(num_classes: int = 1000, pretrained=None, **kwargs) -> VGG:
    """VGG-16 (config D), 138,357,544 parameters; torchvision keys."""
    return _vgg("vgg16", "D", False, num_classes, pretrained, kwargs)


@register_model
def vgg16_bn(num_classes: int = 1000, pretrained=None, **kwargs) -> VGG:
    """VGG-16 with BatchNorm after every convolution, 138,365,992 parameters."""
    return _vgg("vgg16_bn", "D", True, num_classes, pretrained, kwargs)
