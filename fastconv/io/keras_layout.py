"""Converting Keras weights (as fastconv.io reads them from .h5 files) to torch/fastconv layout.

Keras stores channels last: a convolution kernel is (kh, kw, in, out), a depthwise kernel
(kh, kw, in, multiplier), a Dense kernel (in, out). torch and fastconv store (out, in, kh, kw),
(in * multiplier, 1, kh, kw) and (out, in). BatchNormalization's gamma / beta / moving_mean /
moving_variance are torch's weight / bias / running_mean / running_var.

One conversion needs knowledge the weights do not carry: a Dense layer right after Flatten.
Keras flattens (h, w, c) feature maps in h, w, c order, torch and fastconv flatten (c, h, w) in
c, h, w order, so that Dense kernel's rows must be permuted; pass the pre-flatten shape (h, w, c).

Example:
    >>> import numpy as np
    >>> k = np.zeros((3, 3, 16, 32), np.float32)          # Keras Conv2D kernel
    >>> conv_kernel_to_torch(k).shape
    (32, 16, 3, 3)
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np

# Keras variable name -> torch parameter or buffer name (kernels are handled apart).
TORCH_NAMES = {"bias": "bias", "gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
               "moving_variance": "running_var", "embeddings": "weight"}


def conv_kernel_to_torch(kernel: np.ndarray) -> np.ndarray:
    """A Keras ConvND kernel (*spatial, in, out) as torch's (out, in, *spatial).

    The same permutation turns a Keras ConvNDTranspose kernel (*spatial, out, in) into torch's
    ConvTransposeNd (in, out, *spatial), and a Dense kernel (in, out) into Linear's (out, in).
    """
    kernel = np.asarray(kernel)
    if kernel.ndim < 2:
        raise ValueError(f"conv_kernel_to_torch: kernel has shape {kernel.shape}, expected "
                         "(*spatial, in, out)")
    return np.ascontiguousarray(np.moveaxis(kernel, (-1, -2), (0, 1)))


def depthwise_kernel_to_torch(kernel: np.ndarray) -> np.ndarray:
    """A Keras DepthwiseConvND kernel (*spatial, in, multiplier) as torch's grouped-convolution
    weight (in * multiplier, 1, *spatial); output channel c * multiplier + m in both."""
    kernel = np.asarray(kernel)
    if kernel.ndim < 3:
        raise ValueError(f"depthwise_kernel_to_torch: kernel has shape {kernel.shape}, expected "
                         "(*spatial, in, multiplier)")
    flat = kernel.reshape(*kernel.shape[:-2], -1)
    return np.ascontiguousarray(np.moveaxis(flat, -1, 0)[:, None])


def dense_kernel_to_torch(kernel: np.ndarray,
                          flatten_shape: Optional[Sequence[int]] = None) -> np.ndarray:
    """A Keras Dense kernel (in, out) as torch's Linear weight (out, in).

    Args:
        kernel: the (in, out) kernel.
        flatten_shape: for a Dense layer fed by Flatten, the channels-last shape (h, w, c) that
            was flattened (any (*spatial, c)); the rows are permuted from h, w, c order to
            torch's c, h, w order.
    """
    kernel = np.asarray(kernel)
    if kernel.ndim != 2:
        raise ValueError(f"dense_kernel_to_torch: kernel has shape {kernel.shape}, expected "
                         "(in, out)")
    if flatten_shape is not None:
        flatten_shape = tuple(int(n) for n in flatten_shape)
        if not flatten_shape or math.prod(flatten_shape) != kernel.shape[0]:
            raise ValueError(f"dense_kernel_to_torch: flatten_shape {flatten_shape} does not "
                             f"have the kernel's {kernel.shape[0]} input features")
        n = len(flatten_shape)
        kernel = kernel.reshape(*flatten_shape, -1).transpose(n - 1, *range(n - 1), n)
        kernel = kernel.reshape(-1, kernel.shape[-1])
    return np.ascontiguousarray(kernel.T)


def keras_to_torch_layout(weights: Mapping[str, np.ndarray],
                          flatten_shapes: Optional[Mapping[str, Sequence[int]]] = None) -> dict:
    """Keras weights keyed "<layer>/<variable>" (as fastconv.io.load reads .h5 files) as a torch
    state dict keyed "<layer>.<parameter>".

    Args:
        weights: "<layer>/<variable>" -> Keras array.
        flatten_shapes: Keras layer name -> pre-flatten (h, w, c) shape, for each Dense layer
            that follows a Flatten (see dense_kernel_to_torch).

    Returns:
        A dict in the order of `weights`: ``kernel`` -> ``weight`` (transposed for its rank),
        ``depthwise_kernel`` -> ``weight``, BatchNormalization variables -> ``weight``, ``bias``,
        ``running_mean``, ``running_var`` (and a 0-d int64 ``num_batches_tracked`` of 0, as torch
        and fastconv keep one). A SeparableConv layer becomes
        ``<layer>.depthwise.weight``, ``<layer>.pointwise.weight`` and ``<layer>.pointwise.bias``.
        Other variables keep their name. "/" in nested layer names becomes ".".
    """
    flatten_shapes = dict(flatten_shapes or {})
    layers: dict = {}
    for key in weights:
        if "/" not in key:
            raise ValueError(f"keras_to_torch_layout: key {key!r} is not '<layer>/<variable>'")
        layer, var = key.rsplit("/", 1)
        layers.setdefault(layer, set()).add(var)
    for layer in flatten_shapes:
        if "kernel" not in layers.get(layer, ()):
            raise ValueError(f"keras_to_torch_layout: flatten_shapes names {layer!r}, which is "
                             "not a layer with a kernel in the weights")
    out = {}
    for key, value in weights.items():
        layer, var = key.rsplit("/", 1)
        prefix, separable = layer.replace("/", "."), "pointwise_kernel" in layers[layer]
        if var == "kernel" and np.ndim(value) == 2:
            out[f"{prefix}.weight"] = dense_kernel_to_torch(value, flatten_shapes.get(layer))
        elif var == "kernel":
            if layer in flatten_shapes:
                raise ValueError(f"keras_to_torch_layout: flatten_shapes names {layer!r}, whose "
                                 f"kernel has shape {np.shape(value)}, not a Dense (in, out) one")
            out[f"{prefix}.weight"] = conv_kernel_to_torch(value)
        elif var == "depthwise_kernel":
            name = "depthwise.weight" if separable else "weight"
            out[f"{prefix}.{name}"] = depthwise_kernel_to_torch(value)
        elif var == "pointwise_kernel":
            out[f"{prefix}.pointwise.weight"] = conv_kernel_to_torch(value)
        elif var == "bias" and separable:
            out[f"{prefix}.pointwise.bias"] = np.asarray(value)
        else:
            out[f"{prefix}.{TORCH_NAMES.get(var, var)}"] = np.asarray(value)
        if var == "moving_variance":                 # torch's BatchNorm counts its steps too
            out[f"{prefix}.num_batches_tracked"] = np.zeros((), np.int64)
    return out
