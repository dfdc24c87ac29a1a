// The CUDA execution model on the CPU, so that the kernels of csrc/cuda/ compile unchanged with the
// host C++ compiler (FC_EMULATION, see compat.h) into fastconv._cuda_emu and run in CI without a
// GPU. Learned from the team's sketch in shared/notes/cuda-emulation/ (checked against an H200).
//
// Model: one OS thread runs a block at a time; each CUDA thread of the block is a fiber that runs
// until it reaches __syncthreads, a warp collective or its end. A barrier releases when every live
// thread of the block (or of the warp mask) has arrived. Between barriers the threads run in a
// shuffled order (EMU_SCHED=fwd|rev|shuffle, default shuffle), so a missing __syncthreads shows
// as a wrong result. Blocks run one after another (EMU_WORKERS=N: on N OS threads).
//
// Checks, each thrown as fastconv::emu::emu_error out of the launch (RuntimeError in Python):
//   - bounds: global memory through gptr<T> (compat.h), which knows its buffer's extent; dynamic
//     shared memory likewise; static shared arrays (FC_SHARED) in every dimension;
//   - barriers: deadlock, a __syncthreads only some threads reach (early return included),
//     threads waiting at different __syncthreads, warp collectives with disagreeing masks, called
//     by a lane outside their mask, or naming lanes that have exited (EMU_LENIENT_EXIT=1 allows
//     the exits);
//   - shared memory (static and dynamic): a read of an element no thread of the block has written
//     (and the bytes are poisoned with 0xFF, NaN in every float type, at the start of every block),
//     and races: a write by one thread and a read or write of the same element by another in the
//     same barrier interval. __syncthreads separates intervals; inside a warp, a __syncwarp or
//     any warp collective (shuffle, vote, WMMA) whose mask holds both lanes orders them, so
//     warp-synchronous code is accepted with its __syncwarp and reported without it;
//   - global memory written through a gptr<T> (non-const): the same race rule between the threads
//     of a block, and any two blocks of a launch writing one element (blocks are unordered).
// How: element access to shared memory and to non-const global memory returns a proxy
// (mem_ref) that records each read and write in a shadow entry per element (last writer, the
// interval's readers, block and warp barrier generations). The proxy converts to the value and
// takes (compound) assignments, so kernel code is unchanged, but it cannot be copied:
// `auto v = tile[i];` does not compile here; write `float v = tile[i];` (or T v).
// Not checked: reads through gptr<const T> (inputs), a block reading another block's writes (a
// fence and a flag can order them), races between different gptr bases that alias, atomics
// against plain accesses, shared element types other than arithmetic / __half / __nv_bfloat16
// (bounds only), and the global checks with EMU_WORKERS > 1 or buffers over 16M elements.
// EMU_RACECHECK=0 turns the shadow checks off (bounds, barrier checks and poisoning stay); they
// cost about 1.7x on a shared-memory SGEMM and 1.25x on a pooling kernel.
#pragma once
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <new>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#endif

// ---------------------------------------------------------------- qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __constant__
#define __shared__ static thread_local
#define __align__(n) alignas(n)
#ifndef __restrict__
#define __restrict__ __restrict
#endif

struct uint3 { unsigned x, y, z; };
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
static constexpr int warpSize = 32;

#if defined(__x86_64__) && !defined(EMU_USE_UCONTEXT)
#define EMU_FAST_SWITCH 1
// fc_emu_switch(void** save_sp, void* load_sp): save callee-saved regs on the
// current stack, store sp, load the other sp, restore, return into the other fiber.
// .weak lets several translation units include this header.
__asm__(R"(
  .text
  .weak fc_emu_switch
  .hidden fc_emu_switch
  .type fc_emu_switch,@function
fc_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size fc_emu_switch, .-fc_emu_switch
)");
extern "C" void fc_emu_switch(void** save_sp, void* load_sp);
#endif

// Hot paths of the checked memory: inlined even at -O1 (the _cuda_emu build's level).
#define EMU_INLINE inline __attribute__((always_inline))

namespace fastconv { namespace emu {

struct emu_error : std::runtime_error { using std::runtime_error::runtime_error; };

enum Wait { RUN = 0, BAR_BLOCK, BAR_WARP, DONE };

// Shadow state of one shared-memory element for the race checks (see "checked memory" below).
// An entry whose serial is not the running block's is blank: nothing touched it in this block.
struct Shadow {
  uint64_t serial = 0;
  int32_t writer = -1;           // linear thread id of the last write in this block, -1 none
  uint32_t w_bgen = 0, w_wgen = 0;
  int32_t reader = -1, reader2 = -1;   // two distinct readers in the interval r_bgen (-1 none)
  int32_t r_warp = -1;           // warp of every reader in r_bgen, -2 when several warps read
  uint32_t r_bgen = 0, r_wgen = 0, r_lanes = 0;
  int64_t w_block = 0, r_block = 0;    // global memory: linear block index of writer / readers
};

// The shadow of one global buffer (one gptr base) for the duration of a launch.
struct GlobalArray {
  const unsigned char* base = nullptr;
  size_t bytes = 0, gran = 1;
  std::vector<Shadow> shadow;
};

// One shared array (a static FC_SHARED array, or the launch's dynamic shared memory): its bytes,
// its name and shape for messages, and one Shadow per element (per byte for dynamic memory).
struct SharedArray {
  const char* name = "dynamic shared memory";
  unsigned char* base = nullptr;
  size_t bytes = 0, gran = 1;    // shadow entry per gran bytes (a power of two)
  unsigned gran_shift = 0;       // log2(gran)
  int ndims = 0;
  int64_t dims[4] = {0, 0, 0, 0};
  uint64_t serial = 0;           // block run that last reset (poisoned) this array
  std::vector<Shadow> shadow;
};

struct Fiber {
#ifdef EMU_FAST_SWITCH
  void* sp = nullptr;
#else
  ucontext_t ctx;
#endif
  uint3 tid;
  int linear = 0;
  Wait wait = RUN;
  unsigned long gen = 0;     // generation of the barrier being waited on
  int line = 0;              // source line of the __syncthreads being waited on
  char* stack = nullptr;
  // Storage for the element proxies of shared memory (shared_ref, below): operator[] returns a
  // reference to a slot of this ring, reused round-robin, so a proxy cannot be copied into an
  // `auto` variable and read later.
  unsigned ring_pos = 0;
  alignas(16) unsigned char ring[32][16];
};

struct Warp {
  unsigned long gen = 0;
  uint32_t arrived = 0, mask = 0, alive = 0;
  uint32_t exited = 0;                                 // lanes that existed and returned
  std::vector<uint32_t> released;                      // released[g]: mask of barrier g -> g+1
  alignas(16) unsigned char xbuf[32 * 8];              // shuffle/ballot exchange
  std::vector<unsigned char> big;                      // WMMA exchange
};

struct BlockState {
  dim3 grid, block;
  uint3 bid;
  int nthreads = 0, live = 0;
  unsigned long gen = 0;
  int arrived = 0;
  bool any_exited = false;
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  std::vector<char*> stacks;
  size_t stack_size = 0;
  std::vector<unsigned char> dyn_smem;
  size_t dyn_bytes = 0;
#ifdef EMU_FAST_SWITCH
  void* sched_sp = nullptr;
#else
  ucontext_t sched;
#endif
  const void* sched_stack = nullptr; size_t sched_stack_size = 0;   // for ASan
  Fiber* cur = nullptr;
  const std::function<void()>* body = nullptr;
  std::exception_ptr err;
  std::vector<int> order;
  std::mt19937 rng{12345};
  int sched_mode = 0;   // 0 fwd, 1 rev, 2 shuffle
  bool lenient_exit = false;
  bool racecheck = true;   // shared-memory shadow checks (EMU_RACECHECK=0 turns them off)
  uint64_t serial = 0;     // unique number of the block run in progress (shadow state is tagged)
  int epoch_line = 0;      // line of the __syncthreads that opened the current interval (0: start)
  SharedArray* dyn_meta = nullptr;
  // Global-memory race checks (single worker only): one shadow per gptr base, tagged with the
  // launch's serial.
  std::vector<std::unique_ptr<GlobalArray>>* globals = nullptr;
  GlobalArray* global_last = nullptr;
  uint64_t launch_serial = 0;
  int64_t block_linear() const { return bid.x + int64_t(grid.x) * (bid.y + int64_t(grid.y) * bid.z); }

