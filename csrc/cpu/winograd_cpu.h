// Dense and grouped 3x3 stride-1 convolution on the CPU by Winograd F(2x2, 3x3) or F(4x4, 3x3):
// forward and input gradient (float32 / float64, NCHW, weights (K, C/groups, 3, 3)). See
// winograd_cpu.cpp.
//
// Same params struct and contract as conv2d_cpu.h. The kernels require winograd_applies(p); the
// dispatcher (dispatch.cpp) calls them instead of conv2d_cpu's when winograd_tile(p) says so.
#pragma once
#include <cstdint>
#include <limits>
#include <string>

#include "common/params.h"
#include "cpu/isa.h"

// tile: 2 for F(2x2, 3x3), 4 for F(4x4, 3x3) (winograd_tile).
#define FC_WINOGRAD_CPU_DECLS_T(T)                                                                \
  void winograd_conv2d_forward(const Conv2dParams& p, int tile, const T* x, const T* w,          \
                               const T* bias, T* y);                                              \
  void winograd_conv2d_backward_input(const Conv2dParams& p, int tile, const T* dy, const T* w,  \
                                      T* dx);
#define FC_WINOGRAD_CPU_DECLS FC_WINOGRAD_CPU_DECLS_T(float) FC_WINOGRAD_CPU_DECLS_T(double)

namespace fastconv {
namespace cpu {
FC_FOR_EACH_ISA(FC_WINOGRAD_CPU_DECLS)

// Which algorithm dense 3x3 stride-1 convolutions use: auto (the measured heuristic below),
// winograd (F(2x2, 3x3) whenever winograd_applies), winograd4 (F(4x4, 3x3) whenever
// winograd_applies: faster, but its float32 error exceeds the tolerance table from about 64
// input channels, so auto never picks it) or gemm (never Winograd). FASTCONV_CONV_ALGO sets the
// initial value; set_conv_algo raises ValueError on an unknown name. Defined in dispatch.cpp.
enum class ConvAlgo { automatic = 0, winograd = 1, winograd4 = 2, gemm = 3 };
ConvAlgo conv_algo();
void set_conv_algo(const std::string& name);  // "auto" | "winograd" | "winograd4" | "gemm"
std::string conv_algo_name(ConvAlgo);

// Shapes the Winograd kernels handle: 3x3, stride 1, dilation 1, not depthwise, something to
// compute, and a zero-padded input copy indexable with 32-bit offsets (the gathers use them).
inline bool winograd_applies(const Conv2dParams& p) {
  if (p.R != 3 || p.S != 3 || p.stride_h != 1 || p.stride_w != 1 || p.dil_h != 1 || p.dil_w != 1)
    return false;
  if (p.depthwise() || p.groups < 1 || p.Cg() < 1 || p.Kg() < 1) return false;
  if (p.N < 1 || p.P < 1 || p.Q < 1) return false;
  const int64_t hp = (p.P + 3) / 4 * 4 + 2, wp = (p.Q + 3) / 4 * 4 + 2;
  const double elems = double(p.N) * double(p.C) * double(hp) * double(wp);
  return elems < double(std::numeric_limits<int32_t>::max()) / 2;
}

// The measured choice (see the figures in winograd_cpu.cpp): F(2x2, 3x3) pays once a group has
// enough output channels to amortise the input transform over and enough input channels to
// amortise the weight and output transforms over; grouped layers pay a transform per group.
inline bool winograd_preferred(const Conv2dParams& p) {
  const int64_t cg = p.Cg(), kg = p.Kg();
  if (kg < 32 || cg < 16) return false;
  return cg * kg >= (p.groups > 1 ? 4096 : 1024);
}

// The decision for the forward convolution with params p (the input gradient asks with the
// params of its own forward convolution of dY, see winograd_backward_params): the output tile
// size of the Winograd kernel to use (2 or 4), or 0 for the GEMM path.
inline int winograd_tile(const Conv2dParams& p) {
  const ConvAlgo a = conv_algo();
  if (a == ConvAlgo::gemm || !winograd_applies(p)) return 0;
  if (a == ConvAlgo::winograd4) return 4;
  return a == ConvAlgo::winograd || winograd_preferred(p) ? 2 : 0;
}

// The stride-1 input gradient as a forward convolution: dx = conv(dY, W') with
// W'[c][k][2-r][2-s] = W[k][c][r][s] and padding 2 - pad on each side.
inline Conv2dParams winograd_backward_params(const Conv2dParams& p) {
  Conv2dParams q;
  q.N = p.N; q.C = p.K; q.H = p.P; q.W = p.Q;
  q.K = p.C; q.R = p.R; q.S = p.S; q.P = p.H; q.Q = p.W;
  q.groups = p.groups;
  q.pad_t = (p.R - 1) * p.dil_h - p.pad_t;
  q.pad_b = (p.R - 1) * p.dil_h - p.pad_b;
  q.pad_l = (p.S - 1) * p.dil_w - p.pad_l;
  q.pad_r = (p.S - 1) * p.dil_w - p.pad_r;
  q.stride_h = p.stride_h; q.stride_w = p.stride_w;
  q.dil_h = p.dil_h; q.dil_w = p.dil_w;
  return q;
}

}  // namespace cpu
}  // namespace fastconv
