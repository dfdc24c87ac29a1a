// fastconv._C: the only pybind11 file of the CPU extension. It validates every array (dtype,
// rank, contiguity, alignment, writability, shapes against the params, overlap), fills the params
// structs, releases the GIL and calls the run-time dispatched kernels in csrc/cpu/. Outputs are
// passed in (allocated by the Python layer), so nothing here allocates tensors and tests can
// poison outputs before the call.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/geometry.h"
#include "common/output_size.h"
#include "common/parallel.h"
#include "common/params.h"
#include "cpu/batch_norm_cpu.h"
#include "cpu/channel_affine_cpu.h"
#include "cpu/conv2d_cpu.h"
#include "cpu/elementwise_cpu.h"
#include "cpu/optim_cpu.h"
#include "cpu/isa.h"
#include "cpu/pool2d_cpu.h"
#include "cpu/winograd_cpu.h"

namespace py = pybind11;
using namespace fastconv;

namespace {

enum class DType { f32, f64 };

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// dtype equality by value (type and byte order), not by descriptor identity.
bool same_dtype(const py::dtype& a, const py::dtype& b) {
  return py::detail::npy_api::get().PyArray_EquivTypes_(a.ptr(), b.ptr());
}

DType float_dtype(const py::array& a, const char* op, const char* name) {
  if (same_dtype(a.dtype(), py::dtype::of<float>())) return DType::f32;
  if (same_dtype(a.dtype(), py::dtype::of<double>())) return DType::f64;
  throw TypeError(str_cat(op, ": ", name, " must be float32 or float64 on the CPU, got ",
                          std::string(py::str(a.dtype()))));
}

// Rank, C-contiguity, alignment and (for outputs) writability.
void check_array(const py::array& a, int ndim, const char* op, const char* name, bool output) {
  FC_CHECK(a.ndim() == ndim, op, ": ", name, " must be ", ndim, "-D, got shape ", shape_str(a));
  const int flags = py::detail::array_proxy(a.ptr())->flags;
  FC_CHECK((flags & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_) &&
               (flags & py::detail::npy_api::NPY_ARRAY_ALIGNED_),
           op, ": ", name, " must be C-contiguous and aligned (the Python layer copies when needed)");
  if (output)
    FC_CHECK(flags & py::detail::npy_api::NPY_ARRAY_WRITEABLE_, op, ": ", name,
             " (an output) must be writeable");
}

void check_same_dtype(const py::array& a, const py::array& b, const char* op, const char* an,
                      const char* bn) {
  FC_CHECK_TYPE(same_dtype(a.dtype(), b.dtype()), op, ": ", bn, " has dtype ", std::string(py::str(b.dtype())),
                " but ", an, " has dtype ", std::string(py::str(a.dtype())), "; they must match");
}

void check_shape(const py::array& a, const std::vector<int64_t>& want, const char* op,
                 const char* name) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(want.size());
  for (size_t i = 0; ok && i < want.size(); ++i) ok = a.shape(i) == want[i];
  if (ok) return;
  std::string w = "(";
  for (size_t i = 0; i < want.size(); ++i) w += (i ? ", " : "") + std::to_string(want[i]);
  throw ValueError(str_cat(op, ": ", name, " must have shape ", w, (want.size() == 1 ? ",)" : ")"),
                           ", got ", shape_str(a)));
}

// Outputs must not share memory with any input (the kernels read inputs while writing outputs).
void check_no_overlap(const py::array& out, const py::array& in, const char* op,
                      const char* out_name, const char* in_name) {
  auto lo1 = reinterpret_cast<uintptr_t>(out.data()), hi1 = lo1 + out.nbytes();
  auto lo2 = reinterpret_cast<uintptr_t>(in.data()), hi2 = lo2 + in.nbytes();
  FC_CHECK(out.nbytes() == 0 || in.nbytes() == 0 || hi1 <= lo2 || hi2 <= lo1, op, ": ", out_name,
           " overlaps ", in_name, " in memory");
}

template <class T>
T* ptr(py::array& a) { return static_cast<T*>(a.mutable_data()); }
template <class T>
const T* cptr(const py::array& a) { return static_cast<const T*>(a.data()); }

// ---- convolution ------------------------------------------------------------------------------

std::array<int64_t, 4> dims4(const py::array& a) {
  return {a.shape(0), a.shape(1), a.shape(2), a.shape(3)};
}

void conv2d_forward(py::array x, py::array w, py::object bias, py::array y, Pair stride, Quad pad,
                    Pair dil, int64_t groups) {
  const char* op = "conv2d";
  DType dt = float_dtype(x, op, "input");
  check_same_dtype(x, w, op, "input", "weight");
  check_same_dtype(x, y, op, "input", "out");
  check_array(x, 4, op, "input", false);
  check_array(w, 4, op, "weight", false);
  check_array(y, 4, op, "out", true);
  Conv2dParams p = make_conv_params(op, dims4(x), dims4(w), stride, pad, dil, groups);
  check_shape(y, {p.N, p.K, p.P, p.Q}, op, "out");
  check_no_overlap(y, x, op, "out", "input");
  check_no_overlap(y, w, op, "out", "weight");
  py::array b;
  if (!bias.is_none()) {
    FC_CHECK_TYPE(py::isinstance<py::array>(bias), op, ": bias must be an array or None");
    b = py::reinterpret_borrow<py::array>(bias);
    check_same_dtype(x, b, op, "input", "bias");
    check_array(b, 1, op, "bias", false);
    check_shape(b, {p.K}, op, "bias");
    check_no_overlap(y, b, op, "out", "bias");
  }
  const bool has_b = !bias.is_none();
  py::gil_scoped_release nogil;
  if (dt == DType::f32)
    cpu::conv2d_forward(p, cptr<float>(x), cptr<float>(w), has_b ? cptr<float>(b) : nullptr, ptr<float>(y));
  else
    cpu::conv2d_forward(p, cptr<double>(x), cptr<double>(w), has_b ? cptr<double>(b) : nullptr, ptr<double>(y));
}

