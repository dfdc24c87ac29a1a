// fastconv._cuda and fastconv._cuda_emu: the only pybind11 file of the CUDA kernels. The same file
// builds both modules (FC_MODULE_NAME): _cuda runs the kernels on a GPU, _cuda_emu runs the same
// kernel source on the CPU through csrc/cuda/emulation.h (FC_CUDA_EMULATION=1).
//
// Arrays arrive as raw device addresses (Python ints: CuPy's a.data.ptr, torch's data_ptr(), or a
// numpy array's address under the emulation) with their shapes, a dtype code (cuda::DType) and the
// caller's stream, so one binding serves CuPy, torch and the emulation alike. The Python layer
// (fastconv/_gpu/) has checked devices, dtypes, layouts and shapes and allocated the outputs and
// any workspace (from CuPy's or torch's caching allocator); here the geometry is validated again
// and the params structs filled (common/geometry.h), then the launchers in csrc/cuda/ run on the
// given stream without synchronising. Errors become ValueError / TypeError / RuntimeError.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <string>

#include "common/check.h"
#include "common/geometry.h"
#include "common/params.h"
#include "cuda/channel_affine_cuda.h"
#include "cuda/conv2d_bias_cuda.h"
#include "cuda/conv2d_cuda.h"
#include "cuda/depthwise_conv2d_cuda.h"
#include "cuda/pool2d_cuda.h"
#include "cuda/runtime.h"
#if FC_CUDA_EMULATION
#include "cuda/emulation_selftest.h"
#endif

namespace py = pybind11;
using namespace fastconv;

namespace {

template <class T = void>
T* as_ptr(uintptr_t address) { return reinterpret_cast<T*>(address); }

cudaStream_t as_stream(uintptr_t handle) { return reinterpret_cast<cudaStream_t>(handle); }

cuda::DType as_dtype(int code, const char* op) {
  FC_CHECK_TYPE(code >= 0 && code <= 3, op, ": unknown dtype code ", code);
  return static_cast<cuda::DType>(code);
}

#if !FC_CUDA_EMULATION
// Number of usable CUDA devices; 0 when there is no driver or no GPU (never an exception, so
// fastconv.cuda_available() can ask on any machine).
int device_count() {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error
    return 0;
  }
  return n;
}

std::string device_name(int device) {
  cudaDeviceProp prop;
  cudaError_t err = cudaGetDeviceProperties(&prop, device);
  if (err != cudaSuccess)
    throw py::value_error(std::string("device_name: ") + cudaGetErrorString(err));
  return prop.name;
}
#endif

// ---- pooling ----------------------------------------------------------------------------------
// Shapes: xs = the input's (N, C, H, W), out_hw = the output's (P, Q) as the caller allocated it
// (checked against the geometry); channels_last: every array of the call is stored NHWC.

void check_out_hw(const char* op, const Pool2dParams& p, Pair out_hw, const char* name) {
  FC_CHECK(out_hw[0] == p.P && out_hw[1] == p.Q, op, ": ", name, " has spatial size (", out_hw[0],
           ", ", out_hw[1], ") but this geometry gives (", p.P, ", ", p.Q, ")");
}

void check_dims(const char* op, const Dims4& s, const char* name) {
  for (int64_t v : s)
    FC_CHECK(v >= 0, op, ": ", name, " has a negative size (", s[0], ", ", s[1], ", ", s[2], ", ",
             s[3], ")");
}

