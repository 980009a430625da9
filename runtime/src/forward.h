// Float32 CPU forward pass of a LLaMA-style model with a KV cache (the reference path).
#pragma once

#include <cstdint>
#include <vector>

#include "model.h"

namespace hci {

// y[n, d_out] = x[n, d_in] · weight^T (+ x · A_r^T · B_r^T when the layer is compensated).
// `tmp` is scratch for the low-rank intermediate [n, rank].
void linear_forward(const Linear& lin, const float* x, int n, float* y, std::vector<float>& tmp);

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

 private:
  const Model& m_;
  int n_ctx_;
  int n_past_ = 0;
  std::vector<float> k_cache_, v_cache_;  // [n_layers, n_ctx, n_kv_heads * head_dim]
  std::vector<float> x_, xn_, q_, att_, proj_, scores_, gate_, up_, tmp_;
};

}  // namespace hci
