#include "forward.h"

#include <cblas.h>

#include <algorithm>

#include "cpu_ops.h"
#include "error.h"

namespace hci {

void linear_forward(const Linear& lin, const float* x, int n, float* y, std::vector<float>& tmp,
                    WeightMode mode) {
  const float* w = mode == WeightMode::FullPrecision ? lin.w.data() : lin.weight();
  matmul_wt(x, w, y, n, lin.d_out, lin.d_in);
  if (mode == WeightMode::Active && lin.bits && lin.rank > 0) {
    const int r = lin.rank;
    tmp.resize(size_t(n) * size_t(r));
    // t[n, r] = x · A[:r]^T ; y += t · B[:, :r]^T  (B rows have stride max_rank)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, r, lin.d_in, 1.0f, x, lin.d_in,
                lin.A.data(), lin.d_in, 0.0f, tmp.data(), r);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, lin.d_out, r, 1.0f, tmp.data(), r,
                lin.B.data(), lin.max_rank, 1.0f, y, lin.d_out);
  }
}

ForwardState::ForwardState(const Model& model, int n_ctx) : m_(model), n_ctx_(n_ctx) {
  const ModelConfig& c = m_.cfg;
  if (n_ctx <= 0) fail(HCI_ERR_INVALID_ARGUMENT, "context size must be positive");
  const size_t kv = size_t(c.n_kv_heads) * size_t(c.head_dim);
  k_cache_.assign(size_t(c.n_layers) * size_t(n_ctx) * kv, 0.0f);
  v_cache_.assign(k_cache_.size(), 0.0f);
}

void ForwardState::embed(const int32_t* tokens, int n, float* x) const {
  const ModelConfig& c = m_.cfg;
  const int d = c.d_model;
  for (int i = 0; i < n; ++i) {
    const int32_t t = tokens[i];
    if (t < 0 || t >= c.vocab_size)
      fail(HCI_ERR_INVALID_ARGUMENT, "token id " + std::to_string(t) + " at position " +
                                         std::to_string(i) + " is outside the vocabulary [0, " +
                                         std::to_string(c.vocab_size) + ")");
    std::copy_n(m_.embed.data() + int64_t(t) * d, d, x + int64_t(i) * d);
  }
}

void ForwardState::forward(const int32_t* tokens, int n, float* hidden) {
  const ModelConfig& c = m_.cfg;
  if (n <= 0) fail(HCI_ERR_INVALID_ARGUMENT, "forward needs at least one token");
  if (n_past_ + n > n_ctx_)
    fail(HCI_ERR_INVALID_ARGUMENT, "KV cache full: " + std::to_string(n_past_) + " + " +
                                       std::to_string(n) + " tokens exceed n_ctx " +
                                       std::to_string(n_ctx_));
  const int d = c.d_model;
  x_.resize(size_t(n) * size_t(d));
  embed(tokens, n, x_.data());
  for (int l = 0; l < c.n_layers; ++l) run_block(l, x_.data(), n, n_past_);
  rmsnorm(x_.data(), m_.final_norm.data(), hidden, n, d, c.rms_norm_eps);
  n_past_ += n;
}

void ForwardState::block(int layer, float* x, int n) {
  if (layer < 0 || layer >= m_.cfg.n_layers)
    fail(HCI_ERR_INVALID_ARGUMENT, "block index " + std::to_string(layer) + " out of range");
  if (n <= 0 || n > n_ctx_)
    fail(HCI_ERR_INVALID_ARGUMENT, "block: " + std::to_string(n) + " tokens do not fit n_ctx " +
                                       std::to_string(n_ctx_));
  run_block(layer, x, n, 0);
}

void ForwardState::run_block(int l, float* x, int n, int pos0) {
  const ModelConfig& c = m_.cfg;
  const int d = c.d_model, hd = c.head_dim, qd = c.n_heads * hd, kvd = c.n_kv_heads * hd;
  const size_t nn = size_t(n);
  xn_.resize(nn * size_t(d));
  q_.resize(nn * size_t(qd));
  att_.resize(nn * size_t(qd));
  proj_.resize(nn * size_t(d));
  scores_.resize(nn * size_t(pos0 + n));
  gate_.resize(nn * size_t(c.d_ff));
  up_.resize(nn * size_t(c.d_ff));

  const Block& b = m_.blocks[size_t(l)];
  float* kc = k_cache_.data() + (size_t(l) * size_t(n_ctx_)) * size_t(kvd);
  float* vc = v_cache_.data() + (size_t(l) * size_t(n_ctx_)) * size_t(kvd);
  float* k_new = kc + size_t(pos0) * size_t(kvd);
  float* v_new = vc + size_t(pos0) * size_t(kvd);
  const WeightMode mode = mode_;

  // attention
  rmsnorm(x, b.attn_norm.data(), xn_.data(), n, d, c.rms_norm_eps);
  if (observer_) observer_->observe(l, kInputAttn, xn_.data(), n, d);
  linear_forward(b.lin[HCI_LINEAR_Q], xn_.data(), n, q_.data(), tmp_, mode);
  linear_forward(b.lin[HCI_LINEAR_K], xn_.data(), n, k_new, tmp_, mode);
  linear_forward(b.lin[HCI_LINEAR_V], xn_.data(), n, v_new, tmp_, mode);
  rope(q_.data(), n, c.n_heads, hd, pos0, c.rope_theta);
  rope(k_new, n, c.n_kv_heads, hd, pos0, c.rope_theta);
  attention(q_.data(), kc, vc, att_.data(), scores_.data(), n, pos0, c.n_heads, c.n_kv_heads, hd);
  if (observer_) observer_->observe(l, kInputO, att_.data(), n, qd);
  linear_forward(b.lin[HCI_LINEAR_O], att_.data(), n, proj_.data(), tmp_, mode);
  for (size_t i = 0; i < nn * size_t(d); ++i) x[i] += proj_[i];

  // MLP
  rmsnorm(x, b.mlp_norm.data(), xn_.data(), n, d, c.rms_norm_eps);
  if (observer_) observer_->observe(l, kInputMlp, xn_.data(), n, d);
  linear_forward(b.lin[HCI_LINEAR_GATE], xn_.data(), n, gate_.data(), tmp_, mode);
  linear_forward(b.lin[HCI_LINEAR_UP], xn_.data(), n, up_.data(), tmp_, mode);
  silu_mul(gate_.data(), up_.data(), int64_t(nn) * c.d_ff);
  if (observer_) observer_->observe(l, kInputDown, gate_.data(), n, c.d_ff);
  linear_forward(b.lin[HCI_LINEAR_DOWN], gate_.data(), n, proj_.data(), tmp_, mode);
  for (size_t i = 0; i < nn * size_t(d); ++i) x[i] += proj_[i];
}

void ForwardState::logits(const float* hidden, int n, float* out) const {
  matmul_wt(hidden, m_.lm_head(), out, n, m_.cfg.vocab_size, m_.cfg.d_model);
}

}  // namespace hci
