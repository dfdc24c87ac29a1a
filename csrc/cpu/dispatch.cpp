// Run-time instruction-set dispatch for the CPU kernels: CPUID picks the best variant this build
// has (FASTCONV_ISA or set_isa can lower it, e.g. to test every variant on one machine), and the
// ISA-free entry points declared in the op headers forward to it. Depthwise shapes
// (groups == C > 1) go to the depthwise kernels. Every entry point runs its kernel inside an
// OpScope (common/parallel.h) carrying a rough single-thread time, for the small-op rules.
#include <cstdlib>
#include <string>

#include "common/check.h"
#include "common/parallel.h"
#include "cpu/batch_norm_cpu.h"
#include "cpu/channel_affine_cpu.h"
#include "cpu/elementwise_cpu.h"
#include "cpu/optim_cpu.h"
#include "cpu/conv2d_cpu.h"
#include "cpu/depthwise_conv2d_cpu.h"
#include "cpu/isa.h"
#include "cpu/pool2d_cpu.h"
#include "cpu/winograd_cpu.h"

namespace fastconv {
namespace cpu {
namespace {

bool cpu_has(Isa isa) {
  switch (isa) {
    case Isa::baseline:
      return true;
    case Isa::avx2:
#if defined(FC_HAVE_AVX2) && (defined(__GNUC__) || defined(__clang__))
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
      return false;
#endif
    case Isa::avx512:
#if defined(FC_HAVE_AVX512) && (defined(__GNUC__) || defined(__clang__))
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("fma");
#else
      return false;
#endif
  }
  return false;
}

Isa parse_isa(const std::string& name) {
  if (name == "baseline") return Isa::baseline;
  if (name == "avx2") return Isa::avx2;
  if (name == "avx512") return Isa::avx512;
  throw ValueError(str_cat("isa: expected 'baseline', 'avx2' or 'avx512', got '", name, "'"));
}

Isa detect() {
  Isa best = cpu_has(Isa::avx512) ? Isa::avx512 : cpu_has(Isa::avx2) ? Isa::avx2 : Isa::baseline;
  if (const char* env = std::getenv("FASTCONV_ISA")) {
    try {
      Isa want = parse_isa(env);
      if (static_cast<int>(want) < static_cast<int>(best)) best = want;
    } catch (const ValueError&) {
      // An unknown name in the environment is ignored rather than breaking import.
    }
  }
  return best;
}

Isa g_active = detect();

ConvAlgo parse_algo(const std::string& name) {
  if (name == "auto") return ConvAlgo::automatic;
  if (name == "winograd") return ConvAlgo::winograd;
  if (name == "winograd4") return ConvAlgo::winograd4;
  if (name == "gemm") return ConvAlgo::gemm;
  throw ValueError(str_cat("conv_algo: expected 'auto', 'winograd', 'winograd4' or 'gemm', got '",
                           name, "'"));
}

// The setting named by environment variable `var` (parsed by `parse`), or `fallback`. Like
// FASTCONV_ISA, an unknown name in the environment is ignored rather than breaking import.
template <class E>
E from_env(const char* var, E (*parse)(const std::string&), E fallback) {
  if (const char* env = std::getenv(var)) {
    try {
      return parse(env);
    } catch (const ValueError&) {
    }
  }
  return fallback;
}

ConvAlgo g_algo = from_env("FASTCONV_CONV_ALGO", parse_algo, ConvAlgo::automatic);

StridedDgrad parse_strided_dgrad(const std::string& name) {
  if (name == "auto") return StridedDgrad::automatic;
  if (name == "phase") return StridedDgrad::phase;
  if (name == "col2im") return StridedDgrad::col2im;
  throw ValueError(str_cat("strided_dgrad: expected 'auto', 'phase' or 'col2im', got '", name, "'"));
}

StridedDgrad g_sdgrad =
    from_env("FASTCONV_STRIDED_DGRAD", parse_strided_dgrad, StridedDgrad::automatic);

// Single-thread time estimates for OpScope. Rates are per core, rounded from the kernels'
// 1-thread figures on the development machines (avx2 and avx512 paths; baseline is slower, which
// only makes the estimate conservative): dense conv ~40 GFLOP/s, depthwise ~8, pooling ~3 window
// elements per ns; see common/parallel.h for what the estimate decides.
double conv_ns(const Conv2dParams& p, size_t elem) {
  const double flops = 2.0 * p.N * p.K * p.P * p.Q * p.Cg() * p.R * p.S;
  const double bytes = elem * (double(p.N) * p.C * p.H * p.W + double(p.K) * p.Cg() * p.R * p.S +
                               double(p.N) * p.K * p.P * p.Q);
  return op_ns(flops, p.depthwise() ? 8.0 : 40.0, bytes);
}
double pool_ns(const Pool2dParams& p, size_t elem) {
  const double window = double(p.N) * p.C * p.P * p.Q * p.R * p.S;
  const double bytes = elem * (double(p.N) * p.C * p.H * p.W + double(p.N) * p.C * p.P * p.Q);
  return op_ns(window, 3.0, bytes);
}
double affine_ns(const ChannelAffineParams& p, size_t elem) {
  return op_ns(0, 1, 2.0 * elem * double(p.N) * p.C * p.L);
}
double bn_ns(const BatchNormParams& p, size_t elem, double passes) {
  return op_ns(0, 1, passes * elem * double(p.N) * p.C * p.L);
}

}  // namespace

Isa best_isa() {
  static const Isa best =
      cpu_has(Isa::avx512) ? Isa::avx512 : cpu_has(Isa::avx2) ? Isa::avx2 : Isa::baseline;
  return best;
}
Isa active_isa() { return g_active; }
std::string isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "baseline";
  }
}
void set_isa(const std::string& name) {
  Isa want = parse_isa(name);
  FC_CHECK(cpu_has(want), "set_isa: this CPU or build does not support '", name,
           "'; the best available is '", isa_name(best_isa()), "'");
  g_active = want;
}

