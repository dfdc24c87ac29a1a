// Max, average and adaptive average pooling on the CPU, forward and backward, float32 and float64,
// NCHW, with PyTorch's semantics (aten/src/ATen/native/cpu/{MaxPool,AvgPool,AdaptiveAvgPool}Kernel.cpp).
//
// What it computes (per (n, c) plane; x is H x W, y is P x Q):
//   max:  y[p][q] = max over the taps (p*sh - pt + i*dh, q*sw - pl + j*dw) inside the input, scanned
//         row-major from -inf and replaced when `v > max || isnan(v)`: NaN propagates (the index is
//         that of the last NaN), ties keep the first tap, an all -inf window gives -inf and its first
//         in-range tap. indices = flat h*W + w (int64). backward: dx = 0, dx[idx] += dy.
//   avg:  window [p*sh - pt, min(+R, H + pb)) x [..]; divisor = divisor_override, else the window
//         size before clamping (count_include_pad) or the clamped size; backward is the adjoint.
//   adaptive avg: rows [floor(p*H/P), ceil((p+1)*H/P)), columns likewise; y = sum / kh / kw.
//
// Algorithm: every window is a product of a row set and a column set, so all kernels are separable.
//   max forward   horizontal pass, once per input row, into a ring of R row results (value + column
//                 of the row's winner, vectorised along W: stride 1 = shifted loads, stride 2 = even /
//                 odd de-interleave of two loads, argmax tracked by blend-on-compare), then a vertical
//                 pass over the ring rows of each output row (blend-on-compare again). Horizontal
//                 before vertical keeps PyTorch's row-major tie and NaN order exactly: the row winner
//                 is the first max / last NaN of that row, the vertical pass the first / last row.
//                 Border columns (clipped windows) and strides > 2 or dilation take a scalar path.
//   max backward  per plane: zero the plane, then scatter (scalar; the plane stays in L1/L2).
//   avg forward   zero-padded row copy, horizontal window sums (vector, stride 1) into a ring of row
//                 sums, vertical sums, one division by the separable divisor hdiv[p] * wdiv[q].
//                 Global pooling (one window covering the plane) is a per-plane vector reduction.
//   avg backward  gather form (no scatter, every dx written once): g = dy / divisor, vertical sums of
//                 the g rows covering input row h, then the horizontal transpose (vector, stride 1).
//   adaptive      the same gather / separable scheme with precomputed covering ranges.
// Threads: parallel_for's split (one contiguous range per thread, claimed by whichever is free) over (plane, block
// of output rows) items; a plane is split into row blocks only when there are fewer than 4 planes
// per thread (max / avg forward by output rows, avg / adaptive backward by input rows; max backward
// only by planes, since its scatter targets any row). Scratch is malloc'ed per range; if that fails
// the range runs the literal (scalar) PyTorch loops, which need none. Work functions never throw.
//
// Variants: compiled for baseline (SSE2), avx2 and avx512 (see isa.h); the SIMD helpers below are
// chosen by FC_ISA_*; any other target gets a one-lane scalar fallback. Global average pooling in
// float has an extra AVX2 kernel (8 planes per hadd tree).
// Assumptions: C-contiguous NCHW arrays, outputs do not alias inputs (the binding checks); float32
// argmax vectors use int32 lanes, so planes of >= 2^31 elements take the scalar path.
//
// Measured (2-core AMD EPYC VM, AVX2, float32, 2 threads, torch 2.13 timed in the same process;
// median over 7 rounds of medians of 15; torch fwd = max_pool2d_with_indices / avg_pool2d,
// f+b = forward (with indices) + backward from a random grad; GB/s = bytes read + written):
//   case                 fwd ms (GB/s)  /NCHW  /CL    f+b ms (GB/s)  /NCHW  /CL
//   r50_maxpool_3x3s2    0.69 (16)      0.07   1.06   1.08 (21)      0.10   0.86
//   vgg_maxpool_2x2      0.73 (31)      0.06   0.75   1.66 (27)      0.11   0.49
//   incep_avgpool_3x3    0.29 (17)      0.05   0.79   0.63 (15)      0.06   0.65
//   r50_global_avgpool   0.05-0.12      0.10   ~1.0   0.13 (50)      0.14   0.02
// Max forward without indices (inference): 0.41 ms (0.69x CL) and 0.40 ms (0.45x CL). The VM is
// noisy (repeat runs vary up to 3x); the global pool forward (~50 us) is at parity with torch's
// channels-last kernel, within that noise.

#include "cpu/pool2d_cpu.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "common/parallel.h"
#include "common/simd.h"
#include "common/switch.h"

FC_ISA_BEGIN
namespace {

// ---- SIMD helpers ------------------------------------------------------------------------------
// MaxOps<T>: a value vector V and a matching index vector I (Idx lanes: int32 for float, int64 for
// double), with the PyTorch update rule `take a where a > m || isnan(a)`.
template <class T>
struct MaxOps;

#if defined(FC_ISA_avx512)
template <>
struct MaxOps<float> {
  using Idx = int32_t;
  static constexpr int L = 16;
  using V = __m512;
  using I = __m512i;
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static I iload(const Idx* p) { return _mm512_loadu_si512(p); }
  static void istore(Idx* p, I v) { _mm512_storeu_si512(p, v); }
  static I iset1(int64_t v) { return _mm512_set1_epi32(static_cast<int32_t>(v)); }
  static I iadd(I a, I b) { return _mm512_add_epi32(a, b); }
  static I iota(int step) {
    return _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                              _mm512_set1_epi32(step));
  }
  static void update(V& m, I& mi, V a, I ai) {
    __mmask16 k = _mm512_cmp_ps_mask(a, m, _CMP_GT_OQ) | _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
    m = _mm512_mask_blend_ps(k, m, a);
    mi = _mm512_mask_blend_epi32(k, mi, ai);
  }
  static V vmax(V a, V m) {
    __mmask16 nan = _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
    return _mm512_mask_blend_ps(nan, _mm512_max_ps(a, m), a);
  }
  static void store_idx64(int64_t* p, I v) {
    _mm512_storeu_si512(p, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v)));
    _mm512_storeu_si512(p + 8, _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1)));
  }
  static void deint(const float* p, V& even, V& odd) {
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    V a = load(p), b = load(p + 16);
    even = _mm512_permutex2var_ps(a, ie, b);
    odd = _mm512_permutex2var_ps(a, io, b);
  }
};
template <>
struct MaxOps<double> {
  using Idx = int64_t;
  static constexpr int L = 8;
  using V = __m512d;
  using I = __m512i;
  static V load(const double* p) { return _mm512_loadu_pd(p); }
  static void store(double* p, V v) { _mm512_storeu_pd(p, v); }
  static I iload(const Idx* p) { return _mm512_loadu_si512(p); }
  static void istore(Idx* p, I v) { _mm512_storeu_si512(p, v); }
  static I iset1(int64_t v) { return _mm512_set1_epi64(v); }
  static I iadd(I a, I b) { return _mm512_add_epi64(a, b); }
  static I iota(int step) {
    return _mm512_setr_epi64(0, step, 2 * step, 3 * step, 4 * step, 5 * step, 6 * step, 7 * step);
  }
  static void update(V& m, I& mi, V a, I ai) {
    __mmask8 k = _mm512_cmp_pd_mask(a, m, _CMP_GT_OQ) | _mm512_cmp_pd_mask(a, a, _CMP_UNORD_Q);
    m = _mm512_mask_blend_pd(k, m, a);
    mi = _mm512_mask_blend_epi64(k, mi, ai);
  }
  static V vmax(V a, V m) {
    __mmask8 nan = _mm512_cmp_pd_mask(a, a, _CMP_UNORD_Q);
    return _mm512_mask_blend_pd(nan, _mm512_max_pd(a, m), a);
  }
  static void store_idx64(int64_t* p, I v) { _mm512_storeu_si512(p, v); }
  static void deint(const double* p, V& even, V& odd) {
    const __m512i ie = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    const __m512i io = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
    V a = load(p), b = load(p + 8);
    even = _mm512_permutex2var_pd(a, ie, b);
    odd = _mm512_permutex2var_pd(a, io, b);
  }
};
#define FC_POOL_SIMD 1

