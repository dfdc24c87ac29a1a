// Max, average and adaptive average pooling on CUDA, forward and backward: the twins of
// cpu/pool2d_cpu.cpp, with PyTorch's semantics.
//
// What it computes (per (n, c) plane; x is H x W, y is P x Q; indices are flat h * W + w):
//   max:  y[p][q] = max over the taps (p*sh - pt + i*dh, q*sw - pl + j*dw) inside the input,
//         scanned row-major from -inf (padding acts as -inf) and replaced when `v > max || v is
//         NaN`: NaN propagates with the index of the last NaN, ties keep the first tap, an all -inf
//         window gives -inf and its first in-range tap. Backward: dx[h][w] = sum of dy[p][q] over
//         the outputs whose window covers (h, w) and whose index is h * W + w.
//   avg:  window [p*sh - pt, min(+R, H + pb)) x [..]; divisor = divisor_override (any non-zero
//         value), else the window's size before clamping to the input (count_include_pad) or
//         after. Backward: dx[h][w] = sum of dy[p][q] / divisor over the windows covering (h, w).
//   adaptive avg: rows [floor(p*H/P), ceil((p+1)*H/P)), columns likewise; y = sum / kh / kw.
//
// Algorithm: every kernel is a grid-stride loop over the elements of the array it writes, one
// element per thread per iteration, so each output element is written exactly once (no zeroing
// pass, no atomics: the backward kernels are deterministic gathers, summing in the order the CPU
// scatter adds). Consecutive threads take consecutive elements in memory order: output columns
// in NCHW, channels in NHWC, so loads and stores of a warp are coalesced (strided windows read
// through __ldg and the L1 cache). The backward gathers find their covering outputs from the
// geometry in O(1): for max pooling the outputs whose dilated window extent contains (h, w)
// (PyTorch's CUDA kernel does the same); those whose index is not h * W + w are skipped.
// max_pool2d_backward_serial, for callers that have only the indices, is the CPU kernel's loop with
// one thread per plane (zero the plane, scatter in output order): deterministic and exact, slow;
// it adds in the storage type, so 16-bit sums round once per contribution.
// Average windows of >= kWarpWindow elements (global average pooling) split the window across
// threads instead, so a long window is not one thread's serial loop: in NCHW one warp per output
// (shuffle reduction), in NHWC a block per 32 channels of an output position, its 8 warps
// splitting the window (shared-memory reduction). Flat indices are split into (n, c, h, w) with precomputed multiply-shift
// dividers in the int32 kernels.
// Not done yet (no GPU to measure on): vector loads, several outputs per thread along a row,
// wider NHWC accesses for the 16-bit types.
//
// Variants: template on the storage type (float, __half, __nv_bfloat16 with float accumulation;
// double), the layout (NCHW / NHWC) and the index type (int32 when every flat index and product
// of sizes fits, else int64); max forward on whether indices are written.
// Assumptions: dense arrays in the params' layout; outputs do not overlap inputs (the binding and
// the Python twin allocate them).

#include "cuda/pool2d_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <type_traits>

#include "common/geometry.h"
#include "common/switch.h"
#include "cuda/compat.h"

