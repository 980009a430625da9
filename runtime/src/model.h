// In-memory model: float32 weights of a LLaMA-style dense transformer, and for each linear layer
// its optional quantized variant and low-rank compensation factors.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config.h"

namespace hci {

// One linear layer y = W x (no bias), W [d_out, d_in], with optional quantization state.
struct Linear {
  int d_out = 0;
  int d_in = 0;
  std::vector<float> w;  // [d_out, d_in] original weights

  // Quantized state (bits == 0: not quantized, w is used).
  int bits = 0;
  int group_size = 0;             // input columns per group; d_in when quantized per row
  std::vector<uint8_t> codes;     // [d_out, d_in] integer codes in [0, 2^bits)
  std::vector<float> scales;      // [d_out, d_in / group_size], values at fp16 precision
  std::vector<float> zeros;       // [d_out, d_in / group_size], integer zero points
  // Group of each input column, [d_in]; empty means column c is in group c / group_size. GPTQ
  // with activation order fills it (groups are contiguous in the permuted order, so not in the
  // original one): deq[r][c] = (codes[r][c] - zeros[r][g_idx[c]]) * scales[r][g_idx[c]].
  std::vector<int32_t> g_idx;
  std::vector<float> w_deq;       // [d_out, d_in] (codes - zero) * scale

  // Compensation E = W - w_deq ≈ B[:, :rank] A[:rank, :] from the truncated SVD of E·S (S = I,
  // diag(sqrt(E[x²])) or E[xxᵀ]^½, see lowrank.h); factors ordered by the singular values of E·S,
  // so a prefix of rank r is the best rank-r answer of that scaling.
  int max_rank = 0;
  int rank = 0;                   // active prefix
  int scaling = 0;                // hci_scaling of the factors (0 plain, 1 act-diag, 2 act-full)
  std::vector<float> A;           // [max_rank, d_in]
  std::vector<float> B;           // [d_out, max_rank]
  std::vector<double> singular;   // [max_rank] singular values of E·S, descending
  // [max_rank + 1] ||E - B[:, :k] A[:k]||_F for k = 0..max_rank, computed in float64 from the
  // stored float32 factors at quantization time (empty: fall back to Eckart–Young on singular).
  std::vector<double> err_prefix;
  double norm_w = 0;              // ||W||_F
  double norm_e = 0;              // ||E||_F (0 when not quantized)

  const float* weight() const { return bits ? w_deq.data() : w.data(); }
  // ||W - w_deq - B_r A_r||_F in weight space, r = rank: err_prefix[r] when present, else
  // sqrt(||E||² − Σ_{i<r} σ_i²) (Eckart–Young, exact only for plain factors).
  double active_error() const;
  void clear_quantization();
};

struct Block {
  std::vector<float> attn_norm;  // [d_model]
  std::vector<float> mlp_norm;   // [d_model]
  std::array<Linear, 7> lin;     // indexed by hci_linear_kind: q k v o gate up down
};

struct Calibration;  // calibration.h

struct Model {
  ModelConfig cfg;
  std::string dir;
  std::vector<std::string> files;  // safetensors files read
  std::vector<float> embed;        // [vocab, d_model]
  std::vector<Block> blocks;       // [n_layers]
  std::vector<float> final_norm;   // [d_model]
  std::vector<float> lm_head_own;  // [vocab, d_model] when untied, else empty
  int n_threads = 1;
  // Calibration tokens and activation statistics (hci_model_calibrate), null until calibrated.
  std::shared_ptr<Calibration> calib;

  const float* lm_head() const { return cfg.tied_embeddings ? embed.data() : lm_head_own.data(); }
  int64_t n_params() const;
  Linear& linear(int index) { return blocks[size_t(index / 7)].lin[size_t(index % 7)]; }
  const Linear& linear(int index) const { return blocks[size_t(index / 7)].lin[size_t(index % 7)]; }
  int n_linears() const { return cfg.n_layers * 7; }
};

// Loads config.json and the safetensors weights of `dir`, checking every shape against the config.
Model load_model(const std::string& dir);

// "layers.3.mlp.down_proj" style names for messages.
std::string linear_name(int index);

}  // namespace hci
