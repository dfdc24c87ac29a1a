// Element-wise helpers on the CPU (see elementwise_cpu.h): loops the compiler vectorises, split
// by parallel_for into chunks of at least kGrainElems elements.

#include "cpu/elementwise_cpu.h"

#include <cstdint>
#include <cstring>

#include "common/parallel.h"

FC_ISA_BEGIN
namespace {

constexpr int64_t kGrainElems = 32768;

template <class T>
void add_impl(int64_t n, const T* a, const T* b, T* out) {
  parallel_for(n, kGrainElems, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = a[i] + b[i];
  });
}

template <class T>
void copy_impl(int64_t n, const T* src, T* dst) {
  parallel_for(n, kGrainElems, [&](int64_t begin, int64_t end) {
    std::memcpy(dst + begin, src + begin, static_cast<size_t>(end - begin) * sizeof(T));
  });
}

}  // namespace

void add(int64_t n, const float* a, const float* b, float* out) { add_impl(n, a, b, out); }
void add(int64_t n, const double* a, const double* b, double* out) { add_impl(n, a, b, out); }
void copy(int64_t n, const float* src, float* dst) { copy_impl(n, src, dst); }
void copy(int64_t n, const double* src, double* dst) { copy_impl(n, src, dst); }

FC_ISA_END
