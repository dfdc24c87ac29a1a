// Optimizer steps on the CPU, float32 and float64: one multi-threaded pass over a parameter, its
// gradient and its state, in place of the array expressions of fastconv/optim (sgd.py, adam.py),
// which make 6-15 single-threaded passes with temporaries. The arithmetic is theirs, operation
// for operation and rounding for rounding (this file is compiled without FMA contraction), so
// the results are bit-identical to the array code (tests/test_optim_cpu.py checks):
//
//   sgd_step:   d = maximize ? -g : g;  d = d + wd * p  (wd != 0)
//               momentum != 0: buf = first ? d : buf * momentum + (1 - dampening) * d
//                              d = nesterov ? d + momentum * buf : buf
//               p = p + (-lr) * d
//   adam_step:  d = maximize ? -g : g
//               wd != 0: decoupled ? p = p * (1 - lr * wd) : d = d + wd * p
//               m = lerp(m, d, 1 - beta1) as torch rounds it; v = v * beta2 + ((1 - beta2) * d) * d
//               amsgrad: vmax = max(vmax, v), used below in place of v
//               p = p + ((-step_size) * m) / (sqrt(v) / bias2_sqrt + eps)
//
// Scalars are rounded to the array's dtype first, as numpy does with Python floats. Arrays must
// be C-contiguous with n elements and must not overlap (the binding checks).
#pragma once
#include <cstdint>

#include "common/params.h"
#include "cpu/isa.h"

#define FC_OPTIM_CPU_DECLS_T(T)                                                                \
  void sgd_step(const SgdParams& p, T* param, const T* grad, T* buf);                          \
  void adam_step(const AdamParams& p, T* param, const T* grad, T* exp_avg, T* exp_avg_sq,      \
                 T* max_exp_avg_sq);
#define FC_OPTIM_CPU_DECLS FC_OPTIM_CPU_DECLS_T(float) FC_OPTIM_CPU_DECLS_T(double)

namespace fastconv {
namespace cpu {
FC_FOR_EACH_ISA(FC_OPTIM_CPU_DECLS)
FC_OPTIM_CPU_DECLS
}  // namespace cpu
}  // namespace fastconv