void pool_max_forward(int dtype, uintptr_t x, uintptr_t y, uintptr_t indices, Dims4 xs,
                      Pair out_hw, Pair kernel, Pair stride, Quad pad, Pair dil, bool ceil_mode,
                      bool channels_last, uintptr_t stream) {
  const char* op = "max_pool2d";
  const cuda::DType dt = as_dtype(dtype, op);
  check_dims(op, xs, "input");
  Pool2dParams p = make_pool_params(op, xs, kernel, stride, pad, dil, ceil_mode);
  const int64_t eh = first_empty_window(p.H, p.R, p.stride_h, p.pad_t, p.dil_h, p.P);
  const int64_t ew = first_empty_window(p.W, p.S, p.stride_w, p.pad_l, p.dil_w, p.Q);
  FC_CHECK(eh < 0 && ew < 0, op, ": with this dilation and padding the pooling window at output ",
           eh >= 0 ? "row " : "column ", eh >= 0 ? eh : ew,
           " covers no input element (only padding); reduce the padding or the dilation");
  check_out_hw(op, p, out_hw, "out");
  p.channels_last = channels_last;
  py::gil_scoped_release nogil;
  int64_t* ind = indices ? as_ptr<int64_t>(indices) : nullptr;
  cuda::max_pool2d_forward(p, dt, as_ptr(x), as_ptr(y), ind, as_stream(stream));
}

// kernel[0] == 0: geometry unknown (only the indices): the serial per-plane scatter.
void pool_max_backward(int dtype, uintptr_t dy, uintptr_t indices, uintptr_t dx, Dims4 xs,
                       Pair dy_hw, Pair kernel, Pair stride, Quad pad, Pair dil, bool channels_last,
                       uintptr_t stream) {
  const char* op = "max_pool2d_backward";
  const cuda::DType dt = as_dtype(dtype, op);
  check_dims(op, xs, "grad_input");
  FC_CHECK(dy_hw[0] >= 0 && dy_hw[1] >= 0, op, ": grad_output has a negative size");
  const bool gather = kernel[0] != 0 || kernel[1] != 0;
  Pool2dParams p = gather ? pool_window_params(op, kernel, stride, pad, dil) : Pool2dParams{};
  p.N = xs[0], p.C = xs[1], p.H = xs[2], p.W = xs[3];
  p.P = dy_hw[0], p.Q = dy_hw[1];
  p.channels_last = channels_last;
  py::gil_scoped_release nogil;
  if (gather)
    cuda::max_pool2d_backward(p, dt, as_ptr(dy), as_ptr<int64_t>(indices), as_ptr(dx),
                              as_stream(stream));
  else
    cuda::max_pool2d_backward_serial(p, dt, as_ptr(dy), as_ptr<int64_t>(indices), as_ptr(dx),
                                     as_stream(stream));
}

Pool2dParams avg_params(const char* op, const Dims4& xs, Pair kernel, Pair stride, Quad pad,
                        bool ceil_mode, bool count_include_pad, int64_t divisor,
                        bool channels_last) {
  check_dims(op, xs, "input");
  Pool2dParams p = make_pool_params(op, xs, kernel, stride, pad, {1, 1}, ceil_mode);
  p.count_include_pad = count_include_pad;
  p.divisor_override = divisor;  // 0 = none; any other value, negative included (as torch)
  p.channels_last = channels_last;
  return p;
}

void pool_avg_forward(int dtype, uintptr_t x, uintptr_t y, Dims4 xs, Pair out_hw, Pair kernel,
                      Pair stride, Quad pad, bool ceil_mode, bool count_include_pad,
                      int64_t divisor, bool channels_last, uintptr_t stream) {
  const char* op = "avg_pool2d";
  const cuda::DType dt = as_dtype(dtype, op);
  Pool2dParams p = avg_params(op, xs, kernel, stride, pad, ceil_mode, count_include_pad, divisor,
                              channels_last);
  check_out_hw(op, p, out_hw, "out");
  py::gil_scoped_release nogil;
  cuda::avg_pool2d_forward(p, dt, as_ptr(x), as_ptr(y), as_stream(stream));
}

void pool_avg_backward(int dtype, uintptr_t dy, uintptr_t dx, Dims4 xs, Pair dy_hw, Pair kernel,
                       Pair stride, Quad pad, bool ceil_mode, bool count_include_pad,
                       int64_t divisor, bool channels_last, uintptr_t stream) {
  const char* op = "avg_pool2d_backward";
  const cuda::DType dt = as_dtype(dtype, op);
  Pool2dParams p = avg_params(op, xs, kernel, stride, pad, ceil_mode, count_include_pad, divisor,
                              channels_last);
  check_out_hw(op, p, dy_hw, "grad_output");
  py::gil_scoped_release nogil;
  cuda::avg_pool2d_backward(p, dt, as_ptr(dy), as_ptr(dx), as_stream(stream));
}

