// Per-channel affine map with an optional clamp on the CPU, float32 and float64 (inference
// BatchNorm folded into one scale and shift per channel, fused with ReLU / ReLU6):
//
//   y[n, c, l] = clamp(x[n, c, l] * scale[c] + shift[c], lo, hi)     x viewed as (N, C, L)
//
// One pass over memory, multi-threaded over the N*C rows of L contiguous elements. NaN propagates
// through the clamp (as numpy's maximum / minimum). y may alias x exactly (in place); it must not
// overlap scale or shift (the binding checks). See channel_affine_cpu.cpp.
#pragma once
#include <cstdint>

#include "common/params.h"
#include "cpu/isa.h"

#define FC_CHANNEL_AFFINE_CPU_DECLS_T(T) \
  void channel_affine(const ChannelAffineParams& p, const T* x, const T* scale, const T* shift, T* y);
#define FC_CHANNEL_AFFINE_CPU_DECLS \
  FC_CHANNEL_AFFINE_CPU_DECLS_T(float) FC_CHANNEL_AFFINE_CPU_DECLS_T(double)

namespace fastconv {
namespace cpu {
FC_FOR_EACH_ISA(FC_CHANNEL_AFFINE_CPU_DECLS)
FC_CHANNEL_AFFINE_CPU_DECLS
}  // namespace cpu
}  // namespace fastconv