namespace fastconv {
namespace cuda {
namespace {

constexpr int kBlock = 256;       // threads per block (a multiple of the warp size)
constexpr int64_t kWarpWindow = 32;  // NCHW average windows this large take a warp per output
#if FC_EMULATION
constexpr int64_t kMaxBlocks = 2;  // small grids, so the tests run the grid-stride loops
#else
constexpr int64_t kMaxBlocks = 8192;
#endif

// ---- device helpers ----------------------------------------------------------------------------

template <class I>
__host__ __device__ __forceinline__ I imin(I a, I b) { return a < b ? a : b; }
template <class I>
__host__ __device__ __forceinline__ I imax(I a, I b) { return a > b ? a : b; }

// Division by a run-time constant: int64 divides; int32 (operands below 2^31) takes a
// multiply-high and a shift (Granlund-Montgomery, as PyTorch's IntDivider), a few instructions
// instead of a ~20-instruction integer division. Built on the host, passed to the kernels.
template <class I>
struct Divider {
  I d = 1;
  Divider() = default;
  explicit Divider(int64_t v) : d(I(v)) {}
  __device__ __forceinline__ I div(I n) const { return n / d; }
};
template <>
struct Divider<int32_t> {
  uint32_t m = 0, s = 0;
  Divider() = default;
  explicit Divider(int64_t v) {
    const uint64_t d = uint64_t(v);
    while ((uint64_t(1) << s) < d) ++s;
    m = uint32_t((uint64_t(1) << 32) * ((uint64_t(1) << s) - d) / d + 1);
  }
  __device__ __forceinline__ int32_t div(int32_t n) const {
    const uint32_t u = uint32_t(n), hi = uint32_t((uint64_t(u) * m) >> 32);
    return int32_t((hi + u) >> s);
  }
};

// The sizes of an (N, C, A, B) array that flat indices are split by.
template <class I>
struct Dims {
  I C, A, B;
  Divider<I> dc, da, db;
  Dims(int64_t c, int64_t a, int64_t b)
      : C(I(c)), A(I(a)), B(I(b)), dc(c), da(a), db(b) {}
};

// Coordinates of flat element i of an (N, C, A, B) array stored NCHW (CL = false) or NHWC.
template <bool CL, class I>
__device__ __forceinline__ void locate(I i, const Dims<I>& d, I& n, I& c, I& a, I& b) {
  if (CL) {
    const I t = d.dc.div(i), u = d.db.div(t);
    c = i - t * d.C;
    b = t - u * d.B;
    n = d.da.div(u);
    a = u - n * d.A;
  } else {
    const I t = d.db.div(i), u = d.da.div(t);
    b = i - t * d.B;
    a = t - u * d.A;
    n = d.dc.div(u);
    c = u - n * d.C;
  }
}

// Offset of element (n, c, 0, 0) of an (N, C, A, B) array; spatial position k = a * B + b then
// sits at base + k * (CL ? C : 1).
template <bool CL, class I>
__device__ __forceinline__ I plane_base(I n, I c, I C, I AB) {
  return CL ? n * AB * C + c : (n * C + c) * AB;
}

template <class I>
__device__ __forceinline__ I first_thread() {
  return I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x);
}
template <class I>
__device__ __forceinline__ I thread_stride() {
  return I(gridDim.x) * I(blockDim.x);
}

// First output o >= 0 whose window [o * s - pad, o * s - pad + extent) contains i (>= 0).
template <class I>
__device__ __forceinline__ I first_cover(I i, I pad, I extent, I s) {
  const I t = i + pad - extent + 1;
  return t <= 0 ? I(0) : (t + s - 1) / s;
}

// ---- kernels -----------------------------------------------------------------------------------

// One thread per output element (grid-stride), consecutive threads on consecutive outputs.
template <class T, bool CL, bool IDX, class I>
__global__ void __launch_bounds__(kBlock)
    max_pool2d_forward_kernel(Pool2dParams p, Dims<I> d, gptr<const T> x, gptr<T> y,
                              gptr<int64_t> ind) {
  using A = acc_t<T>;
  const I C = I(p.C), H = I(p.H), W = I(p.W), P = I(p.P), Q = I(p.Q);
  const I sh = I(p.stride_h), sw = I(p.stride_w), dh = I(p.dil_h), dw = I(p.dil_w);
  const I eh = (I(p.R) - 1) * dh + 1, ew = (I(p.S) - 1) * dw + 1;
  const I cs = CL ? C : I(1);
  const I total = I(p.N) * C * P * Q;
  for (I i = first_thread<I>(); i < total; i += thread_stride<I>()) {
    I n, c, oh, ow;
    locate<CL>(i, d, n, c, oh, ow);
    const gptr<const T> xp = x + plane_base<CL>(n, c, C, H * W);
    I h0 = oh * sh - I(p.pad_t), w0 = ow * sw - I(p.pad_l);
    const I h1 = imin(h0 + eh, H), w1 = imin(w0 + ew, W);
    if (h0 < 0) h0 += (-h0 + dh - 1) / dh * dh;  // first tap inside the input
    if (w0 < 0) w0 += (-w0 + dw - 1) / dw * dw;
    A m = A(-INFINITY);
    I mi = h0 * W + w0;
    for (I h = h0; h < h1; h += dh)
      for (I w = w0; w < w1; w += dw) {
        const A v = to_acc(__ldg(xp + (h * W + w) * cs));
        if (v > m || v != v) {
          m = v;
          mi = h * W + w;
        }
      }
    y[i] = from_acc<T>(m);
    if (IDX) ind[i] = int64_t(mi);
  }
}

// One thread per input element (grid-stride): sums dy over the outputs whose dilated window
// extent covers it and whose index points at it, in row-major output order.
template <class T, bool CL, class I>
__global__ void __launch_bounds__(kBlock)
    max_pool2d_backward_kernel(Pool2dParams p, Dims<I> d, gptr<const T> dy,
                               gptr<const int64_t> ind, gptr<T> dx) {
  using A = acc_t<T>;
  const I C = I(p.C), H = I(p.H), W = I(p.W), P = I(p.P), Q = I(p.Q);
  const I sh = I(p.stride_h), sw = I(p.stride_w), pt = I(p.pad_t), pl = I(p.pad_l);
  const I eh = (I(p.R) - 1) * I(p.dil_h) + 1, ew = (I(p.S) - 1) * I(p.dil_w) + 1;
  const I cs = CL ? C : I(1);
  const I total = I(p.N) * C * H * W;
  for (I i = first_thread<I>(); i < total; i += thread_stride<I>()) {
    I n, c, h, w;
    locate<CL>(i, d, n, c, h, w);
    const I base = plane_base<CL>(n, c, C, P * Q);
    const I p0 = first_cover(h, pt, eh, sh), p1 = imin((h + pt) / sh + 1, P);
    const I q0 = first_cover(w, pl, ew, sw), q1 = imin((w + pl) / sw + 1, Q);
    const int64_t me = int64_t(h * W + w);
    A s = A(0);
    for (I oh = p0; oh < p1; ++oh)
      for (I ow = q0; ow < q1; ++ow) {
        const I k = base + (oh * Q + ow) * cs;
        if (__ldg(ind + k) == me) s += to_acc(__ldg(dy + k));
      }
    dx[i] = from_acc<T>(s);
  }
}

// One thread per plane (grid-stride): zero the plane, then dx[idx] += dy in output order.
template <class T, bool CL, class I>
__global__ void __launch_bounds__(kBlock)
    max_pool2d_backward_serial_kernel(Pool2dParams p, gptr<const T> dy, gptr<const int64_t> ind,
                                      gptr<T> dx) {
  const I C = I(p.C), HW = I(p.H) * I(p.W), PQ = I(p.P) * I(p.Q);
  const I cs = CL ? C : I(1);
  const I planes = I(p.N) * C;
  for (I pl = first_thread<I>(); pl < planes; pl += thread_stride<I>()) {
    const I n = pl / C, c = pl % C;
    const gptr<T> d = dx + plane_base<CL>(n, c, C, HW);
    const I gb = plane_base<CL>(n, c, C, PQ);
    for (I k = 0; k < HW; ++k) d[k * cs] = from_acc<T>(acc_t<T>(0));
    for (I k = 0; k < PQ; ++k) {
      const int64_t idx = ind[gb + k * cs];
      if (idx >= 0 && idx < int64_t(HW)) {
        const I j = I(idx) * cs;
        d[j] = from_acc<T>(to_acc(d[j]) + to_acc(dy[gb + k * cs]));
      }
    }
  }
}

// The divisor of one average window along one axis is separable: the product of the row and the
// column factors (window extent before or after clamping to the input), unless overridden.
template <class I>
__host__ __device__ __forceinline__ I avg_extent(I o, I s, I pad_lo, I k, I in, I pad_hi, bool include_pad,
                                        I& lo, I& hi) {
  const I a = o * s - pad_lo, b = imin(a + k, in + pad_hi);
  lo = imax(a, I(0)), hi = imin(b, in);
  return include_pad ? b - a : hi - lo;
}

// One thread per output element (grid-stride).
template <class T, bool CL, class I>
__global__ void __launch_bounds__(kBlock)
    avg_pool2d_forward_kernel(Pool2dParams p, Dims<I> d, gptr<const T> x, gptr<T> y) {
  using A = acc_t<T>;
  const I C = I(p.C), H = I(p.H), W = I(p.W), P = I(p.P), Q = I(p.Q);
  const I cs = CL ? C : I(1);
  const I total = I(p.N) * C * P * Q;
  for (I i = first_thread<I>(); i < total; i += thread_stride<I>()) {
    I n, c, oh, ow, h0, h1, w0, w1;
    locate<CL>(i, d, n, c, oh, ow);
    const I fh = avg_extent(oh, I(p.stride_h), I(p.pad_t), I(p.R), H, I(p.pad_b),
                            p.count_include_pad, h0, h1);
    const I fw = avg_extent(ow, I(p.stride_w), I(p.pad_l), I(p.S), W, I(p.pad_r),
                            p.count_include_pad, w0, w1);
    const gptr<const T> xp = x + plane_base<CL>(n, c, C, H * W);
    A s = A(0);
    for (I h = h0; h < h1; ++h)
      for (I w = w0; w < w1; ++w) s += to_acc(__ldg(xp + (h * W + w) * cs));
    const A div = p.divisor_override ? A(p.divisor_override) : A(fh) * A(fw);
    y[i] = from_acc<T>(h0 < h1 && w0 < w1 ? s / div : A(0));
  }
}

// The window of output (oh, ow) of average (ADAPTIVE = false) or adaptive average pooling, and
// its divisor as kh * kw (adaptive: divided by each in turn, as the CPU kernel does).
template <bool ADAPTIVE, class I, class A>
__device__ __forceinline__ void avg_window(const Pool2dParams& p, I oh, I ow, I& h0, I& h1, I& w0,
                                           I& w1, A& kh, A& kw) {
  const I H = I(p.H), W = I(p.W), P = I(p.P), Q = I(p.Q);
  if (ADAPTIVE) {
    h0 = oh * H / P, h1 = ((oh + 1) * H + P - 1) / P;
    w0 = ow * W / Q, w1 = ((ow + 1) * W + Q - 1) / Q;
    kh = A(h1 - h0), kw = A(w1 - w0);
  } else {
    kh = A(avg_extent(oh, I(p.stride_h), I(p.pad_t), I(p.R), H, I(p.pad_b), p.count_include_pad,
                      h0, h1));
    kw = A(avg_extent(ow, I(p.stride_w), I(p.pad_l), I(p.S), W, I(p.pad_r), p.count_include_pad,
                      w0, w1));
    if (p.divisor_override) kh = A(p.divisor_override), kw = A(1);
  }
}

template <bool ADAPTIVE, class A>
__device__ __forceinline__ A avg_result(A s, A kh, A kw, bool empty) {
  return empty ? A(0) : ADAPTIVE ? s / kh / kw : s / (kh * kw);
}

// One warp per output element (grid-stride over the outputs by warps), NCHW, for windows of at
// least kWarpWindow elements (global average pooling): the lanes split the window's elements in
// row-major order (coalesced along a row), then a shuffle reduction; lane 0 stores. ADAPTIVE
// selects adaptive_avg_pool2d's windows and divisor.
template <class T, bool ADAPTIVE, class I>
__global__ void __launch_bounds__(kBlock)
    avg_pool2d_forward_warp_kernel(Pool2dParams p, Dims<I> d, gptr<const T> x, gptr<T> y) {
  using A = acc_t<T>;
  const I C = I(p.C), H = I(p.H), W = I(p.W), P = I(p.P), Q = I(p.Q);
  const I total = I(p.N) * C * P * Q;
  const I lane = I(threadIdx.x) & 31;
  for (I i = first_thread<I>() / 32; i < total; i += thread_stride<I>() / 32) {
    I n, c, oh, ow, h0, h1, w0, w1;
    A kh, kw;
    locate<false>(i, d, n, c, oh, ow);
    avg_window<ADAPTIVE>(p, oh, ow, h0, h1, w0, w1, kh, kw);
    const gptr<const T> xp = x + (n * C + c) * H * W;
    const I cols = imax(w1 - w0, I(0)), count = imax(h1 - h0, I(0)) * cols;
    A s = A(0);
    for (I e = lane; e < count; e += 32) {
      const I r = e / cols;
      s += to_acc(__ldg(xp + (h0 + r) * W + w0 + (e - r * cols)));
    }
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) y[i] = from_acc<T>(avg_result<ADAPTIVE>(s, kh, kw, count == 0));
  }
}

// Global average pooling of small NCHW planes (the window is the whole plane, at most
// kGlobalMaxHW elements: ResNet's 7x7 head, say): a block takes PB consecutive planes, which are
// one contiguous run of memory, reads the run coalesced into shared memory, then each thread sums
// one plane there (rows padded to an odd length, so the threads' reads hit distinct banks). A warp
// per plane, as above, would leave lanes idle and spend its time in the shuffle reduction on
// windows this small. kh, kw: the divisor's factors (avg_window's, for the window of output 0).
constexpr int64_t kGlobalMaxHW = 64;
constexpr int kGlobalThreads = 128;
template <class T, bool ADAPTIVE, class I>
__global__ void __launch_bounds__(kGlobalThreads)
    avg_pool2d_global_small_kernel(I planes, I HW, acc_t<T> kh, acc_t<T> kw, gptr<const T> x,
                                   gptr<T> y) {
  using A = acc_t<T>;
  constexpr int PB = sizeof(A) == 8 ? kGlobalThreads / 2 : kGlobalThreads;  // 48 KB at most
  FC_SHARED(A, buf, [PB * (kGlobalMaxHW + 1)]);
  const I stride = HW | I(1);
  const I t = I(threadIdx.x);
  for (I p0 = I(blockIdx.x) * PB; p0 < planes; p0 += I(gridDim.x) * PB) {
    const I np = imin(I(PB), planes - p0), count = np * HW;
    const gptr<const T> xp = x + p0 * HW;
    for (I e = t; e < count; e += I(blockDim.x)) {
      const I r = e / HW;
      buf[r * stride + (e - r * HW)] = to_acc(__ldg(xp + e));
    }
    __syncthreads();
    if (t < np) {
      A s = A(0);
      for (I j = 0; j < HW; ++j) s += buf[t * stride + j];
      y[p0 + t] = from_acc<T>(avg_result<ADAPTIVE>(s, kh, kw, false));
    }
    __syncthreads();  // buf is rewritten by the next run of planes
  }
}

// NHWC twin of the warp kernel: a block of 32 x kSplit threads takes 32 consecutive channels of
// one output position (grid-stride over N*P*Q*ceil(C/32) such tiles); threadIdx.x is the channel
// (coalesced loads), threadIdx.y splits the window's elements; the kSplit partial sums meet in
// shared memory and row 0 adds them in order and stores.
constexpr int kSplit = kBlock / 32;
template <class T, bool ADAPTIVE, class I>
__global__ void __launch_bounds__(kBlock)
    avg_pool2d_forward_nhwc_split_kernel(Pool2dParams p, gptr<const T> x, gptr<T> y) {
  using A = acc_t<T>;
  FC_SHARED(A, part, [kSplit][32]);
  const I C = I(p.C), H = I(p.H), W = I(p.W), P = I(p.P), Q = I(p.Q);
  const I cb = (C + 31) / 32, tiles = I(p.N) * P * Q * cb;
  const I tx = I(threadIdx.x), ty = I(threadIdx.y);
  for (I t = I(blockIdx.x); t < tiles; t += I(gridDim.x)) {
    const I c = (t % cb) * 32 + tx, o = t / cb;  // o = (n * P + oh) * Q + ow
    const I ow = o % Q, oh = o / Q % P, n = o / (P * Q);
    I h0, h1, w0, w1;
    A kh, kw;
    avg_window<ADAPTIVE>(p, oh, ow, h0, h1, w0, w1, kh, kw);
    const I cols = imax(w1 - w0, I(0)), count = imax(h1 - h0, I(0)) * cols;
    A s = A(0);
    if (c < C) {
      const gptr<const T> xp = x + n * H * W * C + c;
      for (I e = ty; e < count; e += kSplit) {
        const I r = e / cols;
        s += to_acc(__ldg(xp + ((h0 + r) * W + w0 + (e - r * cols)) * C));
      }
    }
    part[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && c < C) {
      A sum = part[0][tx];
      for (int j = 1; j < kSplit; ++j) sum += part[j][tx];
      y[o * C + c] = from_acc<T>(avg_result<ADAPTIVE>(sum, kh, kw, count == 0));
    }
    __syncthreads();  // part is rewritten by the next tile
  }
}

// One thread per input element (grid-stride): sums dy / divisor over the covering windows.
template <class T, bool CL, class I>
__global__ void __launch_bounds__(kBlock)
    avg_pool2d_backward_kernel(Pool2dParams p, Dims<I> d, gptr<const T> dy, gptr<T> dx) {
  using A = acc_t<T>;
  const I C = I(p.C), H = I(p.H), W = I(p.W), P = I(p.P), Q = I(p.Q);
  const I sh = I(p.stride_h), sw = I(p.stride_w), pt = I(p.pad_t), pl = I(p.pad_l);
  const I cs = CL ? C : I(1);
  const I total = I(p.N) * C * H * W;
  for (I i = first_thread<I>(); i < total; i += thread_stride<I>()) {
    I n, c, h, w, lo, hi;
    locate<CL>(i, d, n, c, h, w);
    const I base = plane_base<CL>(n, c, C, P * Q);
    const I p0 = first_cover(h, pt, I(p.R), sh), p1 = imin((h + pt) / sh + 1, P);
    const I q0 = first_cover(w, pl, I(p.S), sw), q1 = imin((w + pl) / sw + 1, Q);
    A s = A(0);
    for (I oh = p0; oh < p1; ++oh) {
      const I fh = avg_extent(oh, sh, pt, I(p.R), H, I(p.pad_b), p.count_include_pad, lo, hi);
      for (I ow = q0; ow < q1; ++ow) {
        const I fw = avg_extent(ow, sw, pl, I(p.S), W, I(p.pad_r), p.count_include_pad, lo, hi);
        const A div = p.divisor_override ? A(p.divisor_override) : A(fh) * A(fw);
        s += to_acc(__ldg(dy + base + (oh * Q + ow) * cs)) / div;
      }
    }
    dx[i] = from_acc<T>(s);
  }
}

// One thread per output element (grid-stride).
template <class T, bool CL, class I>
__global__ void __launch_bounds__(kBlock)
    adaptive_avg_pool2d_forward_kernel(Pool2dParams p, Dims<I> d, gptr<const T> x, gptr<T> y) {
  using A = acc_t<T>;
  const I C = I(p.C), H = I(p.H), W = I(p.W), P = I(p.P), Q = I(p.Q);
  const I cs = CL ? C : I(1);
  const I total = I(p.N) * C * P * Q;
  for (I i = first_thread<I>(); i < total; i += thread_stride<I>()) {
    I n, c, oh, ow;
    locate<CL>(i, d, n, c, oh, ow);
    const I h0 = oh * H / P, h1 = ((oh + 1) * H + P - 1) / P;
    const I w0 = ow * W / Q, w1 = ((ow + 1) * W + Q - 1) / Q;
    const gptr<const T> xp = x + plane_base<CL>(n, c, C, H * W);
    A s = A(0);
    for (I h = h0; h < h1; ++h)
      for (I w = w0; w < w1; ++w) s += to_acc(__ldg(xp + (h * W + w) * cs));
    y[i] = from_acc<T>(s / A(h1 - h0) / A(w1 - w0));
  }
}

// One thread per input element (grid-stride): output p covers input h exactly when
// floor(h*P/H) <= p < ceil((h+1)*P/H).
template <class T, bool CL, class I>
__global__ void __launch_bounds__(kBlock)
    adaptive_avg_pool2d_backward_kernel(Pool2dParams p, Dims<I> d, gptr<const T> dy, gptr<T> dx) {
  using A = acc_t<T>;
  const I C = I(p.C), H = I(p.H), W = I(p.W), P = I(p.P), Q = I(p.Q);
  const I cs = CL ? C : I(1);
  const I total = I(p.N) * C * H * W;
  for (I i = first_thread<I>(); i < total; i += thread_stride<I>()) {
    I n, c, h, w;
    locate<CL>(i, d, n, c, h, w);
    const I base = plane_base<CL>(n, c, C, P * Q);
    const I p0 = h * P / H, p1 = ((h + 1) * P + H - 1) / H;
    const I q0 = w * Q / W, q1 = ((w + 1) * Q + W - 1) / W;
    A s = A(0);
    for (I oh = p0; oh < p1; ++oh) {
      const A kh = A(((oh + 1) * H + P - 1) / P - oh * H / P);
      for (I ow = q0; ow < q1; ++ow) {
        const A kw = A(((ow + 1) * W + Q - 1) / Q - ow * W / Q);
        s += to_acc(__ldg(dy + base + (oh * Q + ow) * cs)) / kh / kw;
      }
    }
    dx[i] = from_acc<T>(s);
  }
}

// ---- launch helpers ----------------------------------------------------------------------------

unsigned grid_for(int64_t work) {
  return unsigned(std::min<int64_t>(ceil_div(work, kBlock), kMaxBlocks));
}

// Blocks of the NHWC split kernel: one per tile of 32 channels of an output position, capped.
unsigned split_grid(const Pool2dParams& p) {
  return unsigned(std::min<int64_t>(p.N * p.P * p.Q * ceil_div(p.C, 32), kMaxBlocks));
}

// Whether every flat index and every product of sizes the kernels form fits in int32.
bool fits_int32(const Pool2dParams& p) {
#if FC_EMULATION
  if (std::getenv("FASTCONV_EMU_INT64")) return false;  // tests: the int64 kernels on small shapes
#endif
  const int64_t lim = int64_t(1) << 30;
  const int64_t eh = (p.R - 1) * p.dil_h + 1 + p.pad_t + p.pad_b;
  const int64_t ew = (p.S - 1) * p.dil_w + 1 + p.pad_l + p.pad_r;
  return p.N * p.C * p.H * p.W < lim && p.N * p.C * p.P * p.Q < lim &&
         (p.P + 1) * (p.H + 1) < lim && (p.Q + 1) * (p.W + 1) < lim &&
         (p.P + 1) * p.stride_h + eh + p.H < lim && (p.Q + 1) * p.stride_w + ew + p.W < lim;
}

// Calls f(T{}, CL, I{}) as template choices: storage type, layout, index type.
template <class F>
void dispatch(const Pool2dParams& p, DType dt, F&& f) {
  dtype_switch(dt, [&](auto tag) {
    BOOL_SWITCH(p.channels_last, CL, [&] {
      if (fits_int32(p))
        f(tag, std::integral_constant<bool, CL>{}, int32_t{});
      else
        f(tag, std::integral_constant<bool, CL>{}, int64_t{});
    });
  });
}

}  // namespace

