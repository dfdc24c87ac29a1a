// Error helpers. Library code never exits: it throws, and the binding files translate
// fastconv::ValueError / TypeError into Python's ValueError / TypeError.
#pragma once
#include <cstdio>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

namespace fastconv {

struct ValueError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
struct TypeError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// str_cat formats with std::to_string and snprintf, not iostreams: no locale, no stream objects
// (an extension module's iostream use broke when a static libstdc++ was linked into it beside the
// process's shared one: the GPU host crashed inside ostream::operator<< on 2026-12-04). Integers
// print in decimal, floating point as "%g" (what ostream's default formatting gives), bool as 0/1.
namespace detail {
inline void put(std::string& s, std::string_view v) { s.append(v.data(), v.size()); }
inline void put(std::string& s, const char* v) { s += v ? v : "(null)"; }
inline void put(std::string& s, char v) { s += v; }
inline void put(std::string& s, bool v) { s += v ? '1' : '0'; }
inline void put(std::string& s, double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  s += buf;
}
inline void put(std::string& s, const void* v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", v);
  s += buf;
}
template <class T>
void put(std::string& s, const T& v) {
  if constexpr (std::is_enum_v<T>) {
    s += std::to_string(static_cast<std::underlying_type_t<T>>(v));
  } else if constexpr (std::is_integral_v<T>) {
    s += std::to_string(v);
  } else if constexpr (std::is_floating_point_v<T>) {
    put(s, static_cast<double>(v));
  } else if constexpr (std::is_convertible_v<const T&, std::string_view>) {
    put(s, std::string_view(v));
  } else {
    static_assert(std::is_pointer_v<T>, "str_cat: unsupported argument type");
    put(s, static_cast<const void*>(v));
  }
}
}  // namespace detail

template <class... Args>
std::string str_cat(const Args&... args) {
  std::string s;
  (detail::put(s, args), ...);
  return s;
}

}  // namespace fastconv

// FC_CHECK(cond, "conv2d: weight has ", c, " channels ...") throws fastconv::ValueError.
#define FC_CHECK(cond, ...)                                            \
  do {                                                                 \
    if (!(cond)) throw ::fastconv::ValueError(::fastconv::str_cat(__VA_ARGS__)); \
  } while (0)
#define FC_CHECK_TYPE(cond, ...)                                       \
  do {                                                                 \
    if (!(cond)) throw ::fastconv::TypeError(::fastconv::str_cat(__VA_ARGS__)); \
  } while (0)
