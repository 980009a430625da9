#include "calibration.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>

#include "error.h"
#include "parallel.h"

namespace hci {

static int group_width(const ModelConfig& c, int group) {
  switch (group) {
    case kInputO: return c.n_heads * c.head_dim;
    case kInputDown: return c.d_ff;
    default: return c.d_model;
  }
}

StatsCollector::StatsCollector(const Model& m, int layer_begin, int layer_end,
                               unsigned group_mask, bool full)
    : layer_begin_(layer_begin), layer_end_(layer_end), group_mask_(group_mask), full_(full) {
  stats_.resize(size_t(std::max(0, layer_end - layer_begin)));
  next_window_.assign(stats_.size(), std::array<int64_t, kInputGroups>{});
  for (auto& groups : stats_)
    for (int g = 0; g < kInputGroups; ++g) {
      if (!(group_mask >> g & 1u)) continue;
      ActStats& s = groups[size_t(g)];
      s.d = group_width(m.cfg, g);
      s.sq.assign(size_t(s.d), 0.0);
      if (full) s.H.assign(size_t(s.d) * size_t(s.d), 0.0);
    }
}

void StatsCollector::Observer::observe(int layer, int group, const float* x, int n, int d) {
  StatsCollector& c = c_;
  if (layer < c.layer_begin_ || layer >= c.layer_end_ || !(c.group_mask_ >> group & 1u)) return;
  ActStats& s = c.stats_[size_t(layer - c.layer_begin_)][size_t(group)];
  const size_t dd = size_t(d);
  if (c.full_) {
    xd_.resize(size_t(n) * dd);
    for (size_t i = 0; i < xd_.size(); ++i) xd_[i] = double(x[i]);
    syrk_.resize(dd * dd);
    // upper triangle of xdᵀ · xd  (xd is [n, d] row-major)
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, n, 1.0, xd_.data(), d, 0.0,
                syrk_.data(), d);
    std::unique_lock<std::mutex> lock(c.mu_);
    if (!c.wait_turn(lock, layer, group, window_)) return;
    for (size_t i = 0; i < dd; ++i) {
      double* dst = s.H.data() + i * dd;
      const double* src = syrk_.data() + i * dd;
      for (size_t j = i; j < dd; ++j) dst[j] += src[j];
    }
    s.n_rows += n;
    c.done_turn(layer, group);
  } else {
    sq_.assign(dd, 0.0);
    for (int t = 0; t < n; ++t) {
      const float* row = x + size_t(t) * dd;
      for (size_t j = 0; j < dd; ++j) sq_[j] += double(row[j]) * double(row[j]);
    }
    std::unique_lock<std::mutex> lock(c.mu_);
    if (!c.wait_turn(lock, layer, group, window_)) return;
    for (size_t j = 0; j < dd; ++j) s.sq[j] += sq_[j];
    s.n_rows += n;
    c.done_turn(layer, group);
  }
}

bool StatsCollector::wait_turn(std::unique_lock<std::mutex>& lock, int layer, int group,
                               int64_t window) {
  int64_t& next = next_window_[size_t(layer - layer_begin_)][size_t(group)];
  cv_.wait(lock, [&] { return aborted_ || next == window; });
  return !aborted_;
}

void StatsCollector::done_turn(int layer, int group) {
  ++next_window_[size_t(layer - layer_begin_)][size_t(group)];
  cv_.notify_all();
}

void StatsCollector::abort() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    aborted_ = true;
  }
  cv_.notify_all();
}

void StatsCollector::finish() {
  for (auto& groups : stats_)
    for (ActStats& s : groups) {
      if (s.d == 0 || s.n_rows == 0) continue;
      const double inv = 1.0 / double(s.n_rows);
      const size_t d = size_t(s.d);
      if (!s.H.empty()) {
        for (size_t i = 0; i < d; ++i)
          for (size_t j = i; j < d; ++j) {
            const double v = s.H[i * d + j] * inv;
            s.H[i * d + j] = v;
            s.H[j * d + i] = v;
          }
        for (size_t j = 0; j < d; ++j) s.sq[j] = s.H[j * d + j];
      } else {
        for (double& v : s.sq) v *= inv;
      }
    }
}

