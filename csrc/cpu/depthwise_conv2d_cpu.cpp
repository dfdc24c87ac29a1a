// Depthwise 2-D convolution on the CPU: forward, input gradient, weight gradient.
//
// What it computes (NCHW, groups == C, K = C * M, multiplier M >= 1, output channel k reads input
// channel c = k / M, weight w[K, 1, R, S]):
//   y[n,k,p,q]  = b[k] + sum_{r,s} w[k,r,s] * x[n,c, p*sh - pt + r*dh, q*sw - pl + s*dw]
//   dx[n,c,h,v] = sum_{m<M} sum_{r,s} w[cM+m,r,s] * dy[n,cM+m,p,q] over p*sh - pt + r*dh == h,
//                                                                  q*sw - pl + s*dw == v
//   dw[k,r,s]   = sum_{n,p,q} dy[n,k,p,q] * x[n,c, p*sh - pt + r*dh, q*sw - pl + s*dw]
// Zero padding, per-side pads (pad_b / pad_r only shape P and Q). Outputs are overwritten.
//
// Algorithm. Every direction is turned into branch-free vector loops over contiguous sources:
//   * Row path (any size). Source rows (x rows for forward / weight gradient, dy rows for the
//     input gradient) are copied into zero-padded scratch rows, so inner loops have no border
//     tests. With a column stride sw > 1 an x row is split into sw phase rows (phase f holds
//     columns i*sw + f - pl; stride 2: one de-interleaving pass with shuffles), so a strided tap
//     becomes a contiguous load at a fixed offset. Rows outside the image point at a zero row.
//     - forward: y[p, q..q+V) = b + sum_taps w * load(row_r + q + t), vectorised along Q, one
//       accumulator chain per kernel row, weights broadcast once per plane, taps unrolled at
//       compile time; converted rows live in a ring of (R-1)*dh+1 rows that stays in L1. The last
//       vector of a row overlaps the previous one (Q >= V) or spills into the next row that is
//       rewritten anyway (Q < V); no partial stores in the hot loop.
//     - input gradient: the same kernel as a correlation with the flipped kernel over padded dy
//       rows (stride 1). Stride 2: even and odd dx columns are separate correlations with the
//       taps of matching parity, interleaved into dx with shuffles; vertically only kernel rows
//       of matching parity contribute (compile-time count per row parity). Multiplier M > 1: one
//       pass per m, later passes accumulate.
//     - weight gradient: per channel k and batch element the whole x plane becomes padded phase
//       rows; blocks of kernel rows (3 for 3x3, 2 for 5x5) keep 9-10 independent vector
//       accumulators, one dy load feeding all of them; dy rows whose length is not a multiple of
//       V are copied to zero-tailed scratch. Accumulators persist across the batch; reduced once.
//   * Flat path (stride 1, P == H, Q == W, H*W <= 1024, square kernel): a plane is one flat array
//     of H*W outputs, out[i] = sum w * src[i + dr*W + dc] with src copied (double-buffered, so
//     loads never wait on store forwarding) into a buffer whose zero margins stand for rows
//     outside the image, and a precomputed per-(vector, s) lane mask (bitwise AND, exact even for
//     inf / NaN) for columns outside it. No per-row work, which is what 7x7 / 14x14 / 28x28
//     planes need. Input gradient = the same with the flipped kernel; weight gradient reuses it.
// Variants: KSIZE_SWITCH x STRIDE_SWITCH give compile-time kernels for square 3x3 / 5x5 / 7x7,
// equal strides 1 or 2, dilation 1; everything else (any R, S, strides, dilation, per-axis
// strides) runs the row path with run-time tap lists. SIMD via Vec<T> (SSE2 / AVX2+FMA /
// AVX-512 from the same templates); de-interleave / interleave / mask AND per ISA.
// Threads: forward and input gradient hand out (n, plane) units, split into row blocks only when
// planes are too few, dynamically (atomic counter, chunks) to min(threads, units) tasks; weight
// gradient splits channels (and batch chunks when channels are few, reduced afterwards in a
// fixed order; no atomics on data). Each task owns its scratch (provided by the launcher from a
// per-calling-thread grow-only buffer, so work functions never allocate or throw).
// Assumptions: C-contiguous, non-overlapping arrays; shapes validated by the binding; pads >= 0.
// In the row-path weight gradient, tail lanes multiply zero dy by real x values, so an inf in x
// can turn a gradient entry into NaN where the exact sum would not (forward / input gradient
// and the flat path are exact in that respect).
//
// Measured (2-core AMD EPYC shared with other jobs, AVX2, float32, batch n_cpu; 1 thread,
// per-thread CPU time, min of 11 rounds, ms; torch 2.13 best of NCHW / channels_last; ratio =
// ours / torch). 2-thread wall-clock figures were not reproducible under the machine's load.
//   case                 fwd  (torch) ratio | bwd_in (torch) ratio | bwd_w (torch) ratio
//   mbv2_dw_32_112       0.64 (0.87) 0.73   | 0.40 (0.67)  0.60    | 0.49 (0.82)  0.60
//   mbv2_dw_96_112s2     0.65 (1.49) 0.43   | 0.97 (2.05)  0.47    | 1.43 (1.78)  0.80
//   mbv2_dw_144_56       1.12 (2.04) 0.55   | 1.30 (2.73)  0.48    | 1.75 (3.52)  0.50
//   mbv2_dw_384_14       0.52 (1.09) 0.48   | 0.51 (0.46)  1.10    | 0.41 (0.68)  0.60
//   mbv2_dw_960_7        0.39 (0.30) 1.31   | 0.39 (0.32)  1.21    | 0.29 (0.33)  0.89
//   effl0_dw5_144_56s2   1.14 (1.85) 0.62   | 1.37 (1.49)  0.92    | 1.68 (4.89)  0.34
//   effl0_dw5_240_28     1.56 (1.51) 1.03   | 1.58 (1.62)  0.97    | 1.73 (6.42)  0.27
//   effl0_dw5_672_14     2.62 (2.71) 0.97   | 2.07 (2.14)  0.97    | 2.34 (9.59)  0.24
//   geometric mean ratio: forward 0.71, input gradient 0.79, weight gradient 0.48.
#include "cpu/depthwise_conv2d_cpu.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>

#include "common/parallel.h"
#include "common/simd.h"
#include "common/switch.h"

#define FC_DW_INLINE inline __attribute__((always_inline))

FC_ISA_BEGIN
namespace {

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------
inline int64_t floor_div(int64_t a, int64_t b) {  // b > 0
  int64_t q = a / b;
  return (q * b > a) ? q - 1 : q;
}
inline int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Per-task scratch: the launcher provides tasks * bytes (64-byte aligned slices), zeroed by the
// task itself. The memory is a grow-only buffer kept per calling thread, so back-to-back calls
// do not pay for mmap / page faults (launchers never nest, so one buffer per thread suffices).
struct Scratch {
  unsigned char* base = nullptr;
  int64_t bytes = 0;
  void alloc(int64_t tasks, int64_t per_task) {
    thread_local std::unique_ptr<unsigned char[]> cache;
    thread_local int64_t cache_bytes = 0;
    bytes = round_up(per_task, 64);
    const int64_t need = tasks * bytes + 64;
    if (need > cache_bytes) {
      cache.reset();
      cache.reset(new unsigned char[static_cast<size_t>(need)]);
      cache_bytes = need;
    }
    base = reinterpret_cast<unsigned char*>(round_up(reinterpret_cast<intptr_t>(cache.get()), 64));
  }
  unsigned char* task(int64_t t) const { return base + t * bytes; }
};

// Carves typed, 64-byte aligned arrays out of a task's scratch.
struct Carver {
  unsigned char* p;
  template <class U>
  U* take(int64_t n) {
    U* r = reinterpret_cast<U*>(p);
    p += round_up(static_cast<int64_t>(sizeof(U)) * n, 64);
    return r;
  }
};
template <class U>
inline int64_t carve_bytes(int64_t n) {
  return round_up(static_cast<int64_t>(sizeof(U)) * n, 64);
}

// Units handed out dynamically to min(tasks, threads) tasks, each with its task index.
// Each task first zeroes its scratch slice (first touch on its own core).
template <class F>
void run_ranges(int64_t units, int64_t ntasks, const Scratch& scr, const F& f) {
  // chunks of about 1/16 of a task's share keep the atomic off the profile and still balance
  const int64_t chunk = std::max<int64_t>(1, units / (16 * ntasks));
  parallel_claim(
      units, chunk, ntasks,
      [&](int64_t task) { std::memset(scr.task(task), 0, static_cast<size_t>(scr.bytes)); }, f);
}
template <class F>
void run_units(int64_t units, int64_t ntasks, const Scratch& scr, const F& f) {
  run_ranges(units, ntasks, scr, [&](int64_t task, int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) f(task, u);
  });
}

