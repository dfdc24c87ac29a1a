"""Deterministic resampling of CHW images in numpy: Pillow-compatible bilinear resizing and the
inverse-mapped affine warp behind `RandomAffine`.

Coordinates are pixel indices (row ``r`` down, column ``c`` right); pixel ``(r, c)`` covers
``[r, r+1) × [c, c+1)`` when resizing (half-pixel centres, as Pillow and torchvision) and the
affine warp rotates about the centre pixel ``((H-1)/2, (W-1)/2)``.
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np

FILL_MODES = ("constant", "nearest", "reflect", "wrap")
INTERPOLATIONS = ("bilinear", "nearest")


def resize_weights(in_size: int, out_size: int) -> np.ndarray:
    """The (out_size, in_size) matrix of Pillow's antialiased bilinear filter along one axis.

    Each output pixel ``i`` is centred at input coordinate ``(i + 0.5) * in_size / out_size``
    and averages the input pixels under a triangle of half-width ``max(in_size / out_size, 1)``,
    the weights normalised to sum to one (Pillow's ``precompute_coeffs`` with the bilinear
    filter; torchvision's ``resize(antialias=True)`` uses the same). Upscaling is therefore plain
    bilinear interpolation with edge clamping; downscaling also low-pass filters.

    Args:
        in_size: input length along the axis (>= 1).
        out_size: output length (>= 1).

    Returns:
        float64 array of shape (out_size, in_size) whose rows sum to 1.

    Example:
        >>> resize_weights(2, 4)[0].tolist()
        [1.0, 0.0]
    """
    scale = in_size / out_size
    width = max(scale, 1.0)
    centres = (np.arange(out_size) + 0.5) * scale
    distance = np.arange(in_size)[None, :] + 0.5 - centres[:, None]
    weights = np.clip(1.0 - np.abs(distance) / width, 0.0, None)
    return weights / weights.sum(axis=1, keepdims=True)


def resize(img: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Resize the last two axes of ``img`` to ``size`` with Pillow's bilinear filter.

    Matches ``PIL.Image.resize(..., Image.BILINEAR)`` on float ('F' mode) images to float32
    rounding, and on 8-bit images to within one grey level (Pillow rounds to 8 bits between its
    horizontal and vertical passes; this computes in floating point).

    Args:
        img: array (..., H, W), e.g. CHW or NCHW; floating point (integers are converted).
        size: (out_height, out_width), each >= 1.

    Returns:
        array (..., out_height, out_width), float32 unless ``img`` is float64.

    Example:
        >>> resize(np.ones((3, 4, 6), np.float32), (2, 3)).shape
        (3, 2, 3)
    """
    dtype = img.dtype if img.dtype in (np.float32, np.float64) else np.float32
    h, w = img.shape[-2:]
    out_h, out_w = size
    if (out_h, out_w) == (h, w):
        return img.astype(dtype)                                  # always a new array
    out = img.astype(dtype, copy=False)
    if out_w != w:
        out = out @ resize_weights(w, out_w).T.astype(dtype)
    if out_h != h:
        out = resize_weights(h, out_h).astype(dtype) @ out
    return out


def affine_matrix(angle: float = 0.0, shear: float = 0.0, zoom_y: float = 1.0,
                  zoom_x: float = 1.0) -> np.ndarray:
    """The 2×2 inverse-mapping matrix ``A`` of `affine_transform`, acting on (row, col) offsets
    from the image centre: ``input = A @ (output - shift)``.

    ``A = diag(zoom_y, zoom_x) @ shear_inv @ rotation_inv`` where ``rotation_inv`` undoes a
    counter-clockwise rotation by ``angle`` degrees and ``shear_inv = [[1, 0], [-tan(shear), 1]]``
    undoes a shear that tilts vertical lines counter-clockwise by ``shear`` degrees.

    Args:
        angle: rotation in degrees, counter-clockwise on screen (rows pointing down).
        shear: shear angle in degrees (|shear| < 90).
        zoom_y, zoom_x: Keras zoom factors (inverse mapping): > 1 shows more of the image
            (content shrinks), < 1 magnifies.

    Returns:
        float64 array (2, 2).

    Example:
        >>> np.round(affine_matrix(angle=90), 6).tolist()
        [[0.0, 1.0], [-1.0, 0.0]]
    """
    theta = math.radians(angle)
    cos, sin = math.cos(theta), math.sin(theta)
    rotation_inv = np.array([[cos, sin], [-sin, cos]])
    shear_inv = np.array([[1.0, 0.0], [-math.tan(math.radians(shear)), 1.0]])
    return np.diag([zoom_y, zoom_x]) @ shear_inv @ rotation_inv


def _fold(index: np.ndarray, n: int, fill_mode: str) -> np.ndarray:
    """Map integer indices on the infinite extension of an axis of length n back into [0, n)
    (for 'constant', out-of-range indices are clipped and masked by the caller)."""
    if fill_mode == "wrap":                          # abcd|abcd|abcd
        return np.mod(index, n)
    if fill_mode == "reflect":                       # dcba|abcd|dcba
        folded = np.mod(index, 2 * n)
        return np.where(folded < n, folded, 2 * n - 1 - folded)
    return np.clip(index, 0, n - 1)                  # nearest: aaaa|abcd|dddd


def _gather(img: np.ndarray, rows: np.ndarray, cols: np.ndarray, fill_mode: str,
            cval: float) -> np.ndarray:
    """img[:, rows, cols] on the image extended by fill_mode (rows/cols: integer arrays)."""
    h, w = img.shape[-2:]
    values = img[:, _fold(rows, h, fill_mode), _fold(cols, w, fill_mode)]
    if fill_mode == "constant":
        outside = (rows < 0) | (rows >= h) | (cols < 0) | (cols >= w)
        values = np.where(outside, np.asarray(cval, values.dtype), values)
    return values


def affine_transform(img: np.ndarray, angle: float = 0.0, shift_y: float = 0.0,
                     shift_x: float = 0.0, shear: float = 0.0, zoom_y: float = 1.0,
                     zoom_x: float = 1.0, fill_mode: str = "nearest", cval: float = 0.0,
                     interpolation: str = "bilinear") -> np.ndarray:
    """Warp a CHW image by an affine map about its centre, sampling by inverse mapping.

    Forward, the content is zoomed, sheared, rotated about the centre pixel
    ``((H-1)/2, (W-1)/2)`` and then shifted. Each output pixel ``o`` reads the input at
    ``centre + A @ (o - centre - (shift_y, shift_x))`` (``A`` from `affine_matrix`), with
    bilinear or nearest interpolation; reads outside the image follow ``fill_mode`` (Keras):

    - ``'constant'``: kkkk|abcd|kkkk with k = ``cval`` (bilinear blends edge pixels with cval);
    - ``'nearest'``:  aaaa|abcd|dddd;
    - ``'reflect'``:  dcba|abcd|dcba (the edge pixel repeated: half-sample symmetric);
    - ``'wrap'``:     abcd|abcd|abcd (periodic).

    Differences from Keras' ``apply_affine_transform``: the centre is the true centre pixel
    (Keras uses ``H/2 + 0.5``, off by one pixel), so a 90° rotation of a square image equals
    ``np.rot90``; a positive shift moves the content down/right; the shear is a pure shear.

    Args:
        img: array (C, H, W); any real dtype.
        angle: rotation in degrees, counter-clockwise.
        shift_y, shift_x: translation in pixels (positive: down, right); may be fractional.
        shear: shear angle in degrees (vertical lines tilt counter-clockwise), |shear| < 90.
        zoom_y, zoom_x: Keras zoom factors (> 1 zooms out, < 1 zooms in); positive.
        fill_mode: one of 'constant', 'nearest', 'reflect', 'wrap'.
        cval: fill value for 'constant'.
        interpolation: 'bilinear' or 'nearest'.

    Returns:
        array (C, H, W): float32 (float64 if ``img`` is float64).

    Example:
        >>> img = np.arange(4, dtype=np.float32).reshape(1, 1, 4)
        >>> affine_transform(img, shift_x=1, fill_mode="wrap").tolist()
        [[[3.0, 0.0, 1.0, 2.0]]]
    """
    if fill_mode not in FILL_MODES:
        raise ValueError(f"affine_transform: fill_mode must be one of {FILL_MODES}, "
                         f"got {fill_mode!r}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"affine_transform: interpolation must be one of {INTERPOLATIONS}, "
                         f"got {interpolation!r}")
    dtype = img.dtype if img.dtype in (np.float32, np.float64) else np.float32
    img = img.astype(dtype, copy=False)
    h, w = img.shape[-2:]
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    grid = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), axis=-1)
    offsets = grid - centre - np.array([shift_y, shift_x])
    coords = offsets @ affine_matrix(angle, shear, zoom_y, zoom_x).T + centre   # (H, W, 2)
    snapped = np.rint(coords)
    coords = np.where(np.abs(coords - snapped) < 1e-6, snapped, coords)  # exact on pixel grid
    rows, cols = coords[..., 0], coords[..., 1]
    if interpolation == "nearest":
        return _gather(img, np.floor(rows + 0.5).astype(np.int64),
                       np.floor(cols + 0.5).astype(np.int64), fill_mode, cval)
    r0, c0 = np.floor(rows), np.floor(cols)
    fr, fc = (rows - r0).astype(dtype), (cols - c0).astype(dtype)
    r0, c0 = r0.astype(np.int64), c0.astype(np.int64)
    top = (_gather(img, r0, c0, fill_mode, cval) * (1 - fc)
           + _gather(img, r0, c0 + 1, fill_mode, cval) * fc)
    bottom = (_gather(img, r0 + 1, c0, fill_mode, cval) * (1 - fc)
              + _gather(img, r0 + 1, c0 + 1, fill_mode, cval) * fc)
    return top * (1 - fr) + bottom * fr
