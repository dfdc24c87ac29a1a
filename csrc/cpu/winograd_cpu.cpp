// Dense and grouped 3x3 stride-1 convolution on the CPU by Winograd F(m x m, 3x3), m = 2 or 4
// (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016): forward, and the
// input gradient as the forward convolution of dY with the flipped, transposed weights
// (padding 2 - pad).
//
// Algorithm. The output is cut into m x m tiles (tiles past the edge are computed and dropped);
// tile (th, tw) of image n reads the a x a input patch (a = m + 2) at (m*th - pad_t, m*tw - pad_l).
// Per tile, Y = A^T [ U (.) V ] A with U = G g G^T (per (k, c)) and V = B^T d B (per (c, tile)),
// and the sum over input channels turns the a*a elementwise products into a*a GEMMs:
//   M[xi][k][t] = sum_c U[xi][k][c] * V[xi][c][t]      (xi = one of the a x a transform points)
// F(2x2): 16 multiplies per 4 outputs where the direct convolution needs 36 (2.25x fewer);
// F(4x4): 36 per 16 (4x fewer); less the tile padding and the transforms.
//
// Steps (per group; the GEMMs on the micro-kernel of gemm_cpu.h):
//   1. the input is copied once, zero-padded to cover every tile (xp[n][c][m*TH+2][m*TW+2]);
//   2. input transform fused with the B packing: each (panel of NR tiles, channel) is read from
//      xp with strided vector loads where L consecutive tiles lie in one or two tile rows, with
//      32-bit gathers otherwise, transformed in registers and written straight into the
//      NR-column panels the micro-kernel reads ([xi][c][NR] per panel). When one block of rows
//      covers a group's output channels (Kg <= 128) each task transforms its own panels into
//      per-thread scratch that stays in L2 ("fused"); else all panels are transformed first;
//   3. tasks (group, block of output channels, block of tile panels), taken by free threads:
//      per block of kc input channels, the weight transform is fused with the A packing (U of
//      the task's rows, a*a MR-row panel sets, gathered from w in its row order), done per task,
//      or once beforehand when several tile blocks share it and it fits in L2; then a*a x (row
//      panels x tile panels) micro-kernel calls accumulate M[a*a][rows][tiles] in per-thread
//      scratch; at the end the output transform reads M and writes the valid pixels (plus bias)
//      with interleaved (AVX-512: masked) vector stores, scalar stores elsewhere.
// Non-finite values: a NaN or inf spreads over whole tile patches in the transforms, so when a
// transformed output is not finite the caller recomputes on the GEMM path (identical results).
//
// Rounding (float32, max |error| against float64 relative to the elementwise table bound
// atol 1e-4 + rtol 2e-5 |y| of fastconv/testing.py, inputs of order 1; numpy emulation at
// C = 64 / 150 / 512, kernel at 64 / 256 / 512): direct GEMM 0.1 / 0.25 / 0.6, kernel 0.13 /
// 0.25 / 0.32; F(2x2) 0.2 / 0.5 / 1.5, kernel 0.2 / 0.5 / 0.45 (1.4 seen once, an input gradient
// over K = 512); F(4x4) 2.4 / 5 / 9, kernel 2.1 / 4.8 / 4.4 (and ~40x torch's error at 512). Points 0, +-1, +-1/2 or 0, +-1, 1/2, -2 for F(4x4) were no better at 512. Hence
// 'auto' and 'winograd' use F(2x2); F(4x4) is 'winograd4', for measurement only. Relative to
// max |y|: F(2x2) ~1e-6, F(4x4) ~2e-5.
//
// Measured (single-thread CPU time, Xeon with AVX-512, float32, avx512 path, machine busy;
// gemm -> F(2x2)): r50_res2_3x3 fwd 4.9 -> 2.1 ms, res3 8.4 -> 4.2, res4 17.2 -> 9.5, res5
// 25.7 -> 10.5, vgg_conv1_2 31.5 -> 19.0; input gradients the same within 10%. Heuristic
// sweep (fwd, wino/gemm time): C=K=8 at 56x56 1.75, 16/16 1.14, 32/32 0.91, C16/K64 0.85,
// C64/K16 1.28, 7x7 with 64..256 channels 0.39-0.47, groups 32 (8 channels per group) 2.77,
// groups 8 (32) 1.14, groups 4 (64) 0.85 (winograd_preferred in winograd_cpu.h).
//
// Variants: compiled for baseline (SSE2: scalar gathers and stores), avx2 and avx512 from the
// same templates. Assumptions: winograd_applies(p) (winograd_cpu.h); contiguous,
// non-overlapping arrays; any padding (asymmetric, negative, larger than the kernel); outputs
// fully overwritten.
#include "cpu/winograd_cpu.h"

#include <cstring>
#include <type_traits>

#include "common/parallel.h"
#include "cpu/conv2d_cpu.h"
#include "cpu/gemm_cpu.h"

FC_ISA_BEGIN
namespace {

using gemm::Blk;
using gemm::ceil_div;
using gemm::round_up;

#if defined(__GNUC__)
#define FC_WINO_NOINLINE __attribute__((noinline))
#else
#define FC_WINO_NOINLINE
#endif

// v[l] = base[idx[l]] for the Vec<T>::size lanes.
template <class T>
FC_GEMM_INLINE Vec<T> gather(const T* base, const int32_t* idx);
#if defined(FC_ISA_avx512)
template <>
FC_GEMM_INLINE Vec<float> gather(const float* base, const int32_t* idx) {
  return {_mm512_i32gather_ps(_mm512_loadu_si512(idx), base, 4)};
}
template <>
FC_GEMM_INLINE Vec<double> gather(const double* base, const int32_t* idx) {
  return {_mm512_i32gather_pd(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx)), base, 8)};
}
#elif defined(FC_ISA_avx2)
template <>
FC_GEMM_INLINE Vec<float> gather(const float* base, const int32_t* idx) {
  return {_mm256_i32gather_ps(base, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx)), 4)};
}
template <>
FC_GEMM_INLINE Vec<double> gather(const double* base, const int32_t* idx) {
  return {_mm256_i32gather_pd(base, _mm_loadu_si128(reinterpret_cast<const __m128i*>(idx)), 8)};
}
#else
template <class T>
FC_GEMM_INLINE Vec<T> gather(const T* base, const int32_t* idx) {
  alignas(64) T buf[Vec<T>::size];
  for (int l = 0; l < Vec<T>::size; ++l) buf[l] = base[idx[l]];
  return Vec<T>::load(buf);
}
#endif

// Whether load_strided<S, T> has a vector implementation (else the gathers are faster).
template <int S, class T>
constexpr bool has_strided_load() {
#if defined(FC_ISA_avx512)
  return std::is_same<T, float>::value;
#elif defined(FC_ISA_avx2)
  return std::is_same<T, float>::value && S == 2;
#else
  return false;
#endif
}

// v[l] = p[S*l] for the lanes (S = 2 or 4): the same column of L consecutive tiles of one tile
// row. Reads up to p[2*S*L) for S = 2 and p[S*L + 4) for S = 4 (the caller leaves slack).
template <int S, class T>
FC_GEMM_INLINE Vec<T> load_strided(const T* p) {
#if defined(FC_ISA_avx512)
  if constexpr (std::is_same<T, float>::value && S == 2) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    return {_mm512_permutex2var_ps(_mm512_loadu_ps(p), even, _mm512_loadu_ps(p + 16))};
  }
  if constexpr (std::is_same<T, float>::value && S == 4) {
    const __m512i by4 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
    const __m512 lo = _mm512_permutex2var_ps(_mm512_loadu_ps(p), by4, _mm512_loadu_ps(p + 16));
    const __m512 hi = _mm512_permutex2var_ps(_mm512_loadu_ps(p + 32), by4, _mm512_loadu_ps(p + 48));
    return {_mm512_mask_blend_ps(0xFF00, lo, hi)};
  }
#elif defined(FC_ISA_avx2)
  if constexpr (std::is_same<T, float>::value && S == 2) {
    const __m256 e = _mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8), 0x88);
    return {_mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8))};
  }
#endif
  alignas(64) T buf[Vec<T>::size];
  for (int l = 0; l < Vec<T>::size; ++l) buf[l] = p[S * l];
  return Vec<T>::load(buf);
}

// Lanes [0, l1) of a, lanes [l1, L) of b.
template <class T>
FC_GEMM_INLINE Vec<T> blend_from(Vec<T> a, Vec<T> b, int l1) {
#if defined(FC_ISA_avx512)
  if constexpr (std::is_same<T, float>::value)
    return {_mm512_mask_blend_ps(static_cast<__mmask16>(0xFFFFu << l1), a.v, b.v)};
#elif defined(FC_ISA_avx2)
  if constexpr (std::is_same<T, float>::value) {
    const __m256 iota = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7);
    return {_mm256_blendv_ps(a.v, b.v, _mm256_cmp_ps(iota, _mm256_set1_ps(float(l1)), _CMP_GE_OQ))};
  }
#endif
  alignas(64) T x[Vec<T>::size], z[Vec<T>::size];
  a.store(x);
  b.store(z);
  for (int l = l1; l < Vec<T>::size; ++l) x[l] = z[l];
  return Vec<T>::load(x);
}

// lo, hi = the two halves of the interleaved sequence a[0], b[0], a[1], b[1], ... (2L values).
template <class T>
FC_GEMM_INLINE void interleave2(Vec<T> a, Vec<T> b, Vec<T>& lo, Vec<T>& hi) {
#if defined(FC_ISA_avx512)
  if constexpr (std::is_same<T, float>::value) {
    const __m512i il = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i ih = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    lo = {_mm512_permutex2var_ps(a.v, il, b.v)};
    hi = {_mm512_permutex2var_ps(a.v, ih, b.v)};
    return;
  } else {
    const __m512i il = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
    const __m512i ih = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
    lo = {_mm512_permutex2var_pd(a.v, il, b.v)};
    hi = {_mm512_permutex2var_pd(a.v, ih, b.v)};
    return;
  }
#elif defined(FC_ISA_avx2)
  if constexpr (std::is_same<T, float>::value) {
    const __m256 ul = _mm256_unpacklo_ps(a.v, b.v), uh = _mm256_unpackhi_ps(a.v, b.v);
    lo = {_mm256_permute2f128_ps(ul, uh, 0x20)};
    hi = {_mm256_permute2f128_ps(ul, uh, 0x31)};
    return;
  } else {
    const __m256d ul = _mm256_unpacklo_pd(a.v, b.v), uh = _mm256_unpackhi_pd(a.v, b.v);
    lo = {_mm256_permute2f128_pd(ul, uh, 0x20)};
    hi = {_mm256_permute2f128_pd(ul, uh, 0x31)};
    return;
  }
#else
  constexpr int L = Vec<T>::size;
  alignas(64) T x[L], z[L], s[2 * L];
  a.store(x);
  b.store(z);
  for (int l = 0; l < L; ++l) {
    s[2 * l] = x[l];
    s[2 * l + 1] = z[l];
  }
  lo = Vec<T>::load(s);
  hi = Vec<T>::load(s + L);
#endif
}

