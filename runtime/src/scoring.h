// Scoring entry points: windowed perplexity, per-token log-probabilities, greedy generation.
#pragma once

#include <cstdint>
#include <vector>

#include "model.h"

namespace hci {

struct EvalResult {
  double nll_sum = 0;
  int64_t n_predicted = 0;
  int64_t n_windows = 0;
};

// GPTQ protocol: floor(n / seq_len) windows (capped by max_windows > 0), each scored from a
// fresh context; windows are spread over n_threads workers. progress counts windows.
EvalResult eval_nll(const Model& m, const int32_t* tokens, int64_t n_tokens, int seq_len,
                    int max_windows, int n_threads, int64_t* progress, const int32_t* cancel);

// out[i] = log p(tokens[i+1] | tokens[..i]) for i < n - 1.
void score_tokens(const Model& m, const int32_t* tokens, int n, float* out);

// Index of the largest logit (the first one on ties, as torch.argmax).
int32_t argmax(const float* logits, int n);

}  // namespace hci
