"""AlexNet (Krizhevsky, Sutskever, Hinton, "ImageNet Classification with Deep Convolutional
Neural Networks", NIPS 2012) in torchvision's single-tower layout, with the paper's local
response normalisation.

Layers: conv 64@11x11/4 (padding 2), [LRN], max pool 3/2, conv 192@5x5 (padding 2), [LRN], max
pool 3/2, conv 384, 256, 256 @3x3 (padding 1), max pool 3/2, adaptive average pool to 6x6, then
Dropout-Linear(9216, 4096)-ReLU-Dropout-Linear(4096, 4096)-ReLU-Linear(4096, num_classes).

Parameters: 61,100,840 with or without LRN (it has none). The paper's two-GPU network (96, 256,
384, 384, 256 filters, convolutions 2, 4 and 5 split into two groups) has 60,965,224; this is
torchvision's single-tower variant (Krizhevsky, "One weird trick...", 2014), whose checkpoints
people have.

Keys are torchvision's (features.0/3/6/8/10, classifier.1/4/6) in both modes: the LRN layers
sit in `features` under the names "lrn1" and "lrn2", which hold no parameters. torchvision's
weights were trained without LRN, so load them with lrn=False.
"""
from __future__ import annotations

from collections import OrderedDict

from fastconv.models._base import ImageClassifier, check_num_classes
from fastconv.models._pretrained import warn
from fastconv.models._registry import build_model, register_model
from fastconv.nn import functional as F
from fastconv.nn.activation import ReLU
from fastconv.nn.container import Sequential
from fastconv.nn.conv import Conv2d
from fastconv.nn.linear import Dropout, Identity, Linear
from fastconv.nn.norm import LocalResponseNorm
from fastconv.nn.pooling import AdaptiveAvgPool2d, MaxPool2d

__all__ = ["AlexNet", "alexnet"]


def _lrn() -> LocalResponseNorm:
    """The paper's LRN: k = 2, n = 5, alpha = 1e-4, beta = 0.75 (section 3.3)."""
    return LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)


class AlexNet(ImageClassifier):
    """AlexNet: `features`, 6x6 adaptive average pool, `classifier`.

    Args:
        num_classes: outputs of classifier.6 (0: none; forward returns 4096 features).
        lrn: insert the paper's local response normalisation after the first two ReLUs.
        dropout: dropout probability in the classifier.
        in_channels: input channels.
    Input shape: (N, in_channels, H, W), H and W >= 63. Output shape: (N, num_classes).
    forward_features: (N, 256, h, w) (6x6 for 224x224 input).
    Example:
        >>> m = fc.models.alexnet(num_classes=10)
        >>> m(fc.zeros(1, 3, 64, 64)).shape
        (1, 10)
    """
    classifier_name = "classifier.6"

    def __init__(self, num_classes: int = 1000, lrn: bool = True, dropout: float = 0.5,
                 in_channels: int = 3):
        super().__init__()
        self.num_classes = check_num_classes("AlexNet", num_classes)
        self.num_features = 4096
        self.lrn = bool(lrn)
        layers = [("0", Conv2d(in_channels, 64, 11, stride=4, padding=2)), ("1", ReLU()),
                  ("lrn1", _lrn()), ("2", MaxPool2d(3, stride=2)),
                  ("3", Conv2d(64, 192, 5, padding=2)), ("4", ReLU()),
                  ("lrn2", _lrn()), ("5", MaxPool2d(3, stride=2)),
                  ("6", Conv2d(192, 384, 3, padding=1)), ("7", ReLU()),
                  ("8", Conv2d(384, 256, 3, padding=1)), ("9", ReLU()),
                  ("10", Conv2d(256, 256, 3, padding=1)), ("11", ReLU()),
                  ("12", MaxPool2d(3, stride=2))]
        self.features = Sequential(OrderedDict((k, m) for k, m in layers
                                               if self.lrn or not k.startswith("lrn")))
        self.avgpool = AdaptiveAvgPool2d((6, 6))
        self.classifier = Sequential(
            Dropout(dropout), Linear(256 * 6 * 6, 4096), ReLU(),
            Dropout(dropout), Linear(4096, 4096), ReLU(),
            Linear(4096, num_classes) if num_classes else Identity())

    def adapt_checkpoint(self, state: dict) -> dict:
        if self.lrn:
            warn("alexnet: loading weights into AlexNet with LRN layers; if they are "
                 "torchvision's AlexNet weights (trained without LRN), pass lrn=False")
        return state

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, x):
        return self.classifier(F.flatten(self.avgpool(x), 1))


@register_model
def alexnet(num_classes: int = 1000, pretrained=None, lrn: bool = True, **kwargs) -> AlexNet:
    """AlexNet, 61,100,840 parameters, torchvision keys; lrn=True (default) adds the paper's
    local response normalisation, lrn=False is exactly torchvision's model (use it for
    torchvision's weights). kwargs: dropout, in_channels."""
    return build_model("alexnet", AlexNet, num_classes, pretrained, dict(lrn=lrn, **kwargs))
