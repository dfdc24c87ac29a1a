// Compile-time switch helpers: turn a run-time value into a template parameter, so kernels get
// specialised on small kernel sizes, strides and flags without copy-pasted launch ladders
// (after flash-attention's static_switch.h).
//
//   BOOL_SWITCH(has_bias, HAS_BIAS, [&] { run<HAS_BIAS>(p); });
//   KSIZE_SWITCH(p.R, KS, [&] { run<KS>(p); });   // KS in {3, 5, 7}; 0 = generic (run-time size)
//   STRIDE_SWITCH(p.stride_h, ST, [&] { run<ST>(p); });  // ST in {1, 2}; 0 = generic
#pragma once

#define BOOL_SWITCH(COND, CONST_NAME, ...)      \
  [&] {                                         \
    if (COND) {                                 \
      constexpr static bool CONST_NAME = true;  \
      return __VA_ARGS__();                     \
    } else {                                    \
      constexpr static bool CONST_NAME = false; \
      return __VA_ARGS__();                     \
    }                                           \
  }()

#define KSIZE_SWITCH(K, CONST_NAME, ...)     \
  [&] {                                      \
    if ((K) == 3) {                          \
      constexpr static int CONST_NAME = 3;   \
      return __VA_ARGS__();                  \
    } else if ((K) == 5) {                   \
      constexpr static int CONST_NAME = 5;   \
      return __VA_ARGS__();                  \
    } else if ((K) == 7) {                   \
      constexpr static int CONST_NAME = 7;   \
      return __VA_ARGS__();                  \
    } else {                                 \
      constexpr static int CONST_NAME = 0;   \
      return __VA_ARGS__();                  \
    }                                        \
  }()

#define STRIDE_SWITCH(ST, CONST_NAME, ...)   \
  [&] {                                      \
    if ((ST) == 1) {                         \
      constexpr static int CONST_NAME = 1;   \
      return __VA_ARGS__();                  \
    } else if ((ST) == 2) {                  \
      constexpr static int CONST_NAME = 2;   \
      return __VA_ARGS__();                  \
    } else {                                 \
      constexpr static int CONST_NAME = 0;   \
      return __VA_ARGS__();                  \
    }                                        \
  }()
