#include "scoring.h"

#include <cmath>
#include <memory>

#include "cpu_ops.h"
#include "error.h"
#include "forward.h"
#include "parallel.h"

namespace hci {

EvalResult eval_nll(const Model& m, const int32_t* tokens, int64_t n_tokens, int seq_len,
                    int max_windows, int n_threads, int64_t* progress, const int32_t* cancel) {
  if (seq_len < 2) fail(HCI_ERR_INVALID_ARGUMENT, "eval: seq_len must be at least 2");
  if (seq_len > m.cfg.max_positions)
    fail(HCI_ERR_INVALID_ARGUMENT, "eval: seq_len " + std::to_string(seq_len) +
                                       " exceeds max_position_embeddings " +
                                       std::to_string(m.cfg.max_positions));
  if (max_windows < 0) fail(HCI_ERR_INVALID_ARGUMENT, "eval: max_windows must be >= 0");
  int64_t windows = n_tokens / seq_len;
  if (max_windows > 0 && windows > max_windows) windows = max_windows;
  if (windows == 0)
    fail(HCI_ERR_INVALID_ARGUMENT, "eval: " + std::to_string(n_tokens) +
                                       " tokens do not fill one window of " +
                                       std::to_string(seq_len));
  const int V = m.cfg.vocab_size, d = m.cfg.d_model;
  std::vector<double> nll(size_t(windows), 0.0);
  struct Worker {
    std::unique_ptr<ForwardState> st;
    std::vector<float> hidden, logits;
  };
  std::vector<Worker> workers(size_t(std::max(1, n_threads)));
  parallel_for(windows, n_threads, [&](int64_t w, int wi) {
    if (cancel && __atomic_load_n(cancel, __ATOMIC_RELAXED))
      fail(HCI_ERR_CANCELLED, "evaluation cancelled");
    Worker& wk = workers[size_t(wi)];
    if (!wk.st) {
      wk.st = std::make_unique<ForwardState>(m, seq_len);
      wk.hidden.resize(size_t(seq_len) * size_t(d));
      wk.logits.resize(size_t(seq_len) * size_t(V));
    }
    const int32_t* t = tokens + w * seq_len;
    wk.st->reset();
    wk.st->forward(t, seq_len, wk.hidden.data());
    wk.st->logits(wk.hidden.data(), seq_len - 1, wk.logits.data());
    double s = 0;
    for (int i = 0; i < seq_len - 1; ++i) {
      const float* row = wk.logits.data() + size_t(i) * size_t(V);
      s += log_sum_exp(row, V) - double(row[t[i + 1]]);
    }
    if (!std::isfinite(s))
      fail(HCI_ERR_NUMERIC, "eval: non-finite NLL in window " + std::to_string(w));
    nll[size_t(w)] = s;
    if (progress) __atomic_add_fetch(progress, 1, __ATOMIC_RELAXED);
  });
  EvalResult r;
  for (double v : nll) r.nll_sum += v;  // fixed order: the same sum for any thread count
  r.n_windows = windows;
  r.n_predicted = windows * (seq_len - 1);
  return r;
}

void score_tokens(const Model& m, const int32_t* tokens, int n, float* out) {
  if (n < 2) fail(HCI_ERR_INVALID_ARGUMENT, "score_tokens needs at least 2 tokens");
  if (n > m.cfg.max_positions)
    fail(HCI_ERR_INVALID_ARGUMENT, "score_tokens: " + std::to_string(n) +
                                       " tokens exceed max_position_embeddings");
  ForwardState st(m, n);
  const int V = m.cfg.vocab_size;
  std::vector<float> hidden(size_t(n) * size_t(m.cfg.d_model)), logits(size_t(n - 1) * size_t(V));
  st.forward(tokens, n, hidden.data());
  st.logits(hidden.data(), n - 1, logits.data());
  for (int i = 0; i < n - 1; ++i) {
    const float* row = logits.data() + size_t(i) * size_t(V);
    out[i] = float(double(row[tokens[i + 1]]) - log_sum_exp(row, V));
  }
}

int32_t argmax(const float* logits, int n) {
  int32_t best = 0;
  for (int i = 1; i < n; ++i)
    if (logits[i] > logits[best]) best = i;
  return best;
}

}  // namespace hci
