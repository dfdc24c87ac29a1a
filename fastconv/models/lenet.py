"""LeNet-5 (LeCun, Bottou, Bengio, Haffner, "Gradient-Based Learning Applied to Document
Recognition", 1998), the classic form: tanh activations and 2x2 average-pool subsampling.

conv1 6@5x5 -> tanh -> pool 2x2 -> conv2 16@5x5 -> tanh -> pool 2x2 -> fc1 400->120 -> tanh ->
fc2 120->84 -> tanh -> fc3 84->num_classes, on 32x32 input. Simplifications of the paper, as in
most textbook versions: plain average pooling (the paper's subsampling layers have a trainable
coefficient and bias per map), every C3 map sees all six S2 maps (the paper's connection table
uses 60 of the 96 pairs), and fc3 is a Linear instead of Euclidean RBF units.
61,706 parameters for 10 classes.
"""
from __future__ import annotations

from fastconv.models._base import ImageClassifier, check_num_classes
from fastconv.models._registry import build_model, register_model
from fastconv.nn import functional as F
from fastconv.nn.conv import Conv2d
from fastconv.nn.linear import Identity, Linear
from fastconv.nn.pooling import AvgPool2d

__all__ = ["LeNet5", "lenet5"]


class LeNet5(ImageClassifier):
    """LeNet-5 with tanh and average pooling (see the module docstring).

    Args:
        num_classes: outputs of fc3 (0: none; forward returns the 84 features of fc2).
        in_channels: input channels (1 for grey digits).
    Input shape: (N, in_channels, 32, 32). Output shape: (N, num_classes).
    forward_features: (N, 16, 5, 5).
    Example:
        >>> m = fc.models.lenet5()
        >>> m(fc.zeros(4, 1, 32, 32)).shape
        (4, 10)
    """
    classifier_name = "fc3"

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.num_classes = check_num_classes("LeNet5", num_classes)
        self.num_features = 84
        self.conv1 = Conv2d(in_channels, 6, 5)
        self.pool1 = AvgPool2d(2)
        self.conv2 = Conv2d(6, 16, 5)
        self.pool2 = AvgPool2d(2)
        self.fc1 = Linear(16 * 5 * 5, 120)
        self.fc2 = Linear(120, 84)
        self.fc3 = Linear(84, num_classes) if num_classes else Identity()

    def forward_features(self, x):
        x = self.pool1(F.tanh(self.conv1(x)))
        return self.pool2(F.tanh(self.conv2(x)))

    def forward_head(self, x):
        x = F.tanh(self.fc1(F.flatten(x, 1)))
        return self.fc3(F.tanh(self.fc2(x)))


@register_model
def lenet5(num_classes: int = 10, pretrained=None, **kwargs) -> LeNet5:
    """LeNet-5 for 32x32 grey images, 61,706 parameters (10 classes). kwargs: in_channels."""
    return build_model("lenet5", LeNet5, num_classes, pretrained, kwargs)