  ~BlockState() { for (char* s : stacks) munmap(s, stack_size); }
};

inline thread_local BlockState* tls_block = nullptr;
EMU_INLINE BlockState& B() { return *tls_block; }
EMU_INLINE Fiber& F() { return *tls_block->cur; }

// ------------------------------------------------------------- built-in vars
} }  // namespace fastconv::emu

#define threadIdx (::fastconv::emu::F().tid)
#define blockIdx (::fastconv::emu::B().bid)
#define blockDim (::fastconv::emu::B().block)
#define gridDim (::fastconv::emu::B().grid)

namespace fastconv { namespace emu {

inline void yield_to_sched() {
#ifdef EMU_ASAN
  BlockState& b = B();
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, b.sched_stack, b.sched_stack_size);
#endif
#ifdef EMU_FAST_SWITCH
  fc_emu_switch(&F().sp, B().sched_sp);
#else
  swapcontext(&F().ctx, &B().sched);
#endif
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, &b.sched_stack, &b.sched_stack_size);
#endif
}

inline void syncthreads(int line) {
  BlockState& b = B();
  Fiber& f = F();
  f.wait = BAR_BLOCK; f.gen = b.gen; f.line = line;
  b.arrived++;
  yield_to_sched();
}

inline unsigned lane_id() { return F().linear & 31; }
inline Warp& my_warp() { return B().warps[F().linear >> 5]; }

inline void warp_barrier(uint32_t mask) {
  BlockState& b = B();
  Fiber& f = F();
  Warp& w = my_warp();
  if (w.arrived == 0) w.mask = mask;
  else if (w.mask != mask)
    throw emu_error("warp collective called with different masks in one warp");
  if (!(mask & (1u << lane_id())))
    throw emu_error("warp collective called by a lane not in its mask");
  w.arrived |= 1u << lane_id();
  f.wait = BAR_WARP; f.gen = w.gen;
  (void)b;
  yield_to_sched();
}

inline void trampoline() {
  BlockState& b = B();
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &b.sched_stack, &b.sched_stack_size);
#endif
  try { (*b.body)(); } catch (...) { if (!b.err) b.err = std::current_exception(); }
  b.cur->wait = DONE;
#ifdef EMU_ASAN
  __sanitizer_start_switch_fiber(nullptr, b.sched_stack, b.sched_stack_size);
#endif
#ifdef EMU_FAST_SWITCH
  void* dead;
  fc_emu_switch(&dead, b.sched_sp);   // never resumed
  __builtin_unreachable();
#endif
  // ucontext: uc_link returns to the scheduler
}

inline void fiber_init(BlockState& b, Fiber& f, char* stack) {
  f.stack = stack;
#ifdef EMU_ASAN
  ASAN_UNPOISON_MEMORY_REGION(stack + 4096, b.stack_size - 4096);
#endif
#ifdef EMU_FAST_SWITCH
  uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + b.stack_size) & ~uintptr_t(15);
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;                                        // keeps entry rsp = 8 mod 16
  *--sp = reinterpret_cast<void*>(&trampoline);           // "return address"
  for (int r = 0; r < 6; ++r) *--sp = nullptr;            // rbp rbx r12-r15
  f.sp = sp;
#else
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = stack;
  f.ctx.uc_stack.ss_size = b.stack_size;
  f.ctx.uc_link = &b.sched;
  makecontext(&f.ctx, trampoline, 0);
#endif
}

inline void switch_to(BlockState& b, Fiber& f) {
#ifdef EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f.stack, b.stack_size);
#endif
#ifdef EMU_FAST_SWITCH
  fc_emu_switch(&b.sched_sp, f.sp);
#else
  swapcontext(&b.sched, &f.ctx);
#endif
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

inline int env_int(const char* n, int d) { const char* v = getenv(n); return v ? atoi(v) : d; }

inline void* dynamic_smem(BlockState& b) {
  return reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(b.dyn_smem.data()) + 15) & ~uintptr_t(15));
}
inline void* dynamic_smem() { return dynamic_smem(B()); }

inline uint64_t next_block_serial() {
  static std::atomic<uint64_t> counter{0};
  return ++counter;
}

