// Bulk access to the hand-off's tagged words (hetero/handoff.h: float32 value | seq << 32) for
// the CPU server: unpacking an input X as its words arrive, packing a correction into Y, and the
// rounding of normalized activations to the GPU's type. AVX-512 (eight words a load: each
// 8-byte-aligned word of an x86 vector access is read atomically, so no word is torn), AVX2 and
// portable versions, chosen by SimdLevel.
#pragma once

#include <atomic>
#include <cstdint>

#include "hetero/comp_point.h"

namespace hci {

// dst[i] = value of src[i], each taken once it carries `seq` (spinning with pause; `stop` is
// checked while waiting). False when `stop` turned true first.
bool tagged_unpack(const uint64_t* src, float* dst, int64_t n, uint32_t seq, SimdLevel level,
                   const std::atomic<bool>* stop);

// dst[i] = (src[i], seq), i < n.
void tagged_pack(const float* src, uint64_t* dst, int64_t n, uint32_t seq, SimdLevel level);

// Σ x[i]² (float32, in 16 independent partial sums: vectorized, not one serial chain).
float sum_squares(const float* x, int64_t n, SimdLevel level);

// x[i] rounded to float16 (f16) or bfloat16 (!f16), nearest even, and back to float32.
void round_to_half(float* x, int64_t n, bool f16, SimdLevel level);

}  // namespace hci
