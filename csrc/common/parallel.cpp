// Thread pool behind parallel.h: persistent workers that spin briefly (kSpinNs), then sleep on a
// condition variable. A region is cut into at most num_threads() contiguous chunks that the
// participants claim from a shared counter, the caller first: a worker that is slow to wake
// (asleep, or sharing its core with another process's spinning thread, e.g. PyTorch's OpenMP
// pool) leaves its chunk to whoever is free instead of holding the whole region up until it gets the CPU.
#include "common/parallel.h"

#include "common/openmp_runtime.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <exception>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <utility>
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

int64_t default_small_op_ns() {
  if (const char* env = std::getenv("FASTCONV_SMALL_OP_US")) {
    char* end = nullptr;
    double us = std::strtod(env, &end);
    if (end != env && us >= 0 && us < 1e9) return static_cast<int64_t>(us * 1000.0);
  }
  return 50000;
}
std::atomic<int64_t> g_small_op_ns{default_small_op_ns()};

PoolMode default_pool_mode() {
  PoolMode m = PoolMode::kAuto;
  if (const char* env = std::getenv("FASTCONV_THREAD_POOL")) parse_pool_mode(env, &m);
  return m;  // an unknown name in the environment is ignored, like FASTCONV_ISA
}
std::atomic<int> g_pool_mode{static_cast<int>(default_pool_mode())};

// The calling thread's op (OpScope): threads it plans for (0: no scope) and whether it is small
// (does not wake sleeping workers).
thread_local int t_op_threads = 0;
thread_local bool t_op_small = false;
thread_local double t_op_work_ns = -1;  // < 0: no estimate

