#include "quantize.h"

#include <algorithm>
#include <cmath>

#include "error.h"
#include "safetensors.h"

namespace hci {

double QuantGrid::code(double w) const {
  return std::clamp(std::nearbyint(w / scale) + zero, 0.0, qmax);
}

QuantGrid quant_grid(double lo, double hi, int bits) {
  QuantGrid g;
  g.qmax = double((1 << bits) - 1);
  lo = std::min(lo, 0.0);
  hi = std::max(hi, 0.0);
  if (lo == 0.0 && hi == 0.0) {
    lo = -1.0;
    hi = 1.0;
  }
  float scale = f16_to_f32(f32_to_f16(float((hi - lo) / g.qmax)));
  if (scale == 0.0f) scale = f16_to_f32(1);  // smallest fp16 subnormal
  g.scale = double(scale);
  g.zero = std::clamp(std::nearbyint(-lo / g.scale), 0.0, g.qmax);
  return g;
}

void quantize_rtn(const float* w, int d_out, int d_in, int bits, int group_size,
                  std::vector<uint8_t>& codes, std::vector<float>& scales,
                  std::vector<float>& zeros, std::vector<float>& w_deq) {
  if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
    fail(HCI_ERR_INVALID_ARGUMENT, "bits must be 2, 3, 4 or 8, got " + std::to_string(bits));
  if (group_size <= 0 || d_in % group_size != 0)
    fail(HCI_ERR_INVALID_ARGUMENT, "group size " + std::to_string(group_size) +
                                       " does not divide the input dimension " +
                                       std::to_string(d_in));
  const int n_groups = d_in / group_size;
  const float qmax = float((1 << bits) - 1);
  codes.resize(size_t(d_out) * size_t(d_in));
  w_deq.resize(codes.size());
  scales.resize(size_t(d_out) * size_t(n_groups));
  zeros.resize(scales.size());
  for (int r = 0; r < d_out; ++r) {
    for (int g = 0; g < n_groups; ++g) {
      const size_t off = size_t(r) * size_t(d_in) + size_t(g) * size_t(group_size);
      const float* x = w + off;
      float lo = 0.0f, hi = 0.0f;
      for (int j = 0; j < group_size; ++j) {
        lo = std::min(lo, x[j]);
        hi = std::max(hi, x[j]);
      }
      if (lo == 0.0f && hi == 0.0f) {
        lo = -1.0f;
        hi = 1.0f;
      }
      float scale = f16_to_f32(f32_to_f16((hi - lo) / qmax));
      if (scale == 0.0f) scale = f16_to_f32(1);  // smallest fp16 subnormal
      const float zero = std::clamp(std::nearbyint(-lo / scale), 0.0f, qmax);
      scales[size_t(r) * size_t(n_groups) + size_t(g)] = scale;
      zeros[size_t(r) * size_t(n_groups) + size_t(g)] = zero;
      for (int j = 0; j < group_size; ++j) {
        const float q = std::clamp(std::nearbyint(x[j] / scale) + zero, 0.0f, qmax);
        codes[off + size_t(j)] = uint8_t(q);
        w_deq[off + size_t(j)] = (q - zero) * scale;
      }
    }
  }
}

}  // namespace hci
