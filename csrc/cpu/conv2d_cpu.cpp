// Dense and grouped 2-D convolution on the CPU (float32 / float64, NCHW, weights (K, C/groups, R, S)):
// forward, input gradient, weight gradient, bias gradient.
//
// Algorithm: every direction is a GEMM per group on the BLIS-style machinery of gemm_cpu.h
// (MR x NR register-blocked micro-kernel, KC/MC/NC cache blocking), with IMPLICIT im2col: the
// im2col matrix is never materialised.
//   forward      Y_g[Kg x (N*P*Q)] = W_g[Kg x Cg*R*S] * col(X_g)[Cg*R*S x (N*P*Q)]  (+bias in the store)
//     packed     B panels packed from NCHW with im2col indexing, per run of pixels of one output
//                row. Columns run over the whole batch (n, p, q), so 7x7 images still give full
//                tiles and batch 1..8 splits evenly. 1x1 / stride 1 / unpadded: each image is one
//                flat row, B packing is a panel copy.
//     direct     few rows per group (Kg <= 96) and little waste: no B packing at all. A
//                zero-padded copy of X; columns are virtual pixels p*Wp + q, B row (c, r, s) is
//                the contiguous row xp[c][v + r*dh*Wp + s*dw], read in place by the micro-kernel
//                through an offset table (ukernel<T, true>). The Wp - Q phantom columns per row
//                are computed and dropped (use_direct weighs that waste against the packing).
//                Stride > 1: the copy holds the sh x sw phases of the padded input (DirectGeom),
//                each a stride-1 convolution, so rows stay contiguous (the stem's 7x7/2 layer).
//   input grad   stride 1: the forward convolution (either path) of dY with the transposed,
//                  flipped weights W'[c][k][R-1-r][S-1-s], padding (R-1)*dil - pad: no scatter.
//                stride > 1, two algorithms (use_phase_dgrad picks one by the shape, or the
//                  switch strided_dgrad forces one):
//                  phases: the input pixels split into sh x sw stride phases; each phase is a
//                  stride-1 forward convolution of dY with the flipped sub-kernel of the taps
//                  that reach it (2x2, 2x1, 1x2, 1x1 for 3x3/2), one GEMM per (phase, group)
//                  with rows = input channels; tasks write their C block straight into dx with
//                  strides sh, sw; every dx pixel written once, phases without taps zeroed.
//                  col2im: dcol = W_g^T[Cg*R*S x Kg] * dY_g[Kg x PQ] by blocks of PQ columns,
//                  then col2im scatter-add into dx; tasks are (image, group, block of channels),
//                  so every task owns the dx planes it writes (no atomics, no reduction).
//   weight grad  dW_g[Kg x Cg*R*S] = dY_g[Kg x (N*P*Q)] * col(X_g)^T: the reduction runs over the
//                  pixels of the whole batch; B panels gathered from X per pixel run (stride 1:
//                  copied, then transposed into the panel). The reduction may be cut into chunks
//                  of whole kc blocks, each into its own partial dW, added in a fixed order
//                  afterwards (wgrad_plan weighs the extra tasks against the partial sums).
//                stride 1 with few rows or columns per group (use_dot_bw): blocked dot products
//                  (4 kd rows x 6 (AVX-512) or 3 channels of vector accumulators) on the
//                  zero-padded layout, no packing, the reduction in 2 KiB pieces; tasks split
//                  kd and k first, then the reduction (dot_plan), same fixed-order partial sums.
//                Deterministic: the split depends only on the shape and the thread count.
//   bias grad    plain vector sums over N, P, Q.
// A (weights, or dY for the weight gradient) is packed once per call into MR-row panels, in
// parallel; each task packs its own B block (kc x nc) into per-thread scratch. Scratch lives in a
// grow-only thread_local buffer of the calling thread (no page faults on repeated calls).
// Threads: tasks are (group [x image], row block, column block) of the GEMM, taken from an atomic
// counter, so batch-1 layers use both cores. gemm::make_split picks the blocks with a small cost
// model (busiest thread's share of tiles, plus B packing, which every row block repeats), so
// layers with few columns split columns down to single NR panels before they split rows: with
// two threads the old fixed "4 tasks per thread" rule re-packed B two to four times (7x7 forward,
// 3x3 weight gradients).
//
// Variants: compiled for baseline (SSE2), avx2 (+FMA) and avx512 from the same templates; only
// the register block differs (gemm_cpu.h, float: 4x8 / 4x24 / 8x48). Assumptions: contiguous,
// non-overlapping arrays (the binding checks); any padding (asymmetric, negative as in the
// flipped input-gradient convolution, larger than the kernel), stride, dilation and groups;
// outputs fully overwritten; N == 0 writes nothing except zeros for the weight and bias gradients.
//
// Measured (2-core AMD EPYC, AVX2, float32, the machine shared with other jobs, so per-core CPU
// time with 1 thread is the stable figure; ratio = ours / best of torch NCHW and channels_last):
//   micro-kernel: 6x16 vs 4x24 about equal on 3x3 layers; 4x24 kept (M = 8, 64, 128 ... divide by 4).
//   3x3 layers 62-72 GFLOP/s per core (torch 1 thread: 80-90); 1x1 60-80.
//   direct path: vgg_conv1_2 fwd 64 -> 53 ms, grouped_32x4d fwd 6.8 -> 2.2 ms (1 thread);
//   dot-product weight gradient: grouped 7.7 -> 2.6 ms, r50_res2_1x1 1.11 -> 0.78 ms.
//   Geometric-mean ratio over the 12 benchmark layers, 1 thread: fwd ~1.1-1.2, input grad ~1.05,
//   weight grad ~1.05. Weakest: r50_conv1_7x7s2 fwd / weight grad (~1.5: C = 3, a 7x7 stride-2
//   gather feeding only 64 rows) and grouped weight grad (~1.5).
//   2 threads (AVX-512 Zen 4, best of repeated calls): the make_split cost model took the weight
//   gradients of r50_conv1_7x7s2 3.5 -> 2.1 ms, r50_res2_3x3 3.8 -> 2.9 ms, vgg_conv1_2 31 -> 24 ms
//   (no more B re-packing per row block) and r50_res5_3x3 forward / input grad 15.3 -> 13.7 ms.
//   Weight gradient, reduction splits + dot-path blocking + transposed B packing (2-core Intel
//   Xeon, AVX-512, `fastconv bench --quick --ops conv`, bwd_weight ms before -> after, 2 threads):
//   r50_res2_1x1 0.82 -> 0.56, r50_res2_1x1_up 2.8 -> 1.7, r50_res2_3x3 3.5 -> 2.6, r50_res3_1x1_down
//   4.6 -> 3.1, vgg_conv1_2 22.6 -> 20, grouped_32x4d 2.1 -> 1.8; geomean ratio 1.43 -> 1.20-1.22
//   (1 thread: 1.50 -> 1.32). r50_conv1_7x7s2 2.1 -> 1.85 at 2 threads (4 reduction chunks), ~2.1
//   at 1 thread: its stride-2 gather for C = 3 is now the largest cost.
//   avx2 path on a 2-core AMD EPYC (Zen 3), float32, 1 thread, min CPU time over repeated calls:
//   B packing row by row across a block's panels instead of panel by panel (perf share of the
//   copy in r50_res2_1x1 fwd 21% -> 13%; the input is read along its rows, not one channel
//   plane per step); strided forward on the direct path: r50_conv1_7x7s2 fwd 3.75 -> 2.77 ms.
//   The micro-kernel loop runs at ~90 GFLOP/s per core (80% of r50_res2_1x1_up fwd's samples):
//   the 1x1 layers are within ~10% of torch at 1 thread, and what remains is mostly that loop.
//   Reading 1x1 inputs in place (the direct path) measured 10-40% slower than packed panels.
//   Packing strided layers with Kg > 96 (r50_res4_3x3s2) from the phase copy too replaced its
//   scalar gathers (~10% of samples) by copies of 14-pixel runs plus the copy (~8%): no
//   measurable change, not kept; that layer is ~72% micro-kernel loop, torch's GEMM ~15% faster.
//   At 16 threads the tasks per call go from 2 to 88-120 (r50_res2_1x1, _up) and conv1's weight
//   gradient runs as 61 reduction chunks (2 kc blocks each) of whole 64 x 147 GEMMs (make_split
//   alone could only cut its 4 column panels and 8 row panels, re-packing B for every row block).
//   Strided input gradient, phases vs col2im (avx2 EPYC, float32, r50_res4_3x3s2 bwd_input, perf
//   at 1 thread): col2im spent ~12% of the call in its scatter-add and ~2% in the memset of dx;
//   the phases spend ~12% packing im2col(dY) (the forward's cost for the same layer), ~7% writing
//   dx with stride 2 and ~2% packing W (5% when each phase packed from w on its own, 9% for the dx
//   write when it went run by run across the channel planes); 1 thread 25.6-26.5 -> 24.1-24.6 ms.
#include "cpu/conv2d_cpu.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/parallel.h"
#include "cpu/gemm_cpu.h"

FC_ISA_BEGIN
namespace {

using gemm::ceil_div;
using gemm::round_up;
using gemm::Blk;

// ---------------------------------------------------------------------------------------------
// im2col geometry of one group's input as seen by the GEMM: pixel j of the batch -> (img, p, q),
// reduction index kd -> (c, r, s); value x[img][c][p*sh - pt + r*dh][q*sw - pl + s*dw] or 0.
// ---------------------------------------------------------------------------------------------
template <class T>
struct Im2col {
  const T* x;          // first channel of the group in image 0
  int64_t img_stride;  // elements per image
  int64_t H, W, HW;
  int64_t P, Q, PQ;
  int64_t S, RS;
  int64_t sh, sw, dh, dw, pt, pl;
};

template <class T>
Im2col<T> make_im2col(const Conv2dParams& p, const T* x_group) {
  Im2col<T> g;
  g.x = x_group;
  g.img_stride = p.C * p.H * p.W;
  g.H = p.H; g.W = p.W; g.HW = p.H * p.W;
  g.P = p.P; g.Q = p.Q; g.PQ = p.P * p.Q;
  g.S = p.S; g.RS = p.R * p.S;
  g.sh = p.stride_h; g.sw = p.stride_w; g.dh = p.dil_h; g.dw = p.dil_w;
  g.pt = p.pad_t; g.pl = p.pad_l;
  if (p.R == 1 && p.S == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_t == 0 &&
      p.pad_l == 0 && p.P == p.H && p.Q == p.W) {
    // 1x1, stride 1, unpadded: each image is one long row of H*W pixels.
    g.H = 1; g.W = g.HW; g.P = 1; g.Q = g.PQ;
  }
  return g;
}

// A run of consecutive pixels within one output row of one image.
template <class T>
struct Seg {
  int64_t off, len;  // position in the run of pixels being packed, length
  const T* img;      // image base (group's first channel)
  int64_t hb, wb;    // p*sh - pt, q*sw - pl of its first pixel
};

template <class T>
int make_segments(const Im2col<T>& g, int64_t j0, int64_t n, Seg<T>* out) {
  int64_t img = j0 / g.PQ, pq = j0 - img * g.PQ;
  int64_t p = pq / g.Q, q = pq - p * g.Q;
  int cnt = 0;
  for (int64_t off = 0; off < n;) {
    int64_t len = g.Q - q < n - off ? g.Q - q : n - off;
    out[cnt++] = {off, len, g.x + img * g.img_stride, p * g.sh - g.pt, q * g.sw - g.pl};
    off += len;
    q += len;
    if (q == g.Q) {
      q = 0;
      if (++p == g.P) { p = 0; ++img; }
    }
  }
  return cnt;
}

// Valid part [lo, hi) of a run of len pixels starting at input column iw0 with stride sw.
FC_GEMM_INLINE void valid_range(int64_t iw0, int64_t sw, int64_t W, int64_t len, int64_t& lo,
                                int64_t& hi) {
  if (sw == 1) {  // no divisions on the common path
    lo = iw0 >= 0 ? 0 : -iw0;
    hi = W - iw0;
  } else {
    lo = iw0 >= 0 ? 0 : ceil_div(-iw0, sw);
    hi = iw0 > W - 1 ? 0 : (W - 1 - iw0) / sw + 1;
  }
  if (hi > len) hi = len;
  if (lo > len) lo = len;
  if (hi < lo) hi = lo;
}

// d[t] = row[iw0 + t*sw] for t < len (0 where out of [0, W)); row == nullptr: all zero.
template <class T>
FC_GEMM_INLINE void gather_run(T* d, const T* row, int64_t iw0, int64_t sw, int64_t W, int64_t len) {
  using V = Vec<T>;
  constexpr int L = V::size, NR = Blk<T>::NR;
  if (!row) {
    if (len == NR) {
      FC_GEMM_UNROLL for (int j = 0; j < NR / L; ++j) V::zero().store(d + j * L);
    } else {
      for (int64_t t = 0; t < len; ++t) d[t] = T(0);
    }
    return;
  }
  if (sw == 1 && iw0 >= 0 && iw0 + len <= W) {  // interior run: straight copy
    const T* s = row + iw0;
    if (len == NR) {
      FC_GEMM_UNROLL for (int j = 0; j < NR / L; ++j) V::load(s + j * L).store(d + j * L);
    } else {
      for (int64_t t = 0; t < len; ++t) d[t] = s[t];
    }
    return;
  }
  if (iw0 >= 0 && iw0 + (len - 1) * sw < W) {  // interior strided run (no divisions)
    const T* s = row + iw0;
    for (int64_t t = 0; t < len; ++t) d[t] = s[t * sw];
    return;
  }
  int64_t lo, hi;
  valid_range(iw0, sw, W, len, lo, hi);
  for (int64_t t = 0; t < lo; ++t) d[t] = T(0);
  if (sw == 1) {
    const T* s = row + iw0;
    for (int64_t t = lo; t < hi; ++t) d[t] = s[t];
  } else {
    for (int64_t t = lo; t < hi; ++t) d[t] = row[iw0 + t * sw];
  }
  for (int64_t t = hi; t < len; ++t) d[t] = T(0);
}

// B packer, columns = pixels (forward, stride-1 input gradient, dY for col2im):
// Bp[panel][kk][NR] = col(X)[kc0 + kk][n0 + panel*NR + t].
// Row kk of the whole block is gathered before row kk + 1 (all panels of one (c, r, s) in turn),
// so the input is read along its rows, a stream the prefetchers follow: panel by panel, every kk
// step jumped to another channel plane (a new page each time, so a cache miss per 96-byte run;
// 20% of the 1x1 forward's time on the avx2 path, r50_res2_1x1).
template <class T>
struct PackPixelCols {
  Im2col<T> g;
  static constexpr int kPanels = int((Blk<T>::NCMAX + Blk<T>::NR - 1) / Blk<T>::NR) + 1;
  void operator()(int64_t kc0, int64_t kcl, int64_t n0, int64_t ncols, T* Bp) const {
    constexpr int NR = Blk<T>::NR;
    for (int64_t done = 0; done < ncols; done += int64_t(kPanels) * NR) {
      const int64_t n = ncols - done < int64_t(kPanels) * NR ? ncols - done : int64_t(kPanels) * NR;
      pack_panels(kc0, kcl, n0 + done, n, Bp + done * kcl);
    }
  }
  // At most kPanels panels (n columns from column n0) into Bp.
  void pack_panels(int64_t kc0, int64_t kcl, int64_t n0, int64_t n, T* Bp) const {
    constexpr int NR = Blk<T>::NR;
    Seg<T> segs[kPanels * NR];
    int first[kPanels + 1];  // segments of panel jp: [first[jp], first[jp + 1])
    const int npan = static_cast<int>(ceil_div(n, NR));
    first[0] = 0;
    for (int jp = 0; jp < npan; ++jp) {
      const int64_t nr = n - jp * NR < NR ? n - jp * NR : NR;
      first[jp + 1] = first[jp] + make_segments(g, n0 + jp * NR, nr, segs + first[jp]);
    }
    const int64_t tail = n - (npan - 1) * NR;  // columns of the last panel
    int64_t c = kc0 / g.RS, rs = kc0 - c * g.RS;
    int64_t r = rs / g.S, s = rs - r * g.S;
    // 1x1 (one tap per channel), unit stride, planes of 1 KiB or more: the pixels of channel
    // c + kAhead are requested while channel c is copied. Each channel is a separate run of up
    // to kPanels * NR floats a plane apart, which the hardware prefetcher picks up only after its
    // first misses. Measured at 1 thread, inputs rotating through 64 MB (cold, as in a model):
    // r50_res3_1x1_down forward 5.85 -> 5.26 ms, r50_res2_1x1 0.86 -> 0.79; 7x7 planes
    // (r50_res5_1x1_up, contiguous enough for the hardware) got 6% slower with it, hence the
    // plane-size condition.
    constexpr int64_t kAhead = 2;
    const bool ahead = g.RS == 1 && g.sw == 1 && g.HW * int64_t(sizeof(T)) >= 1024;
    for (int64_t kk = 0; kk < kcl; ++kk) {
      const int64_t choff = c * g.HW;
      if (ahead && kk + kAhead < kcl) {
        for (int i = 0; i < first[npan]; ++i) {
          const Seg<T>& sg = segs[i];
          if (sg.hb < 0 || sg.hb >= g.H) continue;
          const int64_t lo = sg.wb > 0 ? sg.wb : 0, hi = sg.wb + sg.len < g.W ? sg.wb + sg.len : g.W;
          const T* row = sg.img + choff + kAhead * g.HW + sg.hb * g.W;
          for (int64_t o = lo; o < hi; o += int64_t(64 / sizeof(T))) __builtin_prefetch(row + o);
        }
      }
      for (int jp = 0; jp < npan; ++jp) {
        T* dst = Bp + jp * NR * kcl + kk * NR;
        for (int i = first[jp]; i < first[jp + 1]; ++i) {
          const Seg<T>& sg = segs[i];
          const int64_t ih = sg.hb + r * g.dh;
          const T* row = (ih >= 0 && ih < g.H) ? sg.img + choff + ih * g.W : nullptr;
          gather_run(dst + sg.off, row, sg.wb + s * g.dw, g.sw, g.W, sg.len);
        }
      }
      T* last = Bp + (npan - 1) * NR * kcl + kk * NR;
      for (int64_t t = tail; t < NR; ++t) last[t] = T(0);
      if (++s == g.S) {
        s = 0;
        if (++r * g.S == g.RS) { r = 0; ++c; }
      }
    }
  }
};

// dst[kk][t] = src[t][kk] for t < NR, kk < kcl (src rows lds apart). AVX-512 float: 16 x 16
// blocks transposed in registers (unpack, shuffle, 128-bit lane shuffles: 64 shuffles per 256
// elements instead of 256 scalar strided stores); elsewhere, and for the kk tail, scalar.
template <class T>
FC_GEMM_INLINE void transpose_panel(const T* src, int64_t lds, int64_t kcl, T* dst) {
  constexpr int NR = Blk<T>::NR;
  int64_t kk0 = 0;
#if defined(FC_ISA_avx512)
  if constexpr (sizeof(T) == 4) {
    static_assert(NR % 16 == 0, "AVX-512 float panels are whole 16-column blocks");
    for (; kk0 + 16 <= kcl; kk0 += 16) {
      for (int tb = 0; tb < NR; tb += 16) {
        __m512 r[16], t[16];
        FC_GEMM_UNROLL for (int i = 0; i < 16; ++i)
          r[i] = _mm512_loadu_ps(reinterpret_cast<const float*>(src + (tb + i) * lds + kk0));
        FC_GEMM_UNROLL for (int i = 0; i < 8; ++i) {
          t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
          t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        // r[4i + j], 128-bit lane L: element 4L + j of rows 4i .. 4i + 3.
        FC_GEMM_UNROLL for (int i = 0; i < 4; ++i) {
          r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
          r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
          r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
          r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
        }
        float* d = reinterpret_cast<float*>(dst + kk0 * NR + tb);
        FC_GEMM_UNROLL for (int j = 0; j < 4; ++j) {
          const __m512 a = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);
          const __m512 b = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xDD);
          const __m512 c = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
          const __m512 e = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xDD);
          _mm512_storeu_ps(d + j * NR, _mm512_shuffle_f32x4(a, c, 0x88));
          _mm512_storeu_ps(d + (8 + j) * NR, _mm512_shuffle_f32x4(a, c, 0xDD));
          _mm512_storeu_ps(d + (4 + j) * NR, _mm512_shuffle_f32x4(b, e, 0x88));
          _mm512_storeu_ps(d + (12 + j) * NR, _mm512_shuffle_f32x4(b, e, 0xDD));
        }
      }
    }
  }
#endif
  for (int64_t kk = kk0; kk < kcl; ++kk)
    for (int t = 0; t < NR; ++t) dst[kk * NR + t] = src[t * lds + kk];
}

