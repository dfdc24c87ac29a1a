"""fastconv: fast 2-D convolution and pooling kernels (C++ and CUDA) with a small
Keras/PyTorch-style deep-learning layer on top.

    import fastconv as fc
    import fastconv.nn.functional as F
"""
from fastconv._backend import cuda_available, num_threads, set_num_threads
from fastconv._random import manual_seed
from fastconv.autograd import (Function, Tensor, cat, concat, enable_grad, is_grad_enabled,
                               maximum, minimum, no_grad, ones, stack, tensor, where, zeros)
from fastconv.io import load, save
from fastconv.amp import GradScaler, autocast
from fastconv import backends, data, models, nn, optim, train, transfer  # noqa: E402  (fc.nn, fc.models ...)

__version__ = "0.1.0"

__all__ = ["cuda_available", "num_threads", "set_num_threads", "__version__", "manual_seed",
           "Tensor", "Function", "tensor", "zeros", "ones", "concat", "cat", "stack", "where",
           "maximum", "minimum", "no_grad", "enable_grad", "is_grad_enabled", "load", "save",
           "autocast", "GradScaler"]
