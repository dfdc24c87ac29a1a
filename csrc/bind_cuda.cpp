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
#include <string>

#include "common/check.h"
#include "common/geometry.h"
#include "common/params.h"
#include "cuda/conv2d_bias_cuda.h"
#include "cuda/depthwise_conv2d_cuda.h"
#include "cuda/runtime.h"

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

}  // namespace

PYBIND11_MODULE(FC_MODULE_NAME, m) {
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
}
