// Max and average pooling on the CPU, forward and backward, float32 and float64, NCHW, with
// PyTorch's semantics (ceil_mode, count_include_pad, divisor_override, dilation for max pooling,
// NaN propagation, argmax indices as flat offsets h * W + w within each (n, c) plane), plus
// adaptive average pooling. See pool2d_cpu.cpp.
//
// Outputs are fully overwritten. indices may be nullptr in max_pool2d_forward (inference).
// max_pool2d_backward returns the number of indices outside [0, H*W), which it skips; the
// binding turns a non-zero count into a ValueError.
#pragma once
#include <cstdint>

#include "common/params.h"
#include "cpu/isa.h"

#define FC_POOL2D_CPU_DECLS_T(T)                                                                \
  void max_pool2d_forward(const Pool2dParams& p, const T* x, T* y, int64_t* indices);          \
  int64_t max_pool2d_backward(const Pool2dParams& p, const T* dy, const int64_t* indices, T* dx); \
  void avg_pool2d_forward(const Pool2dParams& p, const T* x, T* y);                             \
  void avg_pool2d_backward(const Pool2dParams& p, const T* dy, T* dx);                          \
  void adaptive_avg_pool2d_forward(const Pool2dParams& p, const T* x, T* y);                    \
  void adaptive_avg_pool2d_backward(const Pool2dParams& p, const T* dy, T* dx);
#define FC_POOL2D_CPU_DECLS FC_POOL2D_CPU_DECLS_T(float) FC_POOL2D_CPU_DECLS_T(double)

namespace fastconv {
namespace cpu {
FC_FOR_EACH_ISA(FC_POOL2D_CPU_DECLS)
FC_POOL2D_CPU_DECLS
}  // namespace cpu
}  // namespace fastconv
