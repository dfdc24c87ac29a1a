// Self-test kernels of the CUDA emulation (csrc/cuda/emulation.h), built into fastconv._cuda_emu only
// (CMakeLists.txt FC_EMU_ONLY): each is a small kernel written like the real ones (compat.h rules)
// in a correct version (variant 0) and with a planted bug (variant > 0); tests/test_cuda_emulation.py
// checks the correct ones against numpy and that the emulation reports every bug. The file is plain
// CUDA and also compiles with nvcc, but nothing ships it in fastconv._cuda.
//
// Kernels: tiled SGEMM (missing second barrier), block reduction through shared memory (races in
// the tree and in the warp stage, a non-atomic global accumulation), scatter-add (without atomics,
// within and across blocks), 1-D stencil with a shared
// halo (shared index out of range, uninitialised halo, early return and divergent barriers,
// global reads and writes out of range), warp shuffle sum (wrong masks), a 3x3 max pool (timing
// probe) and a WMMA GEMM (float16 / bfloat16 inputs, float accumulators, row/col major).
#include "cuda/compat.h"
#if !FC_EMULATION
#include <mma.h>
#endif

#include <cfloat>

#include "cuda/emulation_selftest.h"

namespace fastconv {
namespace cuda {
namespace selftest {
namespace {

constexpr int kTile = 16;

// One 16x16 block per 16x16 tile of C; the K loop stages A and B tiles in shared memory.
__global__ void sgemm_kernel(gptr<const float> A, gptr<const float> B, gptr<float> C, int M, int N,
                             int K, int variant) {
  FC_SHARED(float, As, [kTile][kTile]);
  FC_SHARED(float, Bs, [kTile][kTile]);
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int row = blockIdx.y * kTile + ty, col = blockIdx.x * kTile + tx;
  float acc = 0.f;
  for (int k0 = 0; k0 < K; k0 += kTile) {
    As[ty][tx] = row < M && k0 + tx < K ? A[int64_t(row) * K + k0 + tx] : 0.f;
    Bs[ty][tx] = k0 + ty < K && col < N ? B[int64_t(k0 + ty) * N + col] : 0.f;
    __syncthreads();
    for (int k = 0; k < kTile; ++k) acc += As[ty][k] * Bs[k][tx];
    if (variant != 1) __syncthreads();  // planted bug 1: the next tile's loads race with these reads
  }
  if (row < M && col < N) C[int64_t(row) * N + col] = acc;
}

// One 256-thread block per 256 inputs: shared tree down to 64 partial sums, then the first warp
// finishes through shared memory with __syncwarp between its reads and writes.
__global__ void block_sum_kernel(gptr<const float> x, gptr<float> out, int n, int variant) {
  FC_SHARED(float, buf, [256]);
  const int t = threadIdx.x, i = blockIdx.x * 256 + t;
  buf[t] = i < n ? x[i] : 0.f;
  __syncthreads();
  for (int s = 128; s >= 32; s >>= 1) {
    if (t < s) buf[t] += buf[t + s];
    if (variant != 1) __syncthreads();  // planted bug 1: the tree reads partial sums mid-update
  }
  if (variant == 3) {  // planted bug 3: 32 threads accumulate into one output without atomics
    if (t < 32) out[blockIdx.x] += buf[t];
    return;
  }
  if (t < 32) {
    for (int s = 16; s > 0; s >>= 1) {
      const float v = buf[t] + buf[t + s];
      if (variant != 2) __syncwarp();  // planted bug 2: warp-synchronous code without __syncwarp
      buf[t] = v;
      if (variant != 2) __syncwarp();
    }
    if (t == 0) out[blockIdx.x] = buf[0];
  }
}

__device__ __forceinline__ float weigh(float left, float centre, float right) {
  return left + 2.f * centre + right;
}

// One 64-thread block per 64 outputs; the block's inputs and a one-element halo on each side are
// staged in shared memory.
__global__ void stencil_kernel(gptr<const float> x, gptr<float> y, int n, int variant) {
  FC_SHARED(float, t, [64 + 2]);
  const int tx = threadIdx.x, i = blockIdx.x * 64 + tx;
  if (variant == 3 && i >= n) return;  // planted bug 3: early return before the barrier
  auto load = [&](int j) {
    const bool in = variant == 5 ? j >= 0 : j >= 0 && j < n;  // planted bug 5: no upper bound
    return in ? float(x[j]) : 0.f;
  };
  t[tx + 1] = load(i);
  if (tx == 0) t[0] = load(i - 1);
  if (tx == 63 && variant != 2)  // planted bug 2: right halo never loaded
    t[variant == 1 ? tx + 3 : tx + 2] = load(i + 1);  // planted bug 1: halo index off by one
  if (variant == 4) {  // planted bug 4: the two halves of the block wait at different barriers
    if (tx < 32) {
      __syncthreads();
    } else {
      __syncthreads();
    }
  } else {
    __syncthreads();
  }
  const float v = weigh(t[tx], t[tx + 1], t[tx + 2]);
  if (i < n || variant == 6) y[i] = v;  // planted bug 6: no bound on the write
}

// One block per blockDim.x inputs, reversed within the block through dynamic shared memory.
__global__ void reverse_kernel(gptr<const float> x, gptr<float> y, int n, int variant) {
  FC_DYN_SHARED(float, s);
  const int t = threadIdx.x, nt = blockDim.x, i = blockIdx.x * nt + t;
  if (i < n || variant != 3) s[t] = i < n ? x[i] : 0.f;  // planted bug 3: tail left unwritten
  if (variant != 1) __syncthreads();                     // planted bug 1: no barrier
  const float v = s[variant == 2 ? nt - t : nt - 1 - t];  // planted bug 2: index off by one
  if (i < n) y[i] = v;
}

// One warp per 32 inputs: shuffle-down tree.
__global__ void warp_sum_kernel(gptr<const float> x, gptr<float> out, int variant) {
  const int lane = threadIdx.x & 31, w = blockIdx.x;
  float v = x[w * 32 + lane];
  const unsigned mask = variant == 1 ? 0x0000ffffu : 0xffffffffu;  // planted bug 1: half mask
  if (variant == 2 && lane >= 16) return;  // planted bug 2: lanes named by the mask exit
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(mask, v, o);
  if (lane == 0) out[w] = v;
}

// One thread per input, 32-thread blocks: y[idx[i]] += x[i].
__global__ void scatter_add_kernel(gptr<const float> x, gptr<const int> idx, gptr<float> y, int n,
                                   int variant) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  if (variant == 1) y[idx[i]] += x[i];  // planted bug 1: colliding updates without atomics
  else atomicAdd(y + idx[i], float(x[i]));
}

__device__ __forceinline__ float twice(float v) { return 2.f * v; }

__device__ void copy_row(gptr<float> dst, gptr<const float> src, int n) {
  for (int i = 0; i < n; ++i) dst[i] = src[i];
}

// One 32-thread block: the forms kernel code uses on shared elements (proxies in the emulation):
// proxy to proxy assignment, compound assignment, a function taking float, increments, an atomic
// through &cnt[0], a shuffle of a shared element, __half elements, a row passed as a pointer.
// y[t] = (x[31-t] + 2 x[t]) / 2 + x[0] + 32 + half(x[t]); z = x[0:32] copied into a shared row by
// a helper taking global pointers (its writes count for the initialisation checks).
__global__ void proxy_forms_kernel(gptr<const float> x, gptr<float> y, gptr<float> z) {
  FC_SHARED(float, a, [2][32]);
  FC_SHARED(float, b, [32]);
  FC_SHARED(int, cnt, [1]);
  FC_SHARED(__half, h, [32]);
  const int t = threadIdx.x;
  if (t == 0) cnt[0] = 0;
  if (t == 1) copy_row(b, x, 32);
  a[0][t] = x[t];
  h[t] = __float2half_rn(x[t]);
  __syncthreads();
  a[1][t] = a[0][31 - t];
  a[1][t] += twice(a[0][t]);
  a[1][t] *= 0.5f;
  ++a[1][t];
  a[1][t]--;
  atomicAdd(&cnt[0], 1);
  const float s = __shfl_sync(0xffffffffu, a[0][t], 0);
  __syncthreads();
  const float c = float(cnt[0]);
  y[t] = a[1][t] + s + c + to_acc(h[t]);
  z[t] = b[t];
}

// One thread per output of a (NC, H, W) stack, 3x3 window, stride 1, padding 1.
__global__ void max_pool3x3_kernel(gptr<const float> x, gptr<float> y, int NC, int H, int W) {
  const int64_t o = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (o >= int64_t(NC) * H * W) return;
  const int w = int(o % W), h = int(o / W % H);
  const int64_t plane = o / (int64_t(H) * W) * H * W;
  float m = -FLT_MAX;
  for (int dh = -1; dh <= 1; ++dh)
    for (int dw = -1; dw <= 1; ++dw) {
      const int hh = h + dh, ww = w + dw;
      if (hh >= 0 && hh < H && ww >= 0 && ww < W) m = fmaxf(m, x[plane + int64_t(hh) * W + ww]);
    }
  y[o] = m;
}

// One warp per 16x16 tile of C. A fragments load straight from global memory (row- or
// column-major fragments); B tiles are copied by the warp into shared memory (row-major B) or load
// from global memory (column-major B, and C then goes through shared memory column-major).
template <class T>
__global__ void wmma_gemm_kernel(gptr<const T> A, gptr<const T> B, gptr<float> C, int M, int N, int K,
                                 bool a_col, bool b_col) {
  using namespace nvcuda;
  FC_SHARED(T, bs, [16][16]);
  FC_SHARED(float, cs, [16][16]);
  const int tm = blockIdx.y * 16, tn = blockIdx.x * 16, lane = threadIdx.x;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a_rm;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::col_major> a_cm;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b_rm;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b_cm;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 0.f);
  for (int k0 = 0; k0 < K; k0 += 16) {
    if (a_col) wmma::load_matrix_sync(a_cm, A + int64_t(k0) * M + tm, M);
    else wmma::load_matrix_sync(a_rm, A + int64_t(tm) * K + k0, K);
    if (b_col) {
      wmma::load_matrix_sync(b_cm, B + int64_t(tn) * K + k0, K);
    } else {
      for (int e = lane; e < 256; e += 32) bs[e / 16][e % 16] = B[int64_t(k0 + e / 16) * N + tn + e % 16];
      __syncwarp();
      wmma::load_matrix_sync(b_rm, bs[0], 16);  // a row decays to the tile pointer
    }
    if (a_col && b_col) wmma::mma_sync(acc, a_cm, b_cm, acc);
    else if (a_col) wmma::mma_sync(acc, a_cm, b_rm, acc);
    else if (b_col) wmma::mma_sync(acc, a_rm, b_cm, acc);
    else wmma::mma_sync(acc, a_rm, b_rm, acc);
    __syncwarp();  // the next tile's copy overwrites bs
  }
  if (b_col) {
    wmma::store_matrix_sync(&cs[0][0], acc, 16, wmma::mem_col_major);
    __syncwarp();
    for (int e = lane; e < 256; e += 32) C[int64_t(tm + e % 16) * N + tn + e / 16] = cs[e / 16][e % 16];
  } else {
    wmma::store_matrix_sync(C + int64_t(tm) * N + tn, acc, N, wmma::mem_row_major);
  }
}

template <class Frag>
__device__ void round_tf32(Frag& f) {
  for (int e = 0; e < f.num_elements; ++e) f.x[e] = nvcuda::wmma::__float_to_tf32(f.x[e]);
}

// One warp per 16x16 tile of C, K in steps of 8.
__global__ void wmma_tf32_gemm_kernel(gptr<const float> A, gptr<const float> B, gptr<float> C,
                                      int N, int K, bool round) {
  using namespace nvcuda;
  const int tm = blockIdx.y * 16, tn = blockIdx.x * 16;
  wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> a;
  wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> b;
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc;
  wmma::fill_fragment(acc, 0.f);
  for (int k0 = 0; k0 < K; k0 += 8) {
    wmma::load_matrix_sync(a, A + int64_t(tm) * K + k0, K);
    wmma::load_matrix_sync(b, B + int64_t(k0) * N + tn, N);
    if (round) {
      round_tf32(a);
      round_tf32(b);
    }
    wmma::mma_sync(acc, a, b, acc);
  }
  wmma::store_matrix_sync(C + int64_t(tm) * N + tn, acc, N, wmma::mem_row_major);
}

}  // namespace

void sgemm(const float* A, const float* B, float* C, int M, int N, int K, int variant) {
  auto k = sgemm_kernel;
  FC_LAUNCH(k, dim3(unsigned(ceil_div(N, kTile)), unsigned(ceil_div(M, kTile))), dim3(kTile, kTile),
            0, nullptr, global(A, int64_t(M) * K), global(B, int64_t(K) * N),
            global(C, int64_t(M) * N), M, N, K, variant);
  check_launch("selftest.sgemm", [&] { return str_cat("M=", M, " N=", N, " K=", K); });
}

void block_sum(const float* x, float* out, int n, int variant) {
  const int blocks = int(ceil_div(n, 256));
  auto k = block_sum_kernel;
  FC_LAUNCH(k, blocks, 256, 0, nullptr, global(x, n), global(out, blocks), n, variant);
  check_launch("selftest.block_sum", [&] { return str_cat("n=", n); });
}

void stencil(const float* x, float* y, int n, int variant) {
  auto k = stencil_kernel;
  FC_LAUNCH(k, unsigned(ceil_div(n, 64)), 64, 0, nullptr, global(x, n), global(y, n), n, variant);
  check_launch("selftest.stencil", [&] { return str_cat("n=", n); });
}

void reverse(const float* x, float* y, int n, int variant) {
  auto k = reverse_kernel;
  FC_LAUNCH(k, unsigned(ceil_div(n, 32)), 32, 32 * sizeof(float), nullptr, global(x, n), global(y, n),
            n, variant);
  check_launch("selftest.reverse", [&] { return str_cat("n=", n); });
}

void scatter_add(const float* x, const int* idx, float* y, int n, int m, int variant) {
  auto k = scatter_add_kernel;
  FC_LAUNCH(k, unsigned(ceil_div(n, 32)), 32, 0, nullptr, global(x, n), global(idx, n), global(y, m),
            n, variant);
  check_launch("selftest.scatter_add", [&] { return str_cat("n=", n, " m=", m); });
}

void proxy_forms(const float* x, float* y, float* z) {
  auto k = proxy_forms_kernel;
  FC_LAUNCH(k, 1, 32, 0, nullptr, global(x, 32), global(y, 32), global(z, 32));
  check_launch("selftest.proxy_forms", [&] { return "n=32"; });
}

void warp_sum(const float* x, float* out, int nwarps, int variant) {
  auto k = warp_sum_kernel;
  FC_LAUNCH(k, nwarps, 32, 0, nullptr, global(x, int64_t(nwarps) * 32), global(out, nwarps),
            variant);
  check_launch("selftest.warp_sum", [&] { return str_cat("nwarps=", nwarps); });
}

void max_pool3x3(const float* x, float* y, int NC, int H, int W) {
  const int64_t total = int64_t(NC) * H * W;
  auto k = max_pool3x3_kernel;
  FC_LAUNCH(k, unsigned(ceil_div(total, 256)), 256, 0, nullptr, global(x, total), global(y, total),
            NC, H, W);
  check_launch("selftest.max_pool3x3", [&] { return str_cat("NC=", NC, " H=", H, " W=", W); });
}

void wmma_gemm(int dtype, const void* A, const void* B, float* C, int M, int N, int K, bool a_col,
               bool b_col) {
  FC_CHECK(M % 16 == 0 && N % 16 == 0 && K % 16 == 0 && M > 0 && N > 0 && K > 0,
           "selftest.wmma_gemm: M, N, K must be positive multiples of 16, got ", M, ", ", N, ", ", K);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    auto k = wmma_gemm_kernel<T>;
    FC_LAUNCH(k, dim3(unsigned(N / 16), unsigned(M / 16)), 32, 0, nullptr,
              global(static_cast<const T*>(A), int64_t(M) * K),
              global(static_cast<const T*>(B), int64_t(K) * N), global(C, int64_t(M) * N), M, N, K,
              a_col, b_col);
  };
  if (dtype == 1) run(__half{});
  else if (dtype == 2) run(__nv_bfloat16{});
  else throw TypeError(str_cat("selftest.wmma_gemm: dtype code must be 1 (float16) or 2 (bfloat16), got ", dtype));
  check_launch("selftest.wmma_gemm", [&] { return str_cat("M=", M, " N=", N, " K=", K); });
}

void wmma_tf32_gemm(const float* A, const float* B, float* C, int M, int N, int K, bool round) {
  FC_CHECK(M % 16 == 0 && N % 16 == 0 && K % 8 == 0 && M > 0 && N > 0 && K > 0,
           "selftest.wmma_tf32_gemm: M, N must be positive multiples of 16 and K of 8, got ", M,
           ", ", N, ", ", K);
  auto k = wmma_tf32_gemm_kernel;
  FC_LAUNCH(k, dim3(unsigned(N / 16), unsigned(M / 16)), 32, 0, nullptr,
            global(A, int64_t(M) * K), global(B, int64_t(K) * N), global(C, int64_t(M) * N), N, K,
            round);
  check_launch("selftest.wmma_tf32_gemm", [&] { return str_cat("M=", M, " N=", N, " K=", K); });
}

}  // namespace selftest
}  // namespace cuda
}  // namespace fastconv