// Release barriers whose participants have all arrived. Returns true if something released.
inline bool try_release(BlockState& b) {
  bool rel = false;
  if (b.arrived > 0 && b.arrived == b.live) {
    if (b.any_exited && !b.lenient_exit) {
      int line = 0;
      for (auto& f : b.fibers) if (f.wait == BAR_BLOCK) { line = f.line; break; }
      throw emu_error("__syncthreads (line " + std::to_string(line) + "): " +
                      std::to_string(b.arrived) + " of " + std::to_string(b.nthreads) +
                      " threads arrived, the rest returned (divergent barrier or early "
                      "return: UB in CUDA; EMU_LENIENT_EXIT=1 allows it)");
    }
    int line = -1;
    for (auto& f : b.fibers)
      if (f.wait == BAR_BLOCK) {
        if (line < 0) line = f.line;
        else if (f.line != line)
          throw emu_error("divergent __syncthreads: threads wait at lines " +
                          std::to_string(line) + " and " + std::to_string(f.line));
      }
    b.gen++; b.arrived = 0; b.epoch_line = line; rel = true;
  }
  for (size_t wi = 0; wi < b.warps.size(); ++wi) {
    Warp& w = b.warps[wi];
    if (!w.arrived) continue;
    if ((w.mask & w.exited) && !b.lenient_exit) {
      char buf[160];
      snprintf(buf, sizeof buf, "warp collective in warp %d of block (%u,%u,%u) with mask 0x%08x "
               "names lanes that have exited (0x%08x): UB in CUDA; EMU_LENIENT_EXIT=1 allows it",
               int(wi), b.bid.x, b.bid.y, b.bid.z, w.mask, w.mask & w.exited);
      throw emu_error(buf);
    }
    uint32_t need = w.mask & w.alive;
    if ((w.arrived & need) == need) {
      w.released.push_back(w.mask);
      w.gen++; w.arrived = 0; rel = true;
    }
  }
  return rel;
}

inline bool runnable(BlockState& b, Fiber& f) {
  switch (f.wait) {
    case RUN: return true;
    case BAR_BLOCK: return f.gen != b.gen;
    case BAR_WARP: return f.gen != b.warps[f.linear >> 5].gen;
    default: return false;
  }
}

inline void run_block(BlockState& b) {
  const int n = b.nthreads;
  for (int i = 0; i < n; ++i) {
    Fiber& f = b.fibers[i];
    f.linear = i;
    f.tid = uint3{unsigned(i % b.block.x), unsigned((i / b.block.x) % b.block.y),
                  unsigned(i / (b.block.x * b.block.y))};
    f.wait = RUN; f.gen = 0;
    fiber_init(b, f, b.stacks[i]);
  }
  b.live = n; b.arrived = 0; b.gen = 0; b.any_exited = false; b.epoch_line = 0;
  b.serial = next_block_serial();
  if (b.dyn_bytes) {   // poison: 0xFF bytes are NaN in every float type (and -1 in integers)
    std::memset(dynamic_smem(), 0xFF, b.dyn_bytes);
    b.dyn_meta->serial = b.serial;
  }
  for (size_t w = 0; w < b.warps.size(); ++w) {
    Warp& wp = b.warps[w];
    wp.gen = 0; wp.arrived = 0; wp.mask = 0; wp.exited = 0; wp.released.clear();
    int lanes = std::min(32, n - int(w) * 32);
    wp.alive = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1);
  }
  b.order.resize(n);
  for (int i = 0; i < n; ++i) b.order[i] = b.sched_mode == 1 ? n - 1 - i : i;
  while (b.live > 0) {
    if (b.sched_mode == 2) std::shuffle(b.order.begin(), b.order.end(), b.rng);
    bool progress = false;
    for (int k = 0; k < n; ++k) {
      Fiber& f = b.fibers[b.order[k]];
      if (!runnable(b, f)) continue;
      f.wait = RUN;
      b.cur = &f;
      switch_to(b, f);
      b.cur = nullptr;
      progress = true;
      if (b.err) std::rethrow_exception(b.err);
      if (f.wait == DONE) {
        b.live--; b.any_exited = true;
        b.warps[f.linear >> 5].alive &= ~(1u << (f.linear & 31));
        b.warps[f.linear >> 5].exited |= 1u << (f.linear & 31);
      }
      try_release(b);
    }
    if (!progress && !try_release(b) && b.live > 0) {
      int at_bar = 0, at_warp = 0;
      for (auto& f : b.fibers) { at_bar += f.wait == BAR_BLOCK; at_warp += f.wait == BAR_WARP; }
      throw emu_error("deadlock in block (" + std::to_string(b.bid.x) + "," +
                      std::to_string(b.bid.y) + "," + std::to_string(b.bid.z) + "): " +
                      std::to_string(at_bar) + " threads at __syncthreads, " +
                      std::to_string(at_warp) + " at warp collectives, " +
                      std::to_string(n - b.live) + " exited");
    }
  }
}

inline void launch(dim3 grid, dim3 block, size_t smem, const std::function<void()>& body) {
  const int n = int(block.x * block.y * block.z);
  if (n <= 0 || n > 1024) throw emu_error("invalid block size");
  const long nblocks = long(grid.x) * grid.y * grid.z;
  int workers = std::max(1, env_int("EMU_WORKERS", 1));
  workers = int(std::min<long>(workers, nblocks));
  const size_t stack = size_t(env_int("EMU_STACK_KB", 64)) * 1024;
  const int mode = [] {   // default: shuffled, so that a missing barrier shows
    const char* s = getenv("EMU_SCHED");
    if (!s) return 2;
    return !strcmp(s, "rev") ? 1 : !strcmp(s, "fwd") ? 0 : 2;
  }();
  std::vector<std::exception_ptr> errs(workers);
  auto work = [&](int w) {
    BlockState b;
    b.grid = grid; b.block = block; b.nthreads = n; b.body = &body;
    b.stack_size = stack; b.sched_mode = mode; b.rng.seed(1234 + w);
    b.lenient_exit = env_int("EMU_LENIENT_EXIT", 0) != 0;
    b.racecheck = env_int("EMU_RACECHECK", 1) != 0;
    b.fibers.resize(n);
    b.warps.resize((n + 31) / 32);
    b.dyn_smem.assign(smem + 16, 0);
    b.dyn_bytes = smem;
    SharedArray dyn;
    dyn.base = static_cast<unsigned char*>(dynamic_smem(b));
    dyn.bytes = smem;
    if (b.racecheck) dyn.shadow.resize(smem);
    b.dyn_meta = &dyn;
    std::vector<std::unique_ptr<GlobalArray>> globals;
    if (b.racecheck && workers == 1) b.globals = &globals;
    b.launch_serial = next_block_serial();
    for (int i = 0; i < n; ++i) {
      void* p = mmap(nullptr, stack, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) throw emu_error("mmap stack failed");
      mprotect(p, 4096, PROT_NONE);   // guard page: stack overflow -> SIGSEGV
      b.stacks.push_back(static_cast<char*>(p));
    }
    BlockState* saved = tls_block;
    tls_block = &b;
    try {
      for (long id = w; id < nblocks; id += workers) {
        b.bid = uint3{unsigned(id % grid.x), unsigned((id / grid.x) % grid.y),
                      unsigned(id / (long(grid.x) * grid.y))};
        run_block(b);
      }
    } catch (...) { errs[w] = std::current_exception(); }
    tls_block = saved;
  };
  if (workers == 1) work(0);
  else {
    std::vector<std::thread> ts;
    for (int w = 0; w < workers; ++w) ts.emplace_back(work, w);
    for (auto& t : ts) t.join();
  }
  for (auto& e : errs) if (e) std::rethrow_exception(e);
}