#elif defined(FC_ISA_avx2)
template <>
struct MaxOps<float> {
  using Idx = int32_t;
  static constexpr int L = 8;
  using V = __m256;
  using I = __m256i;
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static I iload(const Idx* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static void istore(Idx* p, I v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
  static I iset1(int64_t v) { return _mm256_set1_epi32(static_cast<int32_t>(v)); }
  static I iadd(I a, I b) { return _mm256_add_epi32(a, b); }
  static I iota(int step) {
    return _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(step));
  }
  static void update(V& m, I& mi, V a, I ai) {
    __m256 k = _mm256_or_ps(_mm256_cmp_ps(a, m, _CMP_GT_OQ), _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
    m = _mm256_blendv_ps(m, a, k);
    mi = _mm256_castps_si256(
        _mm256_blendv_ps(_mm256_castsi256_ps(mi), _mm256_castsi256_ps(ai), k));
  }
  static V vmax(V a, V m) {
    return _mm256_blendv_ps(_mm256_max_ps(a, m), a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
  }
  static void store_idx64(int64_t* p, I v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm256_cvtepi32_epi64(_mm256_castsi256_si128(v)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + 4),
                        _mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1)));
  }
  static void deint(const float* p, V& even, V& odd) {
    V a = load(p), b = load(p + 8);
    // within 128-bit lanes: a0 a2 b0 b2 | a4 a6 b4 b6, then swap the middle 64-bit quarters.
    even = _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))), _MM_SHUFFLE(3, 1, 2, 0)));
    odd = _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))), _MM_SHUFFLE(3, 1, 2, 0)));
  }
};
template <>
struct MaxOps<double> {
  using Idx = int64_t;
  static constexpr int L = 4;
  using V = __m256d;
  using I = __m256i;
  static V load(const double* p) { return _mm256_loadu_pd(p); }
  static void store(double* p, V v) { _mm256_storeu_pd(p, v); }
  static I iload(const Idx* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static void istore(Idx* p, I v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
  static I iset1(int64_t v) { return _mm256_set1_epi64x(v); }
  static I iadd(I a, I b) { return _mm256_add_epi64(a, b); }
  static I iota(int step) { return _mm256_setr_epi64x(0, step, 2 * step, 3 * step); }
  static void update(V& m, I& mi, V a, I ai) {
    __m256d k = _mm256_or_pd(_mm256_cmp_pd(a, m, _CMP_GT_OQ), _mm256_cmp_pd(a, a, _CMP_UNORD_Q));
    m = _mm256_blendv_pd(m, a, k);
    mi = _mm256_castpd_si256(
        _mm256_blendv_pd(_mm256_castsi256_pd(mi), _mm256_castsi256_pd(ai), k));
  }
  static V vmax(V a, V m) {
    return _mm256_blendv_pd(_mm256_max_pd(a, m), a, _mm256_cmp_pd(a, a, _CMP_UNORD_Q));
  }
  static void store_idx64(int64_t* p, I v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
  static void deint(const double* p, V& even, V& odd) {
    V a = load(p), b = load(p + 4);
    even = _mm256_permute4x64_pd(_mm256_unpacklo_pd(a, b), _MM_SHUFFLE(3, 1, 2, 0));
    odd = _mm256_permute4x64_pd(_mm256_unpackhi_pd(a, b), _MM_SHUFFLE(3, 1, 2, 0));
  }
};
#define FC_POOL_SIMD 1

#elif defined(FC_X86)  // baseline: SSE2 (no blendv: and / andnot / or)
template <>
struct MaxOps<float> {
  using Idx = int32_t;
  static constexpr int L = 4;
  using V = __m128;
  using I = __m128i;
  static V load(const float* p) { return _mm_loadu_ps(p); }
  static void store(float* p, V v) { _mm_storeu_ps(p, v); }
  static I iload(const Idx* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
  static void istore(Idx* p, I v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), v); }
  static I iset1(int64_t v) { return _mm_set1_epi32(static_cast<int32_t>(v)); }
  static I iadd(I a, I b) { return _mm_add_epi32(a, b); }
  static I iota(int step) { return _mm_setr_epi32(0, step, 2 * step, 3 * step); }
  static void update(V& m, I& mi, V a, I ai) {
    __m128 k = _mm_or_ps(_mm_cmpgt_ps(a, m), _mm_cmpunord_ps(a, a));
    m = _mm_or_ps(_mm_and_ps(k, a), _mm_andnot_ps(k, m));
    __m128i ki = _mm_castps_si128(k);
    mi = _mm_or_si128(_mm_and_si128(ki, ai), _mm_andnot_si128(ki, mi));
  }
  static V vmax(V a, V m) {
    __m128 nan = _mm_cmpunord_ps(a, a);
    return _mm_or_ps(_mm_and_ps(nan, a), _mm_andnot_ps(nan, _mm_max_ps(a, m)));
  }
  static void store_idx64(int64_t* p, I v) {  // indices are non-negative: zero-extend
    const __m128i z = _mm_setzero_si128();
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm_unpacklo_epi32(v, z));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p + 2), _mm_unpackhi_epi32(v, z));
  }
  static void deint(const float* p, V& even, V& odd) {
    V a = load(p), b = load(p + 4);
    even = _mm_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    odd = _mm_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
  }
};
template <>
struct MaxOps<double> {
  using Idx = int64_t;
  static constexpr int L = 2;
  using V = __m128d;
  using I = __m128i;
  static V load(const double* p) { return _mm_loadu_pd(p); }
  static void store(double* p, V v) { _mm_storeu_pd(p, v); }
  static I iload(const Idx* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
  static void istore(Idx* p, I v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), v); }
  static I iset1(int64_t v) { return _mm_set1_epi64x(v); }
  static I iadd(I a, I b) { return _mm_add_epi64(a, b); }
  static I iota(int step) { return _mm_set_epi64x(step, 0); }
  static void update(V& m, I& mi, V a, I ai) {
    __m128d k = _mm_or_pd(_mm_cmpgt_pd(a, m), _mm_cmpunord_pd(a, a));
    m = _mm_or_pd(_mm_and_pd(k, a), _mm_andnot_pd(k, m));
    __m128i ki = _mm_castpd_si128(k);
    mi = _mm_or_si128(_mm_and_si128(ki, ai), _mm_andnot_si128(ki, mi));
  }
  static V vmax(V a, V m) {
    __m128d nan = _mm_cmpunord_pd(a, a);
    return _mm_or_pd(_mm_and_pd(nan, a), _mm_andnot_pd(nan, _mm_max_pd(a, m)));
  }
  static void store_idx64(int64_t* p, I v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), v); }
  static void deint(const double* p, V& even, V& odd) {
    V a = load(p), b = load(p + 2);
    even = _mm_unpacklo_pd(a, b);
    odd = _mm_unpackhi_pd(a, b);
  }
};
#define FC_POOL_SIMD 1
#endif

#if !defined(FC_POOL_SIMD)  // one-lane fallback for non-x86 targets
template <class T>
struct MaxOps {
  using Idx = int64_t;
  static constexpr int L = 1;
  using V = T;
  using I = int64_t;
  static V load(const T* p) { return *p; }
  static void store(T* p, V v) { *p = v; }
  static I iload(const Idx* p) { return *p; }
  static void istore(Idx* p, I v) { *p = v; }
  static I iset1(int64_t v) { return v; }
  static I iadd(I a, I b) { return a + b; }
  static I iota(int) { return 0; }
  static void update(V& m, I& mi, V a, I ai) {
    if (a > m || std::isnan(a)) m = a, mi = ai;
  }
  static V vmax(V a, V m) { return (a > m || std::isnan(a)) ? a : m; }
  static void store_idx64(int64_t* p, I v) { *p = v; }
  static void deint(const T* p, V& even, V& odd) { even = p[0], odd = p[1]; }
};
#endif
#undef FC_POOL_SIMD

// Vec<T> division (simd.h has no div).
template <class T>
inline Vec<T> vdiv(Vec<T> a, Vec<T> b) {
#if defined(FC_ISA_avx512) || defined(FC_ISA_avx2) || defined(FC_X86)
  if constexpr (std::is_same_v<T, float>) {
#if defined(FC_ISA_avx512)
    return {_mm512_div_ps(a.v, b.v)};
#elif defined(FC_ISA_avx2)
    return {_mm256_div_ps(a.v, b.v)};
#else
    return {_mm_div_ps(a.v, b.v)};
#endif
  } else {
#if defined(FC_ISA_avx512)
    return {_mm512_div_pd(a.v, b.v)};
#elif defined(FC_ISA_avx2)
    return {_mm256_div_pd(a.v, b.v)};
#else
    return {_mm_div_pd(a.v, b.v)};
#endif
  }
#else
  return {a.v / b.v};
#endif
}

// Runs f(begin, end) over [0, n) in vector blocks of L, the last block overlapping the previous
// one when n is not a multiple of L (f must be idempotent); n < L runs nothing and returns false.
template <int L, class F>
inline bool vec_blocks(int64_t n, const F& f) {
  if (n < L) return false;
  int64_t i = 0;
  for (; i + L <= n; i += L) f(i);
  if (i < n) f(n - L);
  return true;
}

// Copies n elements with vector moves (no libc call: rep movsb is slow for short rows on some CPUs).
template <class T>
inline void copy_small(T* dst, const T* src, int64_t n) {
  using V = Vec<T>;
  if (n < V::size) {
    for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
    return;
  }
  int64_t i = 0;
  for (; i + V::size <= n; i += V::size) V::load(src + i).store(dst + i);
  if (i < n) V::load(src + n - V::size).store(dst + n - V::size);  // overlapping last vector
}

// The first tap start + k * dil (k >= 0) at or past index 0: O(1), not a loop over the taps (a
// huge kernel with huge padding must not spin here).
inline int64_t first_tap(int64_t start, int64_t dil) {
  return start >= 0 ? start : start + (-start + dil - 1) / dil * dil;
}

template <class T>
constexpr T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}
template <class T>
inline bool takes(T v, T m) {  // PyTorch's max update rule
  return v > m || std::isnan(v);
}

// ---- work splitting ----------------------------------------------------------------------------
// Items are (plane, block of rows); blocks only when planes are too few to keep the threads busy.
struct Split {
  int64_t planes, rows, nb;
  int64_t items() const { return planes * nb; }
  void item(int64_t it, int64_t& plane, int64_t& r0, int64_t& r1) const {
    plane = it / nb;
    int64_t b = it % nb;
    r0 = b * rows / nb;
    r1 = (b + 1) * rows / nb;
  }
};
inline Split make_split(int64_t planes, int64_t rows, bool allow_rows) {
  const int64_t want = 4 * static_cast<int64_t>(num_threads());
  int64_t nb = 1;
  if (allow_rows && planes < want && rows > 1) nb = std::min<int64_t>(rows, (want + planes - 1) / planes);
  return {planes, rows, nb};
}

// Scratch memory owned by one chunk of work; malloc, so a failure is a null pointer, not a throw.
struct Scratch {
  void* mem = nullptr;
  explicit Scratch(size_t bytes) { mem = std::malloc(bytes ? bytes : 1); }
  ~Scratch() { std::free(mem); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};
inline size_t round64(size_t b) { return (b + 63) / 64 * 64; }

// ================================================================================================
// Max pooling
// ================================================================================================

// The literal PyTorch loop for output rows [p0, p1) of one plane (fallback; needs no scratch).
template <class T, bool IDX>
void max_plane_naive(const Pool2dParams& p, const T* x, T* y, int64_t* ind, int64_t p0, int64_t p1) {
  const int64_t H = p.H, W = p.W;
  for (int64_t oh = p0; oh < p1; ++oh) {
    for (int64_t ow = 0; ow < p.Q; ++ow) {
      int64_t ih0 = oh * p.stride_h - p.pad_t, iw0 = ow * p.stride_w - p.pad_l;
      const int64_t ih1 = std::min(ih0 + (p.R - 1) * p.dil_h + 1, H);
      const int64_t iw1 = std::min(iw0 + (p.S - 1) * p.dil_w + 1, W);
      ih0 = first_tap(ih0, p.dil_h);
      iw0 = first_tap(iw0, p.dil_w);
      int64_t mi = ih0 * W + iw0;
      T m = neg_inf<T>();
      for (int64_t ih = ih0; ih < ih1; ih += p.dil_h)
        for (int64_t iw = iw0; iw < iw1; iw += p.dil_w) {
          const T v = x[ih * W + iw];
          if (takes(v, m)) m = v, mi = ih * W + iw;
        }
      y[oh * p.Q + ow] = m;
      if (IDX) ind[oh * p.Q + ow] = mi;
    }
  }
}

// Column geometry of the horizontal pass, shared by all rows and planes. With `vec`, every output
// column takes the vector path, reading either the input row itself (`direct`: no padding needed)
// or a copy of it in a buffer whose out-of-range columns hold -inf. Starting each window from
// (tap 0, first in-range column) and then applying the update rule to every tap is PyTorch's loop:
// a -inf padding tap never wins (it is neither > the running max nor NaN).
template <class T>
struct MaxCols {
  using Idx = typename MaxOps<T>::Idx;
  bool vec = false, direct = false;
  int64_t lb = 0;               // padded buffer length; column w sits at w + pad_l
  int64_t span = 0;             // last column a block reads, relative to its first
  int64_t edge = 0;             // columns copied from each end of the row into the padded buffer
  std::vector<Idx> first;       // first in-range column of each output column's window
  MaxCols(const Pool2dParams& p, int sw_kind) {
    if (!sw_kind || p.Q < MaxOps<T>::L) return;
    const int64_t sw = p.stride_w;
    // last column read by output q, relative to its first tap: S - 1 (sw 1), 2*ceil(S/2) - 1 (sw 2)
    const int64_t ext = sw == 1 ? p.S - 1 : 2 * ((p.S + 1) / 2) - 1;
    const int64_t last = (p.Q - 1) * sw - p.pad_l + ext;
    vec = true;
    direct = p.pad_l == 0 && last <= p.W - 1;
    lb = std::max(p.pad_l + p.W, last + p.pad_l + 1);
    span = (MaxOps<T>::L - 1) * sw + ext;
    edge = MaxOps<T>::L * sw + ext + 1;
    first.resize(p.Q);
    for (int64_t q = 0; q < p.Q; ++q) first[q] = static_cast<Idx>(std::max<int64_t>(q * sw - p.pad_l, 0));
  }
};

// Horizontal pass over one input row: hv[q], hc[q] = max and winning column over the column taps
// of output q. SW = 1 or 2 with dilation 1 (vector, KS = compile-time S or 0), else scalar.
template <class T, int SW, int KS, bool IDX>
void max_row(const Pool2dParams& p, const MaxCols<T>& g, const T* xr, T* xb, T* hv,
             typename MaxOps<T>::Idx* hc) {
  using O = MaxOps<T>;
  using Idx = typename O::Idx;
  const int64_t W = p.W, sw = p.stride_w, dw = p.dil_w, pl = p.pad_l;
  const int64_t S = KS ? KS : p.S;
  if (SW == 0 || !g.vec) {
    for (int64_t q = 0; q < p.Q; ++q) {
      int64_t w0 = q * sw - pl;
      const int64_t w1 = std::min(w0 + (S - 1) * dw + 1, W);
      w0 = first_tap(w0, dw);
      T m = neg_inf<T>();
      int64_t c = w0;
      for (int64_t w = w0; w < w1; w += dw) {
        const T v = xr[w];
        if (takes(v, m)) m = v, c = w;
      }
      hv[q] = m;
      if (IDX) hc[q] = static_cast<Idx>(c);
    }
    return;
  }
  // Blocks whose columns all lie in [0, W) read the row itself; the others (at most a few at each
  // end) read the -inf padded copy, of which only the two edges are refreshed per row.
  const T* direct = xr - pl;  // direct[q*SW + j] = tap j of output q
  if (!g.direct) {
    copy_small(xb + pl, xr, std::min(W, g.edge));
    const int64_t r0 = std::max<int64_t>(0, W - g.edge);
    copy_small(xb + pl + r0, xr + r0, W - r0);
  }
  const typename O::I lane = O::iota(SW);
  vec_blocks<O::L>(p.Q, [&](int64_t q) {
    const bool inside = g.direct || (q * SW >= pl && q * SW - pl + g.span <= W - 1);
    const T* xp = (inside ? direct : xb) + q * SW;
    const int64_t c0 = q * SW - pl;  // column of tap 0 in lane 0
    typename O::V m, a, ev, od;
    typename O::I mi{};
    if (IDX) mi = O::iload(g.first.data() + q);
    if constexpr (SW == 1) {
      m = O::load(xp);
    } else {
      O::deint(xp, m, od);
    }
    for (int64_t j = 1; j < S; ++j) {
      if constexpr (SW == 1) {
        a = O::load(xp + j);
      } else if (j & 1) {
        a = od;
      } else {
        O::deint(xp + j, ev, od);
        a = ev;
      }
      if (IDX)
        O::update(m, mi, a, O::iadd(lane, O::iset1(c0 + j)));
      else
        m = O::vmax(a, m);
    }
    O::store(hv + q, m);
    if (IDX) O::istore(hc + q, mi);
  });
}

// Output rows [p0, p1) of one plane: horizontal results of each needed input row once (ring of
// `span` rows), then the vertical pass. Scratch: span * Q values + span * Q column indices.
template <class T, int SW, int KS, bool IDX>
void max_plane(const Pool2dParams& p, const MaxCols<T>& g, const T* x, T* y, int64_t* ind,
               int64_t p0, int64_t p1, T* xb, T* ring_v, typename MaxOps<T>::Idx* ring_c,
               int64_t* ring_row, int64_t span) {
  using O = MaxOps<T>;
  const int64_t H = p.H, W = p.W, Q = p.Q;
  for (int64_t s = 0; s < span; ++s) ring_row[s] = -1;
  if (g.vec && !g.direct)
    for (int64_t i = 0; i < g.lb; ++i) xb[i] = neg_inf<T>();
  int64_t rows[64];
  for (int64_t oh = p0; oh < p1; ++oh) {
    int64_t h0 = oh * p.stride_h - p.pad_t;
    const int64_t h1 = std::min(h0 + (p.R - 1) * p.dil_h + 1, H);
    h0 = first_tap(h0, p.dil_h);
    T* yr = y + oh * Q;
    int64_t* ir = IDX ? ind + oh * Q : nullptr;
    if (h0 >= h1) {  // no row of the window is inside the input: -inf, PyTorch's start index
      for (int64_t q = 0; q < Q; ++q) {
        int64_t w0 = q * p.stride_w - p.pad_l;
        w0 = first_tap(w0, p.dil_w);
        yr[q] = neg_inf<T>();
        if (IDX) ir[q] = h0 * W + w0;
      }
      continue;
    }
    int64_t nr = 0;
    for (int64_t h = h0; h < h1 && nr < 64; h += p.dil_h) {
      const int64_t s = h % span;
      if (ring_row[s] != h) {
        max_row<T, SW, KS, IDX>(p, g, x + h * W, xb, ring_v + s * Q, ring_c + s * Q);
        ring_row[s] = h;
      }
      rows[nr++] = h;
    }
    auto scalar = [&](int64_t q) {
      const int64_t s0 = rows[0] % span;
      T m = ring_v[s0 * Q + q];
      int64_t mi = IDX ? rows[0] * W + ring_c[s0 * Q + q] : 0;
      for (int64_t r = 1; r < nr; ++r) {
        const int64_t s = rows[r] % span;
        const T v = ring_v[s * Q + q];
        if (takes(v, m)) {
          m = v;
          if (IDX) mi = rows[r] * W + ring_c[s * Q + q];
        }
      }
      yr[q] = m;
      if (IDX) ir[q] = mi;
    };
    const bool vec = vec_blocks<O::L>(Q, [&](int64_t q) {
      const int64_t s0 = rows[0] % span;
      typename O::V m = O::load(ring_v + s0 * Q + q);
      typename O::I mi{};
      if (IDX) mi = O::iadd(O::iload(ring_c + s0 * Q + q), O::iset1(rows[0] * W));
      for (int64_t r = 1; r < nr; ++r) {
        const int64_t s = rows[r] % span;
        const typename O::V a = O::load(ring_v + s * Q + q);
        if (IDX) {
          O::update(m, mi, a, O::iadd(O::iload(ring_c + s * Q + q), O::iset1(rows[r] * W)));
        } else {
          m = O::vmax(a, m);
        }
      }
      O::store(yr + q, m);
      if (IDX) O::store_idx64(ir + q, mi);
    });
    if (!vec)
      for (int64_t q = 0; q < Q; ++q) scalar(q);
  }
}

template <class T, bool IDX>
void max_forward_impl(const Pool2dParams& p, const T* x, T* y, int64_t* ind) {
  using O = MaxOps<T>;
  using Idx = typename O::Idx;
  const int64_t HW = p.H * p.W, PQ = p.P * p.Q;
  const int64_t span = (p.R - 1) * p.dil_h + 1;
  // The ring path needs int32-representable flat indices for float and at most 64 rows a window.
  const bool ring_ok = p.R <= 64 && (sizeof(Idx) == 8 || HW < (int64_t(1) << 31));
  const int sw_kind = (p.dil_w == 1 && (p.stride_w == 1 || p.stride_w == 2)) ? int(p.stride_w) : 0;
  const MaxCols<T> g(p, sw_kind);
  const Split sp = make_split(p.N * p.C, p.P, true);
  const size_t bytes = round64(sizeof(T) * span * p.Q) + round64(sizeof(Idx) * span * p.Q) +
                       round64(sizeof(int64_t) * span) + round64(sizeof(T) * g.lb);
  parallel_for(sp.items(), 1, [&](int64_t b, int64_t e) {
    Scratch scr(ring_ok ? bytes : 0);
    char* m = static_cast<char*>(scr.mem);
    T* rv = reinterpret_cast<T*>(m);
    Idx* rc = reinterpret_cast<Idx*>(m + round64(sizeof(T) * span * p.Q));
    int64_t* rr = reinterpret_cast<int64_t*>(m + round64(sizeof(T) * span * p.Q) +
                                             round64(sizeof(Idx) * span * p.Q));
    T* xb = reinterpret_cast<T*>(reinterpret_cast<char*>(rr) + round64(sizeof(int64_t) * span));
    for (int64_t it = b; it < e; ++it) {
      int64_t pl, p0, p1;
      sp.item(it, pl, p0, p1);
      const T* xp = x + pl * HW;
      T* yp = y + pl * PQ;
      int64_t* ip = IDX ? ind + pl * PQ : nullptr;
      if (!ring_ok || !m) {
        max_plane_naive<T, IDX>(p, xp, yp, ip, p0, p1);
      } else if (sw_kind == 0) {
        max_plane<T, 0, 0, IDX>(p, g, xp, yp, ip, p0, p1, xb, rv, rc, rr, span);
      } else {
        // compile-time stride (1, 2) and kernel width (2, 3; 0 = run-time)
        STRIDE_SWITCH(sw_kind, SW, [&] {
          const int ks = p.S == 2 ? 2 : p.S == 3 ? 3 : 0;
          if (ks == 2)
            max_plane<T, SW, 2, IDX>(p, g, xp, yp, ip, p0, p1, xb, rv, rc, rr, span);
          else if (ks == 3)
            max_plane<T, SW, 3, IDX>(p, g, xp, yp, ip, p0, p1, xb, rv, rc, rr, span);
          else
            max_plane<T, SW, 0, IDX>(p, g, xp, yp, ip, p0, p1, xb, rv, rc, rr, span);
        });
      }
    }
  });
}

template <class T>
void max_forward(const Pool2dParams& p, const T* x, T* y, int64_t* ind) {
  if (ind)
    max_forward_impl<T, true>(p, x, y, ind);
  else
    max_forward_impl<T, false>(p, x, y, nullptr);
}

// One thread per chunk of planes: zero the plane, scatter; the plane stays in cache between both.
template <class T>
int64_t max_backward(const Pool2dParams& p, const T* dy, const int64_t* ind, T* dx) {
  const int64_t HW = p.H * p.W, PQ = p.P * p.Q;
  std::atomic<int64_t> bad{0};
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, HW + PQ));
  parallel_for(p.N * p.C, grain, [&](int64_t b, int64_t e) {
    int64_t nbad = 0;
    for (int64_t pl = b; pl < e; ++pl) {
      T* d = dx + pl * HW;
      const T* g = dy + pl * PQ;
      const int64_t* ip = ind + pl * PQ;
      std::memset(d, 0, sizeof(T) * HW);
      for (int64_t k = 0; k < PQ; ++k) {
        const int64_t i = ip[k];
        if (static_cast<uint64_t>(i) < static_cast<uint64_t>(HW))
          d[i] += g[k];
        else
          ++nbad;
      }
    }
    if (nbad) bad.fetch_add(nbad, std::memory_order_relaxed);
  });
  return bad.load();
}

// ================================================================================================
// Average pooling
// ================================================================================================

// Separable window geometry: per output row / column the clamped range and the divisor factor;
// divisor(p, q) = hdiv[p] * wdiv[q] (or the override). `empty` = some clamped range is empty
// (cannot happen with the binding's padding limit; such calls take the literal loop).
template <class T>
struct AvgGeom {
  std::vector<int64_t> hs, he, ws, we;
  std::vector<T> hdiv, wdiv;
  bool empty = false;
  AvgGeom(const Pool2dParams& p) : hs(p.P), he(p.P), ws(p.Q), we(p.Q), hdiv(p.P), wdiv(p.Q) {
    auto axis = [&](int64_t n, int64_t in, int64_t k, int64_t st, int64_t plo, int64_t phi,
                    std::vector<int64_t>& s, std::vector<int64_t>& e, std::vector<T>& d) {
      for (int64_t i = 0; i < n; ++i) {
        int64_t a = i * st - plo;
        int64_t b = std::min(a + k, in + phi);
        const int64_t pool = b - a;
        a = std::max<int64_t>(a, 0);
        b = std::min(b, in);
        s[i] = a, e[i] = b;
        if (a >= b) empty = true;
        d[i] = p.divisor_override ? T(1) : T(p.count_include_pad ? pool : b - a);
      }
    };
    axis(p.P, p.H, p.R, p.stride_h, p.pad_t, p.pad_b, hs, he, hdiv);
    axis(p.Q, p.W, p.S, p.stride_w, p.pad_l, p.pad_r, ws, we, wdiv);
    if (p.divisor_override)
      for (auto& v : wdiv) v = T(p.divisor_override);
  }
};

template <class T>
void avg_plane_naive(const Pool2dParams& p, const T* x, T* y, int64_t p0, int64_t p1) {
  for (int64_t oh = p0; oh < p1; ++oh)
    for (int64_t ow = 0; ow < p.Q; ++ow) {
      int64_t ih0 = oh * p.stride_h - p.pad_t, iw0 = ow * p.stride_w - p.pad_l;
      int64_t ih1 = std::min(ih0 + p.R, p.H + p.pad_b), iw1 = std::min(iw0 + p.S, p.W + p.pad_r);
      const int64_t pool = (ih1 - ih0) * (iw1 - iw0);
      ih0 = std::max<int64_t>(ih0, 0), iw0 = std::max<int64_t>(iw0, 0);
      ih1 = std::min(ih1, p.H), iw1 = std::min(iw1, p.W);
      T& out = y[oh * p.Q + ow];
      out = T(0);
      if (ih0 >= ih1 || iw0 >= iw1) continue;
      const int64_t div = p.divisor_override ? p.divisor_override
                          : p.count_include_pad ? pool
                                                : (ih1 - ih0) * (iw1 - iw0);
      T s = 0;
      for (int64_t ih = ih0; ih < ih1; ++ih)
        for (int64_t iw = iw0; iw < iw1; ++iw) s += x[ih * p.W + iw];
      out = s / T(div);
    }
}

