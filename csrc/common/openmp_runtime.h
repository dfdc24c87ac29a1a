// Running fastconv's parallel regions on an OpenMP runtime that another library (PyTorch) has
// already loaded into the process, instead of on fastconv's own pool (common/parallel.cpp).
//
// Why: PyTorch's OpenMP workers busy-wait for milliseconds after each of its ops (libgomp's
// default when OMP_WAIT_POLICY is unset). In a process that interleaves torch ops and fastconv
// ops (fastconv.torch, or a model mixing both), those spinning threads hold the cores that
// fastconv's own workers need next, and fastconv's kernels ran up to 2x slower. Run on the same
// OpenMP threads, the region is picked up by the very workers that are spinning: nothing competes.
//
// Nothing links against an OpenMP library: the runtime is found among the shared objects already
// loaded (libgomp*, libiomp5*, libomp*; one inside a torch folder preferred) and its
// GOMP_parallel entry point (libgomp's ABI, which Intel's and LLVM's runtimes also export) is
// looked up with dlsym. Linux only; elsewhere no runtime is ever found.
#pragma once
#include <string>

namespace fastconv {
namespace omp {

// void GOMP_parallel(void (*fn)(void*), void* data, unsigned num_threads, unsigned flags)
using ParallelFn = void (*)(void (*)(void*), void*, unsigned, unsigned);

struct Runtime {
  ParallelFn parallel = nullptr;
  std::string path;  // the shared object it came from
  // OMP_WAIT_POLICY when the runtime was found (the runtime reads it once, when it is loaded):
  // true when unset or ACTIVE (idle OpenMP workers busy-wait, so a region finds them awake),
  // false when PASSIVE (they sleep at once, and every region would wait for them to wake).
  bool workers_spin = false;
  bool from_torch = false;  // the library lies in a torch folder
};

// Is the calling thread the process's main thread?
bool on_main_thread();

// The OpenMP runtime loaded in this process for a region started on the calling thread, or
// nullptr. Only the main thread uses it: that is where PyTorch's ops, and the OpenMP team its
// workers belong to, run in a training loop. Another thread (a data loader's, say) would make
// the runtime build and spin a second team of its own for it, and start and tear it down with
// every such thread; those threads keep to fastconv's own pool. Cached; looked for again only when the
// set of loaded shared objects has grown (glibc's load counter), so the call costs one walk of
// the loader's list head per parallel region. Never returns a runtime in a child forked after
// fastconv._C was loaded (libgomp's pool threads do not survive fork).
const Runtime* loaded_runtime();

}  // namespace omp
}  // namespace fastconv