// ------------------------------------------------------------------ warp ops
// PTX shfl semantics: c = ((32-width)<<8) | clamp; segment mask = c[12:8].
template <class T>
inline T shfl_impl(uint32_t mask, T v, int mode, int b, int width) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shfl: <= 8 bytes");
  Warp& w = my_warp();
  const int lane = int(lane_id());
  std::memcpy(w.xbuf + lane * 8, &v, sizeof(T));
  warp_barrier(mask);
  const int segmask = (32 - width) & 31;
  const int clamp = mode == 0 ? 0 : 31;                 // mode 0=up 1=down 2=xor 3=idx
  const int maxLane = (lane & segmask) | (clamp & ~segmask);
  const int minLane = lane & segmask;
  int j; bool ok;
  switch (mode) {
    case 0: j = lane - b; ok = j >= maxLane; break;
    case 1: j = lane + b; ok = j <= maxLane; break;
    case 2: j = lane ^ b; ok = j <= maxLane; break;
    default: j = minLane | (b & ~segmask & 31); ok = j <= maxLane; break;
  }
  T r = v;
  if (ok) std::memcpy(&r, w.xbuf + j * 8, sizeof(T));
  warp_barrier(mask);
  return r;
}

inline uint32_t ballot_impl(uint32_t mask, bool pred) {
  Warp& w = my_warp();
  w.xbuf[lane_id()] = pred;
  warp_barrier(mask);
  uint32_t r = 0;
  for (int l = 0; l < 32; ++l) if ((mask >> l & 1) && w.xbuf[l]) r |= 1u << l;
  warp_barrier(mask);
  return r & mask;
}
} }  // namespace fastconv::emu


// ------------------------------------------------------------------ CUDA runtime shims
typedef void* cudaStream_t;
typedef int cudaError_t;
enum { cudaSuccess = 0 };
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t) { return "no error (emulation)"; }

#define __syncthreads() ::fastconv::emu::syncthreads(__LINE__)
template <class T> inline T __shfl_sync(unsigned m, T v, int src, int w = 32) { return fastconv::emu::shfl_impl(m, v, 3, src, w); }
template <class T> inline T __shfl_up_sync(unsigned m, T v, unsigned d, int w = 32) { return fastconv::emu::shfl_impl(m, v, 0, int(d), w); }
template <class T> inline T __shfl_down_sync(unsigned m, T v, unsigned d, int w = 32) { return fastconv::emu::shfl_impl(m, v, 1, int(d), w); }
template <class T> inline T __shfl_xor_sync(unsigned m, T v, int lm, int w = 32) { return fastconv::emu::shfl_impl(m, v, 2, lm, w); }
inline void __syncwarp(unsigned m = 0xffffffffu) { fastconv::emu::warp_barrier(m); }
inline unsigned __ballot_sync(unsigned m, int p) { return fastconv::emu::ballot_impl(m, p != 0); }
inline int __any_sync(unsigned m, int p) { return fastconv::emu::ballot_impl(m, p != 0) != 0; }
inline int __all_sync(unsigned m, int p) { return fastconv::emu::ballot_impl(m, p != 0) == (m & fastconv::emu::my_warp().alive); }
inline unsigned __activemask() { return fastconv::emu::my_warp().alive; }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() {}

// ------------------------------------------------------------------ math shims
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0 ? 0 : x > 1 ? 1 : x; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }

// ------------------------------------------------------------------ 16-bit floats
// Storage-only types, as in CUDA: arithmetic goes through float (to_acc / from_acc in compat.h).
namespace fastconv { namespace emu {
inline uint16_t float_to_half_bits(float f) {   // round to nearest even, IEEE binary16
  uint32_t x; std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return uint16_t(sign | 0x7c00u | (x > 0x7f800000u ? 0x200u : 0u));
  if (x >= 0x477ff000u) return uint16_t(sign | 0x7c00u);                 // overflow -> inf
  if (x < 0x38800000u) {                                                  // subnormal or zero
    if (x < 0x33000000u) return uint16_t(sign);
    const uint32_t e = x >> 23, m = (x & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;                                       // 14..24
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) ++r;
    return uint16_t(sign | r);
  }
  uint32_t r = ((x - 0x38000000u) >> 13);
  const uint32_t rem = x & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1))) ++r;
  return uint16_t(sign | r);
}
inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  uint32_t x;
  if (e == 0) {
    if (m == 0) x = sign;
    else { float f = std::ldexp(float(m), -24); std::memcpy(&x, &f, 4); x |= sign; }
  } else if (e == 31) x = sign | 0x7f800000u | (m << 13);
  else x = sign | ((e + 112) << 23) | (m << 13);
  float f; std::memcpy(&f, &x, 4); return f;
}
} }  // namespace fastconv::emu

struct __half {
  uint16_t bits;
  __half() = default;
  explicit __half(float f) : bits(fastconv::emu::float_to_half_bits(f)) {}
  explicit operator float() const { return fastconv::emu::half_bits_to_float(bits); }
};
struct __nv_bfloat16 {
  uint16_t bits;
  __nv_bfloat16() = default;
  explicit __nv_bfloat16(float f) {                       // round to nearest even
    uint32_t u; std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) { bits = uint16_t((u >> 16) | 0x40); return; }
    u += 0x7fffu + ((u >> 16) & 1);
    bits = uint16_t(u >> 16);
  }
  explicit operator float() const { uint32_t u = uint32_t(bits) << 16; float f; std::memcpy(&f, &u, 4); return f; }
};
inline __half __float2half_rn(float f) { return __half(f); }
inline float __half2float(__half h) { return float(h); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 h) { return float(h); }

