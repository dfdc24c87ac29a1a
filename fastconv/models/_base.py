"""`ImageClassifier`, the base of every zoo model (timm's model interface), and the weight
initialisers the families share (torchvision's).

A model is a backbone (`forward_features`) and a head (`forward_head`: pooling, dropout and the
classifier). The classifier is the last Linear, found at the dotted attribute `classifier_name`
(`"fc"`, `"classifier.6"`, `"_fc"`, ...) with `num_features` inputs, so `reset_classifier(n)` can
swap it for transfer learning without changing any other checkpoint key.
"""
from __future__ import annotations

import math

from fastconv import _shape
from fastconv.nn import init
from fastconv.nn.conv import Conv2d
from fastconv.nn.linear import Identity, Linear
from fastconv.nn.module import Module
from fastconv.nn.norm import _BatchNorm

__all__ = ["ImageClassifier", "check_num_classes", "init_conv_kaiming", "init_linear_normal"]


def check_num_classes(op: str, num_classes) -> int:
    """num_classes as an int >= 0 (0: no classifier, the head returns the pooled features)."""
    return _shape.check_int(op, "num_classes", num_classes, minimum=0)


def _parent(root: Module, dotted: str):
    *path, name = dotted.split(".")
    module = root
    for part in path:
        module = module._modules[part]
    return module, name


class ImageClassifier(Module):
    """Base of the zoo models: forward(x) = forward_head(forward_features(x)).

    Subclasses set `classifier_name` (dotted attribute of the final Linear), `num_features` (its
    input size) and `num_classes`, implement `forward_features` and `forward_head`, and may
    override `init_classifier` (how a fresh classifier is initialised). The model's
    preprocessing config, attached by its constructor, is `pretrained_cfg` (alias `default_cfg`).
    """
    classifier_name = "fc"
    pretrained_cfg: dict = {}

    @property
    def default_cfg(self) -> dict:
        return self.pretrained_cfg

    def forward_features(self, x):
        raise NotImplementedError(f"{type(self).__name__} must implement forward_features()")

    def forward_head(self, x):
        raise NotImplementedError(f"{type(self).__name__} must implement forward_head()")

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> Module:
        """The final classification layer (a Linear, or Identity when num_classes is 0)."""
        parent, name = _parent(self, self.classifier_name)
        return parent._modules[name]

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a freshly initialised Linear(num_features, num_classes)
        (trainable even when the rest of the model is frozen); num_classes=0 puts an Identity
        there, so that forward() returns the pooled features (N, num_features).

        Example:
            >>> m = fc.models.resnet18().freeze()
            >>> m.reset_classifier(2)  # the new head is trainable
            >>> m.num_parameters(trainable_only=True)
            1026
        """
        n = check_num_classes(f"{type(self).__name__}.reset_classifier", num_classes)
        parent, name = _parent(self, self.classifier_name)
        parent.add_module(name, self._new_classifier(n))  # keeps the layer's place in the order
        self.num_classes = n

    def _new_classifier(self, num_classes: int) -> Module:
        if num_classes == 0:
            return Identity()
        fc = Linear(self.num_features, num_classes)
        self.init_classifier(fc)
        return fc

    def init_classifier(self, fc: Linear) -> None:
        """Initialise a new classifier; the default keeps Linear's own (PyTorch's) init."""

    def classifier_keys(self):
        """Checkpoint-key prefixes of the layers that depend on num_classes."""
        return (self.classifier_name + ".",)

    def adapt_checkpoint(self, state: dict) -> dict:
        """Hook to drop checkpoint entries this configuration has no place for (e.g. GoogLeNet's
        auxiliary classifiers when they are off); the default keeps everything."""
        return state


def init_conv_kaiming(model: Module) -> None:
    """torchvision's CNN initialisation: every Conv2d kaiming-normal (fan_out, ReLU gain) with a
    zero bias, every BatchNorm weight 1 and bias 0."""
    for m in model.modules():
        if isinstance(m, Conv2d):
            init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                init.zeros_(m.bias)
        elif isinstance(m, _BatchNorm) and m.affine:
            init.ones_(m.weight)
            init.zeros_(m.bias)


def init_linear_normal(model: Module, std: float = 0.01) -> None:
    """Every Linear normal(0, std) with a zero bias (torchvision's VGG and MobileNetV2)."""
    for m in model.modules():
        if isinstance(m, Linear):
            init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                init.zeros_(m.bias)


def init_linear_uniform_fan_out(fc: Linear) -> None:
    """uniform(+-1/sqrt(out_features)), zero bias (torchvision's EfficientNet classifier)."""
    bound = 1.0 / math.sqrt(fc.out_features)
    init.uniform_(fc.weight, -bound, bound)
    init.zeros_(fc.bias)
