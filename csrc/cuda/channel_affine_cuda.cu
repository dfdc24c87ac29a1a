// Per-channel affine map with an optional clamp on CUDA: the twin of cpu/channel_affine_cpu.cpp.
//
// What it computes, for x viewed as (N, C, L) (L = the product of the axes after C; a
// channels-last array is the view (N*H*W, C, 1)):
//   y[n, c, l] = min(max(fma(x[n, c, l], scale[c], shift[c]), lo), hi)
// where each bound applies only when its flag in ChannelAffineParams is set, and NaN propagates
// like numpy's maximum / minimum (max(lo, v) written as `lo > v ? lo : v` returns a NaN v).
// The 16-bit types compute in float32 and round once at the store; the bounds are first rounded
// to the storage type (as the CPU kernel converts them to its dtype).
//
// Algorithm: a streaming pass, one element per thread per grid-stride step, memory-bound.
//   rows kernel (L >= kRowMin): blockIdx.y walks the N*C rows (scale and shift loaded once per
//                row, uniform across the block), blockIdx.x / threadIdx.x the L contiguous
//                elements of a row: coalesced, no integer division per element.
//   flat kernel (small L, e.g. channels-last with L = 1): a grid-stride loop over all N*C*L
//                elements, channel = (i / L) % C (i % C when L = 1).
// Which bounds apply is a template choice (BOOL_SWITCH), as is the index type (int32 when the
// element count fits). In place (y == x) is safe: each element is read, then written, by one
// thread (plain loads, not __ldg, since x may be y).
#include "cuda/channel_affine_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <type_traits>

#include "common/switch.h"
#include "cuda/compat.h"

namespace fastconv {
namespace cuda {
namespace {

constexpr int kBlock = 256;
constexpr int64_t kRowMin = 128;  // rows at least this long take the rows kernel
#if FC_EMULATION
constexpr int64_t kMaxBlocks = 2;  // small grids, so the tests run the grid-stride loops
#else
constexpr int64_t kMaxBlocks = 8192;
#endif

// ---- device helpers ----------------------------------------------------------------------------

__device__ __forceinline__ float fma_acc(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double fma_acc(double a, double b, double c) { return fma(a, b, c); }

template <bool LO, bool HI, class A>
__device__ __forceinline__ A affine(A v, A s, A b, A lo, A hi) {
  v = fma_acc(v, s, b);
  if (LO) v = lo > v ? lo : v;  // NaN v passes
  if (HI) v = hi < v ? hi : v;
  return v;
}

// The bound as the kernel's dtype holds it (rounded to the storage type), in the accumulation type.
template <class T>
__device__ __forceinline__ acc_t<T> bound(double v) {
  return to_acc(from_acc<T>(acc_t<T>(v)));
}

// ---- kernels -----------------------------------------------------------------------------------

// blockIdx.y (grid-stride) over rows r = n * C + c; blockIdx.x, threadIdx.x (grid-stride) over
// the row's L contiguous elements.
template <class T, bool LO, bool HI, class I>
__global__ void __launch_bounds__(kBlock)
    channel_affine_rows_kernel(ChannelAffineParams p, gptr<const T> x, gptr<const T> scale,
                               gptr<const T> shift, gptr<T> y) {
  using A = acc_t<T>;
  const A lo = bound<T>(p.lo), hi = bound<T>(p.hi);
  const I C = I(p.C), L = I(p.L), rows = I(p.N) * C;
  for (I r = I(blockIdx.y); r < rows; r += I(gridDim.y)) {
    const I c = r % C;
    const A s = to_acc(__ldg(scale + c)), b = to_acc(__ldg(shift + c));
    const gptr<const T> xr = x + r * L;
    const gptr<T> yr = y + r * L;
    for (I l = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); l < L;
         l += I(gridDim.x) * I(blockDim.x))
      yr[l] = from_acc<T>(affine<LO, HI>(to_acc(xr[l]), s, b, lo, hi));
  }
}

// One element per thread per grid-stride step over all N*C*L elements.
template <class T, bool LO, bool HI, class I>
__global__ void __launch_bounds__(kBlock)
    channel_affine_flat_kernel(ChannelAffineParams p, gptr<const T> x, gptr<const T> scale,
                               gptr<const T> shift, gptr<T> y) {
  using A = acc_t<T>;
  const A lo = bound<T>(p.lo), hi = bound<T>(p.hi);
  const I C = I(p.C), L = I(p.L), total = I(p.N) * C * L;
  for (I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); i < total;
       i += I(gridDim.x) * I(blockDim.x)) {
    const I c = L == 1 ? i % C : i / L % C;
    y[i] = from_acc<T>(
        affine<LO, HI>(to_acc(x[i]), to_acc(__ldg(scale + c)), to_acc(__ldg(shift + c)), lo, hi));
  }
}

}  // namespace

// ---- launcher ----------------------------------------------------------------------------------

void channel_affine(const ChannelAffineParams& p, DType dt, const void* x, const void* scale,
                    const void* shift, void* y, cudaStream_t stream) {
  const int64_t total = p.N * p.C * p.L;
  if (total == 0) return;
  bool small_index = total < (int64_t(1) << 30);
#if FC_EMULATION
  if (std::getenv("FASTCONV_EMU_INT64")) small_index = false;  // tests: the int64 kernels
#endif
  dtype_switch(dt, [&](auto tag) {
    using T = decltype(tag);
    const auto xg = global(static_cast<const T*>(x), total);
    const auto sg = global(static_cast<const T*>(scale), p.C);
    const auto bg = global(static_cast<const T*>(shift), p.C);
    const auto yg = global(static_cast<T*>(y), total);
    BOOL_SWITCH(p.clamp_lo, LO, [&] {
      BOOL_SWITCH(p.clamp_hi, HI, [&] {
        auto run = [&](auto itag) {
          using I = decltype(itag);
          if (p.L >= kRowMin) {
            const int64_t gx = std::min(ceil_div(p.L, kBlock), kMaxBlocks);
            const int64_t gy = std::min(p.N * p.C, std::max<int64_t>(1, kMaxBlocks / gx));
            auto k = channel_affine_rows_kernel<T, LO, HI, I>;
            FC_LAUNCH(k, dim3(unsigned(gx), unsigned(std::min<int64_t>(gy, 65535))), kBlock, 0,
                      stream, p, xg, sg, bg, yg);
          } else {
            auto k = channel_affine_flat_kernel<T, LO, HI, I>;
            FC_LAUNCH(k, unsigned(std::min(ceil_div(total, kBlock), kMaxBlocks)), kBlock, 0,
                      stream, p, xg, sg, bg, yg);
          }
        };
        if (small_index)
          run(int32_t{});
        else
          run(int64_t{});
      });
    });
  });
  check_launch("channel_affine",
               str_cat("x (", p.N, ", ", p.C, ", ", p.L, ") viewed as (N, C, L)"));
}

}  // namespace cuda
}  // namespace fastconv
