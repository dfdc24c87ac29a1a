// Dense and grouped 2-D convolution on the GPU: forward (bias fused), input gradient (dgrad) and
// weight gradient (wgrad), NCHW, weights (K, C/groups, R, S), any stride, padding (asymmetric
// included), dilation and groups. The twin of csrc/cpu/conv2d_cpu.cpp (same semantics).
//
// Algorithm: every direction is an implicit GEMM per group, C[M x N] = A[M x Kd] * B[Kd x N],
// whose operands are gathered from the NCHW tensors on the fly (no im2col buffer):
//   forward  M = Kg,  N = N*P*Q (pixels of the batch), Kd = Cg*R*S
//            A = W_g (rows of the weights), B = col(X_g), store y (+ bias[k]) in the epilogue.
//   dgrad    M = Cg,  N = N*H*W (input pixels),        Kd = Kg*R*S
//            A[c][(k,r,s)] = w[k][c][r][s], B[(k,r,s)][(n,h,w)] = dy[n][k][p][q] where
//            h = p*sh - pt + r*dh (and likewise w) has an integer solution inside the output,
//            else 0. Stride > 1: one GEMM per stride phase (h mod sh, w mod sw) of the input
//            pixels over only the taps r = r0 + i*sh/gcd(sh, dh) that reach that phase, so no
//            structural zeros are multiplied (N and Kd shrink by about sh*sw each).
//   wgrad    M = Kg,  N = Cg*R*S,                     Kd = N*P*Q (the whole batch's pixels)
//            A = dY_g rows, B[(n,p,q)][(c,r,s)] = x[n][c][p*sh - pt + r*dh][q*sw - pl + s*dw].
//            When the output is small and the reduction long, split-K: blockIdx.z also runs
//            over `splits` contiguous ranges of Kd, each block writes its partial sums (acc_t)
//            to its own slice of a caller-given workspace, and splitk_reduce_kernel adds the
//            slices in split order: deterministic, no atomics.
//   1x1 stride-1 unpadded convolutions (ONE = true): plain per-group GEMMs on the NCHW planes,
//   no tap decoding or bounds tests.
// One SIMT kernel (igemm_kernel) serves the three directions through an Op struct that knows how
// to load an element of A or B and how to store one of C. Block tile BM x BN x 8 (BK), each
// thread a TM x TN register block (rows ty + i*BM/TM, columns tx + j*BN/TN: conflict-free shared
// reads and coalesced stores), shared-memory tiles double-buffered: the next k-slice is loaded
// from global memory into registers while the current one is multiplied, then stored to the
// other buffer, one __syncthreads per k-slice. Every load and store is predicated, so no size
// needs to divide a tile. Per thread, the fixed coordinate of its loads (an A row, a B column)
// is decoded once; the k coordinate of its KA / KB consecutive elements is decoded once per
// slice and then stepped.
// Tile configurations (pick_tile, or forced by `tile`): 0: 128x128 (8x8 per thread, 256
// threads), 1: 64x64 (4x4, 256), 2: 32x32 (4x4, 64); the heuristic takes the largest one that
// still gives about a wave of blocks on an H100/H200 (132 SMs). 3, 4: tensor cores
// (igemm_wmma_kernel, float accumulators, the same Op loaders and epilogue; 3: 64x64 block tile,
// 4 warps of 2x2 wmma fragments; 4: 128x128, 8 warps of 2x4): for __half and __nv_bfloat16
// (16x16x16 fragments) the default; for float through TF32 (16x16x8 fragments, sm_80+, each
// operand rounded to TF32 with __float_to_tf32 as it is staged to shared memory, float
// accumulation), chosen by the heuristic only when the caller allows TF32 (tile -2: what
// fastconv.backends.cuda.allow_tf32 passes) and the GEMM is at least 16 x 16. 4 when it still
// fills the GPU.
// Storage types float, double, __half, __nv_bfloat16; SIMT shared tiles and accumulators in acc_t
// (float for the 16-bit types); tensor-core shared tiles in the storage type (TF32-rounded float). Index math: addresses in int64, GEMM coordinates in int (the
// launchers check that M, N and Kd fit).
// Not here yet: mma.sync / wgmma, vectorised 128-bit loads, channels-last layouts (timing-based
// tile selection is fastconv/_gpu/autotune.py).
#include "cuda/compat.h"
#include "cuda/conv2d_cuda.h"

#if !FC_EMULATION
#include <mma.h>
#endif

#include <algorithm>
#include <climits>
#include <type_traits>

#include "common/geometry.h"