// ------------------------------------------------------------------ checked memory
namespace fastconv { namespace emu {

[[noreturn]] inline void out_of_range(const char* what, int64_t i, int64_t n) {
  const auto& t = F().tid; const auto& b = B().bid;
  throw emu_error(std::string(what) + " index " + std::to_string(i) + " out of range [0, " +
                  std::to_string(n) + ") in thread (" + std::to_string(t.x) + "," +
                  std::to_string(t.y) + "," + std::to_string(t.z) + ") of block (" +
                  std::to_string(b.x) + "," + std::to_string(b.y) + "," + std::to_string(b.z) + ")");
}


// ------------------------------------------------------------------ shared memory checks
// Every shared element has a Shadow (its last writer and its readers, each with the block barrier
// generation and the warp barrier generation of the access). A kernel reads and writes shared
// memory through a proxy (shared_ref, what tile[i][j] or dyn[i] return), which checks:
//   - a read of an element that no thread of this block has written (shared memory is undefined
//     at the start of every block; it is also filled with 0xFF bytes, NaN in every float type);
//   - a race: an element written by one thread and read or written by another in the same
//     barrier interval. __syncthreads orders everything before it against everything after;
//     within a warp, a __syncwarp or any warp collective (shuffle, vote, WMMA) whose mask holds
//     both lanes orders them, so warp-synchronous code separated by __syncwarp is accepted and
//     the same code without it is reported. (When a warp's readers of an element sit on either
//     side of a partial-mask barrier the check is conservative and may report a race.)
// Atomics on shared memory only check that the element was written before; they are not
// ordered against plain accesses. EMU_RACECHECK=0 turns the shadow checks off (bounds checks
// and poisoning stay).
template <class T>
struct tracked : std::integral_constant<bool, std::is_arithmetic<std::remove_const_t<T>>::value ||
                                                  std::is_same<std::remove_const_t<T>, __half>::value ||
                                                  std::is_same<std::remove_const_t<T>, __nv_bfloat16>::value> {};

inline std::string thread_str(int linear) {
  const dim3 bd = B().block;
  return "(" + std::to_string(linear % bd.x) + "," + std::to_string(linear / bd.x % bd.y) + "," +
         std::to_string(linear / (bd.x * bd.y)) + ")";
}

inline std::string block_str() {
  const uint3 b = B().bid;
  return "(" + std::to_string(b.x) + "," + std::to_string(b.y) + "," + std::to_string(b.z) + ")";
}

// "tile[3][5]" for a static array, "dynamic shared memory byte 12" for the dynamic one.
inline std::string element_str(const SharedArray& a, size_t byte_off) {
  if (a.ndims == 0) return std::string(a.name) + " byte " + std::to_string(byte_off);
  int64_t flat = int64_t(byte_off / a.gran);
  std::string idx;
  for (int d = a.ndims - 1; d >= 0; --d) {
    idx = "[" + std::to_string(flat % a.dims[d]) + "]" + idx;
    flat /= a.dims[d];
  }
  return std::string(a.name) + idx;
}

inline std::string interval_str() {
  const int line = B().epoch_line;
  return line ? "after the __syncthreads at line " + std::to_string(line)
              : "before the first __syncthreads";
}

// True if a warp barrier released at generation g >= from held every lane of `lanes`.
inline bool warp_synced(const BlockState& b, int warp, uint32_t lanes, uint32_t from) {
  const std::vector<uint32_t>& rel = b.warps[size_t(warp)].released;
  for (size_t g = from; g < rel.size(); ++g)
    if ((rel[g] & lanes) == lanes) return true;
  return false;
}

enum Access { READ = 0, WRITE = 1, ATOMIC = 2 };

inline std::string block_str(int64_t linear) {
  const dim3 g = B().grid;
  return "(" + std::to_string(linear % g.x) + "," + std::to_string(linear / g.x % g.y) + "," +
         std::to_string(linear / (int64_t(g.x) * g.y)) + ")";
}

// The race and initialisation rules on one element's shadow (shared memory: tag = the block
// run's serial, uninitialised reads checked; global memory: tag = the launch's serial, accesses
// from other blocks of the launch kept apart). describe() names the element for the message.
template <class Describe>
__attribute__((noinline)) void check_access(Shadow& e, BlockState& b, uint64_t tag, Access kind, bool global,
                         const Describe& describe) {
  const int t = b.cur->linear, warp = t >> 5;
  const uint32_t bit = 1u << (t & 31), bgen = uint32_t(b.gen);
  const uint32_t wgen = uint32_t(b.warps[size_t(warp)].gen);
  const int64_t blk = global ? b.block_linear() : 0;
  const char* space = global ? "global memory" : "shared memory";
  if (e.serial != tag) {
    e = Shadow{};
    e.serial = tag;
  }
  if (global && e.writer >= 0 && e.w_block != blk) {
    // Blocks of one launch are not ordered: two of them writing one element is a race. A read of
    // another block's result is not checked (a fence and a flag or counter can order it).
    if (kind == WRITE)
      throw emu_error("global memory race on " + describe() + ": thread " + thread_str(t) +
                      " of block " + block_str() + " writes it and thread " +
                      thread_str(e.writer) + " of block " + block_str(e.w_block) +
                      " wrote it in the same launch (blocks are not ordered: use atomics or "
                      "give each element one writer)");
  }
  if (global && e.reader >= 0 && e.r_block != blk) e.reader = -1;
  auto race = [&](const char* mine, int other, const char* theirs) {
    throw emu_error(std::string(space) + " race on " + describe() + " in block " + block_str() +
                    ": thread " + thread_str(t) + " " + mine + " it and thread " +
                    thread_str(other) + " " + theirs + " it in the same barrier interval (" +
                    interval_str() + ") with no __syncthreads (or __syncwarp in one warp) "
                    "between them");
  };
  // Has the writer's access been ordered before this one?
  auto after_write = [&] {
    return e.writer < 0 || e.writer == t || e.w_bgen != bgen || (global && e.w_block != blk) ||
           ((e.writer >> 5) == warp && warp_synced(b, warp, bit | 1u << (e.writer & 31), e.w_wgen));
  };
  if (kind != WRITE) {
    if (e.writer < 0 && !global)
      throw emu_error(std::string(kind == ATOMIC ? "atomic on" : "read of") +
                      " uninitialised shared memory: thread " + thread_str(t) + " of block " +
                      block_str() + " " + (kind == ATOMIC ? "updates " : "reads ") + describe() +
                      ", which no thread of this block has written (" + interval_str() + ")");
    if (kind == ATOMIC) return;
    if (!after_write()) race("reads", e.writer, "wrote");
    if (e.reader < 0 || e.r_bgen != bgen) {
      e.reader = t; e.reader2 = -1; e.r_bgen = bgen; e.r_warp = warp; e.r_lanes = bit; e.r_wgen = wgen;
      e.r_block = blk;
    } else {
      if (t != e.reader && e.reader2 < 0) e.reader2 = t;
      if (e.r_warp != warp) e.r_warp = -2;
      e.r_lanes |= bit; e.r_wgen = wgen;
    }
    return;
  }
  if (!after_write()) race("writes", e.writer, "wrote");
  if (e.reader >= 0 && e.r_bgen == bgen && (e.reader != t || e.reader2 >= 0)) {
    const int other = e.reader != t ? e.reader : e.reader2;
    if (e.r_warp != warp || !warp_synced(b, warp, e.r_lanes | bit, e.r_wgen))
      race("writes", other, "read");
  }
  e.writer = t; e.w_bgen = bgen; e.w_wgen = wgen; e.w_block = blk;
}

// check_access's most common case, inline: a read of an element last written in an earlier
// barrier interval or by this thread, in this block.
EMU_INLINE bool quick_read(Shadow& e, BlockState& b, uint64_t tag, int64_t blk) {
  const int t = b.cur->linear;
  const uint32_t bgen = uint32_t(b.gen);
  if (e.serial != tag || e.writer < 0 || e.w_block != blk || (e.writer != t && e.w_bgen == bgen))
    return false;
  const int warp = t >> 5;
  const uint32_t wgen = uint32_t(b.warps[size_t(warp)].gen), bit = 1u << (t & 31);
  if (e.reader < 0 || e.r_bgen != bgen || e.r_block != blk) {
    e.reader = t; e.reader2 = -1; e.r_bgen = bgen; e.r_warp = warp; e.r_lanes = bit; e.r_wgen = wgen;
    e.r_block = blk;
  } else {
    if (t != e.reader && e.reader2 < 0) e.reader2 = t;
    if (e.r_warp != warp) e.r_warp = -2;
    e.r_lanes |= bit; e.r_wgen = wgen;
  }
  return true;
}

EMU_INLINE void shared_access(SharedArray& a, size_t byte_off, Access kind) {
  if (a.shadow.empty()) return;   // EMU_RACECHECK=0
  BlockState& b = B();
  Shadow& e = a.shadow[byte_off >> a.gran_shift];
  if (kind == READ && quick_read(e, b, b.serial, 0)) return;
  check_access(e, b, b.serial, kind, false, [&] { return element_str(a, byte_off); });
}

inline void global_access(GlobalArray& a, const void* p, Access kind) {
  BlockState& b = B();
  const size_t byte_off = size_t(static_cast<const unsigned char*>(p) - a.base);
  Shadow& e = a.shadow[byte_off / a.gran];
  if (kind == READ && quick_read(e, b, b.launch_serial, b.block_linear())) return;
  check_access(e, b, b.launch_serial, kind, true, [&] {
    return "global memory element " + std::to_string(byte_off / a.gran) + " of the buffer at " +
           std::to_string(reinterpret_cast<uintptr_t>(a.base));
  });
}

// The shadow of the global buffer at `base` (n elements of `gran` bytes) in this launch, or null
// when global checks are off (EMU_RACECHECK=0, EMU_WORKERS > 1, buffers over 16M elements).
inline GlobalArray* global_array(const void* base, int64_t n, size_t gran) {
  BlockState& b = B();
  if (!b.globals) return nullptr;
  const auto* p = static_cast<const unsigned char*>(base);
  const size_t bytes = size_t(n) * gran;
  GlobalArray* a = b.global_last;
  if (!a || a->base != p || a->gran != gran) {
    a = nullptr;
    for (auto& g : *b.globals)
      if (g->base == p && g->gran == gran) { a = g.get(); break; }
    if (!a) {
      if (n > (int64_t(1) << 24)) return nullptr;
      b.globals->push_back(std::make_unique<GlobalArray>());
      a = b.globals->back().get();
      a->base = p; a->gran = gran;
    }
    b.global_last = a;
  }
  if (a->bytes < bytes) { a->bytes = bytes; a->shadow.resize(size_t(n)); }
  return a;
}

[[noreturn]] inline void shared_out_of_range(const SharedArray* a, int64_t i, int64_t n) {
  const std::string what = a && a->ndims ? std::string("shared array '") + a->name + "'"
                                         : std::string("dynamic shared memory");
  out_of_range(what.c_str(), i, n);
}

template <class T> class sptr;

// What tile[i][j], dyn[i] (shared memory) and out[i] (a gptr<T> to non-const global memory)
// return: a proxy of one element that checks every read and write. It converts to the element's
// value (float v = tile[i][j]; f(tile[i][j])), takes assignments and compound assignments, and
// &tile[i][j] is a checked shared pointer (sptr). Global is true for global memory, whose array
// pointer may be null (checks off).
template <class T, bool Global>
class mem_ref {
  using V = std::remove_const_t<T>;
  using Array = std::conditional_t<Global, GlobalArray, SharedArray>;

