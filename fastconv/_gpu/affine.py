"""channel_affine on the CUDA path: out[n, c, ...] = clamp(x * scale[c] + shift[c], lo, hi)."""
from __future__ import annotations


def channel_affine(be, x, scale, shift, lo, hi, out):
    """x (N, C, ...) contiguous; scale, shift (C,); lo / hi a float or None; out None (allocate)
    or an array of x's shape, layout and dtype (may be x itself). Returns out."""
    raise NotImplementedError("channel_affine: the CUDA kernel is not written yet")
