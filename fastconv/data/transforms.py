"""Deterministic image transforms and their base class.

Layout: every transform except `ToFloat` takes and returns a **CHW** numpy array (channels,
height, width), normally float32 in [0, 1], which is what a model's NCHW batch is made of.
`ToFloat` is the entry point for decoded images: it turns an HWC (or HW) uint8 array or a PIL
image into CHW float32 in [0, 1]. A typical pipeline:

    Compose([ToFloat(), RandomResizedCrop(224), RandomHorizontalFlip(),
             Normalize(IMAGENET_MEAN, IMAGENET_STD)])

All transforms are called as ``t(img, rng=None)``; deterministic ones ignore ``rng``, random ones
(`fastconv.data.augment`) draw from it (see `fastconv.data.seeding` for where the numbers come
from when it is None).
"""
from __future__ import annotations

from typing import Callable, Sequence, Tuple, Union

import numpy as np

from fastconv.data.geometry import resize
from fastconv.data.seeding import SeedLike

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ITU-R 601-2 luma, as Pillow's convert("L")
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

SizeLike = Union[int, Tuple[int, int]]


def check_chw(img, who: str) -> np.ndarray:
    """``img`` as an array, or a ValueError naming ``who`` when it is not 3-D (C, H, W)."""
    img = np.asarray(img)
    if img.ndim != 3:
        raise ValueError(f"{who}: expected a CHW image array (channels, height, width), got "
                         f"shape {img.shape}; convert HWC images with ToFloat() first")
    return img


def size_pair(size: SizeLike, who: str) -> Tuple[int, int]:
    """An int or (height, width) pair of positive ints as a (height, width) tuple."""
    pair = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in pair):
        raise ValueError(f"{who}: size must be a positive int or a (height, width) pair of "
                         f"positive ints, got {size!r}")
    return int(pair[0]), int(pair[1])


class Transform:
    """Base class of fastconv transforms: ``__call__(img, rng=None)`` returns the new image.

    Subclasses implement ``__call__``; `Compose` passes its ``rng`` to every `Transform` it holds
    (plain callables are called with the image only).
    """

    def __call__(self, img: np.ndarray, rng: SeedLike = None) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class Compose(Transform):
    """Apply transforms in order.

    Args:
        transforms: sequence of `Transform`s or plain callables ``f(img) -> img``.

    Example:
        >>> t = Compose([ToFloat(), Normalize(IMAGENET_MEAN, IMAGENET_STD)])
        >>> t(np.zeros((4, 4, 3), np.uint8)).shape
        (3, 4, 4)
    """

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)
        for i, t in enumerate(self.transforms):
            if not callable(t):
                raise TypeError(f"Compose: transforms[{i}] must be callable, got "
                                f"{type(t).__name__}")

    def __call__(self, img, rng: SeedLike = None):
        for t in self.transforms:
            img = t(img, rng) if isinstance(t, Transform) else t(img)
        return img

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])"


class ToFloat(Transform):
    """HWC (or HW) image → CHW float32; uint8 is scaled to [0, 1], floats are kept as they are.

    Input: an HWC or HW numpy array (uint8 or float) or a PIL image.
    Output: float32 array (C, H, W) (C = 1 for HW input).

    Example:
        >>> ToFloat()(np.full((2, 2, 3), 255, np.uint8)).max().item()
        1.0
    """

    def __call__(self, img, rng: SeedLike = None) -> np.ndarray:
        arr = np.asarray(img)
        if arr.ndim not in (2, 3):
            raise ValueError(f"ToFloat: expected an HWC or HW image, got shape {arr.shape}")
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.dtype == np.uint8:
            out = arr.astype(np.float32) / np.float32(255)
        elif np.issubdtype(arr.dtype, np.floating):
            out = arr.astype(np.float32)
        else:
            raise TypeError(f"ToFloat: expected a uint8 or floating-point image, got dtype "
                            f"{arr.dtype}")
        return np.ascontiguousarray(out.transpose(2, 0, 1))


ToArray = ToFloat


class Rescale(Transform):
    """Multiply by a constant (Keras' ``rescale``), returning float32.

    Args:
        factor: the multiplier, e.g. 1/255.

    Example:
        >>> Rescale(0.5)(np.ones((1, 2, 2))).dtype
        dtype('float32')
    """

    def __init__(self, factor: float):
        self.factor = float(factor)

    def __call__(self, img, rng: SeedLike = None) -> np.ndarray:
        return np.asarray(img, dtype=np.float32) * np.float32(self.factor)