// ---------------------------------------------------------------------------------------------
// ISA-specific shuffles: gather even elements, interleave two vectors.
// ---------------------------------------------------------------------------------------------
// Returns p[0], p[2], ..., p[2V-2] (reads p[0 .. 2V)).
template <class T>
FC_DW_INLINE Vec<T> load_even(const T* p);
// p[2i] = a[i], p[2i+1] = b[i] for i < V.
template <class T>
FC_DW_INLINE void store_interleaved(T* p, Vec<T> a, Vec<T> b);

#if defined(FC_ISA_avx512)
template <>
FC_DW_INLINE Vec<float> load_even<float>(const float* p) {
  const __m512i idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  return {_mm512_permutex2var_ps(_mm512_loadu_ps(p), idx, _mm512_loadu_ps(p + 16))};
}
template <>
FC_DW_INLINE Vec<double> load_even<double>(const double* p) {
  const __m512i idx = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
  return {_mm512_permutex2var_pd(_mm512_loadu_pd(p), idx, _mm512_loadu_pd(p + 8))};
}
FC_DW_INLINE void load_deinterleave(const float* p, Vec<float>& e, Vec<float>& o) {
  const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  __m512 a = _mm512_loadu_ps(p), b = _mm512_loadu_ps(p + 16);
  e.v = _mm512_permutex2var_ps(a, ie, b);
  o.v = _mm512_permutex2var_ps(a, io, b);
}
FC_DW_INLINE void load_deinterleave(const double* p, Vec<double>& e, Vec<double>& o) {
  const __m512i ie = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
  const __m512i io = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
  __m512d a = _mm512_loadu_pd(p), b = _mm512_loadu_pd(p + 8);
  e.v = _mm512_permutex2var_pd(a, ie, b);
  o.v = _mm512_permutex2var_pd(a, io, b);
}
template <>
FC_DW_INLINE void store_interleaved<float>(float* p, Vec<float> a, Vec<float> b) {
  const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  _mm512_storeu_ps(p, _mm512_permutex2var_ps(a.v, lo, b.v));
  _mm512_storeu_ps(p + 16, _mm512_permutex2var_ps(a.v, hi, b.v));
}
template <>
FC_DW_INLINE void store_interleaved<double>(double* p, Vec<double> a, Vec<double> b) {
  const __m512i lo = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
  const __m512i hi = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
  _mm512_storeu_pd(p, _mm512_permutex2var_pd(a.v, lo, b.v));
  _mm512_storeu_pd(p + 8, _mm512_permutex2var_pd(a.v, hi, b.v));
}
#elif defined(FC_ISA_avx2)
template <>
FC_DW_INLINE Vec<float> load_even<float>(const float* p) {
  __m256 t = _mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8), _MM_SHUFFLE(2, 0, 2, 0));
  return {_mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)))};
}
template <>
FC_DW_INLINE Vec<double> load_even<double>(const double* p) {
  __m256d t = _mm256_unpacklo_pd(_mm256_loadu_pd(p), _mm256_loadu_pd(p + 4));
  return {_mm256_permute4x64_pd(t, _MM_SHUFFLE(3, 1, 2, 0))};
}
FC_DW_INLINE void load_deinterleave(const float* p, Vec<float>& e, Vec<float>& o) {
  __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
  __m256 te = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
  __m256 to = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
  e.v = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(te), _MM_SHUFFLE(3, 1, 2, 0)));
  o.v = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(to), _MM_SHUFFLE(3, 1, 2, 0)));
}
FC_DW_INLINE void load_deinterleave(const double* p, Vec<double>& e, Vec<double>& o) {
  __m256d a = _mm256_loadu_pd(p), b = _mm256_loadu_pd(p + 4);
  e.v = _mm256_permute4x64_pd(_mm256_unpacklo_pd(a, b), _MM_SHUFFLE(3, 1, 2, 0));
  o.v = _mm256_permute4x64_pd(_mm256_unpackhi_pd(a, b), _MM_SHUFFLE(3, 1, 2, 0));
}
template <>
FC_DW_INLINE void store_interleaved<float>(float* p, Vec<float> a, Vec<float> b) {
  __m256 lo = _mm256_unpacklo_ps(a.v, b.v), hi = _mm256_unpackhi_ps(a.v, b.v);
  _mm256_storeu_ps(p, _mm256_permute2f128_ps(lo, hi, 0x20));
  _mm256_storeu_ps(p + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
}
template <>
FC_DW_INLINE void store_interleaved<double>(double* p, Vec<double> a, Vec<double> b) {
  __m256d lo = _mm256_unpacklo_pd(a.v, b.v), hi = _mm256_unpackhi_pd(a.v, b.v);
  _mm256_storeu_pd(p, _mm256_permute2f128_pd(lo, hi, 0x20));
  _mm256_storeu_pd(p + 4, _mm256_permute2f128_pd(lo, hi, 0x31));
}
#elif defined(FC_X86)
template <>
FC_DW_INLINE Vec<float> load_even<float>(const float* p) {
  return {_mm_shuffle_ps(_mm_loadu_ps(p), _mm_loadu_ps(p + 4), _MM_SHUFFLE(2, 0, 2, 0))};
}
template <>
FC_DW_INLINE Vec<double> load_even<double>(const double* p) {
  return {_mm_unpacklo_pd(_mm_loadu_pd(p), _mm_loadu_pd(p + 2))};
}
FC_DW_INLINE void load_deinterleave(const float* p, Vec<float>& e, Vec<float>& o) {
  __m128 a = _mm_loadu_ps(p), b = _mm_loadu_ps(p + 4);
  e.v = _mm_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
  o.v = _mm_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
}
FC_DW_INLINE void load_deinterleave(const double* p, Vec<double>& e, Vec<double>& o) {
  __m128d a = _mm_loadu_pd(p), b = _mm_loadu_pd(p + 2);
  e.v = _mm_unpacklo_pd(a, b);
  o.v = _mm_unpackhi_pd(a, b);
}
template <>
FC_DW_INLINE void store_interleaved<float>(float* p, Vec<float> a, Vec<float> b) {
  _mm_storeu_ps(p, _mm_unpacklo_ps(a.v, b.v));
  _mm_storeu_ps(p + 4, _mm_unpackhi_ps(a.v, b.v));
}
template <>
FC_DW_INLINE void store_interleaved<double>(double* p, Vec<double> a, Vec<double> b) {
  _mm_storeu_pd(p, _mm_unpacklo_pd(a.v, b.v));
  _mm_storeu_pd(p + 2, _mm_unpackhi_pd(a.v, b.v));
}
#else
template <class T>
FC_DW_INLINE Vec<T> load_even(const T* p) {
  constexpr int V = Vec<T>::size;
  alignas(64) T buf[V];
  for (int i = 0; i < V; ++i) buf[i] = p[2 * i];
  return Vec<T>::load(buf);
}
template <class T>
FC_DW_INLINE void load_deinterleave(const T* p, Vec<T>& e, Vec<T>& o) {
  constexpr int V = Vec<T>::size;
  alignas(64) T be[V], bo[V];
  for (int i = 0; i < V; ++i) {
    be[i] = p[2 * i];
    bo[i] = p[2 * i + 1];
  }
  e = Vec<T>::load(be);
  o = Vec<T>::load(bo);
}
template <class T>
FC_DW_INLINE void store_interleaved(T* p, Vec<T> a, Vec<T> b) {
  constexpr int V = Vec<T>::size;
  alignas(64) T ba[V], bb[V];
  a.store(ba);
  b.store(bb);
  for (int i = 0; i < V; ++i) {
    p[2 * i] = ba[i];
    p[2 * i + 1] = bb[i];
  }
}
#endif

// Bitwise AND with a lane mask (all-ones / all-zeros lanes): exact zeroing, even for inf / NaN.
#if defined(FC_ISA_avx512)
FC_DW_INLINE Vec<float> vand(Vec<float> a, Vec<float> m) { return {_mm512_and_ps(a.v, m.v)}; }
FC_DW_INLINE Vec<double> vand(Vec<double> a, Vec<double> m) { return {_mm512_and_pd(a.v, m.v)}; }
#elif defined(FC_ISA_avx2)
FC_DW_INLINE Vec<float> vand(Vec<float> a, Vec<float> m) { return {_mm256_and_ps(a.v, m.v)}; }
FC_DW_INLINE Vec<double> vand(Vec<double> a, Vec<double> m) { return {_mm256_and_pd(a.v, m.v)}; }
#elif defined(FC_X86)
FC_DW_INLINE Vec<float> vand(Vec<float> a, Vec<float> m) { return {_mm_and_ps(a.v, m.v)}; }
FC_DW_INLINE Vec<double> vand(Vec<double> a, Vec<double> m) { return {_mm_and_pd(a.v, m.v)}; }
#else
template <class T>
FC_DW_INLINE Vec<T> vand(Vec<T> a, Vec<T> m) {
  constexpr int V = Vec<T>::size;
  alignas(64) T ba[V], bm[V];
  a.store(ba);
  m.store(bm);
  for (int i = 0; i < V; ++i) {
    unsigned char* x = reinterpret_cast<unsigned char*>(&ba[i]);
    const unsigned char* y = reinterpret_cast<const unsigned char*>(&bm[i]);
    for (size_t b = 0; b < sizeof(T); ++b) x[b] &= y[b];
  }
  return Vec<T>::load(ba);
}
#endif


// ---------------------------------------------------------------------------------------------
// Row conversion: dst[i] = src[i*sw + phase - pad] for the i in [0, L) whose column lies in
// [0, W). Positions outside stay untouched (they are zero from the task's initial memset and no
// other row ever writes them, since every row of an op has the same data positions).
// ---------------------------------------------------------------------------------------------
struct FillGeom {
  int64_t i0 = 0, n = 0, soff = 0, nvec = 0, sw = 1;
  FillGeom() = default;
  template <class T>
  static FillGeom make(int64_t W, int64_t sw, int64_t phase, int64_t pad, int64_t L) {
    constexpr int V = Vec<T>::size;
    FillGeom g;
    g.sw = sw;
    g.i0 = std::max<int64_t>(0, ceil_div(pad - phase, sw));
    int64_t i1 = std::min<int64_t>(L, floor_div(W - 1 + pad - phase, sw) + 1);
    g.n = std::max<int64_t>(0, i1 - g.i0);
    g.soff = g.i0 * sw + phase - pad;
    const int64_t avail = W - g.soff;  // elements readable from the first source element
    g.nvec = 0;
    if (sw == 1) g.nvec = g.n / V;
    else if (sw == 2) g.nvec = std::max<int64_t>(0, std::min(g.n / V, avail / (2 * V)));
    return g;
  }
};
template <class T>
FC_DW_INLINE void fill_row(T* dst, const T* src, const FillGeom& g) {
  constexpr int V = Vec<T>::size;
  const T* s = src + g.soff;
  T* d = dst + g.i0;
  const int64_t n = g.n, nv = g.nvec * V;
  int64_t j = 0;
  if (g.sw == 1) {
    for (; j < nv; j += V) Vec<T>::load(s + j).store(d + j);
    for (; j < n; ++j) d[j] = s[j];
  } else if (g.sw == 2) {
    for (; j < nv; j += V) load_even<T>(s + 2 * j).store(d + j);
    for (; j < n; ++j) d[j] = s[2 * j];
  } else {
    for (; j < n; ++j) d[j] = s[j * g.sw];
  }
}
constexpr int64_t kMaxPhases = 4;  // column strides up to this get precomputed fill geometry
// Stride 2: both phase rows of one source row in one pass. The two phases start at source
// columns 0 and 1 (pads are >= 0), so one takes the even columns and the other the odd ones.
template <class T>
FC_DW_INLINE void fill_row_pair(T* dst0, T* dst1, const T* src, const FillGeom& g0,
                                const FillGeom& g1, int64_t W) {
  constexpr int V = Vec<T>::size;
  const bool zero_first = g0.soff == 0;
  T* de = (zero_first ? dst0 + g0.i0 : dst1 + g1.i0);
  T* dodd = (zero_first ? dst1 + g1.i0 : dst0 + g0.i0);
  const int64_t ne = zero_first ? g0.n : g1.n, no = zero_first ? g1.n : g0.n;
  const int64_t nj = std::min(std::min(ne, no), W / 2) / V * V;
  int64_t j = 0;
  for (; j < nj; j += V) {
    Vec<T> e, o;
    load_deinterleave(src + 2 * j, e, o);
    e.store(de + j);
    o.store(dodd + j);
  }
  for (int64_t i = j; i < ne; ++i) de[i] = src[2 * i];
  for (int64_t i = j; i < no; ++i) dodd[i] = src[2 * i + 1];
}
inline int64_t pow2_at_least(int64_t n) {
  int64_t r = 1;
  while (r < n) r *= 2;
  return r;
}

// ---------------------------------------------------------------------------------------------
// Compile-time row kernel. NR source rows per group; group A has NA consecutive taps (offsets
// 0..NA-1 from a[r]), group B has NB (offsets 0..NB-1 from b[r]; NB may be 0).
//   COMBINE: A(j) = sum of both groups (forward, one output row);
//   otherwise A and B are separate outputs (input gradient stride 2: even and odd columns).
// ---------------------------------------------------------------------------------------------
template <class T, int NR, int NA, int NB>
struct Taps {
  const T* a[NR];
  const T* b[NR];
  T wa[NR * NA];
  T wb[NR * (NB > 0 ? NB : 1)];
};

template <class T, int NR, int NA, int NB>
struct TapVecs {
  Vec<T> wa[NR * NA];
  Vec<T> wb[NR * (NB > 0 ? NB : 1)];
  explicit TapVecs(const Taps<T, NR, NA, NB>& tp) {
#pragma GCC unroll 64
    for (int i = 0; i < NR * NA; ++i) wa[i] = Vec<T>::set1(tp.wa[i]);
#pragma GCC unroll 64
    for (int i = 0; i < NR * NB; ++i) wb[i] = Vec<T>::set1(tp.wb[i]);
  }
};

template <class T, int NR, int NA, int NB, bool COMBINE>
FC_DW_INLINE void eval_taps(const Taps<T, NR, NA, NB>& tp, const Vec<T>* wa, const Vec<T>* wb,
                            int64_t j, Vec<T>& A, Vec<T>& B) {
  using V = Vec<T>;
  V sa[NR], sb[NR];
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r) {
    const T* pa = tp.a[r] + j;
    V acc = wa[r * NA] * V::load(pa);
#pragma GCC unroll 8
    for (int t = 1; t < NA; ++t) acc = V::fmadd(wa[r * NA + t], V::load(pa + t), acc);
    if constexpr (NB > 0) {
      const T* pb = tp.b[r] + j;
      if constexpr (COMBINE) {
#pragma GCC unroll 8
        for (int t = 0; t < NB; ++t) acc = V::fmadd(wb[r * NB + t], V::load(pb + t), acc);
      } else {
        V bcc = wb[r * NB] * V::load(pb);
#pragma GCC unroll 8
        for (int t = 1; t < NB; ++t) bcc = V::fmadd(wb[r * NB + t], V::load(pb + t), bcc);
        sb[r] = bcc;
      }
    }
    sa[r] = acc;
  }
  // pairwise sums keep the dependency chains short
#pragma GCC unroll 8
  for (int stride = 1; stride < NR; stride *= 2)
#pragma GCC unroll 8
    for (int r = 0; r + stride < NR; r += 2 * stride) {
      sa[r] = sa[r] + sa[r + stride];
      if constexpr (NB > 0 && !COMBINE) sb[r] = sb[r] + sb[r + stride];
    }
  A = sa[0];
  if constexpr (NB > 0 && !COMBINE) B = sb[0];
}

