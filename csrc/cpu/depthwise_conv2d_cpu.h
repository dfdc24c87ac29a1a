// Depthwise 2-D convolution on the CPU (groups == C, K = C * multiplier): forward, input
// gradient, weight gradient. Same params struct and contract as conv2d_cpu.h; the bias gradient
// is conv2d_backward_bias. See depthwise_conv2d_cpu.cpp.
#pragma once
#include "common/params.h"
#include "cpu/isa.h"

#define FC_DEPTHWISE_CPU_DECLS_T(T)                                                                  \
  void depthwise_conv2d_forward(const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y); \
  void depthwise_conv2d_backward_input(const Conv2dParams& p, const T* dy, const T* w, T* dx);       \
  void depthwise_conv2d_backward_weight(const Conv2dParams& p, const T* dy, const T* x, T* dw);
#define FC_DEPTHWISE_CPU_DECLS FC_DEPTHWISE_CPU_DECLS_T(float) FC_DEPTHWISE_CPU_DECLS_T(double)

namespace fastconv {
namespace cpu {
FC_FOR_EACH_ISA(FC_DEPTHWISE_CPU_DECLS)
FC_DEPTHWISE_CPU_DECLS
}  // namespace cpu
}  // namespace fastconv
