"""GoogLeNet / Inception v1 (Szegedy et al., "Going Deeper with Convolutions", 2014) in
torchvision's version: BatchNorm after every convolution (BasicConv2d: conv without bias, BN
with eps 1e-3, ReLU) and, like torchvision, a 3x3 convolution in the "5x5" branch.

Keys: conv1.conv, conv1.bn, conv2, conv3, inception3a.branch1.conv, inception3a.branch2.0.conv,
..., inception5b.branch4.1.bn, [aux1.conv, aux1.fc1, aux1.fc2, aux2...], fc. Parameters:
6,624,904 without the auxiliary classifiers (the default), 13,004,888 with them. There is no
`transform_input`: torchvision's weights, which it runs with transform_input=True, expect
(x - 0.5) / 0.5 input, which is what the googlenet preprocessing config does.
"""
from __future__ import annotations

from fastconv.autograd import concat
from fastconv.models._base import ImageClassifier, check_num_classes
from fastconv.models._registry import build_model, register_model
from fastconv.nn import functional as F
from fastconv.nn import init
from fastconv.nn.container import Sequential
from fastconv.nn.conv import Conv2d
from fastconv.nn.linear import Dropout, Identity, Linear
from fastconv.nn.module import Module
from fastconv.nn.norm import BatchNorm2d
from fastconv.nn.pooling import AdaptiveAvgPool2d, MaxPool2d

__all__ = ["GoogLeNet", "BasicConv2d", "Inception", "InceptionAux", "googlenet"]


class BasicConv2d(Module):
    """Conv2d (no bias) + BatchNorm2d(eps=1e-3) + ReLU; keys conv, bn."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.bn = BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Inception(Module):
    """Four parallel branches concatenated on channels: 1x1; 1x1 -> 3x3; 1x1 -> 3x3; 3x3 max
    pool -> 1x1.

    Input shape: (N, in_channels, H, W).
    Output shape: (N, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W).
    """

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int,
                 ch5x5: int, pool_proj: int):
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, 1)
        self.branch2 = Sequential(BasicConv2d(in_channels, ch3x3red, 1),
                                  BasicConv2d(ch3x3red, ch3x3, 3, padding=1))
        self.branch3 = Sequential(BasicConv2d(in_channels, ch5x5red, 1),
                                  BasicConv2d(ch5x5red, ch5x5, 3, padding=1))
        self.branch4 = Sequential(MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                  BasicConv2d(in_channels, pool_proj, 1))

    def forward(self, x):
        return concat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)],
                      axis=1)


class InceptionAux(Module):
    """Auxiliary classifier: 4x4 adaptive average pool, 1x1 BasicConv2d to 128, Linear(2048,
    1024), ReLU, Dropout, Linear(1024, num_classes).

    Input shape: (N, in_channels, H, W). Output shape: (N, num_classes).
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7):
        super().__init__()
        self.conv = BasicConv2d(in_channels, 128, 1)
        self.fc1 = Linear(2048, 1024)
        self.fc2 = Linear(1024, num_classes) if num_classes else Identity()
        self.dropout = Dropout(dropout)

    def forward(self, x):
        x = self.conv(F.adaptive_avg_pool2d(x, (4, 4)))
        x = self.dropout(F.relu(self.fc1(F.flatten(x, 1))))
        return self.fc2(x)


def _trunc_normal_init(module: Module) -> None:
    """torchvision's GoogLeNet init: conv and linear weights truncated normal (std 0.01, cut at
    +-2; biases keep their default), BatchNorm weight 1 and bias 0 (their constructor default)."""
    for m in module.modules():
        if isinstance(m, (Conv2d, Linear)):
            init.trunc_normal_(m.weight, std=0.01, a=-2.0, b=2.0)


class GoogLeNet(ImageClassifier):
    """GoogLeNet (Inception v1) with BatchNorm.

    In training mode with aux_logits=True, forward returns (logits, aux2, aux1) (torchvision's
    order); otherwise the logits.

    Args:
        num_classes: outputs of fc (0: none; forward returns the 1024 pooled features).
        aux_logits: build the two auxiliary classifiers (off by default).
        dropout: before fc; dropout_aux: inside the auxiliary classifiers.
        in_channels: input channels.
    Input shape: (N, in_channels, H, W), H and W >= 32. Output shape: (N, num_classes).
    forward_features: (N, 1024, H / 32, W / 32).
    Example:
        >>> m = fc.models.googlenet(num_classes=10)
        >>> m(fc.zeros(2, 3, 64, 64)).shape
        (2, 10)
    """

    def __init__(self, num_classes: int = 1000, aux_logits: bool = False, dropout: float = 0.2,
                 dropout_aux: float = 0.7, in_channels: int = 3):
        super().__init__()
        self.num_classes = check_num_classes("GoogLeNet", num_classes)
        self.num_features = 1024
        self.aux_logits = bool(aux_logits)
        self.conv1 = BasicConv2d(in_channels, 64, 7, stride=2, padding=3)
        self.maxpool1 = MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, 1)
        self.conv3 = BasicConv2d(64, 192, 3, padding=1)
        self.maxpool2 = MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.aux1 = InceptionAux(512, num_classes, dropout_aux) if self.aux_logits else None
        self.aux2 = InceptionAux(528, num_classes, dropout_aux) if self.aux_logits else None
        self.avgpool = AdaptiveAvgPool2d((1, 1))
        self.dropout = Dropout(dropout)
        self.fc = Linear(1024, num_classes) if num_classes else Identity()
        _trunc_normal_init(self)

    def init_classifier(self, fc: Linear) -> None:
        _trunc_normal_init(fc)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace fc (and the auxiliary classifiers' fc2) by fresh layers for num_classes."""
        super().reset_classifier(num_classes)
        for aux in (self.aux1, self.aux2):
            if aux is not None:
                aux.add_module("fc2", self._new_classifier(self.num_classes))

    def classifier_keys(self):
        return ("fc.", "aux1.fc2.", "aux2.fc2.")

    def adapt_checkpoint(self, state: dict) -> dict:
        """Without auxiliary classifiers, a checkpoint's aux1.*/aux2.* entries are dropped
        (torchvision's googlenet file has them)."""
        if self.aux_logits:
            return state
        return {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2."))}

    def _backbone(self, x):
        """(features, aux1 output or None, aux2 output or None)."""
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        with_aux = self.aux_logits and self.training
        aux1 = self.aux1(x) if with_aux else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if with_aux else None
        x = self.maxpool4(self.inception4e(x))
        return self.inception5b(self.inception5a(x)), aux1, aux2

    def forward_features(self, x):
        return self._backbone(x)[0]

    def forward_head(self, x):
        return self.fc(self.dropout(F.flatten(self.avgpool(x), 1)))

    def forward(self, x):
        x, aux1, aux2 = self._backbone(x)
        x = self.forward_head(x)
        return (x, aux2, aux1) if aux1 is not None else x


@register_model
def googlenet(num_classes: int = 1000, pretrained=None, **kwargs) -> GoogLeNet:
    """GoogLeNet with BatchNorm, 6,624,904 parameters (13,004,888 with aux_logits=True);
    torchvision keys. kwargs: aux_logits, dropout, dropout_aux, in_channels."""
    return build_model("googlenet", GoogLeNet, num_classes, pretrained, kwargs)
