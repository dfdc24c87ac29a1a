"""Naive float64 references for every kernel: slow, obviously correct, and formulated independently
of the kernels (explicit zero padding, one shifted slice per kernel tap, one window per output
cell). The tests compare the kernels against these (and against PyTorch where it is installed).

Names: input x (N, C, H, W), weight w (K, C/groups, R, S), output y (N, K, P, Q); stride (sh, sw),
padding (pt, pb, pl, pr) = (top, bottom, left, right), dilation (dh, dw). Arguments are always
explicit pairs / quads (no defaults, no 'same'): the tests resolve them with fastconv._shape.
Loops run over kernel taps, groups or output cells; numpy vectorises over the batch and channels.
"""
from __future__ import annotations

import numpy as np

from fastconv._shape import output_size  # the one Python output-size helper (tested against C++)

__all__ = ["conv2d", "conv2d_input", "conv2d_weight", "conv2d_bias", "max_pool2d",
           "max_pool2d_input", "avg_pool2d", "avg_pool2d_input", "adaptive_avg_pool2d",
           "adaptive_avg_pool2d_input"]


def _f64(a):
    return np.asarray(a, dtype=np.float64)


# ---- convolution ------------------------------------------------------------------------------

def _tap(xp, r, s, P, Q, stride, dilation):
    """The (N, C, P, Q) slice of the padded input that kernel tap (r, s) multiplies."""
    (sh, sw), (dh, dw) = stride, dilation
    h0, w0 = r * dh, s * dw
    return xp[:, :, h0:h0 + (P - 1) * sh + 1:sh, w0:w0 + (Q - 1) * sw + 1:sw]


def conv2d(x, w, bias, stride, padding, dilation, groups):
    """y[n, k, p, q] = bias[k] + sum over c, r, s of
    x[n, g*Cg + c, p*sh - pt + r*dh, q*sw - pl + s*dw] * w[k, c, r, s]   (g = k // Kg; zero outside)."""
    x, w = _f64(x), _f64(w)
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    Kg = K // groups
    pt, pb, pl, pr = padding
    P = output_size(H, R, stride[0], pt, pb, dilation[0], False)
    Q = output_size(W, S, stride[1], pl, pr, dilation[1], False)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    y = np.zeros((N, K, P, Q))
    for g in range(groups):
        xs, ks = slice(g * Cg, (g + 1) * Cg), slice(g * Kg, (g + 1) * Kg)
        for r in range(R):
            for s in range(S):
                y[:, ks] += np.einsum("ncpq,kc->nkpq", _tap(xp[:, xs], r, s, P, Q, stride, dilation),
                                      w[ks, :, r, s])
    if bias is not None:
        y += _f64(bias)[None, :, None, None]
    return y


def conv2d_input(dy, w, input_shape, stride, padding, dilation, groups):
    """dx = the adjoint of conv2d in x: every dy[n, k, p, q] * w[k, c, r, s] is added back at the
    input position tap (r, s) of cell (p, q) read; taps in the padding are dropped."""
    dy, w = _f64(dy), _f64(w)
    N, C, H, W = input_shape
    K, Cg, R, S = w.shape
    _, _, P, Q = dy.shape
    Kg = K // groups
    (sh, sw), (dh, dw) = stride, dilation
    pt, pb, pl, pr = padding
    dxp = np.zeros((N, C, H + pt + pb, W + pl + pr))
    for g in range(groups):
        xs, ks = slice(g * Cg, (g + 1) * Cg), slice(g * Kg, (g + 1) * Kg)
        for r in range(R):
            for s in range(S):
                h0, w0 = r * dh, s * dw
                dxp[:, xs, h0:h0 + (P - 1) * sh + 1:sh, w0:w0 + (Q - 1) * sw + 1:sw] += np.einsum(
                    "nkpq,kc->ncpq", dy[:, ks], w[ks, :, r, s])
    return dxp[:, :, pt:pt + H, pl:pl + W]


def conv2d_weight(dy, x, weight_shape, stride, padding, dilation, groups):
    """dw[k, c, r, s] = sum over n, p, q of dy[n, k, p, q] * x_padded[n, g*Cg + c, tap (r, s) of (p, q)]."""
    dy, x = _f64(dy), _f64(x)
    K, Cg, R, S = weight_shape
    _, _, P, Q = dy.shape
    Kg = K // groups
    pt, pb, pl, pr = padding
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    dw = np.zeros((K, Cg, R, S))
    for g in range(groups):
        xs, ks = slice(g * Cg, (g + 1) * Cg), slice(g * Kg, (g + 1) * Kg)
        for r in range(R):
            for s in range(S):
                dw[ks, :, r, s] = np.einsum("nkpq,ncpq->kc", dy[:, ks],
                                            _tap(xp[:, xs], r, s, P, Q, stride, dilation))
    return dw


def conv2d_bias(dy):
    """db[k] = sum over n, p, q of dy[n, k, p, q]."""
    return _f64(dy).sum(axis=(0, 2, 3))


# ---- pooling ----------------------------------------------------------------------------------

def _pool_taps(start, k, d, size):
    """Input coordinates of one window's taps along an axis that lie inside the input, in order."""
    return [start + i * d for i in range(k) if 0 <= start + i * d < size]


