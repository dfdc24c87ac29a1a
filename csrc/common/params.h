// Plain parameter structs shared by the CPU and CUDA kernels. The binding files fill them after
// validating the arrays; kernels read nothing else (no Python objects, no shapes re-derived).
// Layout is NCHW, weights (K, C/groups, R, S); all arrays are C-contiguous.
#pragma once
#include <cstdint>

namespace fastconv {

// y[N, K, P, Q] = conv(x[N, C, H, W], w[K, C/groups, R, S]) (+ bias[K])
struct Conv2dParams {
  int64_t N = 0, C = 0, H = 0, W = 0;  // input
  int64_t K = 0, R = 0, S = 0;         // output channels, kernel height, kernel width
  int64_t P = 0, Q = 0;                // output height, width
  int64_t groups = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t dil_h = 1, dil_w = 1;
  int64_t pad_t = 0, pad_b = 0, pad_l = 0, pad_r = 0;  // per side; pad_b/pad_r only shape P, Q

  int64_t Cg() const { return C / groups; }  // input channels per group
  int64_t Kg() const { return K / groups; }  // output channels per group
  bool depthwise() const { return groups == C && groups > 1 && K % C == 0; }
};

// y[N, C, P, Q] = pool(x[N, C, H, W]) over R x S windows.
struct Pool2dParams {
  int64_t N = 0, C = 0, H = 0, W = 0;
  int64_t P = 0, Q = 0;
  int64_t R = 1, S = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t dil_h = 1, dil_w = 1;  // max pooling only
  int64_t pad_t = 0, pad_b = 0, pad_l = 0, pad_r = 0;
  bool ceil_mode = false;
  bool count_include_pad = true;  // avg pooling only
  int64_t divisor_override = 0;   // avg pooling only; 0 = none
  bool channels_last = false;     // CUDA kernels: x, y stored NHWC (the CPU kernels take NCHW)
};

// y[n, c, l] = clamp(x[n, c, l] * scale[c] + shift[c], lo, hi) for x viewed as (N, C, L):
// L = the product of the axes after the channel axis (1 for a 2-D x). A bound applies only
// when its flag is set (ReLU: clamp_lo with lo = 0; ReLU6: both, lo = 0, hi = 6).
struct ChannelAffineParams {
  int64_t N = 0, C = 0, L = 0;
  bool clamp_lo = false, clamp_hi = false;
  double lo = 0.0, hi = 0.0;  // converted to the array's dtype by the kernel
};

// Training-mode batch normalisation over x viewed as (N, C, L): per-channel statistics over the
// N * L values of each channel (L = the product of the axes after the channel axis).
struct BatchNormParams {
  int64_t N = 0, C = 0, L = 0;
};

// One optimizer step over n elements of a parameter, its gradient and its state arrays, with the
// options of torch.optim.SGD / Adam / AdamW (see csrc/cpu/optim_cpu.h for the arithmetic).
struct SgdParams {
  int64_t n = 0;
  double lr = 0, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false, maximize = false;
  bool first = false;  // the momentum buffer is created from this step's gradient
};
struct AdamParams {
  int64_t n = 0;
  double lr = 0, beta1 = 0, beta2 = 0, eps = 0, weight_decay = 0;
  double step_size = 0;    // lr / (1 - beta1^step)
  double bias2_sqrt = 0;   // (1 - beta2^step)^0.5
  bool decoupled = false, amsgrad = false, maximize = false;
};

}  // namespace fastconv
