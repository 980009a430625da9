// Model-level quantization with low-rank error compensation, and rank selection.
#pragma once

#include <atomic>
#include <cstdint>

#include "model.h"

namespace hci {

struct QuantSettings {
  int bits = 4;             // 0 restores full precision
  int group_size = 128;     // -1 = per output row
  int max_rank = 0;         // factors kept per layer
  uint32_t kind_mask = 0x7F;
  int layer_begin = 0;
  int layer_end = -1;       // -1 = n_layers
};

// Quantizes the selected linears of `m` (from the original weights) and factors each residual;
// every other linear is restored to full precision. Active ranks start at the max rank.
// progress (may be null) counts finished linears; cancel (may be null) nonzero stops early.
void quantize_model(Model& m, const QuantSettings& s, int n_threads, int64_t* progress,
                    const int32_t* cancel);

}  // namespace hci