namespace fastconv {
namespace cuda {
namespace {

constexpr int kBK = 8;          // depth of a k-slice
constexpr int kSMs = 132;       // H100 / H200: the heuristics aim at about one wave of blocks
constexpr int kMinSplitK = 128; // shortest reduction range worth a split of its own

// 32-bit copy of the geometry for the index math.
struct Geo {
  int N, C, H, W, K, R, S, P, Q, Cg, Kg, sh, sw, dh, dw, pt, pl, RS, HW, PQ;
};

Geo make_geo(const Conv2dParams& p) {
  Geo g;
  g.N = int(p.N), g.C = int(p.C), g.H = int(p.H), g.W = int(p.W), g.K = int(p.K);
  g.R = int(p.R), g.S = int(p.S), g.P = int(p.P), g.Q = int(p.Q);
  g.Cg = int(p.Cg()), g.Kg = int(p.Kg());
  g.sh = int(p.stride_h), g.sw = int(p.stride_w), g.dh = int(p.dil_h), g.dw = int(p.dil_w);
  g.pt = int(p.pad_t), g.pl = int(p.pad_l);
  g.RS = g.R * g.S, g.HW = g.H * g.W, g.PQ = g.P * g.Q;
  return g;
}

bool is_one_by_one(const Conv2dParams& p) {
  return p.R == 1 && p.S == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_t == 0 &&
         p.pad_b == 0 && p.pad_l == 0 && p.pad_r == 0;
}

// (c, r, s) of a reduction index k = (c*R + r)*S + s, stepped one k at a time.
struct Tap {
  int c, r, s;
  __device__ __forceinline__ Tap(int k, const Geo& g) {
    c = k / g.RS;
    const int rs = k - c * g.RS;
    r = rs / g.S;
    s = rs - r * g.S;
  }
  __device__ __forceinline__ void step(const Geo& g) {
    if (++s == g.S) {
      s = 0;
      if (++r == g.R) r = 0, ++c;
    }
  }
};

// (img, p, q) of a pixel index n = (img*P + p)*Q + q, stepped one pixel at a time.
struct Pix {
  int img, p, q;
  __device__ __forceinline__ Pix(int n, int Pn, int Qn) {
    img = n / (Pn * Qn);
    const int pq = n - img * Pn * Qn;
    p = pq / Qn;
    q = pq - p * Qn;
  }
  __device__ __forceinline__ void step(int Pn, int Qn) {
    if (++q == Qn) {
      q = 0;
      if (++p == Pn) p = 0, ++img;
    }
  }
};

// ---------------------------------------------------------------------------------------------
// The three directions as GEMM operand loaders and epilogues.
// a_ctx(g, m) / b_ctx(g, n): a thread's fixed row of A / column of B; a_load / b_load fill
// `out` with the elements k0 .. k0+KA-1 of that row (column), 0 at k >= kend; c_ctx(n) and
// store(g, split, m, ctx, v) write one element of C.
// ---------------------------------------------------------------------------------------------
template <class T, bool ONE>
struct FwdOp {
  using storage = T;
  using acc = acc_t<T>;
  gptr<const T> x, w, bias;
  gptr<T> y;
  Geo g;
  int M, N, Kd;

  struct Row { int64_t base; bool ok; };
  struct Col { int64_t base; int ih0, iw0; bool ok; };
  struct Out { int64_t base; bool ok; };

  __device__ __forceinline__ Row a_ctx(int grp, int m) const {
    return Row{int64_t(grp * g.Kg + m) * Kd, m < M};
  }
  template <int KA>
  __device__ __forceinline__ void a_load(const Row& rw, int k0, int kend, acc (&out)[KA]) const {
#pragma unroll
    for (int j = 0; j < KA; ++j)
      out[j] = rw.ok && k0 + j < kend ? to_acc(w[rw.base + k0 + j]) : acc(0);
  }
  __device__ __forceinline__ Col b_ctx(int grp, int n) const {
    Col c{0, 0, 0, n < N};
    if (!c.ok) return c;
    const Pix px(n, g.P, g.Q);
    c.base = (int64_t(px.img) * g.C + int64_t(grp) * g.Cg) * g.HW;
    if (ONE) c.base += px.p * g.W + px.q;
    c.ih0 = px.p * g.sh - g.pt;
    c.iw0 = px.q * g.sw - g.pl;
    return c;
  }
  template <int KB>
  __device__ __forceinline__ void b_load(const Col& cl, int k0, int kend, acc (&out)[KB]) const {
    if (ONE) {
#pragma unroll
      for (int j = 0; j < KB; ++j)
        out[j] = cl.ok && k0 + j < kend ? to_acc(x[cl.base + int64_t(k0 + j) * g.HW]) : acc(0);
      return;
    }
    Tap tp(k0, g);
#pragma unroll
    for (int j = 0; j < KB; ++j) {
      const int ih = cl.ih0 + tp.r * g.dh, iw = cl.iw0 + tp.s * g.dw;
      out[j] = cl.ok && k0 + j < kend && ih >= 0 && ih < g.H && iw >= 0 && iw < g.W
                   ? to_acc(x[cl.base + int64_t(tp.c) * g.HW + ih * g.W + iw])
                   : acc(0);
      tp.step(g);
    }
  }
  __device__ __forceinline__ Out c_ctx(int n) const {
    if (n >= N) return Out{0, false};
    const int img = n / g.PQ;
    return Out{int64_t(img) * g.K * g.PQ + (n - img * g.PQ), true};
  }
  __device__ __forceinline__ void store(int grp, int, int m, const Out& o, acc v) const {
    if (!o.ok || m >= M) return;
    const int k = grp * g.Kg + m;
    if (bias) v += to_acc(bias[k]);
    y[o.base + int64_t(k) * g.PQ] = from_acc<T>(v);
  }
};

// One stride phase (ph, pw) of the input gradient: the input pixels h = ph + hh*sh,
// w = pw + ww*sw (hh < Hp, ww < Wp) and the only taps that reach them from an output pixel,
// r = r0 + i*rstep (i < nr), s = s0 + j*sstep (j < ns); output row p = pp0(h) - i*dp.
struct Phase {
  int ph, pw, Hp, Wp, r0, rstep, nr, s0, sstep, ns, dp, dq;
};

template <class T, bool ONE>
struct DgradOp {
  using storage = T;
  using acc = acc_t<T>;
  gptr<const T> dy, w;
  gptr<T> dx;
  Geo g;
  Phase ph;
  int M, N, Kd;

  struct Row { int64_t base; bool ok; };
  struct Col { int64_t base; int p0, q0; bool ok; };
  struct Out { int64_t base; bool ok; };

  // (k, i, j) of a reduction index, stepped one at a time.
  struct KTap {
    int k, i, j;
    __device__ __forceinline__ KTap(int kd, const Phase& f) {
      k = kd / (f.nr * f.ns);
      const int ij = kd - k * f.nr * f.ns;
      i = ij / f.ns;
      j = ij - i * f.ns;
    }
    __device__ __forceinline__ void step(const Phase& f) {
      if (++j == f.ns) {
        j = 0;
        if (++i == f.nr) i = 0, ++k;
      }
    }
  };