// out[j] (+)= bias + sum of taps, j in [0, n). room: elements after out[n] that this task will
// overwrite later anyway (used for a full-width store when n < V; only without ACC).
template <class T, int NR, int NA, int NB, bool ACC>
FC_DW_INLINE void row_sum(const Taps<T, NR, NA, NB>& tp, const TapVecs<T, NR, NA, NB>& wv, T* out,
                          int64_t n, T bias, int64_t room) {
  using V = Vec<T>;
  constexpr int VS = V::size;
  const V vb = V::set1(bias);
  V A, B;
  int64_t j = 0;
  for (; j + VS <= n; j += VS) {
    eval_taps<T, NR, NA, NB, true>(tp, wv.wa, wv.wb, j, A, B);
    A = A + vb;
    if constexpr (ACC) A = A + V::load(out + j);
    A.store(out + j);
  }
  if (j < n) {
    if (!ACC && n >= VS) {  // overlap the last full vector (same values rewritten)
      j = n - VS;
      eval_taps<T, NR, NA, NB, true>(tp, wv.wa, wv.wb, j, A, B);
      (A + vb).store(out + j);
    } else {
      eval_taps<T, NR, NA, NB, true>(tp, wv.wa, wv.wb, j, A, B);
      A = A + vb;
      if (!ACC && room >= j + VS - n) {
        A.store(out + j);
      } else {
        alignas(64) T buf[VS];
        A.store(buf);
        for (int64_t i = 0; j + i < n; ++i) out[j + i] = ACC ? out[j + i] + buf[i] : buf[i];
      }
    }
  }
}

