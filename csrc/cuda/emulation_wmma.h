// nvcuda::wmma on the CPU emulation (included by cuda/emulation.h; kernels include <mma.h> only
// under nvcc: `#if !FC_EMULATION #include <mma.h> #endif`). Learned from the team's sketch in
// shared/notes/cuda-emulation/cuda_emu_wmma.h.
//
// A fragment holds rows*cols/32 elements per lane. CUDA leaves the mapping of elements to lanes
// unspecified; here element e of lane l is the logical (row-major) tile element l*num_elements+e,
// whatever the memory layout, so element-wise epilogues on frag.x[] (scale, ReLU) are portable and
// anything that assumes a mapping is not. load/store/mma are warp collectives over the full warp
// (all 32 lanes must call them, with the same arguments, as in CUDA): they begin with a warp
// barrier, which also orders the lanes' earlier shared-memory writes before the loads. Loads and
// stores go through the pointer's checked element access (gptr bounds, shared-memory race and
// initialisation checks), so a tile read out of range or before it is written is reported.
// mma_sync multiplies in float with float accumulation (products of half, bf16 or tf32 inputs are
// exact in float; the GPU's accumulation order differs, so compare with tolerances).
//
// Shapes: any M, N, K whose tiles divide by 32 elements (m16n16k16, m32n8k16, m8n32k16); inputs
// __half or __nv_bfloat16, accumulators float or __half.
// TF32 (as CUDA's sm_80+ API): fragments of element type precision::tf32 hold float storage
// (storage_element_type), m16n16k8 only, loaded from float pointers; __float_to_tf32 rounds a
// float to nearest, ties away from zero, to 10 explicit mantissa bits (cvt.rna.tf32.f32).
// load_matrix_sync does not convert (as on the GPU, whose tensor cores ignore the low 13 bits),
// so mma_sync throws on a tf32 operand with any of those bits set: a kernel that forgets
// __float_to_tf32 fails under the emulation instead of truncating silently on the GPU.
// Not emulated: double / integer fragments, sub-byte types.
#pragma once

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

namespace precision {
struct tf32;  // incomplete, as in CUDA: a tag, never an object
}

// float -> the nearest TF32 value (ties away from zero), kept in a float: low 13 mantissa bits 0.
inline float __float_to_tf32(float in) {
  uint32_t u;
  std::memcpy(&u, &in, 4);
  if ((u & 0x7f800000u) == 0x7f800000u) {  // Inf stays, NaN stays NaN (quiet)
    if (u & 0x007fffffu) u = (u & ~0x1fffu) | 0x00400000u;
  } else {
    u = (u + 0x1000u) & ~0x1fffu;  // magnitude + half a TF32 ulp, truncated: ties away
  }
  float out;
  std::memcpy(&out, &u, 4);
  return out;
}

namespace detail {
template <class T> struct storage { using type = T; };
template <> struct storage<precision::tf32> { using type = float; };

inline bool is_tf32(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return (u & 0x1fffu) == 0;
}

template <class Use, int M, int N, int K> struct dims;
template <int M, int N, int K> struct dims<matrix_a, M, N, K> { static constexpr int R = M, C = K; };
template <int M, int N, int K> struct dims<matrix_b, M, N, K> { static constexpr int R = K, C = N; };
template <int M, int N, int K> struct dims<accumulator, M, N, K> { static constexpr int R = M, C = N; };

inline void warp_entry() { ::fastconv::emu::warp_barrier(0xffffffffu); }
}  // namespace detail

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static constexpr int rows = detail::dims<Use, M, N, K>::R, cols = detail::dims<Use, M, N, K>::C;
  static_assert(rows * cols % 32 == 0, "wmma fragment: tile must hold a multiple of 32 elements");
  static_assert(!std::is_same<Use, accumulator>::value || std::is_void<Layout>::value,
                "wmma accumulator fragments take no layout");
  static_assert(std::is_same<Use, accumulator>::value || std::is_same<Layout, row_major>::value ||
                    std::is_same<Layout, col_major>::value,
                "wmma matrix_a / matrix_b fragments need row_major or col_major");
  static_assert(!std::is_same<T, precision::tf32>::value || (M == 16 && N == 16 && K == 8),
                "wmma: tf32 fragments are m16n16k8 only");
  static_assert(K != 8 || !std::is_same<Use, accumulator>::value || std::is_same<T, float>::value,
                "wmma: m16n16k8 accumulators are float");
  using element_type = T;
  using storage_element_type = typename detail::storage<T>::type;
  static constexpr int num_elements = rows * cols / 32;
  storage_element_type x[num_elements];
  static int row_of(int lane, int e) { return (lane * num_elements + e) / cols; }
  static int col_of(int lane, int e) { return (lane * num_elements + e) % cols; }
};

