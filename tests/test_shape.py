"""fastconv/_shape.py: the Python output-size helper against the C++ one (csrc/common/output_size.h)
over a grid, padding resolution ('same' against torch for stride 1 and TensorFlow's rule), and
the remembered argument checks (_shape.remember)."""
import itertools

import pytest

from fastconv import _C, _shape


def test_output_size_matches_cpp_over_grid():
    n = 0
    for size, k, stride, lo, hi, d, ceil in itertools.product(
            range(1, 12), range(1, 6), range(1, 5), range(0, 3), range(0, 3), range(1, 4),
            (False, True)):
        assert _shape.output_size(size, k, stride, lo, hi, d, ceil) == \
            _C.output_size(size, k, stride, lo, hi, d, ceil), (size, k, stride, lo, hi, d, ceil)
        n += 1
    assert n > 10000


@pytest.mark.parametrize("args", [(224, 7, 2, 3, 3, 1, False), (2**31 + 5, 3, 1, 1, 1, 1, False),
                                  (5, 9, 1, 0, 0, 1, False), (7, 3, 2, 1, 1, 2, True)])
def test_output_size_cases(args):
    assert _shape.output_size(*args) == _C.output_size(*args)


def test_output_size_known_values():
    assert _shape.output_size(224, 7, 2, 3, 3, 1, False) == 112  # ResNet stem
    assert _shape.output_size(112, 3, 2, 1, 1, 1, False) == 56   # ResNet max pool
    assert _shape.output_size(5, 2, 2, 0, 0, 1, True) == 3       # ceil_mode keeps the half window
    assert _shape.output_size(4, 2, 2, 1, 1, 1, True) == 3       # last window starts at 4 - 1 = 3: inside
    assert _shape.output_size(3, 2, 2, 1, 1, 1, True) == 2       # last window would start in pad
    assert _shape.output_size(3, 5, 1, 0, 0, 1, False) == 0      # kernel larger than the input


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_same_padding_stride1_is_torch(torch):
    import torch.nn.functional as TF
    for size, k, d in itertools.product(range(1, 9), range(1, 6), range(1, 3)):
        t, b = _shape.same_padding(size, k, 1, d)
        assert t + b == d * (k - 1) and t == (d * (k - 1)) // 2
        x = torch.zeros(1, 1, size, size)
        w = torch.zeros(1, 1, k, k)
        if size + t + b >= d * (k - 1) + 1:
            assert TF.conv2d(x, w, padding="same", dilation=d).shape[-1] == \
                _shape.output_size(size, k, 1, t, b, d, False) == size


