"""ResNet-18/34/50 (He et al., "Deep Residual Learning for Image Recognition", 2015) with
torchvision's layout and checkpoint keys, and SE-ResNet (an `SEBlock` in every residual block).

torchvision's variant ("ResNet v1.5") strides in the 3x3 convolution of a bottleneck, and
projects the shortcut with `downsample` = (1x1 conv with the block's stride, BatchNorm) when
the shape changes. Keys: conv1, bn1, layer1.0.conv1, layer1.0.bn1, ..., layer2.0.downsample.0,
layer2.0.downsample.1, ..., fc. Parameters: resnet18 11,689,512, resnet34 21,797,672,
resnet50 25,557,032.
"""
from __future__ import annotations

from typing import Optional, Sequence

from fastconv.models._base import ImageClassifier, check_num_classes, init_conv_kaiming
from fastconv.models._registry import build_model, register_model
from fastconv.models.se import SEBlock
from fastconv.nn import functional as F
from fastconv.nn.container import Sequential
from fastconv.nn.conv import Conv2d
from fastconv.nn.linear import Identity, Linear
from fastconv.nn.module import Module
from fastconv.nn.norm import BatchNorm2d
from fastconv.nn.pooling import AdaptiveAvgPool2d, MaxPool2d

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "resnet18", "resnet34", "resnet50",
           "se_resnet18", "se_resnet34", "se_resnet50"]


def conv3x3(cin: int, cout: int, stride: int = 1) -> Conv2d:
    return Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> Conv2d:
    return Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(Module):
    """Two 3x3 conv-BN layers plus the shortcut (ResNet-18/34); an SE block rescales the residual
    branch before the addition when se_reduction is set.

    Input shape: (N, inplanes, H, W). Output shape: (N, planes, H / stride, W / stride).
    """
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[Module] = None, se_reduction: Optional[int] = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = BatchNorm2d(planes)
        self.se = SEBlock(planes, se_reduction) if se_reduction else None
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class Bottleneck(Module):
    """1x1 reduce, 3x3 (with the stride), 1x1 expand by 4, each followed by BN, plus the shortcut
    (ResNet-50); optional SE block on the residual branch.

    Input shape: (N, inplanes, H, W). Output shape: (N, 4 * planes, H / stride, W / stride).
    """
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[Module] = None, se_reduction: Optional[int] = None):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out)
        self.bn3 = BatchNorm2d(out)
        self.se = SEBlock(out, se_reduction) if se_reduction else None
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNet(ImageClassifier):
    """ResNet backbone (7x7/2 stem, 3x3/2 max pool, four stages) with average pool and fc head.

    Args:
        block: BasicBlock or Bottleneck.
        layers: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
        num_classes: size of fc (0: no fc, forward returns the pooled features).
        in_channels: input channels.
        se_reduction: if set, every block gets an SEBlock with this reduction (SE-ResNet).
    Input shape: (N, in_channels, H, W), H and W >= 32. Output shape: (N, num_classes).
    forward_features: (N, 512 * block.expansion, H / 32, W / 32).
    Example:
        >>> m = fc.models.resnet18(num_classes=10)
        >>> m(fc.zeros(2, 3, 64, 64)).shape
        (2, 10)
    """

    def __init__(self, block, layers: Sequence[int], num_classes: int = 1000,
                 in_channels: int = 3, se_reduction: Optional[int] = None):
        super().__init__()
        self.num_classes = check_num_classes("ResNet", num_classes)
        self.se_reduction = se_reduction
        self.inplanes = 64
        self.conv1 = Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = BatchNorm2d(64)
        self.maxpool = MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = AdaptiveAvgPool2d((1, 1))
        self.num_features = 512 * block.expansion
        self.fc = Linear(self.num_features, num_classes) if num_classes else Identity()
        init_conv_kaiming(self)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                    BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, self.se_reduction)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, se_reduction=self.se_reduction)
                   for _ in range(1, blocks)]
        return Sequential(*layers)

    def forward_features(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x):
        return self.fc(F.flatten(self.avgpool(x), 1))


@register_model
def resnet18(num_classes: int = 1000, pretrained=None, **kwargs) -> ResNet:
    """ResNet-18 (BasicBlock, 2-2-2-2), 11,689,512 parameters; torchvision keys.
    kwargs: in_channels, se_reduction (see ResNet)."""
    return build_model("resnet18", ResNet, num_classes, pretrained,
                       dict(block=BasicBlock, layers=(2, 2, 2, 2), **kwargs))


@register_model
def resnet34(num_classes: int = 1000, pretrained=None, **kwargs) -> ResNet:
    """ResNet-34 (BasicBlock, 3-4-6-3), 21,797,672 parameters; torchvision keys."""
    return build_model("resnet34", ResNet, num_classes, pretrained,
                       dict(block=BasicBlock, layers=(3, 4, 6, 3), **kwargs))


@register_model
def resnet50(num_classes: int = 1000, pretrained=None, **kwargs) -> ResNet:
    """ResNet-50 (Bottleneck, 3-4-6-3), 25,557,032 parameters; torchvision keys."""
    return build_model("resnet50", ResNet, num_classes, pretrained,
                       dict(block=Bottleneck, layers=(3, 4, 6, 3), **kwargs))


@register_model
def se_resnet18(num_classes: int = 1000, pretrained=None, reduction: int = 16,
                **kwargs) -> ResNet:
    """SE-ResNet-18: resnet18 with an SEBlock(reduction) in every block (keys: resnet18's plus
    layerX.Y.se.fc1/fc2); 11,778,592 parameters with reduction 16."""
    return build_model("se_resnet18", ResNet, num_classes, pretrained,
                       dict(block=BasicBlock, layers=(2, 2, 2, 2), se_reduction=reduction,
                            **kwargs))


@register_model
def se_resnet34(num_classes: int = 1000, pretrained=None, reduction: int = 16,
                **kwargs) -> ResNet:
    """SE-ResNet-34 (SEBlock in every block); 21,958,868 parameters with reduction 16."""
    return build_model("se_resnet34", ResNet, num_classes, pretrained,
                       dict(block=BasicBlock, layers=(3, 4, 6, 3), se_reduction=reduction,
                            **kwargs))


@register_model
def se_resnet50(num_classes: int = 1000, pretrained=None, reduction: int = 16,
                **kwargs) -> ResNet:
    """SE-ResNet-50 (SEBlock in every bottleneck); 28,088,024 parameters with reduction 16,
    the paper's 28.1M."""
    return build_model("se_resnet50", ResNet, num_classes, pretrained,
                       dict(block=Bottleneck, layers=(3, 4, 6, 3), se_reduction=reduction,
                            **kwargs))