// ---- launchers ---------------------------------------------------------------------------------

void max_pool2d_forward(const Pool2dParams& p, DType dt, const void* x, void* y, int64_t* indices,
                        cudaStream_t stream) {
  const int64_t nx = p.N * p.C * p.H * p.W, ny = p.N * p.C * p.P * p.Q;
  if (ny == 0) return;
  dispatch(p, dt, [&](auto tag, auto cl, auto itag) {
    using T = decltype(tag);
    using I = decltype(itag);
    constexpr bool CL = decltype(cl)::value;
    const auto xg = global(static_cast<const T*>(x), nx);
    const auto yg = global(static_cast<T*>(y), ny);
    const auto ig = global(indices, indices ? ny : 0);
    if (indices) {
      auto k = max_pool2d_forward_kernel<T, CL, true, I>;
      FC_LAUNCH(k, grid_for(ny), kBlock, 0, stream, p, Dims<I>(p.C, p.P, p.Q), xg, yg, ig);
    } else {
      auto k = max_pool2d_forward_kernel<T, CL, false, I>;
      FC_LAUNCH(k, grid_for(ny), kBlock, 0, stream, p, Dims<I>(p.C, p.P, p.Q), xg, yg, ig);
    }
  });
  check_launch("max_pool2d", [&] { return describe(p); });
}