class Resize(Transform):
    """Resize with Pillow's antialiased bilinear filter (see `geometry.resize`; torchvision's
    ``Resize(antialias=True)`` computes the same).

    Args:
        size: (height, width), or an int: the shorter side becomes ``size`` and the longer one
            ``int(size * long / short)``, as torchvision.

    Input: (C, H, W). Output: (C, out_h, out_w) float32.

    Example:
        >>> Resize(4)(np.zeros((3, 8, 12), np.float32)).shape
        (3, 4, 6)
    """

    def __init__(self, size: SizeLike):
        size_pair(size, "Resize")
        self.size = size

    def output_size(self, height: int, width: int) -> Tuple[int, int]:
        """The (height, width) an image of the given size is resized to."""
        if not isinstance(self.size, (int, np.integer)):
            return size_pair(self.size, "Resize")
        short, long = sorted((height, width))
        other = int(self.size * long / short)
        return (self.size, other) if height <= width else (other, self.size)

    def __call__(self, img, rng: SeedLike = None) -> np.ndarray:
        img = check_chw(img, "Resize")
        return resize(img, self.output_size(*img.shape[1:]))


class CenterCrop(Transform):
    """Crop the centre (top = round((H - h) / 2), left likewise, as torchvision).

    Args:
        size: (height, width) or an int for a square; must fit inside the image.

    Input: (C, H, W). Output: (C, h, w), same dtype.

    Example:
        >>> CenterCrop(2)(np.arange(16).reshape(1, 4, 4))[0].tolist()
        [[5, 6], [9, 10]]
    """

    def __init__(self, size: SizeLike):
        self.size = size_pair(size, "CenterCrop")

    def __call__(self, img, rng: SeedLike = None) -> np.ndarray:
        img = check_chw(img, "CenterCrop")
        (h, w), (height, width) = self.size, img.shape[1:]
        if h > height or w > width:
            raise ValueError(f"CenterCrop: crop size {self.size} is larger than the image "
                             f"({height}, {width})")
        top, left = int(round((height - h) / 2)), int(round((width - w) / 2))
        return np.ascontiguousarray(img[:, top:top + h, left:left + w])


class Normalize(Transform):
    """``(img - mean[c]) / std[c]`` per channel, in float32.

    Args:
        mean: per-channel means (a sequence of length C, or one number for all channels).
        std: per-channel standard deviations, all non-zero.

    Input: (C, H, W). Output: (C, H, W) float32.

    Example:
        >>> Normalize([0.5], [0.5])(np.ones((1, 1, 2), np.float32)).tolist()
        [[[1.0, 1.0]]]
    """

    def __init__(self, mean: Union[float, Sequence[float]], std: Union[float, Sequence[float]]):
        self.mean = np.atleast_1d(np.asarray(mean, np.float32))
        self.std = np.atleast_1d(np.asarray(std, np.float32))
        if self.mean.ndim != 1 or self.std.ndim != 1:
            raise ValueError(f"Normalize: mean and std must be numbers or 1-D sequences, got "
                             f"shapes {self.mean.shape} and {self.std.shape}")
        if np.any(self.std == 0):
            raise ValueError(f"Normalize: std must be non-zero, got {self.std.tolist()}")

    def __call__(self, img, rng: SeedLike = None) -> np.ndarray:
        img = check_chw(img, "Normalize")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if values.size not in (1, img.shape[0]):
                raise ValueError(f"Normalize: {name} has {values.size} values but the image "
                                 f"has {img.shape[0]} channels")
        mean, std = self.mean[:, None, None], self.std[:, None, None]
        return (img.astype(np.float32, copy=False) - mean) / std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class Grayscale(Transform):
    """Convert to grey (Pillow's luma ``0.299 R + 0.587 G + 0.114 B`` for 3 channels; one channel
    is kept) and repeat it to ``num_output_channels`` — e.g. to feed grey data to an RGB model.

    Args:
        num_output_channels: 1 or 3.

    Input: (1, H, W) or (3, H, W). Output: (num_output_channels, H, W) float32.

    Example:
        >>> Grayscale(3)(np.ones((1, 2, 2), np.float32)).shape
        (3, 2, 2)
    """

    def __init__(self, num_output_channels: int = 3):
        if num_output_channels not in (1, 3):
            raise ValueError(f"Grayscale: num_output_channels must be 1 or 3, got "
                             f"{num_output_channels!r}")
        self.num_output_channels = num_output_channels

    def __call__(self, img, rng: SeedLike = None) -> np.ndarray:
        img = check_chw(img, "Grayscale").astype(np.float32, copy=False)
        if img.shape[0] == 3:
            img = np.tensordot(np.asarray(LUMA_WEIGHTS, np.float32), img, axes=1)[None]
        elif img.shape[0] != 1:
            raise ValueError(f"Grayscale: expected 1 or 3 channels, got {img.shape[0]}")
        return np.repeat(img, self.num_output_channels, axis=0)
