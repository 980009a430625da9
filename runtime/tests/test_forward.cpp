// The float32 forward pass against a naive float64 reimplementation (no BLAS, no KV cache) on the
// tiny checkpoint, KV-cache decode against full prefill, and the transformers reference logits.
#include <algorithm>
#include <cmath>

#include "check.h"
#include "error.h"
#include "forward.h"
#include "json.h"
#include "model.h"
#include "scoring.h"
#include "test_util.h"

using V = std::vector<double>;

// Naive float64 LLaMA forward: returns logits [n, vocab].
static V reference_logits(const hci::Model& m, const std::vector<int32_t>& tok) {
  const auto& c = m.cfg;
  const int n = int(tok.size()), d = c.d_model, hd = c.head_dim, nh = c.n_heads, nkv = c.n_kv_heads;
  auto matvec = [](const std::vector<float>& W, int rows, int cols, const double* x, double* y) {
    for (int r = 0; r < rows; ++r) {
      double s = 0;
      for (int k = 0; k < cols; ++k) s += double(W[size_t(r * cols + k)]) * x[k];
      y[r] = s;
    }
  };
  auto norm = [&](const V& x, const std::vector<float>& w, V& out) {
    for (int t = 0; t < n; ++t) {
      double ss = 0;
      for (int j = 0; j < d; ++j) ss += x[size_t(t * d + j)] * x[size_t(t * d + j)];
      const double inv = 1.0 / std::sqrt(ss / d + c.rms_norm_eps);
      for (int j = 0; j < d; ++j) out[size_t(t * d + j)] = w[size_t(j)] * x[size_t(t * d + j)] * inv;
    }
  };
  auto rot = [&](double* v, int pos) {
    for (int f = 0; f < hd / 2; ++f) {
      const double ang = pos * std::pow(c.rope_theta, -2.0 * f / hd);
      const double a = v[f], b = v[f + hd / 2];
      v[f] = a * std::cos(ang) - b * std::sin(ang);
      v[f + hd / 2] = b * std::cos(ang) + a * std::sin(ang);
    }
  };
  V x(size_t(n * d)), xn(size_t(n * d));
  for (int t = 0; t < n; ++t)
    for (int j = 0; j < d; ++j) x[size_t(t * d + j)] = m.embed[size_t(tok[size_t(t)] * d + j)];
  for (const hci::Block& b : m.blocks) {
    norm(x, b.attn_norm, xn);
    V q(size_t(n * nh * hd)), k(size_t(n * nkv * hd)), v(size_t(n * nkv * hd)), att(size_t(n * nh * hd));
    for (int t = 0; t < n; ++t) {
      matvec(b.lin[0].w, nh * hd, d, &xn[size_t(t * d)], &q[size_t(t * nh * hd)]);
      matvec(b.lin[1].w, nkv * hd, d, &xn[size_t(t * d)], &k[size_t(t * nkv * hd)]);
      matvec(b.lin[2].w, nkv * hd, d, &xn[size_t(t * d)], &v[size_t(t * nkv * hd)]);
      for (int h = 0; h < nh; ++h) rot(&q[size_t((t * nh + h) * hd)], t);
      for (int h = 0; h < nkv; ++h) rot(&k[size_t((t * nkv + h) * hd)], t);
    }
    for (int t = 0; t < n; ++t)
      for (int h = 0; h < nh; ++h) {
        const int g = h / (nh / nkv);
        V p(size_t(t + 1));
        double mx = -1e300, sum = 0;
        for (int s = 0; s <= t; ++s) {
          double dot = 0;
          for (int i = 0; i < hd; ++i) dot += q[size_t((t * nh + h) * hd + i)] * k[size_t((s * nkv + g) * hd + i)];
          p[size_t(s)] = dot / std::sqrt(double(hd));
          mx = std::max(mx, p[size_t(s)]);
        }
        for (double& e : p) sum += (e = std::exp(e - mx));
        for (int i = 0; i < hd; ++i) {
          double acc = 0;
          for (int s = 0; s <= t; ++s) acc += p[size_t(s)] / sum * v[size_t((s * nkv + g) * hd + i)];
          att[size_t((t * nh + h) * hd + i)] = acc;
        }
      }
    V o(static_cast<size_t>(d));
    for (int t = 0; t < n; ++t) {
      matvec(b.lin[3].w, d, nh * hd, &att[size_t(t * nh * hd)], o.data());
      for (int j = 0; j < d; ++j) x[size_t(t * d + j)] += o[size_t(j)];
    }
    norm(x, b.mlp_norm, xn);
    V gt(size_t(c.d_ff)), up(size_t(c.d_ff));
    for (int t = 0; t < n; ++t) {
      matvec(b.lin[4].w, c.d_ff, d, &xn[size_t(t * d)], gt.data());
      matvec(b.lin[5].w, c.d_ff, d, &xn[size_t(t * d)], up.data());
      for (int i = 0; i < c.d_ff; ++i) gt[size_t(i)] = gt[size_t(i)] / (1 + std::exp(-gt[size_t(i)])) * up[size_t(i)];
      matvec(b.lin[6].w, d, c.d_ff, gt.data(), o.data());
      for (int j = 0; j < d; ++j) x[size_t(t * d + j)] += o[size_t(j)];
    }
  }
  norm(x, m.final_norm, xn);
  V logits(size_t(n) * size_t(c.vocab_size));
  for (int t = 0; t < n; ++t)
    for (int r = 0; r < c.vocab_size; ++r) {
      double s = 0;
      for (int j = 0; j < d; ++j) s += double(m.embed[size_t(r * d + j)]) * xn[size_t(t * d + j)];
      logits[size_t(t) * size_t(c.vocab_size) + size_t(r)] = s;
    }
  return logits;
}

