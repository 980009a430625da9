// Float32 CPU forward pass of a LLaMA-style model with a KV cache (the reference path).
#pragma once

#include <cstdint>
#include <vector>

#include "model.h"

namespace hci {

// Which weights a forward pass uses for each linear layer.
enum class WeightMode {
  Active,         // as the model is set up: deq(Q(W)) plus the active prefix of the factors
  Backbone,       // deq(Q(W)) without factors (W where the layer is not quantized)
  FullPrecision,  // the original W everywhere, whatever the quantization
};

// y[n, d_out] = x[n, d_in] · weight^T (+ x · A_r^T · B_r^T when the layer is compensated and
// mode is Active). `tmp` is scratch for the low-rank intermediate [n, rank].
void linear_forward(const Linear& lin, const float* x, int n, float* y, std::vector<float>& tmp,
                    WeightMode mode = WeightMode::Active);

// Input groups of a block: linears that read the same activation share one group.
enum LinearInputGroup {
  kInputAttn = 0,  // q, k, v: the attention RMSNorm output [n, d_model]
  kInputO = 1,     // o: the attention output [n, n_heads * head_dim]
  kInputMlp = 2,   // gate, up: the MLP RMSNorm output [n, d_model]
  kInputDown = 3,  // down: silu(gate) * up [n, d_ff]
  kInputGroups = 4,
};
// The input group of linear kind `kind` (hci_linear_kind).
inline int input_group(int kind) {
  static const int g[7] = {kInputAttn, kInputAttn, kInputAttn, kInputO,
                           kInputMlp,  kInputMlp,  kInputDown};
  return g[kind];
}

// Receives the input of every linear-input group as a forward pass computes it (calibration).
class LinearInputObserver {
 public:
  virtual ~LinearInputObserver() = default;
  // x[n, d] is the input of group `group` (LinearInputGroup) of block `layer`.
  virtual void observe(int layer, int group, const float* x, int n, int d) = 0;
};

// One sequence's state: KV cache and scratch buffers. Not thread-safe; one per worker.
class ForwardState {
 public:
  ForwardState(const Model& model, int n_ctx);

  // Appends n tokens at positions n_past..n_past+n-1 and writes the final normed hidden states
  // hidden[n, d_model]. Throws HCI_ERR_INVALID_ARGUMENT for out-of-range ids or a full cache.
  void forward(const int32_t* tokens, int n, float* hidden);
  // logits[n, vocab] = hidden[n, d_model] · lm_head^T
  void logits(const float* hidden, int n, float* out) const;

  int n_past() const { return n_past_; }
  int n_ctx() const { return n_ctx_; }
  void reset() { n_past_ = 0; }

  // Block-level steps for calibration and sequential quantization. embed() writes the token
  // embeddings x[n, d_model]; block() applies transformer block `layer` to x[n, d_model] in place
  // as a fresh sequence at positions 0..n-1 (it uses that layer's KV cache rows and leaves n_past
  // alone; do not mix with forward() on the same state without reset()).
  void embed(const int32_t* tokens, int n, float* x) const;
  void block(int layer, float* x, int n);

  // Optional observer of linear inputs (null = none, the default; no cost when absent) and the
  // weights used (default Active).
  void set_observer(LinearInputObserver* observer) { observer_ = observer; }
  void set_weight_mode(WeightMode mode) { mode_ = mode; }

 private:
  void run_block(int layer, float* x, int n, int pos0);

  const Model& m_;
  int n_ctx_;
  int n_past_ = 0;
  LinearInputObserver* observer_ = nullptr;
  WeightMode mode_ = WeightMode::Active;
  std::vector<float> k_cache_, v_cache_;  // [n_layers, n_ctx, n_kv_heads * head_dim]
  std::vector<float> x_, xn_, q_, att_, proj_, scores_, gate_, up_, tmp_;
};

}  // namespace hci