void conv2d_backward_input(py::array dy, py::array w, py::array dx, Pair stride, Quad pad, Pair dil,
                           int64_t groups) {
  const char* op = "conv2d_backward_input";
  DType dt = float_dtype(dy, op, "grad_output");
  check_same_dtype(dy, w, op, "grad_output", "weight");
  check_same_dtype(dy, dx, op, "grad_output", "grad_input");
  check_array(dy, 4, op, "grad_output", false);
  check_array(w, 4, op, "weight", false);
  check_array(dx, 4, op, "grad_input", true);
  Conv2dParams p = make_conv_params(op, dims4(dx), dims4(w), stride, pad, dil, groups);
  check_shape(dy, {p.N, p.K, p.P, p.Q}, op, "grad_output");
  check_no_overlap(dx, dy, op, "grad_input", "grad_output");
  check_no_overlap(dx, w, op, "grad_input", "weight");
  py::gil_scoped_release nogil;
  if (dt == DType::f32)
    cpu::conv2d_backward_input(p, cptr<float>(dy), cptr<float>(w), ptr<float>(dx));
  else
    cpu::conv2d_backward_input(p, cptr<double>(dy), cptr<double>(w), ptr<double>(dx));
}

void conv2d_backward_weight(py::array dy, py::array x, py::array dw, Pair stride, Quad pad,
                            Pair dil, int64_t groups) {
  const char* op = "conv2d_backward_weight";
  DType dt = float_dtype(dy, op, "grad_output");
  check_same_dtype(dy, x, op, "grad_output", "input");
  check_same_dtype(dy, dw, op, "grad_output", "grad_weight");
  check_array(dy, 4, op, "grad_output", false);
  check_array(x, 4, op, "input", false);
  check_array(dw, 4, op, "grad_weight", true);
  Conv2dParams p = make_conv_params(op, dims4(x), dims4(dw), stride, pad, dil, groups);
  check_shape(dy, {p.N, p.K, p.P, p.Q}, op, "grad_output");
  check_no_overlap(dw, dy, op, "grad_weight", "grad_output");
  check_no_overlap(dw, x, op, "grad_weight", "input");
  py::gil_scoped_release nogil;
  if (dt == DType::f32)
    cpu::conv2d_backward_weight(p, cptr<float>(dy), cptr<float>(x), ptr<float>(dw));
  else
    cpu::conv2d_backward_weight(p, cptr<double>(dy), cptr<double>(x), ptr<double>(dw));
}

void conv2d_backward_bias(py::array dy, py::array db) {
  const char* op = "conv2d_backward_bias";
  DType dt = float_dtype(dy, op, "grad_output");
  check_same_dtype(dy, db, op, "grad_output", "grad_bias");
  check_array(dy, 4, op, "grad_output", false);
  check_array(db, 1, op, "grad_bias", true);
  Conv2dParams p;
  p.N = dy.shape(0), p.K = dy.shape(1), p.P = dy.shape(2), p.Q = dy.shape(3);
  check_shape(db, {p.K}, op, "grad_bias");
  check_no_overlap(db, dy, op, "grad_bias", "grad_output");
  py::gil_scoped_release nogil;
  if (dt == DType::f32)
    cpu::conv2d_backward_bias(p, cptr<float>(dy), ptr<float>(db));
  else
    cpu::conv2d_backward_bias(p, cptr<double>(dy), ptr<double>(db));
}

// ---- pooling ----------------------------------------------------------------------------------

void max_pool2d_forward(py::array x, py::array y, py::object indices, Pair kernel, Pair stride,
                        Quad pad, Pair dil, bool ceil_mode) {
  const char* op = "max_pool2d";
  DType dt = float_dtype(x, op, "input");
  check_same_dtype(x, y, op, "input", "out");
  check_array(x, 4, op, "input", false);
  check_array(y, 4, op, "out", true);
  Pool2dParams p = make_pool_params(op, dims4(x), kernel, stride, pad, dil, ceil_mode);
  const int64_t eh = first_empty_window(p.H, p.R, p.stride_h, p.pad_t, p.dil_h, p.P);
  const int64_t ew = first_empty_window(p.W, p.S, p.stride_w, p.pad_l, p.dil_w, p.Q);
  FC_CHECK(eh < 0 && ew < 0, op, ": with this dilation and padding the pooling window at output ",
           eh >= 0 ? "row " : "column ", eh >= 0 ? eh : ew,
           " covers no input element (only padding); reduce the padding or the dilation");
  check_shape(y, {p.N, p.C, p.P, p.Q}, op, "out");
  check_no_overlap(y, x, op, "out", "input");
  py::array idx;
  if (!indices.is_none()) {
    FC_CHECK_TYPE(py::isinstance<py::array>(indices), op, ": indices must be an array or None");
    idx = py::reinterpret_borrow<py::array>(indices);
    FC_CHECK_TYPE(same_dtype(idx.dtype(), py::dtype::of<int64_t>()), op, ": indices must be int64, got ",
                  std::string(py::str(idx.dtype())));
    check_array(idx, 4, op, "indices", true);
    check_shape(idx, {p.N, p.C, p.P, p.Q}, op, "indices");
    check_no_overlap(idx, x, op, "indices", "input");
    check_no_overlap(idx, y, op, "indices", "out");
  }
  int64_t* ip = indices.is_none() ? nullptr : ptr<int64_t>(idx);
  py::gil_scoped_release nogil;
  if (dt == DType::f32)
    cpu::max_pool2d_forward(p, cptr<float>(x), ptr<float>(y), ip);
  else
    cpu::max_pool2d_forward(p, cptr<double>(x), ptr<double>(y), ip);
}

