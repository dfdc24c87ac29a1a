// Thread pool behind parallel.h: persistent workers that spin briefly, then sleep on a condition
// variable. A region is cut into at most num_threads() contiguous chunks that the participants
// claim from a shared counter, the caller first: a worker that is slow to wake (asleep, or
// sharing its core with another process's spinning thread, e.g. PyTorch's OpenMP pool) leaves
// its chunk to whoever is free instead of holding the whole region up until it gets the CPU.
#include "common/parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define FC_PAUSE() _mm_pause()
#else
#define FC_PAUSE() std::this_thread::yield()
#endif
#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

namespace fastconv {
namespace {

int default_threads() {
  if (const char* env = std::getenv("FASTCONV_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n >= 1) return n;
  }
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n >= 1) return n;
  }
#endif
  unsigned n = std::thread::hardware_concurrency();
  return n >= 1 ? static_cast<int>(n) : 1;
}

thread_local bool t_in_region = false;

class Pool {
 public:
  // The pool is leaked on purpose (no join at interpreter exit). A forked child has none of the
  // parent's worker threads, so it drops the inherited pool and builds its own on first use.
  static Pool& get() {
    Pool* p = instance().load(std::memory_order_acquire);
    if (p) return *p;
    Pool* fresh = new Pool();
    if (instance().compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) {
      register_atfork();
      return *fresh;
    }
    delete fresh;  // another thread won the race
    return *p;
  }

  int threads() const { return threads_.load(std::memory_order_relaxed); }
  void set_threads(int n) { threads_.store(std::max(1, n), std::memory_order_relaxed); }

  void run(int64_t n, int64_t grain, RangeFn fn, void* ctx) {
    int nt = threads();
    int64_t max_chunks = (n + grain - 1) / grain;
    if (nt <= 1 || max_chunks <= 1 || t_in_region) return fn(ctx, 0, n);
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return fn(ctx, 0, n);  // another Python thread holds the pool

    int helpers = static_cast<int>(std::min<int64_t>(std::min(nt, 4096), max_chunks)) - 1;
    ensure_workers(helpers);
    // Chunks in index order; the caller claims first, so with awake workers chunk i usually runs
    // on the same core from call to call (repeated calls find their data in that core's cache).
    int64_t chunk = std::max<int64_t>(grain, (n + helpers) / (helpers + 1));
    const uint64_t nchunks = static_cast<uint64_t>((n + chunk - 1) / chunk);
    uint64_t gen;
    {
      // The job and its generation are published together, under mu_, so a worker never pairs
      // one generation with another job's helper count.
      std::lock_guard<std::mutex> lk(mu_);
      job_fn_ = fn;
      job_ctx_ = ctx;
      job_n_ = n;
      job_chunk_ = chunk;
      active_helpers_ = helpers;
      done_.store(0, std::memory_order_relaxed);
      gen = generation_.load(std::memory_order_relaxed) + 1;
      claim_.store(make_claim(gen, nchunks, 0), std::memory_order_release);
      generation_.store(gen, std::memory_order_release);
    }
    cv_.notify_all();

    t_in_region = true;
    drain(gen);
    t_in_region = false;
    // Wait for the chunks that workers claimed; they are running, so spin (yielding now and then
    // so that a worker preempted on this core can finish).
    for (int i = 1; done_.load(std::memory_order_acquire) != nchunks; ++i) {
      FC_PAUSE();
      if (i % 1024 == 0) std::this_thread::yield();
    }
  }

 private:
  Pool() : threads_(default_threads()) {}

  static std::atomic<Pool*>& instance() {
    static std::atomic<Pool*> ptr{nullptr};
    return ptr;
  }
  static void register_atfork() {
#if defined(__unix__) || defined(__APPLE__)
    static std::once_flag once;
    std::call_once(once, [] {
      pthread_atfork(nullptr, nullptr, [] {
        Pool* old = instance().load(std::memory_order_relaxed);
        int threads = old ? old->threads() : default_threads();
        instance().store(nullptr, std::memory_order_relaxed);  // the old pool is leaked
        get().set_threads(threads);
      });
    });
#endif
  }

  void ensure_workers(int count) {
    while (static_cast<int>(workers_.size()) < count) {
      int id = static_cast<int>(workers_.size());
      // The worker starts from the current generation, taken here, before run() publishes the
      // job it is created for (a thread that read it after the bump would miss that job).
      const uint64_t start = generation_.load(std::memory_order_acquire);
      workers_.emplace_back([this, id, start] { loop(id, start); });
      workers_.back().detach();
    }
  }

  // Claim word: generation (low 32 bits) | chunk count (16) | next chunk (16). One compare-and-swap
  // both checks that the job is still the one this thread woke for and takes a chunk, so a worker
  // that wakes after its job finished never runs a chunk of the next one by mistake.
  static uint64_t make_claim(uint64_t gen, uint64_t nchunks, uint64_t next) {
    return (gen << 32) | (nchunks << 16) | next;
  }

  // Runs chunks of job `gen` until none is left. The job's fields stay valid while this thread
  // holds an unfinished chunk: run() returns only when every chunk is done.
  void drain(uint64_t gen) {
    uint64_t cur = claim_.load(std::memory_order_acquire);
    for (;;) {
      if ((cur >> 32) != (gen & 0xffffffffu)) return;
      const uint64_t nchunks = (cur >> 16) & 0xffffu, next = cur & 0xffffu;
      if (next >= nchunks) return;
      if (!claim_.compare_exchange_weak(cur, cur + 1, std::memory_order_acq_rel,
                                        std::memory_order_acquire))
        continue;
      const int64_t b = static_cast<int64_t>(next) * job_chunk_;
      job_fn_(job_ctx_, b, std::min(job_n_, b + job_chunk_));
      done_.fetch_add(1, std::memory_order_release);
      cur = claim_.load(std::memory_order_acquire);
    }
  }

  void loop(int id, uint64_t seen) {
    t_in_region = true;
    for (;;) {
      // Spin briefly (~0.1 ms: a following kernel usually comes soon), then sleep, so idle workers
      // do not steal a core from other work in the process (PyTorch in bench/, for one).
      for (int i = 0; i < 4000 && generation_.load(std::memory_order_acquire) == seen; ++i)
        FC_PAUSE();
      int active;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return generation_.load(std::memory_order_relaxed) != seen; });
        seen = generation_.load(std::memory_order_relaxed);
        active = active_helpers_;
      }
      if (id < active) drain(seen);
    }
  }

  std::atomic<int> threads_;
  std::mutex busy_;  // one parallel region at a time
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::vector<std::thread> workers_;
  // Current job (written under mu_ before claim_ and generation_ announce it; read by a thread
  // only while it holds one of the job's chunks).
  RangeFn job_fn_ = nullptr;
  void* job_ctx_ = nullptr;
  int64_t job_n_ = 0, job_chunk_ = 1;
  int active_helpers_ = 0;
  std::atomic<uint64_t> claim_{0};
  std::atomic<uint64_t> done_{0};
};

}  // namespace

int num_threads() { return Pool::get().threads(); }
void set_num_threads(int n) { Pool::get().set_threads(n); }
void parallel_for_raw(int64_t n, int64_t grain, RangeFn fn, void* ctx) {
  if (n <= 0) return;
  Pool::get().run(n, grain, fn, ctx);
}

}  // namespace fastconv
