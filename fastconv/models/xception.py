"""Xception (Chollet, "Xception: Deep Learning with Depthwise Separable Convolutions", 2017)
as Keras builds it, with a configurable middle flow.

Entry flow: block1 = two 3x3 'valid' convolutions (32/2, 64), then blocks 2-4, each two
separable 3x3 convolutions (128, 256, 728) and a 3x3/2 max pool, plus a 1x1/2 conv + BN
shortcut. Middle flow: `middle_blocks` blocks (8 in the paper) of three ReLU-separable-BN
layers with identity shortcuts. Exit flow: a block like the entry ones (728, 1024), then two
separable convolutions (1536, 2048) each followed by BN and ReLU; global average pool; fc.
BatchNorm uses Keras' eps 1e-3 and momentum 0.01 (Keras' 0.99). Separable convolutions have
no bias (Keras' use_bias=False).

Keys follow Keras' layer names: block1.conv1 (block1_conv1), block1.conv1_bn,
block2.sepconv1.depthwise / .pointwise, block2.sepconv1_bn, block2.residual,
block2.residual_bn, ..., block14.sepconv2_bn (the middle blocks are block5..block12 for
middle_blocks=8, the exit blocks the next two), fc (Keras' "predictions").
Parameters: 22,855,952 for middle_blocks=8 and 1000 classes, Keras' trainable count (Keras'
total, 22,910,480, adds the 54,528 BatchNorm moving statistics, which are buffers here).
"""
from __future__ import annotations

from fastconv.models._base import ImageClassifier, check_num_classes, init_conv_kaiming
from fastconv.models._registry import build_model, register_model
from fastconv import _shape
from fastconv.nn import functional as F
from fastconv.nn.conv import Conv2d, SeparableConv2d
from fastconv.nn.linear import Identity, Linear
from fastconv.nn.module import Module
from fastconv.nn.norm import BatchNorm2d
from fastconv.nn.pooling import MaxPool2d

__all__ = ["Xception", "XceptionBlock", "xception"]


def _bn(channels: int) -> BatchNorm2d:
    return BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class _Stem(Module):
    """block1: conv 32@3x3/2 'valid', BN, ReLU, conv 64@3x3 'valid', BN, ReLU."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.conv1 = Conv2d(in_channels, 32, 3, stride=2, bias=False)
        self.conv1_bn = _bn(32)
        self.conv2 = Conv2d(32, 64, 3, bias=False)
        self.conv2_bn = _bn(64)

    def forward(self, x):
        x = F.relu(self.conv1_bn(self.conv1(x)))
        return F.relu(self.conv2_bn(self.conv2(x)))


class XceptionBlock(Module):
    """Separable 3x3 convolutions ('same' padding) each preceded by ReLU and followed by BN,
    plus a shortcut.

    With downsample, a 3x3/2 'same' max pool ends the branch and the shortcut is a 1x1/2 conv +
    BN (`residual`, `residual_bn`); otherwise the shortcut is the identity (then
    in_channels must equal the last width).

    Args:
        in_channels: input channels.
        widths: output channels of each separable convolution (sepconv1, sepconv2, ...).
        downsample: halve the resolution (entry/exit blocks).
        first_relu: apply ReLU before sepconv1 (Keras' block2 does not, its input is already
            activated).
    Input shape: (N, in_channels, H, W).
    Output shape: (N, widths[-1], ceil(H / 2), ceil(W / 2)) with downsample, else (N, C, H, W).
    """

    def __init__(self, in_channels: int, widths, downsample: bool, first_relu: bool = True):
        super().__init__()
        self.downsample, self.first_relu = downsample, first_relu
        self.num_convs = len(widths)
        cin = in_channels
        for i, width in enumerate(widths, 1):
            setattr(self, f"sepconv{i}", SeparableConv2d(cin, width, 3, padding="same",
                                                         bias=False))
            setattr(self, f"sepconv{i}_bn", _bn(width))
            cin = width
        if downsample:
            self.pool = MaxPool2d(3, stride=2, padding="same")
            self.residual = Conv2d(in_channels, cin, 1, stride=2, bias=False)
            self.residual_bn = _bn(cin)
        elif in_channels != cin:
            raise ValueError(f"XceptionBlock: an identity shortcut needs in_channels == "
                             f"widths[-1], got {in_channels} and {cin}")

    def forward(self, x):
        y = x
        for i in range(1, self.num_convs + 1):
            if i > 1 or self.first_relu:
                y = F.relu(y)
            y = getattr(self, f"sepconv{i}_bn")(getattr(self, f"sepconv{i}")(y))
        if self.downsample:
            return self.pool(y) + self.residual_bn(self.residual(x))
        return y + x


class _Tail(Module):
    """The exit flow's last convolutions: separable 1536, BN, ReLU, separable 2048, BN, ReLU."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.sepconv1 = SeparableConv2d(in_channels, 1536, 3, padding="same", bias=False)
        self.sepconv1_bn = _bn(1536)
        self.sepconv2 = SeparableConv2d(1536, 2048, 3, padding="same", bias=False)
        self.sepconv2_bn = _bn(2048)

    def forward(self, x):
        x = F.relu(self.sepconv1_bn(self.sepconv1(x)))
        return F.relu(self.sepconv2_bn(self.sepconv2(x)))


class Xception(ImageClassifier):
    """Xception with entry, middle and exit flows (see the module docstring).

    Args:
        num_classes: outputs of fc (0: none; forward returns the 2048 pooled features).
        middle_blocks: number of middle-flow blocks (8 in the paper).
        in_channels: input channels.
    Input shape: (N, in_channels, H, W), H and W >= 32 (Keras asks for >= 71).
    Output shape: (N, num_classes).
    forward_features: (N, 2048, h, w) (10x10 for 299x299 input).
    Example:
        >>> m = fc.models.xception(num_classes=10, middle_blocks=1)
        >>> m(fc.zeros(1, 3, 71, 71)).shape
        (1, 10)
    """

    def __init__(self, num_classes: int = 1000, middle_blocks: int = 8, in_channels: int = 3):
        super().__init__()
        self.num_classes = check_num_classes("Xception", num_classes)
        self.middle_blocks = _shape.check_int("Xception", "middle_blocks", middle_blocks,
                                              minimum=0)
        self.num_features = 2048
        blocks = [_Stem(in_channels),
                  XceptionBlock(64, (128, 128), downsample=True, first_relu=False),
                  XceptionBlock(128, (256, 256), downsample=True),
                  XceptionBlock(256, (728, 728), downsample=True)]
        blocks += [XceptionBlock(728, (728, 728, 728), downsample=False)
                   for _ in range(self.middle_blocks)]
        blocks += [XceptionBlock(728, (728, 1024), downsample=True), _Tail(1024)]
        for i, block in enumerate(blocks, 1):
            self.add_module(f"block{i}", block)
        self.num_blocks = len(blocks)
        self.fc = Linear(self.num_features, num_classes) if num_classes else Identity()
        init_conv_kaiming(self)

    def forward_features(self, x):
        for i in range(1, self.num_blocks + 1):
            x = self._modules[f"block{i}"](x)
        return x

    def forward_head(self, x):
        return self.fc(F.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@register_model
def xception(num_classes: int = 1000, pretrained=None, middle_blocks: int = 8,
             **kwargs) -> Xception:
    """Xception, 22,855,952 parameters with the paper's 8 middle blocks; Keras-style keys.
    kwargs: in_channels."""
    return build_model("xception", Xception, num_classes, pretrained,
                       dict(middle_blocks=middle_blocks, **kwargs))