// iv[0..S) = the S*L-value sequence v[0][0], v[1][0], .., v[S-1][0], v[0][1], .. (S = 2 or 4):
// one pixel row of L consecutive tiles, from the S column vectors of that row.
template <int S, class T>
FC_GEMM_INLINE void interleave(const Vec<T>* v, Vec<T>* iv) {
  if constexpr (S == 2) {
    interleave2(v[0], v[1], iv[0], iv[1]);
  } else {
    Vec<T> ac0, ac1, bd0, bd1;
    interleave2(v[0], v[2], ac0, ac1);
    interleave2(v[1], v[3], bd0, bd1);
    interleave2(ac0, bd0, iv[0], iv[1]);
    interleave2(ac1, bd1, iv[2], iv[3]);
  }
}

// d[l] = v[l] for lanes [a, b) (0 <= a < b <= L); the other lanes' addresses are not touched
// (masked stores), so they may lie outside the array.
template <class T>
FC_GEMM_INLINE void store_lanes(T* d, Vec<T> v, int a, int b) {
#if defined(FC_ISA_avx512)
  const unsigned m = ((1u << b) - 1) & ~((1u << a) - 1);
  if constexpr (std::is_same<T, float>::value)
    _mm512_mask_storeu_ps(d, static_cast<__mmask16>(m), v.v);
  else
    _mm512_mask_storeu_pd(d, static_cast<__mmask8>(m), v.v);
#elif defined(FC_ISA_avx2)
  if constexpr (std::is_same<T, float>::value) {
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i m = _mm256_and_si256(_mm256_cmpgt_epi32(iota, _mm256_set1_epi32(a - 1)),
                                       _mm256_cmpgt_epi32(_mm256_set1_epi32(b), iota));
    _mm256_maskstore_ps(d, m, v.v);
  } else {
    const __m256i iota = _mm256_setr_epi64x(0, 1, 2, 3);
    const __m256i m = _mm256_and_si256(_mm256_cmpgt_epi64(iota, _mm256_set1_epi64x(a - 1)),
                                       _mm256_cmpgt_epi64(_mm256_set1_epi64x(b), iota));
    _mm256_maskstore_pd(d, m, v.v);
  }
#else
  alignas(64) T x[Vec<T>::size];
  v.store(x);
  for (int l = a; l < b; ++l) d[l] = x[l];
#endif
}

// Values [lo, hi) of the S*L-value sequence iv at d[lo, hi).
template <int S, class T>
FC_GEMM_INLINE void store_range(T* d, const Vec<T>* iv, int lo, int hi) {
  constexpr int L = Vec<T>::size;
  FC_GEMM_UNROLL for (int q = 0; q < S; ++q) {
    const int a = lo > q * L ? lo - q * L : 0, b = hi < q * L + L ? hi - q * L : L;
    if (a == 0 && b == L)
      iv[q].store(d + q * L);
    else if (a < b)
      store_lanes(d + q * L, iv[q], a, b);
  }
}

// Tile geometry of F(TM x TM, 3x3): TM x TM outputs per tile from an A x A input patch, A*A
// transform points.
template <int TM>
struct Tile {
  static constexpr int A = TM + 2, Pts = A * A;
};

// 1-D transforms on vectors (each lane an independent tile or (k, c) pair), Lavin & Gray's
// matrices with interpolation points 0, +-1 (F(2, 3)) and 0, +-1, +-2 (F(4, 3)), plus infinity.
// Input, B^T d (A -> A).
template <int TM, class V>
FC_GEMM_INLINE void input_1d(const V* d, V* o) {
  if constexpr (TM == 2) {
    o[0] = d[0] - d[2];
    o[1] = d[1] + d[2];
    o[2] = d[2] - d[1];
    o[3] = d[1] - d[3];
  } else {
    const V four = V::set1(4), five = V::set1(5), two = V::set1(2);
    const V s1 = d[4] - four * d[2], s2 = d[3] - four * d[1];
    const V s3 = d[4] - d[2], s4 = two * (d[3] - d[1]);
    o[0] = V::fmadd(four, d[0], d[4] - five * d[2]);
    o[1] = s1 + s2;
    o[2] = s1 - s2;
    o[3] = s3 + s4;
    o[4] = s3 - s4;
    o[5] = V::fmadd(four, d[1], d[5] - five * d[3]);
  }
}
// Weight, G g (3 -> A).
template <int TM, class T>
FC_GEMM_INLINE void weight_1d(const Vec<T>* g, Vec<T>* o) {
  using V = Vec<T>;
  if constexpr (TM == 2) {
    const V h = V::set1(T(0.5));
    const V a = g[0] + g[2];
    o[0] = g[0];
    o[1] = h * (a + g[1]);
    o[2] = h * (a - g[1]);
    o[3] = g[2];
  } else {
    const V q = V::set1(T(1) / T(4)), m6 = V::set1(T(-1) / T(6)), c24 = V::set1(T(1) / T(24)),
            c12 = V::set1(T(1) / T(12)), c6 = V::set1(T(1) / T(6));
    const V a = g[0] + g[2];
    const V b = V::fmadd(c24, g[0], c6 * g[2]), c = c12 * g[1];
    o[0] = q * g[0];
    o[1] = m6 * (a + g[1]);
    o[2] = m6 * (a - g[1]);
    o[3] = b + c;
    o[4] = b - c;
    o[5] = g[2];
  }
}
// Output, A^T m (A -> TM).
template <int TM, class V>
FC_GEMM_INLINE void output_1d(const V* m, V* o) {
  if constexpr (TM == 2) {
    o[0] = m[0] + m[1] + m[2];
    o[1] = m[1] - m[2] - m[3];
  } else {
    const V two = V::set1(2), four = V::set1(4), eight = V::set1(8);
    const V a = m[1] + m[2], b = m[1] - m[2], c = m[3] + m[4], d = m[3] - m[4];
    o[0] = m[0] + a + c;
    o[1] = V::fmadd(two, d, b);
    o[2] = V::fmadd(four, c, a);
    o[3] = V::fmadd(eight, d, b + m[5]);
  }
}

