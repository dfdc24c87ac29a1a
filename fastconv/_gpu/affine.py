"""channel_affine on the CUDA path: out[n, c, ...] = clamp(x * scale[c] + shift[c], lo, hi)."""
from __future__ import annotations

from fastconv._gpu.backend import NHWC, _dense


def channel_affine(be, x, scale, shift, lo, hi, out):
    """x (N, C, ...) contiguous; scale, shift (C,); lo / hi a float or None; out None (allocate)
    or an array of x's shape, layout and dtype (may be x itself). Returns out.

    A 4-D channels-last x (NHWC memory) is served as it is, as the (N*H*W, C, 1) view, and out
    then must be channels-last too; any other x is taken C-contiguous (copied when it is not)."""
    op = "channel_affine"
    code = be.dtype_code(op, "x", x)
    named = [("scale", scale), ("shift", shift)] + ([("out", out)] if out is not None else [])
    for name, a in named:
        if be.dtype_code(op, name, a) != code:
            raise TypeError(f"{op}: {name} must have x's dtype {x.dtype}, got {a.dtype}")
    C = x.shape[1]
    for name, a in (("scale", scale), ("shift", shift)):
        if tuple(a.shape) != (C,):
            raise ValueError(f"{op}: {name} must have shape ({C},), got {tuple(a.shape)}")
    scale, shift = be.contiguous(scale), be.contiguous(shift)
    channels_last = x.ndim == 4 and be.layout(x) == NHWC
    if not channels_last:
        x = be.contiguous(x)
    order = (0, 2, 3, 1) if channels_last else tuple(range(x.ndim))
    if out is None:
        out = (be.empty_like_layout(x.shape, x.dtype, NHWC) if channels_last
               else be.empty(x.shape, x.dtype))
    else:
        if tuple(out.shape) != tuple(x.shape):
            raise ValueError(f"{op}: out must have x's shape {tuple(x.shape)}, got "
                             f"{tuple(out.shape)}")
        if not _dense(out.shape, be.strides(out), order):
            raise ValueError(f"{op}: out must be {'channels-last' if channels_last else 'C'}-"
                             f"contiguous like x")
    if channels_last:
        n, c, h, w = x.shape
        N, L = n * h * w, 1
    else:
        N, L = x.shape[0], 1
        for s in x.shape[2:]:
            L *= s
    be.mod.channel_affine(code, be.ptr(x), be.ptr(scale), be.ptr(shift), be.ptr(out), N, C, L,
                          None if lo is None else float(lo), None if hi is None else float(hi),
                          be.stream())
    return out
