// Dense and grouped 2-D convolution on the CPU: forward, input gradient, weight gradient, bias
// gradient. float32 and float64, NCHW, weights (K, C/groups, R, S). See conv2d_cpu.cpp.
//
// Contract for every entry point: arrays are C-contiguous and do not overlap; outputs are fully
// overwritten (never accumulated into); bias may be nullptr.
#pragma once
#include <string>

#include "common/params.h"
#include "cpu/isa.h"

#define FC_CONV2D_CPU_DECLS_T(T)                                                           \
  void conv2d_forward(const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y); \
  void conv2d_backward_input(const Conv2dParams& p, const T* dy, const T* w, T* dx);       \
  void conv2d_backward_weight(const Conv2dParams& p, const T* dy, const T* x, T* dw);      \
  void conv2d_backward_bias(const Conv2dParams& p, const T* dy, T* db);
#define FC_CONV2D_CPU_DECLS FC_CONV2D_CPU_DECLS_T(float) FC_CONV2D_CPU_DECLS_T(double)

namespace fastconv {
namespace cpu {
FC_FOR_EACH_ISA(FC_CONV2D_CPU_DECLS)
FC_CONV2D_CPU_DECLS  // run-time dispatched (dispatch.cpp); depthwise shapes go to depthwise_conv2d

// Algorithm of the input gradient for stride > 1: auto (the measured rule use_phase_dgrad in
// conv2d_cpu.cpp, a function of the shape only), phase (stride-phase decomposition: one stride-1
// convolution of dY per phase of the input pixels, each dx pixel written once) or col2im (GEMM
// into a column buffer, then scatter-add). Both are deterministic. FASTCONV_STRIDED_DGRAD sets
// the initial value; set_strided_dgrad raises ValueError on an unknown name. Defined in
// dispatch.cpp.
enum class StridedDgrad { automatic = 0, phase = 1, col2im = 2 };
StridedDgrad strided_dgrad();
void set_strided_dgrad(const std::string& name);  // "auto" | "phase" | "col2im"
std::string strided_dgrad_name(StridedDgrad);
}  // namespace cpu
}  // namespace fastconv