// Weights as seen by the forward convolution being computed: element (group g, row m, channel c,
// tap rs) at w[g*gs + m*ms + c*cs + (flip ? 8 - rs : rs)].
struct WeightView {
  int64_t gs, ms, cs;
  bool flip;
};

template <class T, int TM>
struct Plan {
  int64_t N, G, M, Cg, Ctot, K, P, Q;
  int64_t TH, TW, TI, ntiles;  // tiles per column / row / image, tiles in the batch
  int64_t Hp, Wp, plane;  // zero-padded input plane
  int64_t ntp;            // tile panels (NR tiles each)
  int64_t kc, ncb;        // channel blocks
  int64_t mc, nmb;        // rows per task block, blocks per group
  int64_t np, ntb;        // tile panels per task block, blocks
  int64_t apstride;       // elements per packed A panel (MR x kc, rounded to whole vectors)
  bool fused;             // each task transforms its own tiles' input (one row block per group)
};

// Threads-aware check of the blocks chosen above (issue 15). With many threads and few tile panels
// (deep layers: r50_res4_3x3 has 17 panels at batch 8), "a few tasks per thread" meant one panel
// per task: every task then transformed its block of weights again (17 times in all at 16
// threads: 1.7x the work of 1 thread) or left the last round of tasks to a few threads. A
// task's time is modelled in units of one GEMM row x one tile panel (per input channel; measured
// on AVX2: 9 ns): transforming one row of weights costs about 0.9 of them, one panel of input
// about 20. The modelled makespan is the rounds of tasks (ceil(tasks / threads)) times the
// largest task, plus the parallel passes before (input transform when not fused, shared weight
// transform). The blocks change only when the model finds a plan at least 10% faster, so plans
// that are measured good stay, and fused stays fused (the model does not see its cache benefit:
// switching r50_res3_3x3 to unfused blocks at 2 threads looked 7% faster here and ran ~10% slower).
template <class T, int TM>
void refine_for_threads(Plan<T, TM>& pl, int64_t& mc, int64_t& np, int64_t budget,
                        int64_t nthreads) {
  using B_ = Blk<T>;
  constexpr int MR = B_::MR, NR = B_::NR, kPts = Tile<TM>::Pts;
  if (nthreads < 2) return;
  const int64_t Mpad = round_up(pl.M, MR);
  const bool fused = pl.fused;
  auto model = [&](int64_t m, int64_t n) {
    const int64_t nmb = ceil_div(pl.M, m), mcr = round_up(ceil_div(pl.M, nmb), MR);
    const int64_t ntb = ceil_div(pl.ntp, n), npr = ceil_div(pl.ntp, ntb);
    const int64_t ntasks = pl.G * nmb * ntb;
    const double u_bytes = double(pl.G * nmb * pl.ncb) * double(kPts) * double(mcr / MR) *
                           double(pl.apstride) * double(sizeof(T));
    const bool shared = ntb > 1 && u_bytes <= double(int64_t(3) << 19);
    const double task = double(mcr) * double(npr) + (shared ? 0.0 : 0.9 * double(mcr)) +
                        (fused ? 20.0 * double(npr) : 0.0);
    const double pre = (fused ? 0.0 : 20.0 * double(pl.ntp * pl.G) / double(nthreads)) +
                       (shared ? 0.9 * double(Mpad * pl.G) / double(nthreads) : 0.0);
    return double(ceil_div(ntasks, nthreads)) * task + pre;
  };
  const double now = model(mc, np);
  double best = now;
  int64_t best_mc = mc, best_np = np;
  for (int64_t m = Mpad;; m = round_up(m / 2, MR)) {
    for (int64_t want_tb = 1; want_tb <= pl.ntp; ++want_tb) {
      const int64_t n = ceil_div(pl.ntp, want_tb);
      if (ceil_div(pl.ntp, n) != want_tb || m * n * NR > budget) continue;
      const double c = model(m, n);
      if (c < best) {
        best = c;
        best_mc = m;
        best_np = n;
      }
    }
    if (fused || m <= MR) break;  // fused tasks hold every row of their group
  }
  if (best < 0.9 * now) {
    mc = best_mc;
    np = best_np;
  }
}

template <class T, int TM>
Plan<T, TM> make_plan(const Conv2dParams& p, int64_t nthreads) {
  using B_ = Blk<T>;
  constexpr int MR = B_::MR, NR = B_::NR, L = Vec<T>::size, kPts = Tile<TM>::Pts;
  Plan<T, TM> pl;
  pl.N = p.N; pl.G = p.groups; pl.M = p.Kg(); pl.Cg = p.Cg(); pl.Ctot = p.C; pl.K = p.K;
  pl.P = p.P; pl.Q = p.Q;
  pl.TH = ceil_div(p.P, TM); pl.TW = ceil_div(p.Q, TM); pl.TI = pl.TH * pl.TW;
  pl.ntiles = p.N * pl.TI;
  pl.Hp = TM * pl.TH + 2; pl.Wp = TM * pl.TW + 2; pl.plane = pl.Hp * pl.Wp;
  pl.ntp = ceil_div(pl.ntiles, NR);
  pl.kc = gemm::kc_for<T>(pl.Cg);
  pl.ncb = ceil_div(pl.Cg, pl.kc);
  pl.apstride = round_up(MR * pl.kc, L);
  // Task blocks: M[points][rows][tiles] of under 1 MiB. With all rows of a group in one block
  // (up to 128) and enough blocks of tiles to go round, each task transforms its own tiles'
  // input (fused: the transformed block stays in cache, nothing is transformed twice); else
  // blocks of at most 64 rows, the input transformed once beforehand, split further until every
  // thread has a few tasks.
  const int64_t Mpad = round_up(pl.M, MR), budget = 884736 / (kPts * int64_t(sizeof(T)));
  auto tasks = [&](int64_t m, int64_t n) { return pl.G * ceil_div(pl.M, m) * ceil_div(pl.ntp, n); };
  auto panels_for = [&](int64_t m) {
    int64_t n = budget / (m * NR);
    if (n < 1) n = 1;
    if (n > pl.ntp) n = pl.ntp;
    while (tasks(m, n) < 3 * nthreads && n > 1) --n;
    return n;
  };
  int64_t mc = Mpad, np = panels_for(Mpad);
  pl.fused = Mpad <= 128 && tasks(mc, np) >= 2 * nthreads;
  if (!pl.fused) {
    mc = Mpad < 64 ? Mpad : 64;
    np = panels_for(mc);
  }
  while (tasks(mc, np) < 2 * nthreads && mc > MR) mc = round_up(mc / 2, MR);
  refine_for_threads(pl, mc, np, budget, nthreads);
  const int64_t nmb = ceil_div(pl.M, mc);
  pl.mc = round_up(ceil_div(pl.M, nmb), MR);
  pl.nmb = ceil_div(pl.M, pl.mc);
  pl.ntb = ceil_div(pl.ntp, np);
  pl.np = ceil_div(pl.ntp, pl.ntb);
  return pl;
}

