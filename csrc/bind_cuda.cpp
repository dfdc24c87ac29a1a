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
#include "cuda/conv2d_cuda.h"
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

// ---- depthwise convolution --------------------------------------------------------------------

// ---- channel affine ---------------------------------------------------------------------------

// ---- dense convolution ------------------------------------------------------------------------
// Dense and grouped conv2d (implicit GEMM), addresses of C-contiguous NCHW arrays. tile: -1 for
// the heuristic, 0/1/2 (128x128, 64x64, 32x32 SIMT block tiles) or 3/4 (64x64, 128x128 on WMMA,
// 16-bit types only); splits: the weight gradient's split-K factor, 0 for the heuristic (the
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

  // ---- channel affine bindings ----

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