@pytest.mark.parametrize("size,k,stride,expected", [
    (224, 3, 2, (0, 1)),  # TF: out 112, total max(111*2 + 3 - 224, 0) = 1 -> odd pixel bottom
    (225, 3, 2, (1, 1)),
    (7, 5, 2, (2, 2)),
    (8, 5, 2, (1, 2)),
    (10, 1, 3, (0, 0)),
    (5, 2, 3, (0, 0)),
    (112, 5, 2, (1, 2)),  # EfficientNet-Lite stage with a 5x5 stride-2 depthwise conv
])
def test_same_padding_tensorflow(size, k, stride, expected):
    assert _shape.same_padding(size, k, stride, 1) == expected
    lo, hi = expected
    assert _shape.output_size(size, k, stride, lo, hi, 1, False) == -(-size // stride)


def test_same_padding_output_is_ceil_over_grid():
    for size, k, s, d in itertools.product(range(1, 20), range(1, 7), range(1, 5), range(1, 3)):
        lo, hi = _shape.same_padding(size, k, s, d)
        assert 0 <= hi - lo <= 1
        assert _shape.output_size(size, k, s, lo, hi, d, False) == -(-size // s)


@pytest.mark.parametrize("padding,expected", [
    (2, (2, 2, 2, 2)), ((2,), (2, 2, 2, 2)), ([1, 3], (1, 1, 3, 3)), ((1, 2, 3, 4), (1, 2, 3, 4)),
    ("valid", (0, 0, 0, 0)), ("same", (1, 1, 2, 2)),
])
def test_resolve_padding(padding, expected):
    assert _shape.resolve_padding("op", padding, (9, 9), (3, 5), (1, 1), (1, 1)) == expected


@pytest.mark.parametrize("padding,exc", [
    (-1, ValueError), ((1, -1), ValueError), ((0, 0, 0, -1), ValueError), ((1, 2, 3), ValueError),
    ("SAME", TypeError), ("full", TypeError), (1.0, TypeError), (True, TypeError),
    ((1, 1.5), TypeError), (None, TypeError),
])
def test_resolve_padding_rejects(padding, exc):
    with pytest.raises(exc, match="op: padding"):
        _shape.resolve_padding("op", padding, (9, 9), (3, 3), (1, 1), (1, 1))


def test_first_empty_window_matches_a_loop_over_the_taps():
    """The O(1)-per-window check equals the literal definition (some tap inside [0, size))."""
    def literal(size, k, stride, pad_lo, dilation, out):
        for p in range(out):
            if not any(0 <= p * stride - pad_lo + i * dilation < size for i in range(k)):
                return p
        return None
    for size, k, stride, pad_lo, dilation in itertools.product(range(1, 6), range(1, 5),
                                                               range(1, 4), range(3), range(1, 5)):
        if pad_lo > k // 2:
            continue
        out = _shape.output_size(size, k, stride, pad_lo, pad_lo, dilation, False)
        expected = literal(size, k, stride, pad_lo, dilation, out) if dilation > 1 else None
        assert _shape.first_empty_window(size, k, stride, pad_lo, dilation, out) == expected


def test_geometry_limit():
    """2**31 - 1 passes, 2**31 is refused (the binding holds the same limit: test_errors C_CASES)."""
    assert _shape.MAX_GEOMETRY == 2**31 - 1
    assert _shape.pair("op", "stride", 2**31 - 1) == (2**31 - 1, 2**31 - 1)
    with pytest.raises(ValueError, match=r"op: stride must be at most 2147483647"):
        _shape.pair("op", "stride", (1, 2**31))


# ---- remembered argument checks (_shape.remember): a model calls each layer with the same
# arguments every step; a remembered result must never stand in for a check that would fail.

def test_remember_keeps_bools_ints_and_numpy_scalars_apart():
    import numpy as np
    from fastconv.nn import functional as F
    x = np.ones((1, 2, 6, 6), np.float32)
    w = np.ones((2, 2, 3, 3), np.float32)
    for _ in range(2):  # the second round runs on remembered results
        assert F.conv2d(x, w, None, 1, 1).shape == (1, 2, 6, 6)
        assert F.conv2d(x, w, None, (1, 1), (1, 1)).shape == (1, 2, 6, 6)
        assert F.conv2d(x, w, None, np.int64(1), 1).shape == (1, 2, 6, 6)
        assert F.conv2d(x, w, None, [1, 1], [1, 1]).shape == (1, 2, 6, 6)
        with pytest.raises(TypeError, match="stride must be an int"):
            F.conv2d(x, w, None, True, 1)
        with pytest.raises(TypeError, match="stride must contain ints"):
            F.conv2d(x, w, None, (1, True), 1)
        with pytest.raises(TypeError, match="padding must"):
            F.conv2d(x, w, None, 1, (1.0, 1))
        with pytest.raises(TypeError, match="kernel_size must"):
            F.max_pool2d(x, (2, False))
        assert F.max_pool2d(x, (2, 2)).shape == (1, 2, 3, 3)


def test_remember_does_not_remember_errors():
    calls = []

    @_shape.remember
    def f(a, b):
        calls.append((a, b))
        if a == -1:
            raise ValueError("a must be >= 0")
        return a + b

    assert f(1, 2) == 3 and f(1, 2) == 3 and len(calls) == 1
    assert f(True, 2) == 3 and len(calls) == 2          # a bool is not the int 1
    assert f((1,), (2,)) == (1, 2) and f((True,), (2,)) == (1, 2) and len(calls) == 4
    assert f([1], [2]) == [1, 2] and f([1], [2]) == [1, 2] and len(calls) == 6  # lists: not kept
    for _ in range(2):
        with pytest.raises(ValueError):
            f(-1, 0)
    assert len(calls) == 8
