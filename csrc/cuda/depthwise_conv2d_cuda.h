// Depthwise 2-D convolution on the GPU (groups == C, K = C * multiplier): forward (with bias),
// input gradient, weight gradient. Twin of cpu/depthwise_conv2d_cpu.h: same Conv2dParams, same
// contract (C-contiguous NCHW arrays that do not overlap, outputs fully overwritten, bias may be
// null), plus a storage dtype and the caller's stream. See depthwise_conv2d_cuda.cu.
#pragma once
#include <cstdint>

#include "common/params.h"
#include "cuda/runtime.h"

namespace fastconv {
namespace cuda {

void depthwise_conv2d_forward(const Conv2dParams& p, DType dt, const void* x, const void* w,
                              const void* bias, void* y, cudaStream_t stream);

void depthwise_conv2d_backward_input(const Conv2dParams& p, DType dt, const void* dy,
                                     const void* w, void* dx, cudaStream_t stream);

// Bytes of scratch the weight gradient needs (its per-block partial sums); the caller allocates
// them (caching allocator) and passes them to depthwise_conv2d_backward_weight.
int64_t depthwise_conv2d_backward_weight_workspace_bytes(const Conv2dParams& p, DType dt);

void depthwise_conv2d_backward_weight(const Conv2dParams& p, DType dt, const void* dy,
                                      const void* x, void* dw, void* workspace,
                                      int64_t workspace_bytes, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastconv
