// Depthwise 2-D convolution on the GPU: forward, input gradient, weight gradient.
//
// What it computes (NCHW, groups == C, K = C * M, multiplier M >= 1, output channel k reads input
// channel c = k / M, weight w[K, 1, R, S]); exactly cpu/depthwise_conv2d_cpu.cpp:
//   y[n,k,p,q]  = b[k] + sum_{r,s} w[k,r,s] * x[n,c, p*sh - pt + r*dh, q*sw - pl + s*dw]
//   dx[n,c,h,v] = sum_{m<M} sum_{r,s} w[cM+m,r,s] * dy[n,cM+m,p,q] over p*sh - pt + r*dh == h,
//                                                                  q*sw - pl + s*dw == v
//   dw[k,r,s]   = sum_{n,p,q} dy[n,k,p,q] * x[n,c, p*sh - pt + r*dh, q*sw - pl + s*dw]
// Zero padding, per-side pads (pad_b / pad_r only shape P and Q). Outputs are overwritten.
//
// Algorithm. Every kernel works on output tiles of one or more planes (TileGeom): a block covers
// `pl` planes x `tp` rows x `txt` columns; thread (column tx, row group ty, plane) owns one column
// and strips of VP consecutive rows (tp = ty * VP * strips). The source rows and columns a tile
// reads (its halo included) are copied, zero-filled outside the image, into shared memory in
// accumulation precision (lanes along rows: coalesced loads, 4 rows' loads in flight per lane
// before any store); weights go to shared memory too.
// A thread then walks the VP + (R-1) source rows of its strip once, each loaded value feeding
// every output row of the strip it touches (register reuse along the column; consecutive threads
// read consecutive shared addresses, so no bank conflicts at stride 1).
//   * forward and the stride-1 input gradient are one correlation kernel (dw_correlate): the input
//     gradient is the correlation of dy with the flipped kernel at offset (R-1)*dh - pad, summed
//     over the M output channels of an input channel (all M planes sit in the tile; when they do
//     not fit, a MULTI variant loads them in chunks, keeping every strip's sums in registers).
//   * input gradient with a stride > 1 (dw_backward_input_strided): the tile holds the dy rows and
//     columns that reach the dx tile; each dx element sums the taps whose source position is a
//     multiple of the stride (a divisibility test per tap; compile-time taps for stride 2).
//   * weight gradient, deterministic in two stages, no atomics: (1) dw_weight_partial: block
//     (channel k, spatial tile, batch group) loops over its batch elements (pl images at a time,
//     x tile in shared memory, dy read straight from global memory), each thread keeps one
//     accumulator per kernel tap, then the block reduces them in a fixed order (warp butterfly,
//     then warps in index order) into workspace[k][chunk][tap]; (2) dw_weight_reduce: one warp per
//     (k, tap) sums the chunks in a fixed order. The result is bitwise reproducible run to run.
// Variants: KSIZE_SWITCH x STRIDE_SWITCH give compile-time kernels for square 3x3 / 5x5 / 7x7,
// dilation 1, equal strides 1 or 2 (taps and source rows unrolled, weights in registers); any
// other geometry runs the same kernels with run-time loops (the weight gradient then handles the
// taps in chunks of kGenericTaps, each chunk its own blocks).
// Types: float, double, __half, __nv_bfloat16 storage; float accumulation (double for double).
// Assumptions: C-contiguous, non-overlapping arrays; shapes validated by the binding
// (make_conv_params, depthwise); every index that can exceed 2^31 is 64-bit.
// Status: verified under the emulation build (tests/test_depthwise_conv2d_cuda.py) and compiled
// for sm_80 / sm_90 without register spills (float, half, bf16); not yet timed on a GPU, so the
// tile sizes above are reasoned (memory-bound: ~1x DRAM traffic, about 4 shared loads per output
// for 3x3), not tuned.
#include "cuda/depthwise_conv2d_cuda.h"

#include <algorithm>
#include <string>

#include "common/geometry.h"
#include "common/switch.h"
#include "cuda/compat.h"

namespace fastconv {
namespace cuda {
namespace {

constexpr int VP = 4;                  // output rows per thread strip
constexpr int kMaxThreads = 256;       // threads per block (multiple of 32)
constexpr int kMaxWarps = kMaxThreads / 32;
constexpr int kMaxSlots = 256;         // source planes per block (planes x multiplier)
constexpr int kMaxTileCols = 128;      // output columns per tile
constexpr int kMaxStrips = 4;          // strips per thread (tile height up to ty * VP * 4)
constexpr size_t kSmemBudget = 40 * 1024;
constexpr int kGenericTaps = 16;       // weight-gradient taps per block, generic variant
constexpr int kWeightBlocks = 1024;    // weight gradient: about this many stage-1 blocks

// ---------------------------------------------------------------------------------------------
// Tile geometry (host): how a block's threads map onto output planes, rows and columns, and the
// shared-memory tile that feeds them.
// ---------------------------------------------------------------------------------------------
struct TileGeom {
  int txt = 1, ty = 1, pl = 1, strips = 1;  // threads per row, row groups, planes, strips/thread
  int tp = VP;                              // output rows per tile (ty * VP * strips)
  int ih = 1, iw = 1;                       // shared tile rows / columns per source plane
  int tiles_p = 1, tiles_q = 1;             // tiles per plane
  int threads = 32;
  size_t smem = 0;                          // dynamic shared bytes
};

// Source extent of `out` consecutive outputs along one axis: the correlation case (each output
// reads taps o*st + k*dil) or the strided-gather case of the input gradient (dy positions reaching
// `out` consecutive dx positions; one more for the floor of an unaligned start).
inline int64_t src_extent(int64_t out, int64_t st, int64_t k, int64_t dil, bool gather) {
  if (gather) return (out - 1 + (k - 1) * dil) / st + 2;
  return (out - 1) * st + (k - 1) * dil + 1;
}

// planes: output planes available to share a block; nsrc: source planes per output plane;
// wtaps: weights per source plane kept in shared memory (0: none). When no tile fits: *fits =
// false if fits is given, else a ValueError.
TileGeom plan_tiles(const char* op, int64_t planes, int64_t Ho, int64_t Wo, int64_t nsrc,
                    int64_t R, int64_t S, int64_t sh, int64_t sw, int64_t dh, int64_t dw,
                    bool gather, int64_t wtaps, size_t acc_bytes, bool* fits = nullptr) {
  if (fits) *fits = true;
  TileGeom g;
  int64_t tq = ceil_div(Wo, kMaxTileCols);
  int64_t txt = ceil_div(Wo, tq);
  int64_t ty = std::min<int64_t>(std::max<int64_t>(1, kMaxThreads / txt), ceil_div(Ho, VP));
  int64_t pl = std::min<int64_t>(std::max<int64_t>(1, kMaxThreads / (txt * ty)), std::max<int64_t>(planes, 1));
  int64_t strips = std::min<int64_t>(kMaxStrips, std::max<int64_t>(1, ceil_div(Ho, ty * VP)));
  for (;;) {
    const int64_t tp = ty * VP * strips;
    const int64_t ih = src_extent(tp, sh, R, dh, gather), iw = src_extent(txt, sw, S, dw, gather);
    const int64_t bytes = (pl * nsrc * ih * iw + pl * nsrc * wtaps) * int64_t(acc_bytes);
    if (bytes <= int64_t(kSmemBudget) && pl * nsrc <= kMaxSlots) {
      g.txt = int(txt), g.ty = int(ty), g.pl = int(pl), g.strips = int(strips), g.tp = int(tp);
      g.ih = int(ih), g.iw = int(iw), g.smem = size_t(bytes);
      break;
    }
    if (strips > 1) --strips;
    else if (pl > 1) pl = pl / 2;
    else if (ty > 1) ty = (ty + 1) / 2;
    else if (txt > 8 && nsrc <= kMaxSlots) txt = ceil_div(Wo, ++tq);
    else if (fits) {
      *fits = false;
      return g;
    } else
      throw ValueError(str_cat(op, ": the shared-memory tile does not fit (", nsrc,
                               " source planes per output, kernel ", R, " x ", S, ", dilation ",
                               dh, " x ", dw, "); use a smaller multiplier or kernel"));
  }
  g.tiles_q = int(ceil_div(Wo, g.txt));
  g.tiles_p = int(ceil_div(Ho, g.tp));
  g.threads = int(ceil_div(int64_t(g.pl) * g.ty * g.txt, 32) * 32);
  return g;
}

__host__ __device__ inline int64_t floor_div(int64_t a, int64_t b) {  // b > 0
  const int64_t q = a / b;
  return (q * b > a) ? q - 1 : q;
}

// ---------------------------------------------------------------------------------------------
// Device helpers
// ---------------------------------------------------------------------------------------------
// Fills nslots tiles of ih x iw (slot s at tile + s*ih*iw) with rows row0.. and columns col0.. of
// the (H, W) source plane src_plane(s) (a plane index, or -1 for none: zeros); zero outside the
// plane. Lanes run along a row (32 / iw rows per warp at a time for narrow tiles); each lane loads
// kFillRows rows' elements before storing any, so several loads are in flight per lane.
constexpr int kFillRows = 4;
template <class T, class A, class PlaneOf>
__device__ __forceinline__ void fill_tiles(gptr<A> tile, gptr<const T> src, int nslots, int ih,
                                           int iw, int64_t H, int64_t W, int64_t row0,
                                           int64_t col0, const PlaneOf& src_plane) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const int lanes_per_row = iw < 32 ? iw : 32, rows_per_step = 32 / lanes_per_row;
  const int lr = lane / lanes_per_row, lc = lane - lr * lanes_per_row;
  if (lr >= rows_per_step) return;  // spare lanes of a narrow tile (no barrier here)
  const int total = nslots * ih, step = nwarps * rows_per_step;
  for (int row_base = warp * rows_per_step + lr; row_base < total; row_base += kFillRows * step) {
    for (int cc = lc; cc < iw; cc += lanes_per_row) {
      const int64_t v = col0 + cc;
      const bool col_ok = v >= 0 && v < W;
      A val[kFillRows];
#pragma unroll
      for (int u = 0; u < kFillRows; ++u) {
        const int row = row_base + u * step;
        val[u] = A(0);
        if (row < total && col_ok) {
          const int s = row / ih;
          const int64_t plane = src_plane(s), h = row0 + (row - s * ih);
          if (plane >= 0 && h >= 0 && h < H) val[u] = to_acc(src[(plane * H + h) * W + v]);
        }
      }
#pragma unroll
      for (int u = 0; u < kFillRows; ++u) {
        const int row = row_base + u * step;
        if (row < total) tile[int64_t(row) * iw + cc] = val[u];
      }
    }
  }
}

template <class A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// What the correlation kernel computes (forward or stride-1 input gradient).
struct CorrArgs {
  int64_t planes;     // output planes N * Ko
  int64_t Ko, Cs, M;  // output channels, source channels, channel multiplier
  int64_t msrc;       // source planes per output plane (1 forward, M input gradient) ...
  int64_t nsrc;       // ... of which a tile holds nsrc at a time
  bool bwd;           // input gradient: source channel ko*M + m, flipped kernel
  int64_t Hs, Ws, Ho, Wo;
  int64_t sh, sw, dh, dw, off_h, off_w;  // source row = oh*sh - off_h + r*dh
  int64_t R, S;
};

// ---------------------------------------------------------------------------------------------
// Correlation: block = pl output planes x one (tp x txt) tile; thread = one column, strips of VP
// rows; the source tile (all nsrc planes of each output plane) and the weights in shared memory.
// ---------------------------------------------------------------------------------------------
template <class T, int KS, int ST, bool MULTI>
__global__ void __launch_bounds__(kMaxThreads)
dw_correlate(CorrArgs a, TileGeom g, gptr<const T> src, gptr<const T> w, gptr<const T> bias,
             gptr<T> out) {
  using A = acc_t<T>;
  FC_DYN_SHARED(A, smem);
  FC_SHARED(int64_t, splane, [kMaxSlots]);
  const int t = threadIdx.x;
  const int tx = t % g.txt, rest = t / g.txt, tyi = rest % g.ty, pli = rest / g.ty;
  const int64_t oh0 = int64_t(blockIdx.y / g.tiles_q) * g.tp, ow0 = int64_t(blockIdx.y % g.tiles_q) * g.txt;
  const int64_t o0 = int64_t(blockIdx.x) * g.pl;
  const int RS = int(a.R * a.S);
  const int64_t o = o0 + pli;
  const bool active = pli < g.pl && o < a.planes;
  const int64_t ow = ow0 + tx;
  const A b0 = (active && bias) ? to_acc(bias[o % a.Ko]) : A(0);

  // Loads sources m0 .. m0 + nsrc of the block's output planes: slot s = (plane o0 + s / nsrc,
  // source m0 + s % nsrc); its source plane index, weights (flipped for the input gradient), tile.
  auto load = [&](int64_t m0, int nsrc) {
    const int nslots = g.pl * nsrc;
    gptr<A> wsh = smem + int64_t(nslots) * g.ih * g.iw;
    for (int s = t; s < nslots; s += blockDim.x) {
      const int64_t os = o0 + s / nsrc, m = m0 + s % nsrc;
      const int64_t n = os / a.Ko, ko = os % a.Ko;
      splane[s] = os < a.planes ? n * a.Cs + (a.bwd ? ko * a.msrc + m : ko / a.M) : -1;
    }
    for (int i = t; i < nslots * RS; i += blockDim.x) {
      const int s = i / RS, tap = i - s * RS;
      const int64_t os = o0 + s / nsrc, m = m0 + s % nsrc;
      A v = A(0);
      if (os < a.planes) {
        const int64_t ko = os % a.Ko;
        v = a.bwd ? to_acc(w[(ko * a.msrc + m) * RS + (RS - 1 - tap)]) : to_acc(w[ko * RS + tap]);
      }
      wsh[i] = v;
    }
    __syncthreads();
    fill_tiles<T, A>(smem, src, nslots, g.ih, g.iw, a.Hs, a.Ws, oh0 * a.sh - a.off_h,
                     ow0 * a.sw - a.off_w, [&](int s) -> int64_t { return splane[s]; });
    __syncthreads();
  };
  // Adds the loaded sources' contributions to the VP rows of strip k.
  auto strip = [&](int k, int nsrc, A (&acc)[VP]) {
    const int sid = tyi + k * g.ty;
    gptr<const A> wsh = smem + int64_t(g.pl * nsrc) * g.ih * g.iw;
    for (int m = 0; m < nsrc; ++m) {
      const int slot = pli * nsrc + m;
      gptr<const A> ws = wsh + int64_t(slot) * RS;
      if constexpr (KS > 0) {
        gptr<const A> base = smem + (int64_t(slot) * g.ih + sid * VP * ST) * g.iw + tx * ST;
        A wr[KS * KS];
#pragma unroll
        for (int i = 0; i < KS * KS; ++i) wr[i] = ws[i];
#pragma unroll
        for (int rr = 0; rr < (VP - 1) * ST + KS; ++rr) {
          A v[KS];
#pragma unroll
          for (int s = 0; s < KS; ++s) v[s] = base[rr * g.iw + s];
#pragma unroll
          for (int j = 0; j < VP; ++j) {
            const int r = rr - j * ST;
            if (r >= 0 && r < KS) {
#pragma unroll
              for (int s = 0; s < KS; ++s) acc[j] += wr[r * KS + s] * v[s];
            }
          }
        }
      } else {
        gptr<const A> base = smem + int64_t(slot) * g.ih * g.iw + tx * a.sw;
        for (int j = 0; j < VP; ++j) {
          const int64_t row = (int64_t(sid) * VP + j) * a.sh;
          for (int r = 0; r < a.R; ++r)
            for (int s = 0; s < a.S; ++s)
              acc[j] += ws[r * a.S + s] * base[(row + r * a.dh) * g.iw + s * a.dw];
        }
      }
    }
  };
  auto store = [&](int k, const A (&acc)[VP]) {
    const int64_t ohs = oh0 + int64_t(tyi + k * g.ty) * VP;
    gptr<T> op = out + o * a.Ho * a.Wo + ow;
#pragma unroll
    for (int j = 0; j < VP; ++j)
      if (ohs + j < a.Ho) op[(ohs + j) * a.Wo] = from_acc<T>(acc[j]);
  };
  auto strip_live = [&](int k) { return oh0 + int64_t(tyi + k * g.ty) * VP < a.Ho; };

  if constexpr (!MULTI) {
    // every source of the block's planes in one tile: one strip's accumulators at a time
    load(0, int(a.msrc));
    if (!active) return;  // no barrier follows
    for (int k = 0; k < g.strips && strip_live(k); ++k) {
      A acc[VP];
#pragma unroll
      for (int j = 0; j < VP; ++j) acc[j] = b0;
      strip(k, int(a.msrc), acc);
      if (ow < a.Wo) store(k, acc);
    }
  } else {
    // the sources do not fit one tile: nsrc at a time, every strip's accumulators kept
    A acc[kMaxStrips][VP];
#pragma unroll
    for (int k = 0; k < kMaxStrips; ++k)
#pragma unroll
      for (int j = 0; j < VP; ++j) acc[k][j] = b0;
    for (int64_t m0 = 0; m0 < a.msrc; m0 += a.nsrc) {
      if (m0 > 0) __syncthreads();  // the previous sources' tiles and weights are consumed
      const int nsrc = int(std::min(a.nsrc, a.msrc - m0));
      load(m0, nsrc);
      if (!active) continue;
#pragma unroll
      for (int k = 0; k < kMaxStrips; ++k)
        if (k < g.strips && strip_live(k)) strip(k, nsrc, acc[k]);
    }
    if (!active || ow >= a.Wo) return;
#pragma unroll
    for (int k = 0; k < kMaxStrips; ++k)
      if (k < g.strips && strip_live(k)) store(k, acc[k]);
  }
}

// ---------------------------------------------------------------------------------------------
// Input gradient, stride > 1: block = pl dx planes x one (tp x txt) tile; the tile holds, for each
// of the M dy planes of a dx plane, the dy rows / columns that reach it (origin floor((h0 + pt -
// (R-1)*dh) / sh)); thread = one dx column, strips of VP rows, taps filtered by divisibility.
// ---------------------------------------------------------------------------------------------
template <class T, int KS, int ST, bool MULTI>
__global__ void __launch_bounds__(kMaxThreads)
dw_backward_input_strided(Conv2dParams p, TileGeom g, int64_t nchunk, gptr<const T> dy,
                          gptr<const T> w, gptr<T> dx) {
  using A = acc_t<T>;
  FC_DYN_SHARED(A, smem);
  FC_SHARED(int64_t, splane, [kMaxSlots]);
  const int64_t sh = ST > 0 ? ST : p.stride_h, sw = ST > 0 ? ST : p.stride_w;
  const int64_t M = p.K / p.C, planes = p.N * p.C;
  const int t = threadIdx.x;
  const int tx = t % g.txt, rest = t / g.txt, tyi = rest % g.ty, pli = rest / g.ty;
  const int64_t h0 = int64_t(blockIdx.y / g.tiles_q) * g.tp, v0 = int64_t(blockIdx.y % g.tiles_q) * g.txt;
  const int64_t o0 = int64_t(blockIdx.x) * g.pl;
  const int RS = int(p.R * p.S);
  const int64_t row0 = floor_div(h0 + p.pad_t - (p.R - 1) * p.dil_h, sh);
  const int64_t col0 = floor_div(v0 + p.pad_l - (p.S - 1) * p.dil_w, sw);
  const int64_t o = o0 + pli, v = v0 + tx;
  const bool active = pli < g.pl && o < planes && v < p.W;
  // compile-time taps for KS x KS, dilation 1; local (tile) coordinates fit in int
  const int R = KS > 0 ? KS : int(p.R), S = KS > 0 ? KS : int(p.S);
  const int dh = KS > 0 ? 1 : int(p.dil_h), dw = KS > 0 ? 1 : int(p.dil_w);
  const int ish = int(sh), isw = int(sw);
  const int bcol = int(v + p.pad_l - col0 * sw);  // >= (S-1)*dw

  // Loads dy planes m0 .. m0 + nsrc of the block's dx planes (slot s = (dx plane o0 + s / nsrc,
  // m0 + s % nsrc)), their weights and the tile.
  auto load = [&](int64_t m0, int nsrc) {
    const int nslots = g.pl * nsrc;
    gptr<A> wsh = smem + int64_t(nslots) * g.ih * g.iw;
    for (int s = t; s < nslots; s += blockDim.x) {
      const int64_t os = o0 + s / nsrc, m = m0 + s % nsrc;
      splane[s] = os < planes ? (os / p.C) * p.K + (os % p.C) * M + m : -1;
    }
    for (int i = t; i < nslots * RS; i += blockDim.x) {
      const int s = i / RS, tap = i - s * RS;
      const int64_t os = o0 + s / nsrc, m = m0 + s % nsrc;
      wsh[i] = os < planes ? to_acc(w[((os % p.C) * M + m) * RS + tap]) : A(0);
    }
    __syncthreads();
    fill_tiles<T, A>(smem, dy, nslots, g.ih, g.iw, p.P, p.Q, row0, col0,
                     [&](int s) -> int64_t { return splane[s]; });
    __syncthreads();
  };
  // Adds the loaded dy planes' taps to the VP rows of strip k.
  auto strip = [&](int k, int nsrc, A (&acc)[VP]) {
    const int64_t hs = h0 + int64_t(tyi + k * g.ty) * VP;
    gptr<const A> wsh = smem + int64_t(g.pl * nsrc) * g.ih * g.iw;
    for (int m = 0; m < nsrc; ++m) {
      const int slot = pli * nsrc + m;
      gptr<const A> ws = wsh + int64_t(slot) * RS;
      gptr<const A> base = smem + int64_t(slot) * g.ih * g.iw;
#pragma unroll
      for (int j = 0; j < VP; ++j) {
        const int brow = int(hs + j + p.pad_t - row0 * sh);  // >= (R-1)*dh
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const int ar = brow - r * dh;
          if (ar % ish != 0) continue;
          gptr<const A> trow = base + (ar / ish) * g.iw;
#pragma unroll
          for (int s = 0; s < S; ++s) {
            const int ac = bcol - s * dw;
            if (ac % isw != 0) continue;
            acc[j] += ws[r * S + s] * trow[ac / isw];
          }
        }
      }
    }
  };
  auto store = [&](int k, const A (&acc)[VP]) {
    const int64_t hs = h0 + int64_t(tyi + k * g.ty) * VP;
    gptr<T> op = dx + o * p.H * p.W + v;
#pragma unroll
    for (int j = 0; j < VP; ++j)
      if (hs + j < p.H) op[(hs + j) * p.W] = from_acc<T>(acc[j]);
  };
  auto strip_live = [&](int k) { return h0 + int64_t(tyi + k * g.ty) * VP < p.H; };

