// In-memory model: float32 weights of a LLaMA-style dense transformer, and for each linear layer
// its optional quantized variant and low-rank compensation factors.
#pragma once

#include <array>
#include <cstdint>
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
  std::vector<float> w_deq;       // [d_out, d_in] (codes - zero) * scale

  // Compensation E = W - w_deq ≈ B[:, :rank] A[:rank, :], factors ordered by singular value.
  int max_rank = 0;
  int rank = 0;                   // active prefix
  std::vector<float> A;           // [max_rank, d_in]
  std::vector<float> B;           // [d_out, max_rank]
  std::vector<double> singular;   // [max_rank] singular values of E, descending
  double norm_w = 0;              // ||W||_F
  double norm_e = 0;              // ||E||_F (0 when not quantized)

  const float* weight() const { return bits ? w_deq.data() : w.data(); }
  // ||W - w_deq - B_r A_r||_F by Eckart–Young: sqrt(||E||² − Σ_{i<r} σ_i²).
  double active_error() const;
  void clear_quantization();
};

struct Block {
  std::vector<float> attn_norm;  // [d_model]
  std::vector<float> mlp_norm;   // [d_model]
  std::array<Linear, 7> lin;     // indexed by hci_linear_kind: q k v o gate up down
};

struct Model {
  ModelConfig cfg;
  std::string dir;
  std::vector<std::string> files;  // safetensors files read
  std::vector<float> embed;        // [vocab, d_model]
  std::vector<Block> blocks;       // [n_layers]
  std::vector<float> final_norm;   // [d_model]
  std::vector<float> lm_head_own;  // [vocab, d_model] when untied, else empty
  int n_threads = 1;

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
