// Model-level quantization (RTN or sequential GPTQ) with low-rank error compensation (plain or
// activation-aware), and rank selection.
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
  int method = 0;           // 0 = RTN, 1 = GPTQ (sequential, needs calibration tokens)
  bool act_order = false;   // GPTQ only
  double damp_percent = 0.01;  // GPTQ dampening, fraction of mean diag(H)
  int scaling = 0;          // 0 plain, 1 act-diag, 2 act-full (Scaling::Kind)
  double eig_floor = 1e-6;  // relative floor on the eigenvalues / second moments of scalings
  bool groups_from_block_start = false;  // GPTQ: the reference code's group parameters (gptq.h)
};

// Quantizes the selected linears of `m` (from the original weights) and factors each residual;
// every other linear is restored to full precision. Active ranks start at the max rank.
//   RTN: quantize_rtn per layer; activation statistics (for act-* scalings) from m.calib, i.e.
//        the full-precision model's.
//   GPTQ: sequential: the calibration windows of m.calib are run block by block (BlockRunner);
//        block l's Hessians are collected with blocks < l already quantized (their quantized
//        weights without factors), then block l's selected linears are quantized with
//        gptq_quantize; act-* scalings use those same per-block statistics.
// progress (may be null) counts finished linears; cancel (may be null) nonzero stops early.
// On any error every linear is left at full precision.
void quantize_model(Model& m, const QuantSettings& s, int n_threads, int64_t* progress,
                    const int32_t* cancel);

}  // namespace hci
