"""Bad input gets a clear TypeError / ValueError naming the argument, what was expected and what
came, raised in Python before fastconv._C (which checks again) — never a crash or a wrong answer."""
import numpy as np
import pytest

import fastconv
import fastconv.nn.functional as F
import fastconv.nn.grad as G
from fastconv import _C

f32, f64 = np.float32, np.float64


def a(*shape, dtype=f32):
    return np.ones(shape, dtype)


X, W, B = a(1, 4, 8, 8), a(6, 4, 3, 3), a(6)
DY = a(1, 6, 6, 6)


class FakeCupy:
    """Looks like a cupy array to fastconv (type module 'cupy'); cupy itself is never needed."""
    __module__ = "cupy._core.core"
    shape, ndim, dtype = (1, 4, 8, 8), 4, np.dtype(f32)


FakeCupy.__qualname__ = "ndarray"

# (id, call, exception, message fragment (regex))
CASES = [
    # ---- array types
    ("conv_input_list", lambda: F.conv2d(X.tolist(), W), TypeError, r"conv2d: input must be a numpy.ndarray, got list"),
    ("conv_weight_scalar", lambda: F.conv2d(X, 1.0), TypeError, r"conv2d: weight must be a numpy.ndarray, got float"),
    ("conv_bias_list", lambda: F.conv2d(X, W, [0.0] * 6), TypeError, r"conv2d: bias must be a numpy.ndarray, got list"),
    ("pool_input_list", lambda: F.max_pool2d([[[1.0]]], 1), TypeError, r"max_pool2d: input must be a numpy.ndarray"),
    ("cupy_input", lambda: F.conv2d(FakeCupy(), FakeCupy()), (TypeError, RuntimeError), r"conv2d: input is a cupy array(; the GPU kernels need the fastconv._cuda extension|, but the CUDA runtime sees no usable GPU)"),
    ("cupy_pool", lambda: F.avg_pool2d(FakeCupy(), 2), (TypeError, RuntimeError), r"avg_pool2d: input is a cupy array(; the GPU kernels need the fastconv._cuda|, but the CUDA runtime sees no usable GPU)"),
    ("cupy_grad", lambda: G.conv2d_bias(FakeCupy()), (TypeError, RuntimeError), r"conv2d_bias: grad_output is a cupy array"),
    ("mixed_libraries", lambda: F.conv2d(X, FakeCupy()), TypeError, r"conv2d: input is a numpy array but weight is a cupy array"),
    # ---- dtypes
    ("int_input", lambda: F.conv2d(a(1, 4, 8, 8, dtype=np.int32), W), TypeError, r"conv2d: input must be a float32 or float64 array on the CPU, got dtype int32"),
    ("bool_input", lambda: F.max_pool2d(a(1, 1, 4, 4, dtype=bool), 2), TypeError, r"max_pool2d: input must be a float32 or float64 .* got dtype bool"),
    ("complex_input", lambda: F.avg_pool2d(a(1, 1, 4, 4, dtype=np.complex64), 2), TypeError, r"avg_pool2d: input .* got dtype complex64"),
    ("object_input", lambda: F.adaptive_avg_pool2d(a(1, 1, 4, 4, dtype=object), 2), TypeError, r"adaptive_avg_pool2d: input .* got dtype object"),
    ("float16_cpu", lambda: F.conv2d(a(1, 4, 8, 8, dtype=np.float16), a(6, 4, 3, 3, dtype=np.float16)), TypeError, r"conv2d: input has dtype float16, but the CPU kernels support float32 and float64 only"),
    ("float16_pool", lambda: F.max_pool2d(a(1, 1, 4, 4, dtype=np.float16), 2), TypeError, r"float32 and float64 only"),
    ("longdouble", lambda: F.max_pool2d(a(1, 1, 4, 4, dtype=np.longdouble), 2), TypeError, r"float32 or float64"),
    ("mixed_dtypes", lambda: F.conv2d(X, W.astype(f64)), TypeError, r"conv2d: weight has dtype float64 but input has dtype float32; they must match"),
    ("mixed_bias_dtype", lambda: F.conv2d(X, W, B.astype(f64)), TypeError, r"conv2d: bias has dtype float64 but input has dtype float32"),
    ("grad_mixed_dtypes", lambda: G.conv2d_input(X.shape, W, DY.astype(f64)), TypeError, r"conv2d_input: weight has dtype float32 but grad_output has dtype float64"),
    ("grad_weight_mixed", lambda: G.conv2d_weight(X.astype(f64), W.shape, DY), TypeError, r"conv2d_weight: grad_output has dtype float32 but input has dtype float64"),
    ("indices_float", lambda: G.max_pool2d_input((1, 1, 4, 4), a(1, 1, 2, 2), a(1, 1, 2, 2)), TypeError, r"max_pool2d_input: indices must be an integer array .* got dtype float32"),
    # ---- ranks and shapes
    ("input_2d", lambda: F.conv2d(a(8, 8), W), ValueError, r"conv2d: input must be 3-D \(C, H, W\) or 4-D \(N, C, H, W\), got shape \(8, 8\)"),
    ("input_5d", lambda: F.max_pool2d(a(1, 1, 1, 4, 4), 2), ValueError, r"max_pool2d: input must be 3-D .* got shape \(1, 1, 1, 4, 4\)"),
    ("input_zero_channels", lambda: F.max_pool2d(a(1, 0, 4, 4), 2), ValueError, r"max_pool2d: input must have non-zero channels, height and width, got shape \(1, 0, 4, 4\)"),
    ("input_zero_height", lambda: F.conv2d(a(1, 4, 0, 8), W), ValueError, r"non-zero channels, height and width"),
    ("weight_3d", lambda: F.conv2d(X, a(6, 4, 3)), ValueError, r"conv2d: weight must be 4-D \(out_channels, in_channels/groups, kH, kW\), got shape \(6, 4, 3\)"),
    ("weight_zero", lambda: F.conv2d(X, a(0, 4, 3, 3)), ValueError, r"conv2d: weight must have non-zero sizes"),
    ("channel_mismatch", lambda: F.conv2d(X, a(6, 3, 3, 3)), ValueError, r"conv2d: weight has 3 input channels per group but input has 4 channels and groups=1"),
    ("group_channel_mismatch", lambda: F.conv2d(X, W, groups=2), ValueError, r"weight has 4 input channels per group but input has 4 channels and groups=2 \(expected weight.shape\[1\] == 2\)"),
    ("groups_not_dividing_input", lambda: F.conv2d(X, a(6, 1, 3, 3), groups=3), ValueError, r"conv2d: input has 4 channels, which is not divisible by groups=3"),
    ("groups_not_dividing_output", lambda: F.conv2d(X, a(5, 2, 3, 3), groups=2), ValueError, r"conv2d: weight has 5 output channels, which is not divisible by groups=2"),
    ("groups_zero", lambda: F.conv2d(X, W, groups=0), ValueError, r"conv2d: groups must be positive, got 0"),
    ("groups_float", lambda: F.conv2d(X, W, groups=1.0), TypeError, r"conv2d: groups must be an int, got 1.0 \(float\)"),
    ("groups_bool", lambda: F.conv2d(X, W, groups=True), TypeError, r"conv2d: groups must be an int, got True \(bool\)"),
    ("bias_shape", lambda: F.conv2d(X, W, a(5)), ValueError, r"conv2d: bias must have shape \(6,\) \(one per output channel\), got shape \(5,\)"),
    ("bias_2d", lambda: F.conv2d(X, W, a(6, 1)), ValueError, r"conv2d: bias must have shape \(6,\).*got shape \(6, 1\)"),
    # ---- stride, dilation, padding
    ("stride_zero", lambda: F.conv2d(X, W, stride=0), ValueError, r"conv2d: stride must be positive, got 0"),
    ("stride_negative_tuple", lambda: F.conv2d(X, W, stride=(1, -1)), ValueError, r"conv2d: stride must be positive, got \(1, -1\)"),
    ("stride_float", lambda: F.conv2d(X, W, stride=1.5), TypeError, r"conv2d: stride must be an int or a tuple of ints, got 1.5 \(float\)"),
    ("stride_str", lambda: F.conv2d(X, W, stride="1"), TypeError, r"conv2d: stride must be an int or a tuple of ints, got '1' \(str\)"),
    ("stride_bool_in_tuple", lambda: F.conv2d(X, W, stride=(1, True)), TypeError, r"conv2d: stride must contain ints, got True \(bool\)"),
    ("stride_3_tuple", lambda: F.conv2d(X, W, stride=(1, 1, 1)), ValueError, r"conv2d: stride must be an int or a tuple of 1 or 2 ints, got 3 values"),
    ("dilation_zero", lambda: F.conv2d(X, W, dilation=0), ValueError, r"conv2d: dilation must be positive, got 0"),
    ("dilation_none", lambda: F.conv2d(X, W, dilation=None), TypeError, r"conv2d: dilation must be an int or a tuple of ints, got None"),
    ("padding_negative", lambda: F.conv2d(X, W, padding=-1), ValueError, r"conv2d: padding must be non-negative, got -1"),
    ("padding_negative_4", lambda: F.conv2d(X, W, padding=(0, 1, -1, 0)), ValueError, r"conv2d: padding must be non-negative, got \(0, 1, -1, 0\)"),
    ("padding_3_tuple", lambda: F.conv2d(X, W, padding=(1, 1, 1)), ValueError, r"conv2d: padding must be an int or a tuple of 1, 2 or 4 ints .* got 3 values"),
    ("padding_bad_string", lambda: F.conv2d(X, W, padding="full"), TypeError, r"conv2d: padding must be an int, a tuple of ints, 'valid' or 'same', got 'full'"),
    ("padding_float", lambda: F.conv2d(X, W, padding=1.0), TypeError, r"conv2d: padding must be an int, a tuple of ints, 'valid' or 'same', got 1.0 \(float\)"),
    ("kernel_larger_than_input", lambda: F.conv2d(a(1, 4, 2, 8), W), ValueError, r"conv2d: the dilated kernel 3 x 3 is larger than the padded input 2 x 8"),
    ("dilated_kernel_too_large", lambda: F.conv2d(X, W, dilation=4), ValueError, r"conv2d: the dilated kernel 9 x 9 is larger than the padded input 8 x 8"),
    # ---- pooling arguments
    ("pool_kernel_zero", lambda: F.max_pool2d(X, 0), ValueError, r"max_pool2d: kernel_size must be positive, got 0"),
    ("pool_kernel_negative", lambda: F.avg_pool2d(X, (2, -1)), ValueError, r"avg_pool2d: kernel_size must be positive, got \(2, -1\)"),
    ("pool_kernel_float", lambda: F.max_pool2d(X, 2.0), TypeError, r"max_pool2d: kernel_size must be an int or a tuple of ints, got 2.0 \(float\)"),
    ("pool_kernel_3_tuple", lambda: F.max_pool2d(X, (2, 2, 2)), ValueError, r"max_pool2d: kernel_size must be an int or a tuple of 1 or 2 ints, got 3 values"),
    ("pool_stride_zero", lambda: F.max_pool2d(X, 2, 0), ValueError, r"max_pool2d: stride must be positive, got 0"),
    ("pool_dilation_zero", lambda: F.max_pool2d(X, 2, dilation=0), ValueError, r"max_pool2d: dilation must be positive"),
    ("pool_padding_over_half", lambda: F.max_pool2d(X, 3, padding=2), ValueError, r"max_pool2d: padding must be at most half the kernel size per side, got \(2, 2, 2, 2\) as \(top, bottom, left, right\) for kernel_size \(3, 3\)"),
    ("pool_padding_over_half_undilated", lambda: F.max_pool2d(X, 2, 1, padding=2, dilation=3), ValueError, r"max_pool2d: padding must be at most half the kernel size"),
    ("pool_same_dilated_over_half", lambda: F.max_pool2d(X, 3, 1, padding="same", dilation=2), ValueError, r"max_pool2d: padding must be at most half the kernel size per side, got \(2, 2, 2, 2\)"),
    ("avg_padding_over_half", lambda: F.avg_pool2d(X, 2, padding=(0, 0, 2, 0)), ValueError, r"avg_pool2d: padding must be at most half"),
    ("pool_padding_negative", lambda: F.avg_pool2d(X, 2, padding=-1), ValueError, r"avg_pool2d: padding must be non-negative"),
    ("pool_kernel_too_large", lambda: F.max_pool2d(a(1, 1, 3, 6), 5, padding=(0, 2)), ValueError, r"max_pool2d: kernel 5 x 5 is larger than the padded input 3 x 10"),
    ("pool_dilated_window_only_padding", lambda: F.max_pool2d(a(1, 1, 2, 2), 2, 1, padding=1, dilation=3), ValueError, r"max_pool2d: .* output height position 0 pools no input element"),
    ("ceil_mode_str", lambda: F.max_pool2d(X, 2, ceil_mode="yes"), TypeError, r"max_pool2d: ceil_mode must be a bool, got 'yes'"),
    ("return_indices_int", lambda: F.max_pool2d(X, 2, return_indices=1), TypeError, r"max_pool2d: return_indices must be a bool"),
    ("count_include_pad_none", lambda: F.avg_pool2d(X, 2, count_include_pad=None), TypeError, r"avg_pool2d: count_include_pad must be a bool"),
    ("divisor_zero", lambda: F.avg_pool2d(X, 2, divisor_override=0), ValueError, r"avg_pool2d: divisor_override must be a non-zero int or None, got 0"),
    ("divisor_huge", lambda: F.avg_pool2d(X, 2, divisor_override=-2**63), ValueError, r"avg_pool2d: divisor_override must be at most 2147483647 \(2\*\*31 - 1\) in magnitude"),
    ("divisor_float", lambda: F.avg_pool2d(X, 2, divisor_override=2.0), TypeError, r"avg_pool2d: divisor_override must be an int, got 2.0"),
    ("output_size_zero", lambda: F.adaptive_avg_pool2d(X, 0), ValueError, r"adaptive_avg_pool2d: output_size must be positive, got 0"),
    ("output_size_negative", lambda: F.adaptive_avg_pool2d(X, (2, -1)), ValueError, r"adaptive_avg_pool2d: output_size must be positive, got \(2, -1\)"),
    ("output_size_1_tuple", lambda: F.adaptive_avg_pool2d(X, (2,)), ValueError, r"adaptive_avg_pool2d: output_size must be an int or a tuple of 2 ints \(or None\), got 1 values"),
    ("output_size_none", lambda: F.adaptive_avg_pool2d(X, None), TypeError, r"adaptive_avg_pool2d: output_size must be an int or a tuple of 2 ints \(or None\), got None"),
    ("output_size_float", lambda: F.adaptive_avg_pool2d(X, (2.5, 2)), TypeError, r"adaptive_avg_pool2d: output_size must contain ints or None, got 2.5"),
    # ---- gradients
    ("grad_input_size_not_tuple", lambda: G.conv2d_input(X, W, DY), TypeError, r"conv2d_input: input_size must be a tuple of ints"),
    ("grad_input_size_length", lambda: G.conv2d_input((8, 8), W, DY), ValueError, r"conv2d_input: input_size must have 3 or 4 entries"),
    ("grad_input_size_float", lambda: G.conv2d_input((1, 4, 8, 8.0), W, DY), TypeError, r"conv2d_input: input_size must contain ints, got 8.0"),
    ("grad_input_size_zero", lambda: G.conv2d_input((1, 4, 0, 8), W, DY), ValueError, r"conv2d_input: input_size must have positive sizes"),
    ("grad_output_shape", lambda: G.conv2d_input(X.shape, W, a(1, 6, 5, 6)), ValueError, r"conv2d_input: grad_output must have shape \(1, 6, 6, 6\) \(the output shape of the forward op\), got shape \(1, 6, 5, 6\)"),
    ("grad_output_unbatched_mismatch", lambda: G.conv2d_input((4, 8, 8), W, DY), ValueError, r"conv2d_input: grad_output must have shape \(6, 6, 6\)"),
    ("grad_weight_size", lambda: G.conv2d_weight(X, (6, 3, 3, 3), DY), ValueError, r"conv2d_weight: weight has 3 input channels per group but input has 4 channels and groups=1"),
    ("grad_weight_size_length", lambda: G.conv2d_weight(X, (6, 4, 3), DY), ValueError, r"conv2d_weight: weight_size must have 4 entries"),
    ("grad_weight_grad_output", lambda: G.conv2d_weight(X, W.shape, a(1, 5, 6, 6)), ValueError, r"conv2d_weight: grad_output must have shape \(1, 6, 6, 6\)"),
    ("grad_bias_2d", lambda: G.conv2d_bias(a(6, 6)), ValueError, r"conv2d_bias: grad_output must be 3-D .* or 4-D \(N, K, P, Q\), got shape \(6, 6\)"),
    ("max_grad_indices_shape", lambda: G.max_pool2d_input((1, 1, 4, 4), a(1, 1, 2, 2), np.zeros((1, 1, 2, 1), np.int64)), ValueError, r"max_pool2d_input: indices must have the shape of grad_output \(1, 1, 2, 2\), got shape \(1, 1, 2, 1\)"),
    ("max_grad_indices_range", lambda: G.max_pool2d_input((1, 1, 4, 4), a(1, 1, 2, 2), np.full((1, 1, 2, 2), 16, np.int64)), ValueError, r"max_pool2d_input: indices must lie in \[0, H\*W\) = \[0, 16\)"),
    ("max_grad_indices_negative", lambda: G.max_pool2d_input((1, 1, 4, 4), a(1, 1, 2, 2), np.full((1, 1, 2, 2), -1, np.int64)), ValueError, r"indices must lie in \[0, H\*W\)"),
    ("max_grad_channels", lambda: G.max_pool2d_input((1, 2, 4, 4), a(1, 1, 2, 2), np.zeros((1, 1, 2, 2), np.int64)), ValueError, r"max_pool2d_input: grad_output must have shape \(1, 2, 'P', 'Q'\)"),
    ("max_grad_indices_list", lambda: G.max_pool2d_input((1, 1, 4, 4), a(1, 1, 2, 2), [[[[0]]]]), TypeError, r"max_pool2d_input: indices must be a numpy.ndarray, got list"),
    ("avg_grad_shape", lambda: G.avg_pool2d_input((1, 1, 4, 4), a(1, 1, 3, 2), 2), ValueError, r"avg_pool2d_input: grad_output must have shape \(1, 1, 2, 2\)"),
    ("avg_grad_divisor", lambda: G.avg_pool2d_input((1, 1, 4, 4), a(1, 1, 2, 2), 2, divisor_override=0), ValueError, r"avg_pool2d_input: divisor_override must be a non-zero int"),
    # ---- geometry past 2**31 - 1: our ValueError, before any int64 arithmetic can overflow
    ("pool_huge_geometry", lambda: F.max_pool2d(X, kernel_size=2**62, stride=2**62, padding=2**61), ValueError, r"max_pool2d: kernel_size must be at most 2147483647 \(2\*\*31 - 1\), got 4611686018427387904"),
    ("pool_kernel_2_63", lambda: F.max_pool2d(X, 2**63), ValueError, r"max_pool2d: kernel_size must be at most 2147483647"),
    ("pool_stride_uint64", lambda: F.max_pool2d(X, 2, np.uint64(2**64 - 1)), ValueError, r"max_pool2d: stride must be at most 2147483647"),
    ("pool_padding_huge", lambda: F.avg_pool2d(X, 2, padding=(0, 2**63)), ValueError, r"avg_pool2d: padding must be at most 2147483647"),
    ("pool_dilation_huge", lambda: F.max_pool2d(X, 2, dilation=(1, 2**31)), ValueError, r"max_pool2d: dilation must be at most 2147483647"),
    ("conv_stride_huge", lambda: F.conv2d(X, W, stride=2**64), ValueError, r"conv2d: stride must be at most 2147483647"),
    ("conv_padding_huge", lambda: F.conv2d(X, W, padding=2**62), ValueError, r"conv2d: padding must be at most 2147483647"),
    ("conv_padding4_huge", lambda: F.conv2d(X, W, padding=(0, 0, 0, 2**63)), ValueError, r"conv2d: padding must be at most 2147483647"),
    ("conv_dilation_huge", lambda: F.conv2d(X, W, dilation=2**40), ValueError, r"conv2d: dilation must be at most 2147483647"),
    ("conv_groups_huge", lambda: F.conv2d(X, W, groups=2**63), ValueError, r"conv2d: groups must be at most 2147483647"),
    ("conv_same_huge", lambda: F.conv2d(X, a(6, 4, 5, 5), padding="same", dilation=2**31 - 1), ValueError, r"conv2d: padding must be at most 2147483647 \(2\*\*31 - 1\), got \"'same' = "),
    ("conv_grad_stride_huge", lambda: G.conv2d_input(X.shape, W, DY, stride=2**63), ValueError, r"conv2d_input: stride must be at most"),
    ("adaptive_huge", lambda: F.adaptive_avg_pool2d(X, 2**40), ValueError, r"adaptive_avg_pool2d: output_size must be at most 2147483647"),
    ("adaptive_too_big", lambda: F.adaptive_avg_pool2d(X, (2**31 - 1, 2**31 - 1)), MemoryError, r"adaptive_avg_pool2d: cannot allocate the output of shape \(1, 4, 2147483647, 2147483647\)"),
    ("conv_weight_none", lambda: F.conv2d(X, None), TypeError, r"conv2d: weight is required \(an array or a fastconv Tensor\), got None"),
    ("conv_weight_none_tensor", lambda: F.conv2d(fastconv.Tensor(X), None), TypeError, r"conv2d: weight is required"),
    ("adaptive_grad_channels", lambda: G.adaptive_avg_pool2d_input((1, 3, 4, 4), a(1, 2, 2, 2)), ValueError, r"adaptive_avg_pool2d_input: grad_output must have shape \(1, 3, 'P', 'Q'\)"),
    ("adaptive_grad_rank", lambda: G.adaptive_avg_pool2d_input((3, 4, 4), a(1, 3, 2, 2)), ValueError, r"adaptive_avg_pool2d_input: grad_output must have shape \(3, 'P', 'Q'\)"),
]