  if constexpr (!MULTI) {
    load(0, int(M));
    if (!active) return;  // no barrier follows
    for (int k = 0; k < g.strips && strip_live(k); ++k) {
      A acc[VP];
#pragma unroll
      for (int j = 0; j < VP; ++j) acc[j] = A(0);
      strip(k, int(M), acc);
      store(k, acc);
    }
  } else {
    A acc[kMaxStrips][VP];
#pragma unroll
    for (int k = 0; k < kMaxStrips; ++k)
#pragma unroll
      for (int j = 0; j < VP; ++j) acc[k][j] = A(0);
    for (int64_t m0 = 0; m0 < M; m0 += nchunk) {
      if (m0 > 0) __syncthreads();  // the previous dy planes' tiles and weights are consumed
      const int nsrc = int(std::min(nchunk, M - m0));
      load(m0, nsrc);
      if (!active) continue;
#pragma unroll
      for (int k = 0; k < kMaxStrips; ++k)
        if (k < g.strips && strip_live(k)) strip(k, nsrc, acc[k]);
    }
    if (!active) return;
#pragma unroll
    for (int k = 0; k < kMaxStrips; ++k)
      if (k < g.strips && strip_live(k)) store(k, acc[k]);
  }
}

// ---------------------------------------------------------------------------------------------
// Weight gradient, stage 1: block = (channel k, spatial tile, batch group, tap chunk); it loops
// over its batch group pl images at a time (x tiles in shared memory, dy from global memory);
// thread = one output column, strips of VP rows, one accumulator per tap of its chunk; then a
// fixed-order block reduction writes ws[(k * nchunk + chunk) * RS + tap].
// ---------------------------------------------------------------------------------------------
struct WeightPlan {
  TileGeom g;
  int64_t ngroups = 1, nper = 1;  // batch groups, images per group (a multiple of pl)
  int64_t nchunk = 1;             // partial sums per (k, tap): tiles * ngroups
  int64_t tchunks = 1;            // tap chunks (generic variant)
};

template <class T, int KS, int ST>
__global__ void __launch_bounds__(kMaxThreads, KS >= 5 ? 2 : 3)
dw_weight_partial(Conv2dParams p, TileGeom g, int64_t ngroups, int64_t nper, int64_t nchunk,
                  int64_t tchunks, gptr<const T> dy, gptr<const T> x, gptr<acc_t<T>> ws) {
  using A = acc_t<T>;
  constexpr int NT = KS > 0 ? KS * KS : kGenericTaps;
  FC_DYN_SHARED(A, smem);
  FC_SHARED(A, red, [kMaxWarps][NT]);
  const int64_t sh = ST > 0 ? ST : p.stride_h, sw = ST > 0 ? ST : p.stride_w;
  const int64_t M = p.K / p.C, RS = p.R * p.S;
  const int t = threadIdx.x;
  const int tx = t % g.txt, rest = t / g.txt, tyi = rest % g.ty, pli = rest / g.ty;
  int64_t b = blockIdx.x;
  const int64_t tc = b % tchunks;
  b /= tchunks;
  const int64_t chunk = b % nchunk, k = b / nchunk;
  const int64_t tile = chunk / ngroups, grp = chunk % ngroups;
  const int64_t oh0 = (tile / g.tiles_q) * g.tp, ow0 = (tile % g.tiles_q) * g.txt;
  const int64_t c = k / M, t0 = tc * NT;
  const int64_t ow = ow0 + tx;
  const bool active = pli < g.pl && ow < p.Q;

  A acc[NT];
#pragma unroll
  for (int i = 0; i < NT; ++i) acc[i] = A(0);
  for (int64_t nb = grp * nper; nb < std::min(p.N, (grp + 1) * nper); nb += g.pl) {
    if (nb > grp * nper) __syncthreads();  // previous images' tiles are consumed
    fill_tiles<T, A>(smem, x, g.pl, g.ih, g.iw, p.H, p.W, oh0 * sh - p.pad_t, ow0 * sw - p.pad_l,
                     [&](int s) -> int64_t { return nb + s < p.N ? (nb + s) * p.C + c : -1; });
    __syncthreads();
    const int64_t n = nb + pli;
    if (!active || n >= p.N) continue;
    gptr<const T> dyp = dy + (n * p.K + k) * p.P * p.Q + ow;
    gptr<const A> tl = smem + int64_t(pli) * g.ih * g.iw;
    for (int ks = 0; ks < g.strips; ++ks) {
      const int sid = tyi + ks * g.ty;
      const int64_t ohs = oh0 + int64_t(sid) * VP;
      if (ohs >= p.P) break;
      if (KS > 0 && ohs + VP <= p.P) {
        // whole strip inside the output: every source row loaded once, unrolled taps
        constexpr int KK = KS > 0 ? KS : 1, SS = ST > 0 ? ST : 1;
        A d[VP];
#pragma unroll
        for (int j = 0; j < VP; ++j) d[j] = to_acc(dyp[(ohs + j) * p.Q]);
        gptr<const A> base = tl + int64_t(sid) * VP * SS * g.iw + tx * SS;
#pragma unroll
        for (int rr = 0; rr < (VP - 1) * SS + KK; ++rr) {
          A v[KK];
#pragma unroll
          for (int s = 0; s < KK; ++s) v[s] = base[rr * g.iw + s];
#pragma unroll
          for (int j = 0; j < VP; ++j) {
            const int r = rr - j * SS;
            if (r >= 0 && r < KK) {
#pragma unroll
              for (int s = 0; s < KK; ++s) acc[r * KK + s] += d[j] * v[s];
            }
          }
        }
      } else {
        for (int j = 0; j < VP && ohs + j < p.P; ++j) {
          const A d = to_acc(dyp[(ohs + j) * p.Q]);
          gptr<const A> base = tl + (int64_t(sid) * VP + j) * sh * g.iw + tx * sw;
#pragma unroll
          for (int i = 0; i < NT; ++i) {
            const int64_t tap = t0 + i;
            if (tap < RS) {
              const int64_t r = tap / p.S, s = tap - r * p.S;
              acc[i] += d * base[r * p.dil_h * g.iw + s * p.dil_w];
            }
          }
        }
      }
    }
  }

  // fixed-order block reduction: butterfly within warps, then warps in index order
  const int lane = t & 31, warp = t >> 5, nwarps = blockDim.x >> 5;
#pragma unroll
  for (int i = 0; i < NT; ++i) {
    const A v = warp_sum(acc[i]);
    if (lane == 0) red[warp][i] = v;
  }
  __syncthreads();
  for (int i = t; i < NT; i += blockDim.x) {
    if (t0 + i >= RS) continue;
    A s = red[0][i];
    for (int wi = 1; wi < nwarps; ++wi) s += red[wi][i];
    ws[(k * nchunk + chunk) * RS + t0 + i] = s;
  }
}

// Weight gradient, stage 2: one warp per (k, tap) sums its nchunk partials in a fixed order.
template <class T>
__global__ void __launch_bounds__(kMaxThreads)
dw_weight_reduce(int64_t KRS, int64_t RS, int64_t nchunk, gptr<const acc_t<T>> ws, gptr<T> dw) {
  using A = acc_t<T>;
  const int lane = threadIdx.x & 31;
  const int64_t i = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (i >= KRS) return;  // whole warps leave together
  const int64_t k = i / RS, tap = i - k * RS;
  A s = A(0);
  for (int64_t ch = lane; ch < nchunk; ch += 32) s += ws[(k * nchunk + ch) * RS + tap];
  s = warp_sum(s);
  if (lane == 0) dw[i] = from_acc<T>(s);
}

// ---------------------------------------------------------------------------------------------
// Host side: variant selection, plans, launchers.
// ---------------------------------------------------------------------------------------------
// f(KS, ST) with compile-time constants: square KS x KS, dilation 1, equal strides ST (1 or 2);
// (0, 0) for every other geometry.
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

inline size_t acc_bytes(DType dt) { return dt == DType::f64 ? 8 : 4; }

void check_grid(const char* op, const Conv2dParams& p, int64_t tiles) {
  if (tiles > 65535)
    throw ValueError(str_cat(op, ": output plane too large for the CUDA kernel (", tiles,
                             " tiles > 65535) for ", describe(p)));
}

template <class T>
void run_correlate(const char* op, const Conv2dParams& p, const TileGeom& g, const CorrArgs& a,
                   const T* src, const T* w, const T* bias, T* out, int64_t src_count, int64_t K,
                   bool st1, cudaStream_t stream) {
  check_grid(op, p, int64_t(g.tiles_p) * g.tiles_q);
  const dim3 grid(unsigned(ceil_div(a.planes, g.pl)), unsigned(g.tiles_p * g.tiles_q));
  auto gsrc = global(src, src_count);
  auto gw = global(w, K * a.R * a.S);
  auto gb = bias ? global(bias, K) : gptr<const T>(nullptr);
  auto gout = global(out, a.planes * a.Ho * a.Wo);
  Conv2dParams q = p;
  if (st1) q.stride_h = q.stride_w = 1;  // variant selection for the stride-1 correlation
  if (a.nsrc < a.msrc) {  // sources in chunks: the run-time variant keeps all strips' sums
    auto k = dw_correlate<T, 0, 0, true>;
    FC_LAUNCH(k, grid, g.threads, g.smem, stream, a, g, gsrc, gw, gb, gout);
  } else {
    select_variant(q, [&](auto ks, auto st) {
      auto k = dw_correlate<T, decltype(ks)::value, decltype(st)::value, false>;
      FC_LAUNCH(k, grid, g.threads, g.smem, stream, a, g, gsrc, gw, gb, gout);
    });
  }
  check_launch(op, [&] { return describe(p); });
}

WeightPlan plan_weight(const Conv2dParams& p, size_t abytes) {
  WeightPlan wp;
  const bool fast = p.R == p.S && p.dil_h == 1 && p.dil_w == 1 && p.stride_h == p.stride_w &&
                    (p.R == 3 || p.R == 5 || p.R == 7) && (p.stride_h == 1 || p.stride_h == 2);
  wp.tchunks = fast ? 1 : ceil_div(p.R * p.S, kGenericTaps);
  wp.g = plan_tiles("depthwise_conv2d_backward_weight", p.N, p.P, p.Q, 1, p.R, p.S, p.stride_h,
                    p.stride_w, p.dil_h, p.dil_w, false, 0, abytes);
  const int64_t tiles = int64_t(wp.g.tiles_p) * wp.g.tiles_q;
  const int64_t nsteps = std::max<int64_t>(1, ceil_div(p.N, wp.g.pl));  // pl images per step
  const int64_t want = ceil_div(kWeightBlocks, std::max<int64_t>(1, p.K * tiles * wp.tchunks));
  const int64_t steps = ceil_div(nsteps, std::min(nsteps, want));     // steps per group
  wp.nper = steps * wp.g.pl;
  wp.ngroups = ceil_div(nsteps, steps);
  wp.nchunk = tiles * wp.ngroups;
  return wp;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Launchers
// ---------------------------------------------------------------------------------------------
void depthwise_conv2d_forward(const Conv2dParams& p, DType dt, const void* x, const void* w,
                              const void* bias, void* y, cudaStream_t stream) {
  if (p.N == 0 || p.K == 0 || p.P == 0 || p.Q == 0) return;
  dtype_switch(dt, [&](auto tag) {
    using T = decltype(tag);
    CorrArgs a{};
    a.planes = p.N * p.K, a.Ko = p.K, a.Cs = p.C, a.M = p.K / p.C, a.msrc = 1, a.nsrc = 1;
    a.bwd = false;
    a.Hs = p.H, a.Ws = p.W, a.Ho = p.P, a.Wo = p.Q;
    a.sh = p.stride_h, a.sw = p.stride_w, a.dh = p.dil_h, a.dw = p.dil_w;
    a.off_h = p.pad_t, a.off_w = p.pad_l, a.R = p.R, a.S = p.S;
    const TileGeom g = plan_tiles("depthwise_conv2d_forward", a.planes, a.Ho, a.Wo, 1, a.R, a.S,
                                  a.sh, a.sw, a.dh, a.dw, false, a.R * a.S, sizeof(acc_t<T>));
    run_correlate<T>("depthwise_conv2d_forward", p, g, a, static_cast<const T*>(x),
                     static_cast<const T*>(w), static_cast<const T*>(bias), static_cast<T*>(y),
                     p.N * p.C * p.H * p.W, p.K, false, stream);
  });
}

void depthwise_conv2d_backward_input(const Conv2dParams& p, DType dt, const void* dy,
                                     const void* w, void* dx, cudaStream_t stream) {
  const char* op = "depthwise_conv2d_backward_input";
  if (p.N == 0 || p.C == 0 || p.H == 0 || p.W == 0) return;
  dtype_switch(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* dyp = static_cast<const T*>(dy);
    const T* wp = static_cast<const T*>(w);
    T* dxp = static_cast<T*>(dx);
    const int64_t M = p.K / p.C;
    const bool st1 = p.stride_h == 1 && p.stride_w == 1;
    // all M dy planes of a dx plane in one tile when they fit, else chunks of the multiplier
    // that the kernel loads one after another (float accumulators throughout)
    auto plan = [&](int64_t nsrc, bool* fits) {
      return plan_tiles(op, p.N * p.C, p.H, p.W, nsrc, p.R, p.S, st1 ? 1 : p.stride_h,
                        st1 ? 1 : p.stride_w, p.dil_h, p.dil_w, !st1, p.R * p.S,
                        sizeof(acc_t<T>), fits);
    };
    int64_t mchunk = M;
    bool fits = false;
    TileGeom g = plan(mchunk, &fits);
    while (!fits && mchunk > 1) g = plan(mchunk = ceil_div(mchunk, 2), &fits);
    if (!fits) g = plan(1, nullptr);  // throws, naming the geometry
    check_grid(op, p, int64_t(g.tiles_p) * g.tiles_q);
    if (st1) {
      CorrArgs a{};
      a.planes = p.N * p.C, a.Ko = p.C, a.Cs = p.K, a.M = M, a.msrc = M, a.nsrc = mchunk;
      a.bwd = true;
      a.Hs = p.P, a.Ws = p.Q, a.Ho = p.H, a.Wo = p.W;
      a.sh = 1, a.sw = 1, a.dh = p.dil_h, a.dw = p.dil_w;
      a.off_h = (p.R - 1) * p.dil_h - p.pad_t, a.off_w = (p.S - 1) * p.dil_w - p.pad_l;
      a.R = p.R, a.S = p.S;
      run_correlate<T>(op, p, g, a, dyp, wp, nullptr, dxp, p.N * p.K * p.P * p.Q, p.K, true,
                       stream);
      return;
    }
    const dim3 grid(unsigned(ceil_div(p.N * p.C, g.pl)), unsigned(g.tiles_p * g.tiles_q));
    auto gdy = global(dyp, p.N * p.K * p.P * p.Q);
    auto gw = global(wp, p.K * p.R * p.S);
    auto gdx = global(dxp, p.N * p.C * p.H * p.W);
    if (mchunk < M) {  // dy planes in chunks: the run-time variant keeps all strips' sums
      auto k = dw_backward_input_strided<T, 0, 0, true>;
      FC_LAUNCH(k, grid, g.threads, g.smem, stream, p, g, mchunk, gdy, gw, gdx);
    } else {
      select_variant(p, [&](auto ks, auto st) {
        constexpr int KS = decltype(ks)::value, ST = decltype(st)::value == 2 ? 2 : 0;
        auto k = dw_backward_input_strided<T, ST == 2 ? KS : 0, ST, false>;
        FC_LAUNCH(k, grid, g.threads, g.smem, stream, p, g, mchunk, gdy, gw, gdx);
      });
    }
    check_launch(op, [&] { return describe(p); });
  });
}

int64_t depthwise_conv2d_backward_weight_workspace_bytes(const Conv2dParams& p, DType dt) {
  if (p.N == 0 || p.P == 0 || p.Q == 0 || p.K == 0) return 0;
  const WeightPlan wp = plan_weight(p, acc_bytes(dt));
  return p.K * wp.nchunk * p.R * p.S * int64_t(acc_bytes(dt));
}

void depthwise_conv2d_backward_weight(const Conv2dParams& p, DType dt, const void* dy,
                                      const void* x, void* dw, void* workspace,
                                      int64_t workspace_bytes, cudaStream_t stream) {
  const char* op = "depthwise_conv2d_backward_weight";
  if (p.K == 0) return;
  const int64_t need = depthwise_conv2d_backward_weight_workspace_bytes(p, dt);
  if (workspace_bytes < need)
    throw ValueError(str_cat(op, ": workspace of ", workspace_bytes, " bytes, need ", need,
                             " (depthwise_conv2d_backward_weight_workspace_bytes) for ",
                             describe(p)));
  dtype_switch(dt, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const int64_t RS = p.R * p.S;
    int64_t nchunk = 0;
    auto gws = global(static_cast<A*>(workspace), need / int64_t(sizeof(A)));
    if (need > 0) {
      const WeightPlan wp = plan_weight(p, sizeof(A));
      nchunk = wp.nchunk;
      const int64_t blocks = p.K * wp.nchunk * wp.tchunks;
      if (blocks > 0x7fffffffLL) throw ValueError(str_cat(op, ": too many blocks for ", describe(p)));
      auto gdy = global(static_cast<const T*>(dy), p.N * p.K * p.P * p.Q);
      auto gx = global(static_cast<const T*>(x), p.N * p.C * p.H * p.W);
      select_variant(p, [&](auto ks, auto st) {
        auto k = dw_weight_partial<T, decltype(ks)::value, decltype(st)::value>;
        FC_LAUNCH(k, dim3(unsigned(blocks)), wp.g.threads, wp.g.smem, stream, p, wp.g, wp.ngroups,
                  wp.nper, wp.nchunk, wp.tchunks, gdy, gx, gws);
      });
      check_launch(op, [&] { return describe(p); });
    }
    const int64_t KRS = p.K * RS, per_block = kMaxThreads / 32;
    auto k2 = dw_weight_reduce<T>;
    FC_LAUNCH(k2, dim3(unsigned(ceil_div(KRS, per_block))), kMaxThreads, 0, stream, KRS, RS, nchunk,
              gptr<const A>(gws), global(static_cast<T*>(dw), KRS));
    check_launch(op, [&] { return describe(p); });
  });
}

}  // namespace cuda
}  // namespace fastconv
