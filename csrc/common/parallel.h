// A small thread pool for the CPU kernels (no OpenMP: it must not spin against PyTorch's own
// OpenMP pool when both run in one process, as in bench/).
//
//   parallel_for(n, grain, [&](int64_t begin, int64_t end) { ... });   // at most one contiguous chunk of [0, n) per thread
//   parallel_tasks(t, [&](int64_t task, int64_t ntasks) { ... });       // exactly min(t, threads) tasks
//
// The calling thread takes part. Chunks are claimed, not assigned: a thread that is free takes the
// next one, so one thread may run several chunks one after another (when a worker is late to wake,
// the caller runs its share) and chunks must not wait for each other. Calls made while the pool is busy (from a worker, or from a
// second Python thread, since kernels run with the GIL released) run inline on the caller, so a
// call never deadlocks. Work functions must not throw.
//
// Small ops (see OpScope): waking a sleeping worker costs tens of microseconds (a futex wake, a
// scheduler decision, and the worker's spin afterwards), more than a small op saves by splitting.
// cpu/dispatch.cpp wraps every kernel in an OpScope carrying the op's estimated single-thread time
// W; with the small-op threshold T (set_small_op_ns; default 50 us, FASTCONV_SMALL_OP_US):
//   - the op plans for at most max(1, W / (T / 5)) threads: num_threads() inside the scope says so,
//     so the kernels' cost models (and thus their results) depend only on the shape and the thread
//     setting, never on timing;
//   - if W < T, the op does not wake sleeping workers: it runs on the caller and the workers that are
//     still spinning from the previous region. Nor does a larger op whose W is under twice the
//     pool's measured wake latency (a woken worker would arrive after half the work is done).
//     This changes only who runs which chunk, not the chunks, so the result is the same bit for bit.
// T = 0 turns both rules off (the tests do, to reach every split on small inputs).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace fastconv {

int num_threads();           // threads a parallel region uses (the caller included; see OpScope)
void set_num_threads(int n); // n >= 1; FASTCONV_NUM_THREADS sets the initial value

// Where parallel regions run (see common/openmp_runtime.h):
//   kAuto      on the OpenMP runtime another library loaded into the process (PyTorch) when its
//              idle workers busy-wait (OMP_WAIT_POLICY unset or ACTIVE), else on fastconv's pool;
//   kOwn       always on fastconv's pool;
//   kOpenMP    on a loaded OpenMP runtime whatever its wait policy (fastconv's pool if none is).
// The chunks, and so the results, are the same bit for bit on either. FASTCONV_THREAD_POOL
// (auto, fastconv, openmp) sets the initial value.
enum class PoolMode { kAuto = 0, kOwn = 1, kOpenMP = 2 };
bool parse_pool_mode(const std::string& name, PoolMode* mode);  // "auto", "fastconv", "openmp"
const char* pool_mode_name(PoolMode m);
PoolMode pool_mode();
void set_pool_mode(PoolMode m);
// The shared object of the OpenMP runtime a region started on this thread now would use, or ""
// for fastconv's own pool.
std::string pool_in_use();

// Schedule tracing (bench/run_schedule.py), to see how far an op's decomposition could scale on
// more cores than this machine has. While on, a region started outside any region does not run
// in parallel: its chunks (cut by plan_chunks for num_threads(), as in a real run) run one after
// another on the calling thread, each one timed, and the region is recorded. For benchmarks only:
// one thread at a time may call kernels while it is on.
struct TracedRegion {
  int threads;               // threads the region was cut for (1: it ran inline)
  int64_t start_ns, end_ns;  // steady clock
  int64_t setup_ns;          // per-thread set-up before the first chunk (parallel_claim's init)
  std::vector<int64_t> chunk_ns;
};
void set_schedule_trace(bool on);  // on: clears the record
std::vector<TracedRegion> take_schedule_trace();

int64_t small_op_ns();            // the threshold T above, in nanoseconds
void set_small_op_ns(int64_t ns);  // ns >= 0; 0 turns the small-op rules off

// The op the calling thread runs, for the small-op rules; scopes do not nest (an inner scope is
// ignored). work_ns: estimated single-thread time of the whole op.
class OpScope {
 public:
  explicit OpScope(double work_ns);
  ~OpScope();
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;

 private:
  bool active_;
};

int64_t pool_wake_latency_ns();  // measured time from waking a worker to it running (mean)
bool op_is_small();  // inside an OpScope: does the op leave sleeping workers asleep?

// Rough single-core rates for OpScope estimates (they need the order of magnitude, not more).
inline double op_ns(double flops, double flops_per_ns, double bytes) {
  const double f = flops / flops_per_ns, b = bytes / 8.0;  // ~8 GB/s streamed by one core
  return f > b ? f : b;
}

using RangeFn = void (*)(void* ctx, int64_t begin, int64_t end);
void parallel_for_raw(int64_t n, int64_t grain, RangeFn fn, void* ctx);

template <class F>
inline void parallel_for(int64_t n, int64_t grain, const F& f) {
  if (n <= 0) return;
  parallel_for_raw(n, grain < 1 ? 1 : grain,
                   [](void* ctx, int64_t b, int64_t e) { (*static_cast<const F*>(ctx))(b, e); },
                   const_cast<void*>(static_cast<const void*>(&f)));
}

// Runs f(task, ntasks) for task in [0, ntasks), ntasks = min(max_tasks, num_threads()); no two
// tasks run on one thread at the same time, so a task index can pick a scratch buffer.
template <class F>
inline void parallel_tasks(int64_t max_tasks, const F& f) {
  int64_t nt = num_threads();
  if (max_tasks < nt) nt = max_tasks;
  if (nt < 1) nt = 1;
  auto g = [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) f(t, nt);
  };
  parallel_for(nt, 1, g);
}

// Work units claimed dynamically: min(slots, num_threads()) threads each take a slot index (its
// own scratch), run init(slot) once, then claim ranges of `chunk` units from a shared counter
// until none is left: f(slot, begin, end). Which slot runs which range depends on timing, so a
// slot's scratch must be workspace only: f's results may depend on the range, never on the slot.
// Schedule tracing records each range as a chunk (a region's own chunking would hand every
// range to the first slot and show no parallelism).
using SlotFn = void (*)(void* ctx, int64_t slot);
using SlotRangeFn = void (*)(void* ctx, int64_t slot, int64_t begin, int64_t end);
void parallel_claim_raw(int64_t units, int64_t chunk, int64_t slots, SlotFn init, SlotRangeFn fn,
                        void* ctx);

template <class Init, class F>
inline void parallel_claim(int64_t units, int64_t chunk, int64_t slots, const Init& init,
                           const F& f) {
  if (units <= 0) return;
  struct Ctx {
    const Init* init;
    const F* f;
  } ctx{&init, &f};
  parallel_claim_raw(
      units, chunk < 1 ? 1 : chunk, slots < 1 ? 1 : slots,
      [](void* c, int64_t slot) { (*static_cast<Ctx*>(c)->init)(slot); },
      [](void* c, int64_t slot, int64_t b, int64_t e) { (*static_cast<Ctx*>(c)->f)(slot, b, e); },
      &ctx);
}

}  // namespace fastconv