// out[2j] (+)= A(j), out[2j+1] (+)= B(j) for 2j, 2j+1 < W.
template <class T, int NR, int NA, int NB, bool ACC>
FC_DW_INLINE void row_interleave(const Taps<T, NR, NA, NB>& tp, const Vec<T>* wa, const Vec<T>* wb,
                                 T* out, int64_t W) {
  using V = Vec<T>;
  constexpr int VS = V::size;
  V A, B;
  int64_t j = 0;
  for (; 2 * (j + VS) <= W; j += VS) {
    eval_taps<T, NR, NA, NB, false>(tp, wa, wb, j, A, B);
    if constexpr (ACC) {
      alignas(64) T buf[2 * VS];
      store_interleaved<T>(buf, A, B);
      (V::load(buf) + V::load(out + 2 * j)).store(out + 2 * j);
      (V::load(buf + VS) + V::load(out + 2 * j + VS)).store(out + 2 * j + VS);
    } else {
      store_interleaved<T>(out + 2 * j, A, B);
    }
  }
  if (2 * j < W) {
    eval_taps<T, NR, NA, NB, false>(tp, wa, wb, j, A, B);
    alignas(64) T buf[2 * VS];
    store_interleaved<T>(buf, A, B);
    for (int64_t i = 0; 2 * j + i < W; ++i)
      out[2 * j + i] = ACC ? out[2 * j + i] + buf[i] : buf[i];
  }
}

// Run-time tap list: out[j] (+)= bias + sum_t wt[t] * ptr[t][j], j in [0, n).
template <class T, bool ACC>
void row_generic(const T* const* ptr, const T* wt, int64_t nt, T* out, int64_t n, T bias) {
  using V = Vec<T>;
  constexpr int VS = V::size;
  auto eval = [&](int64_t j) {
    V acc = V::set1(bias);
    for (int64_t t = 0; t < nt; ++t) acc = V::fmadd(V::set1(wt[t]), V::load(ptr[t] + j), acc);
    return acc;
  };
  int64_t j = 0;
  for (; j + VS <= n; j += VS) {
    V a = eval(j);
    if (ACC) a = a + V::load(out + j);
    a.store(out + j);
  }
  if (j < n) {
    alignas(64) T buf[VS];
    eval(j).store(buf);
    for (int64_t i = 0; j + i < n; ++i) out[j + i] = ACC ? out[j + i] + buf[i] : buf[i];
  }
}

// ---------------------------------------------------------------------------------------------
// Flat path for small planes (stride 1, dilation 1, P == H, Q == W, KS x KS kernel): a plane is
// one flat vector of H*W outputs, out[i] = sum_{r,s} w'[r,s] * src[i + (r - pt')*W + s - pl'],
// with src copied into a buffer whose zero margins stand for the rows outside the image and a
// per-(vector, s) lane mask for the columns outside it. No per-row work at all, which is what
// small planes (7x7, 14x14, 28x28) need. The input gradient is the same with the flipped kernel
// (pt' = KS-1-pt, pl' = KS-1-pl) over dy; the weight gradient reuses the forward geometry.
// ---------------------------------------------------------------------------------------------
constexpr int64_t kFlatMaxPlane = 1024;

template <class T>
struct FlatGeom {
  int64_t HW = 0, W = 0, nvec = 0, last = 0, top = 0, buflen = 0, pt = 0, pl = 0;
  std::unique_ptr<Vec<T>[]> cm;  // nvec * KS column masks
  Vec<T> newmask;                // lanes of the last vector that no earlier vector covered
  FlatGeom(int64_t H, int64_t W_, int64_t KS, int64_t pt_, int64_t pl_) : W(W_), pt(pt_), pl(pl_) {
    constexpr int V = Vec<T>::size;
    HW = H * W;
    nvec = ceil_div(HW, V);
    last = HW - V;
    const int64_t min_off = -pt * W - pl, max_off = (KS - 1 - pt) * W + (KS - 1 - pl);
    top = round_up(std::max<int64_t>(0, -min_off), 16);
    buflen = round_up(top + HW + std::max<int64_t>(0, max_off) + V, 16);
    cm.reset(new Vec<T>[static_cast<size_t>(nvec * KS)]);
    alignas(64) T lane[V];
    T ones, zero = T(0);
    std::memset(&ones, 0xff, sizeof(T));
    for (int64_t v = 0; v < nvec; ++v) {
      const int64_t start = v < nvec - 1 ? v * V : last;
      for (int64_t s = 0; s < KS; ++s) {
        for (int l = 0; l < V; ++l) {
          const int64_t c = (start + l) % W + s - pl;
          lane[l] = (c >= 0 && c < W) ? ones : zero;
        }
        cm[v * KS + s] = Vec<T>::load(lane);
      }
    }
    for (int l = 0; l < V; ++l) lane[l] = (last + l >= (nvec - 1) * V) ? ones : zero;
    newmask = Vec<T>::load(lane);
  }
  bool applies() const { return HW >= Vec<T>::size; }
};

// out[i] (+)= bias + sum_{r,s} wv[r*KS+s] * src[i + (r - pt)*W + s - pl] (masked), i in [0, HW).
// src points at the plane's first element inside its zero-margined buffer.
template <class T, int KS, bool ACC>
void flat_plane(const FlatGeom<T>& g, const T* src, const Vec<T>* wv, T bias, T* out) {
  using V = Vec<T>;
  constexpr int VS = V::size;
  const V vb = V::set1(bias);
  const int64_t W = g.W;
  const T* base[KS];
#pragma GCC unroll 8
  for (int r = 0; r < KS; ++r) base[r] = src + (r - g.pt) * W - g.pl;
  for (int64_t v = 0; v < g.nvec; ++v) {
    const int64_t i = v < g.nvec - 1 ? v * VS : g.last;
    V m[KS];
#pragma GCC unroll 8
    for (int s = 0; s < KS; ++s) m[s] = g.cm[v * KS + s];
    V acc[KS];
#pragma GCC unroll 8
    for (int r = 0; r < KS; ++r) {
      const T* rp = base[r] + i;
      V a = wv[r * KS] * vand(V::load(rp), m[0]);
#pragma GCC unroll 8
      for (int s = 1; s < KS; ++s) a = V::fmadd(wv[r * KS + s], vand(V::load(rp + s), m[s]), a);
      acc[r] = a;
    }
#pragma GCC unroll 8
    for (int st = 1; st < KS; st *= 2)
#pragma GCC unroll 8
      for (int r = 0; r + st < KS; r += 2 * st) acc[r] = acc[r] + acc[r + st];
    V res = acc[0] + vb;
    if constexpr (ACC) {
      if (v == g.nvec - 1) res = vand(res, g.newmask);
      res = res + V::load(out + i);
    }
    res.store(out + i);
  }
}

template <class T>
FC_DW_INLINE void copy_plane(T* dst, const T* src, int64_t n) {
  constexpr int VS = Vec<T>::size;
  int64_t j = 0;
  for (; j + VS <= n; j += VS) Vec<T>::load(src + j).store(dst + j);
  for (; j < n; ++j) dst[j] = src[j];
}

template <class T, int KS>
void forward_flat(const Conv2dParams& p, const FlatGeom<T>& g, const T* x, const T* w,
                  const T* bias, T* y) {
  const int64_t K = p.K, C = p.C, M = K / C, HW = g.HW;
  const int64_t planes = p.N * K, ntasks = std::min<int64_t>(num_threads(), planes);
  Scratch scr;
  scr.alloc(ntasks, 2 * carve_bytes<T>(g.buflen));
  // Two buffers: the next plane is copied before the current one is computed, so the loads never
  // wait on just-issued stores (store-to-load forwarding fails on the shifted loads).
  auto src = [&](int64_t u) { return x + ((u / K) * C + (u % K) / M) * HW; };
  run_ranges(planes, ntasks, scr, [&](int64_t task, int64_t b, int64_t e) {
    T* bufs[2] = {reinterpret_cast<T*>(scr.task(task)),
                  reinterpret_cast<T*>(scr.task(task) + carve_bytes<T>(g.buflen))};
    copy_plane(bufs[0] + g.top, src(b), HW);
    int64_t k = b % K;
    for (int64_t u = b; u < e; ++u) {
      if (u + 1 < e) copy_plane(bufs[(u + 1 - b) & 1] + g.top, src(u + 1), HW);
      Vec<T> wv[KS * KS];
#pragma GCC unroll 64
      for (int i = 0; i < KS * KS; ++i) wv[i] = Vec<T>::set1(w[k * KS * KS + i]);
      flat_plane<T, KS, false>(g, bufs[(u - b) & 1] + g.top, wv, bias ? bias[k] : T(0), y + u * HW);
      if (++k == K) k = 0;
    }
  });
}

