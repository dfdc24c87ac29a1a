// Max, average and adaptive average pooling on CUDA, forward and backward: the twins of
// cpu/pool2d_cpu.h (same Pool2dParams, same semantics), for float32, float16, bfloat16 (float32
// accumulation) and float64, NCHW or channels-last (p.channels_last: x, y, dx, dy and indices
// stored NHWC). See pool2d_cuda.cu.
//
// Pointers are device addresses of arrays with the params' shapes; outputs are fully overwritten
// and must not overlap the inputs. indices may be nullptr in max_pool2d_forward (inference).
// Every launcher enqueues on `stream` without synchronising and throws CudaError (naming the op
// and the shapes) when a launch fails. Nothing is launched for an empty array.
#pragma once
#include <cstdint>

#include "common/params.h"
#include "cuda/runtime.h"

namespace fastconv {
namespace cuda {

void max_pool2d_forward(const Pool2dParams& p, DType dt, const void* x, void* y, int64_t* indices,
                        cudaStream_t stream);
// Gather form (deterministic, every dx element written once): needs the forward geometry in p
// (kernel, stride, top/left padding, dilation; P, Q = dy's size). Indices outside the window of
// their output contribute nothing (as in PyTorch's CUDA kernel).
void max_pool2d_backward(const Pool2dParams& p, DType dt, const void* dy, const int64_t* indices,
                         void* dx, cudaStream_t stream);
// Without the geometry (only N, C, H, W, P, Q in p): one thread per plane zeroes it and scatters
// dy in output order (the CPU kernel's order; deterministic, slow). Indices outside [0, H*W) are
// skipped.
void max_pool2d_backward_serial(const Pool2dParams& p, DType dt, const void* dy,
                                const int64_t* indices, void* dx, cudaStream_t stream);
void avg_pool2d_forward(const Pool2dParams& p, DType dt, const void* x, void* y,
                        cudaStream_t stream);
void avg_pool2d_backward(const Pool2dParams& p, DType dt, const void* dy, void* dx,
                         cudaStream_t stream);
// Adaptive: only N, C, H, W, P, Q and channels_last of p are read.
void adaptive_avg_pool2d_forward(const Pool2dParams& p, DType dt, const void* x, void* y,
                                 cudaStream_t stream);
void adaptive_avg_pool2d_backward(const Pool2dParams& p, DType dt, const void* dy, void* dx,
                                  cudaStream_t stream);

}  // namespace cuda
}  // namespace fastconv
