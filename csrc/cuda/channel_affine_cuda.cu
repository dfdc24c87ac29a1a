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
// Algorithm: a streaming pass, memory-bound; each thread moves V elements per grid-stride step:
// one 16-byte vector (V = 16 / sizeof(T)) where sizes and alignment allow, else V = 1.
//   rows kernel (L >= kRowMin): blockIdx.y walks the N*C rows (scale and shift loaded once per
//                row, uniform across the block), blockIdx.x / threadIdx.x the L contiguous
//                elements of a row: coalesced, no integer division per element. Vectors when
//                L % V == 0 and x, y are 16-byte aligned.
//   flat kernel (small L, e.g. channels-last with L = 1): a grid-stride loop over all N*C*L
//                elements, channel = (i / L) % C (i % C when L = 1). Vectors when L == 1,
//                C % V == 0 and all four pointers are aligned (V consecutive channels).
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

// V consecutive elements (16 bytes) moved as one vector access on the GPU; under the emulation as
// V checked scalar accesses, after checking the alignment the launcher promised. A small local
// helper, since a gptr cannot be reinterpreted in kernel code.
template <class T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

#if FC_EMULATION
template <int V, class T>
void check_aligned(const T* a) {
  if (reinterpret_cast<uintptr_t>(a) % (sizeof(T) * V) != 0)
    throw std::runtime_error("channel_affine: misaligned vector access (emulation check)");
}
#endif

template <int V, class T>
__device__ __forceinline__ Pack<T, V> load_pack(gptr<const T> p) {
#if FC_EMULATION
  check_aligned<V>(p.at(0));
  Pack<T, V> r;
  for (int j = 0; j < V; ++j) r.v[j] = p[j];
  return r;
#else
  return *reinterpret_cast<const Pack<T, V>*>(p);
#endif
}

template <int V, class T>
__device__ __forceinline__ void store_pack(gptr<T> p, const Pack<T, V>& a) {
#if FC_EMULATION
  check_aligned<V>(p.at(0));
  for (int j = 0; j < V; ++j) p[j] = a.v[j];
#else
  *reinterpret_cast<Pack<T, V>*>(p) = a;
#endif
}

// ---- kernels -----------------------------------------------------------------------------------

// blockIdx.y (grid-stride) over rows r = n * C + c; blockIdx.x, threadIdx.x (grid-stride) over
// the row's L contiguous elements, V at a time (V > 1: L % V == 0 and x, y 16-byte aligned).
template <class T, bool LO, bool HI, class I, int V>
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
    for (I l = (I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x)) * V; l < L;
         l += I(gridDim.x) * I(blockDim.x) * V) {
      Pack<T, V> a = load_pack<V>(xr + l);
#pragma unroll
      for (int j = 0; j < V; ++j) a.v[j] = from_acc<T>(affine<LO, HI>(to_acc(a.v[j]), s, b, lo, hi));
      store_pack<V>(yr + l, a);
    }
  }
}

// V elements per thread per grid-stride step over all N*C*L elements (V > 1: L == 1, C % V == 0
// and every pointer 16-byte aligned, so a thread's V elements are V consecutive channels).
template <class T, bool LO, bool HI, class I, int V>
__global__ void __launch_bounds__(kBlock)
    channel_affine_flat_kernel(ChannelAffineParams p, gptr<const T> x, gptr<const T> scale,
                               gptr<const T> shift, gptr<T> y) {
  using A = acc_t<T>;
  const A lo = bound<T>(p.lo), hi = bound<T>(p.hi);
  const I C = I(p.C), L = I(p.L), total = I(p.N) * C * L;
  for (I i = (I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x)) * V; i < total;
       i += I(gridDim.x) * I(blockDim.x) * V) {
    if (V == 1) {
      const I c = L == 1 ? i % C : i / L % C;
      y[i] = from_acc<T>(affine<LO, HI>(to_acc(x[i]), to_acc(__ldg(scale + c)),
                                        to_acc(__ldg(shift + c)), lo, hi));
    } else {
      const I c = i % C;
      Pack<T, V> a = load_pack<V>(x + i);
      const Pack<T, V> s = load_pack<V>(scale + c), b = load_pack<V>(shift + c);
#pragma unroll
      for (int j = 0; j < V; ++j)
        a.v[j] = from_acc<T>(
            affine<LO, HI>(to_acc(a.v[j]), to_acc(s.v[j]), to_acc(b.v[j]), lo, hi));
      store_pack<V>(y + i, a);
    }
  }
}

// ---- launcher ----------------------------------------------------------------------------------

// Whether an address allows 16-byte vector accesses.
bool aligned(const void* a) { return reinterpret_cast<uintptr_t>(a) % 16 == 0; }

}  // namespace

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
          constexpr int V = 16 / sizeof(T);
          if (p.L >= kRowMin) {
            const bool vec = aligned(x) && aligned(y) && p.L % V == 0;
            const int64_t per_row = vec ? p.L / V : p.L;
            const int64_t gx = std::min(ceil_div(per_row, kBlock), kMaxBlocks);
            const int64_t gy = std::min<int64_t>(
                {p.N * p.C, std::max<int64_t>(1, kMaxBlocks / gx), 65535});
            const dim3 grid = dim3(unsigned(gx), unsigned(gy));
            if (vec) {
              auto k = channel_affine_rows_kernel<T, LO, HI, I, V>;
              FC_LAUNCH(k, grid, kBlock, 0, stream, p, xg, sg, bg, yg);
            } else {
              auto k = channel_affine_rows_kernel<T, LO, HI, I, 1>;
              FC_LAUNCH(k, grid, kBlock, 0, stream, p, xg, sg, bg, yg);
            }
          } else {
            const bool vec = p.L == 1 && p.C % V == 0 && aligned(x) && aligned(y) &&
                             aligned(scale) && aligned(shift);
            const unsigned grid =
                unsigned(std::min(ceil_div(vec ? total / V : total, kBlock), kMaxBlocks));
            if (vec) {
              auto k = channel_affine_flat_kernel<T, LO, HI, I, V>;
              FC_LAUNCH(k, grid, kBlock, 0, stream, p, xg, sg, bg, yg);
            } else {
              auto k = channel_affine_flat_kernel<T, LO, HI, I, 1>;
              FC_LAUNCH(k, grid, kBlock, 0, stream, p, xg, sg, bg, yg);
            }
          }
        };
        if (small_index)
          run(int32_t{});
        else
          run(int64_t{});
      });
    });
  });
  check_launch("channel_affine", [&] { return str_cat("x (", p.N, ", ", p.C, ", ", p.L, ") viewed as (N, C, L)"); });
}

}  // namespace cuda
}  // namespace fastconv