template <class T>
void avg_plane_backward_naive(const Pool2dParams& p, const T* dy, T* dx) {
  std::memset(dx, 0, sizeof(T) * p.H * p.W);
  for (int64_t oh = 0; oh < p.P; ++oh)
    for (int64_t ow = 0; ow < p.Q; ++ow) {
      int64_t ih0 = oh * p.stride_h - p.pad_t, iw0 = ow * p.stride_w - p.pad_l;
      int64_t ih1 = std::min(ih0 + p.R, p.H + p.pad_b), iw1 = std::min(iw0 + p.S, p.W + p.pad_r);
      const int64_t pool = (ih1 - ih0) * (iw1 - iw0);
      ih0 = std::max<int64_t>(ih0, 0), iw0 = std::max<int64_t>(iw0, 0);
      ih1 = std::min(ih1, p.H), iw1 = std::min(iw1, p.W);
      if (ih0 >= ih1 || iw0 >= iw1) continue;
      const int64_t div = p.divisor_override ? p.divisor_override
                          : p.count_include_pad ? pool
                                                : (ih1 - ih0) * (iw1 - iw0);
      const T gd = dy[oh * p.Q + ow] / T(div);
      for (int64_t ih = ih0; ih < ih1; ++ih)
        for (int64_t iw = iw0; iw < iw1; ++iw) dx[ih * p.W + iw] += gd;
    }
}

// Sum of n contiguous elements (vector, two accumulators).
template <class T>
inline T sum_contig(const T* a, int64_t n) {
  using V = Vec<T>;
  constexpr int L = V::size;
  V s0 = V::zero(), s1 = V::zero();
  int64_t i = 0;
  for (; i + 2 * L <= n; i += 2 * L) s0 = s0 + V::load(a + i), s1 = s1 + V::load(a + i + L);
  for (; i + L <= n; i += L) s0 = s0 + V::load(a + i);
  T s = (s0 + s1).reduce_add();
  for (; i < n; ++i) s += a[i];
  return s;
}

// Global pooling: one window covering every plane.
#if defined(FC_ISA_avx2)
// AVX2 float: 8 planes at a time; each plane's sum is a vector (full vectors plus its last HW % 8
// elements from one overlapping load with the already-summed lanes masked off), and an hadd tree
// turns the 8 vectors into the 8 sums. Needs HW >= 8.
inline void sum8_planes(const float* x, int64_t HW, float* out8, __m256 div) {
  const int64_t nv = HW / 8, rem = HW % 8;
  alignas(32) static const int32_t kMask[16] = {0, 0, 0, 0, 0, 0, 0, 0, -1, -1, -1, -1, -1, -1, -1, -1};
  const __m256 tail = _mm256_castsi256_ps(
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMask + rem)));  // last rem lanes set
  __m256 s[8];
  for (int k = 0; k < 8; ++k) {
    const float* a = x + k * HW;
    __m256 s0 = _mm256_loadu_ps(a), s1 = _mm256_setzero_ps();
    int64_t i = 8;
    for (; i + 16 <= nv * 8; i += 16)
      s0 = _mm256_add_ps(s0, _mm256_loadu_ps(a + i)), s1 = _mm256_add_ps(s1, _mm256_loadu_ps(a + i + 8));
    for (; i < nv * 8; i += 8) s0 = _mm256_add_ps(s0, _mm256_loadu_ps(a + i));
    if (rem) s1 = _mm256_add_ps(s1, _mm256_and_ps(tail, _mm256_loadu_ps(a + HW - 8)));
    s[k] = _mm256_add_ps(s0, s1);
  }
  const __m256 h01 = _mm256_hadd_ps(s[0], s[1]), h23 = _mm256_hadd_ps(s[2], s[3]);
  const __m256 h45 = _mm256_hadd_ps(s[4], s[5]), h67 = _mm256_hadd_ps(s[6], s[7]);
  const __m256 a = _mm256_hadd_ps(h01, h23), b = _mm256_hadd_ps(h45, h67);
  // a = [p0 p1 p2 p3 | p0 p1 p2 p3] partial halves (low / high 128-bit lane), b likewise for p4..7
  const __m256 lo = _mm256_permute2f128_ps(a, b, 0x20), hi = _mm256_permute2f128_ps(a, b, 0x31);
  _mm256_storeu_ps(out8, _mm256_div_ps(_mm256_add_ps(lo, hi), div));
}
#endif

template <class T>
void avg_global_forward(const Pool2dParams& p, const T* x, T* y, T div) {
  const int64_t HW = p.H * p.W;
  parallel_for(p.N * p.C, std::max<int64_t>(8, 16384 / HW), [&](int64_t b, int64_t e) {
    int64_t pl = b;
#if defined(FC_ISA_avx2)
    if constexpr (std::is_same_v<T, float>) {
      if (HW >= 8)
        for (; pl + 8 <= e; pl += 8) sum8_planes(x + pl * HW, HW, y + pl, _mm256_set1_ps(div));
    }
#endif
    for (; pl < e; ++pl) y[pl] = sum_contig(x + pl * HW, HW) / div;
  });
}
template <class T>
void avg_global_backward(const Pool2dParams& p, const T* dy, T* dx, T div1, T div2) {
  using V = Vec<T>;
  constexpr int L = V::size;
  const int64_t HW = p.H * p.W;
  parallel_for(p.N * p.C, std::max<int64_t>(1, 16384 / HW), [&](int64_t b, int64_t e) {
    // Planes are written in order with full vectors; a vector running into the next plane is
    // overwritten by that plane's first store (the last plane of the chunk ends with a scalar tail).
    for (int64_t pl = b; pl < e; ++pl) {
      const T g = dy[pl] / div1 / div2;
      const V gv = V::set1(g);
      T* d = dx + pl * HW;
      int64_t i = 0;
      for (; i + L <= HW; i += L) gv.store(d + i);
      if (i < HW) {
        if (pl + 1 < e && HW >= L)  // spills into the next plane of this chunk only
          gv.store(d + i);
        else
          for (; i < HW; ++i) d[i] = g;
      }
    }
  });
}

// Output rows [p0, p1) of one plane, vertical first (sums need no tie order): the clipped rows of
// the window are summed straight from x into vs[pad_l + w], whose other entries stay zero, then
// the horizontal window sums of vs are divided by the separable divisor. Scratch: vs (lb).
template <class T>
void avg_plane(const Pool2dParams& p, const AvgGeom<T>& g, const T* x, T* y, int64_t p0, int64_t p1,
               T* vs) {
  using V = Vec<T>;
  constexpr int L = V::size;
  const int64_t W = p.W, Q = p.Q, S = p.S, sw = p.stride_w;
  T* vr = vs + p.pad_l;
  for (int64_t oh = p0; oh < p1; ++oh) {
    const int64_t h0 = g.hs[oh], h1 = g.he[oh];
    const T* xr = x + h0 * W;
    const bool v1 = vec_blocks<L>(W, [&](int64_t w) {
      V a = V::load(xr + w);
      for (int64_t h = 1; h < h1 - h0; ++h) a = a + V::load(xr + h * W + w);
      a.store(vr + w);
    });
    if (!v1)
      for (int64_t w = 0; w < W; ++w) {
        T a = xr[w];
        for (int64_t h = 1; h < h1 - h0; ++h) a += xr[h * W + w];
        vr[w] = a;
      }
    T* yr = y + oh * Q;
    const T hd = g.hdiv[oh];
    const V hdv = V::set1(hd);
    const bool v2 = sw == 1 && vec_blocks<L>(Q, [&](int64_t q) {
                      V a = V::load(vs + q);
                      for (int64_t j = 1; j < S; ++j) a = a + V::load(vs + q + j);
                      vdiv(a, hdv * V::load(g.wdiv.data() + q)).store(yr + q);
                    });
    if (!v2)
      for (int64_t q = 0; q < Q; ++q) {
        const T* a = vs + q * sw;
        T t = a[0];
        for (int64_t j = 1; j < S; ++j) t += a[j];
        yr[q] = t / (hd * g.wdiv[q]);
      }
  }
}

