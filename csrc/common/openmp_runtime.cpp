// See openmp_runtime.h.
#include "common/openmp_runtime.h"

#include <atomic>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <mutex>

#if defined(__linux__)
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace fastconv {
namespace omp {

#if defined(__linux__)
namespace {

// Is this shared object an OpenMP runtime? libgomp.so.1, libgomp-a34b3233.so.1 (a wheel's
// vendored copy), libiomp5.so, libomp.so...
bool is_openmp_library(const char* path) {
  const char* base = std::strrchr(path, '/');
  base = base ? base + 1 : path;
  return std::strncmp(base, "libgomp", 7) == 0 || std::strncmp(base, "libiomp5", 8) == 0 ||
         (std::strncmp(base, "libomp", 6) == 0 && (base[6] == '.' || base[6] == '-'));
}

struct Scan {
  std::string best;  // the preferred candidate so far
  bool best_is_torch = false;
};

int scan_one(struct dl_phdr_info* info, size_t, void* data) {
  auto* s = static_cast<Scan*>(data);
  const char* name = info->dlpi_name;
  if (!name || !*name || !is_openmp_library(name)) return 0;
  const bool torch = std::strstr(name, "/torch/") || std::strstr(name, "/torch.libs/");
  if (s->best.empty() || (torch && !s->best_is_torch)) {
    s->best = name;
    s->best_is_torch = torch;
  }
  return 0;
}

int read_adds(struct dl_phdr_info* info, size_t size, void* data) {
  // dlpi_adds exists since glibc 2.4; the size argument says whether this loader has it.
  if (size >= offsetof(struct dl_phdr_info, dlpi_adds) + sizeof(info->dlpi_adds))
    *static_cast<unsigned long long*>(data) = info->dlpi_adds;
  return 1;  // the counter is the same in every entry: stop after the first
}

// Set in a child forked after _C was loaded: the runtime's pool threads did not survive the fork,
// but its bookkeeping did, so a region there would wait forever for them. (A child that loads
// _C only after the fork is not caught: libgomp itself is unusable in such a child.)
std::atomic<bool> g_forked{false};
[[maybe_unused]] const bool g_atfork_registered = [] {
  pthread_atfork(nullptr, nullptr, [] { g_forked.store(true, std::memory_order_relaxed); });
  return true;
}();

std::mutex g_mu;
std::atomic<unsigned long long> g_seen_adds{~0ull};
std::atomic<const Runtime*> g_runtime{nullptr};

const Runtime* find() {
  Scan s;
  dl_iterate_phdr(scan_one, &s);
  if (s.best.empty()) return nullptr;
  // RTLD_NOLOAD: only a library that is already loaded (this takes a reference, never a load).
  void* handle = dlopen(s.best.c_str(), RTLD_LAZY | RTLD_NOLOAD);
  if (!handle) return nullptr;
  auto fn = reinterpret_cast<ParallelFn>(dlsym(handle, "GOMP_parallel"));
  if (!fn) return nullptr;
  bool spin = true;
  if (const char* v = std::getenv("OMP_WAIT_POLICY")) {
    std::string w(v);
    for (char& c : w) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    spin = w != "passive";
  }
  return new Runtime{fn, s.best, spin, s.best_is_torch};  // kept for the life of the process, like the library
}

}  // namespace

bool on_main_thread() {
  static thread_local const bool main = syscall(SYS_gettid) == getpid();
  return main;
}

const Runtime* loaded_runtime() {
  if (g_forked.load(std::memory_order_relaxed) || !on_main_thread()) return nullptr;
  unsigned long long adds = 0;
  dl_iterate_phdr(read_adds, &adds);
  if (adds != g_seen_adds.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lk(g_mu);
    if (adds != g_seen_adds.load(std::memory_order_relaxed)) {
      // Look again while none is found, or while the one found is not torch's (scikit-learn's
      // libgomp may be loaded first; torch's threads are the ones that spin beside fastconv).
      // A replaced Runtime is kept (a region may still be using it), like the library.
      const Runtime* cur = g_runtime.load(std::memory_order_relaxed);
      if (!cur || !cur->from_torch) {
        const Runtime* found = find();
        if (found && (!cur || found->from_torch))
          g_runtime.store(found, std::memory_order_release);
        else
          delete found;
      }
      g_seen_adds.store(adds, std::memory_order_release);
    }
  }
  return g_runtime.load(std::memory_order_acquire);
}

#else  // not Linux: never found

bool on_main_thread() { return false; }
const Runtime* loaded_runtime() { return nullptr; }

#endif

}  // namespace omp
}  // namespace fastconv