 public:
  mem_ref(T* p, Array* a) : p_(p), a_(a) {}
  // Not copyable, so `auto v = tile[i];` does not compile under the emulation (it would hold the
  // proxy, not the value, and read later): write the type, `float v = tile[i];`.
  mem_ref(const mem_ref&) = delete;

  EMU_INLINE operator V() const { access(READ); return *p_; }
  EMU_INLINE V value() const { return *this; }
  EMU_INLINE const mem_ref& operator=(const V& v) const { access(WRITE); *p_ = v; return *this; }
  const mem_ref& operator=(const mem_ref& o) const { const V v = o; return *this = v; }
  template <class U> const mem_ref& operator+=(const U& v) const { return *this = V(value() + v); }
  template <class U> const mem_ref& operator-=(const U& v) const { return *this = V(value() - v); }
  template <class U> const mem_ref& operator*=(const U& v) const { return *this = V(value() * v); }
  template <class U> const mem_ref& operator/=(const U& v) const { return *this = V(value() / v); }
  template <class U> const mem_ref& operator|=(const U& v) const { return *this = V(value() | v); }
  template <class U> const mem_ref& operator&=(const U& v) const { return *this = V(value() & v); }
  template <class U> const mem_ref& operator^=(const U& v) const { return *this = V(value() ^ v); }
  const mem_ref& operator++() const { return *this += 1; }
  const mem_ref& operator--() const { return *this -= 1; }
  V operator++(int) const { const V x = value(); *this = V(x + 1); return x; }
  V operator--(int) const { const V x = value(); *this = V(x - 1); return x; }
  // &tile[i][j]: a shared pointer (sptr). Not for global memory (compat.h: write p + i, not &p[i]).
  sptr<T> operator&() const;