// xp[n][c][hp][wp] = x[n][c][hp - pad_t][wp - pad_l], zero outside (pad_t, pad_l may be negative).
template <class T, int TM>
void pad_input(const Conv2dParams& p, const Plan<T, TM>& pl, const T* x, T* xp) {
  const int64_t H = p.H, W = p.W, Hp = pl.Hp, Wp = pl.Wp, plane = pl.plane;
  // Column wp of xp is input column wp - pad_l: valid for wp in [lo, hi).
  const int64_t lo = p.pad_l <= 0 ? 0 : (p.pad_l < Wp ? p.pad_l : Wp);
  int64_t hi = W + p.pad_l < Wp ? W + p.pad_l : Wp;
  if (hi < lo) hi = lo;
  parallel_for(p.N * p.C, 1 + 16384 / (plane + 1), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const T* src = x + i * H * W;
      T* dst = xp + i * plane;
      for (int64_t hp = 0; hp < Hp; ++hp) {
        T* d = dst + hp * Wp;
        const int64_t ih = hp - p.pad_t;
        if (ih < 0 || ih >= H || hi == lo) {
          std::memset(d, 0, sizeof(T) * Wp);
          continue;
        }
        if (lo > 0) std::memset(d, 0, sizeof(T) * lo);
        std::memcpy(d + lo, src + ih * W + (lo - p.pad_l), sizeof(T) * (hi - lo));
        if (hi < Wp) std::memset(d + hi, 0, sizeof(T) * (Wp - hi));
      }
    }
  });
}

// Step 2: the input transform of tile panel tp (tiles tp*NR + lane) of group g, channels
// [c0, c1): out[xi][c][NR] = (B^T d B)[xi] (point stride Cg*NR).
template <class T, int TM>
void transform_tiles(const Plan<T, TM>& pl, const T* xp, int64_t g, int64_t tp, int64_t c0,
                     int64_t c1, T* out) {
  using V = Vec<T>;
  constexpr int NR = Blk<T>::NR, L = V::size, NV = NR / L, A = Tile<TM>::A;
  const int64_t Wp = pl.Wp, xs = pl.Cg * NR;
  alignas(64) int32_t idx[NR];
  for (int l = 0; l < NR; ++l) {
    const int64_t t = tp * NR + l;
    if (t < pl.ntiles) {
      const int64_t n = t / pl.TI, r = t - n * pl.TI, th = r / pl.TW, tw = r - th * pl.TW;
      idx[l] = static_cast<int32_t>(n * pl.Ctot * pl.plane + TM * th * Wp + TM * tw);
    } else {
      idx[l] = 0;  // a real element: the column is computed and dropped
    }
  }
  // Chunks of L tiles that lie in one tile row, or in two (split at lane split[v]), read
  // with strided loads; others (tiny rows, the end of the batch) with gathers.
  bool row[NV];
  int split[NV];
  for (int v = 0; v < NV; ++v) {
    const int64_t t = tp * NR + v * L, tw = (t % pl.TI) % pl.TW;
    const int64_t first = pl.TW - tw;  // lanes left in the first tile row
    split[v] = static_cast<int>(first < L ? first : L);
    row[v] = has_strided_load<TM, T>() && t + L <= pl.ntiles && (first >= L || L - first <= pl.TW);
  }
  for (int64_t c = c0; c < c1; ++c) {
    const T* base = xp + (g * pl.Cg + c) * pl.plane;
    for (int v = 0; v < NV; ++v) {
      V t[A][A];
      if (row[v] && split[v] == L) {  // L consecutive tiles of one tile row
        const T* pv = base + idx[v * L];
        FC_GEMM_UNROLL for (int i = 0; i < A; ++i) {
          V d[A];
          FC_GEMM_UNROLL for (int j = 0; j < A; ++j) d[j] = load_strided<TM>(pv + i * Wp + j);
          input_1d<TM>(d, t[i]);
        }
      } else if (row[v]) {  // two runs: lanes [0, sp) and [sp, L), the second shifted down
        const int sp = split[v];
        const T* pa = base + idx[v * L];
        const T* pb = base + idx[v * L + sp] - TM * sp;  // after pa: reads stay in xp
        FC_GEMM_UNROLL for (int i = 0; i < A; ++i) {
          V d[A];
          FC_GEMM_UNROLL for (int j = 0; j < A; ++j)
            d[j] = blend_from(load_strided<TM>(pa + i * Wp + j), load_strided<TM>(pb + i * Wp + j), sp);
          input_1d<TM>(d, t[i]);
        }
      } else {
        FC_GEMM_UNROLL for (int i = 0; i < A; ++i) {
          V d[A];
          FC_GEMM_UNROLL for (int j = 0; j < A; ++j) d[j] = gather(base + i * Wp + j, idx + v * L);
          input_1d<TM>(d, t[i]);
        }
      }
      T* o = out + c * NR + v * L;
      FC_GEMM_UNROLL for (int j = 0; j < A; ++j) {
        V col[A], r[A];
        FC_GEMM_UNROLL for (int i = 0; i < A; ++i) col[i] = t[i][j];
        input_1d<TM>(col, r);
        FC_GEMM_UNROLL for (int i = 0; i < A; ++i) r[i].store(o + (i * A + j) * xs);
      }
    }
  }
}