void max_pool2d_backward(py::array dy, py::array indices, py::array dx) {
  const char* op = "max_pool2d_backward";
  DType dt = float_dtype(dy, op, "grad_output");
  check_same_dtype(dy, dx, op, "grad_output", "grad_input");
  check_array(dy, 4, op, "grad_output", false);
  check_array(indices, 4, op, "indices", false);
  check_array(dx, 4, op, "grad_input", true);
  FC_CHECK_TYPE(same_dtype(indices.dtype(), py::dtype::of<int64_t>()), op, ": indices must be int64, got ",
                std::string(py::str(indices.dtype())));
  Pool2dParams p;
  p.N = dx.shape(0), p.C = dx.shape(1), p.H = dx.shape(2), p.W = dx.shape(3);
  p.P = dy.shape(2), p.Q = dy.shape(3);
  check_shape(dy, {p.N, p.C, p.P, p.Q}, op, "grad_output");
  check_shape(indices, {p.N, p.C, p.P, p.Q}, op, "indices");
  check_no_overlap(dx, dy, op, "grad_input", "grad_output");
  check_no_overlap(dx, indices, op, "grad_input", "indices");
  int64_t bad;
  {
    py::gil_scoped_release nogil;
    if (dt == DType::f32)
      bad = cpu::max_pool2d_backward(p, cptr<float>(dy), cptr<int64_t>(indices), ptr<float>(dx));
    else
      bad = cpu::max_pool2d_backward(p, cptr<double>(dy), cptr<int64_t>(indices), ptr<double>(dx));
  }
  FC_CHECK(bad == 0, op, ": indices has ", bad, " values outside [0, H*W) = [0, ", p.H * p.W,
           "); pass the indices returned by max_pool2d for this input");
}

Pool2dParams avg_params(const char* op, const std::array<int64_t, 4>& xs, Pair kernel, Pair stride,
                        Quad pad, bool ceil_mode, bool count_include_pad, int64_t divisor_override) {
  Pool2dParams p = make_pool_params(op, xs, kernel, stride, pad, {1, 1}, ceil_mode);
  // Any non-zero value, negative included, as in torch; 0 = no override.
  FC_CHECK(divisor_override >= -kMaxGeometry && divisor_override <= kMaxGeometry, op,
           ": divisor_override must be at most ", kMaxGeometry, " in magnitude, got ",
           divisor_override);
  p.count_include_pad = count_include_pad;
  p.divisor_override = divisor_override;
  return p;
}

void avg_pool2d_forward(py::array x, py::array y, Pair kernel, Pair stride, Quad pad, bool ceil_mode,
                        bool count_include_pad, int64_t divisor_override) {
  const char* op = "avg_pool2d";
  DType dt = float_dtype(x, op, "input");
  check_same_dtype(x, y, op, "input", "out");
  check_array(x, 4, op, "input", false);
  check_array(y, 4, op, "out", true);
  Pool2dParams p = avg_params(op, dims4(x), kernel, stride, pad, ceil_mode, count_include_pad,
                              divisor_override);
  check_shape(y, {p.N, p.C, p.P, p.Q}, op, "out");
  check_no_overlap(y, x, op, "out", "input");
  py::gil_scoped_release nogil;
  if (dt == DType::f32)
    cpu::avg_pool2d_forward(p, cptr<float>(x), ptr<float>(y));
  else
    cpu::avg_pool2d_forward(p, cptr<double>(x), ptr<double>(y));
}

void avg_pool2d_backward(py::array dy, py::array dx, Pair kernel, Pair stride, Quad pad,
                         bool ceil_mode, bool count_include_pad, int64_t divisor_override) {
  const char* op = "avg_pool2d_backward";
  DType dt = float_dtype(dy, op, "grad_output");
  check_same_dtype(dy, dx, op, "grad_output", "grad_input");
  check_array(dy, 4, op, "grad_output", false);
  check_array(dx, 4, op, "grad_input", true);
  Pool2dParams p = avg_params(op, dims4(dx), kernel, stride, pad, ceil_mode, count_include_pad,
                              divisor_override);
  check_shape(dy, {p.N, p.C, p.P, p.Q}, op, "grad_output");
  check_no_overlap(dx, dy, op, "grad_input", "grad_output");
  py::gil_scoped_release nogil;
  if (dt == DType::f32)
    cpu::avg_pool2d_backward(p, cptr<float>(dy), ptr<float>(dx));
  else
    cpu::avg_pool2d_backward(p, cptr<double>(dy), ptr<double>(dx));
}

void adaptive_avg_pool2d_forward(py::array x, py::array y) {
  const char* op = "adaptive_avg_pool2d";
  DType dt = float_dtype(x, op, "input");
  check_same_dtype(x, y, op, "input", "out");
  check_array(x, 4, op, "input", false);
  check_array(y, 4, op, "out", true);
  Pool2dParams p;
  p.N = x.shape(0), p.C = x.shape(1), p.H = x.shape(2), p.W = x.shape(3);
  p.P = y.shape(2), p.Q = y.shape(3);
  FC_CHECK(p.P >= 1 && p.Q >= 1, op, ": output_size must be positive, got (", p.P, ", ", p.Q, ")");
  FC_CHECK(p.H >= 1 && p.W >= 1, op, ": input must have non-zero height and width, got shape ",
           shape_str(x));
  check_shape(y, {p.N, p.C, p.P, p.Q}, op, "out");
  check_no_overlap(y, x, op, "out", "input");
  py::gil_scoped_release nogil;
  if (dt == DType::f32)
    cpu::adaptive_avg_pool2d_forward(p, cptr<float>(x), ptr<float>(y));
  else
    cpu::adaptive_avg_pool2d_forward(p, cptr<double>(x), ptr<double>(y));
}