 private:
  EMU_INLINE void access(Access kind) const {
    if constexpr (Global) {
      if (a_) global_access(*a_, p_, kind);
    } else {
      shared_access(*a_, size_t(reinterpret_cast<const unsigned char*>(p_) - a_->base), kind);
    }
  }
  T* p_;
  Array* a_;
};
template <class T> using shared_ref = mem_ref<T, false>;
template <class T> using global_ref = mem_ref<T, true>;

template <bool Global = false, class T, class Array>
EMU_INLINE mem_ref<T, Global>& make_ref(Array* a, T* p) {
  static_assert(sizeof(mem_ref<T, Global>) <= sizeof(Fiber::ring[0]), "mem_ref slot");
  Fiber& f = F();
  void* slot = f.ring[f.ring_pos++ & 31];
  return *new (slot) mem_ref<T, Global>(p, a);
}

// A pointer into a buffer of n elements that checks every access (global memory). Arithmetic
// may leave the buffer (as in C); dereferencing outside it throws. Elements of a gptr<T> are
// proxies (global_ref) that record reads and writes for the race checks; a gptr<const T> gives
// plain const references (reads of inputs are not tracked).
template <class T>
class gptr {
 public:
  gptr() = default;
  gptr(std::nullptr_t) {}
  gptr(T* base, int64_t n, const char* what = "global memory", bool track = true)
      : base_(base), n_(n), what_(what), track_(track) {}
  template <class U, class = std::enable_if_t<std::is_convertible<U*, T*>::value>>
  gptr(const gptr<U>& o) : base_(o.base_), n_(o.n_), off_(o.off_), what_(o.what_), track_(o.track_) {}

  EMU_INLINE decltype(auto) operator[](int64_t i) const {
    const int64_t j = check(i);
    if constexpr (!std::is_const<T>::value && tracked<T>::value)
      return make_ref<true>(track_ ? global_array(base_, n_, sizeof(T)) : nullptr, base_ + j);
    else
      return (base_[j]);
  }
  decltype(auto) operator*() const { return (*this)[0]; }
  gptr operator+(int64_t i) const { gptr r = *this; r.off_ += i; return r; }
  gptr operator-(int64_t i) const { gptr r = *this; r.off_ -= i; return r; }
  gptr& operator+=(int64_t i) { off_ += i; return *this; }
  gptr& operator-=(int64_t i) { off_ -= i; return *this; }
  gptr& operator++() { ++off_; return *this; }
  gptr& operator--() { --off_; return *this; }
  gptr operator++(int) { gptr r = *this; ++off_; return r; }
  gptr operator--(int) { gptr r = *this; --off_; return r; }
  explicit operator bool() const { return base_ != nullptr; }
  bool operator==(std::nullptr_t) const { return base_ == nullptr; }
  bool operator!=(std::nullptr_t) const { return base_ != nullptr; }
  // The checked address of element i (for atomics, which the race checks do not track).
  T* at(int64_t i) const { return base_ + check(i); }

 private:
  template <class U> friend class gptr;
  EMU_INLINE int64_t check(int64_t i) const {
    const int64_t j = off_ + i;
    if (base_ == nullptr || j < 0 || j >= n_) out_of_range(what_, j, n_);
    return j;
  }
  T* base_ = nullptr;
  int64_t n_ = 0, off_ = 0;
  const char* what_ = "global memory";
  bool track_ = true;
};

// A checked pointer into shared memory (FC_DYN_SHARED, &tile[i][j], a row tile[i]): the gptr
// interface, with element access through shared_ref. It converts to gptr<T> for helpers written
// for global pointers (bounds still checked there, races not).
template <class T>
class sptr {
 public:
  sptr() = default;
  sptr(std::nullptr_t) {}
  sptr(T* base, int64_t n, int64_t off, SharedArray* a) : base_(base), n_(n), off_(off), a_(a) {}
  template <class U, class = std::enable_if_t<std::is_convertible<U*, T*>::value>>
  sptr(const sptr<U>& o) : base_(o.base_), n_(o.n_), off_(o.off_), a_(o.a_) {}

  EMU_INLINE decltype(auto) operator[](int64_t i) const {
    const int64_t j = off_ + i;
    if (base_ == nullptr || j < 0 || j >= n_) shared_out_of_range(a_, j, n_);
    if constexpr (tracked<T>::value) return make_ref(a_, base_ + j);
    else return (base_[j]);
  }
  decltype(auto) operator*() const { return (*this)[0]; }
  sptr operator+(int64_t i) const { sptr r = *this; r.off_ += i; return r; }
  sptr operator-(int64_t i) const { sptr r = *this; r.off_ -= i; return r; }
  sptr& operator+=(int64_t i) { off_ += i; return *this; }
  sptr& operator-=(int64_t i) { off_ -= i; return *this; }
  sptr& operator++() { ++off_; return *this; }
  sptr& operator--() { --off_; return *this; }
  sptr operator++(int) { sptr r = *this; ++off_; return r; }
  sptr operator--(int) { sptr r = *this; --off_; return r; }
  explicit operator bool() const { return base_ != nullptr; }
  bool operator==(std::nullptr_t) const { return base_ == nullptr; }
  bool operator!=(std::nullptr_t) const { return base_ != nullptr; }
  // The checked address of element i, for atomics (the element must have been written).
  T* at(int64_t i) const {
    const int64_t j = off_ + i;
    if (base_ == nullptr || j < 0 || j >= n_) shared_out_of_range(a_, j, n_);
    shared_access(*a_, size_t(reinterpret_cast<const unsigned char*>(base_ + j) - a_->base), ATOMIC);
    return base_ + j;
  }
  template <class U, class = std::enable_if_t<std::is_convertible<T*, U*>::value>>
  operator gptr<U>() const { return gptr<U>(base_, n_, "shared memory", false) + off_; }

 private:
  template <class U> friend class sptr;
  T* base_ = nullptr;
  int64_t n_ = 0, off_ = 0;
  SharedArray* a_ = nullptr;
};

template <class T, bool Global>
sptr<T> mem_ref<T, Global>::operator&() const {
  static_assert(!Global, "&p[i] of a global pointer: write p + i (cuda/compat.h rules)");
  T* base = reinterpret_cast<T*>(a_->base);
  return sptr<T>(base, int64_t(a_->bytes / sizeof(T)), p_ - base, a_);
}

// A view of a static shared array (FC_SHARED) or of one of its rows: checks every index of every
// dimension; the last one yields a shared_ref (a plain reference for class element types, which
// are bounds-checked only). A row converts to a shared pointer, as an array decays in CUDA.
template <class A> struct sview;
template <class E, size_t N>
struct sview<E[N]> {
  using Leaf = std::remove_all_extents_t<E>;
  SharedArray* a;
  E* p;   // first element of this level

