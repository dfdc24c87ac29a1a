// Packed GEMM building blocks for the CPU convolution kernels (BLIS-style): register-blocked
// micro-kernel, the macro-kernel that walks one task's block of C, scratch buffers, a work
// splitter and the task runner. conv2d_cpu.cpp and winograd_cpu.cpp include this header; like
// them, everything here is compiled once per instruction set into fastconv::cpu::<isa>::gemm
// (no symbol is shared between the variants).
//
//   C[M x N] (=|+=) A[M x Kd] * B[Kd x N]
//
// A is packed once per call (by the caller, in parallel) into MR-row panels, kc-block by kc-block:
//   Ap[kcb][panel][kk][MR]   (kcb = kd / kc, element (m, kd) at kcb*kc*Mpad + (m/MR)*MR*kcl + kk*MR + m%MR)
// B is packed by each task for its own columns into NR-column panels, kc-block by kc-block:
//   Bp[panel][kk][NR].
// The micro-kernel keeps an MR x NR tile of C in registers (MR broadcasts of A and NV vector loads
// of B per step of the reduction) and writes it straight into C when the tile is full and its NR
// columns are contiguous, else into a small buffer that the caller's Store scatters.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "common/parallel.h"
#include "common/simd.h"
#include "cpu/isa.h"

#if defined(__GNUC__)
#define FC_GEMM_INLINE inline __attribute__((always_inline))
#define FC_GEMM_UNROLL _Pragma("GCC unroll 32")
#else
#define FC_GEMM_INLINE inline
#define FC_GEMM_UNROLL
#endif