Calibration calibrate(const Model& m, const int32_t* tokens, int64_t n_tokens, int seq_len,
                      int n_windows, bool full_covariance, int n_threads, int64_t* progress,
                      const int32_t* cancel) {
  if (seq_len < 1) fail(HCI_ERR_INVALID_ARGUMENT, "calibrate: seq_len must be at least 1");
  if (seq_len > m.cfg.max_positions)
    fail(HCI_ERR_INVALID_ARGUMENT, "calibrate: seq_len " + std::to_string(seq_len) +
                                       " exceeds max_position_embeddings " +
                                       std::to_string(m.cfg.max_positions));
  if (n_windows < 0) fail(HCI_ERR_INVALID_ARGUMENT, "calibrate: n_windows must be >= 0");
  const int64_t available = n_tokens / seq_len;
  const int64_t windows = n_windows > 0 ? n_windows : available;
  if (windows == 0 || windows > available)
    fail(HCI_ERR_INVALID_ARGUMENT,
         "calibrate: " + std::to_string(n_tokens) + " tokens hold " + std::to_string(available) +
             " windows of " + std::to_string(seq_len) + ", " +
             (windows == 0 ? std::string("need at least one")
                           : "asked for " + std::to_string(windows)));
  if (windows > 0x7FFFFFFF) fail(HCI_ERR_INVALID_ARGUMENT, "calibrate: too many windows");
  const auto t0 = std::chrono::steady_clock::now();
  Calibration cal;
  cal.seq_len = seq_len;
  cal.n_windows = int(windows);
  cal.full_covariance = full_covariance;
  cal.tokens.assign(tokens, tokens + windows * seq_len);
  for (int64_t i = 0; i < windows * seq_len; ++i)
    if (tokens[i] < 0 || tokens[i] >= m.cfg.vocab_size)
      fail(HCI_ERR_INVALID_ARGUMENT, "calibrate: token id " + std::to_string(tokens[i]) +
                                         " at position " + std::to_string(i) +
                                         " is outside the vocabulary");

  const int L = m.cfg.n_layers, d = m.cfg.d_model;
  StatsCollector col(m, 0, L, (1u << kInputGroups) - 1, full_covariance);
  struct Worker {
    std::unique_ptr<ForwardState> st;
    std::unique_ptr<StatsCollector::Observer> obs;
    std::vector<float> x;
  };
  std::vector<Worker> workers(size_t(std::max(1, n_threads)));
  parallel_for(windows, n_threads, [&](int64_t w, int wi) {
    try {
      if (cancel && __atomic_load_n(cancel, __ATOMIC_RELAXED))
        fail(HCI_ERR_CANCELLED, "calibration cancelled");
      Worker& wk = workers[size_t(wi)];
      if (!wk.st) {
        wk.st = std::make_unique<ForwardState>(m, seq_len);
        wk.obs = std::make_unique<StatsCollector::Observer>(col);
        wk.st->set_observer(wk.obs.get());
        wk.st->set_weight_mode(WeightMode::FullPrecision);
        wk.x.resize(size_t(seq_len) * size_t(d));
      }
      wk.obs->set_window(w);
      wk.st->embed(cal.tokens.data() + w * seq_len, seq_len, wk.x.data());
      for (int l = 0; l < L; ++l) wk.st->block(l, wk.x.data(), seq_len);
    } catch (...) {
      col.abort();
      throw;
    }
    if (progress) __atomic_add_fetch(progress, 1, __ATOMIC_RELAXED);
  });
  col.finish();
  cal.layers = std::move(col.all());
  cal.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return cal;
}

struct BlockRunner::Worker {
  std::unique_ptr<ForwardState> st;
  std::unique_ptr<StatsCollector::Observer> obs;  // during collect()
  std::vector<float> scratch;
};

BlockRunner::BlockRunner(const Model& m, const Calibration& c, int n_threads,
                         const int32_t* cancel)
    : m_(m), c_(c), n_threads_(std::max(1, n_threads)), cancel_(cancel) {
  const size_t win = size_t(c.seq_len) * size_t(m.cfg.d_model);
  x_.resize(size_t(c.n_windows) * win);
  workers_.resize(size_t(n_threads_));
  for (auto& w : workers_) {
    w = std::make_unique<Worker>();
    w->st = std::make_unique<ForwardState>(m, c.seq_len);
    w->st->set_weight_mode(WeightMode::Backbone);
    w->scratch.resize(win);
  }
  for (int64_t w = 0; w < c.n_windows; ++w)
    workers_[0]->st->embed(c.tokens.data() + w * c.seq_len, c.seq_len, x_.data() + size_t(w) * win);
}

BlockRunner::~BlockRunner() = default;

void BlockRunner::for_windows(const std::function<void(int64_t, Worker&)>& fn,
                              const std::function<void()>& on_error) {
  parallel_for(c_.n_windows, n_threads_, [&](int64_t w, int wi) {
    try {
      if (cancel_ && __atomic_load_n(cancel_, __ATOMIC_RELAXED))
        fail(HCI_ERR_CANCELLED, "quantization cancelled");
      fn(w, *workers_[size_t(wi)]);
    } catch (...) {
      if (on_error) on_error();
      throw;
    }
  });
}

std::array<ActStats, kInputGroups> BlockRunner::collect(int layer, unsigned group_mask) {
  if (layer != next_) fail(HCI_ERR_INTERNAL, "BlockRunner::collect out of order");
  StatsCollector col(m_, layer, layer + 1, group_mask, true);
  const size_t win = size_t(c_.seq_len) * size_t(m_.cfg.d_model);
  for (auto& w : workers_) {
    w->obs = std::make_unique<StatsCollector::Observer>(col);
    w->st->set_observer(w->obs.get());
  }
  auto detach = [&] {
    for (auto& w : workers_) {
      w->st->set_observer(nullptr);
      w->obs.reset();
    }
  };
  try {
    for_windows(
        [&](int64_t w, Worker& wk) {
          wk.obs->set_window(w);
          std::copy_n(x_.data() + size_t(w) * win, win, wk.scratch.data());
          wk.st->block(layer, wk.scratch.data(), c_.seq_len);
        },
        [&] { col.abort(); });
  } catch (...) {
    detach();
    throw;
  }
  detach();
  col.finish();
  return std::move(col.layer(layer));
}

void BlockRunner::advance(int layer) {
  if (layer != next_) fail(HCI_ERR_INTERNAL, "BlockRunner::advance out of order");
  const size_t win = size_t(c_.seq_len) * size_t(m_.cfg.d_model);
  for_windows([&](int64_t w, Worker& wk) {
    wk.st->block(layer, x_.data() + size_t(w) * win, c_.seq_len);
  });
  ++next_;
}

}  // namespace hci