void adaptive_avg_pool2d_backward(py::array dy, py::array dx) {
  const char* op = "adaptive_avg_pool2d_backward";
  DType dt = float_dtype(dy, op, "grad_output");
  check_same_dtype(dy, dx, op, "grad_output", "grad_input");
  check_array(dy, 4, op, "grad_output", false);
  check_array(dx, 4, op, "grad_input", true);
  Pool2dParams p;
  p.N = dx.shape(0), p.C = dx.shape(1), p.H = dx.shape(2), p.W = dx.shape(3);
  p.P = dy.shape(2), p.Q = dy.shape(3);
  FC_CHECK(p.P >= 1 && p.Q >= 1 && p.H >= 1 && p.W >= 1, op,
           ": grad_output and grad_input must have non-zero height and width");
  check_shape(dy, {p.N, p.C, p.P, p.Q}, op, "grad_output");
  check_no_overlap(dx, dy, op, "grad_input", "grad_output");
  py::gil_scoped_release nogil;
  if (dt == DType::f32)
    cpu::adaptive_avg_pool2d_backward(p, cptr<float>(dy), ptr<float>(dx));
  else
    cpu::adaptive_avg_pool2d_backward(p, cptr<double>(dy), ptr<double>(dx));
}

// ---- per-channel affine (inference BatchNorm + ReLU / ReLU6) ---------------------------------

// lo / hi (a real number, or None for no bound) into p's clamp flags and bounds.
void clamp_bounds(const char* op, const py::object& lo, const py::object& hi,
                  ChannelAffineParams& p) {
  auto bound = [&](const py::object& v, const char* name, bool& flag, double& value) {
    if (v.is_none()) return;
    const std::string type = py::str(py::type::of(v).attr("__name__"));
    FC_CHECK_TYPE(PyNumber_Check(v.ptr()) && !py::isinstance<py::bool_>(v), op, ": ", name,
                  " must be a real number or None, got ", type);
    try {
      value = py::float_(v).cast<double>();
    } catch (const py::error_already_set&) {
      throw TypeError(str_cat(op, ": ", name, " must be a real number or None, got ", type));
    }
    FC_CHECK(value == value, op, ": ", name, " must not be NaN");
    flag = true;
  };
  bound(lo, "lo", p.clamp_lo, p.lo);
  bound(hi, "hi", p.clamp_hi, p.hi);
  FC_CHECK(!(p.clamp_lo && p.clamp_hi) || p.lo <= p.hi, op, ": lo must not exceed hi, got lo=",
           p.lo, " and hi=", p.hi);
}

// out = clamp(x * scale[c] + shift[c], lo, hi) with c the axis-1 index; lo / hi None = no bound.
// out may be x itself (in place) but must not overlap it otherwise, nor scale or shift.
void channel_affine(py::array x, py::array scale, py::array shift, py::array out, py::object lo,
                    py::object hi) {
  const char* op = "channel_affine";
  DType dt = float_dtype(x, op, "x");
  check_same_dtype(x, scale, op, "x", "scale");
  check_same_dtype(x, shift, op, "x", "shift");
  check_same_dtype(x, out, op, "x", "out");
  FC_CHECK(x.ndim() >= 2, op, ": x must be at least 2-D (N, C, ...), got shape ", shape_str(x));
  const int nd = static_cast<int>(x.ndim());
  check_array(x, nd, op, "x", false);
  check_array(scale, 1, op, "scale", false);
  check_array(shift, 1, op, "shift", false);
  check_array(out, nd, op, "out", true);
  ChannelAffineParams p;
  p.N = x.shape(0), p.C = x.shape(1), p.L = 1;
  std::vector<int64_t> xs;
  for (int i = 0; i < nd; ++i) xs.push_back(x.shape(i));
  for (int i = 2; i < nd; ++i) p.L *= x.shape(i);
  check_shape(scale, {p.C}, op, "scale");
  check_shape(shift, {p.C}, op, "shift");
  check_shape(out, xs, op, "out");
  clamp_bounds(op, lo, hi, p);
  if (out.data() != x.data()) check_no_overlap(out, x, op, "out", "x");  // equal: in place
  check_no_overlap(out, scale, op, "out", "scale");
  check_no_overlap(out, shift, op, "out", "shift");
  py::gil_scoped_release nogil;
  if (dt == DType::f32)
    cpu::channel_affine(p, cptr<float>(x), cptr<float>(scale), cptr<float>(shift), ptr<float>(out));
  else
    cpu::channel_affine(p, cptr<double>(x), cptr<double>(scale), cptr<double>(shift),
                        ptr<double>(out));
}

// grad_input = grad_output where lo < out < hi (the bounds that are not None), else 0: the
// gradient of out = clamp(x, lo, hi) taken from its output. All three arrays have one shape.
void clamp_backward(py::array dy, py::array y, py::array dx, py::object lo, py::object hi) {
  const char* op = "clamp_backward";
  const DType dt = float_dtype(y, op, "out");
  check_same_dtype(y, dy, op, "out", "grad_output");
  check_same_dtype(y, dx, op, "out", "grad_input");
  const int nd = static_cast<int>(y.ndim());
  check_array(y, nd, op, "out", false);
  check_array(dy, nd, op, "grad_output", false);
  check_array(dx, nd, op, "grad_input", true);
  std::vector<int64_t> shape;
  for (int i = 0; i < nd; ++i) shape.push_back(y.shape(i));
  check_shape(dy, shape, op, "grad_output");
  check_shape(dx, shape, op, "grad_input");
  check_no_overlap(dx, y, op, "grad_input", "out");
  check_no_overlap(dx, dy, op, "grad_input", "grad_output");
  ChannelAffineParams p;
  p.N = p.C = 1;
  p.L = y.size();
  clamp_bounds(op, lo, hi, p);
  py::gil_scoped_release nogil;
  if (dt == DType::f32)
    cpu::clamp_backward(p, cptr<float>(dy), cptr<float>(y), ptr<float>(dx));
  else
    cpu::clamp_backward(p, cptr<double>(dy), cptr<double>(y), ptr<double>(dx));
}

