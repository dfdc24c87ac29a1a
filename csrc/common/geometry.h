// Geometry checks shared by the bindings: validate convolution / pooling arguments and fill the
// params structs (common/params.h), with errors naming the op and the argument, and a one-line
// description of a problem's shapes for error messages (e.g. a failed CUDA launch).
#pragma once
#include <array>
#include <cstdint>
#include <string>

#include "common/check.h"
#include "common/output_size.h"
#include "common/params.h"

namespace fastconv {

using Pair = std::array<int64_t, 2>;
using Quad = std::array<int64_t, 4>;
using Dims4 = std::array<int64_t, 4>;

// Every geometry value at most kMaxGeometry (common/output_size.h), so that no int64 sum of them
// can overflow.
template <size_t n>
inline void check_geometry(const char* op, const char* name, const std::array<int64_t, n>& v) {
  for (int64_t x : v)
    FC_CHECK(x <= kMaxGeometry, op, ": ", name, " must be at most ", kMaxGeometry, ", got ", x);
}

// Conv2dParams from the input shape (N, C, H, W) and the weight shape (K, C/groups, R, S).
inline Conv2dParams make_conv_params(const char* op, const Dims4& xs, const Dims4& ws, Pair stride,
                                     Quad pad, Pair dil, int64_t groups) {
  FC_CHECK(groups >= 1, op, ": groups must be a positive integer, got ", groups);
  FC_CHECK(stride[0] >= 1 && stride[1] >= 1, op, ": stride must be positive, got (", stride[0],
           ", ", stride[1], ")");
  FC_CHECK(dil[0] >= 1 && dil[1] >= 1, op, ": dilation must be positive, got (", dil[0], ", ",
           dil[1], ")");
  for (int64_t v : pad)
    FC_CHECK(v >= 0, op, ": padding must be non-negative, got (", pad[0], ", ", pad[1], ", ",
             pad[2], ", ", pad[3], ") as (top, bottom, left, right)");
  FC_CHECK(groups <= kMaxGeometry, op, ": groups must be at most ", kMaxGeometry, ", got ", groups);
  check_geometry(op, "stride", stride);
  check_geometry(op, "dilation", dil);
  check_geometry(op, "padding", pad);
  check_geometry(op, "kernel size", std::array<int64_t, 2>{ws[2], ws[3]});
  Conv2dParams p;
  p.N = xs[0], p.C = xs[1], p.H = xs[2], p.W = xs[3];
  p.K = ws[0], p.R = ws[2], p.S = ws[3];
  p.groups = groups;
  p.stride_h = stride[0], p.stride_w = stride[1];
  p.dil_h = dil[0], p.dil_w = dil[1];
  p.pad_t = pad[0], p.pad_b = pad[1], p.pad_l = pad[2], p.pad_r = pad[3];
  FC_CHECK(p.C % groups == 0, op, ": input has ", p.C,
           " channels, which is not divisible by groups=", groups);
  FC_CHECK(p.K % groups == 0, op, ": weight has ", p.K,
           " output channels, which is not divisible by groups=", groups);
  FC_CHECK(ws[1] == p.C / groups, op, ": weight has ", ws[1],
           " input channels per group but input has ", p.C, " channels and groups=", groups,
           " (expected ", p.C / groups, ")");
  FC_CHECK(p.K >= 1 && p.R >= 1 && p.S >= 1, op, ": weight must have non-zero sizes");
  const int64_t eh = p.dil_h * (p.R - 1) + 1, ew = p.dil_w * (p.S - 1) + 1;
  FC_CHECK(p.H + p.pad_t + p.pad_b >= eh && p.W + p.pad_l + p.pad_r >= ew, op,
           ": padded input size (", p.H + p.pad_t + p.pad_b, " x ", p.W + p.pad_l + p.pad_r,
           ") is smaller than the dilated kernel (", eh, " x ", ew, ")");
  p.P = output_size(p.H, p.R, p.stride_h, p.pad_t, p.pad_b, p.dil_h, false);
  p.Q = output_size(p.W, p.S, p.stride_w, p.pad_l, p.pad_r, p.dil_w, false);
  return p;
}

// Pool2dParams with the window geometry only (kernel, stride, padding, dilation), checked:
// PyTorch's limits (positive sizes, padding at most half the kernel per side).
inline Pool2dParams pool_window_params(const char* op, Pair kernel, Pair stride, Quad pad,
                                       Pair dil) {
  FC_CHECK(kernel[0] >= 1 && kernel[1] >= 1, op, ": kernel_size must be positive, got (",
           kernel[0], ", ", kernel[1], ")");
  FC_CHECK(stride[0] >= 1 && stride[1] >= 1, op, ": stride must be positive, got (", stride[0],
           ", ", stride[1], ")");
  FC_CHECK(dil[0] >= 1 && dil[1] >= 1, op, ": dilation must be positive, got (", dil[0], ", ",
           dil[1], ")");
  check_geometry(op, "kernel_size", kernel);
  check_geometry(op, "stride", stride);
  check_geometry(op, "dilation", dil);
  Pool2dParams p;
  p.R = kernel[0], p.S = kernel[1];
  p.stride_h = stride[0], p.stride_w = stride[1];
  p.dil_h = dil[0], p.dil_w = dil[1];
  p.pad_t = pad[0], p.pad_b = pad[1], p.pad_l = pad[2], p.pad_r = pad[3];
  for (int i = 0; i < 4; ++i) {
    const int64_t k = i < 2 ? p.R : p.S;
    FC_CHECK(pad[i] >= 0 && pad[i] <= k / 2, op,
             ": padding must be non-negative and at most half the kernel size, got (", pad[0],
             ", ", pad[1], ", ", pad[2], ", ", pad[3], ") as (top, bottom, left, right) for kernel (",
             p.R, ", ", p.S, ")");
  }
  return p;
}

// Pool2dParams from the input shape (N, C, H, W) and the window; the output size from the one
// output-size helper, which must be non-empty.
inline Pool2dParams make_pool_params(const char* op, const Dims4& xs, Pair kernel, Pair stride,
                                     Quad pad, Pair dil, bool ceil_mode) {
  Pool2dParams p = pool_window_params(op, kernel, stride, pad, dil);
  p.N = xs[0], p.C = xs[1], p.H = xs[2], p.W = xs[3];
  p.ceil_mode = ceil_mode;
  p.P = output_size(p.H, p.R, p.stride_h, p.pad_t, p.pad_b, p.dil_h, ceil_mode);
  p.Q = output_size(p.W, p.S, p.stride_w, p.pad_l, p.pad_r, p.dil_w, ceil_mode);
  FC_CHECK(p.P >= 1 && p.Q >= 1, op, ": input of size (", p.H, " x ", p.W, ") with kernel (",
           p.dil_h * (p.R - 1) + 1, " x ", p.dil_w * (p.S - 1) + 1, "), stride (", p.stride_h, ", ",
           p.stride_w, ") and padding gives an empty output (", p.P, " x ", p.Q, ")");
  return p;
}

// First output position along one axis whose dilated window has no tap inside [0, in), or -1.
// (With dilation, taps can straddle the whole input: in=2, k=2, dilation=3, pad=1 puts them at -1
// and 2. PyTorch returns -inf and an out-of-range index there; we refuse the geometry.)
// O(1) per position: the first tap at or after 0 is the only candidate that matters, so a huge
// kernel costs nothing.
inline int64_t first_empty_window(int64_t in, int64_t k, int64_t stride, int64_t pad_lo,
                                  int64_t dil, int64_t out) {
  for (int64_t o = 0; o < out; ++o) {
    const int64_t start = o * stride - pad_lo;                // position of tap 0
    const int64_t r0 = start >= 0 ? 0 : (-start + dil - 1) / dil;
    if (!(r0 < k && start + r0 * dil < in)) return o;
  }
  return -1;
}

inline std::string describe(const Conv2dParams& p) {
  return str_cat("input (", p.N, ", ", p.C, ", ", p.H, ", ", p.W, "), weight (", p.K, ", ",
                 p.Cg(), ", ", p.R, ", ", p.S, "), output (", p.N, ", ", p.K, ", ", p.P, ", ", p.Q,
                 "), stride (", p.stride_h, ", ", p.stride_w, "), padding (", p.pad_t, ", ",
                 p.pad_b, ", ", p.pad_l, ", ", p.pad_r, "), dilation (", p.dil_h, ", ", p.dil_w,
                 "), groups ", p.groups);
}

inline std::string describe(const Pool2dParams& p) {
  return str_cat("input (", p.N, ", ", p.C, ", ", p.H, ", ", p.W, "), output (", p.N, ", ", p.C,
                 ", ", p.P, ", ", p.Q, "), kernel (", p.R, ", ", p.S, "), stride (", p.stride_h,
                 ", ", p.stride_w, "), padding (", p.pad_t, ", ", p.pad_b, ", ", p.pad_l, ", ",
                 p.pad_r, ")");
}

}  // namespace fastconv
