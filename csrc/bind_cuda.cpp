// fastconv._cuda: the only pybind11 file of the CUDA extension. For now it reports the devices the
// CUDA runtime sees; the CUDA kernels (csrc/cuda/) are bound here as they land.
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include <string>

namespace py = pybind11;

namespace {

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

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "fastconv CUDA kernels";
  m.def("device_count", &device_count);
  m.def("device_name", &device_name, py::arg("device") = 0);
  m.def("runtime_version", [] {
    int v = 0;
    cudaRuntimeGetVersion(&v);
    return v;
  });
}
