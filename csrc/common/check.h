// Error helpers. Library code never exits: it throws, and the binding files translate
// fastconv::ValueError / TypeError into Python's ValueError / TypeError.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace fastconv {

struct ValueError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
struct TypeError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

namespace detail {
inline void cat(std::ostringstream&) {}
template <class T, class... Rest>
void cat(std::ostringstream& os, const T& v, const Rest&... rest) {
  os << v;
  cat(os, rest...);
}
}  // namespace detail

template <class... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  detail::cat(os, args...);
  return os.str();
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