// ---- training-mode batch normalisation (cpu/batch_norm_cpu.h) ---------------------------------

// x (N, C, ...) as BatchNormParams (N, C, L), after the rank / layout checks; `others` must have
// x's shape (the same N, C, L), per-channel arrays shape (C,).
BatchNormParams bn_params(const py::array& x, const char* op, const char* name) {
  FC_CHECK(x.ndim() >= 2, op, ": ", name, " must be at least 2-D (N, C, ...), got shape ",
           shape_str(x));
  check_array(x, static_cast<int>(x.ndim()), op, name, false);
  BatchNormParams p;
  p.N = x.shape(0), p.C = x.shape(1), p.L = 1;
  for (py::ssize_t i = 2; i < x.ndim(); ++i) p.L *= x.shape(i);
  return p;
}
std::vector<int64_t> shape_of(const py::array& a) {
  std::vector<int64_t> s;
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s.push_back(a.shape(i));
  return s;
}
void check_f64_channels(py::array& a, int64_t C, const char* op, const char* name, bool output) {
  FC_CHECK_TYPE(same_dtype(a.dtype(), py::dtype::of<double>()), op, ": ", name,
                " must be float64, got ", std::string(py::str(a.dtype())));
  check_array(a, 1, op, name, output);
  check_shape(a, {C}, op, name);
}
void check_channels(const py::array& x, py::array& a, int64_t C, const char* op, const char* name) {
  check_same_dtype(x, a, op, "x", name);
  check_array(a, 1, op, name, false);
  check_shape(a, {C}, op, name);
}

// mean (C,) and biased var (C,), float64, of x over every axis but 1.
void batch_norm_stats(py::array x, py::array mean, py::array var) {
  const char* op = "batch_norm_stats";
  const DType dt = float_dtype(x, op, "x");
  const BatchNormParams p = bn_params(x, op, "x");
  FC_CHECK(p.N * p.L >= 1, op, ": x must have at least one value per channel, got shape ",
           shape_str(x));
  check_f64_channels(mean, p.C, op, "mean", true);
  check_f64_channels(var, p.C, op, "var", true);
  check_no_overlap(mean, x, op, "mean", "x");
  check_no_overlap(var, x, op, "var", "x");
  check_no_overlap(var, mean, op, "var", "mean");
  py::gil_scoped_release nogil;
  if (dt == DType::f32)
    cpu::batch_norm_stats(p, cptr<float>(x), ptr<double>(mean), ptr<double>(var));
  else
    cpu::batch_norm_stats(p, cptr<double>(x), ptr<double>(mean), ptr<double>(var));
}

// out = (x - mean[c]) * scale[c] + shift[c]; mean, scale, shift (C,) in x's dtype.
void batch_norm_forward(py::array x, py::array mean, py::array scale, py::array shift,
                        py::array out) {
  const char* op = "batch_norm_forward";
  const DType dt = float_dtype(x, op, "x");
  const BatchNormParams p = bn_params(x, op, "x");
  check_channels(x, mean, p.C, op, "mean");
  check_channels(x, scale, p.C, op, "scale");
  check_channels(x, shift, p.C, op, "shift");
  check_same_dtype(x, out, op, "x", "out");
  check_array(out, static_cast<int>(x.ndim()), op, "out", true);
  check_shape(out, shape_of(x), op, "out");
  for (auto [a, name] : {std::pair<py::array*, const char*>{&x, "x"}, {&mean, "mean"},
                         {&scale, "scale"}, {&shift, "shift"}})
    check_no_overlap(out, *a, op, "out", name);
  py::gil_scoped_release nogil;
  if (dt == DType::f32)
    cpu::batch_norm_forward(p, cptr<float>(x), cptr<float>(mean), cptr<float>(scale),
                            cptr<float>(shift), ptr<float>(out));
  else
    cpu::batch_norm_forward(p, cptr<double>(x), cptr<double>(mean), cptr<double>(scale),
                            cptr<double>(shift), ptr<double>(out));
}

// sum_g[c] = sum of g, sum_gxc[c] = sum of g * (x - mean[c]) over every axis but 1; float64.
void batch_norm_backward_reduce(py::array g, py::array x, py::array mean, py::array sum_g,
                                py::array sum_gxc) {
  const char* op = "batch_norm_backward_reduce";
  const DType dt = float_dtype(x, op, "x");
  check_same_dtype(x, g, op, "x", "grad_output");
  const BatchNormParams p = bn_params(x, op, "x");
  check_array(g, static_cast<int>(x.ndim()), op, "grad_output", false);
  check_shape(g, shape_of(x), op, "grad_output");
  check_f64_channels(mean, p.C, op, "mean", false);
  check_f64_channels(sum_g, p.C, op, "sum_g", true);
  check_f64_channels(sum_gxc, p.C, op, "sum_gxc", true);
  for (auto [o, name] :
       {std::pair<py::array*, const char*>{&sum_g, "sum_g"}, {&sum_gxc, "sum_gxc"}}) {
    check_no_overlap(*o, g, op, name, "grad_output");
    check_no_overlap(*o, x, op, name, "x");
    check_no_overlap(*o, mean, op, name, "mean");
  }
  check_no_overlap(sum_g, sum_gxc, op, "sum_g", "sum_gxc");
  py::gil_scoped_release nogil;
  if (dt == DType::f32)
    cpu::batch_norm_backward_reduce(p, cptr<float>(g), cptr<float>(x), cptr<double>(mean),
                                    ptr<double>(sum_g), ptr<double>(sum_gxc));
  else
    cpu::batch_norm_backward_reduce(p, cptr<double>(g), cptr<double>(x), cptr<double>(mean),
                                    ptr<double>(sum_g), ptr<double>(sum_gxc));
}