template <class T, int KS>
void backward_input_flat(const Conv2dParams& p, const FlatGeom<T>& g, const T* dy, const T* w,
                         T* dx) {
  const int64_t K = p.K, C = p.C, M = K / C, HW = g.HW;
  const int64_t planes = p.N * C, ntasks = std::min<int64_t>(num_threads(), planes);
  Scratch scr;
  scr.alloc(ntasks, 2 * carve_bytes<T>(g.buflen));
  // dy planes (n, k) in order j = u * M + m are contiguous: plane j starts at dy + j * HW.
  run_ranges(planes, ntasks, scr, [&](int64_t task, int64_t b, int64_t e) {
    T* bufs[2] = {reinterpret_cast<T*>(scr.task(task)),
                  reinterpret_cast<T*>(scr.task(task) + carve_bytes<T>(g.buflen))};
    const int64_t j0 = b * M, j1 = e * M;
    copy_plane(bufs[0] + g.top, dy + j0 * HW, HW);
    int64_t kk = j0 % K;
    for (int64_t j = j0; j < j1; ++j) {
      if (j + 1 < j1) copy_plane(bufs[(j + 1 - j0) & 1] + g.top, dy + (j + 1) * HW, HW);
      Vec<T> wv[KS * KS];
#pragma GCC unroll 64
      for (int i = 0; i < KS * KS; ++i) wv[i] = Vec<T>::set1(w[kk * KS * KS + (KS * KS - 1 - i)]);
      const int64_t u = j / M;
      if (j - u * M == 0) flat_plane<T, KS, false>(g, bufs[(j - j0) & 1] + g.top, wv, T(0), dx + u * HW);
      else flat_plane<T, KS, true>(g, bufs[(j - j0) & 1] + g.top, wv, T(0), dx + u * HW);
      if (++kk == K) kk = 0;
    }
  });
}

// Weight gradient, flat: per kernel row r, KS accumulators sweep the flat plane:
// acc[s] += dy[i..] * x[i + (r - pt)*W + s - pl] (masked).
template <class T, int KS>
void backward_weight_flat(const Conv2dParams& p, const FlatGeom<T>& g, const T* dy, const T* x,
                          T* dwout) {
  using V = Vec<T>;
  constexpr int VS = V::size;
  const int64_t K = p.K, C = p.C, M = K / C, N = p.N, HW = g.HW, W = g.W;
  constexpr int RS = KS * KS;
  const int64_t nt = num_threads();
  int64_t nchunk = K >= 4 * nt ? 1 : std::min<int64_t>(N, ceil_div(4 * nt, K));
  const int64_t nper = ceil_div(N, nchunk);
  nchunk = ceil_div(N, nper);
  const int64_t units = K * nchunk, ntasks = std::min<int64_t>(nt, units);
  Scratch scr;
  scr.alloc(ntasks, 2 * carve_bytes<T>(g.buflen));
  std::unique_ptr<T[]> partial;
  if (nchunk > 1) partial.reset(new T[static_cast<size_t>(nchunk * K * RS)]);
  run_units(units, ntasks, scr, [&](int64_t task, int64_t u) {
    T* bufs[2] = {reinterpret_cast<T*>(scr.task(task)),
                  reinterpret_cast<T*>(scr.task(task) + carve_bytes<T>(g.buflen))};
    const int64_t k = u / nchunk, ch = u % nchunk, c = k / M;
    const int64_t n0 = ch * nper, n1 = std::min(N, n0 + nper);
    constexpr int RBK = KS == 3 ? 3 : (KS == 5 ? 2 : 1);  // 9 / 10 / 7 accumulator chains
    V acc[RS];
#pragma GCC unroll 64
    for (int i = 0; i < RS; ++i) acc[i] = V::zero();
    copy_plane(bufs[0] + g.top, x + (n0 * C + c) * HW, HW);
    for (int64_t n = n0; n < n1; ++n) {
      // double buffer: the next x plane is copied before this one is read
      if (n + 1 < n1) copy_plane(bufs[(n + 1 - n0) & 1] + g.top, x + ((n + 1) * C + c) * HW, HW);
      const T* xb = bufs[(n - n0) & 1] + g.top;
      const T* d = dy + (n * K + k) * HW;
      auto sweep = [&](auto nrb_c, int r0) {
        constexpr int NRB = decltype(nrb_c)::value;
        V a[NRB][KS];
        const T* xr[NRB];
#pragma GCC unroll 8
        for (int i = 0; i < NRB; ++i) {
          xr[i] = xb + (r0 + i - g.pt) * W - g.pl;
#pragma GCC unroll 8
          for (int s = 0; s < KS; ++s) a[i][s] = acc[(r0 + i) * KS + s];
        }
        for (int64_t v = 0; v < g.nvec; ++v) {
          const int64_t i0 = v < g.nvec - 1 ? v * VS : g.last;
          V dv = V::load(d + i0);
          if (v == g.nvec - 1) dv = vand(dv, g.newmask);
          const Vec<T>* m = g.cm.get() + v * KS;
#pragma GCC unroll 8
          for (int s = 0; s < KS; ++s) {
            const V ms = m[s];
#pragma GCC unroll 8
            for (int i = 0; i < NRB; ++i) a[i][s] = V::fmadd(dv, vand(V::load(xr[i] + i0 + s), ms), a[i][s]);
          }
        }
#pragma GCC unroll 8
        for (int i = 0; i < NRB; ++i)
#pragma GCC unroll 8
          for (int s = 0; s < KS; ++s) acc[(r0 + i) * KS + s] = a[i][s];
      };
      int r0 = 0;
      for (; r0 + RBK <= KS; r0 += RBK) sweep(std::integral_constant<int, RBK>{}, r0);
      if constexpr (KS % RBK != 0) sweep(std::integral_constant<int, KS % RBK>{}, r0);
    }
    T* out = nchunk > 1 ? partial.get() + (ch * K + k) * RS : dwout + k * RS;
    for (int i = 0; i < RS; ++i) out[i] = acc[i].reduce_add();
  });
  if (nchunk > 1) {
    for (int64_t i = 0; i < K * RS; ++i) {
      T s = partial[i];
      for (int64_t ch = 1; ch < nchunk; ++ch) s += partial[ch * K * RS + i];
      dwout[i] = s;
    }
  }
}

// Units: planes x row blocks; row blocks only when planes are too few to feed the threads.
struct Blocking {
  int64_t nblk, rows, units;
};
inline Blocking block_rows(int64_t planes, int64_t rows, int64_t nt) {
  int64_t want = 4 * nt;
  int64_t nblk = planes >= want ? 1 : std::min<int64_t>(rows, ceil_div(want, planes));
  nblk = std::max<int64_t>(nblk, 1);
  int64_t per = ceil_div(rows, nblk);
  nblk = ceil_div(rows, per);
  return {nblk, per, planes * nblk};
}

