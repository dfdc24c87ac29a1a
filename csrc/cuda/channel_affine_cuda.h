// Per-channel affine map with an optional clamp on CUDA: the twin of cpu/channel_affine_cpu.h
// (inference BatchNorm folded into one scale and shift per channel, fused with ReLU / ReLU6):
//
//   y[n, c, l] = clamp(x[n, c, l] * scale[c] + shift[c], lo, hi)     x viewed as (N, C, L)
//
// float32, float16, bfloat16 (float32 arithmetic, one rounding at the store) and float64. NaN
// propagates through the clamp (numpy's maximum / minimum). y may equal x (in place) but must not
// otherwise overlap x, scale or shift. A channels-last (N, H, W, C) array is the view
// (N*H*W, C, 1). Enqueued on `stream` without synchronising; CudaError on a failed launch.
#pragma once
#include <cstdint>

#include "common/params.h"
#include "cuda/runtime.h"

namespace fastconv {
namespace cuda {

void channel_affine(const ChannelAffineParams& p, DType dt, const void* x, const void* scale,
                    const void* shift, void* y, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastconv
