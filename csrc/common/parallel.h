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
#pragma once
#include <cstdint>

namespace fastconv {

int num_threads();           // threads a parallel region uses (the caller included)
void set_num_threads(int n); // n >= 1; FASTCONV_NUM_THREADS sets the initial value

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

}  // namespace fastconv
