// Element-wise helpers on the CPU, float32 and float64, multi-threaded over n contiguous elements
// (chunks of at least 32K): the autograd's gradient sums and copies of large numpy arrays
// (fastconv/autograd.py), which numpy runs on one thread.
//
//   add(n, a, b, out)     out[i] = a[i] + b[i]    (numpy's add, bit for bit)
//   copy(n, src, dst)     dst[i] = src[i]
//
// out may equal a or b exactly; otherwise no overlap (the binding checks).
#pragma once
#include <cstdint>

#include "cpu/isa.h"

#define FC_ELEMENTWISE_CPU_DECLS_T(T)                         \
  void add(int64_t n, const T* a, const T* b, T* out);        \
  void copy(int64_t n, const T* src, T* dst);
#define FC_ELEMENTWISE_CPU_DECLS FC_ELEMENTWISE_CPU_DECLS_T(float) FC_ELEMENTWISE_CPU_DECLS_T(double)

namespace fastconv {
namespace cpu {
FC_FOR_EACH_ISA(FC_ELEMENTWISE_CPU_DECLS)
FC_ELEMENTWISE_CPU_DECLS
}  // namespace cpu
}  // namespace fastconv
