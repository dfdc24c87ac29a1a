// Bias gradient of any 2-D convolution on the GPU: db[k] = sum_{n,p,q} dy[n,k,p,q], deterministic.
// Twin of cpu::conv2d_backward_bias (conv2d_cpu.h); dy is C-contiguous (N, K, P, Q), db is
// overwritten. See conv2d_bias_cuda.cu.
#pragma once
#include <cstdint>

#include "cuda/runtime.h"

namespace fastconv {
namespace cuda {

// Bytes of scratch conv2d_backward_bias needs (per-block partial sums); the caller allocates them.
int64_t conv2d_backward_bias_workspace_bytes(int64_t N, int64_t K, int64_t L, DType dt);

// dy viewed as (N, K, L) with L = P * Q.
void conv2d_backward_bias(int64_t N, int64_t K, int64_t L, DType dt, const void* dy, void* db,
                          void* workspace, int64_t workspace_bytes, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastconv
