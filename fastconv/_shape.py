"""Output sizes and argument resolution for convolution and pooling: the one place in Python where
they are computed (the C++ twin of `output_size` is csrc/common/output_size.h; tests/test_shape.py
compares the two).

    out = floor_or_ceil((in + pad_lo + pad_hi - dilation * (k - 1) - 1) / stride) + 1

With ceil_mode (pooling) the last window must still start inside the input or the leading padding,
as in PyTorch (ATen/native/Pool.h pooling_output_shape_pad_lr).

Padding is resolved to four non-negative ints (top, bottom, left, right) from
  - an int p                      -> (p, p, p, p)
  - a 1-tuple (p,)                -> (p, p, p, p)            (torch accepts it)
  - a 2-tuple (ph, pw)            -> (ph, ph, pw, pw)
  - a 4-tuple (t, b, l, r)        -> as given                (fastconv extension)
  - 'valid'                       -> (0, 0, 0, 0)
  - 'same'                        -> output = ceil(in / stride); total = max((out - 1) * stride +
                                     dilation * (k - 1) + 1 - in, 0); top = total // 2, the odd
                                     pixel at the bottom / right. For stride 1 this is exactly
                                     PyTorch's 'same' (total = dilation * (k - 1)); for stride > 1 it
                                     is TensorFlow/Keras 'SAME' (a fastconv extension).
"""
from __future__ import annotations

import functools
import numbers
from typing import Optional, Sequence, Tuple

import numpy as np

Pair = Tuple[int, int]
Quad = Tuple[int, int, int, int]


# ---- remembered argument checks --------------------------------------------------------------

class _NotPlain(Exception):
    pass


_PLAIN = frozenset((int, bool, str, type(None)))
_MISS = object()


def _key(args: tuple):
    """args with the type of every value (True and 1 hash and compare alike but are checked
    differently); _NotPlain unless each argument is an int, bool, str, None or a flat tuple of
    those (shapes, (h, w) pairs, padding quads)."""
    types = []
    for a in args:
        t = type(a)
        if t is tuple:
            t = tuple(map(type, a))
            if not _PLAIN.issuperset(t):
                raise _NotPlain
        elif t not in _PLAIN:
            raise _NotPlain
        types.append(t)
    return args, tuple(types)


def remember(fn):
    """fn, with its results remembered for plain arguments (see _key) and recomputed for any other
    (lists, numpy scalars). A model calls each layer with the same arguments every step, and
    checking them costs microseconds a call. Errors are not remembered: a bad call raises every
    time. fn must return immutable values (tuples, ints)."""
    cache = {}

    @functools.wraps(fn)
    def wrapper(*args):
        try:
            key = _key(args)
        except _NotPlain:
            return fn(*args)
        hit = cache.get(key, _MISS)
        if hit is _MISS:
            hit = fn(*args)
            if len(cache) >= 2048:
                cache.clear()
            cache[key] = hit
        return hit

    return wrapper

# The largest kernel size, stride, padding, dilation, output size, groups or |divisor_override|
# accepted (2**31 - 1). No real layer comes near it, and it keeps every sum and product the int64
# kernels form from these values (dilation * (kernel - 1) + padded input, ...) far from overflow;
# csrc/common/output_size.h holds the same limit (kMaxGeometry).
MAX_GEOMETRY = 2**31 - 1


def output_size(size: int, kernel: int, stride: int, pad_lo: int, pad_hi: int, dilation: int,
                ceil_mode: bool) -> int:
    """Length of a convolution / pooling output along one axis (0 when the dilated kernel does
    not fit in the padded input; callers reject that)."""
    span = size + pad_lo + pad_hi - dilation * (kernel - 1) - 1
    if span < 0:
        return 0
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad_lo:
        out -= 1
    return out


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> Tuple[int, int]:
    """(lo, hi) padding of 'same' along one axis: output ceil(size / stride), odd pixel at hi."""
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


# ---- argument parsing ------------------------------------------------------------------------

def is_int(v) -> bool:
    """A Python or numpy integer, not a bool."""
    if type(v) is int:  # the common case, without the ABC checks below (~1 us each)
        return True
    return isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, (bool, np.bool_))


def _describe(v) -> str:
    return f"{v!r} ({type(v).__name__})"


def check_int(op: str, name: str, v, minimum: Optional[int] = None,
              maximum: Optional[int] = None) -> int:
    """v as an int; TypeError when it is not an integer, ValueError when below minimum or above
    maximum (geometry arguments pass maximum=MAX_GEOMETRY)."""
    if not is_int(v):
        raise TypeError(f"{op}: {name} must be an int, got {_describe(v)}")
    v = int(v)
    if minimum is not None and v < minimum:
        what = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{op}: {name} must be {what}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{op}: {name} must be at most {maximum}, got {v}")
    return v


def check_geometry(op: str, name: str, values: Sequence[int], given) -> None:
    """ValueError unless every value is at most MAX_GEOMETRY (see there)."""
    if max(values) > MAX_GEOMETRY:
        raise ValueError(f"{op}: {name} must be at most {MAX_GEOMETRY} (2**31 - 1), got {given!r}")


