// Optimizer steps on the CPU (see optim_cpu.h for the arithmetic and why it is bit-identical to
// fastconv/optim's array code). Element-wise loops the compiler vectorises, multi-threaded with
// parallel_for in chunks of at least kGrainElems; every branch is on a loop-invariant option.
// CMakeLists.txt compiles this file with -ffp-contract=off: a fused multiply-add would round
// once where numpy rounds twice.

#include "cpu/optim_cpu.h"

#include <cmath>
#include <cstdint>

#include "common/parallel.h"

FC_ISA_BEGIN
namespace {

constexpr int64_t kGrainElems = 32768;

template <class T>
void sgd(const SgdParams& o, T* p, const T* g, T* buf) {
  const T wd = static_cast<T>(o.weight_decay), mom = static_cast<T>(o.momentum);
  const T damp1 = static_cast<T>(1 - o.dampening), neg_lr = static_cast<T>(-o.lr);
  const bool has_wd = o.weight_decay != 0, has_mom = o.momentum != 0;
  parallel_for(o.n, kGrainElems, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      T d = o.maximize ? -g[i] : g[i];
      if (has_wd) d = d + wd * p[i];
      if (has_mom) {
        T b;
        if (o.first) {
          b = d;
        } else {
          b = buf[i] * mom;
          b = b + damp1 * d;
        }
        buf[i] = b;
        d = o.nesterov ? d + mom * b : b;
      }
      p[i] = p[i] + neg_lr * d;
    }
  });
}

template <class T>
void adam(const AdamParams& o, T* p, const T* g, T* m, T* v, T* vmax) {
  const T wd = static_cast<T>(o.weight_decay), decay = static_cast<T>(1 - o.lr * o.weight_decay);
  const double w = 1 - o.beta1;  // torch.lerp's rounding: weight < 0.5 adds, else subtracts
  const bool small_w = std::fabs(w) < 0.5;
  const T lw = static_cast<T>(small_w ? w : 1 - w);
  const T beta2 = static_cast<T>(o.beta2), one_m_beta2 = static_cast<T>(1 - o.beta2);
  const T neg_step = static_cast<T>(-o.step_size), c2 = static_cast<T>(o.bias2_sqrt);
  const T eps = static_cast<T>(o.eps);
  const bool has_wd = o.weight_decay != 0;
  parallel_for(o.n, kGrainElems, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      T d = o.maximize ? -g[i] : g[i];
      if (has_wd) {
        if (o.decoupled)
          p[i] = p[i] * decay;
        else
          d = d + wd * p[i];
      }
      T diff = d - m[i];
      if (small_w) {
        diff = diff * lw;
        m[i] = m[i] + diff;
      } else {
        diff = diff * lw;
        m[i] = d - diff;
      }
      T vi = v[i] * beta2;
      T sq = one_m_beta2 * d;
      sq = sq * d;
      vi = vi + sq;
      v[i] = vi;
      if (o.amsgrad) {
        const T vm = vmax[i];
        vi = (vm > vi || vm != vm) ? vm : vi;  // np.maximum: a NaN in either wins
        vmax[i] = vi;
      }
      T denom = std::sqrt(vi);
      denom = denom / c2;
      denom = denom + eps;
      T up = neg_step * m[i];
      up = up / denom;
      p[i] = p[i] + up;
    }
  });
}

}  // namespace

#define FC_OPTIM_DEFINE(T)                                                                      \
  void sgd_step(const SgdParams& o, T* param, const T* grad, T* buf) {                          \
    sgd<T>(o, param, grad, buf);                                                                \
  }                                                                                             \
  void adam_step(const AdamParams& o, T* param, const T* grad, T* exp_avg, T* exp_avg_sq,       \
                 T* max_exp_avg_sq) {                                                           \
    adam<T>(o, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq);                               \
  }
FC_OPTIM_DEFINE(float)
FC_OPTIM_DEFINE(double)
#undef FC_OPTIM_DEFINE

FC_ISA_END
