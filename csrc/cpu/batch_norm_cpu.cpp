// Training-mode batch normalisation on the CPU, float32 and float64 (see batch_norm_cpu.h for
// what each entry point computes). Used by fastconv.nn.BatchNorm2d (and BatchNorm1d) in training
// mode on numpy arrays; inference folds into channel_affine instead.
//
// Layout: x, y, g, dx are (N, C, L), C-contiguous, so each (n, c) row is L contiguous values of
// one channel. Every step is a loop over rows, multi-threaded with parallel_for (at least
// kGrainElems elements per chunk, so small tensors stay on the calling thread).
//
// Statistics: each row's mean and centred sum of squares M2 are computed in float64 in two passes
// over the row (the second pass reads it from L1/L2), then the N rows of a channel are merged in
// n order with Chan et al.'s pairwise update (mean += d * L / n_ab, M2 += M2_b + d^2 n_a L / n_ab).
// Two passes keep the variance exact to float64 rounding however large the mean is beside the
// spread (a one-pass sum of squares loses it when |mean| / std is large). The backward sums are
// row sums in float64 merged in n order likewise. Each row sum uses eight accumulators in a fixed
// order (the compiler may hold them in vector registers: the same operations, so the same
// result), and rows never depend on which thread ran them: results are identical for every
// thread count.
//
// Element-wise steps keep the centring explicit: y = (x - mean) * scale + shift, not x * scale +
// (shift - mean * scale), whose float32 rounding is relative to |mean * scale| rather than to the
// result; likewise dx = g * a + (x - mean) * b + e.
//
// Variants: compiled for baseline, avx2 and avx512 (fmadd for the element-wise steps); see isa.h.
//
// Measured (2-core AMD EPYC VM, avx2; BatchNorm2d forward + backward through the autograd on a
// (16, 64, 56, 56) float32 input, median of 15): 6.5 ms on 1 thread and 4.5 ms on 2, against
// 14.9 / 14.8 ms for the array code it replaced (five single-threaded numpy passes forward and
// six backward, with temporaries). Whole training steps: README, "Whole models".

#include "cpu/batch_norm_cpu.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/parallel.h"
#include "common/simd.h"

FC_ISA_BEGIN
namespace {

constexpr int64_t kGrainElems = 32768;  // elements per parallel chunk, at least

int64_t row_grain(int64_t L) {
  const int64_t l = std::max<int64_t>(L, 1);
  return std::max<int64_t>(1, (kGrainElems + l - 1) / l);
}

// Sum of f(l) for l < L in float64: eight accumulators in a fixed order, then a fixed tree.
template <class F>
inline double row_sum(int64_t L, const F& f) {
  double a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t l = 0;
  for (; l + 8 <= L; l += 8)
    for (int j = 0; j < 8; ++j) a[j] += f(l + j);
  for (int j = 0; l < L; ++l, ++j) a[j] += f(l);
  return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}

template <class T>
void stats(const BatchNormParams& p, const T* x, double* mean, double* var) {
  const int64_t N = p.N, C = p.C, L = p.L;
  if (C <= 0) return;
  std::vector<double> rm(static_cast<size_t>(N * C)), r2(static_cast<size_t>(N * C));
  parallel_for(N * C, row_grain(L), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* row = x + r * L;
      const double m = row_sum(L, [&](int64_t l) { return static_cast<double>(row[l]); }) / L;
      rm[r] = m;
      r2[r] = row_sum(L, [&](int64_t l) {
        const double d = static_cast<double>(row[l]) - m;
        return d * d;
      });
    }
  });
  for (int64_t c = 0; c < C; ++c) {
    double n_a = static_cast<double>(L), m_a = rm[c], q_a = r2[c];
    for (int64_t n = 1; n < N; ++n) {
      const int64_t r = n * C + c;
      const double n_ab = n_a + L, d = rm[r] - m_a;
      m_a += d * (L / n_ab);
      q_a += r2[r] + d * d * (n_a * L / n_ab);
      n_a = n_ab;
    }
    mean[c] = m_a;
    var[c] = q_a / n_a;
  }
}