def pair(op: str, name: str, v, minimum: Optional[int] = None) -> Pair:
    """An int or a 1- or 2-element tuple/list of ints as (height, width), each at most
    MAX_GEOMETRY."""
    if is_int(v):
        items = [v, v]
    elif isinstance(v, (tuple, list)):
        if len(v) not in (1, 2):
            raise ValueError(f"{op}: {name} must be an int or a tuple of 1 or 2 ints, "
                             f"got {len(v)} values {tuple(v)!r}")
        items = list(v) * (2 // len(v))
    else:
        raise TypeError(f"{op}: {name} must be an int or a tuple of ints, got {_describe(v)}")
    for item in items:
        if not is_int(item):
            raise TypeError(f"{op}: {name} must contain ints, got {_describe(item)} in {v!r}")
    out = (int(items[0]), int(items[1]))
    if minimum is not None and min(out) < minimum:
        what = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{op}: {name} must be {what}, got {v!r}")
    check_geometry(op, name, out, v)
    return out


@remember
def resolve_padding(op: str, padding, size: Sequence[int], kernel: Pair, stride: Pair,
                    dilation: Pair) -> Quad:
    """padding (int, 1-/2-/4-tuple, 'valid' or 'same') as (top, bottom, left, right)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            t, b = same_padding(size[0], kernel[0], stride[0], dilation[0])
            l, r = same_padding(size[1], kernel[1], stride[1], dilation[1])
            check_geometry(op, "padding", (t, b, l, r), f"'same' = {(t, b, l, r)}")
            return (t, b, l, r)
        raise TypeError(f"{op}: padding must be an int, a tuple of ints, 'valid' or 'same', "
                        f"got {padding!r}")
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        for item in padding:
            if not is_int(item):
                raise TypeError(f"{op}: padding must contain ints, got {_describe(item)} in "
                                f"{padding!r}")
        quad = tuple(int(p) for p in padding)
    elif is_int(padding) or (isinstance(padding, (tuple, list)) and len(padding) in (1, 2)):
        ph, pw = pair(op, "padding", padding)
        quad = (ph, ph, pw, pw)
    elif isinstance(padding, (tuple, list)):
        raise ValueError(f"{op}: padding must be an int or a tuple of 1, 2 or 4 ints "
                         f"(4 = top, bottom, left, right), got {len(padding)} values "
                         f"{tuple(padding)!r}")
    else:
        raise TypeError(f"{op}: padding must be an int, a tuple of ints, 'valid' or 'same', "
                        f"got {_describe(padding)}")
    if min(quad) < 0:
        raise ValueError(f"{op}: padding must be non-negative, got {padding!r}")
    check_geometry(op, "padding", quad, padding)
    return quad  # type: ignore[return-value]


@remember
def pool_output_hw(op: str, size: Sequence[int], kernel: Pair, stride: Pair, pad: Quad,
                   dilation: Pair, ceil_mode: bool) -> Pair:
    """(P, Q) of a pooling window, after checking the padding (at most half the kernel per side,
    PyTorch's limit), that the output is not empty and that every window holds an input element."""
    eff = (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)
    limits = (kernel[0] // 2, kernel[0] // 2, kernel[1] // 2, kernel[1] // 2)
    if any(p > lim for p, lim in zip(pad, limits)):
        raise ValueError(f"{op}: padding must be at most half the kernel size per side, got {pad} "
                         f"as (top, bottom, left, right) for kernel_size {kernel}")
    P = output_size(size[0], kernel[0], stride[0], pad[0], pad[1], dilation[0], ceil_mode)
    Q = output_size(size[1], kernel[1], stride[1], pad[2], pad[3], dilation[1], ceil_mode)
    if P < 1 or Q < 1:
        raise ValueError(f"{op}: kernel {eff[0]} x {eff[1]} is larger than the padded input "
                         f"{size[0] + pad[0] + pad[1]} x {size[1] + pad[2] + pad[3]} (input "
                         f"{size[0]} x {size[1]}, padding {pad} as (top, bottom, left, right))")
    for axis, (size_, k, st, lo, d, n) in enumerate(
            ((size[0], kernel[0], stride[0], pad[0], dilation[0], P),
             (size[1], kernel[1], stride[1], pad[2], dilation[1], Q))):
        empty = first_empty_window(size_, k, st, lo, d, n)
        if empty is not None:
            name = ("height", "width")[axis]
            raise ValueError(f"{op}: with dilation {dilation} and padding {pad} as (top, bottom, "
                             f"left, right), output {name} position {empty} pools no input element "
                             f"(every tap of its window falls in the padding); reduce the padding "
                             f"or the dilation")
    return P, Q


def first_empty_window(size: int, kernel: int, stride: int, pad_lo: int, dilation: int,
                       out: int) -> Optional[int]:
    """The first of `out` pooling windows along an axis whose taps all fall outside [0, size), or
    None. Only dilated windows can skip over the whole input (e.g. kernel 2, dilation 3, padding 1
    on 2 pixels: taps -1 and 2)."""
    if dilation == 1:
        return None
    for p in range(out):
        start = p * stride - pad_lo
        first = max(0, -(start // dilation))     # the first tap at or past index 0 (O(1), not
        if first >= kernel or start + first * dilation >= size:   # a loop over the taps)
            return p
    return None


@remember
def conv_output_hw(op: str, size: Sequence[int], kernel: Pair, stride: Pair, pad: Quad,
                   dilation: Pair) -> Pair:
    """(P, Q) of a convolution, after checking the dilated kernel fits in the padded input."""
    eff = (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)
    ph, pw = size[0] + pad[0] + pad[1], size[1] + pad[2] + pad[3]
    if ph < eff[0] or pw < eff[1]:
        raise ValueError(f"{op}: the dilated kernel {eff[0]} x {eff[1]} is larger than the padded "
                         f"input {ph} x {pw} (input {size[0]} x {size[1]}, padding {pad} as "
                         f"(top, bottom, left, right))")
    return (output_size(size[0], kernel[0], stride[0], pad[0], pad[1], dilation[0], False),
            output_size(size[1], kernel[1], stride[1], pad[2], pad[3], dilation[1], False))