// Idle policy: a worker spins this long after its last region before it sleeps (a following kernel
// usually comes within it: the Python glue between two ops of a model takes 10-100 us), yielding
// its core every kYieldNs so that a thread it shares the core with (the caller, on a loaded
// machine) is not held up. Measured: see bench/run_small_ops.py and the README.
constexpr int64_t kSpinNs = 100000, kYieldNs = 20000;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// How a region of n items (grain items at least per chunk) is cut for nt threads: `helpers`
// threads beside the caller, chunks of `chunk` items, `nchunks` of them. Both the pool and the
// OpenMP path (run_on_openmp) cut regions this way, so a result does not depend on which ran it.
// helpers == 0: run the region inline.
struct ChunkPlan {
  int helpers;
  int64_t chunk, nchunks;
};
ChunkPlan plan_chunks(int64_t n, int64_t grain, int nt) {
  const int64_t max_chunks = (n + grain - 1) / grain;
  if (nt <= 1 || max_chunks <= 1) return {0, n, 1};
  const int helpers = static_cast<int>(std::min<int64_t>(std::min(nt, 4096), max_chunks)) - 1;
  const int64_t chunk = std::max<int64_t>(grain, (n + helpers) / (helpers + 1));
  return {helpers, chunk, (n + chunk - 1) / chunk};
}

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
    const ChunkPlan plan = plan_chunks(n, grain, num_threads());  // the op's plan (OpScope)
    if (plan.helpers == 0 || t_in_region) return fn(ctx, 0, n);
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return fn(ctx, 0, n);  // another Python thread holds the pool

    const int helpers = plan.helpers;
    ensure_workers(helpers);
    // Chunks in index order; the caller claims first, so with awake workers chunk i usually runs
    // on the same core from call to call (repeated calls find their data in that core's cache).
    const int64_t chunk = plan.chunk;
    const uint64_t nchunks = static_cast<uint64_t>(plan.nchunks);
    uint64_t gen;
    {
      // The job and its generation are published together, under mu_.
      std::lock_guard<std::mutex> lk(mu_);
      job_fn_ = fn;
      job_ctx_ = ctx;
      job_n_ = n;
      job_chunk_ = chunk;
      done_.store(0, std::memory_order_relaxed);
      gen = generation_.load(std::memory_order_relaxed) + 1;
      claim_.store(make_claim(gen, nchunks, 0), std::memory_order_release);
      generation_.store(gen, std::memory_order_release);
    }
    // Spinning workers see the new generation by themselves. Wake sleeping ones only for what the
    // spinning ones cannot cover, not at all for a small op, and not when a woken worker would
    // arrive after half the op is done anyway (the measured wake latency; the caller runs the rest).
    const int wake = helpers - spinning_.load(std::memory_order_acquire);
    if (!t_op_small && wake > 0) {
      const int64_t lat = wake_latency_ns_.load(std::memory_order_relaxed);
      if (t_op_work_ns >= 0 && t_op_work_ns < 2.0 * lat) {
        // Declined: let the estimate decay, so a latency that has improved is measured again.
        wake_latency_ns_.store(lat - lat / 64, std::memory_order_relaxed);
      } else {
        notified_at_.store(now_ns(), std::memory_order_relaxed);
        if (wake >= sleeping_.load(std::memory_order_relaxed)) {
          cv_.notify_all();
        } else {
          for (int i = 0; i < wake; ++i) cv_.notify_one();
        }
      }
    }

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
      // The worker starts from the current generation, taken here, before run() publishes the
      // job it is created for (a thread that read it after the bump would miss that job).
      const uint64_t start = generation_.load(std::memory_order_acquire);
      workers_.emplace_back([this, start] { loop(start); });
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

  // Has a job newer than `seen` appeared within kSpinNs? (The clock is read every 32 pauses.)
  bool spin_for_job(uint64_t seen) {
    spinning_.fetch_add(1, std::memory_order_acq_rel);
    const int64_t start = now_ns();
    int64_t last_yield = start;
    bool found = false;
    for (;;) {
      for (int i = 0; i < 32; ++i) {
        if (generation_.load(std::memory_order_acquire) != seen) {
          found = true;
          break;
        }
        FC_PAUSE();
      }
      if (found) break;
      const int64_t t = now_ns();
      if (t - start >= kSpinNs) break;
      if (t - last_yield >= kYieldNs) {
        std::this_thread::yield();
        last_yield = t;
      }
    }
    spinning_.fetch_sub(1, std::memory_order_acq_rel);
    return found;
  }

  // Running mean (weight 1/4) of the time from a notify to the woken worker running: tens of
  // microseconds on bare metal, 100 us or more on some virtual machines.
  void record_wake_latency(int64_t ns) {
    if (ns <= 0 || ns > 100000000) return;  // a wake that was not ours (spurious, or long ago)
    const int64_t old = wake_latency_ns_.load(std::memory_order_relaxed);
    wake_latency_ns_.store(old + (ns - old) / 4, std::memory_order_relaxed);
  }

 public:
  int64_t wake_latency_ns() const { return wake_latency_ns_.load(std::memory_order_relaxed); }

 private:
  void loop(uint64_t seen) {
    t_in_region = true;
    for (;;) {
      // Spin briefly, then sleep, so idle workers do not steal a core from other work in the
      // process (PyTorch in bench/, for one). Any worker that sees a job helps with it: chunks are
      // claimed, so one that finds none left goes back to waiting.
      if (spin_for_job(seen)) {
        seen = generation_.load(std::memory_order_acquire);
      } else {
        std::unique_lock<std::mutex> lk(mu_);
        sleeping_.fetch_add(1, std::memory_order_relaxed);
        cv_.wait(lk, [&] { return generation_.load(std::memory_order_relaxed) != seen; });
        sleeping_.fetch_sub(1, std::memory_order_relaxed);
        seen = generation_.load(std::memory_order_relaxed);
        record_wake_latency(now_ns() - notified_at_.load(std::memory_order_relaxed));
      }
      drain(seen);
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
  std::atomic<int> spinning_{0}, sleeping_{0};  // workers spinning / waiting on cv_
  std::atomic<int64_t> notified_at_{0};             // now_ns() of the last notify
  std::atomic<int64_t> wake_latency_ns_{20000};     // record_wake_latency
  std::atomic<uint64_t> claim_{0};
  std::atomic<uint64_t> done_{0};
};

// ---- regions on a loaded OpenMP runtime (common/openmp_runtime.h) ---------------------------

// The runtime a region started now on this thread runs on, or nullptr for fastconv's pool.
const omp::Runtime* region_runtime() {
  const auto mode = static_cast<PoolMode>(g_pool_mode.load(std::memory_order_relaxed));
  if (mode == PoolMode::kOwn) return nullptr;
  const omp::Runtime* rt = omp::loaded_runtime();
  if (!rt || (mode == PoolMode::kAuto && !rt->workers_spin)) return nullptr;
  return rt;
}

struct OmpJob {
  RangeFn fn;
  void* ctx;
  int64_t n, chunk, nchunks;
  std::atomic<int64_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;  // the first exception a chunk threw (set once, by `failed`'s winner)
};

// Body of the OpenMP region: every team thread claims chunks until none is left (the same
// claiming as the pool's, so a thread that is late leaves its chunk to one that is free).
void omp_body(void* data) {
  auto* job = static_cast<OmpJob*>(data);
  const bool outer = t_in_region;
  t_in_region = true;  // a region started inside a chunk runs inline
  for (int64_t i; (i = job->next.fetch_add(1, std::memory_order_relaxed)) < job->nchunks;) {
    const int64_t b = i * job->chunk;
    // An exception must not unwind through the OpenMP runtime (that would leave its team
    // unfinished, or terminate on a worker): it is kept and rethrown after the region.
    try {
      job->fn(job->ctx, b, std::min(job->n, b + job->chunk));
    } catch (...) {
      if (!job->failed.exchange(true)) job->error = std::current_exception();
      job->next.store(job->nchunks, std::memory_order_relaxed);  // the others stop claiming
    }
  }
  t_in_region = outer;
}

// The pool's chunking (plan_chunks), run as one OpenMP parallel region of as many threads as chunks.
// An op the small-op rule marks small runs on the calling thread alone: the region's closing
// barrier waits for every team thread, so a team thread that has gone to sleep would cost its
// wake-up (tens to hundreds of microseconds) even with no chunk to run.
void run_on_openmp(const omp::Runtime& rt, int64_t n, int64_t grain, RangeFn fn, void* ctx) {
  const ChunkPlan plan = plan_chunks(n, grain, num_threads());
  if (plan.helpers == 0 || t_in_region || t_op_small) return fn(ctx, 0, n);
  OmpJob job;
  job.fn = fn;
  job.ctx = ctx;
  job.n = n;
  job.chunk = plan.chunk;
  job.nchunks = plan.nchunks;
  rt.parallel(omp_body, &job, static_cast<unsigned>(plan.helpers + 1), 0);
  if (job.error) std::rethrow_exception(job.error);
}

// ---- schedule tracing (parallel.h) ------------------------------------------------------------

std::atomic<bool> g_trace{false};
std::mutex g_trace_mu;
std::vector<TracedRegion> g_trace_regions;

// While a traced region's chunks run on the caller, regions they start run inline (as they do on
// a worker in a real run); restored on throw.
struct TracedChunks {
  TracedChunks() { t_in_region = true; }
  ~TracedChunks() { t_in_region = false; }
};

void run_traced(int64_t n, int64_t grain, RangeFn fn, void* ctx) {
  const ChunkPlan plan = plan_chunks(n, grain, num_threads());
  TracedRegion r;
  r.threads = plan.helpers + 1;
  r.setup_ns = 0;
  r.start_ns = now_ns();
  const TracedChunks in_region;  // nested regions run inline, as in a real run
  for (int64_t c = 0; c < plan.nchunks; ++c) {
    const int64_t b = c * plan.chunk, t0 = now_ns();
    fn(ctx, b, std::min(n, b + plan.chunk));
    r.chunk_ns.push_back(now_ns() - t0);
  }
  r.end_ns = now_ns();
  std::lock_guard<std::mutex> lock(g_trace_mu);
  g_trace_regions.push_back(std::move(r));
}

// parallel_claim traced: the slots' set-up, then every range on slot 0 (each slot's init ran, so
// the result is the same as when the ranges are spread over the slots).
void claim_traced(int64_t units, int64_t chunk, int64_t slots, SlotFn init, SlotRangeFn fn,
                  void* ctx) {
  TracedRegion r;
  r.threads = static_cast<int>(std::min<int64_t>(slots, num_threads()));
  r.setup_ns = 0;
  r.start_ns = now_ns();
  const TracedChunks in_region;
  for (int64_t slot = 0; slot < r.threads; ++slot) {
    const int64_t t0 = now_ns();
    init(ctx, slot);
    r.setup_ns = std::max(r.setup_ns, now_ns() - t0);
  }
  for (int64_t b = 0; b < units; b += chunk) {
    const int64_t t0 = now_ns();
    fn(ctx, 0, b, std::min(units, b + chunk));
    r.chunk_ns.push_back(now_ns() - t0);
  }
  r.end_ns = now_ns();
  std::lock_guard<std::mutex> lock(g_trace_mu);
  g_trace_regions.push_back(std::move(r));
}

}  // namespace

void parallel_claim_raw(int64_t units, int64_t chunk, int64_t slots, SlotFn init, SlotRangeFn fn,
                        void* ctx) {
  if (units <= 0) return;
  if (!t_in_region && g_trace.load(std::memory_order_relaxed))
    return claim_traced(units, chunk, slots, init, fn, ctx);
  std::atomic<int64_t> next{0};
  parallel_tasks(slots, [&](int64_t slot, int64_t) {
    init(ctx, slot);
    for (;;) {
      const int64_t b = next.fetch_add(chunk, std::memory_order_relaxed);
      if (b >= units) break;
      fn(ctx, slot, b, std::min(units, b + chunk));
    }
  });
}

void set_schedule_trace(bool on) {
  std::lock_guard<std::mutex> lock(g_trace_mu);
  g_trace_regions.clear();
  g_trace.store(on, std::memory_order_relaxed);
}
std::vector<TracedRegion> take_schedule_trace() {
  std::lock_guard<std::mutex> lock(g_trace_mu);
  std::vector<TracedRegion> out;
  out.swap(g_trace_regions);
  return out;
}

int num_threads() {
  const int nt = Pool::get().threads();
  return t_op_threads > 0 && t_op_threads < nt ? t_op_threads : nt;
}
int64_t small_op_ns() { return g_small_op_ns.load(std::memory_order_relaxed); }
void set_small_op_ns(int64_t ns) { g_small_op_ns.store(ns < 0 ? 0 : ns, std::memory_order_relaxed); }

bool op_is_small() { return t_op_small; }

OpScope::OpScope(double work_ns) : active_(t_op_threads == 0) {
  if (!active_) return;
  const int nt = Pool::get().threads();
  const double t = static_cast<double>(small_op_ns());
  if (t <= 0 || !(work_ns >= 0)) {  // rules off, or no estimate (NaN)
    t_op_threads = nt;
    t_op_small = false;
    return;
  }
  const double cap = std::floor(work_ns / (t / 5));
  t_op_threads = cap < 1 ? 1 : cap < nt ? static_cast<int>(cap) : nt;
  t_op_small = work_ns < t;
  t_op_work_ns = work_ns;
}
OpScope::~OpScope() {
  if (!active_) return;
  t_op_threads = 0;
  t_op_small = false;
  t_op_work_ns = -1;
}
int64_t pool_wake_latency_ns() { return Pool::get().wake_latency_ns(); }
void set_num_threads(int n) { Pool::get().set_threads(n); }
void parallel_for_raw(int64_t n, int64_t grain, RangeFn fn, void* ctx) {
  if (n <= 0) return;
  if (!t_in_region) {
    if (g_trace.load(std::memory_order_relaxed)) return run_traced(n, grain, fn, ctx);
    if (const omp::Runtime* rt = region_runtime()) return run_on_openmp(*rt, n, grain, fn, ctx);
  }
  Pool::get().run(n, grain, fn, ctx);
}

bool parse_pool_mode(const std::string& name, PoolMode* mode) {
  static const std::pair<const char*, PoolMode> kNames[] = {
      {"auto", PoolMode::kAuto}, {"fastconv", PoolMode::kOwn}, {"openmp", PoolMode::kOpenMP}};
  for (const auto& [n, m] : kNames) {
    if (name == n) {
      *mode = m;
      return true;
    }
  }
  return false;
}
const char* pool_mode_name(PoolMode m) {
  return m == PoolMode::kOwn ? "fastconv" : m == PoolMode::kOpenMP ? "openmp" : "auto";
}
PoolMode pool_mode() { return static_cast<PoolMode>(g_pool_mode.load(std::memory_order_relaxed)); }
void set_pool_mode(PoolMode m) { g_pool_mode.store(static_cast<int>(m), std::memory_order_relaxed); }
std::string pool_in_use() {
  const omp::Runtime* rt = region_runtime();
  return rt ? rt->path : std::string();
}

}  // namespace fastconv