// Step 2 (not fused): all panels beforehand, Vp[g][tp][xi][c][NR]. Work items: (group, tile
// panel, run of up to 16 channels).
template <class T, int TM>
void input_transform(const Plan<T, TM>& pl, const T* xp, T* Vp) {
  constexpr int NR = Blk<T>::NR, kPts = Tile<TM>::Pts;
  constexpr int64_t kCh = 16;
  const int64_t ncc = ceil_div(pl.Cg, kCh), xs = pl.Cg * NR;
  parallel_for(pl.G * pl.ntp * ncc, 1, [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      const int64_t g = u / (pl.ntp * ncc), rem = u - g * pl.ntp * ncc;
      const int64_t tp = rem / ncc, cc = rem - tp * ncc;
      const int64_t c0 = cc * kCh, c1 = c0 + kCh < pl.Cg ? c0 + kCh : pl.Cg;
      transform_tiles(pl, xp, g, tp, c0, c1, Vp + (g * pl.ntp + tp) * kPts * xs);
    }
  });
}

// Step 3a: U for rows [m0, m0 + mc) (m < M) and channels [c0, c0 + kcl) of group g, as A*A sets
// of MR-row A panels: Up[xi][panel][kk][MR] with panel stride apstride, set stride us.
template <class T, int TM>
FC_WINO_NOINLINE void weight_transform(const Plan<T, TM>& pl, const T* w, const WeightView& wv, int64_t g, int64_t m0,
                      int64_t c0, int64_t kcl, T* Up, int64_t us) {
  using V = Vec<T>;
  constexpr int MR = Blk<T>::MR, L = V::size, A = Tile<TM>::A;
  const int64_t npan = pl.mc / MR;
  alignas(64) T gb[9][L];
  // Lane l of a chunk at e0 (a multiple of L, hence of MR when MR divides L) is element
  // (kk, i) = (e0/MR + l/MR, l%MR) of the panel: offset lane_off[l] + (e0/MR)*cs in w.
  constexpr bool kGather = L % MR == 0 && L >= MR;
  alignas(64) int32_t lane_off[L];
  for (int l = 0; l < L; ++l) lane_off[l] = static_cast<int32_t>((l % MR) * wv.ms + (l / MR) * wv.cs);
  // Chunks in the order that reads w along its rows: panel by panel for the forward weights
  // (row m = output channel, contiguous channels), channel pair by channel pair for the flipped
  // ones (a channel c of the view is an output channel of w, its rows m contiguous).
  const int64_t nch = pl.apstride / L;
  for (int64_t it = 0; it < npan * nch; ++it) {
    const int64_t pan = wv.flip ? it % npan : it / nch;
    const int64_t e0 = (wv.flip ? it / npan : it % nch) * L;
    const int64_t mp0 = m0 + pan * MR;
    {
      V g9[9];
      if (kGather && mp0 + MR <= pl.M && (e0 + L) / MR <= kcl) {
        const T* src = w + g * wv.gs + mp0 * wv.ms + (c0 + e0 / MR) * wv.cs;
        FC_GEMM_UNROLL for (int rs = 0; rs < 9; ++rs) g9[rs] = gather(src + (wv.flip ? 8 - rs : rs), lane_off);
      } else {
        for (int l = 0; l < L; ++l) {
          const int64_t e = e0 + l, kk = e / MR, i = e - kk * MR, m = mp0 + i;
          if (kk < kcl && m < pl.M) {
            const T* src = w + g * wv.gs + m * wv.ms + (c0 + kk) * wv.cs;
            if (wv.flip) {
              for (int rs = 0; rs < 9; ++rs) gb[rs][l] = src[8 - rs];
            } else {
              for (int rs = 0; rs < 9; ++rs) gb[rs][l] = src[rs];
            }
          } else {
            for (int rs = 0; rs < 9; ++rs) gb[rs][l] = T(0);
          }
        }
        FC_GEMM_UNROLL for (int rs = 0; rs < 9; ++rs) g9[rs] = V::load(gb[rs]);
      }
      V t[A][3];
      for (int s = 0; s < 3; ++s) {
        V col[3] = {g9[s], g9[3 + s], g9[6 + s]}, o[A];
        weight_1d<TM, T>(col, o);
        FC_GEMM_UNROLL for (int i = 0; i < A; ++i) t[i][s] = o[i];
      }
      T* dst = Up + pan * pl.apstride + e0;
      FC_GEMM_UNROLL for (int i = 0; i < A; ++i) {
        V o[A];
        weight_1d<TM, T>(t[i], o);
        FC_GEMM_UNROLL for (int j = 0; j < A; ++j) o[j].store(dst + (i * A + j) * us);
      }
    }
  }
}