// B packer for the weight gradient, rows = pixels, columns = kd = (c, r, s):
// Bp[panel][kk][NR] = col(X)[n0 + panel*NR + t][pixel kc0 + kk].
// Stride 1, two steps per panel: each column's pixels are copied into a row of a small buffer
// (a run of one output row is contiguous input), then the NR x kcl buffer is
// transposed into the panel. Gathering straight into the panel wrote one element every NR (a
// scalar strided store per element) and took 20-35% of the weight gradient's time.
template <class T>
struct PackKdCols {
  Im2col<T> g;
  static constexpr int64_t kLds = (Blk<T>::KCMAX + 15) / 16 * 16 + 16;  // buffer row stride
  void operator()(int64_t kc0, int64_t kcl, int64_t n0, int64_t ncols, T* Bp) const {
    constexpr int NR = Blk<T>::NR;
    Seg<T> segs[Blk<T>::KCMAX];
    alignas(64) T buf[NR * kLds];
    const int nseg = make_segments(g, kc0, kcl, segs);
    if (g.sw != 1) return strided(segs, nseg, kcl, n0, ncols, Bp);
    for (int64_t jp = 0; jp * NR < ncols; ++jp) {
      const int64_t nr = ncols - jp * NR < NR ? ncols - jp * NR : NR;
      int64_t kd = n0 + jp * NR;
      int64_t c = kd / g.RS, rs = kd - c * g.RS;
      int64_t r = rs / g.S, s = rs - r * g.S;
      for (int64_t t = 0; t < nr; ++t) {
        const int64_t choff = c * g.HW;
        T* row_buf = buf + t * kLds;
        for (int i = 0; i < nseg; ++i) {
          const Seg<T>& sg = segs[i];
          T* d = row_buf + sg.off;
          const int64_t ih = sg.hb + r * g.dh;
          if (ih < 0 || ih >= g.H) {
            for (int64_t u = 0; u < sg.len; ++u) d[u] = T(0);
            continue;
          }
          const T* row = sg.img + choff + ih * g.W;
          const int64_t iw0 = sg.wb + s * g.dw;
          int64_t lo, hi;
          valid_range(iw0, g.sw, g.W, sg.len, lo, hi);
          for (int64_t u = 0; u < lo; ++u) d[u] = T(0);
          if (hi > lo) std::memcpy(d + lo, row + iw0 + lo, sizeof(T) * (hi - lo));
          for (int64_t u = hi; u < sg.len; ++u) d[u] = T(0);
        }
        if (++s == g.S) {
          s = 0;
          if (++r * g.S == g.RS) { r = 0; ++c; }
        }
      }
      for (int64_t t = nr; t < NR; ++t)
        for (int64_t kk = 0; kk < kcl; ++kk) buf[t * kLds + kk] = T(0);
      transpose_panel(buf, kLds, kcl, Bp + jp * NR * kcl);
    }
  }
  // Strided input rows (stride > 1): a strided read feeding the transpose measured 8% slower
  // end to end than gathering straight into the panel (conv1 7x7/2, res4 3x3/2), so that stays.
  void strided(const Seg<T>* segs, int nseg, int64_t kcl, int64_t n0, int64_t ncols, T* Bp) const {
    constexpr int NR = Blk<T>::NR;
    for (int64_t jp = 0; jp * NR < ncols; ++jp) {
      const int64_t nr = ncols - jp * NR < NR ? ncols - jp * NR : NR;
      T* dst = Bp + jp * NR * kcl;
      int64_t kd = n0 + jp * NR;
      int64_t c = kd / g.RS, rs = kd - c * g.RS;
      int64_t r = rs / g.S, s = rs - r * g.S;
      for (int64_t t = 0; t < nr; ++t) {
        const int64_t choff = c * g.HW;
        for (int i = 0; i < nseg; ++i) {
          const Seg<T>& sg = segs[i];
          T* d = dst + sg.off * NR + t;
          const int64_t ih = sg.hb + r * g.dh;
          if (ih < 0 || ih >= g.H) {
            for (int64_t u = 0; u < sg.len; ++u) d[u * NR] = T(0);
            continue;
          }
          const T* row = sg.img + choff + ih * g.W;
          const int64_t iw0 = sg.wb + s * g.dw;
          int64_t lo, hi;
          valid_range(iw0, g.sw, g.W, sg.len, lo, hi);
          for (int64_t u = 0; u < lo; ++u) d[u * NR] = T(0);
          for (int64_t u = lo; u < hi; ++u) d[u * NR] = row[iw0 + u * g.sw];
          for (int64_t u = hi; u < sg.len; ++u) d[u * NR] = T(0);
        }
        if (++s == g.S) {
          s = 0;
          if (++r * g.S == g.RS) { r = 0; ++c; }
        }
      }
      for (int64_t t = nr; t < NR; ++t)
        for (int64_t kk = 0; kk < kcl; ++kk) dst[kk * NR + t] = T(0);
    }
  }
};

// ---------------------------------------------------------------------------------------------
// A packers: write the MR x kcl panel of rows [m0, m0 + mr) of virtual group vg (zero rows >= mr).
// ---------------------------------------------------------------------------------------------
// Forward: A_g(m = k, kd) = w[(g*Kg + m)*lda + kd].
template <class T>
struct PackWeightRows {
  const T* w;
  int64_t Kg, lda;
  void operator()(int64_t vg, int64_t m0, int mr, int64_t kc0, int64_t kcl, T* dst) const {
    constexpr int MR = Blk<T>::MR;
    for (int i = 0; i < MR; ++i) {
      if (i < mr) {
        const T* src = w + (vg * Kg + m0 + i) * lda + kc0;
        for (int64_t kk = 0; kk < kcl; ++kk) dst[kk * MR + i] = src[kk];
      } else {
        for (int64_t kk = 0; kk < kcl; ++kk) dst[kk * MR + i] = T(0);
      }
    }
  }
};

// Stride-1 input gradient as a forward convolution of dY: A_g(m = c, kd = (k, r', s')) =
// w[g*Kg + k][c][R-1-r'][S-1-s'].
template <class T>
struct PackWeightFlipped {
  const T* w;
  int64_t Kg, Cg, RS;
  void operator()(int64_t vg, int64_t m0, int mr, int64_t kc0, int64_t kcl, T* dst) const {
    constexpr int MR = Blk<T>::MR;
    int64_t k = kc0 / RS, rs = kc0 - k * RS;
    const int64_t CgRS = Cg * RS;
    for (int64_t kk = 0; kk < kcl; ++kk) {
      const T* src = w + (vg * Kg + k) * CgRS + m0 * RS + (RS - 1 - rs);
      int i = 0;
      for (; i < mr; ++i) dst[kk * MR + i] = src[i * RS];
      for (; i < MR; ++i) dst[kk * MR + i] = T(0);
      if (++rs == RS) { rs = 0; ++k; }
    }
  }
};

// col2im input gradient: A(m = (c - c0)*RS + rs, kd = k) = w[g*Kg + k][c0*RS + m]; vg = g*ncb + cb.
template <class T>
struct PackWeightCols {
  const T* w;
  int64_t Kg, CgRS, RS, ncb, cbs;
  void operator()(int64_t vg, int64_t m0, int mr, int64_t kc0, int64_t kcl, T* dst) const {
    constexpr int MR = Blk<T>::MR;
    const int64_t g = vg / ncb, c0 = (vg - g * ncb) * cbs;
    for (int64_t kk = 0; kk < kcl; ++kk) {
      const T* src = w + (g * Kg + kc0 + kk) * CgRS + c0 * RS + m0;
      int i = 0;
      for (; i < mr; ++i) dst[kk * MR + i] = src[i];
      for (; i < MR; ++i) dst[kk * MR + i] = T(0);
    }
  }
};

// Weight gradient: A_g(m = k, kd = pixel j of the batch) = dy[img][g*Kg + m][pq].
template <class T>
struct PackDyRows {
  const T* dy;
  int64_t K, Kg, PQ;
  void operator()(int64_t vg, int64_t m0, int mr, int64_t kc0, int64_t kcl, T* dst) const {
    constexpr int MR = Blk<T>::MR;
    for (int64_t kk = 0; kk < kcl;) {
      const int64_t j = kc0 + kk, img = j / PQ, pq = j - img * PQ;
      const int64_t len = PQ - pq < kcl - kk ? PQ - pq : kcl - kk;
      const T* src = dy + (img * K + vg * Kg + m0) * PQ + pq;
      T* d = dst + kk * MR;
      for (int i = 0; i < MR; ++i) {
        if (i < mr) {
          for (int64_t u = 0; u < len; ++u) d[u * MR + i] = src[i * PQ + u];
        } else {
          for (int64_t u = 0; u < len; ++u) d[u * MR + i] = T(0);
        }
      }
      kk += len;
    }
  }
};