template <class T>
void avg_forward(const Pool2dParams& p, const T* x, T* y) {
  const int64_t HW = p.H * p.W, PQ = p.P * p.Q;
  const AvgGeom<T> g(p);
  if (g.empty) {
    parallel_for(p.N * p.C, 1, [&](int64_t b, int64_t e) {
      for (int64_t pl = b; pl < e; ++pl) avg_plane_naive(p, x + pl * HW, y + pl * PQ, 0, p.P);
    });
    return;
  }
  if (p.P == 1 && p.Q == 1 && g.hs[0] == 0 && g.he[0] == p.H && g.ws[0] == 0 && g.we[0] == p.W)
    return avg_global_forward(p, x, y, g.hdiv[0] * g.wdiv[0]);
  constexpr int L = Vec<T>::size;
  const int64_t lb = std::max(p.pad_l + p.W, (p.Q - 1) * p.stride_w + p.S) + L;
  const Split sp = make_split(p.N * p.C, p.P, true);
  parallel_for(sp.items(), 1, [&](int64_t b, int64_t e) {
    Scratch scr(sizeof(T) * lb);
    T* vs = static_cast<T*>(scr.mem);
    if (vs)
      for (int64_t i = 0; i < lb; ++i) vs[i] = T(0);
    for (int64_t it = b; it < e; ++it) {
      int64_t pl, p0, p1;
      sp.item(it, pl, p0, p1);
      if (!vs)
        avg_plane_naive(p, x + pl * HW, y + pl * PQ, p0, p1);
      else
        avg_plane(p, g, x + pl * HW, y + pl * PQ, p0, p1, vs);
    }
  });
}

// Covering ranges of a separable adjoint: for input index i along one axis, the outputs o with
// s[o] <= i < e[o] form [lo[i], hi[i]) (window starts and ends are non-decreasing in o).
inline void cover(int64_t in, int64_t out, const std::vector<int64_t>& s, const std::vector<int64_t>& e,
                  std::vector<int64_t>& lo, std::vector<int64_t>& hi) {
  lo.assign(in, 0), hi.assign(in, 0);
  int64_t a = 0, b = 0;
  for (int64_t i = 0; i < in; ++i) {
    while (a < out && e[a] <= i) ++a;
    while (b < out && s[b] <= i) ++b;
    lo[i] = a, hi[i] = std::max(a, b);
  }
}

// Gather-form backward of a separable average over input rows [h0, h1) of one plane:
//   gq[p][q] = dy[p][q] scaled (precomputed, P x Q), Gh[q] = sum of gq rows covering h,
//   dx[h][w] = sum of Gh over the columns covering w.
// Horizontal adjoint: vector when `wvec` (stride 1 average: q in [w + pl - S + 1, w + pl]),
// else the covering ranges.
template <class T>
void sep_backward_rows(int64_t W, int64_t Q, const T* gq, T* dx, int64_t h0, int64_t h1,
                       const int64_t* plo, const int64_t* phi, const int64_t* qlo, const int64_t* qhi,
                       bool wvec, int64_t S, int64_t pl, T* gp) {
  using V = Vec<T>;
  constexpr int L = V::size;
  // gp: S-1 zeros, G (Q values), zeros; dx[w] = sum_j gp[w + pl + S - 1 - j], j < S.
  const int64_t off = wvec ? S - 1 : 0;
  T* G = gp + off;
  for (int64_t h = h0; h < h1; ++h) {
    T* d = dx + h * W;
    const int64_t a = plo[h], b = phi[h];
    if (a >= b) {
      std::memset(d, 0, sizeof(T) * W);
      continue;
    }
    const bool v1 = vec_blocks<L>(Q, [&](int64_t q) {
      V s = V::load(gq + a * Q + q);
      for (int64_t r = a + 1; r < b; ++r) s = s + V::load(gq + r * Q + q);
      s.store(G + q);
    });
    if (!v1)
      for (int64_t q = 0; q < Q; ++q) {
        T s = gq[a * Q + q];
        for (int64_t r = a + 1; r < b; ++r) s += gq[r * Q + q];
        G[q] = s;
      }
    bool v2 = false;
    if (wvec) {
      const T* base = gp + pl + S - 1;
      v2 = vec_blocks<L>(W, [&](int64_t w) {
        V s = V::load(base + w);
        for (int64_t j = 1; j < S; ++j) s = s + V::load(base + w - j);
        s.store(d + w);
      });
    }
    if (!v2)
      for (int64_t w = 0; w < W; ++w) {
        T s = 0;
        for (int64_t q = qlo[w]; q < qhi[w]; ++q) s += G[q];
        d[w] = s;
      }
  }
}

template <class T>
void avg_backward(const Pool2dParams& p, const T* dy, T* dx) {
  const int64_t HW = p.H * p.W, PQ = p.P * p.Q;
  const AvgGeom<T> g(p);
  if (g.empty) {
    parallel_for(p.N * p.C, 1, [&](int64_t b, int64_t e) {
      for (int64_t pl = b; pl < e; ++pl) avg_plane_backward_naive(p, dy + pl * PQ, dx + pl * HW);
    });
    return;
  }
  if (p.P == 1 && p.Q == 1 && g.hs[0] == 0 && g.he[0] == p.H && g.ws[0] == 0 && g.we[0] == p.W)
    return avg_global_backward(p, dy, dx, g.hdiv[0] * g.wdiv[0], T(1));
  using V = Vec<T>;
  constexpr int L = V::size;
  // Covering ranges use the unclamped-to-H windows' clamped versions (same sets inside [0, H)).
  std::vector<int64_t> plo, phi, qlo, qhi;
  cover(p.H, p.P, g.hs, g.he, plo, phi);
  cover(p.W, p.Q, g.ws, g.we, qlo, qhi);
  const bool wvec = p.stride_w == 1 && p.W >= L;
  const int64_t lg = p.W + p.pad_l + p.S + p.Q + 2 * L;
  const Split sp = make_split(p.N * p.C, p.H, true);
  const size_t bytes = round64(sizeof(T) * PQ) + round64(sizeof(T) * lg);
  parallel_for(sp.items(), 1, [&](int64_t b, int64_t e) {
    Scratch scr(bytes);
    char* m = static_cast<char*>(scr.mem);
    T* gq = reinterpret_cast<T*>(m);
    T* gp = reinterpret_cast<T*>(m + round64(sizeof(T) * PQ));
    if (m) std::memset(gp, 0, sizeof(T) * lg);
    for (int64_t it = b; it < e; ++it) {
      int64_t pl, h0, h1;
      sp.item(it, pl, h0, h1);
      const T* d = dy + pl * PQ;
      if (!m) {  // no scratch: the literal loop, whole plane (row blocks of it are then redundant)
        if (h0 == 0) avg_plane_backward_naive(p, d, dx + pl * HW);
        continue;
      }
      // gq rows needed by [h0, h1): [plo[h0], phi[h1 - 1])
      const int64_t pa = plo[h0], pb = std::max(pa, phi[h1 - 1]);
      for (int64_t r = pa; r < pb; ++r) {
        const V hd = V::set1(g.hdiv[r]);
        const bool vec = vec_blocks<L>(p.Q, [&](int64_t q) {
          vdiv(V::load(d + r * p.Q + q), hd * V::load(g.wdiv.data() + q)).store(gq + r * p.Q + q);
        });
        if (!vec)
          for (int64_t q = 0; q < p.Q; ++q) gq[r * p.Q + q] = d[r * p.Q + q] / (g.hdiv[r] * g.wdiv[q]);
      }
      sep_backward_rows(p.W, p.Q, gq, dx + pl * HW, h0, h1, plo.data(), phi.data(), qlo.data(),
                        qhi.data(), wvec, p.S, p.pad_l, gp);
    }
  });
}