// Step 3c: y (rows [m0, m0 + mr) of group g, tiles [t0, t0 + nt)) from Mb[xi][row][ld]. Returns
// false when a transformed value (valid pixel or not) is not finite: see winograd_impl.
template <class T, int TM>
FC_WINO_NOINLINE bool output_transform(const Plan<T, TM>& pl, const T* Mb, int64_t ld, int64_t rows_stride, int64_t g,
                      int64_t m0, int64_t mr, int64_t t0, int64_t nt, const T* bias, T* y) {
  using V = Vec<T>;
  constexpr int L = V::size, A = Tile<TM>::A;
  const int64_t PQ = pl.P * pl.Q, xs = rows_stride * ld;
  alignas(64) T ob[TM * TM][L];
  V chk = V::zero();  // stays zero while every value is finite (inf * 0 and NaN * 0 are NaN)
  for (int64_t m = 0; m < mr; ++m) {
    const int64_t k = g * pl.M + m0 + m;
    const V bv = V::set1(bias ? bias[k] : T(0));
    for (int64_t tl = 0; tl < nt; tl += L) {
      const T* src = Mb + m * ld + tl;
      V t[TM][A];
      FC_GEMM_UNROLL for (int i = 0; i < A; ++i) {
        V row[A], o[TM];
        FC_GEMM_UNROLL for (int j = 0; j < A; ++j) row[j] = V::load(src + (i * A + j) * xs);
        output_1d<TM>(row, o);
        FC_GEMM_UNROLL for (int j = 0; j < TM; ++j) t[j][i] = o[j];
      }
      FC_GEMM_UNROLL for (int j = 0; j < TM; ++j) {
        V o[TM];
        output_1d<TM>(t[j], o);
        FC_GEMM_UNROLL for (int i = 0; i < TM; ++i) {
          chk = V::fmadd(o[i], V::zero(), chk);
          (o[i] + bv).store(ob[i * TM + j]);
        }
      }
      const int64_t nl = nt - tl < L ? nt - tl : L;
      // Runs of lanes within one tile row: per pixel row, the values of the run's tiles are
      // contiguous in y: interleaved, then stored with (masked) vector stores.
      V iv[TM][TM];
      FC_GEMM_UNROLL for (int i = 0; i < TM; ++i) {
        V rowv[TM];
        FC_GEMM_UNROLL for (int j = 0; j < TM; ++j) rowv[j] = V::load(ob[i * TM + j]);
        interleave<TM>(rowv, iv[i]);
      }
      for (int64_t l = 0; l < nl;) {
        const int64_t t = t0 + tl + l;
        const int64_t n = t / pl.TI, r = t - n * pl.TI, th = r / pl.TW, tw = r - th * pl.TW;
        const int64_t l1 = nl - l < pl.TW - tw ? nl : l + (pl.TW - tw);
        const int64_t vh = pl.P - TM * th < TM ? pl.P - TM * th : TM;
        const int64_t cols = pl.Q - TM * tw < TM * (l1 - l) ? pl.Q - TM * tw : TM * (l1 - l);
        T* d = y + (n * pl.K + k) * PQ + TM * th * pl.Q + TM * (tw - l);  // sequence value 0
        for (int64_t i = 0; i < vh; ++i)
          store_range<TM>(d + i * pl.Q, iv[i], static_cast<int>(TM * l), static_cast<int>(TM * l + cols));
        l = l1;
      }
    }
  }
  return chk.reduce_add() == T(0);
}