static const std::vector<int32_t> kTokens = {0, 2102, 698, 261, 568, 14, 474, 314, 261, 590, 1007, 2267};

TEST(forward_matches_float64_reference) {
  const hci::Model m = hci::load_model(HCI_TINY_MODEL);
  const int n = int(kTokens.size()), vocab = m.cfg.vocab_size;
  const V ref = reference_logits(m, kTokens);
  hci::ForwardState st(m, 64);
  std::vector<float> hidden(size_t(n * m.cfg.d_model)), logits(size_t(n) * size_t(vocab));
  st.forward(kTokens.data(), n, hidden.data());
  st.logits(hidden.data(), n, logits.data());
  double max_diff = 0, max_abs = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    max_diff = std::max(max_diff, std::fabs(ref[i] - logits[i]));
    max_abs = std::max(max_abs, std::fabs(ref[i]));
  }
  std::printf("  max |logit - float64 reference| = %.3g (max |logit| %.3g)\n", max_diff, max_abs);
  CHECK(max_diff < 1e-4 * std::max(1.0, max_abs));
}

TEST(kv_cache_decode_matches_prefill) {
  const hci::Model m = hci::load_model(HCI_TINY_MODEL);
  const int n = int(kTokens.size()), d = m.cfg.d_model, vocab = m.cfg.vocab_size;
  hci::ForwardState full(m, 64), inc(m, 64);
  std::vector<float> h(size_t(n * d)), hl(static_cast<size_t>(d)), a(static_cast<size_t>(vocab)), b(static_cast<size_t>(vocab));
  full.forward(kTokens.data(), n, h.data());
  full.logits(h.data() + size_t((n - 1) * d), 1, a.data());
  inc.forward(kTokens.data(), 7, h.data());
  for (int i = 7; i < n; ++i) inc.forward(&kTokens[size_t(i)], 1, hl.data());
  inc.logits(hl.data(), 1, b.data());
  CHECK(inc.n_past() == n);
  double max_diff = 0;
  for (int i = 0; i < vocab; ++i) max_diff = std::max(max_diff, double(std::fabs(a[size_t(i)] - b[size_t(i)])));
  CHECK(max_diff < 1e-4);
  CHECK_THROWS(inc.forward(kTokens.data(), 60, h.data()), HCI_ERR_INVALID_ARGUMENT, "KV cache full");
  int32_t bad = 9000;
  inc.reset();
  CHECK_THROWS(inc.forward(&bad, 1, h.data()), HCI_ERR_INVALID_ARGUMENT, "outside the vocabulary");
}

TEST(matches_transformers_reference_logits) {
  const hci::Model m = hci::load_model(HCI_TINY_MODEL);
  const hci::Json ref = hci::parse_json(testutil::read_file(std::string(HCI_TINY_MODEL) + "/reference.json"), "reference.json");
  const int d = m.cfg.d_model, vocab = m.cfg.vocab_size;
  for (const hci::Json& p : ref.find("prompts")->array) {
    std::vector<int32_t> ids;
    for (const hci::Json& v : p.find("ids")->array) ids.push_back(int32_t(v.number));
    hci::ForwardState st(m, 128);
    std::vector<float> h(ids.size() * size_t(d)), logits(static_cast<size_t>(vocab));
    st.forward(ids.data(), int(ids.size()), h.data());
    st.logits(h.data() + (ids.size() - 1) * size_t(d), 1, logits.data());
    const auto& top = p.find("last_logits_top5")->array;
    const auto& vals = p.find("last_logits_top5_values")->array;
    for (size_t i = 0; i < top.size(); ++i) CHECK_NEAR(logits[size_t(top[i].number)], vals[i].number, 1e-3);
    CHECK(hci::argmax(logits.data(), vocab) == int32_t(top[0].number));
  }
}

TEST(eval_nll_is_thread_count_invariant) {
  hci::Model m = hci::load_model(HCI_TINY_MODEL);
  std::vector<int32_t> toks(256);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = int32_t((i * 7919) % 8192);
  const auto a = hci::eval_nll(m, toks.data(), int64_t(toks.size()), 64, 0, 1, nullptr, nullptr);
  const auto b = hci::eval_nll(m, toks.data(), int64_t(toks.size()), 64, 3, 2, nullptr, nullptr);
  CHECK(a.n_windows == 4 && a.n_predicted == 4 * 63);
  CHECK(b.n_windows == 3);
  // the first 3 windows' NLL must be part of the 4-window sum: score window 4 alone and compare
  const auto c = hci::eval_nll(m, toks.data() + 192, 64, 64, 0, 1, nullptr, nullptr);
  CHECK_NEAR(a.nll_sum, b.nll_sum + c.nll_sum, 1e-9 * a.nll_sum);
  // score_tokens agrees with eval_nll on one window
  std::vector<float> lp(63);
  hci::score_tokens(m, toks.data() + 192, 64, lp.data());
  double s = 0;
  for (float v : lp) s -= v;
  CHECK_NEAR(s, c.nll_sum, 1e-4 * c.nll_sum);
  CHECK_THROWS(hci::eval_nll(m, toks.data(), 10, 64, 0, 1, nullptr, nullptr), HCI_ERR_INVALID_ARGUMENT,
               "do not fill one window");
}

TEST_MAIN()
