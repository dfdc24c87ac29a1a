"""Neural-network building blocks (PyTorch's torch.nn, with Keras conveniences).

    import fastconv.nn as nn
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding="same"), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 16 * 16, 10))

`functional` holds the ops (arrays or Tensors in), `grad` the kernels' gradients on arrays,
`init` the initialisers.
"""
from fastconv.nn import functional, grad, init
from fastconv.nn.activation import LeakyReLU, LogSoftmax, ReLU, ReLU6, Sigmoid, SiLU, Softmax, Tanh
from fastconv.nn.container import ModuleDict, ModuleList, Sequential
from fastconv.nn.conv import Conv2d, DepthwiseConv2d, SeparableConv2d
from fastconv.nn.linear import Dropout, Flatten, Identity, Linear
from fastconv.nn.loss import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, NLLLoss
from fastconv.nn.module import IncompatibleKeys, Module, Parameter
from fastconv.nn.norm import BatchNorm1d, BatchNorm2d, LocalResponseNorm
from fastconv.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, GlobalAvgPool2d, MaxPool2d
from fastconv.nn import utils  # noqa: E402

__all__ = ["functional", "grad", "init", "utils", "Module", "Parameter", "IncompatibleKeys", "Conv2d",
           "DepthwiseConv2d", "SeparableConv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
           "GlobalAvgPool2d", "BatchNorm1d", "BatchNorm2d", "LocalResponseNorm", "Linear",
           "Flatten", "Dropout", "Identity", "ReLU", "ReLU6", "LeakyReLU", "SiLU", "Sigmoid",
           "Tanh", "Softmax", "LogSoftmax", "Sequential", "ModuleList", "ModuleDict",
           "CrossEntropyLoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss", "MSELoss"]
