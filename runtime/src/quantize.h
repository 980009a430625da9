// Group-wise asymmetric round-to-nearest (RTN) weight quantization.
#pragma once

#include <cstdint>
#include <vector>

namespace hci {

// Quantizes W [d_out, d_in] with `bits` in {2,3,4,8} and `group_size` input columns per group
// (d_in for one group per row; must divide d_in). Per group, as GPTQ's quantizer does:
//   lo = min(min(w), 0), hi = max(max(w), 0)  (lo = -1, hi = 1 when both are 0)
//   scale = fp16(hi - lo) / (2^bits - 1)      (rounded to float16, as stored for the GPU)
//   zero  = clamp(round(-lo / scale), 0, 2^bits - 1)
//   code  = clamp(round(w / scale) + zero, 0, 2^bits - 1),  deq = (code - zero) * scale
// with round-half-to-even. Outputs: codes [d_out, d_in], scales and zeros [d_out, d_in/group],
// w_deq [d_out, d_in].
// The same quantizer for one group given its values' range in float64 (used by GPTQ, whose
// weights are float64): lo/hi widened to include 0 ((-1, 1) when both are 0), scale rounded to
// float16 (the smallest fp16 subnormal if that rounds to 0), zero = clamp(round(-lo/scale)).
struct QuantGrid {
  double scale = 1;
  double zero = 0;
  double qmax = 15;
  // clamp(round(w / scale) + zero, 0, qmax), round-half-to-even
  double code(double w) const;
  double deq(double code) const { return (code - zero) * scale; }
};
QuantGrid quant_grid(double lo, double hi, int bits);

void quantize_rtn(const float* w, int d_out, int d_in, int bits, int group_size,
                  std::vector<uint8_t>& codes, std::vector<float>& scales,
                  std::vector<float>& zeros, std::vector<float>& w_deq);

}  // namespace hci
