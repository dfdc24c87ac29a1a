// The one header every kernel file in csrc/cuda/ includes first. It makes the same .cu source
// compile two ways:
//   - by nvcc into fastconv._cuda (real GPU), and
//   - by the host C++ compiler into fastconv._cuda_emu (FC_CUDA_EMULATION=1), against
//     cuda/emulation.h, which runs the CUDA execution model on the CPU (threads of a block as
//     fibers in shuffled order, barriers, warp collectives, bounds-checked global and shared
//     memory). FC_EMULATION tells kernel code which.
// Launcher headers (X_cuda.h, included by csrc/bind_cuda.cpp, which is compiled by the host
// compiler in both modules) include cuda/runtime.h instead of this file.
//
// Rules for kernel code (so the emulation can check it):
//   - global-memory kernel parameters are gptr<T> / gptr<const T>, made on the host side by
//     fastconv::cuda::global(pointer, element_count); access them only through p[i], *p, p + i,
//     p - i, p += i (no &p[i]: write p + i; no reinterpret_cast of a gptr).
//   - static shared arrays: FC_SHARED(T, name, [dims]) (e.g. FC_SHARED(float, tile, [32][33]));
//     dynamic shared memory: FC_DYN_SHARED(T, name) (a gptr-like pointer to the launch's bytes).
//   - launch with FC_LAUNCH(kernel, grid, block, smem_bytes, stream, args...) where `kernel` is
//     a plain name (take a template instance into a local first: auto k = my_kernel<T, 3>;),
//     then call check_launch(op, [&] { return describe(params); }) (throws CudaError naming
//     op and shapes; the description is formatted only on failure).
//   - storage types float, double, __half, __nv_bfloat16; accumulate in acc_t<T> (float, or
//     double for double), converting with to_acc() / from_acc<T>().
//   - write the type of a value read from memory (`float v = tile[i];`, not `auto v = tile[i];`):
//     under the emulation an element of shared memory or of a non-const gptr is a proxy that
//     records reads and writes (the race checks), and it cannot be copied into an `auto`.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#if FC_CUDA_EMULATION  // set by CMake for the _cuda_emu target
#include "cuda/emulation.h"
#define FC_EMULATION 1
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define FC_EMULATION 0
#endif

#include "common/check.h"
#include "cuda/runtime.h"

namespace fastconv {

namespace cuda {

#if FC_EMULATION
template <class T>
using gptr = ::fastconv::emu::gptr<T>;
template <class T>
inline gptr<T> global(T* p, int64_t n) { return gptr<T>(p, n); }
#else
template <class T>
using gptr = T*;
template <class T>
inline gptr<T> global(T* p, int64_t) { return p; }
#endif

// Accumulation type: float for the 16- and 32-bit storage types, double for double.
template <class T> struct acc_type { using type = float; };
template <> struct acc_type<double> { using type = double; };
template <class T> using acc_t = typename acc_type<T>::type;

__host__ __device__ __forceinline__ float to_acc(float v) { return v; }
__host__ __device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T> __device__ __forceinline__ T from_acc(acc_t<T> v);
template <> __device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <> __device__ __forceinline__ double from_acc<double>(double v) { return v; }
template <> __device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Calls f(T{}) with T the storage type of `dt`: DTYPE_SWITCH(dt, [&](auto tag) { using T = decltype(tag); ... });
template <class F>
auto dtype_switch(DType dt, F&& f) {
  switch (dt) {
    case DType::f32: return f(float{});
    case DType::f16: return f(__half{});
    case DType::bf16: return f(__nv_bfloat16{});
    case DType::f64: return f(double{});
  }
  throw ValueError("unknown dtype code");
}

// The DType code of storage type T (the inverse of dtype_switch).
template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<__half>() { return DType::f16; }
template <> constexpr DType dtype_of<__nv_bfloat16>() { return DType::bf16; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }

// The compute capability's major number of the current device, for choosing among kernel
// variants on the host (0 when it cannot be read; the emulation has every feature: 9).
inline int device_cc_major() {
#if FC_EMULATION
  return 9;
#else
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
    cudaGetLastError();  // clear it: the caller falls back to the portable variant
    return 0;
  }
  return major;
#endif
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Throws CudaError if the last launch failed (no synchronisation: asynchronous faults surface at
// the next synchronising call, as in every CUDA library). `shapes` is a callable returning the
// shapes' description, called only on failure: a launch formats no text.
template <class Describe>
void check_launch(const char* op, Describe&& shapes) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw CudaError(str_cat(op, ": CUDA kernel launch failed (", cudaGetErrorString(err), ") for ",
                            shapes()));
}

}  // namespace cuda
}  // namespace fastconv

#if FC_EMULATION
#define FC_LAUNCH(kernel, grid, block, smem, stream, ...)                                     \
  ::fastconv::emu::launch(dim3(grid), dim3(block), (smem), (stream),                          \
                          [&] { kernel(__VA_ARGS__); })
#define FC_SHARED(T, name, dims) FC_EMU_SHARED(T, name, dims)
#define FC_DYN_SHARED(T, name) auto name = ::fastconv::emu::dynamic_shared<T>()
#else
#define FC_LAUNCH(kernel, grid, block, smem, stream, ...) \
  kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
#define FC_SHARED(T, name, dims) __shared__ T name dims
#define FC_DYN_SHARED(T, name)                                      \
  extern __shared__ __align__(16) unsigned char fc_dyn_smem_raw_[]; \
  T* name = reinterpret_cast<T*>(fc_dyn_smem_raw_)
#endif
