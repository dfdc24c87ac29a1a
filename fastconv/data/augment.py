"""Random augmentation transforms (torchvision- and Keras-style) on CHW arrays, and `augment()`,
the ImageDataGenerator-like shortcut that composes them.

Each random transform draws its parameters from a ``numpy.random.Generator``: the ``rng``
argument of the call if given, else the `DataLoader`'s per-sample generator, else its own one
seeded at construction (see `fastconv.data.seeding`). Same generator state in, same image out.
"""
from __future__ import annotations

import math
import numbers
from typing import Dict, Optional, Tuple, Union

import numpy as np

from fastconv.data.geometry import FILL_MODES, INTERPOLATIONS, affine_transform, resize
from fastconv.data.seeding import SeedLike, as_generator, current_generator
from fastconv.data.transforms import Compose, Rescale, SizeLike, Transform, check_chw, size_pair

RangeLike = Union[float, Tuple[float, float]]


class RandomTransform(Transform):
    """Base class of random transforms: subclasses implement ``apply(img, rng)``.

    Args:
        seed: seeds the transform's own generator (int, ``SeedSequence`` or None for fresh
            entropy), used only when the call gets no ``rng`` and no `DataLoader` seed applies.
    """

    def __init__(self, seed=None):
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def __call__(self, img, rng: SeedLike = None) -> np.ndarray:
        rng = as_generator(rng, type(self).__name__)
        if rng is None:
            rng = current_generator()
        return self.apply(img, self._rng if rng is None else rng)

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


def _magnitude(value: float, name: str, who: str) -> float:
    """A number >= 0 (a maximum draw size)."""
    if (not isinstance(value, numbers.Real) or isinstance(value, bool)) or not value >= 0:
        raise ValueError(f"{who}: {name} must be a number >= 0, got {value!r}")
    return float(value)


def _pair(value, name: str, who: str) -> Tuple[float, float]:
    """A (low, high) pair of numbers with low <= high."""
    message = f"{who}: {name} must be a (low, high) pair with low <= high, got {value!r}"
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if not low <= high:
        raise ValueError(message)
    return low, high


def _zoom_pair(zoom_range: RangeLike, who: str) -> Tuple[float, float]:
    """Keras' zoom_range: z → (1 - z, 1 + z), or a (low, high) pair; both factors > 0."""
    if isinstance(zoom_range, numbers.Real):
        z = _magnitude(zoom_range, "zoom_range", who)
        low, high = 1.0 - z, 1.0 + z
    else:
        low, high = _pair(zoom_range, "zoom_range", who)
    if low <= 0:
        raise ValueError(f"{who}: zoom factors must be > 0, got zoom_range={zoom_range!r}")
    return low, high


def _probability(p: float, who: str) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{who}: p must be in [0, 1], got {p!r}")
    return float(p)


class RandomHorizontalFlip(RandomTransform):
    """Flip left-right with probability ``p``.

    Args:
        p: flip probability.
        seed: seed of the transform's own generator.

    Input/Output: (C, H, W), same dtype.

    Example:
        >>> RandomHorizontalFlip(p=1.0)(np.arange(3).reshape(1, 1, 3))[0, 0].tolist()
        [2, 1, 0]
    """

    def __init__(self, p: float = 0.5, seed=None):
        super().__init__(seed)
        self.p = _probability(p, "RandomHorizontalFlip")

    def apply(self, img, rng):
        img = check_chw(img, "RandomHorizontalFlip")
        return np.ascontiguousarray(img[:, :, ::-1]) if rng.random() < self.p else img


class RandomVerticalFlip(RandomTransform):
    """Flip top-bottom with probability ``p``.

    Args:
        p: flip probability.
        seed: seed of the transform's own generator.

    Input/Output: (C, H, W), same dtype.

    Example:
        >>> RandomVerticalFlip(p=1.0)(np.arange(3).reshape(1, 3, 1))[0, :, 0].tolist()
        [2, 1, 0]
    """

    def __init__(self, p: float = 0.5, seed=None):
        super().__init__(seed)
        self.p = _probability(p, "RandomVerticalFlip")

    def apply(self, img, rng):
        img = check_chw(img, "RandomVerticalFlip")
        return np.ascontiguousarray(img[:, ::-1, :]) if rng.random() < self.p else img