Pool2dParams adaptive_params(const char* op, const Dims4& xs, Pair out_hw, bool channels_last) {
  check_dims(op, xs, "input");
  Pool2dParams p;
  p.N = xs[0], p.C = xs[1], p.H = xs[2], p.W = xs[3];
  p.P = out_hw[0], p.Q = out_hw[1];
  FC_CHECK(p.P >= 1 && p.Q >= 1, op, ": output_size must be positive, got (", p.P, ", ", p.Q, ")");
  FC_CHECK(p.H >= 1 && p.W >= 1, op, ": input must have non-zero height and width, got (", p.H,
           ", ", p.W, ")");
  p.channels_last = channels_last;
  return p;
}

void pool_adaptive_avg_forward(int dtype, uintptr_t x, uintptr_t y, Dims4 xs, Pair out_hw,
                               bool channels_last, uintptr_t stream) {
  const char* op = "adaptive_avg_pool2d";
  const cuda::DType dt = as_dtype(dtype, op);
  const Pool2dParams p = adaptive_params(op, xs, out_hw, channels_last);
  py::gil_scoped_release nogil;
  cuda::adaptive_avg_pool2d_forward(p, dt, as_ptr(x), as_ptr(y), as_stream(stream));
}

void pool_adaptive_avg_backward(int dtype, uintptr_t dy, uintptr_t dx, Dims4 xs, Pair dy_hw,
                                bool channels_last, uintptr_t stream) {
  const char* op = "adaptive_avg_pool2d_backward";
  const cuda::DType dt = as_dtype(dtype, op);
  const Pool2dParams p = adaptive_params(op, xs, dy_hw, channels_last);
  py::gil_scoped_release nogil;
  cuda::adaptive_avg_pool2d_backward(p, dt, as_ptr(dy), as_ptr(dx), as_stream(stream));
}

// ---- depthwise convolution --------------------------------------------------------------------
// Depthwise = groups == C (any C >= 1) and K a multiple of C; addresses of C-contiguous NCHW arrays.
Conv2dParams depthwise_params(const char* op, const Dims4& xs, const Dims4& ws, Pair stride,
                              Quad pad, Pair dil, int64_t groups) {
  const Conv2dParams p = make_conv_params(op, xs, ws, stride, pad, dil, groups);
  FC_CHECK(groups == p.C && p.K % p.C == 0, op, ": not a depthwise convolution (groups=", groups,
           ", input channels ", p.C, ", output channels ", p.K,
           "); the depthwise kernels need groups == input channels and output channels a multiple "
           "of it");
  return p;
}

void depthwise_conv2d_forward(int dtype, uintptr_t x, uintptr_t w, uintptr_t b, uintptr_t y,
                              const Dims4& xs, const Dims4& ws, Pair stride, Quad pad, Pair dil,
                              int64_t groups, uintptr_t stream) {
  const char* op = "depthwise_conv2d_forward";
  const cuda::DType dt = as_dtype(dtype, op);
  const Conv2dParams p = depthwise_params(op, xs, ws, stride, pad, dil, groups);
  py::gil_scoped_release nogil;
  cuda::depthwise_conv2d_forward(p, dt, as_ptr(x), as_ptr(w), as_ptr(b), as_ptr(y),
                                 as_stream(stream));
}