// out = g * a[c] + (x - mean[c]) * b[c] + e[c]; mean, a, b, e (C,) in x's dtype.
void batch_norm_backward_input(py::array g, py::array x, py::array mean, py::array a,
                               py::array b, py::array e, py::array out) {
  const char* op = "batch_norm_backward_input";
  const DType dt = float_dtype(x, op, "x");
  check_same_dtype(x, g, op, "x", "grad_output");
  const BatchNormParams p = bn_params(x, op, "x");
  check_array(g, static_cast<int>(x.ndim()), op, "grad_output", false);
  check_shape(g, shape_of(x), op, "grad_output");
  check_channels(x, mean, p.C, op, "mean");
  check_channels(x, a, p.C, op, "a");
  check_channels(x, b, p.C, op, "b");
  check_channels(x, e, p.C, op, "e");
  check_same_dtype(x, out, op, "x", "out");
  check_array(out, static_cast<int>(x.ndim()), op, "out", true);
  check_shape(out, shape_of(x), op, "out");
  for (auto [in, name] : {std::pair<py::array*, const char*>{&g, "grad_output"}, {&x, "x"},
                          {&mean, "mean"}, {&a, "a"}, {&b, "b"}, {&e, "e"}})
    check_no_overlap(out, *in, op, "out", name);
  py::gil_scoped_release nogil;
  if (dt == DType::f32)
    cpu::batch_norm_backward_input(p, cptr<float>(g), cptr<float>(x), cptr<float>(mean),
                                   cptr<float>(a), cptr<float>(b), cptr<float>(e), ptr<float>(out));
  else
    cpu::batch_norm_backward_input(p, cptr<double>(g), cptr<double>(x), cptr<double>(mean),
                                   cptr<double>(a), cptr<double>(b), cptr<double>(e),
                                   ptr<double>(out));
}

// ---- optimizer steps (cpu/optim_cpu.h) ---------------------------------------------------------

// The parameter and its gradient / state arrays: one dtype, C-contiguous, the parameter's shape,
// no two overlapping; the parameter and the state writeable. Returns the dtype.
using NamedArrays = std::vector<std::pair<py::array*, const char*>>;

DType optim_arrays(const char* op, py::array& param, const NamedArrays& others) {
  const DType dt = float_dtype(param, op, "param");
  const int nd = static_cast<int>(param.ndim());
  check_array(param, nd, op, "param", true);
  const std::vector<int64_t> shape = shape_of(param);
  for (size_t i = 0; i < others.size(); ++i) {
    py::array& a = *others[i].first;
    const char* name = others[i].second;
    check_same_dtype(param, a, op, "param", name);
    check_array(a, nd, op, name, std::string(name) != "grad");
    check_shape(a, shape, op, name);
    check_no_overlap(param, a, op, "param", name);
    for (size_t j = 0; j < i; ++j)
      check_no_overlap(a, *others[j].first, op, name, others[j].second);
  }
  return dt;
}

void sgd_step(py::array param, py::array grad, py::object buf_obj, double lr, double momentum,
              double dampening, double weight_decay, bool nesterov, bool maximize, bool first) {
  const char* op = "sgd_step";
  SgdParams p;
  p.n = param.size(), p.lr = lr, p.momentum = momentum, p.dampening = dampening;
  p.weight_decay = weight_decay, p.nesterov = nesterov, p.maximize = maximize, p.first = first;
  NamedArrays others{{&grad, "grad"}};
  py::array buf;
  if (momentum != 0) {
    FC_CHECK_TYPE(py::isinstance<py::array>(buf_obj), op,
                  ": momentum_buffer must be an array when momentum != 0");
    buf = py::reinterpret_borrow<py::array>(buf_obj);
    others.push_back({&buf, "momentum_buffer"});
  }
  const DType dt = optim_arrays(op, param, others);
  py::gil_scoped_release nogil;
  if (dt == DType::f32)
    cpu::sgd_step(p, ptr<float>(param), cptr<float>(grad),
                  momentum != 0 ? ptr<float>(buf) : nullptr);
  else
    cpu::sgd_step(p, ptr<double>(param), cptr<double>(grad),
                  momentum != 0 ? ptr<double>(buf) : nullptr);
}

void adam_step(py::array param, py::array grad, py::array m, py::array v, py::object vmax_obj,
               double lr, double beta1, double beta2, double eps, double weight_decay,
               double step_size, double bias2_sqrt, bool decoupled, bool amsgrad, bool maximize) {
  const char* op = "adam_step";
  AdamParams p;
  p.n = param.size(), p.lr = lr, p.beta1 = beta1, p.beta2 = beta2, p.eps = eps;
  p.weight_decay = weight_decay, p.step_size = step_size, p.bias2_sqrt = bias2_sqrt;
  p.decoupled = decoupled, p.amsgrad = amsgrad, p.maximize = maximize;
  NamedArrays others{{&grad, "grad"}, {&m, "exp_avg"}, {&v, "exp_avg_sq"}};
  py::array vmax;
  if (amsgrad) {
    FC_CHECK_TYPE(py::isinstance<py::array>(vmax_obj), op,
                  ": max_exp_avg_sq must be an array with amsgrad");
    vmax = py::reinterpret_borrow<py::array>(vmax_obj);
    others.push_back({&vmax, "max_exp_avg_sq"});
  }
  const DType dt = optim_arrays(op, param, others);
  py::gil_scoped_release nogil;
  if (dt == DType::f32)
    cpu::adam_step(p, ptr<float>(param), cptr<float>(grad), ptr<float>(m), ptr<float>(v),
                   amsgrad ? ptr<float>(vmax) : nullptr);
  else
    cpu::adam_step(p, ptr<double>(param), cptr<double>(grad), ptr<double>(m), ptr<double>(v),
                   amsgrad ? ptr<double>(vmax) : nullptr);
}