// ---------------------------------------------------------------------------------------------
// Forward. Unit = (n, k, block of output rows); x rows converted into a ring of RB rows.
// ---------------------------------------------------------------------------------------------
template <class T, int KS, int ST>
void forward_run(const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y) {
  constexpr int VS = Vec<T>::size;
  if constexpr (KS > 0 && ST == 1) {
    if (p.P == p.H && p.Q == p.W && p.H * p.W <= kFlatMaxPlane && p.N * p.K >= 4 * num_threads()) {
      const FlatGeom<T> g(p.H, p.W, KS, p.pad_t, p.pad_l);
      if (g.applies()) return forward_flat<T, KS>(p, g, x, w, bias, y);
    }
  }
  const int64_t R = p.R, S = p.S, sh = p.stride_h, sw = p.stride_w, dh = p.dil_h, dw = p.dil_w;
  const int64_t H = p.H, W = p.W, P = p.P, Q = p.Q, K = p.K, C = p.C, M = K / C;
  const int64_t L = round_up(round_up(std::max<int64_t>(Q, VS), VS) + ((S - 1) * dw) / sw + 1, 16);
  const int64_t RB = pow2_at_least((R - 1) * dh + 1);
  FillGeom fg[kMaxPhases];
  for (int64_t f = 0; f < std::min<int64_t>(sw, kMaxPhases); ++f) fg[f] = FillGeom::make<T>(W, sw, f, p.pad_l, L);
  const int64_t nt = num_threads();
  const Blocking bk = block_rows(p.N * K, P, nt);
  const int64_t ntasks = std::min<int64_t>(nt, bk.units);
  // The zero row stands in for a whole ring slot (all sw phase rows), so it is sw * L long.
  const int64_t per_task = carve_bytes<T>(RB * sw * L) + carve_bytes<T>(sw * L) +
                           carve_bytes<const T*>(R * S) + carve_bytes<T>(R * S);
  Scratch scr;
  scr.alloc(ntasks, per_task);

  run_units(bk.units, ntasks, scr, [&](int64_t task, int64_t u) {
    unsigned char* base = scr.task(task);
    Carver cv{base};
    T* ring = cv.take<T>(RB * sw * L);
    T* zero = cv.take<T>(sw * L);
    const T** tptr = cv.take<const T*>(R * S);
    T* twt = cv.take<T>(R * S);
    const int64_t plane = u / bk.nblk, blk = u % bk.nblk;
    const int64_t n = plane / K, k = plane % K, c = k / M;
    const int64_t p0 = blk * bk.rows, p1 = std::min(P, p0 + bk.rows);
    const T* xp = x + (n * C + c) * H * W;
    T* yp = y + (n * K + k) * P * Q;
    const T* wk = w + k * R * S;
    const T b = bias ? bias[k] : T(0);
    int64_t next_h = 0;
    auto slot = [&](int64_t h) { return ring + (h & (RB - 1)) * sw * L; };
    constexpr int NA = KS > 0 ? (KS + ST - 1) / ST : 1, NB = ST == 2 ? KS / 2 : 0;
    constexpr int NR = KS > 0 ? KS : 1;
    Taps<T, NR, NA, NB> tp{};
    if constexpr (KS > 0) {
#pragma GCC unroll 8
      for (int r = 0; r < KS; ++r) {
#pragma GCC unroll 8
        for (int t = 0; t < NA; ++t) tp.wa[r * NA + t] = wk[r * KS + t * ST];
#pragma GCC unroll 8
        for (int t = 0; t < NB; ++t) tp.wb[r * NB + t] = wk[r * KS + 2 * t + 1];
      }
    }
    const TapVecs<T, NR, NA, NB> wv(tp);
    for (int64_t pp = p0; pp < p1; ++pp) {
      const int64_t hlo = pp * sh - p.pad_t;
      const int64_t hhi = std::min(H - 1, hlo + (R - 1) * dh);
      next_h = std::max(next_h, std::max<int64_t>(hlo, 0));
      for (; next_h <= hhi; ++next_h) {
        T* d = slot(next_h);
        if (sw == 2) {
          fill_row_pair(d, d + L, xp + next_h * W, fg[0], fg[1], W);
        } else if (sw <= kMaxPhases) {
          for (int64_t f = 0; f < sw; ++f) fill_row(d + f * L, xp + next_h * W, fg[f]);
        } else {
          for (int64_t f = 0; f < sw; ++f)
            fill_row(d + f * L, xp + next_h * W, FillGeom::make<T>(W, sw, f, p.pad_l, L));
        }
      }
      T* yrow = yp + pp * Q;
      const int64_t room = (p1 - pp - 1) * Q;
      if constexpr (KS > 0) {
#pragma GCC unroll 8
        for (int r = 0; r < KS; ++r) {
          const int64_t h = hlo + r;
          const T* row = (h >= 0 && h < H) ? slot(h) : zero;
          tp.a[r] = row;
          tp.b[r] = row + L;  // phase 1 (used only when ST == 2)
        }
        row_sum<T, KS, NA, NB, false>(tp, wv, yrow, Q, b, room);
      } else {
        int64_t ntap = 0;
        for (int64_t r = 0; r < R; ++r) {
          const int64_t h = hlo + r * dh;
          if (h < 0 || h >= H) continue;
          const T* row = slot(h);
          for (int64_t s = 0; s < S; ++s) {
            tptr[ntap] = row + ((s * dw) % sw) * L + (s * dw) / sw;
            twt[ntap++] = wk[r * S + s];
          }
        }
        row_generic<T, false>(tptr, twt, ntap, yrow, Q, b);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Input gradient. Unit = (n, c, block of dx rows); per multiplier m a pass over the block (passes
// after the first accumulate); padded dy rows in a ring.
//   buf[i] = dy[p][i - Lp]; dx column v reads dy column (v + pl - s*dw) / sw.
// ---------------------------------------------------------------------------------------------
template <class T, int KS, int ST>
void backward_input_run(const Conv2dParams& p, const T* dy, const T* w, T* dx) {
  constexpr int VS = Vec<T>::size;
  if constexpr (KS > 0 && ST == 1) {
    if (p.P == p.H && p.Q == p.W && p.H * p.W <= kFlatMaxPlane && p.N * p.C >= 4 * num_threads()) {
      const FlatGeom<T> g(p.H, p.W, KS, KS - 1 - p.pad_t, KS - 1 - p.pad_l);
      if (g.applies()) return backward_input_flat<T, KS>(p, g, dy, w, dx);
    }
  }
  const int64_t R = p.R, S = p.S, sh = p.stride_h, sw = p.stride_w, dh = p.dil_h, dw = p.dil_w;
  const int64_t H = p.H, W = p.W, P = p.P, Q = p.Q, K = p.K, C = p.C, M = K / C;
  const int64_t pt = p.pad_t, pl = p.pad_l;
  const int64_t Wph = ceil_div(W, sw);  // longest phase row of dx
  const int64_t Lp = std::max<int64_t>(0, ceil_div((S - 1) * dw - pl, sw));
  const int64_t max_off = floor_div(sw - 1 + pl, sw);
  const int64_t L = round_up(round_up(std::max<int64_t>(Wph, VS), VS) + Lp + max_off + 1, 16);
  const int64_t RB = pow2_at_least(((R - 1) * dh) / sh + 2);
  const FillGeom fg = FillGeom::make<T>(Q, 1, 0, Lp, L);
  const int64_t nt = num_threads();
  const Blocking bk = block_rows(p.N * C, H, nt);
  const int64_t ntasks = std::min<int64_t>(nt, bk.units);
  const int64_t tmpn = round_up(Wph, VS);
  const int64_t per_task = carve_bytes<T>(RB * L) + carve_bytes<T>(L) + carve_bytes<T>(tmpn) +
                           carve_bytes<const T*>(R * S) + carve_bytes<T>(R * S);
  Scratch scr;
  scr.alloc(ntasks, per_task);

  run_units(bk.units, ntasks, scr, [&](int64_t task, int64_t u) {
    unsigned char* base = scr.task(task);
    Carver cv{base};
    T* ring = cv.take<T>(RB * L);
    T* zero = cv.take<T>(L);
    T* tmp = cv.take<T>(tmpn);
    const T** tptr = cv.take<const T*>(R * S);
    T* twt = cv.take<T>(R * S);
    const int64_t plane = u / bk.nblk, blk = u % bk.nblk;
    const int64_t n = plane / C, c = plane % C;
    const int64_t h0 = blk * bk.rows, h1 = std::min(H, h0 + bk.rows);
    T* dxp = dx + (n * C + c) * H * W;
    auto slot = [&](int64_t pp) { return ring + (pp & (RB - 1)) * L; };
    for (int64_t m = 0; m < M; ++m) {
      const int64_t k = c * M + m;
      const T* dyp = dy + (n * K + k) * P * Q;
      const T* wk = w + k * R * S;
      int64_t next_p = 0;
      constexpr int NR1 = KS > 0 ? KS : 1;
      Taps<T, NR1, NR1, 0> tp1{};  // stride 1: flipped kernel
      if constexpr (KS > 0 && ST == 1) {
#pragma GCC unroll 8
        for (int j = 0; j < KS; ++j)
#pragma GCC unroll 8
          for (int t = 0; t < KS; ++t) tp1.wa[j * KS + t] = wk[(KS - 1 - j) * KS + (KS - 1 - t)];
      }
      const TapVecs<T, NR1, NR1, 0> wv1(tp1);
      // Stride 2: broadcast weights per row parity r0 (rows r == r0 mod 2): group A (even dx
      // columns, taps s == pl mod 2, s = samax - 2t) then group B (odd columns), once per (unit, m).
      constexpr int KSQ = KS > 0 ? KS * KS : 1;
      Vec<T> wv2[2][KSQ];
      if constexpr (KS > 0 && ST == 2) {
        const int sa0 = static_cast<int>(pl & 1), sb0 = 1 - sa0;
        const int na = (KS - sa0 + 1) / 2, nb = KS - na;
        const int samax = sa0 + 2 * (na - 1), sbmax = sb0 + 2 * (nb - 1);
        for (int r0 = 0; r0 < 2; ++r0) {
          const int nr = (KS - r0 + 1) / 2;
          for (int i = 0; i < nr; ++i) {
            const int r = r0 + 2 * i;
            for (int t = 0; t < na; ++t) wv2[r0][i * na + t] = Vec<T>::set1(wk[r * KS + samax - 2 * t]);
            for (int t = 0; t < nb; ++t)
              wv2[r0][nr * na + i * nb + t] = Vec<T>::set1(wk[r * KS + sbmax - 2 * t]);
          }
        }
      }
      for (int64_t h = h0; h < h1; ++h) {
        // dy rows that reach dx row h: p in [ceil((h+pt-(R-1)dh)/sh), floor((h+pt)/sh)]
        const int64_t plo = std::max<int64_t>(0, ceil_div(h + pt - (R - 1) * dh, sh));
        const int64_t phi = std::min<int64_t>(P - 1, floor_div(h + pt, sh));
        next_p = std::max(next_p, plo);
        for (; next_p <= phi; ++next_p) fill_row(slot(next_p), dyp + next_p * Q, fg);
        auto rowp = [&](int64_t pp) -> const T* {
          return (pp >= plo && pp <= phi) ? slot(pp) : zero;
        };
        T* dxrow = dxp + h * W;
        const int64_t room = (h1 - h - 1) * W;
        if constexpr (KS > 0 && ST == 1) {
          // dx[v] = sum_{j,t} w[R-1-j][S-1-t] * buf_j[v + Lp + pl - (S-1) + t],
          // buf_j = dy row h + pt - (R-1) + j
          const int64_t off = Lp + pl - (KS - 1);
#pragma GCC unroll 8
          for (int j = 0; j < KS; ++j) {
            const int64_t pp = h + pt - (KS - 1) + j;
            tp1.a[j] = rowp(pp) + off;
            tp1.b[j] = nullptr;
          }
          if (m == 0) row_sum<T, KS, KS, 0, false>(tp1, wv1, dxrow, W, T(0), room);
          else row_sum<T, KS, KS, 0, true>(tp1, wv1, dxrow, W, T(0), room);
        } else if constexpr (KS > 0 && ST == 2) {
          // Rows r with r == (h + pt) mod 2, p = (h + pt - r) / 2. Even dx columns (group A) take
          // taps s == pl mod 2 at dy offset (pl - s) / 2, odd columns s == pl + 1 mod 2 at
          // (1 + pl - s) / 2; tap t of a group has s = s_max - 2t (ascending offsets).
          const int r0 = static_cast<int>((h + pt) & 1);
          auto go = [&](auto nr_c, auto na_c) {
            constexpr int NR = decltype(nr_c)::value, NA = decltype(na_c)::value, NB = KS - NA;
            Taps<T, NR, NA, NB> tp;
            const int sa0 = static_cast<int>(pl & 1), sb0 = 1 - sa0;  // parity of s per group
            const int samax = sa0 + 2 * (NA - 1), sbmax = sb0 + 2 * (NB - 1);
            const int64_t offa = Lp + (pl - samax) / 2, offb = Lp + (1 + pl - sbmax) / 2;
#pragma GCC unroll 8
            for (int i = 0; i < NR; ++i) {
              const int r = r0 + 2 * i;
              const T* row = rowp((h + pt - r) / 2);
              tp.a[i] = row + offa;
              tp.b[i] = row + offb;
            }
            const Vec<T>* wa = wv2[r0];
            const Vec<T>* wb = wv2[r0] + NR * NA;
            if (m == 0) row_interleave<T, NR, NA, NB, false>(tp, wa, wb, dxrow, W);
            else row_interleave<T, NR, NA, NB, true>(tp, wa, wb, dxrow, W);
          };
          using IE = std::integral_constant<int, (KS + 1) / 2>;
          using IO = std::integral_constant<int, KS / 2>;
          if (r0 == 0) {
            if ((pl & 1) == 0) go(IE{}, IE{}); else go(IE{}, IO{});
          } else {
            if ((pl & 1) == 0) go(IO{}, IE{}); else go(IO{}, IO{});
          }
        } else {
          // Generic: per column phase f, a run-time tap list; phases scattered into dx.
          for (int64_t f = 0; f < sw; ++f) {
            const int64_t nf = ceil_div(W - f, sw);
            if (nf <= 0) continue;
            int64_t ntap = 0;
            for (int64_t r = 0; r < R; ++r) {
              const int64_t num = h + pt - r * dh;
              if (num < 0 || num % sh != 0) continue;
              const int64_t pp = num / sh;
              if (pp >= P) continue;
              const T* row = slot(pp);
              for (int64_t s = 0; s < S; ++s) {
                const int64_t cn = f + pl - s * dw;
                if (floor_div(cn, sw) * sw != cn) continue;
                tptr[ntap] = row + Lp + floor_div(cn, sw);
                twt[ntap++] = wk[r * S + s];
              }
            }
            if (sw == 1) {
              if (m == 0) row_generic<T, false>(tptr, twt, ntap, dxrow, W, T(0));
              else row_generic<T, true>(tptr, twt, ntap, dxrow, W, T(0));
            } else {
              row_generic<T, false>(tptr, twt, ntap, tmp, nf, T(0));
              if (m == 0) for (int64_t j = 0; j < nf; ++j) dxrow[j * sw + f] = tmp[j];
              else for (int64_t j = 0; j < nf; ++j) dxrow[j * sw + f] += tmp[j];
            }
          }
        }
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Weight gradient. Unit = (k, batch chunk). Per batch element: x plane -> padded phase rows
// (whole plane), dy rows with zero tails; per kernel row r, NA + NB vector accumulators sweep all
// output rows. Partials per chunk are reduced in a fixed order afterwards.
// ---------------------------------------------------------------------------------------------
template <class T, int KS, int ST>
void backward_weight_run(const Conv2dParams& p, const T* dy, const T* x, T* dwout) {
  using V = Vec<T>;
  constexpr int VS = V::size;
  const int64_t R = p.R, S = p.S, sh = p.stride_h, sw = p.stride_w, dh = p.dil_h, dw = p.dil_w;
  const int64_t H = p.H, W = p.W, P = p.P, Q = p.Q, K = p.K, C = p.C, M = K / C, N = p.N;
  const int64_t RS = R * S;
  if (N == 0 || P == 0 || Q == 0) {
    std::memset(dwout, 0, sizeof(T) * static_cast<size_t>(K * RS));
    return;
  }
  if constexpr (KS > 0 && ST == 1) {
    if (P == H && Q == W && H * W <= kFlatMaxPlane) {
      const FlatGeom<T> g(H, W, KS, p.pad_t, p.pad_l);
      if (g.applies()) return backward_weight_flat<T, KS>(p, g, dy, x, dwout);
    }
  }
  const int64_t Qp = round_up(Q, VS);
  const bool dy_direct = (Qp == Q);
  const int64_t L = round_up(Qp + ((S - 1) * dw) / sw + 1, 16);
  const int64_t nt = num_threads();
  int64_t nchunk = K >= 4 * nt ? 1 : std::min<int64_t>(N, ceil_div(4 * nt, K));
  const int64_t nper = ceil_div(N, nchunk);
  nchunk = ceil_div(N, nper);
  const int64_t units = K * nchunk;
  FillGeom fg[kMaxPhases];
  for (int64_t f = 0; f < std::min<int64_t>(sw, kMaxPhases); ++f) fg[f] = FillGeom::make<T>(W, sw, f, p.pad_l, L);
  const int64_t ntasks = std::min<int64_t>(nt, units);
  const int64_t per_task = carve_bytes<T>(H * sw * L) + carve_bytes<T>(dy_direct ? 0 : P * Qp) +
                           carve_bytes<V>(RS) + carve_bytes<T>(2 * L);
  Scratch scr;
  scr.alloc(ntasks, per_task);
  std::unique_ptr<T[]> partial;
  if (nchunk > 1) partial.reset(new T[static_cast<size_t>(nchunk * K * RS)]);

  run_units(units, ntasks, scr, [&](int64_t task, int64_t u) {
    unsigned char* base = scr.task(task);
    Carver cv{base};
    T* xs = cv.take<T>(H * sw * L);
    T* dys = cv.take<T>(dy_direct ? 0 : P * Qp);
    V* acc = cv.take<V>(RS);
    const T* zrow = cv.take<T>(2 * L);
    const int64_t k = u / nchunk, ch = u % nchunk, c = k / M;
    const int64_t n0 = ch * nper, n1 = std::min(N, n0 + nper);
    for (int64_t i = 0; i < RS; ++i) acc[i] = V::zero();
    for (int64_t n = n0; n < n1; ++n) {
      const T* xp = x + (n * C + c) * H * W;
      const T* dyp = dy + (n * K + k) * P * Q;
      for (int64_t h = 0; h < H; ++h)
        if (sw == 2) fill_row_pair(xs + (h * 2) * L, xs + (h * 2 + 1) * L, xp + h * W, fg[0], fg[1], W);
        else for (int64_t f = 0; f < sw; ++f)
          fill_row(xs + (h * sw + f) * L, xp + h * W,
                   f < kMaxPhases ? fg[f] : FillGeom::make<T>(W, sw, f, p.pad_l, L));
      const T* dyb = dyp;
      if (!dy_direct) {
        for (int64_t pp = 0; pp < P; ++pp) {
          const T* s = dyp + pp * Q;
          T* d = dys + pp * Qp;
          int64_t j = 0;
          for (; j + VS <= Q; j += VS) V::load(s + j).store(d + j);
          for (; j < Q; ++j) d[j] = s[j];
        }
        dyb = dys;
      }
      if constexpr (KS > 0) {
        // Blocks of NRB kernel rows: NRB * (NA + NB) independent accumulator chains (9 or 10),
        // one dy load shared by all of them; rows outside the image read the zero row.
        constexpr int NA = (KS + ST - 1) / ST, NB = ST == 2 ? KS / 2 : 0;
        constexpr int RBK = KS == 3 ? 3 : (KS == 5 ? 2 : 1);
        auto sweep = [&](auto nrb_c, int r0) {
          constexpr int NRB = decltype(nrb_c)::value;
          V a[NRB][NA], b[NRB][NB > 0 ? NB : 1];
#pragma GCC unroll 8
          for (int i = 0; i < NRB; ++i) {
#pragma GCC unroll 8
            for (int t = 0; t < NA; ++t) a[i][t] = acc[(r0 + i) * KS + t * ST];
#pragma GCC unroll 8
            for (int t = 0; t < NB; ++t) b[i][t] = acc[(r0 + i) * KS + 2 * t + 1];
          }
          const int64_t plo = std::max<int64_t>(0, ceil_div(p.pad_t - (r0 + NRB - 1), ST));
          const int64_t phi = std::min<int64_t>(P - 1, floor_div(H - 1 + p.pad_t - r0, ST));
          for (int64_t pp = plo; pp <= phi; ++pp) {
            const T* xa[NRB];
#pragma GCC unroll 8
            for (int i = 0; i < NRB; ++i) {
              const int64_t h = pp * ST - p.pad_t + r0 + i;
              xa[i] = (h >= 0 && h < H) ? xs + (h * ST) * L : zrow;
            }
            const T* d = dyb + pp * Qp;
            for (int64_t j = 0; j < Qp; j += VS) {
              const V dv = V::load(d + j);
#pragma GCC unroll 8
              for (int i = 0; i < NRB; ++i) {
#pragma GCC unroll 8
                for (int t = 0; t < NA; ++t) a[i][t] = V::fmadd(dv, V::load(xa[i] + j + t), a[i][t]);
#pragma GCC unroll 8
                for (int t = 0; t < NB; ++t) b[i][t] = V::fmadd(dv, V::load(xa[i] + L + j + t), b[i][t]);
              }
            }
          }
#pragma GCC unroll 8
          for (int i = 0; i < NRB; ++i) {
#pragma GCC unroll 8
            for (int t = 0; t < NA; ++t) acc[(r0 + i) * KS + t * ST] = a[i][t];
#pragma GCC unroll 8
            for (int t = 0; t < NB; ++t) acc[(r0 + i) * KS + 2 * t + 1] = b[i][t];
          }
        };
        int r0 = 0;
        for (; r0 + RBK <= KS; r0 += RBK) sweep(std::integral_constant<int, RBK>{}, r0);
        if constexpr (KS % RBK != 0) sweep(std::integral_constant<int, KS % RBK>{}, r0);
      } else {
      for (int64_t r = 0; r < R; ++r) {
        // output rows whose input row p*sh - pt + r*dh lies inside the image
        const int64_t plo = std::max<int64_t>(0, ceil_div(p.pad_t - r * dh, sh));
        const int64_t phi = std::min<int64_t>(P - 1, floor_div(H - 1 + p.pad_t - r * dh, sh));
          for (int64_t s = 0; s < S; ++s) {
            V a = acc[r * S + s];
            const int64_t f = (s * dw) % sw, o = (s * dw) / sw;
            for (int64_t pp = plo; pp <= phi; ++pp) {
              const T* xr = xs + ((pp * sh - p.pad_t + r * dh) * sw + f) * L + o;
              const T* d = dyb + pp * Qp;
              for (int64_t j = 0; j < Qp; j += VS) a = V::fmadd(V::load(d + j), V::load(xr + j), a);
            }
            acc[r * S + s] = a;
          }
        }
      }
    }
    T* out = nchunk > 1 ? partial.get() + (ch * K + k) * RS : dwout + k * RS;
    for (int64_t i = 0; i < RS; ++i) out[i] = acc[i].reduce_add();
  });
  if (nchunk > 1) {
    for (int64_t i = 0; i < K * RS; ++i) {
      T s = partial[i];
      for (int64_t ch = 1; ch < nchunk; ++ch) s += partial[ch * K * RS + i];
      dwout[i] = s;
    }
  }
}

// Compile-time variant selection: square KS x KS, dilation 1, equal strides 1 or 2.
template <class F>
void select_variant(const Conv2dParams& p, const F& f) {
  const bool fast = p.R == p.S && p.dil_h == 1 && p.dil_w == 1 && p.stride_h == p.stride_w;
  KSIZE_SWITCH(fast ? p.R : 0, KS, [&] {
    STRIDE_SWITCH(fast ? p.stride_h : 0, ST, [&] {
      if constexpr (KS > 0 && ST > 0) f(std::integral_constant<int, KS>{}, std::integral_constant<int, ST>{});
      else f(std::integral_constant<int, 0>{}, std::integral_constant<int, 0>{});
    });
  });
}

template <class T>
void forward_impl(const Conv2dParams& p, const T* x, const T* w, const T* b, T* y) {
  if (p.N == 0 || p.K == 0 || p.P == 0 || p.Q == 0) return;
  select_variant(p, [&](auto ks, auto st) {
    forward_run<T, decltype(ks)::value, decltype(st)::value>(p, x, w, b, y);
  });
}

template <class T>
void backward_input_impl(const Conv2dParams& p, const T* dy, const T* w, T* dx) {
  if (p.N == 0 || p.C == 0 || p.H == 0 || p.W == 0) return;
  select_variant(p, [&](auto ks, auto st) {
    backward_input_run<T, decltype(ks)::value, decltype(st)::value>(p, dy, w, dx);
  });
}

template <class T>
void backward_weight_impl(const Conv2dParams& p, const T* dy, const T* x, T* dw) {
  if (p.K == 0) return;
  select_variant(p, [&](auto ks, auto st) {
    backward_weight_run<T, decltype(ks)::value, decltype(st)::value>(p, dy, x, dw);
  });
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Entry points (one per direction and dtype).
// ---------------------------------------------------------------------------------------------
#define FC_DW_DEFINE(T)                                                                          \
  void depthwise_conv2d_forward(const Conv2dParams& p, const T* x, const T* w, const T* bias,   \
                                T* y) {                                                          \
    forward_impl<T>(p, x, w, bias, y);                                                           \
  }                                                                                              \
  void depthwise_conv2d_backward_input(const Conv2dParams& p, const T* dy, const T* w, T* dx) {  \
    backward_input_impl<T>(p, dy, w, dx);                                                        \
  }                                                                                              \
  void depthwise_conv2d_backward_weight(const Conv2dParams& p, const T* dy, const T* x, T* dw) { \
    backward_weight_impl<T>(p, dy, x, dw);                                                       \
  }
FC_DW_DEFINE(float)
FC_DW_DEFINE(double)
#undef FC_DW_DEFINE

FC_ISA_END