void max_pool2d_backward(const Pool2dParams& p, DType dt, const void* dy, const int64_t* indices,
                         void* dx, cudaStream_t stream) {
  const int64_t nx = p.N * p.C * p.H * p.W, ny = p.N * p.C * p.P * p.Q;
  if (nx == 0) return;
  dispatch(p, dt, [&](auto tag, auto cl, auto itag) {
    using T = decltype(tag);
    using I = decltype(itag);
    constexpr bool CL = decltype(cl)::value;
    auto k = max_pool2d_backward_kernel<T, CL, I>;
    FC_LAUNCH(k, grid_for(nx), kBlock, 0, stream, p, Dims<I>(p.C, p.H, p.W),
              global(static_cast<const T*>(dy), ny),
              global(indices, ny), global(static_cast<T*>(dx), nx));
  });
  check_launch("max_pool2d_backward", [&] { return describe(p); });
}

void max_pool2d_backward_serial(const Pool2dParams& p, DType dt, const void* dy,
                                const int64_t* indices, void* dx, cudaStream_t stream) {
  const int64_t nx = p.N * p.C * p.H * p.W, ny = p.N * p.C * p.P * p.Q;
  if (nx == 0) return;
  dispatch(p, dt, [&](auto tag, auto cl, auto itag) {
    using T = decltype(tag);
    using I = decltype(itag);
    constexpr bool CL = decltype(cl)::value;
    auto k = max_pool2d_backward_serial_kernel<T, CL, I>;
    FC_LAUNCH(k, grid_for(p.N * p.C), kBlock, 0, stream, p, global(static_cast<const T*>(dy), ny),
              global(indices, ny), global(static_cast<T*>(dx), nx));
  });
  check_launch("max_pool2d_backward", [&] { return describe(p); });
}