void depthwise_conv2d_backward_input(int dtype, uintptr_t dy, uintptr_t w, uintptr_t dx,
                                     const Dims4& xs, const Dims4& ws, Pair stride, Quad pad,
                                     Pair dil, int64_t groups, uintptr_t stream) {
  const char* op = "depthwise_conv2d_backward_input";
  const cuda::DType dt = as_dtype(dtype, op);
  const Conv2dParams p = depthwise_params(op, xs, ws, stride, pad, dil, groups);
  py::gil_scoped_release nogil;
  cuda::depthwise_conv2d_backward_input(p, dt, as_ptr(dy), as_ptr(w), as_ptr(dx),
                                        as_stream(stream));
}

int64_t depthwise_conv2d_backward_weight_workspace_bytes(int dtype, const Dims4& xs,
                                                         const Dims4& ws, Pair stride, Quad pad,
                                                         Pair dil, int64_t groups) {
  const char* op = "depthwise_conv2d_backward_weight_workspace_bytes";
  const cuda::DType dt = as_dtype(dtype, op);
  return cuda::depthwise_conv2d_backward_weight_workspace_bytes(
      depthwise_params(op, xs, ws, stride, pad, dil, groups), dt);
}

void depthwise_conv2d_backward_weight(int dtype, uintptr_t dy, uintptr_t x, uintptr_t dw,
                                      uintptr_t workspace, int64_t workspace_bytes,
                                      const Dims4& xs, const Dims4& ws, Pair stride, Quad pad,
                                      Pair dil, int64_t groups, uintptr_t stream) {
  const char* op = "depthwise_conv2d_backward_weight";
  const cuda::DType dt = as_dtype(dtype, op);
  const Conv2dParams p = depthwise_params(op, xs, ws, stride, pad, dil, groups);
  py::gil_scoped_release nogil;
  cuda::depthwise_conv2d_backward_weight(p, dt, as_ptr(dy), as_ptr(x), as_ptr(dw),
                                         as_ptr(workspace), workspace_bytes, as_stream(stream));
}

// Bias gradient of any convolution: dy (N, K, P, Q) C-contiguous.
void check_dy_shape(const char* op, const Dims4& s) {
  for (int64_t v : s)
    FC_CHECK(v >= 0, op, ": grad_output shape must be non-negative, got (", s[0], ", ", s[1], ", ",
             s[2], ", ", s[3], ")");
}

int64_t conv2d_backward_bias_workspace_bytes(int dtype, const Dims4& dys) {
  const char* op = "conv2d_backward_bias_workspace_bytes";
  const cuda::DType dt = as_dtype(dtype, op);
  check_dy_shape(op, dys);
  return cuda::conv2d_backward_bias_workspace_bytes(dys[0], dys[1], dys[2] * dys[3], dt);
}

void conv2d_backward_bias(int dtype, uintptr_t dy, uintptr_t db, uintptr_t workspace,
                          int64_t workspace_bytes, const Dims4& dys, uintptr_t stream) {
  const char* op = "conv2d_backward_bias";
  const cuda::DType dt = as_dtype(dtype, op);
  check_dy_shape(op, dys);
  py::gil_scoped_release nogil;
  cuda::conv2d_backward_bias(dys[0], dys[1], dys[2] * dys[3], dt, as_ptr(dy), as_ptr(db),
                             as_ptr(workspace), workspace_bytes, as_stream(stream));
}

// ---- channel affine ---------------------------------------------------------------------------

// out = clamp(x * scale[c] + shift[c], lo, hi) over x viewed as (N, C, L); lo / hi None = no bound.
// out may equal x (in place).
void channel_affine(int dtype, uintptr_t x, uintptr_t scale, uintptr_t shift, uintptr_t out,
                    int64_t N, int64_t C, int64_t L, std::optional<double> lo,
                    std::optional<double> hi, uintptr_t stream) {
  const char* op = "channel_affine";
  const cuda::DType dt = as_dtype(dtype, op);
  FC_CHECK(N >= 0 && C >= 0 && L >= 0, op, ": sizes must be non-negative, got (N, C, L) = (", N,
           ", ", C, ", ", L, ")");
  ChannelAffineParams p;
  p.N = N, p.C = C, p.L = L;
  if (lo) {
    FC_CHECK(*lo == *lo, op, ": lo must not be NaN");
    p.clamp_lo = true, p.lo = *lo;
  }
  if (hi) {
    FC_CHECK(*hi == *hi, op, ": hi must not be NaN");
    p.clamp_hi = true, p.hi = *hi;
  }
  FC_CHECK(!(p.clamp_lo && p.clamp_hi) || p.lo <= p.hi, op, ": lo must not exceed hi, got lo=",
           p.lo, " and hi=", p.hi);
  py::gil_scoped_release nogil;
  cuda::channel_affine(p, dt, as_ptr(x), as_ptr(scale), as_ptr(shift), as_ptr(out),
                       as_stream(stream));
}