FC_ISA_BEGIN
namespace gemm {

// Register blocking per instruction set. NR = NV vectors of B; the MR x NV accumulators plus NV
// B vectors plus one broadcast must fit the register file (16 ymm/xmm, 32 zmm).
//   AVX-512: 8 x 3 vectors (24 zmm accumulators; 8 x 48 float, 8 x 24 double)
//   AVX2   : 4 x 3 vectors (12 ymm accumulators; 4 x 24 float, 4 x 12 double; 6 x 16 measured
//            about equal, 4 divides the usual channel counts and the 8 rows of grouped layers)
//   SSE2   : 4 x 2 vectors ( 8 xmm accumulators, no FMA so mul + add needs temporaries)
//   scalar : 4 x 4
#if defined(FC_ISA_avx512)
constexpr int kMR = 8, kNV = 3;
#elif defined(FC_ISA_avx2)
constexpr int kMR = 4, kNV = 3;
#elif defined(FC_X86)
constexpr int kMR = 4, kNV = 2;
#else
constexpr int kMR = 4, kNV = 4;
#endif

template <class T>
struct Blk {
  static constexpr int MR = kMR;
  static constexpr int NR = kNV * Vec<T>::size;
  // Cache blocking (bytes are what matter: KC x NR B micro-panel in L1, MC x KC A block and
  // KC x NC B block in L2 (1 MiB per core on the development machine).
  // Reduction block: a KC x NR micro-panel of B fills about half of a 32 KiB L1 (the rest: the A
  // micro-panel streaming from L2, the C tile); the actual kc splits Kd evenly (kc_for).
  static constexpr int64_t KCMAX = (20 * 1024 / (NR * sizeof(T))) / 8 * 8;
  static constexpr int64_t MC = 16 * MR;      // rows of A per L2 block
  static constexpr int64_t NCMAX = sizeof(T) == 4 ? 384 : 256;  // columns of B per task block
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Reduction block for a reduction of Kd: the fewest blocks of at most KCMAX, split evenly (576 ->
// 2 x 288, not 256 + 256 + 64: every block pays one read-modify-write of the C tile).
template <class T>
inline int64_t kc_for(int64_t Kd);

// Grow-only 64-byte-aligned scratch. One per calling thread (thread_local in the caller), so
// repeated calls reuse the same pages instead of faulting fresh ones in every call.
template <class T>
inline int64_t kc_for(int64_t Kd) {
  const int64_t nb = ceil_div(Kd, Blk<T>::KCMAX);
  const int64_t kc = round_up(ceil_div(Kd, nb > 0 ? nb : 1), 4);
  return kc > 0 ? kc : 4;
}

// Runs f(task, scratch) for task in [0, ntasks) on nthreads threads, each task taken by whichever
// thread is free; scratch: per_thread bytes for each thread (f gets its own).
template <class F>
void run_tasks(int64_t ntasks, int64_t nthreads, char* scratch, size_t per_thread, const F& f) {
  parallel_claim(ntasks, 1, nthreads, [](int64_t) {}, [&](int64_t tid, int64_t b, int64_t e) {
    char* mine = scratch + tid * per_thread;
    for (int64_t t = b; t < e; ++t) f(t, mine);
  });
}

struct Scratch {
  void* ptr = nullptr;
  size_t cap = 0;
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { std::free(ptr); }
  void* get(size_t bytes) {
    if (bytes > cap) {
      std::free(ptr);
      ptr = nullptr;
      cap = 0;
      size_t b = static_cast<size_t>(round_up(static_cast<int64_t>(bytes), 4096));
      ptr = std::aligned_alloc(64, b);
      if (!ptr) throw std::bad_alloc();
      cap = b;
    }
    return ptr;
  }
};

// The calling thread's scratch for one kernel call (kept between calls, grown when too small),
// shared by the GEMM and Winograd paths: a call holds it only until it returns.
inline Scratch& call_scratch() {
  static thread_local Scratch s;
  return s;
}

// Carves aligned sub-buffers out of one allocation.
struct Arena {
  char* base;
  size_t off = 0;
  template <class T>
  T* take(int64_t n) {
    T* p = reinterpret_cast<T*>(base + off);
    off += static_cast<size_t>(round_up(n * static_cast<int64_t>(sizeof(T)), 64));
    return p;
  }
  template <class T>
  static size_t bytes(int64_t n) { return static_cast<size_t>(round_up(n * static_cast<int64_t>(sizeof(T)), 64)); }
};

// MR x NR micro-kernel: C[i][j] (= or +=) sum_kk A[kk][i] * B(kk)[j] (+ bias[i] when not
// accumulating). B(kk) = B + kk*NR (packed panel) or, kIndirect, B + off[kk] (rows read in place
// from a zero-padded input, see conv2d_cpu.cpp forward_direct).
template <class T, bool kIndirect = false>
FC_GEMM_INLINE void ukernel(int64_t kc, const T* __restrict A, const T* __restrict B,
                            const int64_t* __restrict off, T* C, int64_t ldc, bool accumulate,
                            const T* bias) {
  using V = Vec<T>;
  constexpr int MR = kMR, NV = kNV, L = V::size, NR = NV * L;
  V c[MR][NV];
  FC_GEMM_UNROLL for (int i = 0; i < MR; ++i)
    FC_GEMM_UNROLL for (int j = 0; j < NV; ++j) c[i][j] = V::zero();
  for (int64_t k = 0; k < kc; ++k) {
    const T* bk = kIndirect ? B + off[k] : B;
    V b[NV];
    FC_GEMM_UNROLL for (int j = 0; j < NV; ++j) b[j] = V::load(bk + j * L);
    FC_GEMM_UNROLL for (int i = 0; i < MR; ++i) {
      V a = V::set1(A[i]);
      FC_GEMM_UNROLL for (int j = 0; j < NV; ++j) c[i][j] = V::fmadd(a, b[j], c[i][j]);
    }
    A += MR;
    if (!kIndirect) B += NR;
  }
  if (accumulate) {
    FC_GEMM_UNROLL for (int i = 0; i < MR; ++i)
      FC_GEMM_UNROLL for (int j = 0; j < NV; ++j)
        (V::load(C + i * ldc + j * L) + c[i][j]).store(C + i * ldc + j * L);
  } else if (bias) {
    FC_GEMM_UNROLL for (int i = 0; i < MR; ++i) {
      V bi = V::set1(bias[i]);
      FC_GEMM_UNROLL for (int j = 0; j < NV; ++j) (c[i][j] + bi).store(C + i * ldc + j * L);
    }
  } else {
    FC_GEMM_UNROLL for (int i = 0; i < MR; ++i)
      FC_GEMM_UNROLL for (int j = 0; j < NV; ++j) c[i][j].store(C + i * ldc + j * L);
  }
}

// Macro-kernel for one task: rows [m0, m1) of C (m0 a multiple of MR, m1 <= M), columns [n0, n1),
// the whole reduction Kd. Ap: this (virtual) group's packed A (Mpad rows). Bp: task scratch of
// kc * round_up(n1 - n0, NR) elements. pack_b(kc0, kcl, n0, ncols, Bp) fills the B panels (zeros in
// the columns past ncols of the last panel). Store (see conv2d_cpu.cpp) maps tiles onto C:
//   T* tile(row, col, ldc&)  -> pointer to C(row, col) when NR columns from col are contiguous
//   const T* bias(row)       -> bias of rows row.. (nullptr: none); used on the first kc block
//   void scatter(row, col, mr, nr, buf, first)  -> C(row+i, col+j) (=|+=) buf[i*NR + j] (+bias)
template <class T, class PackB, class Store>
void macro_kernel(const T* Ap, int64_t Mpad, int64_t Kd, int64_t kc, int64_t m0, int64_t m1, int64_t n0,
                  int64_t n1, T* Bp, const PackB& pack_b, Store& st) {
  using B_ = Blk<T>;
  constexpr int MR = B_::MR, NR = B_::NR;
  alignas(64) T buf[MR * NR];
  const int64_t ncols = n1 - n0;
  const int64_t npanels = ceil_div(ncols, NR);
  for (int64_t kc0 = 0; kc0 < Kd; kc0 += kc) {
    const int64_t kcl = Kd - kc0 < kc ? Kd - kc0 : kc;
    const bool first = kc0 == 0;
    pack_b(kc0, kcl, n0, ncols, Bp);
    const T* Ablk = Ap + kc0 * Mpad;
    for (int64_t mc0 = m0; mc0 < m1; mc0 += B_::MC) {
      const int64_t mc1 = m1 - mc0 < B_::MC ? m1 : mc0 + B_::MC;
      for (int64_t jp = 0; jp < npanels; ++jp) {
        const int64_t col = n0 + jp * NR;
        const int nr = static_cast<int>(n1 - col < NR ? n1 - col : NR);
        const T* Bpan = Bp + jp * NR * kcl;
        for (int64_t m = mc0; m < mc1; m += MR) {
          const int mr = static_cast<int>(mc1 - m < MR ? mc1 - m : MR);
          const T* Apan = Ablk + (m / MR) * MR * kcl;
          int64_t ldc = 0;
          T* c = (mr == MR && nr == NR) ? st.tile(m, col, ldc) : nullptr;
          if (c) {
            ukernel<T>(kcl, Apan, Bpan, nullptr, c, ldc, !first, first ? st.bias(m) : nullptr);
          } else {
            ukernel<T>(kcl, Apan, Bpan, nullptr, buf, NR, false, nullptr);
            st.scatter(m, col, mr, nr, buf, first);
          }
        }
      }
    }
  }
}

// The same walk without B packing: column col of B row kd is Bx[off[kd] + col] (a zero-padded
// input read in place; columns past n1 read harmless finite values and are dropped by the store).
template <class T, class Store>
void macro_kernel_direct(const T* Ap, int64_t Mpad, int64_t Kd, int64_t kc, int64_t m0, int64_t m1,
                         int64_t n0, int64_t n1, const T* Bx, const int64_t* off, Store& st) {
  using B_ = Blk<T>;
  constexpr int MR = B_::MR, NR = B_::NR;
  alignas(64) T buf[MR * NR];
  for (int64_t kc0 = 0; kc0 < Kd; kc0 += kc) {
    const int64_t kcl = Kd - kc0 < kc ? Kd - kc0 : kc;
    const bool first = kc0 == 0;
    const T* Ablk = Ap + kc0 * Mpad;
    for (int64_t mc0 = m0; mc0 < m1; mc0 += B_::MC) {
      const int64_t mc1 = m1 - mc0 < B_::MC ? m1 : mc0 + B_::MC;
      for (int64_t col = n0; col < n1; col += NR) {
        const int nr = static_cast<int>(n1 - col < NR ? n1 - col : NR);
        for (int64_t m = mc0; m < mc1; m += MR) {
          const int mr = static_cast<int>(mc1 - m < MR ? mc1 - m : MR);
          const T* Apan = Ablk + (m / MR) * MR * kcl;
          int64_t ldc = 0;
          T* c = (mr == MR && nr == NR) ? st.tile(m, col, ldc) : nullptr;
          if (c) {
            ukernel<T, true>(kcl, Apan, Bx + col, off + kc0, c, ldc, !first,
                             first ? st.bias(m) : nullptr);
          } else {
            ukernel<T, true>(kcl, Apan, Bx + col, off + kc0, buf, NR, false, nullptr);
            st.scatter(m, col, mr, nr, buf, first);
          }
        }
      }
    }
  }
}

// Splits rows [0, M) x columns [0, Ncols) of `groups` independent GEMMs into tasks: column blocks
// of nc (a multiple of NR, at most NCMAX) and row blocks of mc (a multiple of MR). Tasks are taken
// in order by whichever thread is free (run_tasks), so the split is chosen by a small cost model:
// the simulated finishing time of the busiest thread, where a task costs its padded MR x NR tiles
// plus pack_rows rows' worth per packed B column (every row block packs its B block again) plus
// one row's worth per row of A it streams. Few columns and many rows (7x7 layers) end up split in
// columns down to single panels before rows; a lone small GEMM (conv1's weight gradient, 147
// columns) splits rows as well. cost_out (optional): the chosen split's cost, per unit of the
// reduction, in multiply-adds of one element of C (conv2d_cpu.cpp weighs reduction splits with it).
struct Split {
  int64_t nc, ncb, mc, nmb;
  int64_t tasks(int64_t groups) const { return groups * ncb * nmb; }
};
template <class T>
inline Split make_split_uncached(int64_t groups, int64_t M, int64_t Ncols, int64_t nthreads,
                                 int64_t pack_rows, double* cost_out) {
  constexpr int MR = Blk<T>::MR, NR = Blk<T>::NR;
  constexpr int64_t kMaxThreads = 64;
  const int64_t nt = nthreads < 1 ? 1 : (nthreads > kMaxThreads ? kMaxThreads : nthreads);
  const int64_t panels = ceil_div(Ncols, NR), mpanels = ceil_div(M, MR);
  const int64_t ncb_min = ceil_div(Ncols, Blk<T>::NCMAX);
  Split best{round_up(ceil_div(Ncols, ncb_min), NR), ncb_min, round_up(M, MR), 1};
  // Cost of `cols` columns x `rows` rows of one task (per unit of the reduction).
  auto task_cost = [&](int64_t rows, int64_t cols) {
    return double(round_up(rows, MR)) * double(round_up(cols, NR)) +
           double(pack_rows) * double(round_up(cols, NR)) + double(round_up(rows, MR));
  };
  if (nt == 1 || M <= 0 || Ncols <= 0) {
    best.ncb = ceil_div(Ncols, best.nc > 0 ? best.nc : 1);
    if (cost_out) *cost_out = double(groups) * double(best.ncb) * task_cost(M, best.nc);
    return best;
  }
  double best_cost = -1.0;
  for (int64_t want_cb = ncb_min; want_cb <= panels && want_cb <= 8 * nt; ++want_cb) {
    const int64_t nc = round_up(ceil_div(Ncols, want_cb), NR);
    const int64_t ncb = ceil_div(Ncols, nc);
    if (ncb != want_cb) continue;  // same split as a smaller count
    for (int64_t want_mb = 1; want_mb <= mpanels && want_mb <= 4 * nt; ++want_mb) {
      const int64_t mc = round_up(ceil_div(M, want_mb), MR);
      const int64_t nmb = ceil_div(M, mc);
      if (nmb != want_mb) continue;
      const int64_t ntasks = groups * ncb * nmb;
      auto cost_of = [&](int64_t t) {  // task t of one group
        const int64_t mb = t / ncb, cb = t - mb * ncb;
        return task_cost(M - mb * mc < mc ? M - mb * mc : mc, Ncols - cb * nc < nc ? Ncols - cb * nc : nc);
      };
      double cost = 0.0;
      if (ntasks > 16 * nt) {
        // Many tasks: the load evens out to within one task.
        double total = 0.0, largest = 0.0;
        for (int64_t t = 0; t < nmb * ncb; ++t) {
          const double c = cost_of(t);
          total += c;
          largest = c > largest ? c : largest;
        }
        cost = double(groups) * total / double(nt) + largest;
      } else {
        // Tasks in order, each to the thread that frees up first (a min-heap of the threads'
        // loads: which of two equally loaded threads takes a task does not change the loads).
        double load[kMaxThreads] = {};
        const auto later = [](double a, double b) { return a > b; };
        for (int64_t t = 0; t < ntasks; ++t) {
          std::pop_heap(load, load + nt, later);
          load[nt - 1] += cost_of(t % (nmb * ncb));
          std::push_heap(load, load + nt, later);
        }
        for (int64_t j = 0; j < nt; ++j) cost = load[j] > cost ? load[j] : cost;
      }
      if (best_cost < 0.0 || cost < best_cost * 0.999) {
        best_cost = cost;
        best = Split{nc, ncb, mc, nmb};
      }
    }
  }
  if (cost_out) *cost_out = best_cost;
  return best;
}

// make_split, remembered per calling thread: the search costs O(blocks x tasks x log threads),
// 50-500 us at 2-32 threads for a 56x56 layer, which a model pays on every call of every layer
// (measured with bench/run_schedule.py as serial time before the first region).
template <class T>
inline Split make_split(int64_t groups, int64_t M, int64_t Ncols, int64_t nthreads,
                        int64_t pack_rows, double* cost_out = nullptr) {
  struct Entry {
    int64_t key[5];
    Split split;
    double cost;
  };
  static thread_local std::vector<Entry> memo;
  const int64_t key[5] = {groups, M, Ncols, nthreads, pack_rows};
  for (const Entry& e : memo)
    if (std::equal(key, key + 5, e.key)) {
      if (cost_out) *cost_out = e.cost;
      return e.split;
    }
  double cost = 0.0;
  const Split split = make_split_uncached<T>(groups, M, Ncols, nthreads, pack_rows, &cost);
  if (memo.size() >= 256) memo.erase(memo.begin(), memo.begin() + 128);  // oldest half
  memo.push_back(Entry{{groups, M, Ncols, nthreads, pack_rows}, split, cost});
  if (cost_out) *cost_out = cost;
  return split;
}

}  // namespace gemm
FC_ISA_END
