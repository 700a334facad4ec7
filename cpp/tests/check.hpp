// A minimal check macro for the C++ unit tests: each failed CHECK prints where and what, and
// the test executable returns nonzero if any check failed. Unlike assert(), it stays active in
// Release (NDEBUG) builds.
#pragma once

#include <cmath>
#include <cstdio>

namespace mixedfit_test {

inline int& failures() {
  static int count = 0;
  return count;
}

inline void report(bool ok, const char* expr, const char* file, int line) {
  if (ok) return;
  ++failures();
  std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", file, line, expr);
}

inline void report_near(double a, double b, double tol, const char* expr, const char* file,
                        int line) {
  if (std::fabs(a - b) <= tol) return;  // false for NaN
  ++failures();
  std::fprintf(stderr, "%s:%d: CHECK_NEAR failed: %s (%.17g vs %.17g, tolerance %g)\n", file,
               line, expr, a, b, tol);
}

// Prints a summary and gives main()'s return value.
inline int finish(const char* name) {
  if (failures() == 0) {
    std::printf("%s: all checks passed\n", name);
    return 0;
  }
  std::fprintf(stderr, "%s: %d check(s) failed\n", name, failures());
  return 1;
}

}  // namespace mixedfit_test

#define CHECK(expr) ::mixedfit_test::report(static_cast<bool>(expr), #expr, __FILE__, __LINE__)
#define CHECK_NEAR(a, b, tol) \
  ::mixedfit_test::report_near((a), (b), (tol), #a " ~ " #b, __FILE__, __LINE__)
