// Training-mode batch normalisation on the CPU, float32 and float64, for x viewed as (N, C, L)
// (L = the product of the axes after the channel axis), C-contiguous:
//
//   batch_norm_stats            mean[c], var[c] (biased) over the N * L values of channel c, float64
//   batch_norm_forward          y = (x - mean[c]) * scale[c] + shift[c]
//   batch_norm_backward_reduce  sum_g[c] = sum g,  sum_gxc[c] = sum g * (x - mean[c]), float64
//   batch_norm_backward_input   dx = g * a[c] + (x - mean[c]) * b[c] + e[c]
//
// Each is one pass over memory, multi-threaded over the N * C rows; the sums are per row in
// float64 and combined in row order, so results do not depend on the thread count. The Python
// layer (fastconv/nn/_functions.py, BatchNorm) derives scale, shift, a, b and e. Outputs must
// not overlap inputs (the binding checks). See batch_norm_cpu.cpp.
#pragma once
#include <cstdint>

#include "common/params.h"
#include "cpu/isa.h"

#define FC_BATCH_NORM_CPU_DECLS_T(T)                                                          \
  void batch_norm_stats(const BatchNormParams& p, const T* x, double* mean, double* var);      \
  void batch_norm_forward(const BatchNormParams& p, const T* x, const T* mean, const T* scale,  \
                          const T* shift, T* y);                                               \
  void batch_norm_backward_reduce(const BatchNormParams& p, const T* g, const T* x,            \
                                  const double* mean, double* sum_g, double* sum_gxc);         \
  void batch_norm_backward_input(const BatchNormParams& p, const T* g, const T* x,             \
                                 const T* mean, const T* a, const T* b, const T* e, T* dx);
#define FC_BATCH_NORM_CPU_DECLS FC_BATCH_NORM_CPU_DECLS_T(float) FC_BATCH_NORM_CPU_DECLS_T(double)

namespace fastconv {
namespace cpu {
FC_FOR_EACH_ISA(FC_BATCH_NORM_CPU_DECLS)
FC_BATCH_NORM_CPU_DECLS
}  // namespace cpu
}  // namespace fastconv