ConvAlgo conv_algo() { return g_algo; }
void set_conv_algo(const std::string& name) { g_algo = parse_algo(name); }
std::string conv_algo_name(ConvAlgo a) {
  switch (a) {
    case ConvAlgo::winograd: return "winograd";
    case ConvAlgo::winograd4: return "winograd4";
    case ConvAlgo::gemm: return "gemm";
    default: return "auto";
  }
}

StridedDgrad strided_dgrad() { return g_sdgrad; }
void set_strided_dgrad(const std::string& name) { g_sdgrad = parse_strided_dgrad(name); }
std::string strided_dgrad_name(StridedDgrad a) {
  switch (a) {
    case StridedDgrad::phase: return "phase";
    case StridedDgrad::col2im: return "col2im";
    default: return "auto";
  }
}

#if defined(FC_HAVE_AVX512)
#define FC_CASE_AVX512(CALL) case Isa::avx512: return avx512::CALL;
#else
#define FC_CASE_AVX512(CALL)
#endif
#if defined(FC_HAVE_AVX2)
#define FC_CASE_AVX2(CALL) case Isa::avx2: return avx2::CALL;
#else
#define FC_CASE_AVX2(CALL)
#endif
#define FC_DISPATCH(CALL)         \
  switch (active_isa()) {         \
    FC_CASE_AVX512(CALL)          \
    FC_CASE_AVX2(CALL)            \
    default: return baseline::CALL; \
  }

