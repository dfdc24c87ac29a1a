// A minimal SIMD vector for the CPU kernels, chosen by the instruction set the including file is
// compiled for (FC_ISA_avx512 / FC_ISA_avx2 / baseline = SSE2 on x86-64, scalar elsewhere).
// Kernel files are compiled once per instruction set (see CMakeLists.txt), so one kernel source
// gives every variant; csrc/cpu/dispatch.cpp picks one at run time.
//
//   Vec<T>::size               lanes
//   Vec<T>::load(p) / store(p) unaligned
//   Vec<T>::load_partial(p, n) / store_partial(p, n)   first n lanes (n < size), rest zero
//   set1, zero, add, sub, mul, fmadd(a, b, c) = a*b + c, max_nan (NaN-propagating max)
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define FC_X86 1
#endif

namespace fastconv {
namespace cpu {
namespace FC_ISA {

template <class T>
struct Vec;

// Shared helpers for partial loads/stores through a small stack buffer.
#define FC_VEC_PARTIAL(T, N)                                          \
  static Vec load_partial(const T* p, int n) {                        \
    alignas(64) T buf[N] = {};                                        \
    std::memcpy(buf, p, sizeof(T) * n);                               \
    return load(buf);                                                 \
  }                                                                   \
  void store_partial(T* p, int n) const {                             \
    alignas(64) T buf[N];                                             \
    store(buf);                                                       \
    std::memcpy(p, buf, sizeof(T) * n);                               \
  }

#if defined(FC_ISA_avx512)
template <>
struct Vec<float> {
  static constexpr int size = 16;
  __m512 v;
  static Vec load(const float* p) { return {_mm512_loadu_ps(p)}; }
  void store(float* p) const { _mm512_storeu_ps(p, v); }
  static Vec load_partial(const float* p, int n) {
    return {_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p)};
  }
  void store_partial(float* p, int n) const {
    _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), v);
  }
  static Vec set1(float x) { return {_mm512_set1_ps(x)}; }
  static Vec zero() { return {_mm512_setzero_ps()}; }
  friend Vec operator+(Vec a, Vec b) { return {_mm512_add_ps(a.v, b.v)}; }
  friend Vec operator-(Vec a, Vec b) { return {_mm512_sub_ps(a.v, b.v)}; }
  friend Vec operator*(Vec a, Vec b) { return {_mm512_mul_ps(a.v, b.v)}; }
  static Vec fmadd(Vec a, Vec b, Vec c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
  // max that returns NaN when either input is NaN (b is the running maximum).
  static Vec max_nan(Vec a, Vec b) {
    __m512 m = _mm512_max_ps(a.v, b.v);
    __mmask16 nan = _mm512_cmp_ps_mask(a.v, a.v, _CMP_UNORD_Q);
    return {_mm512_mask_blend_ps(nan, m, a.v)};
  }
  float reduce_add() const { return _mm512_reduce_add_ps(v); }
};
template <>
struct Vec<double> {
  static constexpr int size = 8;
  __m512d v;
  static Vec load(const double* p) { return {_mm512_loadu_pd(p)}; }
  void store(double* p) const { _mm512_storeu_pd(p, v); }
  static Vec load_partial(const double* p, int n) {
    return {_mm512_maskz_loadu_pd(static_cast<__mmask8>((1u << n) - 1), p)};
  }
  void store_partial(double* p, int n) const {
    _mm512_mask_storeu_pd(p, static_cast<__mmask8>((1u << n) - 1), v);
  }
  static Vec set1(double x) { return {_mm512_set1_pd(x)}; }
  static Vec zero() { return {_mm512_setzero_pd()}; }
  friend Vec operator+(Vec a, Vec b) { return {_mm512_add_pd(a.v, b.v)}; }
  friend Vec operator-(Vec a, Vec b) { return {_mm512_sub_pd(a.v, b.v)}; }
  friend Vec operator*(Vec a, Vec b) { return {_mm512_mul_pd(a.v, b.v)}; }
  static Vec fmadd(Vec a, Vec b, Vec c) { return {_mm512_fmadd_pd(a.v, b.v, c.v)}; }
  static Vec max_nan(Vec a, Vec b) {
    __m512d m = _mm512_max_pd(a.v, b.v);
    __mmask8 nan = _mm512_cmp_pd_mask(a.v, a.v, _CMP_UNORD_Q);
    return {_mm512_mask_blend_pd(nan, m, a.v)};
  }
  double reduce_add() const { return _mm512_reduce_add_pd(v); }
};

#elif defined(FC_ISA_avx2)
template <>
struct Vec<float> {
  static constexpr int size = 8;
  __m256 v;
  static Vec load(const float* p) { return {_mm256_loadu_ps(p)}; }
  void store(float* p) const { _mm256_storeu_ps(p, v); }
  FC_VEC_PARTIAL(float, 8)
  static Vec set1(float x) { return {_mm256_set1_ps(x)}; }
  static Vec zero() { return {_mm256_setzero_ps()}; }
  friend Vec operator+(Vec a, Vec b) { return {_mm256_add_ps(a.v, b.v)}; }
  friend Vec operator-(Vec a, Vec b) { return {_mm256_sub_ps(a.v, b.v)}; }
  friend Vec operator*(Vec a, Vec b) { return {_mm256_mul_ps(a.v, b.v)}; }
  static Vec fmadd(Vec a, Vec b, Vec c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
  static Vec max_nan(Vec a, Vec b) {
    __m256 m = _mm256_max_ps(a.v, b.v);
    __m256 nan = _mm256_cmp_ps(a.v, a.v, _CMP_UNORD_Q);
    return {_mm256_blendv_ps(m, a.v, nan)};
  }
  float reduce_add() const {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
  }
};
template <>
struct Vec<double> {
  static constexpr int size = 4;
  __m256d v;
  static Vec load(const double* p) { return {_mm256_loadu_pd(p)}; }
  void store(double* p) const { _mm256_storeu_pd(p, v); }
  FC_VEC_PARTIAL(double, 4)
  static Vec set1(double x) { return {_mm256_set1_pd(x)}; }
  static Vec zero() { return {_mm256_setzero_pd()}; }
  friend Vec operator+(Vec a, Vec b) { return {_mm256_add_pd(a.v, b.v)}; }
  friend Vec operator-(Vec a, Vec b) { return {_mm256_sub_pd(a.v, b.v)}; }
  friend Vec operator*(Vec a, Vec b) { return {_mm256_mul_pd(a.v, b.v)}; }
  static Vec fmadd(Vec a, Vec b, Vec c) { return {_mm256_fmadd_pd(a.v, b.v, c.v)}; }
  static Vec max_nan(Vec a, Vec b) {
    __m256d m = _mm256_max_pd(a.v, b.v);
    __m256d nan = _mm256_cmp_pd(a.v, a.v, _CMP_UNORD_Q);
    return {_mm256_blendv_pd(m, a.v, nan)};
  }
  double reduce_add() const {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    return _mm_cvtsd_f64(s);
  }
};

#elif defined(FC_X86)  // baseline x86-64: SSE2
template <>
struct Vec<float> {
  static constexpr int size = 4;
  __m128 v;
  static Vec load(const float* p) { return {_mm_loadu_ps(p)}; }
  void store(float* p) const { _mm_storeu_ps(p, v); }
  FC_VEC_PARTIAL(float, 4)
  static Vec set1(float x) { return {_mm_set1_ps(x)}; }
  static Vec zero() { return {_mm_setzero_ps()}; }
  friend Vec operator+(Vec a, Vec b) { return {_mm_add_ps(a.v, b.v)}; }
  friend Vec operator-(Vec a, Vec b) { return {_mm_sub_ps(a.v, b.v)}; }
  friend Vec operator*(Vec a, Vec b) { return {_mm_mul_ps(a.v, b.v)}; }
  static Vec fmadd(Vec a, Vec b, Vec c) { return {_mm_add_ps(_mm_mul_ps(a.v, b.v), c.v)}; }
  static Vec max_nan(Vec a, Vec b) {
    __m128 m = _mm_max_ps(a.v, b.v);
    __m128 nan = _mm_cmpunord_ps(a.v, a.v);
    return {_mm_or_ps(_mm_and_ps(nan, a.v), _mm_andnot_ps(nan, m))};
  }
  float reduce_add() const {
    __m128 s = _mm_add_ps(v, _mm_movehl_ps(v, v));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
  }
};
template <>
struct Vec<double> {
  static constexpr int size = 2;
  __m128d v;
  static Vec load(const double* p) { return {_mm_loadu_pd(p)}; }
  void store(double* p) const { _mm_storeu_pd(p, v); }
  FC_VEC_PARTIAL(double, 2)
  static Vec set1(double x) { return {_mm_set1_pd(x)}; }
  static Vec zero() { return {_mm_setzero_pd()}; }
  friend Vec operator+(Vec a, Vec b) { return {_mm_add_pd(a.v, b.v)}; }
  friend Vec operator-(Vec a, Vec b) { return {_mm_sub_pd(a.v, b.v)}; }
  friend Vec operator*(Vec a, Vec b) { return {_mm_mul_pd(a.v, b.v)}; }
  static Vec fmadd(Vec a, Vec b, Vec c) { return {_mm_add_pd(_mm_mul_pd(a.v, b.v), c.v)}; }
  static Vec max_nan(Vec a, Vec b) {
    __m128d m = _mm_max_pd(a.v, b.v);
    __m128d nan = _mm_cmpunord_pd(a.v, a.v);
    return {_mm_or_pd(_mm_and_pd(nan, a.v), _mm_andnot_pd(nan, m))};
  }
  double reduce_add() const { return _mm_cvtsd_f64(_mm_add_sd(v, _mm_unpackhi_pd(v, v))); }
};

#else  // portable scalar fallback
template <class T>
struct Vec {
  static constexpr int size = 1;
  T v;
  static Vec load(const T* p) { return {*p}; }
  void store(T* p) const { *p = v; }
  static Vec load_partial(const T* p, int n) { return {n > 0 ? *p : T(0)}; }
  void store_partial(T* p, int n) const { if (n > 0) *p = v; }
  static Vec set1(T x) { return {x}; }
  static Vec zero() { return {T(0)}; }
  friend Vec operator+(Vec a, Vec b) { return {a.v + b.v}; }
  friend Vec operator-(Vec a, Vec b) { return {a.v - b.v}; }
  friend Vec operator*(Vec a, Vec b) { return {a.v * b.v}; }
  static Vec fmadd(Vec a, Vec b, Vec c) { return {a.v * b.v + c.v}; }
  static Vec max_nan(Vec a, Vec b) { return {(a.v > b.v || std::isnan(a.v)) ? a.v : b.v}; }
  T reduce_add() const { return v; }
};
#endif

#undef FC_VEC_PARTIAL

}  // namespace FC_ISA
}  // namespace cpu
}  // namespace fastconv