// ================================================================================================
// Adaptive average pooling
// ================================================================================================

struct AdaptiveGeom {
  std::vector<int64_t> hs, he, ws, we;
  AdaptiveGeom(const Pool2dParams& p) : hs(p.P), he(p.P), ws(p.Q), we(p.Q) {
    for (int64_t i = 0; i < p.P; ++i) hs[i] = i * p.H / p.P, he[i] = ((i + 1) * p.H + p.P - 1) / p.P;
    for (int64_t i = 0; i < p.Q; ++i) ws[i] = i * p.W / p.Q, we[i] = ((i + 1) * p.W + p.Q - 1) / p.Q;
  }
};

template <class T>
void adaptive_forward(const Pool2dParams& p, const T* x, T* y) {
  using V = Vec<T>;
  constexpr int L = V::size;
  const int64_t H = p.H, W = p.W, P = p.P, Q = p.Q, HW = H * W, PQ = P * Q;
  const AdaptiveGeom g(p);
  if (P == 1 && Q == 1) {  // global average
    parallel_for(p.N * p.C, std::max<int64_t>(1, 16384 / HW), [&](int64_t b, int64_t e) {
      for (int64_t pl = b; pl < e; ++pl) y[pl] = sum_contig(x + pl * HW, HW) / T(H) / T(W);
    });
    return;
  }
  const Split sp = make_split(p.N * p.C, P, true);
  parallel_for(sp.items(), 1, [&](int64_t b, int64_t e) {
    Scratch scr(sizeof(T) * W);
    T* rs = static_cast<T*>(scr.mem);
    for (int64_t it = b; it < e; ++it) {
      int64_t pl, p0, p1;
      sp.item(it, pl, p0, p1);
      const T* xp = x + pl * HW;
      T* yp = y + pl * PQ;
      for (int64_t oh = p0; oh < p1; ++oh) {
        const int64_t h0 = g.hs[oh], h1 = g.he[oh], kh = h1 - h0;
        for (int64_t ow = 0; ow < Q; ++ow) {
          const int64_t w0 = g.ws[ow], w1 = g.we[ow], kw = w1 - w0;
          T s = 0;
          if (rs) {
            if (ow == 0) {  // column sums of the row window, once per output row
              const bool vec = vec_blocks<L>(W, [&](int64_t w) {
                V a = V::load(xp + h0 * W + w);
                for (int64_t h = h0 + 1; h < h1; ++h) a = a + V::load(xp + h * W + w);
                a.store(rs + w);
              });
              if (!vec)
                for (int64_t w = 0; w < W; ++w) {
                  T a = xp[h0 * W + w];
                  for (int64_t h = h0 + 1; h < h1; ++h) a += xp[h * W + w];
                  rs[w] = a;
                }
            }
            for (int64_t w = w0; w < w1; ++w) s += rs[w];
          } else {
            for (int64_t h = h0; h < h1; ++h)
              for (int64_t w = w0; w < w1; ++w) s += xp[h * W + w];
          }
          yp[oh * Q + ow] = s / T(kh) / T(kw);
        }
      }
    }
  });
}

template <class T>
void adaptive_backward(const Pool2dParams& p, const T* dy, T* dx) {
  const int64_t H = p.H, W = p.W, P = p.P, Q = p.Q, HW = H * W, PQ = P * Q;
  const AdaptiveGeom g(p);
  if (P == 1 && Q == 1) {
    return avg_global_backward(p, dy, dx, T(H), T(W));  // dy / kh / kw, as PyTorch
  }
  std::vector<int64_t> plo, phi, qlo, qhi;
  cover(H, P, g.hs, g.he, plo, phi);
  cover(W, Q, g.ws, g.we, qlo, qhi);
  constexpr int L = Vec<T>::size;
  const int64_t lg = Q + 2 * L;
  const Split sp = make_split(p.N * p.C, H, true);
  const size_t bytes = round64(sizeof(T) * PQ) + round64(sizeof(T) * lg);
  parallel_for(sp.items(), 1, [&](int64_t b, int64_t e) {
    Scratch scr(bytes);
    char* m = static_cast<char*>(scr.mem);
    T* gq = reinterpret_cast<T*>(m);
    T* gp = reinterpret_cast<T*>(m + round64(sizeof(T) * PQ));
    for (int64_t it = b; it < e; ++it) {
      int64_t pl, h0, h1;
      sp.item(it, pl, h0, h1);
      const T* d = dy + pl * PQ;
      T* o = dx + pl * HW;
      if (!m) {  // literal loop over the rows of this item
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = 0; w < W; ++w) {
            T s = 0;
            for (int64_t r = plo[h]; r < phi[h]; ++r)
              for (int64_t q = qlo[w]; q < qhi[w]; ++q)
                s += d[r * Q + q] / T(g.he[r] - g.hs[r]) / T(g.we[q] - g.ws[q]);
            o[h * W + w] = s;
          }
        continue;
      }
      const int64_t pa = plo[h0], pb = std::max(pa, phi[h1 - 1]);
      for (int64_t r = pa; r < pb; ++r)
        for (int64_t q = 0; q < Q; ++q)
          gq[r * Q + q] = d[r * Q + q] / T(g.he[r] - g.hs[r]) / T(g.we[q] - g.ws[q]);
      sep_backward_rows(W, Q, gq, o, h0, h1, plo.data(), phi.data(), qlo.data(), qhi.data(), false,
                        1, 0, gp);
    }
  });
}

}  // namespace

// ---- entry points ------------------------------------------------------------------------------
#define FC_POOL2D_DEFS(T)                                                                          \
  void max_pool2d_forward(const Pool2dParams& p, const T* x, T* y, int64_t* indices) {             \
    max_forward<T>(p, x, y, indices);                                                              \
  }                                                                                                \
  int64_t max_pool2d_backward(const Pool2dParams& p, const T* dy, const int64_t* indices, T* dx) { \
    return max_backward<T>(p, dy, indices, dx);                                                    \
  }                                                                                                \
  void avg_pool2d_forward(const Pool2dParams& p, const T* x, T* y) { avg_forward<T>(p, x, y); }    \
  void avg_pool2d_backward(const Pool2dParams& p, const T* dy, T* dx) {                            \
    avg_backward<T>(p, dy, dx);                                                                    \
  }                                                                                                \
  void adaptive_avg_pool2d_forward(const Pool2dParams& p, const T* x, T* y) {                      \
    adaptive_forward<T>(p, x, y);                                                                  \
  }                                                                                                \
  void adaptive_avg_pool2d_backward(const Pool2dParams& p, const T* dy, T* dx) {                   \
    adaptive_backward<T>(p, dy, dx);                                                               \
  }
FC_POOL2D_DEFS(float)
FC_POOL2D_DEFS(double)
#undef FC_POOL2D_DEFS

FC_ISA_END