template <class U, int M, int N, int K, class T, class L, class V>
inline void fill_fragment(fragment<U, M, N, K, T, L>& f, const V& v) {
  using S = typename fragment<U, M, N, K, T, L>::storage_element_type;
  for (int e = 0; e < f.num_elements; ++e) f.x[e] = S(v);
}

namespace detail {
// Element (r, c) of a tile at p with leading dimension ldm: p[r*ldm + c] row-major, else p[c*ldm + r].
template <class Fr, class P>
inline void load(Fr& f, const P& p, unsigned ldm, bool row_major_mem) {
  using T = typename Fr::storage_element_type;
  warp_entry();
  const int lane = int(::fastconv::emu::lane_id());
  for (int e = 0; e < Fr::num_elements; ++e) {
    const int64_t r = Fr::row_of(lane, e), c = Fr::col_of(lane, e);
    const T v = ::fastconv::emu::as_pointer(p)[row_major_mem ? r * ldm + c : c * ldm + r];
    f.x[e] = v;
  }
}
}  // namespace detail

// matrix_a / matrix_b: the layout is the fragment's. P: a gptr, a shared pointer (&tile[0][0],
// a row tile[i] as the pointer it decays to in CUDA, dynamic shared memory) or a plain pointer.
template <class U, int M, int N, int K, class T, class L, class P>
inline void load_matrix_sync(fragment<U, M, N, K, T, L>& f, const P& p, unsigned ldm) {
  static_assert(!std::is_same<U, accumulator>::value, "wmma: an accumulator load needs a layout_t");
  detail::load(f, p, ldm, std::is_same<L, row_major>::value);
}
template <int M, int N, int K, class T, class P>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const P& p, unsigned ldm,
                             layout_t layout) {
  detail::load(f, p, ldm, layout == mem_row_major);
}

template <class P, int M, int N, int K, class T>
inline void store_matrix_sync(const P& p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm,
                              layout_t layout) {
  using Fr = fragment<accumulator, M, N, K, T>;
  detail::warp_entry();
  const int lane = int(::fastconv::emu::lane_id());
  for (int e = 0; e < Fr::num_elements; ++e) {
    const int64_t r = Fr::row_of(lane, e), c = Fr::col_of(lane, e);
    ::fastconv::emu::as_pointer(p)[layout == mem_row_major ? r * ldm + c : c * ldm + r] = f.x[e];
  }
}

// d = a @ b + c for the warp's tiles: lanes publish their elements of A, B and C, meet, and each
// computes its own elements of D in float.
template <int M, int N, int K, class TA, class LA, class TB, class LB, class TC>
inline void mma_sync(fragment<accumulator, M, N, K, TC>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TB, LB>& b,
                     const fragment<accumulator, M, N, K, TC>& c, bool /*satf*/ = false) {
  static_assert(std::is_same<TA, TB>::value, "wmma mma_sync: A and B need the same element type");
  constexpr int na = M * K / 32, nb = K * N / 32, nc = M * N / 32;
  ::fastconv::emu::Warp& w = ::fastconv::emu::my_warp();
  detail::warp_entry();
  const int lane = int(::fastconv::emu::lane_id());
  if (w.big.size() < sizeof(float) * (M * K + K * N + M * N))
    w.big.resize(sizeof(float) * (M * K + K * N + M * N));
  float* A = reinterpret_cast<float*>(w.big.data());
  float* B = A + M * K;
  float* C = B + K * N;
  if constexpr (std::is_same<TA, precision::tf32>::value) {
    for (int e = 0; e < na; ++e)
      if (!detail::is_tf32(a.x[e]))
        throw ::fastconv::emu::emu_error("wmma mma_sync: tf32 matrix_a element with low mantissa "
                                         "bits set (round it with __float_to_tf32)");
    for (int e = 0; e < nb; ++e)
      if (!detail::is_tf32(b.x[e]))
        throw ::fastconv::emu::emu_error("wmma mma_sync: tf32 matrix_b element with low mantissa "
                                         "bits set (round it with __float_to_tf32)");
  }
  for (int e = 0; e < na; ++e) A[lane * na + e] = float(a.x[e]);
  for (int e = 0; e < nb; ++e) B[lane * nb + e] = float(b.x[e]);
  for (int e = 0; e < nc; ++e) C[lane * nc + e] = float(c.x[e]);
  ::fastconv::emu::warp_barrier(0xffffffffu);
  TC out[nc];
  for (int e = 0; e < nc; ++e) {
    const int idx = lane * nc + e, r = idx / N, col = idx % N;
    float acc = C[idx];
    for (int k = 0; k < K; ++k) acc += A[r * K + k] * B[k * N + col];
    out[e] = TC(acc);
  }
  ::fastconv::emu::warp_barrier(0xffffffffu);  // everyone has read the exchange buffer
  for (int e = 0; e < nc; ++e) d.x[e] = out[e];
}

}  // namespace wmma
}  // namespace nvcuda