// ---- dense convolution ------------------------------------------------------------------------
// Dense and grouped conv2d (implicit GEMM), addresses of C-contiguous NCHW arrays. tile: -1 for
// the heuristic, -2 for the heuristic with TF32 tensor cores allowed for float32, 0/1/2 (128x128,
// 64x64, 32x32 SIMT block tiles) or 3/4 (64x64, 128x128 on WMMA: 16-bit types, float32 as TF32); splits: the weight gradient's split-K factor, 0 for the heuristic (the
// workspace query must get the same tile and splits).
void conv2d_forward(int dtype, uintptr_t x, uintptr_t w, uintptr_t b, uintptr_t y,
                    const Dims4& xs, const Dims4& ws, Pair stride, Quad pad, Pair dil,
                    int64_t groups, int tile, uintptr_t stream) {
  const char* op = "conv2d_forward";
  const cuda::DType dt = as_dtype(dtype, op);
  const Conv2dParams p = make_conv_params(op, xs, ws, stride, pad, dil, groups);
  FC_CHECK(p.N >= 1, op, ": empty batch (the caller skips the launch)");
  py::gil_scoped_release nogil;
  cuda::conv2d_forward(p, dt, as_ptr(x), as_ptr(w), as_ptr(b), as_ptr(y), tile, as_stream(stream));
}

void conv2d_backward_input(int dtype, uintptr_t dy, uintptr_t w, uintptr_t dx, const Dims4& xs,
                           const Dims4& ws, Pair stride, Quad pad, Pair dil, int64_t groups,
                           int tile, uintptr_t stream) {
  const char* op = "conv2d_backward_input";
  const cuda::DType dt = as_dtype(dtype, op);
  const Conv2dParams p = make_conv_params(op, xs, ws, stride, pad, dil, groups);
  FC_CHECK(p.N >= 1, op, ": empty batch (the caller skips the launch)");
  py::gil_scoped_release nogil;
  cuda::conv2d_backward_input(p, dt, as_ptr(dy), as_ptr(w), as_ptr(dx), tile, as_stream(stream));
}

int64_t conv2d_backward_weight_workspace_bytes(int dtype, const Dims4& xs, const Dims4& ws,
                                               Pair stride, Quad pad, Pair dil, int64_t groups,
                                               int tile, int splits) {
  const char* op = "conv2d_backward_weight_workspace_bytes";
  const cuda::DType dt = as_dtype(dtype, op);
  return cuda::conv2d_backward_weight_workspace_bytes(
      make_conv_params(op, xs, ws, stride, pad, dil, groups), dt, tile, splits);
}

void conv2d_backward_weight(int dtype, uintptr_t dy, uintptr_t x, uintptr_t dw,
                            uintptr_t workspace, int64_t workspace_bytes, const Dims4& xs,
                            const Dims4& ws, Pair stride, Quad pad, Pair dil, int64_t groups,
                            int tile, int splits, uintptr_t stream) {
  const char* op = "conv2d_backward_weight";
  const cuda::DType dt = as_dtype(dtype, op);
  const Conv2dParams p = make_conv_params(op, xs, ws, stride, pad, dil, groups);
  FC_CHECK(p.N >= 1, op, ": empty batch (the caller writes zeros without a launch)");
  py::gil_scoped_release nogil;
  cuda::conv2d_backward_weight(p, dt, as_ptr(dy), as_ptr(x), as_ptr(dw), as_ptr(workspace),
                               workspace_bytes, tile, splits, as_stream(stream));
}

}  // namespace