@pytest.mark.parametrize("call,exc,match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_clear_error(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_errors_are_raised_before_the_kernel(monkeypatch):
    """The Python layer raises first (the message in user terms); _C is never reached."""
    def boom(*args):
        raise AssertionError("the kernel was called")
    for name in dir(_C):
        if name.endswith(("_forward", "_backward", "_backward_input", "_backward_weight",
                          "_backward_bias")):
            monkeypatch.setattr(_C, name, boom)
    for name, call, exc, _ in CASES:
        if name in KERNEL_CHECKED:
            continue
        with pytest.raises(exc):
            call()


# Data-dependent checks done by the kernel itself, in the pass it makes anyway (a Python-side
# check would read the data once more); their messages are still the Python layer's (CASES).
KERNEL_CHECKED = {"max_grad_indices_range", "max_grad_indices_negative"}


# The binding re-checks everything: direct calls with bad arrays raise, never crash.
C_CASES = [
    ("not_contiguous", lambda: _C.max_pool2d_forward(a(1, 1, 4, 8)[..., ::2], a(1, 1, 2, 2), None, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False), ValueError, r"C-contiguous"),
    ("read_only_out", lambda: _C.avg_pool2d_forward(a(1, 1, 4, 4), _ro(a(1, 1, 2, 2)), (2, 2), (2, 2), (0, 0, 0, 0), False, True, 0), ValueError, r"writeable"),
    ("wrong_out_shape", lambda: _C.conv2d_forward(X, W, None, a(1, 6, 5, 6), (1, 1), (0, 0, 0, 0), (1, 1), 1), ValueError, r"out must have shape \(1, 6, 6, 6\)"),
    ("out_aliases_input", lambda: _C.adaptive_avg_pool2d_forward(_shared[0], _shared[1]), ValueError, r"overlaps"),
    ("int_dtype", lambda: _C.conv2d_backward_bias(np.ones((1, 2, 2, 2), np.int64), np.ones(2, np.int64)), TypeError, r"float32 or float64"),
    ("mixed_dtype", lambda: _C.conv2d_forward(X, W.astype(f64), None, a(1, 6, 6, 6), (1, 1), (0, 0, 0, 0), (1, 1), 1), TypeError, r"must match"),
    ("bad_indices", lambda: _C.max_pool2d_backward(a(1, 1, 2, 2), np.full((1, 1, 2, 2), 99, np.int64), a(1, 1, 4, 4)), ValueError, r"indices has 4 values outside"),
    ("pool_pad_over_half", lambda: _C.max_pool2d_forward(a(1, 1, 4, 4), a(1, 1, 3, 3), None, (2, 2), (1, 1), (2, 0, 0, 0), (1, 1), False), ValueError, r"at most half"),
    ("negative_stride", lambda: _C.conv2d_forward(X, W, None, a(1, 6, 6, 6), (0, 1), (0, 0, 0, 0), (1, 1), 1), ValueError, r"stride must be positive"),
    ("huge_pool_kernel", lambda: _C.max_pool2d_forward(a(1, 1, 4, 4), a(1, 1, 1, 1), None, (2**62, 2**62), (2**62, 2**62), (2**61,) * 4, (1, 1), False), ValueError, r"max_pool2d: kernel_size must be at most 2147483647"),
    ("huge_conv_padding", lambda: _C.conv2d_forward(X, W, None, a(1, 6, 6, 6), (1, 1), (2**62, 0, 0, 0), (1, 1), 1), ValueError, r"conv2d: padding must be at most 2147483647"),
    ("huge_divisor", lambda: _C.avg_pool2d_forward(a(1, 1, 4, 4), a(1, 1, 2, 2), (2, 2), (2, 2), (0, 0, 0, 0), False, True, -2**40), ValueError, r"divisor_override must be at most 2147483647 in magnitude"),
]


def _ro(arr):
    arr.setflags(write=False)
    return arr


_buf = np.ones(32, f32)
_shared = (_buf[:16].reshape(1, 1, 4, 4), _buf[8:12].reshape(1, 1, 2, 2))


@pytest.mark.parametrize("call,exc,match", [c[1:] for c in C_CASES], ids=[c[0] for c in C_CASES])
def test_binding_rechecks(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_import_from_a_source_tree_without_a_build_says_what_to_do(tmp_path):
    """`import fastconv` in the repository root finds fastconv/ without _C: a clear ImportError
    (not 'cannot import name _C from partially initialized module')."""
    import os
    import shutil
    import subprocess
    import sys
    source = os.path.dirname(os.path.realpath(fastconv._backend.__file__))
    shutil.copytree(source, tmp_path / "fastconv",
                    ignore=shutil.ignore_patterns("_C*", "_cuda*", "__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", "import fastconv"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    message = r.stderr.strip().splitlines()[-1]
    assert message.startswith("ImportError: fastconv's compiled extension (fastconv._C) is "
                              "missing: Python is importing the fastconv source tree at "), message
    assert "pip install ." in message and "tools/dev_build.sh" in message, message