// Returns false, with y partly written, when some transformed output was not finite: a NaN or inf
// in the input or the weights spreads to whole tiles in the transforms (and huge finite values
// may overflow there), so the caller then recomputes y on the GEMM path, which gives exactly the
// direct convolution's non-finite pattern.
template <class T, int TM>
bool winograd_impl(const Conv2dParams& p, const T* x, const T* w, const WeightView& wv,
                   const T* bias, T* y) {
  using B_ = Blk<T>;
  constexpr int MR = B_::MR, NR = B_::NR, kPts = Tile<TM>::Pts;
  const int64_t nt = num_threads();
  const Plan<T, TM> pl = make_plan<T, TM>(p, nt);
  const int64_t ntasks = pl.G * pl.nmb * pl.ntb, nthr = ntasks < nt ? ntasks : nt;
  const int64_t nbpad = pl.np * NR;                     // columns of a task's M block
  const int64_t us = (pl.mc / MR) * pl.apstride;         // one transform point's A panels
  const size_t xp_bytes = gemm::Arena::bytes<T>(p.N * p.C * pl.plane + 4 * Vec<T>::size + 8);
  const int64_t panel = kPts * pl.Cg * NR;              // one transformed tile panel
  // Transformed input: all of it (not fused), or per thread its task's panels (fused).
  const size_t vp_bytes = gemm::Arena::bytes<T>(pl.fused ? 0 : pl.G * pl.ntp * panel);
  const size_t vt_bytes = gemm::Arena::bytes<T>(pl.fused ? pl.np * panel : 0);
  const size_t up_bytes = gemm::Arena::bytes<T>(kPts * us);
  const size_t mb_bytes = gemm::Arena::bytes<T>(kPts * pl.mc * nbpad);
  // Transformed weights: per task, or, when several blocks of tiles share them and they fit in
  // L2 (measured: 1 MiB shared took r50_res3_3x3 4.7 -> 4.3 ms, 4 MiB r50_res4_3x3 8.6 -> 11),
  // all of them once beforehand: Ug[g][mb][cb] of up_bytes each.
  const int64_t nub = pl.G * pl.nmb * pl.ncb, ustride = kPts * us;
  const bool shared_u = pl.ntb > 1 && nub * ustride * int64_t(sizeof(T)) <= (int64_t(3) << 19);
  const size_t ug_bytes = shared_u ? gemm::Arena::bytes<T>(nub * ustride) : 0;
  const size_t per_thread = (shared_u ? 0 : up_bytes) + mb_bytes + vt_bytes;
  char* base = static_cast<char*>(
      gemm::call_scratch().get(xp_bytes + vp_bytes + ug_bytes + nthr * per_thread));
  T* xp = reinterpret_cast<T*>(base);
  T* Vp = reinterpret_cast<T*>(base + xp_bytes);
  T* Ug = reinterpret_cast<T*>(base + xp_bytes + vp_bytes);
  pad_input(p, pl, x, xp);
  if (!pl.fused) input_transform(pl, xp, Vp);
  if (shared_u) {
    parallel_for(nub, 1, [&](int64_t b, int64_t e) {
      for (int64_t u = b; u < e; ++u) {
        const int64_t g = u / (pl.nmb * pl.ncb), rem = u - g * pl.nmb * pl.ncb;
        const int64_t mb = rem / pl.ncb, cb = rem - mb * pl.ncb;
        const int64_t c0 = cb * pl.kc, kcl = pl.Cg - c0 < pl.kc ? pl.Cg - c0 : pl.kc;
        weight_transform(pl, w, wv, g, mb * pl.mc, c0, kcl, Ug + u * ustride, us);
      }
    });
  }

  int finite = 1;
  char* per_thread_scratch = base + xp_bytes + vp_bytes + ug_bytes;
  gemm::run_tasks(ntasks, nthr, per_thread_scratch, per_thread, [&](int64_t t, char* mine) {
    T* Up = reinterpret_cast<T*>(mine);
    T* Mb = reinterpret_cast<T*>(mine + (shared_u ? 0 : up_bytes));
    T* Vt = reinterpret_cast<T*>(mine + (shared_u ? 0 : up_bytes) + mb_bytes);
    const int64_t g = t / (pl.nmb * pl.ntb), rem = t - g * pl.nmb * pl.ntb;
    const int64_t tb = rem / pl.nmb, mb = rem - tb * pl.nmb;
    const int64_t m0 = mb * pl.mc, mr = pl.M - m0 < pl.mc ? pl.M - m0 : pl.mc;
    const int64_t mpan = ceil_div(mr, MR);
    const int64_t tp0 = tb * pl.np, tp1 = tp0 + pl.np < pl.ntp ? tp0 + pl.np : pl.ntp;
    // Bpanel(tp) = transformed panel tp of group g.
    const T* Vg = pl.fused ? Vt : Vp + (g * pl.ntp + tp0) * panel;
    if (pl.fused)
      for (int64_t tp = tp0; tp < tp1; ++tp) transform_tiles(pl, xp, g, tp, 0, pl.Cg, Vt + (tp - tp0) * panel);
    for (int64_t cb = 0; cb < pl.ncb; ++cb) {
      const int64_t c0 = cb * pl.kc, kcl = pl.Cg - c0 < pl.kc ? pl.Cg - c0 : pl.kc;
      if (shared_u)
        Up = Ug + ((g * pl.nmb + mb) * pl.ncb + cb) * ustride;
      else
        weight_transform(pl, w, wv, g, m0, c0, kcl, Up, us);
      for (int xi = 0; xi < kPts; ++xi) {
        for (int64_t tp = tp0; tp < tp1; ++tp) {
          const T* Bpan = Vg + (tp - tp0) * panel + xi * pl.Cg * NR + c0 * NR;
          T* Cblk = Mb + xi * pl.mc * nbpad + (tp - tp0) * NR;
          for (int64_t mp = 0; mp < mpan; ++mp)
            gemm::ukernel<T>(kcl, Up + xi * us + mp * pl.apstride, Bpan, nullptr,
                             Cblk + mp * MR * nbpad, nbpad, cb > 0, nullptr);
        }
      }
    }
    const int64_t t0 = tp0 * NR, t1 = tp1 * NR < pl.ntiles ? tp1 * NR : pl.ntiles;
    if (!output_transform(pl, Mb, nbpad, pl.mc, g, m0, mr, t0, t1 - t0, bias, y))
      __atomic_store_n(&finite, 0, __ATOMIC_RELAXED);
  });
  return finite != 0;
}

template <class T>
bool winograd_run(int tile, const Conv2dParams& p, const T* x, const T* w, const WeightView& wv,
                  const T* bias, T* y) {
  return tile == 4 ? winograd_impl<T, 4>(p, x, w, wv, bias, y) : winograd_impl<T, 2>(p, x, w, wv, bias, y);
}

template <class T>
void forward_impl(const Conv2dParams& p, int tile, const T* x, const T* w, const T* bias, T* y) {
  const int64_t Kg = p.Kg(), Cg = p.Cg();
  if (!winograd_run(tile, p, x, w, WeightView{Kg * Cg * 9, Cg * 9, 9, false}, bias, y))
    conv2d_forward(p, x, w, bias, y);
}

// dx = conv(dY, W') with W'[c][k][2-r][2-s] = W[k][c][r][s]: in the view of that convolution,
// row m is the original input channel, channel c the original output channel.
template <class T>
void backward_input_impl(const Conv2dParams& p, int tile, const T* dy, const T* w, T* dx) {
  const Conv2dParams q = winograd_backward_params(p);
  const int64_t Kg = p.Kg(), Cg = p.Cg();
  if (!winograd_run(tile, q, dy, w, WeightView{Kg * Cg * 9, 9, Cg * 9, true}, static_cast<const T*>(nullptr), dx))
    conv2d_backward_input(p, dy, w, dx);
}

}  // namespace

#define FC_WINOGRAD_DEFINE(T)                                                                      \
  void winograd_conv2d_forward(const Conv2dParams& p, int tile, const T* x, const T* w,          \
                               const T* bias, T* y) {                                              \
    forward_impl<T>(p, tile, x, w, bias, y);                                                       \
  }                                                                                                \
  void winograd_conv2d_backward_input(const Conv2dParams& p, int tile, const T* dy, const T* w,   \
                                      T* dx) {                                                     \
    backward_input_impl<T>(p, tile, dy, w, dx);                                                    \
  }
FC_WINOGRAD_DEFINE(float)
FC_WINOGRAD_DEFINE(double)
#undef FC_WINOGRAD_DEFINE

FC_ISA_END
