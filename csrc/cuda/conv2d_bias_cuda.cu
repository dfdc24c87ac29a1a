// Bias gradient of any 2-D convolution on the GPU: db[k] = sum_{n,p,q} dy[n,k,p,q].
//
// Algorithm: a deterministic two-stage reduction, no atomics. dy is viewed as (N, K, L), L = P*Q.
//   (1) bias_partial: block (k, chunk) sums a fixed chunk of channel k's N x L elements: a range
//       of batch elements, or (few images, long planes) one segment of one image's plane; threads
//       stride along contiguous rows (coalesced), then a fixed-order block reduction (warp
//       butterfly, then warps in index order) writes workspace[k][chunk];
//   (2) bias_reduce: one warp per channel sums its chunks in a fixed order.
// Chunks are sized for about kBiasBlocks blocks in stage 1. Types: float, double, __half,
// __nv_bfloat16 storage, float accumulation (double for double). Results are bitwise
// reproducible run to run.
#include "cuda/conv2d_bias_cuda.h"

#include <algorithm>

#include "common/check.h"
#include "cuda/compat.h"

namespace fastconv {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kBiasBlocks = 1024;
constexpr int64_t kMinSegment = 2048;  // elements per plane segment at least

struct BiasPlan {
  int64_t nper = 1, nblocks = 0;  // images per chunk, chunks along the batch
  int64_t seg = 1, nseg = 1;      // plane segment length, segments per plane
  __host__ __device__ int64_t chunks() const { return nblocks * nseg; }
};

BiasPlan plan_bias(int64_t N, int64_t K, int64_t L) {
  BiasPlan b;
  if (N == 0 || K == 0 || L == 0) return BiasPlan{1, 0, 1, 1};
  const int64_t want = ceil_div(kBiasBlocks, K);  // chunks per channel
  if (N >= want) {
    b.nper = ceil_div(N, want);
    b.nblocks = ceil_div(N, b.nper);
    b.seg = L, b.nseg = 1;
  } else {
    b.nper = 1, b.nblocks = N;
    b.nseg = std::max<int64_t>(1, std::min(ceil_div(want, N), L / kMinSegment));
    b.seg = ceil_div(L, b.nseg);
    b.nseg = ceil_div(L, b.seg);
  }
  return b;
}

template <class A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Stage 1: block = (channel k, chunk); threads stride along the chunk's contiguous rows.
template <class T>
__global__ void __launch_bounds__(kThreads)
bias_partial(int64_t N, int64_t K, int64_t L, BiasPlan b, gptr<const T> dy, gptr<acc_t<T>> ws) {
  using A = acc_t<T>;
  FC_SHARED(A, red, [kWarps]);
  const int64_t nch = b.chunks();
  const int64_t k = blockIdx.x / nch, ch = blockIdx.x % nch;
  const int64_t nb = ch / b.nseg, sg = ch % b.nseg;
  const int64_t n0 = nb * b.nper, n1 = std::min(N, n0 + b.nper);
  const int64_t j0 = sg * b.seg, j1 = std::min(L, j0 + b.seg);
  A acc = A(0);
  for (int64_t n = n0; n < n1; ++n) {
    gptr<const T> row = dy + (n * K + k) * L;
    for (int64_t j = j0 + threadIdx.x; j < j1; j += blockDim.x) acc += to_acc(row[j]);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  acc = warp_sum(acc);
  if (lane == 0) red[warp] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    A s = red[0];
    for (int w = 1; w < int(blockDim.x >> 5); ++w) s += red[w];
    ws[blockIdx.x] = s;
  }
}

// Stage 2: one warp per channel sums its chunks in a fixed order.
template <class T>
__global__ void __launch_bounds__(kThreads)
bias_reduce(int64_t K, int64_t nch, gptr<const acc_t<T>> ws, gptr<T> db) {
  using A = acc_t<T>;
  const int lane = threadIdx.x & 31;
  const int64_t k = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (k >= K) return;  // whole warps leave together
  A s = A(0);
  for (int64_t ch = lane; ch < nch; ch += 32) s += ws[k * nch + ch];
  s = warp_sum(s);
  if (lane == 0) db[k] = from_acc<T>(s);
}

inline size_t acc_size(DType dt) { return dt == DType::f64 ? 8 : 4; }

}  // namespace

int64_t conv2d_backward_bias_workspace_bytes(int64_t N, int64_t K, int64_t L, DType dt) {
  return K * plan_bias(N, K, L).chunks() * int64_t(acc_size(dt));
}

void conv2d_backward_bias(int64_t N, int64_t K, int64_t L, DType dt, const void* dy, void* db,
                          void* workspace, int64_t workspace_bytes, cudaStream_t stream) {
  const char* op = "conv2d_backward_bias";
  if (K == 0) return;
  const int64_t need = conv2d_backward_bias_workspace_bytes(N, K, L, dt);
  if (workspace_bytes < need)
    throw ValueError(str_cat(op, ": workspace of ", workspace_bytes, " bytes, need ", need,
                             " (conv2d_backward_bias_workspace_bytes)"));
  auto shapes = [&] { return str_cat("grad_output (", N, ", ", K, ", ", L, " = P*Q)"); };
  dtype_switch(dt, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const BiasPlan b = plan_bias(N, K, L);
    const int64_t nch = b.chunks();
    auto gws = global(static_cast<A*>(workspace), need / int64_t(sizeof(A)));
    if (nch > 0) {
      if (K * nch > 0x7fffffffLL) throw ValueError(str_cat(op, ": too many blocks for ", shapes()));
      auto k1 = bias_partial<T>;
      FC_LAUNCH(k1, dim3(unsigned(K * nch)), kThreads, 0, stream, N, K, L, b,
                global(static_cast<const T*>(dy), N * K * L), gws);
      check_launch(op, shapes);
    }
    auto k2 = bias_reduce<T>;
    FC_LAUNCH(k2, dim3(unsigned(ceil_div(K, kWarps))), kThreads, 0, stream, K, nch,
              gptr<const A>(gws), global(static_cast<T*>(db), K));
    check_launch(op, shapes);
  });
}

}  // namespace cuda
}  // namespace fastconv