  // A[c][(k, i, j)] = w[g*Kg + k][c][r0 + i*rstep][s0 + j*sstep]
  __device__ __forceinline__ Row a_ctx(int grp, int m) const {
    return Row{int64_t(grp) * g.Kg * g.Cg * g.RS + int64_t(m) * g.RS, m < M};
  }
  template <int KA>
  __device__ __forceinline__ void a_load(const Row& rw, int k0, int kend, acc (&out)[KA]) const {
    KTap tp(k0, ph);
#pragma unroll
    for (int j = 0; j < KA; ++j) {
      const int rs = (ph.r0 + tp.i * ph.rstep) * g.S + ph.s0 + tp.j * ph.sstep;
      out[j] = rw.ok && k0 + j < kend ? to_acc(w[rw.base + int64_t(tp.k) * g.Cg * g.RS + rs])
                                      : acc(0);
      tp.step(ph);
    }
  }
  // B[(k, i, j)][(img, hh, ww)] = dy[img][g*Kg + k][p0 - i*dp][q0 - j*dq] inside the output
  __device__ __forceinline__ Col b_ctx(int grp, int n) const {
    Col c{0, 0, 0, n < N};
    if (!c.ok) return c;
    const Pix px(n, ph.Hp, ph.Wp);
    c.base = (int64_t(px.img) * g.K + int64_t(grp) * g.Kg) * g.PQ;
    if (ONE) c.base += px.p * g.Q + px.q;
    // exact divisions: r0 was chosen so that sh divides h + pt - r0*dh (floor for negatives)
    const int th = ph.ph + px.p * g.sh + g.pt - ph.r0 * g.dh;
    const int tw = ph.pw + px.q * g.sw + g.pl - ph.s0 * g.dw;
    c.p0 = th >= 0 ? th / g.sh : -((-th) / g.sh);
    c.q0 = tw >= 0 ? tw / g.sw : -((-tw) / g.sw);
    return c;
  }
  template <int KB>
  __device__ __forceinline__ void b_load(const Col& cl, int k0, int kend, acc (&out)[KB]) const {
    if (ONE) {
#pragma unroll
      for (int j = 0; j < KB; ++j)
        out[j] = cl.ok && k0 + j < kend ? to_acc(dy[cl.base + int64_t(k0 + j) * g.PQ]) : acc(0);
      return;
    }
    KTap tp(k0, ph);
#pragma unroll
    for (int j = 0; j < KB; ++j) {
      const int p = cl.p0 - tp.i * ph.dp, q = cl.q0 - tp.j * ph.dq;
      out[j] = cl.ok && k0 + j < kend && p >= 0 && p < g.P && q >= 0 && q < g.Q
                   ? to_acc(dy[cl.base + int64_t(tp.k) * g.PQ + p * g.Q + q])
                   : acc(0);
      tp.step(ph);
    }
  }
  __device__ __forceinline__ Out c_ctx(int n) const {
    if (n >= N) return Out{0, false};
    const Pix px(n, ph.Hp, ph.Wp);
    return Out{int64_t(px.img) * g.C * g.HW + (ph.ph + px.p * g.sh) * g.W + ph.pw + px.q * g.sw,
               true};
  }
  __device__ __forceinline__ void store(int grp, int, int m, const Out& o, acc v) const {
    if (!o.ok || m >= M) return;
    dx[o.base + int64_t(grp * g.Cg + m) * g.HW] = from_acc<T>(v);
  }
};

template <class T, bool ONE>
struct WgradOp {
  using storage = T;
  using acc = acc_t<T>;
  gptr<const T> dy, x;
  gptr<T> dw;
  gptr<acc> ws;  // split-K partial sums [splits][K][Cg*R*S], unused when splits == 1
  Geo g;
  int M, N, Kd, splits;

  struct Row { int64_t base; bool ok; };
  struct Col { int64_t base; int roff, soff; bool ok; };
  struct Out { int n; bool ok; };

