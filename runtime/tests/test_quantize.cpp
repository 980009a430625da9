// RTN quantization checked against a float64 reimplementation written from the definition.
#include <algorithm>
#include <cmath>

#include "check.h"
#include "error.h"
#include "quantize.h"
#include "test_util.h"

// Reference: per group, range including 0, scale rounded to fp16 with the compiler's _Float16,
// round-half-even in double.
static void reference_rtn(const std::vector<float>& w, int rows, int cols, int bits, int g,
                          std::vector<int>& codes, std::vector<double>& deq) {
  const double qmax = std::pow(2.0, bits) - 1;
  codes.assign(w.size(), 0);
  deq.assign(w.size(), 0);
  for (int r = 0; r < rows; ++r)
    for (int c0 = 0; c0 < cols; c0 += g) {
      double lo = 0, hi = 0;
      for (int c = c0; c < c0 + g; ++c) {
        lo = std::min(lo, double(w[size_t(r * cols + c)]));
        hi = std::max(hi, double(w[size_t(r * cols + c)]));
      }
      if (lo == 0 && hi == 0) lo = -1, hi = 1;
      const double scale = double(_Float16(float((float(hi) - float(lo)) / float(qmax))));
      const double zero = std::clamp(std::nearbyint(-lo / scale), 0.0, qmax);
      for (int c = c0; c < c0 + g; ++c) {
        const size_t i = size_t(r * cols + c);
        const double q = std::clamp(std::nearbyint(double(w[i]) / scale) + zero, 0.0, qmax);
        codes[i] = int(q);
        deq[i] = (q - zero) * scale;
      }
    }
}

TEST(matches_float64_reference_all_bits_and_groups) {
  const int rows = 24, cols = 256;
  const auto w = testutil::random_vec(size_t(rows * cols), 7, 0.05f);
  for (int bits : {2, 3, 4, 8})
    for (int g : {32, 64, 128, cols}) {
      std::vector<uint8_t> codes;
      std::vector<float> scales, zeros, deq;
      hci::quantize_rtn(w.data(), rows, cols, bits, g, codes, scales, zeros, deq);
      std::vector<int> rcodes;
      std::vector<double> rdeq;
      reference_rtn(w, rows, cols, bits, g, rcodes, rdeq);
      size_t mismatched = 0;
      double max_err = 0;
      for (size_t i = 0; i < w.size(); ++i) {
        mismatched += codes[i] != rcodes[i];
        max_err = std::max(max_err, std::fabs(double(deq[i]) - rdeq[i]));
      }
      // float32 division can land on the other side of a .5 tie in rare cases; allow ~0.1%.
      CHECK(mismatched <= w.size() / 1000);
      CHECK(scales.size() == size_t(rows * (cols / g)));
      // every element is within half a step of its group's scale, plus the clipping that the
      // fp16 rounding of the scale (relative error <= 2^-11) can cause at the range's ends
      for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c) {
          const size_t i = size_t(r * cols + c);
          const float s = scales[size_t(r * (cols / g) + c / g)];
          const double qmax = std::pow(2.0, bits) - 1;
          if (std::fabs(w[i] - deq[i]) > 0.5 * s * 1.0001 + qmax * s * std::ldexp(1.0, -11)) {
            ++check::failures();
            std::printf("  bits %d g %d: |w - deq| = %g > scale/2 = %g\n", bits, g,
                        std::fabs(w[i] - deq[i]), 0.5 * s);
            return;
          }
        }
      if (mismatched == 0) CHECK(max_err < 1e-6);
    }
}

TEST(error_shrinks_with_bits) {
  const int rows = 32, cols = 128;
  const auto w = testutil::random_vec(size_t(rows * cols), 11, 0.02f);
  double prev = 1e30;
  for (int bits : {2, 3, 4, 8}) {
    std::vector<uint8_t> codes;
    std::vector<float> scales, zeros, deq;
    hci::quantize_rtn(w.data(), rows, cols, bits, 64, codes, scales, zeros, deq);
    double e = 0;
    for (size_t i = 0; i < w.size(); ++i) e += double(w[i] - deq[i]) * (w[i] - deq[i]);
    CHECK(e < prev);
    prev = e;
  }
}

TEST(all_zero_group_and_bad_arguments) {
  std::vector<float> w(64, 0.0f);
  std::vector<uint8_t> codes;
  std::vector<float> scales, zeros, deq;
  hci::quantize_rtn(w.data(), 1, 64, 4, 32, codes, scales, zeros, deq);
  for (float v : deq) CHECK(v == 0.0f);
  CHECK_THROWS(hci::quantize_rtn(w.data(), 1, 64, 5, 32, codes, scales, zeros, deq),
               HCI_ERR_INVALID_ARGUMENT, "bits must be 2, 3, 4 or 8");
  CHECK_THROWS(hci::quantize_rtn(w.data(), 1, 64, 4, 48, codes, scales, zeros, deq),
               HCI_ERR_INVALID_ARGUMENT, "does not divide");
}

TEST_MAIN()