#define FC_DEFINE_DISPATCH_T(T)                                                                  \
  void conv2d_forward(const Conv2dParams& p, const T* x, const T* w, const T* b, T* y) {         \
    OpScope scope_(conv_ns(p, sizeof(T)));                                                       \
    if (p.depthwise()) { FC_DISPATCH(depthwise_conv2d_forward(p, x, w, b, y)) }                  \
    if (const int t = winograd_tile(p)) { FC_DISPATCH(winograd_conv2d_forward(p, t, x, w, b, y)) } \
    FC_DISPATCH(conv2d_forward(p, x, w, b, y))                                                   \
  }                                                                                              \
  void conv2d_backward_input(const Conv2dParams& p, const T* dy, const T* w, T* dx) {            \
    OpScope scope_(conv_ns(p, sizeof(T)));                                                       \
    if (p.depthwise()) { FC_DISPATCH(depthwise_conv2d_backward_input(p, dy, w, dx)) }            \
    if (const int t = winograd_applies(p) ? winograd_tile(winograd_backward_params(p)) : 0) {    \
      FC_DISPATCH(winograd_conv2d_backward_input(p, t, dy, w, dx))                               \
    }                                                                                            \
    FC_DISPATCH(conv2d_backward_input(p, dy, w, dx))                                             \
  }                                                                                              \
  void conv2d_backward_weight(const Conv2dParams& p, const T* dy, const T* x, T* dw) {           \
    OpScope scope_(conv_ns(p, sizeof(T)));                                                       \
    if (p.depthwise()) { FC_DISPATCH(depthwise_conv2d_backward_weight(p, dy, x, dw)) }           \
    FC_DISPATCH(conv2d_backward_weight(p, dy, x, dw))                                            \
  }                                                                                              \
  void conv2d_backward_bias(const Conv2dParams& p, const T* dy, T* db) {                         \
    OpScope scope_(op_ns(0, 1, sizeof(T) * double(p.N) * p.K * p.P * p.Q));                      \
    FC_DISPATCH(conv2d_backward_bias(p, dy, db))                                                 \
  }                                                                                              \
  void depthwise_conv2d_forward(const Conv2dParams& p, const T* x, const T* w, const T* b, T* y) { \
    OpScope scope_(conv_ns(p, sizeof(T)));                                                       \
    FC_DISPATCH(depthwise_conv2d_forward(p, x, w, b, y))                                         \
  }                                                                                              \
  void depthwise_conv2d_backward_input(const Conv2dParams& p, const T* dy, const T* w, T* dx) {  \
    OpScope scope_(conv_ns(p, sizeof(T)));                                                       \
    FC_DISPATCH(depthwise_conv2d_backward_input(p, dy, w, dx))                                   \
  }                                                                                              \
  void depthwise_conv2d_backward_weight(const Conv2dParams& p, const T* dy, const T* x, T* dw) { \
    OpScope scope_(conv_ns(p, sizeof(T)));                                                       \
    FC_DISPATCH(depthwise_conv2d_backward_weight(p, dy, x, dw))                                  \
  }                                                                                              \
  void max_pool2d_forward(const Pool2dParams& p, const T* x, T* y, int64_t* idx) {               \
    OpScope scope_(pool_ns(p, sizeof(T)));                                                       \
    FC_DISPATCH(max_pool2d_forward(p, x, y, idx))                                                \
  }                                                                                              \
  int64_t max_pool2d_backward(const Pool2dParams& p, const T* dy, const int64_t* idx, T* dx) {   \
    OpScope scope_(pool_ns(p, sizeof(T)));                                                       \
    FC_DISPATCH(max_pool2d_backward(p, dy, idx, dx))                                             \
  }                                                                                              \
  void avg_pool2d_forward(const Pool2dParams& p, const T* x, T* y) {                             \
    OpScope scope_(pool_ns(p, sizeof(T)));                                                       \
    FC_DISPATCH(avg_pool2d_forward(p, x, y))                                                     \
  }                                                                                              \
  void avg_pool2d_backward(const Pool2dParams& p, const T* dy, T* dx) {                          \
    OpScope scope_(pool_ns(p, sizeof(T)));                                                       \
    FC_DISPATCH(avg_pool2d_backward(p, dy, dx))                                                  \
  }                                                                                              \
  void adaptive_avg_pool2d_forward(const Pool2dParams& p, const T* x, T* y) {                    \
    OpScope scope_(pool_ns(p, sizeof(T)));                                                       \
    FC_DISPATCH(adaptive_avg_pool2d_forward(p, x, y))                                            \
  }                                                                                              \
  void adaptive_avg_pool2d_backward(const Pool2dParams& p, const T* dy, T* dx) {                 \
    OpScope scope_(pool_ns(p, sizeof(T)));                                                       \
    FC_DISPATCH(adaptive_avg_pool2d_backward(p, dy, dx))                                         \
  }                                                                                              \
  void channel_affine(const ChannelAffineParams& p, const T* x, const T* scale, const T* shift,  \
                      T* y) {                                                                    \
    OpScope scope_(affine_ns(p, sizeof(T)));                                                     \
    FC_DISPATCH(channel_affine(p, x, scale, shift, y))                                           \
  }                                                                                              \
  void clamp_backward(const ChannelAffineParams& p, const T* dy, const T* y, T* dx) {            \
    OpScope scope_(1.5 * affine_ns(p, sizeof(T)));  /* three streams, not two */                 \
    FC_DISPATCH(clamp_backward(p, dy, y, dx))                                                    \
  }                                                                                              \
  void batch_norm_stats(const BatchNormParams& p, const T* x, double* mean, double* var) {       \
    OpScope scope_(bn_ns(p, sizeof(T), 1));                                                      \
    FC_DISPATCH(batch_norm_stats(p, x, mean, var))                                               \
  }                                                                                              \
  void batch_norm_forward(const BatchNormParams& p, const T* x, const T* mean, const T* scale,   \
                          const T* shift, T* y) {                                                \
    OpScope scope_(bn_ns(p, sizeof(T), 2));                                                      \
    FC_DISPATCH(batch_norm_forward(p, x, mean, scale, shift, y))                                 \
  }                                                                                              \
  void batch_norm_backward_reduce(const BatchNormParams& p, const T* g, const T* x,             \
                                  const double* mean, double* sum_g, double* sum_gxc) {          \
    OpScope scope_(bn_ns(p, sizeof(T), 2));                                                      \
    FC_DISPATCH(batch_norm_backward_reduce(p, g, x, mean, sum_g, sum_gxc))                       \
  }                                                                                              \
  void batch_norm_backward_input(const BatchNormParams& p, const T* g, const T* x, const T* mean, \
                                 const T* a, const T* b, const T* e, T* dx) {                    \
    OpScope scope_(bn_ns(p, sizeof(T), 3));                                                      \
    FC_DISPATCH(batch_norm_backward_input(p, g, x, mean, a, b, e, dx))                           \
  }                                                                                              \
  void add(int64_t n, const T* a, const T* b, T* out) {                                          \
    OpScope scope_(op_ns(0, 1, 3.0 * sizeof(T) * double(n)));                                    \
    FC_DISPATCH(add(n, a, b, out))                                                               \
  }                                                                                              \
  void copy(int64_t n, const T* src, T* dst) {                                                   \
    OpScope scope_(op_ns(0, 1, 2.0 * sizeof(T) * double(n)));                                    \
    FC_DISPATCH(copy(n, src, dst))                                                               \
  }                                                                                              \
  void sgd_step(const SgdParams& p, T* param, const T* grad, T* buf) {                           \
    OpScope scope_(op_ns(0, 1, 5.0 * sizeof(T) * double(p.n)));                                  \
    FC_DISPATCH(sgd_step(p, param, grad, buf))                                                   \
  }                                                                                              \
  void adam_step(const AdamParams& p, T* param, const T* grad, T* m, T* v, T* vmax) {            \
    OpScope scope_(op_ns(0, 1, 7.0 * sizeof(T) * double(p.n)));                                  \
    FC_DISPATCH(adam_step(p, param, grad, m, v, vmax))                                           \
  }

FC_DEFINE_DISPATCH_T(float)
FC_DEFINE_DISPATCH_T(double)

}  // namespace cpu
}  // namespace fastconv
