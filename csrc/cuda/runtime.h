// What a launcher declaration needs from the CUDA runtime (cudaStream_t), for the headers that
// csrc/bind_cuda.cpp includes: the real runtime in fastconv._cuda, the emulation's stand-in in
// fastconv._cuda_emu (FC_CUDA_EMULATION=1). Kernel files include cuda/compat.h instead.
#pragma once
#if FC_CUDA_EMULATION
typedef void* cudaStream_t;
#else
#include <cuda_runtime.h>
#endif

#include <cstdint>
#include <stdexcept>

namespace fastconv {
// A CUDA runtime error or a failed launch (pybind11 turns it into RuntimeError).
struct CudaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace cuda {
// Storage dtype codes shared with the Python layer (fastconv/_gpu/backend.py DTYPE_CODES).
enum class DType : int { f32 = 0, f16 = 1, bf16 = 2, f64 = 3 };
}  // namespace cuda
}  // namespace fastconv
