// Dense and grouped 2-D convolution on the GPU (implicit GEMM): forward, input gradient, weight
// gradient. The twins of csrc/cpu/conv2d_cpu.h; see conv2d_cuda.cu.
//
// Contract for every launcher: C-contiguous NCHW arrays of the storage type `dt`, weights
// (K, C/groups, R, S), outputs fully overwritten, bias may be nullptr, N >= 1 (the Python twin
// handles an empty batch without launching). `tile` picks the tile configuration (-1: the
// heuristic, float32 on the exact SIMT tiles; -2: the heuristic with TF32 tensor cores allowed
// for float32; 0: 128x128, 1: 64x64, 2: 32x32 SIMT block tiles; 3: 64x64, 4: 128x128 on tensor
// cores through WMMA: float16 / bfloat16 natively and their default, float32 through TF32 on
// sm_80+); `splits` the split-K factor
// of the weight gradient (0: the heuristic). The weight gradient's workspace must hold at least
// conv2d_backward_weight_workspace_bytes(p, dt, tile, splits) bytes (0 when it needs none).
#pragma once
#include <cstdint>

#include "common/params.h"
#include "cuda/runtime.h"

namespace fastconv {
namespace cuda {

void conv2d_forward(const Conv2dParams& p, DType dt, const void* x, const void* w,
                    const void* bias, void* y, int tile, cudaStream_t stream);

void conv2d_backward_input(const Conv2dParams& p, DType dt, const void* dy, const void* w,
                           void* dx, int tile, cudaStream_t stream);

int64_t conv2d_backward_weight_workspace_bytes(const Conv2dParams& p, DType dt, int tile,
                                               int splits);

void conv2d_backward_weight(const Conv2dParams& p, DType dt, const void* dy, const void* x,
                            void* dw, void* workspace, int64_t workspace_bytes, int tile,
                            int splits, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastconv
