// Launchers of the emulation's self-test kernels (csrc/cuda/emulation_selftest.cu, built into
// fastconv._cuda_emu only): small kernels in a correct version (variant 0) and with bugs planted
// (variant > 0), so tests/test_cuda_emulation.py can show that the emulation gives the right answer
// for the first and reports each bug. All arrays are float32 unless said otherwise; a launch runs
// on the default stream.
#pragma once
#include <cstdint>

#include "cuda/runtime.h"

namespace fastconv {
namespace cuda {
namespace selftest {

// C[M,N] = A[M,K] @ B[K,N] (row-major), 16x16 shared tiles.
// variant 1: the second __syncthreads of the tile loop is missing.
void sgemm(const float* A, const float* B, float* C, int M, int N, int K, int variant);

// out[b] = sum of x[b*256 .. b*256+255] (zeros past n), one 256-thread block per 256 elements, tree
// reduction in shared memory, last warp synchronised with __syncwarp.
// variant 1: no __syncthreads in the tree loop; 2: no __syncwarp in the warp stage;
// 3: the accumulation into out[b] made by every thread, non-atomically (global race).
void block_sum(const float* x, float* out, int n, int variant);

// y[i] = x[i-1] + 2 x[i] + x[i+1] (zero outside [0, n)), 64-thread blocks with a shared halo tile.
// variant 1: shared index out of range; 2: right halo never loaded (uninitialised shared read);
// 3: early return before the barrier; 4: __syncthreads inside a branch; 5: global read out of
// range; 6: global write out of range.
void stencil(const float* x, float* y, int n, int variant);

// y = (x padded with zeros to a multiple of 32, each chunk of 32 reversed)[:n], one 32-thread block
// per chunk through dynamic shared memory. variant 1: no barrier; 2: shared index off by one (out of range); 3: the tail
// past n left unwritten (uninitialised read).
void reverse(const float* x, float* y, int n, int variant);

// y[idx[i]] += x[i] for i < n (y has m elements) with atomicAdd, 32-thread blocks.
// variant 1: a plain read-modify-write instead of the atomic (global race within and across blocks).
void scatter_add(const float* x, const int* idx, float* y, int n, int m, int variant);

// One 32-thread block over x[0:32] exercising the forms kernel code uses on shared elements:
// y[t] = (x[31-t] + 2 x[t]) / 2 + x[0] + 32 + float16(x[t]), z = x (through a shared row).
void proxy_forms(const float* x, float* y, float* z);

// out[w] = sum of the 32 values x[32w .. 32w+31] by __shfl_down_sync, one warp each.
// variant 1: shuffle mask 0x0000ffff called by all 32 lanes; 2: the upper 16 lanes skip the
// shuffles (and exit) while the mask names them.
void warp_sum(const float* x, float* out, int nwarps, int variant);

// 3x3 max pooling, stride 1, padding 1, of a (NC, H, W) plane stack, one thread per output
// (the emulation's timing probe for a pooling-like kernel).
void max_pool3x3(const float* x, float* y, int NC, int H, int W);

// C[M,N] (float32) = A[M,K] @ B[K,N] with nvcuda::wmma 16x16x16 tiles, one warp per C tile; A and B
// are float16 (dtype 1) or bfloat16 (dtype 2) bit patterns, stored column-major when a_col / b_col
// (A[k*M + m], B[n*K + k]); B tiles go through shared memory. M, N, K multiples of 16.
void wmma_gemm(int dtype, const void* A, const void* B, float* C, int M, int N, int K, bool a_col,
               bool b_col);

// C[M,N] = A[M,K] @ B[K,N], float32 row-major, on TF32 wmma 16x16x8 tiles, one warp per C tile,
// fragments loaded straight from A and B. round: each fragment element through __float_to_tf32
// after the load (CUDA's documented pattern); without it, inputs with low mantissa bits set make
// mma_sync throw. M, N multiples of 16, K of 8.
void wmma_tf32_gemm(const float* A, const float* B, float* C, int M, int N, int K, bool round);

}  // namespace selftest
}  // namespace cuda
}  // namespace fastconv
