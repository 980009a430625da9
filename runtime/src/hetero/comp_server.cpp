#include "hetero/comp_server.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "error.h"

namespace hci {

namespace {
int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

CompServer::CompServer(std::vector<ServedPoint> points, Channel ch, const CompServerConfig& cfg)
    : points_(std::move(points)), ch_(ch), cfg_(cfg) {
  if (points_.empty()) fail(HCI_ERR_INVALID_ARGUMENT, "compensation server: no points");
  std::vector<int> cores;
  if (cfg_.first_core >= 0)
    for (int i = 0; i < std::max(1, cfg_.threads); ++i) cores.push_back(cfg_.first_core + i);
  pool_ = std::make_unique<WorkerPool>(std::max(1, cfg_.threads), cores);
  // Workers spin between the points of a pass (microseconds apart); a condition-variable
  // wake-up would cost more than a point's whole budget. They sleep after 50 ms idle.
  pool_->set_spin_us(50000);
  pool_->set_isolate(cfg_.isolate);
  // Decode passes on fewer workers (the first cores of the same set): a decode point's factors
  // are small, and its two fork-joins over many spinning threads cost more than they save (H100
  // and H200, W4 7B cpu-async with the controller: 4 workers gave twice the tokens/s of 12). The
  // large pool, idle during decode, then sleeps soon (its passes are milliseconds of GEMM).
  const int dt = cfg_.decode_threads;
  if (dt >= 1 && dt < pool_->size()) {
    decode_pool_ = std::make_unique<WorkerPool>(
        dt, std::vector<int>(cores.begin(), cores.begin() + std::min<size_t>(cores.size(), size_t(dt))));
    decode_pool_->set_spin_us(50000);
    decode_pool_->set_isolate(cfg_.isolate);
    pool_->set_spin_us(200);
  }
  rows_max_ = std::max(1, cfg_.rows_max);
  int max_rank = 0;
  for (const ServedPoint& sp : points_) {
    if (sp.cp->layers() > 16 || int(sp.linear.size()) != sp.cp->layers())
      fail(HCI_ERR_INVALID_ARGUMENT, "compensation server: a point has more than 16 layers or "
                                     "a linear index per layer is missing");
    max_rank = std::max(max_rank, sp.cp->total_rank());
    for (int l : sp.linear) n_linears_ = std::max(n_linears_, l + 1);
    std::vector<int> r(size_t(sp.cp->layers()));
    for (int j = 0; j < sp.cp->layers(); ++j) r[size_t(j)] = sp.cp->r_max(j);
    ranks_.push_back(r);
  }
  n_linears_ = (n_linears_ + 6) / 7 * 7;
  t_.assign(size_t(rows_max_) * size_t(std::max(1, max_rank)), 0.f);
  level_.assign(points_.size(), 1.0);
  span_ns_.assign(points_.size(), 0);
  rows_.assign(points_.size(), 0);
  prefill_.assign(points_.size(), 0);
  rank_sum_.assign(size_t(n_linears_), 0.0);
  thread_ = std::thread([this] { loop(); });
}

CompServer::~CompServer() {
  stop_.store(true, std::memory_order_release);
  if (thread_.joinable()) thread_.join();
}

void CompServer::restart() {
  stop_.store(true, std::memory_order_release);
  if (thread_.joinable()) thread_.join();
  ch_.hdr->words.ready.store(0, std::memory_order_relaxed);
  ch_.hdr->words.done.store(0, std::memory_order_release);
  stop_.store(false, std::memory_order_release);
  thread_ = std::thread([this] { loop(); });
}

int64_t CompServer::factor_bytes() const {
  int64_t s = 0;
  for (const ServedPoint& sp : points_) s += sp.cp->bytes_stored();
  return s;
}

int CompServer::max_d_in() const {
  int m = 0;
  for (const ServedPoint& sp : points_) m = std::max(m, sp.cp->d_in());
  return m;
}

int CompServer::max_width() const {
  int m = 0;
  for (const ServedPoint& sp : points_) {
    int w = 0;
    for (int j = 0; j < sp.cp->layers(); ++j) w += sp.cp->d_out(j);
    m = std::max(m, w);
  }
  return m;
}

void CompServer::loop() {
  for (uint32_t seq = 1;; ++seq) {
    // Spin while hand-offs are near (decode steps are milliseconds apart); after 20 ms without
    // one, poll every 50 µs so an idle model does not hold a core.
    const auto& ready = ch_.hdr->words.ready;
    const int64_t t0 = now_ns();
    uint32_t spins = 0;
    while (ready.load(std::memory_order_acquire) < seq) {
      if (stop_.load(std::memory_order_relaxed)) return;
      __builtin_ia32_pause();  // leave the core's other hyperthread its issue slots
      if (++spins < 4096) continue;
      spins = 0;
      if (now_ns() - t0 > 20000000)
        std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    serve(seq);
  }
}

void CompServer::serve(uint32_t seq) {
  const int64_t t0 = now_ns();
  const int P = n_points();
  const int p = int(ch_.hdr->point);
  const uint32_t rows_word = ch_.hdr->rows;
  const bool prefill = (rows_word & kPrefillFlag) != 0;
  const int n = int(rows_word & ~kPrefillFlag);
  const int expect = int((seq - 1) % uint32_t(P));
  if (p != expect || n < 1 || n > rows_max_) {
    // Answer anyway so the GPU does not hang; the engine reports the error on its next call.
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.empty())
      error_ = "compensation hand-off " + std::to_string(seq) + " carried point " +
               std::to_string(p) + " with " + std::to_string(n) + " rows; expected point " +
               std::to_string(expect) + " and 1.." + std::to_string(rows_max_) + " rows";
    publish_done(ch_.hdr->words, seq);
    return;
  }
  // The previous point's GPU wait is final now (the GPU wrote it before this hand-off).
  if (seq > 1) account_wait((p + P - 1) % P);
  const ServedPoint& sp = points_[size_t(p)];
  const CompPoint& cp = *sp.cp;
  const int L = cp.layers();
  int ranks[16];
  float* y[16];
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (int j = 0; j < L && j < 16; ++j) ranks[j] = ranks_[size_t(p)][size_t(j)];
  }
  int64_t off = 0, width = 0;
  for (int j = 0; j < L && j < 16; ++j) {
    y[j] = ch_.y + off;
    off += int64_t(n) * cp.d_out(j);
    width += cp.d_out(j);
  }
  WorkerPool& pool = !prefill && decode_pool_ ? *decode_pool_ : *pool_;
  cp.apply(ranks, ch_.x, n, y, t_.data(), pool, cfg_.level, /*accumulate=*/false);
  publish_done(ch_.hdr->words, seq);
  const int64_t span = now_ns() - t0;

  std::lock_guard<std::mutex> lock(mu_);
  span_ns_[size_t(p)] = span;
  rows_[size_t(p)] = n;
  prefill_[size_t(p)] = prefill;
  if (prefill) {
    st_.prefill_rows += p == 0 ? n : 0;
    st_.prefill_cpu_ns += double(span);
    return;
  }
  st_.cpu_busy_ns += double(span);
  st_.bytes_to_host += int64_t(n) * cp.d_in() * 4;
  st_.bytes_to_device += int64_t(n) * width * 4;
  st_.factor_bytes_read += cp.bytes_read(ranks);
  if (p == P - 1) {
    ++st_.steps;
    int64_t used = 0, full = 0;
    for (int q = 0; q < P; ++q)
      for (int j = 0; j < points_[size_t(q)].cp->layers(); ++j) {
        const int r = ranks_[size_t(q)][size_t(j)];
        used += r;
        full += points_[size_t(q)].cp->r_max(j);
        rank_sum_[size_t(points_[size_t(q)].linear[size_t(j)])] += r;
      }
    st_.rank_fraction_sum += full ? double(used) / double(full) : 0.0;
  }
}

void CompServer::account_wait(int q) {
  const uint32_t w = ch_.wait_ns ? reinterpret_cast<const std::atomic<uint32_t>*>(ch_.wait_ns)[q].load(
                                       std::memory_order_acquire)
                                 : 0;
  std::lock_guard<std::mutex> lock(mu_);
  if (rows_[size_t(q)] == 0 || prefill_[size_t(q)]) return;
  st_.gpu_wait_ns += double(w);
  if (cfg_.controller) control(q, span_ns_[size_t(q)], int64_t(w));
}

void CompServer::control(int q, int64_t span_ns, int64_t wait_ns) {
  double& lv = level_[size_t(q)];
  if (wait_ns > cfg_.slack_ns) {
    // The GPU reached its wait (span − wait) after the hand-off: fit 90% of that window. A wait
    // longer than the whole span means the hand-off was seen late (latency, preemption): cut
    // gently while the CPU's own work is substantial, and not at all once it is negligible (a
    // rank cut cannot remove latency).
    const int64_t window = span_ns - wait_ns;
    if (window > 0)
      lv *= std::clamp(0.9 * double(window) / double(span_ns), 0.5, 0.97);
    else if (span_ns > 4 * cfg_.slack_ns)
      lv *= 0.9;
  } else {
    lv = std::min(1.0, lv + std::max(lv * cfg_.probe, 0.5 * cfg_.probe));
  }
  apply_level(q);
}

void CompServer::apply_level(int p) {
  const CompPoint& cp = *points_[size_t(p)].cp;
  for (int j = 0; j < cp.layers(); ++j)
    ranks_[size_t(p)][size_t(j)] =
        std::clamp(int(std::lround(level_[size_t(p)] * cp.r_max(j))), 0, cp.r_max(j));
}

int64_t CompServer::involuntary_switches() const {
  const int64_t a = pool_->involuntary_switches();
  const int64_t b = decode_pool_ ? decode_pool_->involuntary_switches() : 0;
  return a < 0 || b < 0 ? -1 : a + b;
}

CompServerStats CompServer::stats() {
  const int64_t sw = involuntary_switches();
  std::lock_guard<std::mutex> lock(mu_);
  CompServerStats s = st_;
  s.preemptions = sw < 0 ? -1 : sw - switches_at_reset_;
  return s;
}

void CompServer::reset_stats() {
  const int64_t sw = involuntary_switches();
  std::lock_guard<std::mutex> lock(mu_);
  switches_at_reset_ = sw < 0 ? 0 : sw;
  st_ = CompServerStats{};
  std::fill(rank_sum_.begin(), rank_sum_.end(), 0.0);
}

void CompServer::ranks(int32_t* full, int32_t* last, double* mean, int n) {
  std::lock_guard<std::mutex> lock(mu_);
  for (int i = 0; i < n; ++i) {
    if (full) full[i] = 0;
    if (last) last[i] = 0;
    if (mean) mean[i] = 0;
  }
  for (size_t q = 0; q < points_.size(); ++q)
    for (int j = 0; j < points_[q].cp->layers(); ++j) {
      const int l = points_[q].linear[size_t(j)];
      if (l < 0 || l >= n) continue;
      if (full) full[l] = points_[q].cp->r_max(j);
      if (last) last[l] = ranks_[q][size_t(j)];
      if (mean) mean[l] = st_.steps ? rank_sum_[size_t(l)] / double(st_.steps) : ranks_[q][size_t(j)];
    }
}

void CompServer::set_ranks(const int32_t* ranks, int n) {
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t q = 0; q < points_.size(); ++q)
    for (int j = 0; j < points_[q].cp->layers(); ++j) {
      const int l = points_[q].linear[size_t(j)];
      if (l >= n) fail(HCI_ERR_INVALID_ARGUMENT, "ranks: too few entries");
      if (ranks[l] < 0 || ranks[l] > points_[q].cp->r_max(j))
        fail(HCI_ERR_INVALID_ARGUMENT, "rank " + std::to_string(ranks[l]) + " of linear " +
                                           std::to_string(l) + " is outside 0.." +
                                           std::to_string(points_[q].cp->r_max(j)));
    }
  for (size_t q = 0; q < points_.size(); ++q)
    for (int j = 0; j < points_[q].cp->layers(); ++j)
      ranks_[q][size_t(j)] = ranks[points_[q].linear[size_t(j)]];
  cfg_.controller = false;
}

bool CompServer::controller() {
  std::lock_guard<std::mutex> lock(mu_);
  return cfg_.controller;
}

std::string CompServer::error() {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

}  // namespace hci