// ---- element-wise helpers (cpu/elementwise_cpu.h) ----------------------------------------------

// The arrays of an element-wise op: one float dtype and shape, C-contiguous; out writeable and
// either equal to an input or not overlapping it.
DType elementwise_arrays(const char* op, py::array& out, const NamedArrays& ins) {
  const DType dt = float_dtype(out, op, "out");
  const int nd = static_cast<int>(out.ndim());
  check_array(out, nd, op, "out", true);
  for (const auto& [a, name] : ins) {
    check_same_dtype(out, *a, op, "out", name);
    check_array(*a, nd, op, name, false);
    check_shape(*a, shape_of(out), op, name);
    if (a->data() != out.data()) check_no_overlap(out, *a, op, "out", name);
  }
  return dt;
}

void add(py::array a, py::array b, py::array out) {
  const DType dt = elementwise_arrays("add", out, {{&a, "a"}, {&b, "b"}});
  py::gil_scoped_release nogil;
  if (dt == DType::f32)
    cpu::add(out.size(), cptr<float>(a), cptr<float>(b), ptr<float>(out));
  else
    cpu::add(out.size(), cptr<double>(a), cptr<double>(b), ptr<double>(out));
}

void copy_array(py::array src, py::array out) {
  const DType dt = elementwise_arrays("copy", out, {{&src, "src"}});
  FC_CHECK(src.data() != out.data() || out.size() == 0, "copy: out is src");
  py::gil_scoped_release nogil;
  if (dt == DType::f32)
    cpu::copy(out.size(), cptr<float>(src), ptr<float>(out));
  else
    cpu::copy(out.size(), cptr<double>(src), ptr<double>(out));
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastconv CPU kernels (low level: validated arrays in, caller-allocated outputs)";
  py::register_local_exception<ValueError>(m, "_ValueError", PyExc_ValueError);
  py::register_local_exception<TypeError>(m, "_TypeError", PyExc_TypeError);

  m.def("conv2d_forward", &conv2d_forward, py::arg("input"), py::arg("weight"), py::arg("bias"),
        py::arg("out"), py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"),
        "y = conv2d(input, weight) + bias into out (N, K, P, Q); padding is (top, bottom, left, right)");
  m.def("conv2d_backward_input", &conv2d_backward_input, py::arg("grad_output"), py::arg("weight"),
        py::arg("grad_input"), py::arg("stride"), py::arg("padding"), py::arg("dilation"),
        py::arg("groups"), "grad_input (N, C, H, W) = d conv2d / d input");
  m.def("conv2d_backward_weight", &conv2d_backward_weight, py::arg("grad_output"), py::arg("input"),
        py::arg("grad_weight"), py::arg("stride"), py::arg("padding"), py::arg("dilation"),
        py::arg("groups"), "grad_weight (K, C/groups, R, S) = d conv2d / d weight");
  m.def("conv2d_backward_bias", &conv2d_backward_bias, py::arg("grad_output"), py::arg("grad_bias"),
        "grad_bias (K,) = sum of grad_output over N, P, Q");
  m.def("max_pool2d_forward", &max_pool2d_forward, py::arg("input"), py::arg("out"),
        py::arg("indices"), py::arg("kernel_size"), py::arg("stride"), py::arg("padding"),
        py::arg("dilation"), py::arg("ceil_mode"));
  m.def("max_pool2d_backward", &max_pool2d_backward, py::arg("grad_output"), py::arg("indices"),
        py::arg("grad_input"));
  m.def("avg_pool2d_forward", &avg_pool2d_forward, py::arg("input"), py::arg("out"),
        py::arg("kernel_size"), py::arg("stride"), py::arg("padding"), py::arg("ceil_mode"),
        py::arg("count_include_pad"), py::arg("divisor_override"));
  m.def("avg_pool2d_backward", &avg_pool2d_backward, py::arg("grad_output"), py::arg("grad_input"),
        py::arg("kernel_size"), py::arg("stride"), py::arg("padding"), py::arg("ceil_mode"),
        py::arg("count_include_pad"), py::arg("divisor_override"));
  m.def("adaptive_avg_pool2d_forward", &adaptive_avg_pool2d_forward, py::arg("input"), py::arg("out"));
  m.def("adaptive_avg_pool2d_backward", &adaptive_avg_pool2d_backward, py::arg("grad_output"),
        py::arg("grad_input"));
  m.def("channel_affine", &channel_affine, py::arg("x"), py::arg("scale"), py::arg("shift"),
        py::arg("out"), py::arg("lo") = py::none(), py::arg("hi") = py::none(),
        "out = clamp(x * scale[c] + shift[c], lo, hi) over axis 1 of x (N, C, ...); lo / hi None: "
        "no bound; NaN propagates; out may be x (in place)");

  m.def("clamp_backward", &clamp_backward, py::arg("grad_output"), py::arg("out"),
        py::arg("grad_input"), py::arg("lo") = py::none(), py::arg("hi") = py::none(),
        "grad_input = grad_output where lo < out < hi (bounds that are not None), else 0");
  m.def("add", &add, py::arg("a"), py::arg("b"), py::arg("out"),
        "out = a + b (one shape and dtype; out may be a or b)");
  m.def("copy", &copy_array, py::arg("src"), py::arg("out"),
        "out[...] = src (one shape and dtype)");
  m.def("sgd_step", &sgd_step, py::arg("param"), py::arg("grad"), py::arg("momentum_buffer"),
        py::arg("lr"), py::arg("momentum"), py::arg("dampening"), py::arg("weight_decay"),
        py::arg("nesterov"), py::arg("maximize"), py::arg("first"),
        "one torch.optim.SGD step in place, as fastconv/optim/sgd.py computes it");
  m.def("adam_step", &adam_step, py::arg("param"), py::arg("grad"), py::arg("exp_avg"),
        py::arg("exp_avg_sq"), py::arg("max_exp_avg_sq"), py::arg("lr"), py::arg("beta1"),
        py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"), py::arg("step_size"),
        py::arg("bias2_sqrt"), py::arg("decoupled"), py::arg("amsgrad"), py::arg("maximize"),
        "one torch.optim.Adam / AdamW step in place, as fastconv/optim/adam.py computes it");
  m.def("batch_norm_stats", &batch_norm_stats, py::arg("x"), py::arg("mean"), py::arg("var"),
        "mean, var (biased), float64 (C,), of x (N, C, ...) over every axis but 1");
  m.def("batch_norm_forward", &batch_norm_forward, py::arg("x"), py::arg("mean"), py::arg("scale"),
        py::arg("shift"), py::arg("out"), "out = (x - mean[c]) * scale[c] + shift[c]");
  m.def("batch_norm_backward_reduce", &batch_norm_backward_reduce, py::arg("grad_output"),
        py::arg("x"), py::arg("mean"), py::arg("sum_g"), py::arg("sum_gxc"),
        "sum_g = sum grad_output, sum_gxc = sum grad_output * (x - mean[c]), float64 (C,)");
  m.def("batch_norm_backward_input", &batch_norm_backward_input, py::arg("grad_output"),
        py::arg("x"), py::arg("mean"), py::arg("a"), py::arg("b"), py::arg("e"), py::arg("out"),
        "out = grad_output * a[c] + (x - mean[c]) * b[c] + e[c]");

  m.def("output_size", &output_size, py::arg("size"), py::arg("kernel"), py::arg("stride"),
        py::arg("pad_lo"), py::arg("pad_hi"), py::arg("dilation"), py::arg("ceil_mode"),
        "THE output-size helper (csrc/common/output_size.h)");
  m.def("num_threads", &num_threads);
  m.def("set_num_threads", [](int n) {
    FC_CHECK(n >= 1, "set_num_threads: n must be >= 1, got ", n);
    set_num_threads(n);
  }, py::arg("n"));
  m.def("set_schedule_trace", &set_schedule_trace,
        "schedule tracing on/off (common/parallel.h; bench/run_schedule.py); on clears the record");
  m.def("take_schedule_trace", [] {
    py::list out;
    for (const TracedRegion& r : take_schedule_trace())
      out.append(py::make_tuple(r.threads, r.start_ns, r.end_ns, r.setup_ns, r.chunk_ns));
    return out;
  }, "the traced regions since the last take: [(threads, start_ns, end_ns, setup_ns, [chunk_ns, ...])]");
  m.def("small_op_ns", &small_op_ns, "threshold of the small-op rules (common/parallel.h), ns");
  m.def("set_small_op_ns", [](int64_t ns) {
    FC_CHECK(ns >= 0, "set_small_op_ns: ns must be >= 0, got ", ns);
    set_small_op_ns(ns);
  }, py::arg("ns"));
  m.def("thread_pool", [] { return std::string(pool_mode_name(pool_mode())); },
        "where parallel regions run: 'auto', 'fastconv' or 'openmp' (common/parallel.h)");
  m.def("set_thread_pool", [](const std::string& name) {
    PoolMode mode;
    FC_CHECK(parse_pool_mode(name, &mode),
             "set_thread_pool: expected 'auto', 'fastconv' or 'openmp', got '", name, "'");
    set_pool_mode(mode);
  }, py::arg("name"));
  m.def("thread_pool_in_use", &pool_in_use,
        "path of the OpenMP runtime a region started now on this thread runs on, '' for fastconv's own pool");
  m.def("_pool_wake_latency_ns", &pool_wake_latency_ns,
        "mean time from waking a sleeping pool worker to it running, as the pool measured it");
  m.def("_op_plan", [](double work_ns) {
    OpScope scope(work_ns);
    return py::make_tuple(num_threads(), op_is_small());
  }, py::arg("work_ns"), "(threads, small) the small-op rules give an op of work_ns (for tests)");
  m.def("isa", [] { return cpu::isa_name(cpu::active_isa()); }, "instruction set the kernels use now");
  m.def("best_isa", [] { return cpu::isa_name(cpu::best_isa()); });
  m.def("set_isa", &cpu::set_isa, py::arg("name"),
        "use 'baseline', 'avx2' or 'avx512' kernels (tests run every variant this CPU supports)");
  m.def("conv_algo", [] { return cpu::conv_algo_name(cpu::conv_algo()); },
        "algorithm of dense 3x3 stride-1 convolutions: 'auto', 'winograd', 'winograd4' or 'gemm'");
  m.def("set_conv_algo", &cpu::set_conv_algo, py::arg("name"),
        "'auto' (measured heuristic), 'winograd' (F(2x2,3x3) whenever the shape allows), "
        "'winograd4' (F(4x4,3x3): faster, float32 error beyond the tolerance table from ~64 "
        "channels) or 'gemm' (never Winograd); FASTCONV_CONV_ALGO sets the initial value");
  m.def("strided_dgrad", [] { return cpu::strided_dgrad_name(cpu::strided_dgrad()); },
        "algorithm of the input gradient of dense convolutions with stride > 1: 'auto', 'phase' "
        "or 'col2im'");
  m.def("set_strided_dgrad", &cpu::set_strided_dgrad, py::arg("name"),
        "'auto' (measured rule on the shape), 'phase' (stride-phase decomposition) or 'col2im' "
        "(column buffer + scatter-add); FASTCONV_STRIDED_DGRAD sets the initial value");
}