PYBIND11_MODULE(FC_MODULE_NAME, m) {
  py::register_local_exception<ValueError>(m, "_ValueError", PyExc_ValueError);
  py::register_local_exception<TypeError>(m, "_TypeError", PyExc_TypeError);
  py::register_exception<CudaError>(m, "CudaError", PyExc_RuntimeError);
#if FC_CUDA_EMULATION
  m.doc() = "fastconv CUDA kernels run on the CPU by the CUDA emulation (tests only)";
  m.attr("emulation") = true;
  m.def("device_count", [] { return 1; });
  m.def("device_name", [](int) { return std::string("fastconv CUDA emulation (CPU)"); },
        py::arg("device") = 0);
#else
  m.doc() = "fastconv CUDA kernels";
  m.attr("emulation") = false;
  m.def("device_count", &device_count);
  m.def("device_name", &device_name, py::arg("device") = 0);
  m.def("runtime_version", [] {
    int v = 0;
    cudaRuntimeGetVersion(&v);
    return v;
  });
#endif
  // ---- pooling bindings ----
  m.def("max_pool2d_forward", &pool_max_forward, py::arg("dtype"), py::arg("x"), py::arg("out"),
        py::arg("indices"), py::arg("input_shape"), py::arg("out_hw"), py::arg("kernel"),
        py::arg("stride"), py::arg("pad"), py::arg("dilation"), py::arg("ceil_mode"),
        py::arg("channels_last"), py::arg("stream"),
        "max pooling; indices = 0 (no argmax) or an int64 buffer of out's shape and layout");
  m.def("max_pool2d_backward", &pool_max_backward, py::arg("dtype"), py::arg("grad_output"),
        py::arg("indices"), py::arg("grad_input"), py::arg("input_shape"), py::arg("out_hw"),
        py::arg("kernel"), py::arg("stride"), py::arg("pad"), py::arg("dilation"),
        py::arg("channels_last"), py::arg("stream"),
        "max pooling input gradient: a deterministic gather given the forward geometry; "
        "kernel = (0, 0) when it is unknown (a slow per-plane scatter in output order)");
  m.def("avg_pool2d_forward", &pool_avg_forward, py::arg("dtype"), py::arg("x"), py::arg("out"),
        py::arg("input_shape"), py::arg("out_hw"), py::arg("kernel"), py::arg("stride"),
        py::arg("pad"), py::arg("ceil_mode"), py::arg("count_include_pad"), py::arg("divisor"),
        py::arg("channels_last"), py::arg("stream"));
  m.def("avg_pool2d_backward", &pool_avg_backward, py::arg("dtype"), py::arg("grad_output"),
        py::arg("grad_input"), py::arg("input_shape"), py::arg("out_hw"), py::arg("kernel"),
        py::arg("stride"), py::arg("pad"), py::arg("ceil_mode"), py::arg("count_include_pad"),
        py::arg("divisor"), py::arg("channels_last"), py::arg("stream"));
  m.def("adaptive_avg_pool2d_forward", &pool_adaptive_avg_forward, py::arg("dtype"), py::arg("x"),
        py::arg("out"), py::arg("input_shape"), py::arg("out_hw"), py::arg("channels_last"),
        py::arg("stream"));
  m.def("adaptive_avg_pool2d_backward", &pool_adaptive_avg_backward, py::arg("dtype"),
        py::arg("grad_output"), py::arg("grad_input"), py::arg("input_shape"), py::arg("out_hw"),
        py::arg("channels_last"), py::arg("stream"));

  // ---- depthwise convolution bindings ----
  m.def("depthwise_conv2d_forward", &depthwise_conv2d_forward, py::arg("dtype"), py::arg("x"),
        py::arg("w"), py::arg("b"), py::arg("y"), py::arg("x_shape"), py::arg("w_shape"),
        py::arg("stride"), py::arg("pad"), py::arg("dilation"), py::arg("groups"),
        py::arg("stream"),
        "y = depthwise conv(x, w) (+ b; address 0 = none) on `stream`; y (N, K, P, Q) overwritten");
  m.def("depthwise_conv2d_backward_input", &depthwise_conv2d_backward_input, py::arg("dtype"),
        py::arg("dy"), py::arg("w"), py::arg("dx"), py::arg("x_shape"), py::arg("w_shape"),
        py::arg("stride"), py::arg("pad"), py::arg("dilation"), py::arg("groups"),
        py::arg("stream"), "dx (N, C, H, W) = input gradient of the depthwise conv, overwritten");
  m.def("depthwise_conv2d_backward_weight_workspace_bytes",
        &depthwise_conv2d_backward_weight_workspace_bytes, py::arg("dtype"), py::arg("x_shape"),
        py::arg("w_shape"), py::arg("stride"), py::arg("pad"), py::arg("dilation"),
        py::arg("groups"), "scratch bytes depthwise_conv2d_backward_weight needs");
  m.def("depthwise_conv2d_backward_weight", &depthwise_conv2d_backward_weight, py::arg("dtype"),
        py::arg("dy"), py::arg("x"), py::arg("dw"), py::arg("workspace"),
        py::arg("workspace_bytes"), py::arg("x_shape"), py::arg("w_shape"), py::arg("stride"),
        py::arg("pad"), py::arg("dilation"), py::arg("groups"), py::arg("stream"),
        "dw (K, 1, R, S) = weight gradient of the depthwise conv (deterministic), overwritten");
  m.def("conv2d_backward_bias_workspace_bytes", &conv2d_backward_bias_workspace_bytes,
        py::arg("dtype"), py::arg("dy_shape"), "scratch bytes conv2d_backward_bias needs");
  m.def("conv2d_backward_bias", &conv2d_backward_bias, py::arg("dtype"), py::arg("dy"),
        py::arg("db"), py::arg("workspace"), py::arg("workspace_bytes"), py::arg("dy_shape"),
        py::arg("stream"), "db[k] = sum of dy[:, k] over N, P, Q (any conv; deterministic)");

  // ---- channel affine bindings ----
  m.def("channel_affine", &channel_affine, py::arg("dtype"), py::arg("x"), py::arg("scale"),
        py::arg("shift"), py::arg("out"), py::arg("N"), py::arg("C"), py::arg("L"), py::arg("lo"),
        py::arg("hi"), py::arg("stream"),
        "out = clamp(x * scale[c] + shift[c], lo, hi) for x viewed as (N, C, L); out may be x");

  // ---- dense convolution bindings ----
  m.def("conv2d_forward", &conv2d_forward, py::arg("dtype"), py::arg("x"), py::arg("w"),
        py::arg("b"), py::arg("y"), py::arg("x_shape"), py::arg("w_shape"), py::arg("stride"),
        py::arg("pad"), py::arg("dilation"), py::arg("groups"), py::arg("tile"),
        py::arg("stream"),
        "y = conv(x, w) (+ b; address 0 = none) on `stream`; y (N, K, P, Q) overwritten");
  m.def("conv2d_backward_input", &conv2d_backward_input, py::arg("dtype"), py::arg("dy"),
        py::arg("w"), py::arg("dx"), py::arg("x_shape"), py::arg("w_shape"), py::arg("stride"),
        py::arg("pad"), py::arg("dilation"), py::arg("groups"), py::arg("tile"),
        py::arg("stream"), "dx (N, C, H, W) = input gradient of conv2d, overwritten");
  m.def("conv2d_backward_weight_workspace_bytes", &conv2d_backward_weight_workspace_bytes,
        py::arg("dtype"), py::arg("x_shape"), py::arg("w_shape"), py::arg("stride"),
        py::arg("pad"), py::arg("dilation"), py::arg("groups"), py::arg("tile") = -1,
        py::arg("splits") = 0, "scratch bytes conv2d_backward_weight needs (split-K partials)");
  m.def("conv2d_backward_weight", &conv2d_backward_weight, py::arg("dtype"), py::arg("dy"),
        py::arg("x"), py::arg("dw"), py::arg("workspace"), py::arg("workspace_bytes"),
        py::arg("x_shape"), py::arg("w_shape"), py::arg("stride"), py::arg("pad"),
        py::arg("dilation"), py::arg("groups"), py::arg("tile"), py::arg("splits"),
        py::arg("stream"),
        "dw (K, C/groups, R, S) = weight gradient of conv2d (deterministic), overwritten");

  // ---- emulation self-test ----
  // The emulation's planted-bug kernels (csrc/cuda/emulation_selftest.h; variant 0 = correct),
  // float32 arrays by address, for tests/test_cuda_emulation.py.
#if FC_CUDA_EMULATION
  {
    namespace st = cuda::selftest;
    auto t = m.def_submodule("selftest", "CUDA emulation self-test kernels (planted bugs)");
    t.def("sgemm", [](uintptr_t a, uintptr_t b, uintptr_t c, int M, int N, int K, int variant) {
      py::gil_scoped_release nogil;
      st::sgemm(as_ptr<const float>(a), as_ptr<const float>(b), as_ptr<float>(c), M, N, K, variant);
    });
    t.def("block_sum", [](uintptr_t x, uintptr_t out, int n, int variant) {
      py::gil_scoped_release nogil;
      st::block_sum(as_ptr<const float>(x), as_ptr<float>(out), n, variant);
    });
    t.def("stencil", [](uintptr_t x, uintptr_t y, int n, int variant) {
      py::gil_scoped_release nogil;
      st::stencil(as_ptr<const float>(x), as_ptr<float>(y), n, variant);
    });
    t.def("reverse", [](uintptr_t x, uintptr_t y, int n, int variant) {
      py::gil_scoped_release nogil;
      st::reverse(as_ptr<const float>(x), as_ptr<float>(y), n, variant);
    });
    t.def("wmma_gemm", [](int dtype, uintptr_t a, uintptr_t b, uintptr_t c, int M, int N, int K,
                          bool a_col, bool b_col) {
      py::gil_scoped_release nogil;
      st::wmma_gemm(dtype, as_ptr<const void>(a), as_ptr<const void>(b), as_ptr<float>(c), M, N, K,
                    a_col, b_col);
    });
    t.def("wmma_tf32_gemm", [](uintptr_t a, uintptr_t b, uintptr_t c, int M, int N, int K,
                               bool round) {
      py::gil_scoped_release nogil;
      st::wmma_tf32_gemm(as_ptr<const float>(a), as_ptr<const float>(b), as_ptr<float>(c), M, N, K,
                         round);
    });
    t.def("scatter_add", [](uintptr_t x, uintptr_t idx, uintptr_t y, int n, int m, int variant) {
      py::gil_scoped_release nogil;
      st::scatter_add(as_ptr<const float>(x), as_ptr<const int>(idx), as_ptr<float>(y), n, m, variant);
    });
    t.def("proxy_forms", [](uintptr_t x, uintptr_t y, uintptr_t z) {
      py::gil_scoped_release nogil;
      st::proxy_forms(as_ptr<const float>(x), as_ptr<float>(y), as_ptr<float>(z));
    });
    t.def("warp_sum", [](uintptr_t x, uintptr_t out, int nwarps, int variant) {
      py::gil_scoped_release nogil;
      st::warp_sum(as_ptr<const float>(x), as_ptr<float>(out), nwarps, variant);
    });
    t.def("max_pool3x3", [](uintptr_t x, uintptr_t y, int NC, int H, int W) {
      py::gil_scoped_release nogil;
      st::max_pool3x3(as_ptr<const float>(x), as_ptr<float>(y), NC, H, W);
    });
  }
#endif
}
