// THE output-size helper: the one place in C++ where the length of a convolution or pooling
// output along one axis is computed. Python's twin is fastconv/_shape.py:output_size; the tests
// compare the two.
//
//   out = floor_or_ceil((in + pad_lo + pad_hi - dilation * (k - 1) - 1) / stride) + 1
//
// With ceil_mode (pooling), the last window must still start inside the input or the leading
// padding, as in PyTorch (ATen/native/Pool.h pooling_output_shape_pad_lr).
#pragma once
#include <cstdint>

namespace fastconv {

// The largest kernel size, stride, padding, dilation or groups the bindings accept (2**31 - 1;
// Python's twin: fastconv/_shape.py MAX_GEOMETRY). It keeps every sum and product below formed
// from these values far from int64 overflow.
constexpr int64_t kMaxGeometry = 2147483647;

inline int64_t output_size(int64_t in, int64_t k, int64_t stride, int64_t pad_lo, int64_t pad_hi,
                           int64_t dilation, bool ceil_mode) {
  const int64_t span = in + pad_lo + pad_hi - dilation * (k - 1) - 1;
  if (span < 0) return 0;  // kernel larger than the padded input; callers reject this
  int64_t out = (ceil_mode ? (span + stride - 1) / stride : span / stride) + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad_lo) --out;
  return out;
}

}  // namespace fastconv