class RandomResizedCrop(RandomTransform):
    """Crop a random area and aspect ratio, then resize to ``size`` (torchvision's algorithm).

    Up to 10 tries draw an area fraction from ``scale`` and a log-uniform aspect ratio
    (width / height) from ``ratio``; the first crop that fits is taken at a uniform position,
    otherwise the largest centred crop within ``ratio``. The crop is resized with Pillow's
    bilinear filter (`geometry.resize`).

    Args:
        size: output (height, width), or an int for a square.
        scale: (low, high) range of the crop's area as a fraction of the image's.
        ratio: (low, high) range of the crop's aspect ratio.
        seed: seed of the transform's own generator.

    Input: (C, H, W). Output: (C, *size) float32.

    Example:
        >>> RandomResizedCrop(8, seed=0)(np.zeros((3, 20, 30), np.float32)).shape
        (3, 8, 8)
    """

    def __init__(self, size: SizeLike, scale: Tuple[float, float] = (0.08, 1.0),
                 ratio: Tuple[float, float] = (3 / 4, 4 / 3), seed=None):
        super().__init__(seed)
        self.size = size_pair(size, "RandomResizedCrop")
        self.scale = _pair(scale, "scale", "RandomResizedCrop")
        self.ratio = _pair(ratio, "ratio", "RandomResizedCrop")
        if not 0 < self.scale[1] <= 1 or self.scale[0] <= 0 or self.ratio[0] <= 0:
            raise ValueError(f"RandomResizedCrop: need 0 < scale <= 1 and ratio > 0, got "
                             f"scale={scale!r}, ratio={ratio!r}")

    def get_params(self, rng: np.random.Generator, height: int, width: int
                   ) -> Tuple[int, int, int, int]:
        """Draw a crop (top, left, crop_height, crop_width) for an image of the given size."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
                return int(top), int(left), h, w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            w, h = int(round(height * self.ratio[1])), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def apply(self, img, rng):
        img = check_chw(img, "RandomResizedCrop")
        top, left, h, w = self.get_params(rng, *img.shape[1:])
        return resize(img[:, top:top + h, left:left + w], self.size)


class RandomAffine(RandomTransform):
    """Keras ImageDataGenerator's geometric augmentation: random rotation, shifts, shear and
    zoom in one inverse-mapped warp (`geometry.affine_transform`).

    Parameters are drawn as in Keras: angle ~ U(-rotation_range, rotation_range) degrees; shifts
    ~ U(-r, r), where r is a fraction of the height/width if < 1 and pixels otherwise; shear ~
    U(-shear_range, shear_range) degrees; zoom_y and zoom_x drawn independently from
    [1 - zoom_range, 1 + zoom_range] (or the given (low, high); > 1 zooms out).

    Args:
        rotation_range: maximum rotation in degrees.
        width_shift_range, height_shift_range: maximum shift (fraction if < 1, else pixels).
        shear_range: maximum shear angle in degrees (< 90).
        zoom_range: a number z for [1 - z, 1 + z], or a (low, high) pair; low > 0.
        fill_mode: 'constant', 'nearest', 'reflect' or 'wrap' (how outside pixels are read).
        cval: fill value for 'constant'.
        interpolation: 'bilinear' or 'nearest'.
        seed: seed of the transform's own generator.

    Input: (C, H, W). Output: (C, H, W) float32.

    Example:
        >>> t = RandomAffine(rotation_range=20, zoom_range=0.1, fill_mode="reflect", seed=0)
        >>> t(np.zeros((3, 16, 16), np.float32)).shape
        (3, 16, 16)
    """

    def __init__(self, rotation_range: float = 0.0, width_shift_range: float = 0.0,
                 height_shift_range: float = 0.0, shear_range: float = 0.0,
                 zoom_range: RangeLike = 0.0, fill_mode: str = "nearest", cval: float = 0.0,
                 interpolation: str = "bilinear", seed=None):
        super().__init__(seed)
        who = "RandomAffine"
        self.rotation_range = _magnitude(rotation_range, "rotation_range", who)
        self.width_shift_range = _magnitude(width_shift_range, "width_shift_range", who)
        self.height_shift_range = _magnitude(height_shift_range, "height_shift_range", who)
        self.shear_range = _magnitude(shear_range, "shear_range", who)
        if self.shear_range >= 90:
            raise ValueError(f"{who}: shear_range must be < 90 degrees, got {shear_range!r}")
        self.zoom_range = _zoom_pair(zoom_range, who)
        if fill_mode not in FILL_MODES:
            raise ValueError(f"{who}: fill_mode must be one of {FILL_MODES}, got {fill_mode!r}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"{who}: interpolation must be one of {INTERPOLATIONS}, got "
                             f"{interpolation!r}")
        self.fill_mode, self.cval, self.interpolation = fill_mode, float(cval), interpolation

    def get_params(self, rng: np.random.Generator, height: int, width: int) -> Dict[str, float]:
        """Draw the keyword arguments of `geometry.affine_transform` for an image of this size
        (angle, shift_y, shift_x, shear, zoom_y, zoom_x; always six draws, in that order)."""
        def pixels(r, size):
            return r * size if r < 1 else r
        max_dy = pixels(self.height_shift_range, height)
        max_dx = pixels(self.width_shift_range, width)
        return {"angle": rng.uniform(-self.rotation_range, self.rotation_range),
                "shift_y": rng.uniform(-max_dy, max_dy),
                "shift_x": rng.uniform(-max_dx, max_dx),
                "shear": rng.uniform(-self.shear_range, self.shear_range),
                "zoom_y": rng.uniform(*self.zoom_range),
                "zoom_x": rng.uniform(*self.zoom_range)}

    def apply(self, img, rng):
        img = check_chw(img, "RandomAffine")
        params = self.get_params(rng, *img.shape[1:])
        return affine_transform(img, **params, fill_mode=self.fill_mode, cval=self.cval,
                                interpolation=self.interpolation)


class RandomBrightness(RandomTransform):
    """Multiply by a random factor ~ U(low, high) (Keras' ``brightness_range``), then clip.

    Args:
        brightness_range: (low, high) factor range, low >= 0; e.g. (0.8, 1.2).
        max_value: the result is clipped to [0, max_value] (1.0 for images from `ToFloat`,
            255 for raw 8-bit values); None disables clipping.
        seed: seed of the transform's own generator.

    Input/Output: (C, H, W) float32.

    Example:
        >>> RandomBrightness((2.0, 2.0))(np.full((1, 1, 1), 0.7, np.float32)).item()
        1.0
    """

    def __init__(self, brightness_range: Tuple[float, float] = (0.8, 1.2),
                 max_value: Optional[float] = 1.0, seed=None):
        super().__init__(seed)
        self.brightness_range = _pair(brightness_range, "brightness_range", "RandomBrightness")
        if self.brightness_range[0] < 0:
            raise ValueError(f"RandomBrightness: brightness factors must be >= 0, got "
                             f"brightness_range={brightness_range!r}")
        self.max_value = max_value

    def apply(self, img, rng):
        img = check_chw(img, "RandomBrightness")
        out = img.astype(np.float32) * np.float32(rng.uniform(*self.brightness_range))
        return out if self.max_value is None else np.clip(out, 0, self.max_value, out=out)


def augment(rotation_range: float = 0.0, width_shift_range: float = 0.0,
            height_shift_range: float = 0.0, shear_range: float = 0.0,
            zoom_range: RangeLike = 0.0, fill_mode: str = "nearest", cval: float = 0.0,
            horizontal_flip: bool = False, vertical_flip: bool = False,
            brightness_range: Optional[Tuple[float, float]] = None,
            rescale: Optional[float] = None, interpolation: str = "bilinear",
            seed=None) -> Compose:
    """Keras ImageDataGenerator's augmentation options as a `Compose` of fastconv transforms.

    Order as Keras' ``random_transform`` then ``standardize``: `RandomAffine` (only when a
    geometric range is non-zero), flips, `RandomBrightness` (clipping to [0, 1]), `Rescale`.
    Keras' default ``fill_mode='nearest'`` is kept.

    Args:
        rotation_range, width_shift_range, height_shift_range, shear_range, zoom_range,
            fill_mode, cval, interpolation: as `RandomAffine`.
        horizontal_flip, vertical_flip: add a random flip with probability 0.5.
        brightness_range: (low, high) for `RandomBrightness`, or None.
        rescale: a factor to multiply by at the end (e.g. 1/255), or None.
        seed: seeds the transforms' own generators (each its own child of this seed).

    Returns:
        `Compose` taking and returning CHW arrays.

    Example:
        >>> t = augment(rotation_range=15, horizontal_flip=True, seed=0)
        >>> t(np.zeros((1, 8, 8), np.float32)).shape
        (1, 8, 8)
    """
    seeds = iter(np.random.SeedSequence(seed).spawn(4))
    steps = []
    if any(r != 0 for r in (rotation_range, width_shift_range, height_shift_range,
                            shear_range)) or _zoom_pair(zoom_range, "augment") != (1.0, 1.0):
        steps.append(RandomAffine(rotation_range, width_shift_range, height_shift_range,
                                  shear_range, zoom_range, fill_mode, cval, interpolation,
                                  seed=next(seeds)))
    if horizontal_flip:
        steps.append(RandomHorizontalFlip(seed=next(seeds)))
    if vertical_flip:
        steps.append(RandomVerticalFlip(seed=next(seeds)))
    if brightness_range is not None:
        steps.append(RandomBrightness(brightness_range, seed=next(seeds)))
    if rescale is not None:
        steps.append(Rescale(rescale))
    return Compose(steps)
