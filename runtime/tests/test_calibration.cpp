// Calibration statistics against a direct float64 computation on the tiny checkpoint, the
// block runner of sequential GPTQ against full-model calibration, and sequential GPTQ's layer-1
// Hessian against a model whose block 0 is replaced by its quantized weights.
#include <algorithm>
#include <cmath>

#include "calibration.h"
#include "check.h"
#include "compensation.h"
#include "error.h"
#include "gptq.h"
#include "model.h"
#include "test_util.h"

static std::vector<int32_t> pseudo_tokens(int n, int vocab, uint32_t seed) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  uint32_t x = seed;
  for (auto& v : t) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    v = int32_t(2 + x % uint32_t(vocab - 2));
  }
  return t;
}

static double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}
static double max_diff(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return 1e300;
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

TEST(first_layer_attention_input_matches_direct_computation) {
  const hci::Model m = hci::load_model(HCI_TINY_MODEL);
  const int d = m.cfg.d_model, seq = 16, windows = 3;
  const auto toks = pseudo_tokens(seq * windows + 5, m.cfg.vocab_size, 7);  // a partial window left over
  const hci::Calibration c = hci::calibrate(m, toks.data(), int64_t(toks.size()), seq, 0, true, 2,
                                            nullptr, nullptr);
  CHECK(c.n_windows == windows && c.seq_len == seq && c.tokens.size() == size_t(seq * windows));
  // direct: x = RMSNorm(embed[t]) * attn_norm, H = mean x xᵀ
  std::vector<double> H(size_t(d * d), 0.0), sq(static_cast<size_t>(d), 0.0), x(static_cast<size_t>(d));
  const int N = seq * windows;
  for (int i = 0; i < N; ++i) {
    const float* e = m.embed.data() + size_t(toks[size_t(i)]) * size_t(d);
    double ss = 0;
    for (int j = 0; j < d; ++j) ss += double(e[j]) * e[j];
    const double inv = 1.0 / std::sqrt(ss / d + m.cfg.rms_norm_eps);
    for (int j = 0; j < d; ++j) x[size_t(j)] = m.blocks[0].attn_norm[size_t(j)] * e[j] * inv;
    for (int a = 0; a < d; ++a) {
      sq[size_t(a)] += x[size_t(a)] * x[size_t(a)] / N;
      for (int b = 0; b < d; ++b) H[size_t(a * d + b)] += x[size_t(a)] * x[size_t(b)] / N;
    }
  }
  for (int kind = 0; kind < 3; ++kind) {  // q, k, v share it
    const hci::ActStats& s = c.stats_of(kind);
    CHECK(s.d == d && s.n_rows == N);
    std::printf("  kind %d: max |H - direct| = %.3g (max |H| %.3g)\n", kind, max_diff(s.H, H), max_abs(H));
    CHECK(max_diff(s.H, H) < 1e-6 * max_abs(H));
    CHECK(max_diff(s.sq, sq) < 1e-6 * max_abs(sq));
  }
  // every group has E[x²] = diag(H) and a symmetric H of its width
  const int widths[4] = {d, m.cfg.n_heads * m.cfg.head_dim, d, m.cfg.d_ff};
  for (int l = 0; l < m.cfg.n_layers; ++l)
    for (int g = 0; g < hci::kInputGroups; ++g) {
      const hci::ActStats& s = c.layers[size_t(l)][size_t(g)];
      CHECK(s.d == widths[g] && s.n_rows == N && s.H.size() == size_t(s.d * s.d));
      for (int j = 0; j < s.d; ++j) CHECK(s.sq[size_t(j)] == s.H[size_t(j * s.d + j)] && s.sq[size_t(j)] > 0);
      for (int a = 0; a < s.d; a += 7)
        for (int b = 0; b < s.d; b += 5) CHECK(s.H[size_t(a * s.d + b)] == s.H[size_t(b * s.d + a)]);
    }
  // diagonal-only calibration and one thread give the same second moments
  const hci::Calibration c1 = hci::calibrate(m, toks.data(), int64_t(toks.size()), seq, windows,
                                             false, 1, nullptr, nullptr);
  CHECK(!c1.full_covariance && c1.layers[1][3].H.empty());
  for (int l = 0; l < m.cfg.n_layers; ++l)
    for (int g = 0; g < hci::kInputGroups; ++g) {
      const auto& a = c.layers[size_t(l)][size_t(g)].sq;
      CHECK(max_diff(a, c1.layers[size_t(l)][size_t(g)].sq) < 1e-12 * max_abs(a));
    }
  // window-ordered accumulation: bitwise the same for any thread count
  const hci::Calibration c3 = hci::calibrate(m, toks.data(), int64_t(toks.size()), seq, 0, true, 3,
                                             nullptr, nullptr);
  const hci::Calibration c1f = hci::calibrate(m, toks.data(), int64_t(toks.size()), seq, 0, true,
                                              1, nullptr, nullptr);
  for (int l = 0; l < m.cfg.n_layers; ++l)
    for (int g = 0; g < hci::kInputGroups; ++g) {
      CHECK(c.layers[size_t(l)][size_t(g)].H == c1f.layers[size_t(l)][size_t(g)].H);
      CHECK(c3.layers[size_t(l)][size_t(g)].H == c1f.layers[size_t(l)][size_t(g)].H);
    }
  CHECK_THROWS(hci::calibrate(m, toks.data(), 10, seq, 0, true, 1, nullptr, nullptr),
               HCI_ERR_INVALID_ARGUMENT, "need at least one");
  CHECK_THROWS(hci::calibrate(m, toks.data(), int64_t(toks.size()), seq, 4, true, 1, nullptr, nullptr),
               HCI_ERR_INVALID_ARGUMENT, "asked for 4");
  const int32_t cancel = 1;
  for (int threads : {1, 3})  // cancelled workers must not leave others waiting for their turn
    CHECK_THROWS(hci::calibrate(m, toks.data(), int64_t(toks.size()), seq, 0, true, threads,
                                nullptr, &cancel),
                 HCI_ERR_CANCELLED, "cancelled");
}

TEST(statistics_ignore_the_current_quantization) {
  hci::Model m = hci::load_model(HCI_TINY_MODEL);
  const auto toks = pseudo_tokens(64, m.cfg.vocab_size, 9);
  const hci::Calibration a = hci::calibrate(m, toks.data(), 64, 32, 0, true, 1, nullptr, nullptr);
  hci::QuantSettings s;
  s.bits = 2;
  s.group_size = 32;
  s.max_rank = 4;
  hci::quantize_model(m, s, 1, nullptr, nullptr);
  const hci::Calibration b = hci::calibrate(m, toks.data(), 64, 32, 0, true, 1, nullptr, nullptr);
  CHECK(max_diff(a.layers[1][hci::kInputDown].H, b.layers[1][hci::kInputDown].H) == 0);
}

TEST(block_runner_matches_full_model_calibration) {
  const hci::Model m = hci::load_model(HCI_TINY_MODEL);
  const auto toks = pseudo_tokens(96, m.cfg.vocab_size, 11);
  const hci::Calibration c = hci::calibrate(m, toks.data(), 96, 32, 0, true, 2, nullptr, nullptr);
  hci::BlockRunner runner(m, c, 2, nullptr);
  for (int l = 0; l < m.cfg.n_layers; ++l) {
    const auto st = runner.collect(l, 0xF);
    for (int g = 0; g < hci::kInputGroups; ++g) {
      const auto& want = c.layers[size_t(l)][size_t(g)].H;
      CHECK(max_diff(st[size_t(g)].H, want) < 1e-9 * max_abs(want));
    }
    runner.advance(l);
  }
  // only the groups asked for; cancelling a collect with several workers returns
  hci::BlockRunner r2(m, c, 3, nullptr);
  const auto st = r2.collect(0, 1u << hci::kInputDown);
  CHECK(st[hci::kInputAttn].d == 0 && st[hci::kInputDown].d == m.cfg.d_ff);
  const int32_t cancel = 1;
  hci::BlockRunner r3(m, c, 3, &cancel);
  CHECK_THROWS(r3.collect(0, 0xF), HCI_ERR_CANCELLED, "cancelled");
}

TEST(sequential_gptq_uses_the_quantized_earlier_blocks) {
  hci::Model m = hci::load_model(HCI_TINY_MODEL);
  const auto toks = pseudo_tokens(128, m.cfg.vocab_size, 13);
  m.calib = std::make_shared<hci::Calibration>(
      hci::calibrate(m, toks.data(), 128, 32, 0, false, 2, nullptr, nullptr));
  hci::QuantSettings s;
  s.bits = 3;
  s.group_size = 32;
  s.method = 1;
  int64_t progress = 0;
  hci::quantize_model(m, s, 2, &progress, nullptr);
  CHECK(progress == 14);
  // Independently: a model whose block 0 holds GPTQ's dequantized weights, calibrated in full
  // precision, has block 1's sequential Hessians.
  hci::Model ref = hci::load_model(HCI_TINY_MODEL);
  for (int k = 0; k < 7; ++k) ref.blocks[0].lin[size_t(k)].w = m.blocks[0].lin[size_t(k)].w_deq;
  const hci::Calibration rc = hci::calibrate(ref, toks.data(), 128, 32, 0, true, 1, nullptr, nullptr);
  const hci::Calibration fp = hci::calibrate(hci::load_model(HCI_TINY_MODEL), toks.data(), 128, 32,
                                             0, true, 1, nullptr, nullptr);
  for (int k = 0; k < 7; ++k) {
    // block 0 from the full-precision Hessian, block 1 from the sequential one
    for (int l = 0; l < 2; ++l) {
      const hci::Linear& lin = m.blocks[size_t(l)].lin[size_t(k)];
      const auto& H = (l == 0 ? fp : rc).layers[size_t(l)][size_t(hci::input_group(k))].H;
      hci::GptqSettings gs;
      gs.bits = 3;
      gs.group_size = 32;
      std::vector<uint8_t> codes;
      std::vector<float> scales, zeros, deq;
      std::vector<int32_t> g_idx;
      hci::gptq_quantize(lin.w.data(), lin.d_out, lin.d_in, H.data(), gs, codes, scales, zeros,
                         g_idx, deq);
      size_t mismatched = 0;
      for (size_t i = 0; i < codes.size(); ++i) mismatched += codes[i] != lin.codes[i];
      if (mismatched > codes.size() / 1000)
        std::printf("  layer %d kind %d: %zu of %zu codes differ\n", l, k, mismatched, codes.size());
      CHECK(mismatched <= codes.size() / 1000);
    }
  }
  // and block 1's sequential Hessian is not the full-precision one
  CHECK(max_diff(rc.layers[1][0].H, fp.layers[1][0].H) > 1e-6 * max_abs(fp.layers[1][0].H));
}

TEST_MAIN()