namespace {

// Average pooling forward, plain (ADAPTIVE = false) or adaptive: one thread per output for small
// windows; for large ones (global pooling) a warp per output in NCHW, a block of warps per 32
// channels in NHWC.
// Whether the one output's window is the whole (non-empty) plane (global average pooling), and
// then its divisor's factors as avg_window gives them for output (0, 0).
template <bool ADAPTIVE>
bool whole_plane_window(const Pool2dParams& p, int64_t& kh, int64_t& kw) {
  if (p.P != 1 || p.Q != 1 || p.H < 1 || p.W < 1) return false;
  if (ADAPTIVE) {
    kh = p.H, kw = p.W;
    return true;
  }
  int64_t h0, h1, w0, w1;  // the window of output (0, 0), as the kernels compute it
  kh = avg_extent<int64_t>(0, p.stride_h, p.pad_t, p.R, p.H, p.pad_b, p.count_include_pad, h0, h1);
  kw = avg_extent<int64_t>(0, p.stride_w, p.pad_l, p.S, p.W, p.pad_r, p.count_include_pad, w0, w1);
  const bool rows = h0 == 0 && h1 == p.H, cols = w0 == 0 && w1 == p.W;
  if (p.divisor_override) kh = p.divisor_override, kw = 1;
  return rows && cols;
}

template <bool ADAPTIVE>
void launch_avg_pool2d_forward(const Pool2dParams& p, DType dt, const void* x, void* y,
                               cudaStream_t stream) {
  const int64_t nx = p.N * p.C * p.H * p.W, ny = p.N * p.C * p.P * p.Q;
  if (ny == 0) return;
  const int64_t window = ADAPTIVE ? ceil_div(p.H, p.P) * ceil_div(p.W, p.Q) : p.R * p.S;
  const bool large = window >= kWarpWindow;
  int64_t kh = 1, kw = 1;
  const bool global_small = !p.channels_last && p.H * p.W <= kGlobalMaxHW &&
                            whole_plane_window<ADAPTIVE>(p, kh, kw);
  dispatch(p, dt, [&](auto tag, auto cl, auto itag) {
    using T = decltype(tag);
    using I = decltype(itag);
    using A = acc_t<T>;
    constexpr bool CL = decltype(cl)::value;
    const auto xg = global(static_cast<const T*>(x), nx);
    const auto yg = global(static_cast<T*>(y), ny);
    if (!CL && global_small) {
      constexpr int PB = sizeof(A) == 8 ? kGlobalThreads / 2 : kGlobalThreads;
      const unsigned grid = unsigned(std::min(ceil_div(ny, PB), kMaxBlocks));
      auto k = avg_pool2d_global_small_kernel<T, ADAPTIVE, I>;
      FC_LAUNCH(k, grid, PB, 0, stream, I(ny), I(p.H * p.W), A(kh), A(kw), xg, yg);
    } else if (!CL && large) {
      auto k = avg_pool2d_forward_warp_kernel<T, ADAPTIVE, I>;
      FC_LAUNCH(k, grid_for(ny * 32), kBlock, 0, stream, p, Dims<I>(p.C, p.P, p.Q), xg, yg);
    } else if (CL && large) {
      auto k = avg_pool2d_forward_nhwc_split_kernel<T, ADAPTIVE, I>;
      FC_LAUNCH(k, split_grid(p), dim3(32, kSplit), 0, stream, p, xg, yg);
    } else if (ADAPTIVE) {
      auto k = adaptive_avg_pool2d_forward_kernel<T, CL, I>;
      FC_LAUNCH(k, grid_for(ny), kBlock, 0, stream, p, Dims<I>(p.C, p.P, p.Q), xg, yg);
    } else {
      auto k = avg_pool2d_forward_kernel<T, CL, I>;
      FC_LAUNCH(k, grid_for(ny), kBlock, 0, stream, p, Dims<I>(p.C, p.P, p.Q), xg, yg);
    }
  });
  check_launch(ADAPTIVE ? "adaptive_avg_pool2d" : "avg_pool2d", [&] { return describe(p); });
}

}  // namespace

