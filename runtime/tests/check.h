// Minimal test harness for the C++ tests: CHECK records a failure and continues; main() returns
// nonzero when any check failed. Each test binary prints "N passed, N failed".
#pragma once

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace check {

inline int& failures() {
  static int n = 0;
  return n;
}
inline std::vector<std::pair<std::string, std::function<void()>>>& registry() {
  static std::vector<std::pair<std::string, std::function<void()>>> r;
  return r;
}
struct Register {
  Register(const char* name, std::function<void()> fn) { registry().emplace_back(name, fn); }
};

inline int run_all() {
  int passed = 0, failed = 0;
  for (auto& [name, fn] : registry()) {
    const int before = failures();
    try {
      fn();
    } catch (const std::exception& e) {
      std::printf("  exception: %s\n", e.what());
      ++failures();
    }
    const bool ok = failures() == before;
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", name.c_str());
    (ok ? passed : failed)++;
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}

}  // namespace check

#define TEST(name)                                                 \
  static void name();                                              \
  static check::Register reg_##name(#name, name);                  \
  static void name()

#define CHECK(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      std::printf("  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
      ++check::failures();                                                   \
    }                                                                        \
  } while (0)

#define CHECK_NEAR(a, b, tol)                                                              \
  do {                                                                                     \
    const double va_ = double(a), vb_ = double(b);                                         \
    if (!(std::fabs(va_ - vb_) <= (tol))) {                                                \
      std::printf("  %s:%d: %s = %.9g vs %s = %.9g (tol %g)\n", __FILE__, __LINE__, #a, va_, \
                  #b, vb_, double(tol));                                                   \
      ++check::failures();                                                                 \
    }                                                                                      \
  } while (0)

// Checks that `expr` throws hci::Error with `status` and a message containing `needle`.
#define CHECK_THROWS(expr, want_status, needle)                                                  \
  do {                                                                                      \
    bool threw_ = false;                                                                    \
    try {                                                                                   \
      expr;                                                                                 \
    } catch (const hci::Error& e_) {                                                        \
      threw_ = true;                                                                        \
      if (e_.status() != (want_status) || std::string(e_.what()).find(needle) == std::string::npos) { \
        std::printf("  %s:%d: wrong error: status %d, '%s' (wanted %d containing '%s')\n",     \
                    __FILE__, __LINE__, int(e_.status()), e_.what(), int(want_status), needle);  \
        ++check::failures();                                                                \
      }                                                                                     \
    }                                                                                       \
    if (!threw_) {                                                                          \
      std::printf("  %s:%d: %s did not throw\n", __FILE__, __LINE__, #expr);                \
      ++check::failures();                                                                  \
    }                                                                                       \
  } while (0)

#define TEST_MAIN() \
  int main() { return check::run_all(); }