// y[l] = (x[l] - m) * s + t, or with g: dx[l] = g[l] * a + (x[l] - m) * b + e.
template <class T, bool WITH_G>
inline void affine_row(const T* g, const T* x, T* y, int64_t L, T m, T a, T b, T e) {
  using V = Vec<T>;
  constexpr int W = V::size;
  const V vm = V::set1(m), va = V::set1(a), vb = V::set1(b), ve = V::set1(e);
  auto f = [&](int64_t l) {
    V v = V::fmadd(V::load(x + l) - vm, vb, ve);
    if (WITH_G) v = V::fmadd(V::load(g + l), va, v);
    return v;
  };
  int64_t l = 0;
  for (; l + 2 * W <= L; l += 2 * W) {
    V v0 = f(l), v1 = f(l + W);
    v0.store(y + l);
    v1.store(y + l + W);
  }
  for (; l + W <= L; l += W) f(l).store(y + l);
  for (; l < L; ++l) {
    T v = (x[l] - m) * b + e;
    if (WITH_G) v = g[l] * a + v;
    y[l] = v;
  }
}

template <class T>
void forward(const BatchNormParams& p, const T* x, const T* mean, const T* scale, const T* shift,
             T* y) {
  const int64_t C = p.C, L = p.L;
  if (C <= 0 || L <= 0) return;
  parallel_for(p.N * C, row_grain(L), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t c = r % C;
      affine_row<T, false>(nullptr, x + r * L, y + r * L, L, mean[c], T(0), scale[c], shift[c]);
    }
  });
}

template <class T>
void backward_reduce(const BatchNormParams& p, const T* g, const T* x, const double* mean,
                     double* sum_g, double* sum_gxc) {
  const int64_t N = p.N, C = p.C, L = p.L;
  if (C <= 0) return;
  std::vector<double> rg(static_cast<size_t>(N * C)), rgx(static_cast<size_t>(N * C));
  parallel_for(N * C, row_grain(L), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* gr = g + r * L;
      const T* xr = x + r * L;
      const double m = mean[r % C];
      rg[r] = row_sum(L, [&](int64_t l) { return static_cast<double>(gr[l]); });
      rgx[r] = row_sum(L, [&](int64_t l) {
        return static_cast<double>(gr[l]) * (static_cast<double>(xr[l]) - m);
      });
    }
  });
  for (int64_t c = 0; c < C; ++c) {
    double s = 0, sx = 0;
    for (int64_t n = 0; n < N; ++n) {
      s += rg[n * C + c];
      sx += rgx[n * C + c];
    }
    sum_g[c] = s;
    sum_gxc[c] = sx;
  }
}

template <class T>
void backward_input(const BatchNormParams& p, const T* g, const T* x, const T* mean, const T* a,
                    const T* b, const T* e, T* dx) {
  const int64_t C = p.C, L = p.L;
  if (C <= 0 || L <= 0) return;
  parallel_for(p.N * C, row_grain(L), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t c = r % C;
      affine_row<T, true>(g + r * L, x + r * L, dx + r * L, L, mean[c], a[c], b[c], e[c]);
    }
  });
}

}  // namespace

// ---- entry points ------------------------------------------------------------------------------
#define FC_BN_DEFINE(T)                                                                           \
  void batch_norm_stats(const BatchNormParams& p, const T* x, double* mean, double* var) {        \
    stats<T>(p, x, mean, var);                                                                    \
  }                                                                                               \
  void batch_norm_forward(const BatchNormParams& p, const T* x, const T* mean, const T* scale,    \
                          const T* shift, T* y) {                                                 \
    forward<T>(p, x, mean, scale, shift, y);                                                      \
  }                                                                                               \
  void batch_norm_backward_reduce(const BatchNormParams& p, const T* g, const T* x,              \
                                  const double* mean, double* sum_g, double* sum_gxc) {           \
    backward_reduce<T>(p, g, x, mean, sum_g, sum_gxc);                                            \
  }                                                                                               \
  void batch_norm_backward_input(const BatchNormParams& p, const T* g, const T* x, const T* mean, \
                                 const T* a, const T* b, const T* e, T* dx) {                     \
    backward_input<T>(p, g, x, mean, a, b, e, dx);                                                \
  }
FC_BN_DEFINE(float)
FC_BN_DEFINE(double)
#undef FC_BN_DEFINE

FC_ISA_END