def max_pool2d(x, kernel, stride, padding, dilation, ceil_mode):
    """(y, indices): y[n, c, p, q] = max over the window's in-input taps, scanned row-major from
    -inf with the first in-input tap's index, replaced when `v > max or isnan(v)` (so NaN
    propagates with the index of the last NaN, ties keep the first tap); indices = h * W + w."""
    x = _f64(x)
    N, C, H, W = x.shape
    (R, S), (sh, sw), (dh, dw) = kernel, stride, dilation
    pt, pb, pl, pr = padding
    P = output_size(H, R, sh, pt, pb, dh, ceil_mode)
    Q = output_size(W, S, sw, pl, pr, dw, ceil_mode)
    y = np.empty((N, C, P, Q))
    idx = np.empty((N, C, P, Q), dtype=np.int64)
    for p in range(P):
        rows = _pool_taps(p * sh - pt, R, dh, H)
        for q in range(Q):
            cols = _pool_taps(q * sw - pl, S, dw, W)
            best = np.full((N, C), -np.inf)
            arg = np.full((N, C), rows[0] * W + cols[0], dtype=np.int64)
            for h in rows:
                for w in cols:
                    v = x[:, :, h, w]
                    take = (v > best) | np.isnan(v)
                    best = np.where(take, v, best)
                    arg = np.where(take, h * W + w, arg)
            y[:, :, p, q], idx[:, :, p, q] = best, arg
    return y, idx


def max_pool2d_input(dy, indices, input_shape):
    """dx[n, c].flat[indices[n, c, p, q]] += dy[n, c, p, q]."""
    dy = _f64(dy)
    N, C, H, W = input_shape
    dx = np.zeros((N, C, H * W))
    for n in range(N):
        for ch in range(C):
            np.add.at(dx[n, ch], indices[n, ch].ravel(), dy[n, ch].ravel())
    return dx.reshape(N, C, H, W)


def _avg_windows(H, W, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """[(p, q, rows slice, cols slice, divisor)] of average pooling, PyTorch's rules: the window
    [p*sh - pt, +R) is cut at the end of the bottom padding (H + pb); its size then is the divisor
    with count_include_pad, else the size of its part inside the input; divisor_override wins."""
    (R, S), (sh, sw) = kernel, stride
    pt, pb, pl, pr = padding
    P = output_size(H, R, sh, pt, pb, 1, ceil_mode)
    Q = output_size(W, S, sw, pl, pr, 1, ceil_mode)
    cells = []
    for p in range(P):
        h0 = p * sh - pt
        h1 = min(h0 + R, H + pb)
        for q in range(Q):
            w0 = q * sw - pl
            w1 = min(w0 + S, W + pr)
            padded_count = (h1 - h0) * (w1 - w0)
            rows = slice(max(h0, 0), min(h1, H))
            cols = slice(max(w0, 0), min(w1, W))
            inside_count = (rows.stop - rows.start) * (cols.stop - cols.start)
            if divisor_override:
                divisor = divisor_override
            else:
                divisor = padded_count if count_include_pad else inside_count
            cells.append((p, q, rows, cols, divisor))
    return P, Q, cells


def avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """y[n, c, p, q] = sum of the window's in-input elements / divisor (see _avg_windows)."""
    x = _f64(x)
    N, C, H, W = x.shape
    P, Q, cells = _avg_windows(H, W, kernel, stride, padding, ceil_mode, count_include_pad,
                               divisor_override)
    y = np.empty((N, C, P, Q))
    for p, q, rows, cols, divisor in cells:
        y[:, :, p, q] = x[:, :, rows, cols].sum(axis=(2, 3)) / divisor
    return y


def avg_pool2d_input(dy, input_shape, kernel, stride, padding, ceil_mode, count_include_pad,
                     divisor_override):
    """dx: each dy[n, c, p, q] / divisor added to every in-input element of its window."""
    dy = _f64(dy)
    N, C, H, W = input_shape
    _, _, cells = _avg_windows(H, W, kernel, stride, padding, ceil_mode, count_include_pad,
                               divisor_override)
    dx = np.zeros((N, C, H, W))
    for p, q, rows, cols, divisor in cells:
        dx[:, :, rows, cols] += (dy[:, :, p, q] / divisor)[:, :, None, None]
    return dx


def _adaptive_range(i, out, size):
    """[floor(i * size / out), ceil((i + 1) * size / out))."""
    return slice((i * size) // out, -((-(i + 1) * size) // out))


def adaptive_avg_pool2d(x, output_size):
    """y[n, c, p, q] = mean of x over rows _adaptive_range(p, P, H), columns likewise."""
    x = _f64(x)
    N, C, H, W = x.shape
    P, Q = output_size
    y = np.empty((N, C, P, Q))
    for p in range(P):
        rows = _adaptive_range(p, P, H)
        for q in range(Q):
            cols = _adaptive_range(q, Q, W)
            y[:, :, p, q] = x[:, :, rows, cols].mean(axis=(2, 3))
    return y


def adaptive_avg_pool2d_input(dy, input_shape):
    """dx: each dy[n, c, p, q] / window size added to every element of its window."""
    dy = _f64(dy)
    N, C, H, W = input_shape
    _, _, P, Q = dy.shape
    dx = np.zeros((N, C, H, W))
    for p in range(P):
        rows = _adaptive_range(p, P, H)
        for q in range(Q):
            cols = _adaptive_range(q, Q, W)
            count = (rows.stop - rows.start) * (cols.stop - cols.start)
            dx[:, :, rows, cols] += (dy[:, :, p, q] / count)[:, :, None, None]
    return dx