  // A[k][(img, p, q)] = dy[img][g*Kg + k][p][q]
  __device__ __forceinline__ Row a_ctx(int grp, int m) const {
    return Row{int64_t(grp * g.Kg + m) * g.PQ, m < M};
  }
  template <int KA>
  __device__ __forceinline__ void a_load(const Row& rw, int k0, int kend, acc (&out)[KA]) const {
    int img = k0 / g.PQ, pq = k0 - img * g.PQ;
#pragma unroll
    for (int j = 0; j < KA; ++j) {
      out[j] = rw.ok && k0 + j < kend
                   ? to_acc(dy[int64_t(img) * g.K * g.PQ + rw.base + pq]) : acc(0);
      if (++pq == g.PQ) pq = 0, ++img;
    }
  }
  // B[(img, p, q)][(c, r, s)] = x[img][g*Cg + c][p*sh - pt + r*dh][q*sw - pl + s*dw]
  __device__ __forceinline__ Col b_ctx(int grp, int n) const {
    Col c{0, 0, 0, n < N};
    if (!c.ok) return c;
    const Tap tp(n, g);
    c.base = int64_t(grp * g.Cg + tp.c) * g.HW;
    c.roff = tp.r * g.dh - g.pt;
    c.soff = tp.s * g.dw - g.pl;
    return c;
  }
  template <int KB>
  __device__ __forceinline__ void b_load(const Col& cl, int k0, int kend, acc (&out)[KB]) const {
    if (ONE) {
      int img = k0 / g.PQ, pq = k0 - img * g.PQ;
#pragma unroll
      for (int j = 0; j < KB; ++j) {
        out[j] = cl.ok && k0 + j < kend
                     ? to_acc(x[int64_t(img) * g.C * g.HW + cl.base + pq]) : acc(0);
        if (++pq == g.PQ) pq = 0, ++img;
      }
      return;
    }
    Pix px(k0, g.P, g.Q);
#pragma unroll
    for (int j = 0; j < KB; ++j) {
      const int ih = px.p * g.sh + cl.roff, iw = px.q * g.sw + cl.soff;
      out[j] = cl.ok && k0 + j < kend && ih >= 0 && ih < g.H && iw >= 0 && iw < g.W
                   ? to_acc(x[int64_t(px.img) * g.C * g.HW + cl.base + ih * g.W + iw])
                   : acc(0);
      px.step(g.P, g.Q);
    }
  }
  __device__ __forceinline__ Out c_ctx(int n) const { return Out{n, n < N}; }
  __device__ __forceinline__ void store(int grp, int split, int m, const Out& o, acc v) const {
    if (!o.ok || m >= M) return;
    const int64_t i = int64_t(grp * g.Kg + m) * N + o.n;
    if (splits == 1) dw[i] = from_acc<T>(v);
    else ws[int64_t(split) * g.K * N + i] = v;
  }
};

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

// One BM x BN tile of C per block (blockIdx.x: columns, blockIdx.y: rows, blockIdx.z: group *
// splits + split), (BM/TM) * (BN/TN) threads, each a TM x TN register block.
template <class Op, int BM, int BN, int TM, int TN>
__global__ void __launch_bounds__((BM / TM) * (BN / TN))
igemm_kernel(Op op, int splits, int chunk) {
  using A = typename Op::acc;
  constexpr int NT = (BM / TM) * (BN / TN);
  constexpr int KA = BM * kBK / NT, KB = BN * kBK / NT;  // elements per thread per k-slice
  constexpr int TPR = kBK / KA;                          // threads per row of the A slice
  static_assert(KA >= 1 && kBK % KA == 0 && KB >= 1 && kBK % KB == 0 && NT % BN == 0,
                "igemm_kernel: tile shape does not split evenly over the threads");
  constexpr int RM = BM / TM, RN = BN / TN;
  FC_SHARED(A, As, [2][kBK][BM + 4]);
  FC_SHARED(A, Bs, [2][kBK][BN + 4]);

  const int t = int(threadIdx.x);
  const int grp = int(blockIdx.z) / splits, split = int(blockIdx.z) % splits;
  const int kbeg = split * chunk, kend = min(op.Kd, kbeg + chunk);
  const int m0 = int(blockIdx.y) * BM, n0 = int(blockIdx.x) * BN;
  const int a_m = t / TPR, a_k = (t % TPR) * KA;
  const int b_n = t % BN, b_k = (t / BN) * KB;
  const typename Op::Row arow = op.a_ctx(grp, m0 + a_m);
  const typename Op::Col bcol = op.b_ctx(grp, n0 + b_n);

  A ra[KA], rb[KB];
  A accum[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) accum[i][j] = A(0);

  op.a_load(arow, kbeg + a_k, kend, ra);
  op.b_load(bcol, kbeg + b_k, kend, rb);
#pragma unroll
  for (int j = 0; j < KA; ++j) As[0][a_k + j][a_m] = ra[j];
#pragma unroll
  for (int j = 0; j < KB; ++j) Bs[0][b_k + j][b_n] = rb[j];
  __syncthreads();

  const int tx = t % RN, ty = t / RN;
  const int steps = kend > kbeg ? (kend - kbeg + kBK - 1) / kBK : 0;
  for (int step = 0; step < steps; ++step) {
    const int cur = step & 1;
    const bool more = step + 1 < steps;
    if (more) {
      const int k0 = kbeg + (step + 1) * kBK;
      op.a_load(arow, k0 + a_k, kend, ra);
      op.b_load(bcol, k0 + b_k, kend, rb);
    }
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      A a[TM], b[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) a[i] = As[cur][kk][ty + i * RM];
#pragma unroll
      for (int j = 0; j < TN; ++j) b[j] = Bs[cur][kk][tx + j * RN];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) accum[i][j] += a[i] * b[j];
    }
    if (more) {
#pragma unroll
      for (int j = 0; j < KA; ++j) As[cur ^ 1][a_k + j][a_m] = ra[j];
#pragma unroll
      for (int j = 0; j < KB; ++j) Bs[cur ^ 1][b_k + j][b_n] = rb[j];
    }
    __syncthreads();
  }

#pragma unroll
  for (int j = 0; j < TN; ++j) {
    const typename Op::Out o = op.c_ctx(n0 + tx + j * RN);
#pragma unroll
    for (int i = 0; i < TM; ++i) op.store(grp, split, m0 + ty + i * RM, o, accum[i][j]);
  }
}

// Shared arrays that WMMA loads and stores from: 32-byte aligned on the GPU (the emulation does
// not need it: its FC_SHARED arrays carry the race and initialisation checks).
#if FC_EMULATION
#define FC_SHARED_WMMA(T, name, dims) FC_SHARED(T, name, dims)
#else
#define FC_SHARED_WMMA(T, name, dims) __shared__ __align__(32) T name dims
#endif

template <class T> struct is_16bit : std::false_type {};
template <> struct is_16bit<__half> : std::true_type {};
template <> struct is_16bit<__nv_bfloat16> : std::true_type {};
// Storage types the tensor-core tiles serve: the 16-bit ones natively, float through TF32.
template <class T>
struct has_wmma : std::integral_constant<bool, is_16bit<T>::value || std::is_same<T, float>::value> {};

// The tensor-core operands per storage type: fragment element type, shared-memory element type,
// fragment depth WK, row padding of the shared tiles (rows stay multiples of 16 bytes and
// fragment pointers 32-byte aligned) and the conversion of a loaded (float) element.
template <class T>
struct WmmaIn {
  using frag = T;
  using smem = T;
  static constexpr int WK = 16, PAD = 8;
  static __device__ __forceinline__ T cvt(float v) { return from_acc<T>(v); }
};
// TF32 exists from sm_80 on (mma.h declares it only there); older devices never launch it.
#if FC_EMULATION || !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define FC_HAS_TF32 1
template <>
struct WmmaIn<float> {
  using frag = nvcuda::wmma::precision::tf32;
  using smem = float;
  static constexpr int WK = 8, PAD = 4;
  // round to nearest, ties away (the tensor cores themselves ignore the low 13 bits: truncation)
  static __device__ __forceinline__ float cvt(float v) { return nvcuda::wmma::__float_to_tf32(v); }
};
#else
#define FC_HAS_TF32 0
#endif

// Tensor cores: one BM x BN tile of C per block (grid as in igemm_kernel), NT/32 warps in a
// WM x (NT/32/WM) grid, each warp a (BM/WM) x (BN/WN) tile as FM x FN wmma 16x16xWK fragments
// with float accumulators; k-slices of 16 in shared memory (WmmaIn<T>::smem: the storage type,
// or TF32-rounded floats), double-buffered like igemm_kernel, BK/WK fragment steps per slice.
// Epilogue: each warp passes one fragment at a time through its own 16x16 float staging tile in
// shared memory to Op::store (bias, split-K partials, conversion).
template <class Op, int BM, int BN, int NT, int WM>
__device__ __forceinline__ void igemm_wmma_block(const Op& op, int splits, int chunk) {
  using T = typename Op::storage;
  using In = WmmaIn<T>;
  using S = typename In::smem;
  using F = typename In::frag;
  namespace wmma = nvcuda::wmma;
  constexpr int BK = 16, WK = In::WK, NW = NT / 32, WN = NW / WM;
  constexpr int FM = BM / WM / 16, FN = BN / WN / 16;  // fragments per warp
  constexpr int KA = BM * BK / NT, KB = BN * BK / NT, TPR = BK / KA;
  static_assert(FM >= 1 && FN >= 1 && BM % (WM * 16) == 0 && BN % (WN * 16) == 0 &&
                    KA >= 1 && BK % KA == 0 && KB >= 1 && BK % KB == 0 && NT % BN == 0,
                "igemm_wmma_kernel: tile shape does not split evenly over the warps");
  constexpr int LDA = BK + In::PAD, LDB = BN + In::PAD, LDC = 16 + 4;
  FC_SHARED_WMMA(S, As, [2][BM][LDA]);
  FC_SHARED_WMMA(S, Bs, [2][BK][LDB]);
  FC_SHARED_WMMA(float, Cs, [NW][16][LDC]);

  const int t = int(threadIdx.x);
  const int grp = int(blockIdx.z) / splits, split = int(blockIdx.z) % splits;
  const int kbeg = split * chunk, kend = min(op.Kd, kbeg + chunk);
  const int m0 = int(blockIdx.y) * BM, n0 = int(blockIdx.x) * BN;
  const int a_m = t / TPR, a_k = (t % TPR) * KA;
  const int b_n = t % BN, b_k = (t / BN) * KB;
  const typename Op::Row arow = op.a_ctx(grp, m0 + a_m);
  const typename Op::Col bcol = op.b_ctx(grp, n0 + b_n);

  float ra[KA], rb[KB];
  op.a_load(arow, kbeg + a_k, kend, ra);
  op.b_load(bcol, kbeg + b_k, kend, rb);
#pragma unroll
  for (int j = 0; j < KA; ++j) As[0][a_m][a_k + j] = In::cvt(ra[j]);
#pragma unroll
  for (int j = 0; j < KB; ++j) Bs[0][b_k + j][b_n] = In::cvt(rb[j]);
  __syncthreads();

  const int warp = t / 32, lane = t % 32;
  const int wm = (warp / WN) * (BM / WM), wn = (warp % WN) * (BN / WN);
  wmma::fragment<wmma::accumulator, 16, 16, WK, float> acc[FM][FN];
#pragma unroll
  for (int i = 0; i < FM; ++i)
#pragma unroll
    for (int j = 0; j < FN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  const int steps = kend > kbeg ? (kend - kbeg + BK - 1) / BK : 0;
  for (int step = 0; step < steps; ++step) {
    const int cur = step & 1;
    const bool more = step + 1 < steps;
    if (more) {
      const int k0 = kbeg + (step + 1) * BK;
      op.a_load(arow, k0 + a_k, kend, ra);
      op.b_load(bcol, k0 + b_k, kend, rb);
    }
#pragma unroll
    for (int kk = 0; kk < BK; kk += WK) {
      wmma::fragment<wmma::matrix_a, 16, 16, WK, F, wmma::row_major> fa[FM];
      wmma::fragment<wmma::matrix_b, 16, 16, WK, F, wmma::row_major> fb[FN];
#pragma unroll
      for (int i = 0; i < FM; ++i) wmma::load_matrix_sync(fa[i], &As[cur][wm + 16 * i][kk], LDA);
#pragma unroll
      for (int j = 0; j < FN; ++j) wmma::load_matrix_sync(fb[j], &Bs[cur][kk][wn + 16 * j], LDB);
#pragma unroll
      for (int i = 0; i < FM; ++i)
#pragma unroll
        for (int j = 0; j < FN; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    if (more) {
#pragma unroll
      for (int j = 0; j < KA; ++j) As[cur ^ 1][a_m][a_k + j] = In::cvt(ra[j]);
#pragma unroll
      for (int j = 0; j < KB; ++j) Bs[cur ^ 1][b_k + j][b_n] = In::cvt(rb[j]);
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < FM; ++i)
#pragma unroll
    for (int j = 0; j < FN; ++j) {
      wmma::store_matrix_sync(&Cs[warp][0][0], acc[i][j], LDC, wmma::mem_row_major);
      __syncwarp();
      for (int e = lane; e < 256; e += 32) {
        const int r = e / 16, c = e % 16;
        const float v = Cs[warp][r][c];
        op.store(grp, split, m0 + wm + 16 * i + r, op.c_ctx(n0 + wn + 16 * j + c), v);
      }
      __syncwarp();
    }
}

template <class Op, int BM, int BN, int NT, int WM>
__global__ void __launch_bounds__(NT) igemm_wmma_kernel(Op op, int splits, int chunk) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  // bfloat16 and TF32 fragments exist from sm_80 on; pick_tile never chooses tensor cores for
  // them on an older device, so these variants only have to compile there.
  if constexpr (std::is_same<typename Op::storage, __nv_bfloat16>::value ||
                std::is_same<typename Op::storage, float>::value) {
    __trap();
  } else
#endif
  {
    igemm_wmma_block<Op, BM, BN, NT, WM>(op, splits, chunk);
  }
}

// dw[i] = sum over s of ws[s][i], s in order (grid-stride over the count elements).
template <class T>
__global__ void splitk_reduce_kernel(gptr<const acc_t<T>> ws, gptr<T> dw, int64_t count,
                                     int splits) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) {
    acc_t<T> s = ws[i];
    for (int k = 1; k < splits; ++k) s += ws[int64_t(k) * count + i];
    dw[i] = from_acc<T>(s);
  }
}

// ---------------------------------------------------------------------------------------------
// Host side: tile and split-K heuristics, launchers.
// ---------------------------------------------------------------------------------------------
struct TileShape { int bm, bn; };
// 3, 4: tensor cores (WMMA; TF32 for float)
constexpr TileShape kTiles[5] = {{128, 128}, {64, 64}, {32, 32}, {64, 64}, {128, 128}};

int64_t tile_blocks(int tile, int64_t M, int64_t N, int64_t groups) {
  return ceil_div(M, kTiles[tile].bm) * ceil_div(N, kTiles[tile].bn) * groups;
}

bool is_16bit_dtype(DType dt) { return dt == DType::f16 || dt == DType::bf16; }

// Whether the tensor-core tiles serve dtype dt on the current device: float16 on every supported
// architecture (sm_75+), bfloat16 and float (TF32) from sm_80 on.
bool tensor_cores(DType dt) {
  return dt == DType::f16 ||
         ((dt == DType::bf16 || (FC_HAS_TF32 && dt == DType::f32)) && device_cc_major() >= 8);
}

constexpr int kTileAuto = -1;      // the heuristic; float stays on the exact SIMT tiles
constexpr int kTileAutoTF32 = -2;  // the heuristic, TF32 tensor cores allowed for float

int pick_tile(int64_t M, int64_t N, int64_t groups, int tile, DType dt) {
  if (tile >= 0) {
    FC_CHECK(tile <= 4, "conv2d: tile must be -2 (heuristic, TF32 allowed), -1 (heuristic), 0, "
             "1, 2, 3 or 4, got ", tile);
    FC_CHECK(tile < 3 || dt != DType::f64, "conv2d: tile ", tile,
             " (tensor cores) needs float32 (TF32), float16 or bfloat16 arrays");
    FC_CHECK(tile < 3 || tensor_cores(dt), "conv2d: tile ", tile, " (tensor cores) for ",
             dt == DType::f32 ? "float32 (TF32)" : "bfloat16",
             " needs a GPU of compute capability 8.0 or newer");
    return tile;
  }
  FC_CHECK(tile == kTileAuto || tile == kTileAutoTF32, "conv2d: tile must be -2 (heuristic, TF32 "
           "allowed), -1 (heuristic), 0, 1, 2, 3 or 4, got ", tile);
  // TF32: only where a 16 x 16 fragment is not mostly padding (a guess, not yet timed on a GPU)
  const bool tc = is_16bit_dtype(dt) ? tensor_cores(dt)
                                     : dt == DType::f32 && tile == kTileAutoTF32 &&
                                           tensor_cores(dt) && M >= 16 && N >= 16;
  if (tc) return M > 64 && tile_blocks(4, M, N, groups) >= kSMs ? 4 : 3;
  if (M <= 32 || N <= 32) return 2;
  if (M > 64 && tile_blocks(0, M, N, groups) >= kSMs) return 0;
  if (tile_blocks(1, M, N, groups) >= kSMs / 2) return 1;
  return 2;
}

// The weight gradient's split of the reduction: (splits, chunk), chunk a multiple of 16 and
// every split non-empty.
struct Split { int splits, chunk; };

Split pick_split(int64_t M, int64_t N, int64_t Kd, int64_t groups, int tile, int splits) {
  int64_t s = splits;
  if (s <= 0) {
    const int64_t blocks = tile_blocks(tile, M, N, groups);
    s = blocks >= kSMs ? 1 : std::min<int64_t>(ceil_div(2 * kSMs, blocks), Kd / kMinSplitK);
    s = std::max<int64_t>(1, std::min<int64_t>(s, 64));
  }
  s = std::min(s, std::max<int64_t>(1, 65535 / groups));
  const int64_t chunk = ceil_div(ceil_div(std::max<int64_t>(Kd, 1), s), 16) * 16;
  return Split{int(std::max<int64_t>(1, ceil_div(Kd, chunk))), int(chunk)};
}

void check_gemm_dims(const char* op, const Conv2dParams& p, int64_t M, int64_t N, int64_t Kd) {
  FC_CHECK(M < INT_MAX && N < INT_MAX && Kd < INT_MAX && p.H * p.W < INT_MAX &&
               p.P * p.Q < INT_MAX,
           op, ": problem too large for 32-bit GEMM coordinates (", describe(p), ")");
}

template <class Op, int BM, int BN, int TM, int TN>
void launch_tile(const char* name, const Op& op, const Conv2dParams& p, int64_t groups,
                 Split sp, cudaStream_t stream) {
  const dim3 grid(unsigned(ceil_div(op.N, BN)), unsigned(ceil_div(op.M, BM)),
                  unsigned(groups * sp.splits));
  FC_CHECK(grid.y <= 65535 && grid.z <= 65535, name, ": too many channels per group or groups (",
           describe(p), ")");
  auto k = igemm_kernel<Op, BM, BN, TM, TN>;
  FC_LAUNCH(k, grid, dim3((BM / TM) * (BN / TN)), 0, stream, op, sp.splits, sp.chunk);
  check_launch(name, [&] { return describe(p); });
}

template <class Op, int BM, int BN, int NT, int WM>
void launch_wmma(const char* name, const Op& op, const Conv2dParams& p, Split sp,
                 cudaStream_t stream) {
  const dim3 grid(unsigned(ceil_div(op.N, BN)), unsigned(ceil_div(op.M, BM)),
                  unsigned(p.groups * sp.splits));
  FC_CHECK(grid.y <= 65535 && grid.z <= 65535, name, ": too many channels per group or groups (",
           describe(p), ")");
  auto k = igemm_wmma_kernel<Op, BM, BN, NT, WM>;
  FC_LAUNCH(k, grid, dim3(NT), 0, stream, op, sp.splits, sp.chunk);
  check_launch(name, [&] { return describe(p); });
}

template <class Op>
void launch_igemm(const char* name, const Op& op, const Conv2dParams& p, int tile, Split sp,
                  cudaStream_t stream) {
  switch (tile) {
    case 0: return launch_tile<Op, 128, 128, 8, 8>(name, op, p, p.groups, sp, stream);
    case 1: return launch_tile<Op, 64, 64, 4, 4>(name, op, p, p.groups, sp, stream);
    case 2: return launch_tile<Op, 32, 32, 4, 4>(name, op, p, p.groups, sp, stream);
    default:
      if constexpr (has_wmma<typename Op::storage>::value) {
        if (tile == 4) return launch_wmma<Op, 128, 128, 256, 4>(name, op, p, sp, stream);
        return launch_wmma<Op, 64, 64, 128, 2>(name, op, p, sp, stream);
      }
      throw ValueError(
          str_cat(name, ": tiles 3 and 4 (tensor cores) need float32, float16 or bfloat16"));
  }
}

template <class T>
void forward_typed(const Conv2dParams& p, const void* x, const void* w, const void* bias, void* y,
                   int tile, cudaStream_t stream) {
  const int64_t M = p.Kg(), N = p.N * p.P * p.Q, Kd = p.Cg() * p.R * p.S;
  check_gemm_dims("conv2d_forward", p, M, N, Kd);
  const int t = pick_tile(M, N, p.groups, tile, dtype_of<T>());
  auto run = [&](auto one) {
    FwdOp<T, decltype(one)::value> op;
    op.x = global(static_cast<const T*>(x), p.N * p.C * p.H * p.W);
    op.w = global(static_cast<const T*>(w), p.K * Kd);
    op.bias = global(static_cast<const T*>(bias), bias ? p.K : 0);
    op.y = global(static_cast<T*>(y), p.N * p.K * p.P * p.Q);
    op.g = make_geo(p), op.M = int(M), op.N = int(N), op.Kd = int(Kd);
    launch_igemm("conv2d_forward", op, p, t, Split{1, int(std::max<int64_t>(Kd, 1))}, stream);
  };
  if (is_one_by_one(p)) run(std::true_type{});
  else run(std::false_type{});
}

// The taps of one axis that reach input positions ph (mod stride) from an output position:
// r = r0 + i*step, i < n, with stride | (ph + pad - r*dil); and the output step dp per tap.
void phase_taps(int64_t ph, int64_t pad, int64_t k, int64_t stride, int64_t dil, int& r0,
                int& step, int& n, int& dp) {
  int64_t g = stride, b = dil;  // gcd(stride, dil)
  while (b) { const int64_t t = g % b; g = b; b = t; }
  step = int(stride / g), dp = int(dil * (stride / g) / stride), n = 0, r0 = 0;
  for (int64_t r = 0; r < std::min<int64_t>(k, step); ++r)
    if (((ph + pad - r * dil) % stride + stride) % stride == 0) {
      r0 = int(r), n = int(ceil_div(k - r, step));
      return;
    }
}

template <class T>
void backward_input_typed(const Conv2dParams& p, const void* dy, const void* w, void* dx, int tile,
                          cudaStream_t stream) {
  const char* name = "conv2d_backward_input";
  check_gemm_dims(name, p, p.Cg(), p.N * p.H * p.W, p.Kg() * p.R * p.S);
  // stride > 1: one launch per stride phase of the input pixels, each with only the taps that
  // reach its pixels (no multiplications by structural zeros); phases without taps write zeros.
  auto run = [&](auto one) {
    DgradOp<T, decltype(one)::value> op;
    op.dy = global(static_cast<const T*>(dy), p.N * p.K * p.P * p.Q);
    op.w = global(static_cast<const T*>(w), p.K * p.Cg() * p.R * p.S);
    op.dx = global(static_cast<T*>(dx), p.N * p.C * p.H * p.W);
    op.g = make_geo(p);
    for (int64_t ph = 0; ph < std::min(p.stride_h, p.H); ++ph)
      for (int64_t pw = 0; pw < std::min(p.stride_w, p.W); ++pw) {
        Phase& f = op.ph;
        f.ph = int(ph), f.pw = int(pw);
        f.Hp = int(ceil_div(p.H - ph, p.stride_h)), f.Wp = int(ceil_div(p.W - pw, p.stride_w));
        phase_taps(ph, p.pad_t, p.R, p.stride_h, p.dil_h, f.r0, f.rstep, f.nr, f.dp);
        phase_taps(pw, p.pad_l, p.S, p.stride_w, p.dil_w, f.s0, f.sstep, f.ns, f.dq);
        const int64_t M = p.Cg(), N = p.N * f.Hp * f.Wp, Kd = p.Kg() * f.nr * f.ns;
        op.M = int(M), op.N = int(N), op.Kd = int(Kd);
        if (f.nr == 0 || f.ns == 0) f.nr = f.ns = 1;  // no taps (Kd = 0): keep the decode defined
        const int t = pick_tile(M, N, p.groups, tile, dtype_of<T>());
        launch_igemm(name, op, p, t, Split{1, int(std::max<int64_t>(Kd, 1))}, stream);
      }
  };
  if (is_one_by_one(p)) run(std::true_type{});
  else run(std::false_type{});
}

struct WgradPlan { int tile; Split split; int64_t ws_bytes; };

WgradPlan plan_wgrad(const Conv2dParams& p, DType dt, int tile, int splits) {
  const int64_t M = p.Kg(), N = p.Cg() * p.R * p.S, Kd = p.N * p.P * p.Q;
  FC_CHECK(splits >= 0, "conv2d_backward_weight: splits must be >= 0 (0: heuristic), got ",
           splits);
  WgradPlan plan;
  plan.tile = pick_tile(M, N, p.groups, tile, dt);
  plan.split = pick_split(M, N, Kd, p.groups, plan.tile, splits);
  const int64_t acc_bytes = dt == DType::f64 ? 8 : 4;
  plan.ws_bytes = plan.split.splits > 1 ? plan.split.splits * p.K * N * acc_bytes : 0;
  return plan;
}

template <class T>
void backward_weight_typed(const Conv2dParams& p, const void* dy, const void* x, void* dw,
                           void* workspace, int64_t workspace_bytes, const WgradPlan& plan,
                           cudaStream_t stream) {
  const int64_t M = p.Kg(), N = p.Cg() * p.R * p.S, Kd = p.N * p.P * p.Q;
  check_gemm_dims("conv2d_backward_weight", p, M, N, Kd);
  using A = acc_t<T>;
  const int splits = plan.split.splits;
  auto run = [&](auto one) {
    WgradOp<T, decltype(one)::value> op;
    op.dy = global(static_cast<const T*>(dy), p.N * p.K * p.P * p.Q);
    op.x = global(static_cast<const T*>(x), p.N * p.C * p.H * p.W);
    op.dw = global(static_cast<T*>(dw), p.K * N);
    op.ws = global(static_cast<A*>(workspace), splits > 1 ? splits * p.K * N : 0);
    op.g = make_geo(p), op.M = int(M), op.N = int(N), op.Kd = int(Kd), op.splits = splits;
    launch_igemm("conv2d_backward_weight", op, p, plan.tile, plan.split, stream);
  };
  if (is_one_by_one(p)) run(std::true_type{});
  else run(std::false_type{});
  if (splits > 1) {
    const int64_t count = p.K * N;
    const int threads = 256;
    const unsigned blocks = unsigned(std::min<int64_t>(ceil_div(count, threads), 4 * kSMs));
    auto k = splitk_reduce_kernel<T>;
    FC_LAUNCH(k, dim3(blocks), dim3(threads), 0, stream,
              global(static_cast<const A*>(workspace), splits * count),
              global(static_cast<T*>(dw), count), count, splits);
    check_launch("conv2d_backward_weight (split-K reduction)", [&] { return describe(p); });
  }
  (void)workspace_bytes;
}

}  // namespace

void conv2d_forward(const Conv2dParams& p, DType dt, const void* x, const void* w,
                    const void* bias, void* y, int tile, cudaStream_t stream) {
  dtype_switch(dt, [&](auto tag) {
    forward_typed<decltype(tag)>(p, x, w, bias, y, tile, stream);
  });
}

void conv2d_backward_input(const Conv2dParams& p, DType dt, const void* dy, const void* w,
                           void* dx, int tile, cudaStream_t stream) {
  dtype_switch(dt, [&](auto tag) {
    backward_input_typed<decltype(tag)>(p, dy, w, dx, tile, stream);
  });
}

int64_t conv2d_backward_weight_workspace_bytes(const Conv2dParams& p, DType dt, int tile,
                                               int splits) {
  return plan_wgrad(p, dt, tile, splits).ws_bytes;
}

void conv2d_backward_weight(const Conv2dParams& p, DType dt, const void* dy, const void* x,
                            void* dw, void* workspace, int64_t workspace_bytes, int tile,
                            int splits, cudaStream_t stream) {
  const WgradPlan plan = plan_wgrad(p, dt, tile, splits);
  FC_CHECK(workspace_bytes >= plan.ws_bytes, "conv2d_backward_weight: workspace of ",
           workspace_bytes, " bytes is smaller than the ", plan.ws_bytes,
           " bytes it needs (conv2d_backward_weight_workspace_bytes)");
  FC_CHECK(plan.ws_bytes == 0 || workspace != nullptr,
           "conv2d_backward_weight: workspace is null but ", plan.ws_bytes, " bytes are needed");
  dtype_switch(dt, [&](auto tag) {
    backward_weight_typed<decltype(tag)>(p, dy, x, dw, workspace, workspace_bytes, plan, stream);
  });
}

}  // namespace cuda
}  // namespace fastconv
