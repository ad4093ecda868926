// 64-bit index arithmetic with overflow checks.
//
// Element counts cross 2^31 in ordinary training runs ([T, 64, 65536] at T = 512 is 2^31), so every
// count and offset in the kernels is int64_t. Sizes arriving from the bindings are caller-supplied
// integers, though: a product such as T * N computed on them can overflow int64 itself (signed
// overflow is undefined behaviour, and a wrapped product could make a size check pass against a
// small tensor). The argument checks therefore form every product of caller-supplied sizes with
// these helpers, which reject it with an ArgumentError instead of wrapping.
// Tested at large values by tests/cpp/test_index.cpp (driven by tests/test_index_cpp.py).
#pragma once
#include <cstdint>
#include <limits>
#include <string>

#include "status.h"

namespace spikeforge {

// a * b for a, b >= 0; false (and *out untouched) when the product does not fit in int64_t.
inline bool mul_nonneg_fits(int64_t a, int64_t b, int64_t* out) {
  if (a < 0 || b < 0) return false;
  if (a != 0 && b > std::numeric_limits<int64_t>::max() / a) return false;
  *out = a * b;
  return true;
}

// a * b for sizes, or ArgumentError naming `what` when negative or past int64_t.
inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r = 0;
  if (!mul_nonneg_fits(a, b, &r)) {
    fail_arg(std::string(what) + ": size " + std::to_string(a) + " x " + std::to_string(b) +
             " is negative or overflows 64-bit indexing");
  }
  return r;
}

// ceil(n / d) for n >= 0, d > 0 without forming n + d - 1 (which overflows for n near INT64_MAX).
inline int64_t ceil_div(int64_t n, int64_t d) {
  return n / d + (n % d != 0 ? 1 : 0);
}

// Offset of element (row, col) of a row-major [rows, cols] matrix: 64-bit for any row, col.
inline int64_t row_offset(int64_t row, int64_t cols, int64_t col) {
  return row * cols + col;
}

}  // namespace spikeforge
