"""Small real image datasets that ship inside installed packages (no network): scikit-learn's
handwritten digits and scikit-image's LFW face / non-face subset, as NCHW float32 arrays split
into stratified train and test sets."""
from __future__ import annotations

import importlib
from typing import NamedTuple, Optional, Tuple

import numpy as np

from fastconv.data.dataset import stratified_split
from fastconv.data.geometry import resize
from fastconv.data.transforms import SizeLike, size_pair


class TrainTest(NamedTuple):
    """A train/test split: images (N, C, H, W) float32 in [0, 1], labels (N,) int64, and the
    class names indexed by label. Unpacks like a tuple or reads by name."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: Tuple[str, ...]


def _require(module: str, package: str, who: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{who} needs {package}, which is not installed: pip install "
                          f"\"fastconv[data]\" (or: pip install {package})") from None


def _split(images: np.ndarray, labels: np.ndarray, classes: Tuple[str, ...], test_size: float,
           seed: Optional[int], size: Optional[SizeLike], channels: int, who: str) -> TrainTest:
    """(N, H, W) images in [0, 1] → resized, channel-repeated, stratified TrainTest."""
    if channels not in (1, 3):
        raise ValueError(f"{who}: channels must be 1 or 3, got {channels!r}")
    x = images.astype(np.float32)[:, None]
    if size is not None:
        x = np.clip(resize(x, size_pair(size, who)), 0.0, 1.0)
    x = np.ascontiguousarray(np.repeat(x, channels, axis=1))
    labels = labels.astype(np.int64)
    train, test = stratified_split(labels, test_size, seed)
    return TrainTest(x[train], labels[train], x[test], labels[test], classes)


def load_digits(test_size: float = 0.2, seed: Optional[int] = 0, size: Optional[SizeLike] = None,
                channels: int = 1) -> TrainTest:
    """scikit-learn's 1,797 handwritten digits (8×8, 0–9; bundled with scikit-learn).

    Pixel values 0–16 are scaled to [0, 1]. The split is stratified: each digit contributes
    ``round(test_size * count)`` images to the test set, the same ones for the same ``seed``.

    Args:
        test_size: fraction of each class in the test set, in [0, 1).
        seed: seed of the split (None: fresh entropy).
        size: resize to (height, width) (or an int for a square) with the bilinear filter of
            `Resize`, e.g. 32 for LeNet-5; None keeps 8×8.
        channels: 1, or 3 to repeat the grey channel for RGB models.

    Returns:
        `TrainTest` with x (N, channels, H, W) float32 in [0, 1], y (N,) int64 in 0..9, and
        classes ('0', ..., '9'); 1,438 training and 359 test images at test_size=0.2.

    Raises:
        ImportError: scikit-learn is not installed (install the ``data`` extra).

    Example:
        >>> x_train, y_train, x_test, y_test, classes = load_digits(size=32, channels=3)
        >>> x_train.shape, y_test.shape
        ((1438, 3, 32, 32), (359,))
    """
    datasets = _require("sklearn.datasets", "scikit-learn", "load_digits")
    digits = datasets.load_digits()
    return _split(digits.images / 16.0, digits.target, tuple(str(d) for d in range(10)),
                  test_size, seed, size, channels, "load_digits")


def load_lfw_subset(test_size: float = 0.2, seed: Optional[int] = 0,
                    size: Optional[SizeLike] = None, channels: int = 1) -> TrainTest:
    """scikit-image's subset of Labeled Faces in the Wild: 200 grey 25×25 crops, 100 faces and
    100 non-faces (background patches), for binary face detection.

    ``skimage.data.lfw_subset()`` documents that its first 100 images are faces and the next
    100 non-faces; they get labels 1 and 0. The split is stratified and deterministic under
    ``seed`` as in `load_digits`.

    Args:
        test_size: fraction of each class in the test set, in [0, 1).
        seed: seed of the split (None: fresh entropy).
        size: resize to (height, width) or an int for a square; None keeps 25×25.
        channels: 1, or 3 to repeat the grey channel.

    Returns:
        `TrainTest` with x (N, channels, H, W) float32 in [0, 1], y (N,) int64 (1 = face), and
        classes ('non-face', 'face'); 160 training and 40 test images at test_size=0.2.

    Raises:
        ImportError: scikit-image is not installed (install the ``data`` extra).

    Example:
        >>> data = load_lfw_subset(size=32, channels=3)
        >>> data.x_train.shape, data.classes
        ((160, 3, 32, 32), ('non-face', 'face'))
    """
    skdata = _require("skimage.data", "scikit-image", "load_lfw_subset")
    images = np.asarray(skdata.lfw_subset())
    if images.shape != (200, 25, 25):
        raise RuntimeError(f"load_lfw_subset: expected scikit-image's 200 images of 25×25, got "
                           f"shape {images.shape}; the labels (first 100 faces) would be wrong")
    if images.dtype == np.uint8:      # documented as uint8; recent versions return floats in [0, 1]
        images = images / 255.0
    labels = np.repeat([1, 0], 100)
    return _split(images, labels, ("non-face", "face"), test_size, seed, size, channels,
                  "load_lfw_subset")