// Packs A for nvg virtual groups of M(vg) rows (<= Mpad) x Kd, in parallel over panels.
template <class T, class PackA, class RowsOf>
void pack_a(const PackA& pa, const RowsOf& rows_of, int64_t nvg, int64_t Mpad, int64_t Kd,
            int64_t KC, T* Ap) {
  constexpr int MR = Blk<T>::MR;
  const int64_t npan = Mpad / MR, nkcb = ceil_div(Kd, KC);
  const int64_t units = nvg * nkcb * npan;
  const int64_t grain = 1 + (1 << 14) / (MR * (Kd < KC ? Kd : KC));
  parallel_for(units, grain, [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      const int64_t vg = u / (nkcb * npan), rem = u - vg * nkcb * npan;
      const int64_t kcb = rem / npan, pan = rem - kcb * npan;
      const int64_t kc0 = kcb * KC, kcl = Kd - kc0 < KC ? Kd - kc0 : KC;
      const int64_t M = rows_of(vg), m0 = pan * MR;
      const int mr = static_cast<int>(M - m0 >= MR ? MR : (M - m0 > 0 ? M - m0 : 0));
      pa(vg, m0, mr, kc0, kcl, Ap + vg * Mpad * Kd + kc0 * Mpad + m0 * kcl);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Stores (see gemm::macro_kernel).
// ---------------------------------------------------------------------------------------------
// Output in NCHW with GEMM columns running over (img, pq) of the batch.
template <class T>
struct StoreNCHW {
  T* y;               // channel row0 of image 0
  int64_t PQ, img_stride;
  const T* bias;      // bias of row 0 of this group, or nullptr
  T* tile(int64_t row, int64_t col, int64_t& ldc) const {
    const int64_t img = col / PQ, pq = col - img * PQ;
    if (pq + Blk<T>::NR > PQ) return nullptr;
    ldc = PQ;
    return y + img * img_stride + row * PQ + pq;
  }
  const T* bias_rows(int64_t row) const { return bias ? bias + row : nullptr; }
  void scatter(int64_t row, int64_t col, int mr, int nr, const T* buf, bool first) const {
    constexpr int NR = Blk<T>::NR;
    int64_t img = col / PQ, pq = col - img * PQ;
    for (int t = 0; t < nr; ++t) {
      T* d = y + img * img_stride + row * PQ + pq;
      for (int i = 0; i < mr; ++i) {
        const T v = buf[i * NR + t];
        d[i * PQ] = first ? v + (bias ? bias[row + i] : T(0)) : d[i * PQ] + v;
      }
      if (++pq == PQ) { pq = 0; ++img; }
    }
  }
};
// Row-major matrix (dW, dcol): C(row, col) = c[row*ld + col - col0].
template <class T>
struct StoreRowMajor {
  T* c;
  int64_t ld, col0;
  T* tile(int64_t row, int64_t col, int64_t& ldc) const {
    ldc = ld;
    return c + row * ld + (col - col0);
  }
  const T* bias(int64_t) const { return nullptr; }
  void scatter(int64_t row, int64_t col, int mr, int nr, const T* buf, bool first) const {
    constexpr int NR = Blk<T>::NR;
    for (int i = 0; i < mr; ++i) {
      T* d = c + (row + i) * ld + (col - col0);
      for (int t = 0; t < nr; ++t) d[t] = first ? buf[i * NR + t] : d[t] + buf[i * NR + t];
    }
  }
};

// Thin wrapper so StoreNCHW exposes bias() under the name macro_kernel uses.
template <class T>
struct StoreOut {
  StoreNCHW<T> s;
  T* tile(int64_t row, int64_t col, int64_t& ldc) const { return s.tile(row, col, ldc); }
  const T* bias(int64_t row) const { return s.bias_rows(row); }
  void scatter(int64_t row, int64_t col, int mr, int nr, const T* buf, bool first) const {
    s.scatter(row, col, mr, nr, buf, first);
  }
};

// ---------------------------------------------------------------------------------------------
// Stride-1 forward without B packing ("direct"): the input is copied once into a zero-padded
// buffer xp[n][c][Hp][Wp] (Hp = P + (R-1)*dh, Wp = Q + (S-1)*dw), and the GEMM runs over the
// virtual columns v = p*Wp + q of each image, where B row kd = (c, r, s) is simply
// xp[c][v + r*dh*Wp + s*dw]: a contiguous row read in place by the micro-kernel. The Wp - Q
// columns per output row that do not exist are computed and dropped (waste (P-1)*Wp + Q vs P*Q:
// 4% at 56x56, 7% at 28x28, 14% at 14x14, 29% at 7x7), so forward_gemm only takes this path where
// the saved packing outweighs that (few output channels per group, wide images).
// ---------------------------------------------------------------------------------------------
template <class T>
struct StoreDirect {
  T* y;  // image n, channel row0 of the group
  int64_t PQ, Q, Wp;
  const T* bias;
  T* tile(int64_t row, int64_t v, int64_t& ldc) const {
    const int64_t p = v / Wp, q = v - p * Wp;
    if (q + Blk<T>::NR > Q) return nullptr;
    ldc = PQ;
    return y + row * PQ + p * Q + q;
  }
  const T* bias_of(int64_t row) const { return bias ? bias + row : nullptr; }
  void scatter(int64_t row, int64_t v, int mr, int nr, const T* buf, bool first) const {
    constexpr int NR = Blk<T>::NR;
    int64_t p = v / Wp, q = v - p * Wp;
    for (int t = 0; t < nr; ++t) {
      if (q < Q) {
        T* d = y + row * PQ + p * Q + q;
        for (int i = 0; i < mr; ++i) {
          const T v2 = buf[i * NR + t];
          d[i * PQ] = first ? v2 + (bias ? bias[row + i] : T(0)) : d[i * PQ] + v2;
        }
      }
      if (++q == Wp) { q = 0; ++p; }
    }
  }
};
template <class T>
struct StoreDirectOut {
  StoreDirect<T> s;
  T* tile(int64_t row, int64_t col, int64_t& ldc) const { return s.tile(row, col, ldc); }
  const T* bias(int64_t row) const { return s.bias_of(row); }
  void scatter(int64_t row, int64_t col, int mr, int nr, const T* buf, bool first) const {
    s.scatter(row, col, mr, nr, buf, first);
  }
};

// The zero-padded input of the direct path, any stride: the padded input xpad split into its
// sh x sw phases, xs[n][c][a][b][i][j] = xpad[i*sh + a][j*sw + b] (stride 1: the padded input
// itself). Then im2col element (p, q; c, r, s) = xpad[p*sh + r*dh][q*sw + s*dw] is
// xs[c][(r*dh) % sh][(s*dw) % sw][p + (r*dh) / sh][q + (s*dw) / sw]: a stride-1 convolution per
// phase, so B row kd is again one contiguous run of the plane and the stride-2 gather (scalar
// strided loads, ~25% of r50_conv1_7x7s2's forward) becomes one pass over the input.
struct DirectGeom {
  int64_t Hp, Wp, plane, phases;  // plane Hp x Wp, sh*sw planes per channel
  explicit DirectGeom(const Conv2dParams& p)
      : Hp(p.P + (p.R - 1) * p.dil_h / p.stride_h), Wp(p.Q + (p.S - 1) * p.dil_w / p.stride_w),
        plane(Hp * Wp), phases(p.stride_h * p.stride_w) {}
  // Offset of B row kd = (c, r, s) from the group's first plane.
  int64_t offset(const Conv2dParams& p, int64_t c, int64_t r, int64_t s) const {
    const int64_t th = r * p.dil_h, tw = s * p.dil_w;
    const int64_t ph = (c * p.stride_h + th % p.stride_h) * p.stride_w + tw % p.stride_w;
    return ph * plane + (th / p.stride_h) * Wp + tw / p.stride_w;
  }
};

// Whether the direct path pays: waste of computed columns vs the packing it saves, which is
// amortised over the M rows of a group (measured: packing costs about as much as 6 rows of FMAs;
// a strided gather costs more, so the same bound is conservative there).
inline bool use_direct(const Conv2dParams& p) {
  if (p.P * p.Q == 0) return false;
  if (p.Kg() > 96) return false;  // packing is cheap next to many rows; packed B panels stream better
  // 1x1 / stride 1 / unpadded: the packed path's B packing is a plain copy, as cheap as the padded
  // copy, and it saves a parallel region (each costs a barrier, dear when the machine is busy).
  if (p.R == 1 && p.S == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_t == 0 && p.pad_l == 0 &&
      p.P == p.H && p.Q == p.W)
    return false;
  // Strided: every phase is copied, used or not; skip where the copy outweighs the output
  // (a 1x1 stride-2 layer copies 4x the pixels it reads).
  const DirectGeom d(p);
  if (d.phases > 1 && d.plane * d.phases > 4 * p.P * p.Q * p.R * p.S) return false;
  const int64_t Nv = (p.P - 1) * d.Wp + p.Q;  // per image, in whole NR tiles
  const double waste = double(round_up(Nv, Blk<float>::NR)) / double(p.P * p.Q) - 1.0;
  return waste <= 0.05 + 6.0 / double(p.Kg());
}

// xs = the phases of the padded input (DirectGeom), zero outside x; one (n, c) channel per item.
template <class T>
void phase_copy(const Conv2dParams& p, const DirectGeom& d, const T* x, T* xs) {
  const int64_t H = p.H, W = p.W, sh = p.stride_h, sw = p.stride_w;
  parallel_for(p.N * p.C, 1 + 16384 / (d.plane * d.phases + 1), [&](int64_t b, int64_t e) {
    for (int64_t item = b; item < e; ++item) {
      const T* src = x + item * H * W;
      for (int64_t a = 0; a < sh; ++a) {
        for (int64_t bb = 0; bb < sw; ++bb) {
          T* dst = xs + (item * d.phases + a * sw + bb) * d.plane;
          int64_t lo, hi;  // j with 0 <= j*sw + bb - pad_l < W
          valid_range(bb - p.pad_l, sw, W, d.Wp, lo, hi);
          for (int64_t i = 0; i < d.Hp; ++i) {
            T* dr = dst + i * d.Wp;
            const int64_t ih = i * sh + a - p.pad_t;
            if (ih < 0 || ih >= H) {
              std::memset(dr, 0, sizeof(T) * d.Wp);
              continue;
            }
            const T* sr = src + ih * W + bb - p.pad_l;
            for (int64_t j = 0; j < lo; ++j) dr[j] = T(0);
            if (sw == 1) {
              for (int64_t j = lo; j < hi; ++j) dr[j] = sr[j];
            } else {
              for (int64_t j = lo; j < hi; ++j) dr[j] = sr[j * sw];
            }
            for (int64_t j = hi; j < d.Wp; ++j) dr[j] = T(0);
          }
        }
      }
    }
  });
}

// xp[n][c][Hp][Wp] = x[n][c][hp - pad_t][wp - pad_l], zero outside; one (n, c) plane per item.
template <class T>
void pad_copy(const Conv2dParams& p, const T* x, T* xp, int64_t Hp, int64_t Wp) {
  const int64_t H = p.H, W = p.W, plane = Hp * Wp;
  parallel_for(p.N * p.C, 1 + 16384 / (plane + 1), [&](int64_t b, int64_t e) {
    int64_t lo, hi;
    valid_range(-p.pad_l, 1, W, Wp, lo, hi);
    for (int64_t i = b; i < e; ++i) {
      const T* src = x + i * H * W;
      T* dst = xp + i * plane;
      for (int64_t hp = 0; hp < Hp; ++hp) {
        T* d = dst + hp * Wp;
        const int64_t ih = hp - p.pad_t;
        if (ih < 0 || ih >= H) {
          std::memset(d, 0, sizeof(T) * Wp);
          continue;
        }
        for (int64_t t = 0; t < lo; ++t) d[t] = T(0);
        const T* sp = src + ih * W - p.pad_l;
        for (int64_t t = lo; t < hi; ++t) d[t] = sp[t];
        for (int64_t t = hi; t < Wp; ++t) d[t] = T(0);
      }
    }
  });
}

template <class T, class PackA>
void forward_direct(const Conv2dParams& p, const T* x, const PackA& pa, const T* bias, T* y) {
  using B_ = Blk<T>;
  constexpr int NR = B_::NR;
  const int64_t N = p.N, G = p.groups, M = p.Kg(), Cg = p.Cg(), RS = p.R * p.S, Kd = Cg * RS;
  const int64_t P = p.P, Q = p.Q, PQ = P * Q;
  const DirectGeom d(p);
  const int64_t Wp = d.Wp, plane = d.phases * d.plane;  // plane: all phases of one channel
  const int64_t Nv = (P - 1) * Wp + Q;  // virtual columns per image
  const int64_t nt = num_threads();
  const gemm::Split sp = gemm::make_split<T>(G * N, M, Nv, nt, 0);
  const int64_t kc = gemm::kc_for<T>(Kd);
  const int64_t Mpad = round_up(M, B_::MR);
  const size_t a_bytes = gemm::Arena::bytes<T>(G * Mpad * Kd);
  const size_t o_bytes = gemm::Arena::bytes<int64_t>(Kd);
  const int64_t xp_elems = N * p.C * plane + NR + Wp + 16;
  const size_t x_bytes = gemm::Arena::bytes<T>(xp_elems);
  char* base = static_cast<char*>(gemm::call_scratch().get(a_bytes + o_bytes + x_bytes));
  T* Ap = reinterpret_cast<T*>(base);
  int64_t* off = reinterpret_cast<int64_t*>(base + a_bytes);
  T* xp = reinterpret_cast<T*>(base + a_bytes + o_bytes);
  pack_a<T>(pa, [M](int64_t) { return M; }, G, Mpad, Kd, kc, Ap);
  for (int64_t kd = 0; kd < Kd; ++kd) {
    const int64_t c = kd / RS, rs = kd - c * RS, r = rs / p.S, s = rs - r * p.S;
    off[kd] = d.offset(p, c, r, s);
  }
  phase_copy(p, d, x, xp);
  const int64_t NC = N * p.C;
  std::memset(xp + NC * plane, 0, sizeof(T) * (xp_elems - NC * plane));

  const int64_t ntasks = sp.tasks(G * N);
  gemm::run_tasks(ntasks, ntasks < nt ? ntasks : nt, nullptr, 0, [&](int64_t t, char*) {
    const int64_t gn = t / (sp.nmb * sp.ncb), rem = t - gn * sp.nmb * sp.ncb;
    const int64_t n = gn / G, g = gn - n * G;
    const int64_t mb = rem / sp.ncb, cb = rem - mb * sp.ncb;
    const int64_t m0 = mb * sp.mc, m1 = m0 + sp.mc < M ? m0 + sp.mc : M;
    const int64_t n0 = cb * sp.nc, n1 = n0 + sp.nc < Nv ? n0 + sp.nc : Nv;
    StoreDirectOut<T> st{{y + (n * p.K + g * M) * PQ, PQ, Q, Wp, bias ? bias + g * M : nullptr}};
    gemm::macro_kernel_direct(Ap + g * Mpad * Kd, Mpad, Kd, kc, m0, m1, n0, n1,
                              xp + (n * p.C + g * Cg) * plane, off, st);
  });
}

// ---------------------------------------------------------------------------------------------
// Forward (also the stride-1 input gradient): Y_g = A_g * col(X_g), tasks (group, row block,
// column block), columns over the whole batch.
// ---------------------------------------------------------------------------------------------
template <class T, class PackA>
void forward_gemm(const Conv2dParams& p, const T* x, const PackA& pa, const T* bias, T* y) {
  using B_ = Blk<T>;
  const int64_t G = p.groups, M = p.Kg(), Cg = p.Cg(), Kd = Cg * p.R * p.S;
  const int64_t PQ = p.P * p.Q, Ncols = p.N * PQ;
  if (Ncols == 0 || M == 0) return;
  if (use_direct(p)) return forward_direct(p, x, pa, bias, y);
  const int64_t nt = num_threads();
  const gemm::Split sp = gemm::make_split<T>(G, M, Ncols, nt, 6);
  const int64_t kc = gemm::kc_for<T>(Kd);
  const int64_t Mpad = round_up(M, B_::MR);
  const int64_t ntasks = sp.tasks(G), nthr = ntasks < nt ? ntasks : nt;
  const size_t a_bytes = gemm::Arena::bytes<T>(G * Mpad * Kd);
  const size_t b_bytes = gemm::Arena::bytes<T>(kc * sp.nc);
  char* base = static_cast<char*>(gemm::call_scratch().get(a_bytes + nthr * b_bytes));
  T* Ap = reinterpret_cast<T*>(base);
  pack_a<T>(pa, [M](int64_t) { return M; }, G, Mpad, Kd, kc, Ap);

  const Im2col<T> g0 = make_im2col(p, x);
  const int64_t HW = p.H * p.W;
  gemm::run_tasks(ntasks, nthr, base + a_bytes, b_bytes, [&](int64_t t, char* mine) {
    const int64_t g = t / (sp.nmb * sp.ncb), rem = t - g * sp.nmb * sp.ncb;
    const int64_t mb = rem / sp.ncb, cb = rem - mb * sp.ncb;
    const int64_t m0 = mb * sp.mc, m1 = m0 + sp.mc < M ? m0 + sp.mc : M;
    const int64_t n0 = cb * sp.nc, n1 = n0 + sp.nc < Ncols ? n0 + sp.nc : Ncols;
    PackPixelCols<T> pb{g0};
    pb.g.x = x + g * Cg * HW;
    StoreOut<T> st{{y + g * M * PQ, PQ, p.K * PQ, bias ? bias + g * M : nullptr}};
    gemm::macro_kernel(Ap + g * Mpad * Kd, Mpad, Kd, kc, m0, m1, n0, n1, reinterpret_cast<T*>(mine),
                       pb, st);
  });
}

// Input gradient for stride > 1: dcol = W_g^T * dY_g, then col2im. Tasks (image, group, channel block).
template <class T>
void backward_input_col2im(const Conv2dParams& p, const T* dy, const T* w, T* dx) {
  using B_ = Blk<T>;
  constexpr int NR = B_::NR;
  const int64_t N = p.N, G = p.groups, Cg = p.Cg(), Kg = p.Kg(), RS = p.R * p.S;
  const int64_t HW = p.H * p.W, PQ = p.P * p.Q;
  const int64_t nt = num_threads();
  int64_t ncb = ceil_div(4 * nt, N * G);
  if (ncb > Cg) ncb = Cg;
  if (ncb < 1) ncb = 1;
  const int64_t cbs = ceil_div(Cg, ncb);
  ncb = ceil_div(Cg, cbs);
  const int64_t Mv = cbs * RS, Mpad = round_up(Mv, B_::MR), Kd = Kg, kc = gemm::kc_for<T>(Kd);
  // Column block: dcol (Mpad x nc) about 1 MiB.
  int64_t nc = (int64_t(1) << 20) / static_cast<int64_t>(sizeof(T)) / Mpad / NR * NR;
  if (nc > round_up(PQ, NR)) nc = round_up(PQ, NR);
  if (nc > B_::NCMAX) nc = B_::NCMAX / NR * NR;
  if (nc < NR) nc = NR;
  const int64_t ntasks = N * G * ncb, nthr = ntasks < nt ? ntasks : nt;
  const size_t a_bytes = gemm::Arena::bytes<T>(G * ncb * Mpad * Kd);
  const size_t b_bytes = gemm::Arena::bytes<T>(kc * nc);
  const size_t d_bytes = gemm::Arena::bytes<T>(Mpad * nc);
  char* base = static_cast<char*>(gemm::call_scratch().get(a_bytes + nthr * (b_bytes + d_bytes)));
  T* Ap = reinterpret_cast<T*>(base);
  PackWeightCols<T> pa{w, Kg, Cg * RS, RS, ncb, cbs};
  pack_a<T>(pa, [=](int64_t vg) { int64_t c0 = (vg % ncb) * cbs; return (Cg - c0 < cbs ? Cg - c0 : cbs) * RS; },
            G * ncb, Mpad, Kd, kc, Ap);

  // dY of one image and group seen as a 1x1 convolution input: rows k, columns pq.
  Conv2dParams q1;
  q1.N = 1; q1.C = p.K; q1.H = p.P; q1.W = p.Q; q1.K = 1; q1.R = 1; q1.S = 1; q1.P = p.P; q1.Q = p.Q;
  const Im2col<T> gdy = make_im2col(q1, dy);
  // Output pixel geometry for col2im.
  Im2col<T> gout = make_im2col(p, dx);
  gout.H = p.H; gout.W = p.W; gout.P = p.P; gout.Q = p.Q; gout.PQ = PQ; gout.img_stride = 0;

  gemm::run_tasks(ntasks, nthr, base + a_bytes, b_bytes + d_bytes, [&](int64_t t, char* mine) {
    const int64_t n = t / (G * ncb), rem = t - n * G * ncb, g = rem / ncb, cb = rem - g * ncb;
    const int64_t c0 = cb * cbs, c1 = c0 + cbs < Cg ? c0 + cbs : Cg, Mt = (c1 - c0) * RS;
    T* Bp = reinterpret_cast<T*>(mine);
    T* dcol = reinterpret_cast<T*>(mine + b_bytes);
    T* dxg = dx + (n * p.C + g * Cg + c0) * HW;
    std::memset(dxg, 0, sizeof(T) * (c1 - c0) * HW);
    PackPixelCols<T> pb{gdy};
    pb.g.x = dy + (n * p.K + g * Kg) * PQ;
    StoreRowMajor<T> st{dcol, nc, 0};
    Seg<T> segs[B_::NCMAX + 2];
    for (int64_t n0 = 0; n0 < PQ; n0 += nc) {
      const int64_t n1 = n0 + nc < PQ ? n0 + nc : PQ;
      st.col0 = n0;
      gemm::macro_kernel(Ap + (g * ncb + cb) * Mpad * Kd, Mpad, Kd, kc, int64_t(0), Mt, n0, n1, Bp, pb, st);
      const int nseg = make_segments(gout, n0, n1 - n0, segs);
      for (int64_t m = 0; m < Mt; ++m) {
        const int64_t c = m / RS, rs = m - c * RS, r = rs / p.S, s = rs - r * p.S;
        T* plane = dxg + c * HW;
        const T* drow = dcol + m * nc;
        for (int i = 0; i < nseg; ++i) {
          const Seg<T>& sg = segs[i];
          const int64_t ih = sg.hb + r * p.dil_h;
          if (ih < 0 || ih >= p.H) continue;
          T* row = plane + ih * p.W;
          const int64_t iw0 = sg.wb + s * p.dil_w;
          int64_t lo, hi;
          valid_range(iw0, p.stride_w, p.W, sg.len, lo, hi);
          const T* src = drow + sg.off;
          for (int64_t u = lo; u < hi; ++u) row[iw0 + u * p.stride_w] += src[u];
        }
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Input gradient for stride > 1 by stride phases: the input pixels (ih, iw) split into sh x sw
// phases (ih mod sh, iw mod sw); the taps that reach phase a along one axis are
// r = r0 + j*step (j < cnt, step = sh / gcd(sh, dh)), those with sh | (a + pt - r*dh), and pixel
// ih = a + i*sh of the phase gets dy row p = i + e0 - j*dd (e0 = (a + pt - r0*dh) / sh,
// dd = dh / gcd(sh, dh)). So each phase is a stride-1 forward convolution of dY with the flipped
// sub-kernel of its taps (dilation dd, padding (cnt - 1)*dd - e0), run by forward_gemm into a
// phase-major buffer and then interleaved into dx; phases that no tap reaches are zero. No
// scatter-add, no dcol round trip: each dx pixel is written once.
// ---------------------------------------------------------------------------------------------
struct PhaseAxis {
  int64_t n = 0;                        // pixels of the phase along this axis
  int64_t r0 = 0, step = 1, cnt = 0;    // its taps r0 + j*step, j < cnt
  int64_t dd = 1, pad = 0;              // dilation and leading padding of its forward convolution
};

inline PhaseAxis phase_axis(int64_t a, int64_t stride, int64_t dil, int64_t pad, int64_t R,
                            int64_t H) {
  PhaseAxis ax;
  ax.n = a < H ? ceil_div(H - a, stride) : 0;
  int64_t g = stride, b = dil;  // gcd(stride, dil)
  while (b) { const int64_t t = g % b; g = b; b = t; }
  ax.step = stride / g;
  ax.dd = dil / g;
  for (int64_t r = 0; r < ax.step && r < R; ++r) {
    if (((a + pad - r * dil) % stride + stride) % stride == 0) {
      ax.r0 = r;
      ax.cnt = ceil_div(R - r, ax.step);
      ax.pad = (ax.cnt - 1) * ax.dd - (a + pad - r * dil) / stride;  // exact division
      break;
    }
  }
  return ax;
}

// One phase with taps: its forward convolution (params q), GEMM split and places in the scratch.
struct DgradPhase {
  int64_t a, b;
  PhaseAxis h, v;
  Conv2dParams q;
  int64_t Kd, kc, Ncols;
  gemm::Split sp;
  int64_t a_off, task0;  // its packed A in the A buffer; its first task
};

// A of every phase in one pass over w, in parallel over (group, run of 8 filters). Phase f is a
// forward convolution with rows m = c and reduction kd = (k, r', s') over its taps, flipped:
// A_f(c, kd) = w[g*Kg + k][c][r0 + (cnt_h - 1 - r')*step_h][s0 + (cnt_w - 1 - s')*step_w],
// packed like pack_a (MR-row panels, kc block by kc block; rows past Cg zero). Every weight
// belongs to exactly one phase, so w is read once, along its rows: packing each phase from w on
// its own read every filter once per phase with a jump of Cg*R*S elements per k (5% of the
// call on r50_res4_3x3s2).
template <class T>
void pack_phase_weights(const Conv2dParams& p, const std::vector<DgradPhase>& ph, int64_t Mpad,
                        const T* w, T* Ap) {
  constexpr int MR = Blk<T>::MR;
  const int64_t G = p.groups, Cg = p.Cg(), Kg = p.Kg(), RS = p.R * p.S;
  // Per tap (r, s): its phase (index into ph, -1: a phase with no pixels) and place t' in it.
  std::vector<int64_t> tap_phase(RS, -1), tap_pos(RS, 0);
  for (size_t i = 0; i < ph.size(); ++i) {
    const DgradPhase& f = ph[i];
    for (int64_t rr = 0; rr < f.h.cnt; ++rr)
      for (int64_t ss = 0; ss < f.v.cnt; ++ss) {
        const int64_t r = f.h.r0 + (f.h.cnt - 1 - rr) * f.h.step;
        const int64_t s = f.v.r0 + (f.v.cnt - 1 - ss) * f.v.step;
        tap_phase[r * p.S + s] = static_cast<int64_t>(i);
        tap_pos[r * p.S + s] = rr * f.v.cnt + ss;
      }
  }
  constexpr int64_t kKB = 8;
  const int64_t nkb = ceil_div(Kg, kKB), npan = Mpad / MR;
  parallel_for(G * nkb, 1, [&](int64_t beg, int64_t end) {
    for (int64_t u = beg; u < end; ++u) {
      const int64_t g = u / nkb, k0 = (u - g * nkb) * kKB, k1 = k0 + kKB < Kg ? k0 + kKB : Kg;
      for (int64_t k = k0; k < k1; ++k) {
        const T* wk = w + (g * Kg + k) * Cg * RS;
        for (int64_t tap = 0; tap < RS; ++tap) {
          if (tap_phase[tap] < 0) continue;
          const DgradPhase& f = ph[tap_phase[tap]];
          const int64_t kd = k * f.h.cnt * f.v.cnt + tap_pos[tap];
          const int64_t kcb = kd / f.kc, kk = kd - kcb * f.kc;
          const int64_t kcl = f.Kd - kcb * f.kc < f.kc ? f.Kd - kcb * f.kc : f.kc;
          T* d = Ap + f.a_off + g * Mpad * f.Kd + kcb * f.kc * Mpad + kk * MR;
          const T* src = wk + tap;
          for (int64_t pan = 0; pan < npan; ++pan, d += MR * kcl) {
            const int64_t c0 = pan * MR;
            if (c0 + MR <= Cg) {
              for (int i = 0; i < MR; ++i) d[i] = src[(c0 + i) * RS];
            } else {
              for (int i = 0; i < MR; ++i) d[i] = c0 + i < Cg ? src[(c0 + i) * RS] : T(0);
            }
          }
        }
      }
    }
  });
}

// Tasks (phase, group, row block, column block), phases with the longest reduction first; a task
// computes its block of the phase's forward convolution into a per-thread buffer (C rows =
// channels c, columns = pixels (n, i, j) of the phase) and writes it into dx with strides sh, sw.
// Pixels of phases that no tap reaches are zeroed first.
template <class T>
void backward_input_phases(const Conv2dParams& p, const T* dy, const T* w, T* dx) {
  using B_ = Blk<T>;
  const int64_t sh = p.stride_h, sw = p.stride_w, H = p.H, W = p.W, HW = H * W;
  const int64_t G = p.groups, Cg = p.Cg(), Kg = p.Kg(), RS = p.R * p.S;
  const int64_t M = Cg, Mpad = round_up(M, B_::MR), nt = num_threads();
  std::vector<PhaseAxis> ah(sh), aw(sw);
  for (int64_t a = 0; a < sh; ++a) ah[a] = phase_axis(a, sh, p.dil_h, p.pad_t, p.R, H);
  for (int64_t b = 0; b < sw; ++b) aw[b] = phase_axis(b, sw, p.dil_w, p.pad_l, p.S, W);
  std::vector<DgradPhase> ph;
  bool zeros = false;  // some pixels of dx are reached by no tap
  for (int64_t a = 0; a < sh && a < H; ++a)
    for (int64_t b = 0; b < sw && b < W; ++b) {
      const PhaseAxis& h = ah[a];
      const PhaseAxis& v = aw[b];
      if (h.cnt == 0 || v.cnt == 0) {
        zeros = true;
        continue;
      }
      DgradPhase f;
      f.a = a; f.b = b; f.h = h; f.v = v;
      Conv2dParams& q = f.q;
      q.N = p.N; q.C = p.K; q.H = p.P; q.W = p.Q;
      q.K = p.C; q.R = h.cnt; q.S = v.cnt; q.P = h.n; q.Q = v.n;
      q.groups = G;
      q.dil_h = h.dd; q.dil_w = v.dd;
      q.pad_t = h.pad; q.pad_l = v.pad;
      q.pad_b = h.n - p.P + (h.cnt - 1) * h.dd - h.pad;
      q.pad_r = v.n - p.Q + (v.cnt - 1) * v.dd - v.pad;
      f.Kd = Kg * h.cnt * v.cnt;
      f.kc = gemm::kc_for<T>(f.Kd);
      f.Ncols = p.N * h.n * v.n;
      f.sp = gemm::make_split<T>(G, M, f.Ncols, nt, 6);
      ph.push_back(f);
    }
  std::stable_sort(ph.begin(), ph.end(),
                   [](const DgradPhase& x, const DgradPhase& y) { return x.Kd > y.Kd; });
  int64_t a_elems = 0, ntasks = 0, kcnc = 0, mnc = 0, ncmax = 0;
  for (DgradPhase& f : ph) {
    f.a_off = a_elems;
    f.task0 = ntasks;
    a_elems += G * Mpad * f.Kd;
    ntasks += f.sp.tasks(G);
    kcnc = std::max(kcnc, f.kc * f.sp.nc);
    mnc = std::max(mnc, std::min(f.sp.mc, Mpad) * f.sp.nc);
    ncmax = std::max(ncmax, f.sp.nc);
  }
  if (zeros) {
    parallel_for(p.N * p.C, 1 + 16384 / (HW + 1), [&](int64_t beg, int64_t end) {
      for (int64_t item = beg; item < end; ++item)
        for (int64_t ih = 0; ih < H; ++ih) {
          T* row = dx + item * HW + ih * W;
          for (int64_t b = 0; b < sw && b < W; ++b)
            if (ah[ih % sh].cnt == 0 || aw[b].cnt == 0)
              for (int64_t iw = b; iw < W; iw += sw) row[iw] = T(0);
        }
    });
  }
  if (ph.empty() || p.N * Cg == 0) return;
  const int64_t nthr = ntasks < nt ? ntasks : nt;
  const size_t a_bytes = gemm::Arena::bytes<T>(a_elems);
  const size_t b_bytes = gemm::Arena::bytes<T>(kcnc), c_bytes = gemm::Arena::bytes<T>(mnc);
  const size_t r_bytes = gemm::Arena::bytes<int64_t>(2 * (ncmax + 2));  // runs of a column block
  const size_t per_thread = b_bytes + c_bytes + r_bytes;
  char* base = static_cast<char*>(gemm::call_scratch().get(a_bytes + nthr * per_thread));
  T* Ap = reinterpret_cast<T*>(base);
  pack_phase_weights(p, ph, Mpad, w, Ap);
  gemm::run_tasks(ntasks, nthr, base + a_bytes, per_thread, [&](int64_t t, char* mine) {
    size_t i = ph.size() - 1;
    while (t < ph[i].task0) --i;
    const DgradPhase& f = ph[i];
    const gemm::Split& sp = f.sp;
    const int64_t r0 = t - f.task0;
    const int64_t g = r0 / (sp.nmb * sp.ncb), rem = r0 - g * sp.nmb * sp.ncb;
    const int64_t mb = rem / sp.ncb, cb = rem - mb * sp.ncb;
    const int64_t m0 = mb * sp.mc, m1 = m0 + sp.mc < M ? m0 + sp.mc : M;
    const int64_t n0 = cb * sp.nc, n1 = n0 + sp.nc < f.Ncols ? n0 + sp.nc : f.Ncols;
    T* Bp = reinterpret_cast<T*>(mine);
    T* cbuf = reinterpret_cast<T*>(mine + b_bytes);
    PackPixelCols<T> pb{make_im2col(f.q, dy + g * Kg * p.P * p.Q)};
    StoreRowMajor<T> st{cbuf - m0 * sp.nc, sp.nc, n0};
    gemm::macro_kernel(Ap + f.a_off + g * Mpad * f.Kd, Mpad, f.Kd, f.kc, m0, m1, n0, n1, Bp, pb, st);
    // cbuf[m - m0][col - n0] -> dx[n][g*Cg + m][a + i*sh][b + j*sw], col = (n*nh + i)*nw + j:
    // runs of one phase row, then channel by channel (along each dx plane; run by run across
    // the channels jumped a plane per store and took 9% of the call).
    const int64_t nh = f.h.n, nw = f.v.n;
    int64_t* runs = reinterpret_cast<int64_t*>(mine + b_bytes + c_bytes);  // (dx offset, len)
    int64_t nrun = 0;
    for (int64_t col = n0; col < n1; ++nrun) {
      const int64_t n = col / (nh * nw), ij = col - n * nh * nw, i = ij / nw, j0 = ij - i * nw;
      const int64_t len = nw - j0 < n1 - col ? nw - j0 : n1 - col;
      runs[2 * nrun] = (n * p.C + g * Cg + m0) * HW + (f.a + i * sh) * W + f.b + j0 * sw;
      runs[2 * nrun + 1] = len;
      col += len;
    }
    for (int64_t m = 0; m < m1 - m0; ++m) {
      const T* src = cbuf + m * sp.nc;
      T* dxm = dx + m * HW;
      for (int64_t r = 0; r < nrun; ++r) {
        T* d = dxm + runs[2 * r];
        const int64_t len = runs[2 * r + 1];
        for (int64_t j = 0; j < len; ++j) d[j * sw] = src[j];
        src += len;
      }
    }
  });
}

// Phases or col2im for a strided input gradient (the switch strided_dgrad, else this rule; a
// function of the shape alone). col2im's extra work is its scatter-add, about R*S/(sh*sw) adds
// per dx element whatever the channels, and its GEMM's reduction is only Kg long (every kc block
// re-reads the dcol tile); the phases' extra work is the im2col packing of dY, amortised over
// M = Cg rows, and packing all of W, amortised over the phase's pixels. So phases win with many
// input channels per group and few output channels. Measured (2 threads, AVX2 EPYC, float32,
// phase / col2im time): Cg 256-512, Kg <= 2*Cg, >= 392 pixels per phase 0.79-0.96 (r50 res4 and
// res5 3x3/2, 1x1/2 downsampling); Cg 96-128 1.03-1.11 unless Kg is small (r50 res3 3x3/2 1.03-1.05);
// Kg <= 16 or Kg <= 32 with Cg >= 2*Kg: 0.72-0.92; Cg 3 (stems) 2-4; batch 1 with 49 pixels per
// phase 1.10; grouped Cg = 8 1.16.
inline bool use_phase_dgrad(const Conv2dParams& p) {
  const StridedDgrad mode = strided_dgrad();
  if (mode != StridedDgrad::automatic) return mode == StridedDgrad::phase;
  const int64_t Cg = p.Cg(), Kg = p.Kg();
  const int64_t cols = p.N * ceil_div(p.H, p.stride_h) * ceil_div(p.W, p.stride_w);
  if (Cg >= 192 && Kg <= 2 * Cg && cols >= 384) return true;
  return Cg >= 32 && (Kg <= 16 || (Kg <= 32 && Cg >= 2 * Kg));
}

// dw[e] = dw[e] + part[0][e] + part[1][e] + ... (in this order), e < n; parallel over e.
template <class T>
void reduce_partials(T* dw, const T* part, int64_t nparts, int64_t n) {
  using V = Vec<T>;
  constexpr int L = V::size;
  if (nparts <= 0) return;
  parallel_for(ceil_div(n, 1024), 1 + 16 / (nparts + 1), [&](int64_t b, int64_t e) {
    for (int64_t blk = b; blk < e; ++blk) {
      const int64_t i0 = blk * 1024, i1 = i0 + 1024 < n ? i0 + 1024 : n;
      int64_t i = i0;
      for (; i + L <= i1; i += L) {
        V s = V::load(dw + i);
        for (int64_t q = 0; q < nparts; ++q) s = s + V::load(part + q * n + i);
        s.store(dw + i);
      }
      for (; i < i1; ++i) {
        T s = dw[i];
        for (int64_t q = 0; q < nparts; ++q) s += part[q * n + i];
        dw[i] = s;
      }
    }
  });
}

// Weight gradient: dW_g = A_g (dY packed, Kg x N*PQ) * col(X_g)^T. Tasks (reduction split, group,
// row block, column block): the reduction over the pixels of the batch is cut into ns chunks of
// whole kc blocks, each chunk a GEMM of its own into its own partial dW (chunk 0 into dw), added
// in a fixed order afterwards (reduce_partials). A layer with few rows and columns (conv1: 64 x
// 147) and a long reduction otherwise gives a handful of tasks, or, split in rows, packs its B
// again for every row block; wgrad_plan weighs both against the cost of the partial sums.
struct WgradPlan {
  gemm::Split sp;
  int64_t ns, cpb;  // reduction chunks, kc blocks per chunk
};

template <class T>
WgradPlan wgrad_plan(int64_t G, int64_t M, int64_t Ncols, int64_t Kd, int64_t kc, int64_t nt) {
  const int64_t nkcb = ceil_div(Kd, kc);
  // Model units: one multiply-add of one element of dW (make_split's cost). Adding one partial
  // dW costs about 16 per element while dW stays in cache (a load from another core's cache, an
  // add, a store), about 128 once it does not (measured at 2 threads: a 2.4 MB partial of
  // r50_res4_3x3 cost ~0.3 ms), spread over the threads, plus a parallel region (~3 us).
  const double dw_bytes = double(G * M * Ncols) * double(sizeof(T));
  const double kReduce = dw_bytes > double(512 << 10) ? 128.0 : 16.0, kRegion = 3.0e5;
  // A thread that starts late (woken late, or sharing its core) delays the call by a part of a
  // task when every thread has one or two: charge a quarter task, so that the model prefers a
  // few tasks per thread over exactly one when the partial sums are cheap.
  auto modeled = [&](double c, int64_t ntasks, int64_t len) {
    const double per_task = ntasks >= nt ? double(nt) / double(ntasks) : 1.0;
    return c * double(len) * (1.0 + 0.25 * per_task);
  };
  double c1 = 0.0;
  WgradPlan best{gemm::make_split<T>(G, M, Ncols, nt, 6, &c1), 1, nkcb};
  double best_time = modeled(c1, best.sp.tasks(G), Kd);
  if (nt <= 1 || nkcb <= 1) return best;
  const int64_t ncb_min = ceil_div(Ncols, Blk<T>::NCMAX);
  const int64_t nmb_min = ceil_div(M, 4 * Blk<T>::MC);  // row blocks worth keeping whole
  const int64_t natural = G * ncb_min * nmb_min;
  const int64_t cap = (int64_t(64) << 20) / (G * M * Ncols * static_cast<int64_t>(sizeof(T)) + 1);
  // Candidates: enough chunks for 1, 2 and 4 tasks per thread with unsplit GEMMs.
  for (int64_t per : {int64_t(1), int64_t(2), int64_t(4)}) {
    int64_t ns = ceil_div(per * nt, natural);
    if (ns > nkcb) ns = nkcb;
    if (ns > cap + 1) ns = cap + 1;
    if (ns <= 1) continue;
    const int64_t cpb = ceil_div(nkcb, ns);
    ns = ceil_div(nkcb, cpb);
    double c = 0.0;
    const gemm::Split sp = gemm::make_split<T>(G * ns, M, Ncols, nt, 6, &c);
    const double t = modeled(c, sp.tasks(G * ns), cpb * kc) +
                     kReduce * double(ns - 1) * double(G * M * Ncols) / double(nt) + kRegion;
    if (t < best_time * 0.97) {
      best_time = t;
      best = WgradPlan{sp, ns, cpb};
    }
  }
  return best;
}

template <class T>
void backward_weight_gemm(const Conv2dParams& p, const T* dy, const T* x, T* dw) {
  using B_ = Blk<T>;
  const int64_t G = p.groups, M = p.Kg(), Cg = p.Cg(), Ncols = Cg * p.R * p.S;
  const int64_t PQ = p.P * p.Q, Kd = p.N * PQ, HW = p.H * p.W;
  if (Kd == 0) {
    std::memset(dw, 0, sizeof(T) * p.K * Ncols);
    return;
  }
  const int64_t nt = num_threads();
  const int64_t kc = gemm::kc_for<T>(Kd);
  const WgradPlan wp = wgrad_plan<T>(G, M, Ncols, Kd, kc, nt);
  const gemm::Split& sp = wp.sp;
  const int64_t chunk = wp.cpb * kc, dw_elems = p.K * Ncols;
  const int64_t Mpad = round_up(M, B_::MR);
  const int64_t ntasks = sp.tasks(G * wp.ns), nthr = ntasks < nt ? ntasks : nt;
  const size_t a_bytes = gemm::Arena::bytes<T>(G * Mpad * Kd);
  const size_t p_bytes = gemm::Arena::bytes<T>((wp.ns - 1) * dw_elems);
  const size_t b_bytes = gemm::Arena::bytes<T>(kc * sp.nc);
  char* base = static_cast<char*>(gemm::call_scratch().get(a_bytes + p_bytes + nthr * b_bytes));
  T* Ap = reinterpret_cast<T*>(base);
  T* part = reinterpret_cast<T*>(base + a_bytes);
  pack_a<T>(PackDyRows<T>{dy, p.K, M, PQ}, [M](int64_t) { return M; }, G, Mpad, Kd, kc, Ap);

  const Im2col<T> g0 = make_im2col(p, x);
  const int64_t per_chunk = G * sp.nmb * sp.ncb;
  gemm::run_tasks(ntasks, nthr, base + a_bytes + p_bytes, b_bytes, [&](int64_t t, char* mine) {
    const int64_t s = t / per_chunk, r0 = t - s * per_chunk;
    const int64_t g = r0 / (sp.nmb * sp.ncb), rem = r0 - g * sp.nmb * sp.ncb;
    const int64_t mb = rem / sp.ncb, cb = rem - mb * sp.ncb;
    const int64_t m0 = mb * sp.mc, m1 = m0 + sp.mc < M ? m0 + sp.mc : M;
    const int64_t n0 = cb * sp.nc, n1 = n0 + sp.nc < Ncols ? n0 + sp.nc : Ncols;
    const int64_t j0 = s * chunk, jl = Kd - j0 < chunk ? Kd - j0 : chunk;
    PackKdCols<T> pb{g0};
    pb.g.x = x + g * Cg * HW;
    auto pack_chunk = [&](int64_t kc0, int64_t kcl, int64_t c0, int64_t nc, T* Bp) {
      pb(j0 + kc0, kcl, c0, nc, Bp);
    };
    T* dst = s == 0 ? dw : part + (s - 1) * dw_elems;
    StoreRowMajor<T> st{dst + g * M * Ncols, Ncols, 0};
    // Chunks start on kc-block boundaries, where A's block layout restarts (gemm_cpu.h).
    gemm::macro_kernel(Ap + g * Mpad * Kd + j0 * Mpad, Mpad, jl, kc, m0, m1, n0, n1,
                       reinterpret_cast<T*>(mine), pack_chunk, st);
  });
  reduce_partials(dw, part, wp.ns - 1, dw_elems);
}

// ---------------------------------------------------------------------------------------------
// Weight gradient for stride 1 and few rows per group (grouped convolutions) or 1x1: blocked dot
// products with no packing at all, on the zero-padded layout of forward_direct:
//   dW[k][kd] = sum_n sum_v dyv[n][k][v] * xq[n][off[kd] + v]
// where v runs over the virtual columns p*Wp + q and dyv is dY in that layout with zeros in the
// columns q >= Q (for 1x1 / stride 1 / unpadded, xq = x and dyv = dy: nothing is copied).
// Register block: kDotI = 4 reduction rows kd x kDotJ output channels k of vector accumulators
// (AVX-512: 4 x 6 = 24 zmm, 10 loads per 24 FMAs; otherwise 4 x 3 = 12, 7 loads per 12 FMAs),
// reduced horizontally once at the end of a task.
// Cache blocking: the reduction runs in pieces of kDotV virtual columns of one image; for one
// piece a task walks its kd blocks (the 4 x rows of a block, 4 x 2 KiB, stay in L1) and, inside,
// its k blocks (dY rows from L2); the accumulators go to a per-task buffer between pieces, so
// the rows never stream from L3 (the unblocked loop ran at a third of peak on 1x1 layers).
// Tasks: (reduction split, group, run of kd blocks, run of k blocks), see dot_plan.
// ---------------------------------------------------------------------------------------------
constexpr int kDotI = 4;
#if defined(FC_ISA_avx512)
constexpr int kDotJ = 6;
#else
constexpr int kDotJ = 3;
#endif

template <class T>
constexpr int64_t dot_piece() { return 2048 / static_cast<int64_t>(sizeof(T)); }  // 2 KiB per row

// acc[i][j] (vectors, in memory) += a_i[v] * b_j[v] for v < nfull + tail (nfull a multiple of L).
template <class T>
FC_GEMM_INLINE void dot_tile(const T* const* a, const T* const* b, int64_t nfull, int tail, T* accm) {
  using V = Vec<T>;
  constexpr int L = V::size, I = kDotI, J = kDotJ;
  V acc[I][J];
  FC_GEMM_UNROLL for (int i = 0; i < I; ++i)
    FC_GEMM_UNROLL for (int j = 0; j < J; ++j) acc[i][j] = V::load(accm + (i * J + j) * L);
  for (int64_t v = 0; v < nfull; v += L) {
    V bv[J];
    FC_GEMM_UNROLL for (int j = 0; j < J; ++j) bv[j] = V::load(b[j] + v);
    FC_GEMM_UNROLL for (int i = 0; i < I; ++i) {
      const V av = V::load(a[i] + v);
      FC_GEMM_UNROLL for (int j = 0; j < J; ++j) acc[i][j] = V::fmadd(av, bv[j], acc[i][j]);
    }
  }
  if (tail) {
    V bv[J];
    FC_GEMM_UNROLL for (int j = 0; j < J; ++j) bv[j] = V::load_partial(b[j] + nfull, tail);
    FC_GEMM_UNROLL for (int i = 0; i < I; ++i) {
      const V av = V::load_partial(a[i] + nfull, tail);
      FC_GEMM_UNROLL for (int j = 0; j < J; ++j) acc[i][j] = V::fmadd(av, bv[j], acc[i][j]);
    }
  }
  FC_GEMM_UNROLL for (int i = 0; i < I; ++i)
    FC_GEMM_UNROLL for (int j = 0; j < J; ++j) acc[i][j].store(accm + (i * J + j) * L);
}

// Work split of the dot-product weight gradient. Splitting kd or k costs nothing here (no
// packing to repeat; a block's rows come from L2 either way), so tasks are first made finer in
// those; only when groups x kd blocks x k blocks cannot give every thread about 4 tasks is the
// reduction (the pieces of the batch) split too, into ns partial sums reduced in a fixed order
// afterwards (reduce_partials). ns depends only on the shape and the thread count, so the result
// is the same, bit for bit, from call to call at one thread count.
struct DotPlan {
  int64_t nib, njb;    // kd blocks (of kDotI) and k blocks (of kDotJ) per group
  int64_t ibt, jbt;    // blocks per task
  int64_t ntb_i, ntb_j;  // task runs per group
  int64_t npieces, ns, pps;  // pieces of the reduction, splits, pieces per split
  int64_t tasks(int64_t G) const { return ns * G * ntb_i * ntb_j; }
};

inline DotPlan dot_plan(int64_t G, int64_t Kg, int64_t Kd, int64_t npieces, int64_t nt,
                        int64_t dw_elems, int64_t elem_bytes) {
  DotPlan d;
  d.nib = ceil_div(Kd, kDotI);
  d.njb = ceil_div(Kg, kDotJ);
  d.ibt = d.nib < 8 ? d.nib : 8;                          // 32 kd rows
  const int64_t jmax = ceil_div(64, kDotJ);               // about 64 output channels
  d.jbt = d.njb < jmax ? d.njb : jmax;
  const int64_t want = nt > 1 ? 4 * nt : 1;
  auto runs = [&]() {
    d.ntb_i = ceil_div(d.nib, d.ibt);
    d.ntb_j = ceil_div(d.njb, d.jbt);
    return G * d.ntb_i * d.ntb_j;
  };
  while (runs() < want && (d.ibt > 1 || d.jbt > 1)) {
    if (d.jbt >= d.ibt && d.jbt > 1) d.jbt = ceil_div(d.jbt, 2);
    else d.ibt = ceil_div(d.ibt, 2);
  }
  const int64_t r = runs();
  d.npieces = npieces;
  d.ns = 1;
  if (r < want && nt > 1) {
    d.ns = ceil_div(want, r);
    // Each partial sum costs one pass over dW; keep them to at most 64 MiB and a piece each.
    const int64_t cap = (int64_t(64) << 20) / (dw_elems * elem_bytes + 1);
    if (d.ns > cap) d.ns = cap;
    if (d.ns > npieces) d.ns = npieces;
    if (d.ns < 1) d.ns = 1;
  }
  d.pps = ceil_div(npieces, d.ns);
  d.ns = ceil_div(npieces, d.pps);
  return d;
}

// Dot products or the packed GEMM. Measured (1 core, AVX-512, float32): the dot path runs at
// about 80 GFLOP/s on 1x1 layers and 95-105 on 3x3 layers with Kg = 64 (its input rows overlap),
// whatever the channel counts; the GEMM's B packing is amortised over Kg rows and its A packing
// over Cg*R*S columns, so it wins once both are large: 1x1 2x64x56x56 k64 dot 0.65 ms vs GEMM
// 1.0, k256 2.5 vs 3.2, 2x256 k64 2.5 vs 2.75, but 4x256x28x28 k256 5.2 vs 3.9 and 4x512x28x28
// k128 5.1 vs 3.9; 3x3 k64 56x56 4.4 vs 4.7 and 224x224 39 vs 42, but 3x3 k128 28x28 9.6 vs 8.1.
// Short rows (7x7, 14x14 images) pay the per-piece accumulator traffic: GEMM.
inline bool use_dot_bw(const Conv2dParams& p) {
  if (p.stride_h != 1 || p.stride_w != 1 || p.P * p.Q == 0) return false;
  const bool flat = p.R == 1 && p.S == 1 && p.pad_t == 0 && p.pad_l == 0 && p.P == p.H && p.Q == p.W;
  const int64_t Kg = p.Kg(), Cg = p.Cg();
  if (flat) return (Kg <= 64 || Cg <= 64) && p.P * p.Q >= 256;
  if (Kg > 64) return false;
  const int64_t Wp = p.Q + (p.S - 1) * p.dil_w;
  const double waste = double((p.P - 1) * Wp + p.Q) / double(p.P * p.Q);
  return Kg <= 32 ? waste <= 1.15 : waste <= 1.05;
}

template <class T>
void backward_weight_dot(const Conv2dParams& p, const T* dy, const T* x, T* dw) {
  using V = Vec<T>;
  constexpr int L = V::size, I = kDotI, J = kDotJ;
  const int64_t N = p.N, G = p.groups, Kg = p.Kg(), Cg = p.Cg(), RS = p.R * p.S, Kd = Cg * RS;
  const int64_t P = p.P, Q = p.Q, PQ = P * Q;
  const bool flat = p.R == 1 && p.S == 1 && p.pad_t == 0 && p.pad_l == 0 && P == p.H && Q == p.W;
  const int64_t Hp = flat ? 1 : P + (p.R - 1) * p.dil_h;
  const int64_t Wp = flat ? PQ : Q + (p.S - 1) * p.dil_w;
  const int64_t plane = Hp * Wp, Nv = flat ? PQ : (P - 1) * Wp + Q;
  // dY rows of the padded layout start on whole vectors (unaligned loads that cross cache lines
  // cost two); the input rows cannot (they start at every shift s).
  const int64_t ld = flat ? PQ : round_up(Nv, L);
  const int64_t VC = dot_piece<T>(), ppi = ceil_div(Nv, VC);
  const int64_t nt = num_threads();
  const int64_t dw_elems = p.K * Kd;
  const DotPlan d = dot_plan(G, Kg, Kd, N * ppi, nt, dw_elems, sizeof(T));
  const int64_t ntasks = d.tasks(G), nthr = ntasks < nt ? ntasks : nt;
  const size_t o_bytes = gemm::Arena::bytes<int64_t>(Kd);
  const size_t x_bytes = flat ? 0 : gemm::Arena::bytes<T>(N * p.C * plane);
  const size_t y_bytes = flat ? 0 : gemm::Arena::bytes<T>(N * p.K * ld);
  const size_t p_bytes = gemm::Arena::bytes<T>((d.ns - 1) * dw_elems);
  const size_t a_bytes = gemm::Arena::bytes<T>(d.ibt * I * d.jbt * J * L);  // per thread
  char* base = static_cast<char*>(
      gemm::call_scratch().get(o_bytes + x_bytes + y_bytes + p_bytes + nthr * a_bytes));
  int64_t* off = reinterpret_cast<int64_t*>(base);
  T* part = reinterpret_cast<T*>(base + o_bytes + x_bytes + y_bytes);
  for (int64_t kd = 0; kd < Kd; ++kd) {
    const int64_t c = kd / RS, rs = kd - c * RS, r = rs / p.S, s = rs - r * p.S;
    off[kd] = c * plane + r * p.dil_h * Wp + s * p.dil_w;
  }
  const T* xq = x;
  const T* dyv = dy;
  if (!flat) {
    T* xp = reinterpret_cast<T*>(base + o_bytes);
    T* yv = reinterpret_cast<T*>(base + o_bytes + x_bytes);
    pad_copy(p, x, xp, Hp, Wp);
    parallel_for(N * p.K, 1 + 16384 / (Nv + 1), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const T* src = dy + i * PQ;
        T* dd = yv + i * ld;
        for (int64_t pp = 0; pp < P; ++pp) {
          std::memcpy(dd + pp * Wp, src + pp * Q, sizeof(T) * Q);
          if (pp + 1 < P) std::memset(dd + pp * Wp + Q, 0, sizeof(T) * (Wp - Q));
        }
        for (int64_t v = Nv; v < ld; ++v) dd[v] = T(0);
      }
    });
    xq = xp;
    dyv = yv;
  }
  const int64_t xstride = p.C * plane, ystride = p.K * ld;
  const int64_t per_split = G * d.ntb_i * d.ntb_j;
  gemm::run_tasks(ntasks, nthr, base + o_bytes + x_bytes + y_bytes + p_bytes, a_bytes,
                  [&](int64_t t, char* mine) {
    const int64_t s = t / per_split, r0 = t - s * per_split;
    const int64_t g = r0 / (d.ntb_i * d.ntb_j), r1 = r0 - g * d.ntb_i * d.ntb_j;
    const int64_t ti = r1 / d.ntb_j, tj = r1 - ti * d.ntb_j;
    const int64_t ib0 = ti * d.ibt, ib1 = ib0 + d.ibt < d.nib ? ib0 + d.ibt : d.nib;
    const int64_t jb0 = tj * d.jbt, jb1 = jb0 + d.jbt < d.njb ? jb0 + d.jbt : d.njb;
    const int64_t pc0 = s * d.pps, pc1 = pc0 + d.pps < d.npieces ? pc0 + d.pps : d.npieces;
    T* acc = reinterpret_cast<T*>(mine);
    const int64_t nacc = (ib1 - ib0) * (jb1 - jb0) * I * J * L;
    for (int64_t e = 0; e < nacc; ++e) acc[e] = T(0);
    const T* xg = xq + g * Cg * plane;
    const T* yg = dyv + g * Kg * ld;
    for (int64_t pc = pc0; pc < pc1; ++pc) {
      const int64_t n = pc / ppi, v0 = (pc - n * ppi) * VC;
      const int64_t len = Nv - v0 < VC ? Nv - v0 : VC;
      const int64_t nfull = len / L * L;
      const int tail = static_cast<int>(len - nfull);
      const T* xn = xg + n * xstride + v0;
      const T* yn = yg + n * ystride + v0;
      T* blk = acc;
      for (int64_t ib = ib0; ib < ib1; ++ib) {
        const T* a[I];
        FC_GEMM_UNROLL for (int i = 0; i < I; ++i) {
          const int64_t kd = ib * I + i;
          a[i] = xn + off[kd < Kd ? kd : Kd - 1];  // rows past Kd repeat the last (dropped)
        }
        for (int64_t jb = jb0; jb < jb1; ++jb, blk += I * J * L) {
          const T* b[J];
          FC_GEMM_UNROLL for (int j = 0; j < J; ++j) {
            const int64_t k = jb * J + j;
            b[j] = yn + (k < Kg ? k : Kg - 1) * ld;
          }
          dot_tile(a, b, nfull, tail, blk);
        }
      }
    }
    T* dst = (s == 0 ? dw : part + (s - 1) * dw_elems) + g * Kg * Kd;
    const T* blk = acc;
    for (int64_t ib = ib0; ib < ib1; ++ib)
      for (int64_t jb = jb0; jb < jb1; ++jb, blk += I * J * L)
        for (int i = 0; i < I; ++i)
          for (int j = 0; j < J; ++j) {
            const int64_t kd = ib * I + i, k = jb * J + j;
            if (kd < Kd && k < Kg) dst[k * Kd + kd] = V::load(blk + (i * J + j) * L).reduce_add();
          }
  });
  reduce_partials(dw, part, d.ns - 1, dw_elems);
}

template <class T>
void forward_impl(const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y) {
  if (p.N == 0) return;
  PackWeightRows<T> pa{w, p.Kg(), p.Cg() * p.R * p.S};
  forward_gemm(p, x, pa, bias, y);
}

template <class T>
void backward_input_impl(const Conv2dParams& p, const T* dy, const T* w, T* dx) {
  if (p.N == 0) return;
  if (p.stride_h == 1 && p.stride_w == 1) {
    // dx = conv(dY, W') with W'[c][k][R-1-r][S-1-s], padding (R-1)*dil - pad, stride 1.
    Conv2dParams q;
    q.N = p.N; q.C = p.K; q.H = p.P; q.W = p.Q;
    q.K = p.C; q.R = p.R; q.S = p.S; q.P = p.H; q.Q = p.W;
    q.groups = p.groups;
    q.dil_h = p.dil_h; q.dil_w = p.dil_w;
    q.pad_t = (p.R - 1) * p.dil_h - p.pad_t;
    q.pad_l = (p.S - 1) * p.dil_w - p.pad_l;
    PackWeightFlipped<T> pa{w, p.Kg(), p.Cg(), p.R * p.S};
    forward_gemm(q, dy, pa, static_cast<const T*>(nullptr), dx);
  } else if (use_phase_dgrad(p)) {
    backward_input_phases(p, dy, w, dx);
  } else {
    backward_input_col2im(p, dy, w, dx);
  }
}

template <class T>
void backward_weight_impl(const Conv2dParams& p, const T* dy, const T* x, T* dw) {
  if (p.N > 0 && use_dot_bw(p)) return backward_weight_dot(p, dy, x, dw);
  backward_weight_gemm(p, dy, x, dw);
}

// db[k] = sum over n, p, q of dy[n][k][p][q]; parallel over k.
template <class T>
void backward_bias_impl(const Conv2dParams& p, const T* dy, T* db) {
  using V = Vec<T>;
  constexpr int L = V::size;
  const int64_t K = p.K, PQ = p.P * p.Q, N = p.N;
  parallel_for(K, 1 + (1 << 16) / (N * PQ + 1), [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      V a0 = V::zero(), a1 = V::zero();
      T tail = T(0);
      for (int64_t n = 0; n < N; ++n) {
        const T* s = dy + (n * K + k) * PQ;
        int64_t i = 0;
        for (; i + 2 * L <= PQ; i += 2 * L) {
          a0 = a0 + V::load(s + i);
          a1 = a1 + V::load(s + i + L);
        }
        for (; i < PQ; ++i) tail += s[i];
      }
      db[k] = (a0 + a1).reduce_add() + tail;
    }
  });
}

}  // namespace

#define FC_CONV2D_DEFINE(T)                                                                  \
  void conv2d_forward(const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y) {  \
    forward_impl<T>(p, x, w, bias, y);                                                       \
  }                                                                                          \
  void conv2d_backward_input(const Conv2dParams& p, const T* dy, const T* w, T* dx) {        \
    backward_input_impl<T>(p, dy, w, dx);                                                    \
  }                                                                                          \
  void conv2d_backward_weight(const Conv2dParams& p, const T* dy, const T* x, T* dw) {       \
    backward_weight_impl<T>(p, dy, x, dw);                                                   \
  }                                                                                          \
  void conv2d_backward_bias(const Conv2dParams& p, const T* dy, T* db) {                     \
    backward_bias_impl<T>(p, dy, db);                                                        \
  }
FC_CONV2D_DEFINE(float)
FC_CONV2D_DEFINE(double)
#undef FC_CONV2D_DEFINE

FC_ISA_END