  EMU_INLINE decltype(auto) operator[](int64_t i) const {
    if (i < 0 || i >= int64_t(N)) shared_out_of_range(a, i, int64_t(N));
    if constexpr (std::is_array<E>::value) return sview<E>{a, p[i]};
    else if constexpr (tracked<E>::value) return make_ref(a, p + i);
    else return (p[i]);
  }
  template <class U, class = std::enable_if_t<std::is_convertible<Leaf*, U*>::value>>
  operator sptr<U>() const {
    Leaf* base = reinterpret_cast<Leaf*>(a->base);
    return sptr<U>(base, int64_t(a->bytes / sizeof(Leaf)), reinterpret_cast<Leaf*>(p) - base, a);
  }
  // For helpers written for global pointers (bounds checked over the whole array, races not).
  template <class U, class = std::enable_if_t<std::is_convertible<Leaf*, U*>::value>>
  operator gptr<U>() const {
    Leaf* base = reinterpret_cast<Leaf*>(a->base);
    return gptr<U>(base, int64_t(a->bytes / sizeof(Leaf)), "shared memory", false) +
           (reinterpret_cast<Leaf*>(p) - base);
  }
};
// The pointer a row of a shared array decays to in CUDA (tile[i] as a matrix pointer); other
// pointer types unchanged.
template <class E, size_t N>
inline sptr<std::remove_all_extents_t<E>> as_pointer(const sview<E[N]>& v) { return v; }
template <class P> inline const P& as_pointer(const P& p) { return p; }

// Runs in every thread at the FC_SHARED declaration; the first thread of each block resets the
// array: shadow state blank, bytes poisoned with 0xFF (NaN in every float type).
template <class A>
inline sview<A> shared_view(A& storage, SharedArray& meta, const char* name) {
  using Leaf = std::remove_all_extents_t<A>;
  static_assert(std::rank<A>::value >= 1 && std::rank<A>::value <= 4, "FC_SHARED: 1 to 4 dimensions");
  BlockState& b = B();
  if (meta.serial != b.serial) {
    meta.serial = b.serial;
    meta.name = name;
    meta.base = reinterpret_cast<unsigned char*>(&storage);
    meta.bytes = sizeof(A);
    meta.gran = sizeof(Leaf);
    meta.gran_shift = unsigned(__builtin_ctzll(sizeof(Leaf)));
    meta.ndims = int(std::rank<A>::value);
    const int64_t ext[4] = {int64_t(std::extent<A, 0>::value), int64_t(std::extent<A, 1>::value),
                            int64_t(std::extent<A, 2>::value), int64_t(std::extent<A, 3>::value)};
    for (int d = 0; d < 4; ++d) meta.dims[d] = ext[d];
    const size_t count = sizeof(A) / sizeof(Leaf);
    // Shadow only for the checked element types (all of a power-of-two size).
    const bool check = b.racecheck && tracked<Leaf>::value;
    if (check && meta.shadow.size() != count) meta.shadow.assign(count, Shadow{});
    if (!check) meta.shadow.clear();
    if constexpr (std::is_trivially_copyable<Leaf>::value) std::memset(&storage, 0xFF, sizeof(A));
  }
  return sview<A>{&meta, storage};
}

template <class T> inline sptr<T> dynamic_shared() {
  BlockState& b = B();
  return sptr<T>(reinterpret_cast<T*>(dynamic_smem(b)), int64_t(b.dyn_bytes / sizeof(T)), 0,
                 b.dyn_meta);
}

inline void launch(dim3 grid, dim3 block, size_t smem, cudaStream_t, const std::function<void()>& body) {
  launch(grid, block, smem, body);
}
} }  // namespace fastconv::emu

#define FC_EMU_SHARED(T, name, dims)                                        \
  static thread_local T name##_fc_storage_ dims;                            \
  static thread_local ::fastconv::emu::SharedArray name##_fc_meta_;         \
  const auto name = ::fastconv::emu::shared_view(name##_fc_storage_, name##_fc_meta_, #name)

template <class T> inline T __ldg(fastconv::emu::gptr<const T> p) { return *p; }
template <class T> inline T __ldg(fastconv::emu::gptr<T> p) { return *p; }

// ------------------------------------------------------------------ atomics
// Fibers of a block never interleave inside an atomic (switches happen only at barriers); GCC
// __atomic builtins make them safe across blocks running in parallel (EMU_WORKERS > 1).
namespace fastconv { namespace emu {
template <class T> inline T atomic_add(T* a, T v) {
  if constexpr (std::is_integral<T>::value) return __atomic_fetch_add(a, v, __ATOMIC_RELAXED);
  else {
    T old, nv; __atomic_load(a, &old, __ATOMIC_RELAXED);
    do { nv = old + v; } while (!__atomic_compare_exchange(a, &old, &nv, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return old;
  }
}
} }  // namespace fastconv::emu
template <class T> inline T atomicAdd(fastconv::emu::gptr<T> p, T v) { return fastconv::emu::atomic_add(p.at(0), v); }
template <class T> inline T atomicAdd(T* a, T v) { return fastconv::emu::atomic_add(a, v); }
template <class T> inline T atomicMax(fastconv::emu::gptr<T> p, T v) {
  T* a = p.at(0); T old; __atomic_load(a, &old, __ATOMIC_RELAXED);
  while (old < v && !__atomic_compare_exchange(a, &old, &v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
  return old;
}
template <class T> inline T atomicCAS(fastconv::emu::gptr<T> p, T cmp, T v) {
  __atomic_compare_exchange(p.at(0), &cmp, &v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return cmp;
}
// The same on shared memory (&tile[i], dyn + i): the element must have been written before.
template <class T> inline T atomicAdd(fastconv::emu::sptr<T> p, T v) { return fastconv::emu::atomic_add(p.at(0), v); }
template <class T> inline T atomicMax(fastconv::emu::sptr<T> p, T v) {
  T* a = p.at(0); T old = *a;
  if (old < v) *a = v;   // fibers of a block never interleave inside an atomic
  return old;
}
template <class T> inline T atomicCAS(fastconv::emu::sptr<T> p, T cmp, T v) {
  T* a = p.at(0); T old = *a;
  if (old == cmp) *a = v;
  return old;
}

// Warp shuffles of a memory element (__shfl_sync(m, tile[i], 0)): shuffle its value.
template <class T, bool G> inline std::remove_const_t<T> __shfl_sync(unsigned m, const fastconv::emu::mem_ref<T, G>& v, int src, int w = 32) { return __shfl_sync(m, v.value(), src, w); }
template <class T, bool G> inline std::remove_const_t<T> __shfl_up_sync(unsigned m, const fastconv::emu::mem_ref<T, G>& v, unsigned d, int w = 32) { return __shfl_up_sync(m, v.value(), d, w); }
template <class T, bool G> inline std::remove_const_t<T> __shfl_down_sync(unsigned m, const fastconv::emu::mem_ref<T, G>& v, unsigned d, int w = 32) { return __shfl_down_sync(m, v.value(), d, w); }
template <class T, bool G> inline std::remove_const_t<T> __shfl_xor_sync(unsigned m, const fastconv::emu::mem_ref<T, G>& v, int lm, int w = 32) { return __shfl_xor_sync(m, v.value(), lm, w); }

#include "cuda/emulation_wmma.h"
