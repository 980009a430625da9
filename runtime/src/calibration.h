// Calibration: second moments E[x²] and covariances H = E[x xᵀ] of every linear layer's input,
// collected in float64 by running the model on calibration token windows; and the block-by-block
// runner that sequential GPTQ uses to collect them from a partially quantized model.
#pragma once

#include <array>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "forward.h"
#include "model.h"

namespace hci {

// Statistics of one linear-input group (forward.h: q/k/v share one, gate/up share one).
struct ActStats {
  int d = 0;                // input width
  int64_t n_rows = 0;       // tokens accumulated
  std::vector<double> sq;   // [d] E[x_j²] (after finish(); sums before)
  std::vector<double> H;    // [d, d] E[x xᵀ], symmetric, row-major; empty when not collected
  bool full() const { return !H.empty(); }
};

// What hci_model_calibrate keeps in the model: the tokens (for sequential GPTQ) and the
// statistics of the full-precision model's linear inputs.
struct Calibration {
  std::vector<int32_t> tokens;  // [n_windows * seq_len]; window w = tokens[w*seq_len, +seq_len)
  int seq_len = 0;
  int n_windows = 0;
  bool full_covariance = false;  // H collected (else only E[x²])
  double seconds = 0;            // wall time of the statistics pass
  std::vector<std::array<ActStats, kInputGroups>> layers;  // [n_layers][group]

  const ActStats& stats_of(int linear_index) const {
    return layers[size_t(linear_index / 7)][size_t(input_group(linear_index % 7))];
  }
};

// Thread-safe accumulation of ActStats for the groups of some blocks. Each worker observes
// through its own Observer (scratch buffers); sums are added under a mutex, then finish() turns
// them into means. Float64 throughout: each block of inputs is copied to double and reduced with
// cblas_dsyrk (upper triangle) into worker scratch before it is added. Each window's sums are
// added in window order (a worker waits for the windows before its own), so the statistics are
// bitwise the same for any thread count. Every window must observe every collected group once,
// and a worker that fails must call abort() so that none waits for it forever.
class StatsCollector {
 public:
  // Collects blocks [layer_begin, layer_end), the groups whose bit is set in group_mask; `full`
  // collects H (else only E[x²]).
  StatsCollector(const Model& m, int layer_begin, int layer_end, unsigned group_mask, bool full);

  class Observer : public LinearInputObserver {
   public:
    explicit Observer(StatsCollector& c) : c_(c) {}
    void observe(int layer, int group, const float* x, int n, int d) override;
    // The window whose inputs the next observe() calls carry (0, 1, 2, ... across workers).
    void set_window(int64_t w) { window_ = w; }

   private:
    StatsCollector& c_;
    int64_t window_ = 0;
    std::vector<double> xd_, syrk_, sq_;
  };

  // Wakes every waiting worker and stops adding (the pass is failing).
  void abort();
  // Waits until it is `window`'s turn to add to slot (layer, group); false once aborted.
  bool wait_turn(std::unique_lock<std::mutex>& lock, int layer, int group, int64_t window);
  void done_turn(int layer, int group);
  // Divides the sums by the token count and mirrors H's upper triangle; sq = diag(H) when full.
  void finish();
  std::array<ActStats, kInputGroups>& layer(int l) { return stats_[size_t(l - layer_begin_)]; }
  std::vector<std::array<ActStats, kInputGroups>>& all() { return stats_; }

 private:
  int layer_begin_, layer_end_;
  unsigned group_mask_;
  bool full_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool aborted_ = false;
  std::vector<std::array<ActStats, kInputGroups>> stats_;
  std::vector<std::array<int64_t, kInputGroups>> next_window_;  // the window each slot adds next
};

// Runs the full-precision model on windows of `seq_len` tokens, tokens[w*seq_len ..] for
// w < n_windows (n_windows = 0: floor(n_tokens / seq_len)), and returns the statistics of every
// linear input, keeping a copy of the tokens used. progress counts windows; cancel stops.
Calibration calibrate(const Model& m, const int32_t* tokens, int64_t n_tokens, int seq_len,
                      int n_windows, bool full_covariance, int n_threads, int64_t* progress,
                      const int32_t* cancel);

// Sequential calibration for GPTQ: holds the input of the next block for every calibration
// window (n_windows * seq_len * d_model floats, starting with the embeddings) and moves it
// through the model one block at a time, running each block with the model's weights as they
// are at that moment (WeightMode::Backbone: quantized weights without factors where a layer is
// quantized, W elsewhere). So the statistics of block l reflect blocks < l as quantized, for one
// pass over the model in all (two block evaluations per block: collect, then advance).
class BlockRunner {
 public:
  BlockRunner(const Model& m, const Calibration& c, int n_threads, const int32_t* cancel);
  ~BlockRunner();
  // Statistics (full H) of block `layer`'s input groups in group_mask for the cached inputs;
  // `layer` must be the next block (the one advance() would apply).
  std::array<ActStats, kInputGroups> collect(int layer, unsigned group_mask);
  // Applies block `layer` (the next block) to the cached inputs.
  void advance(int layer);
  int next_layer() const { return next_; }

 private:
  struct Worker;
  // fn(window, worker) for every window in parallel; checks the cancel flag first; on_error
  // runs on the failing worker before its exception propagates.
  void for_windows(const std::function<void(int64_t, Worker&)>& fn,
                   const std::function<void()>& on_error = nullptr);

  const Model& m_;
  const Calibration& c_;
  int n_threads_;
  const int32_t* cancel_;
  int next_ = 0;
  std::vector<float> x_;  // [n_windows, seq_len, d_model]
  std::vector<std::unique_ptr<Worker>> workers_;
};

}  // namespace hci
