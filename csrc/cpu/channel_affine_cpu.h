// Per-channel affine map with an optional clamp on the CPU, float32 and float64 (inference
// BatchNorm folded into one scale and shift per channel, fused with ReLU / ReLU6):
//
//   y[n, c, l] = clamp(x[n, c, l] * scale[c] + shift[c], lo, hi)     x viewed as (N, C, L)
//
// One pass over memory, multi-threaded over the N*C rows of L contiguous elements. NaN propagates
// through the clamp (as numpy's maximum / minimum). y may alias x exactly (in place); it must not
// overlap scale or shift (the binding checks). See channel_affine_cpu.cpp.
//
// The clamp's gradient, from its output y (scale and shift are not involved):
//   dx[i] = dy[i] where lo < y[i] < hi (each bound only when its flag is set), else 0
// which for ReLU (y = max(x, 0)) and ReLU6 is the derivative at x: y is strictly inside the
// bounds exactly where x is. NaN in y gives 0.
#pragma once
#include <cstdint>

#include "common/params.h"
#include "cpu/isa.h"

#define FC_CHANNEL_AFFINE_CPU_DECLS_T(T)                                                          \
  void channel_affine(const ChannelAffineParams& p, const T* x, const T* scale, const T* shift, T* y); \
  void clamp_backward(const ChannelAffineParams& p, const T* dy, const T* y, T* dx);
#define FC_CHANNEL_AFFINE_CPU_DECLS \
  FC_CHANNEL_AFFINE_CPU_DECLS_T(float) FC_CHANNEL_AFFINE_CPU_DECLS_T(double)

namespace fastconv {
namespace cpu {
FC_FOR_EACH_ISA(FC_CHANNEL_AFFINE_CPU_DECLS)
FC_CHANNEL_AFFINE_CPU_DECLS
}  // namespace cpu
}  // namespace fastconv