void avg_pool2d_forward(const Pool2dParams& p, DType dt, const void* x, void* y,
                        cudaStream_t stream) {
  launch_avg_pool2d_forward<false>(p, dt, x, y, stream);
}

void avg_pool2d_backward(const Pool2dParams& p, DType dt, const void* dy, void* dx,
                         cudaStream_t stream) {
  const int64_t nx = p.N * p.C * p.H * p.W, ny = p.N * p.C * p.P * p.Q;
  if (nx == 0) return;
  dispatch(p, dt, [&](auto tag, auto cl, auto itag) {
    using T = decltype(tag);
    using I = decltype(itag);
    constexpr bool CL = decltype(cl)::value;
    auto k = avg_pool2d_backward_kernel<T, CL, I>;
    FC_LAUNCH(k, grid_for(nx), kBlock, 0, stream, p, Dims<I>(p.C, p.H, p.W),
              global(static_cast<const T*>(dy), ny),
              global(static_cast<T*>(dx), nx));
  });
  check_launch("avg_pool2d_backward", [&] { return describe(p); });
}

void adaptive_avg_pool2d_forward(const Pool2dParams& p, DType dt, const void* x, void* y,
                                 cudaStream_t stream) {
  launch_avg_pool2d_forward<true>(p, dt, x, y, stream);
}

void adaptive_avg_pool2d_backward(const Pool2dParams& p, DType dt, const void* dy, void* dx,
                                  cudaStream_t stream) {
  const int64_t nx = p.N * p.C * p.H * p.W, ny = p.N * p.C * p.P * p.Q;
  if (nx == 0) return;
  dispatch(p, dt, [&](auto tag, auto cl, auto itag) {
    using T = decltype(tag);
    using I = decltype(itag);
    constexpr bool CL = decltype(cl)::value;
    auto k = adaptive_avg_pool2d_backward_kernel<T, CL, I>;
    FC_LAUNCH(k, grid_for(nx), kBlock, 0, stream, p, Dims<I>(p.C, p.H, p.W),
              global(static_cast<const T*>(dy), ny),
              global(static_cast<T*>(dx), nx));
  });
  check_launch("adaptive_avg_pool2d_backward", [&] { return describe(p); });
}

}  // namespace cuda
}  // namespace fastconv
