#include "hetero/comp_server.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "error.h"
#include "hetero/tagged_words.h"

namespace hci {

namespace {
// HCINFER_CONTROLLER_LOG=1: the controller's decisions to stderr (diagnosis)
bool controller_log() {
  static const bool on = [] {
    const char* e = std::getenv("HCINFER_CONTROLLER_LOG");
    return e && e[0] == '1';
  }();
  return on;
}

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
    for (int v : r) full_rank_sum_ += v;
    ranks_.push_back(r);
  }
  n_linears_ = (n_linears_ + 6) / 7 * 7;
  // t: rows_max rows for a row-split A pass, or a copy per worker of 16 rows (column split,
  // decode); tp_: the column split's partial sums; ss_: partial sums of squares per worker, row
  const size_t workers = size_t(pool_->size());
  t_.assign(std::max(size_t(rows_max_), workers * kSplitRows) * size_t(std::max(1, max_rank)), 0.f);
  tp_.assign(workers * kSplitRows * size_t(std::max(1, max_rank)), 0.f);
  ss_.assign(workers * kSplitRows, 0.f);
  xs_.assign(size_t(rows_max_) * size_t(max_d_in()), 0.f);
  for (const ServedPoint& sp : points_)
    if (!sp.norm_gamma.empty() && int(sp.norm_gamma.size()) != sp.cp->d_in())
      fail(HCI_ERR_INVALID_ARGUMENT, "compensation server: a point's RMSNorm weights are not d_in long");
  level_.assign(points_.size(), 1.0);
  for (const ServedPoint& sp : points_) {
    std::vector<int> full(size_t(sp.cp->layers()));
    for (int j = 0; j < sp.cp->layers(); ++j) full[size_t(j)] = sp.cp->r_max(j);
    full_bytes_.push_back(double(sp.cp->bytes_read(full.data())));
  }
  lat_ns_.assign(points_.size(), {});
  lat_n_.assign(points_.size(), 0);
  low_passes_.assign(points_.size(), 0);
  last_window_.assign(points_.size(), 0);
  last_turn_.assign(points_.size(), 0);
  span_ns_.assign(points_.size(), 0);
  rows_.assign(points_.size(), 0);
  prefill_.assign(points_.size(), 0);
  rank_sum_.assign(size_t(n_linears_), 0.0);
  pass_rank_.assign(size_t(n_linears_), 0.0);
  on_.assign(points_.size(), 1);
  starved_.assign(points_.size(), 0);
  cost_ns_ = cfg_.point_cost_ns;
  const char* dp = std::getenv("HCINFER_DECODE_POOL");  // auto (default), small, large
  decode_pool_mode_ = dp && std::strcmp(dp, "small") == 0 ? 1 : dp && std::strcmp(dp, "large") == 0 ? 2 : 0;
  large_decode_ = decode_pool_mode_ == 2;
  const char* pf = std::getenv("HCINFER_PREFETCH");  // points to prefetch (0: off)
  prefetch_points_ = pf && *pf ? std::atoi(pf) : cfg_.prefetch_points;
  const char* st = std::getenv("HCINFER_SERVE_TRACE");
  serve_trace_ = st && st[0] == '1';
  thread_ = std::thread([this] { loop(); });
}

CompServer::~CompServer() {
  stop_.store(true, std::memory_order_release);
  if (thread_.joinable()) thread_.join();
  if (serve_trace_)
    for (int g = 0; g < 4; ++g) {
      const double* a = serve_trace_sum_ + 5 * g;
      if (a[4] == 0) continue;
      std::fprintf(stderr,
                   "serve trace point %% 4 = %d (%.0f decode hand-offs), us: since the last DONE "
                   "%.2f, HEAD %.2f, x taken %.2f, y written and DONE %.2f\n",
                   g, a[4], a[0] / a[4] / 1e3, a[1] / a[4] / 1e3, a[2] / a[4] / 1e3,
                   a[3] / a[4] / 1e3);
    }
}

void CompServer::restart() {
  stop_.store(true, std::memory_order_release);
  if (thread_.joinable()) thread_.join();
  // Sequence numbers start at 1 again: no word may keep a tag of the run before.
  ll_at(&ch_.hdr->head[0])->store(0, std::memory_order_relaxed);
  ll_at(&ch_.hdr->head[1])->store(0, std::memory_order_relaxed);
  std::memset(const_cast<uint64_t*>(ch_.x), 0, size_t(rows_max_) * size_t(max_d_in()) * 8);
  std::memset(ch_.y, 0, size_t(rows_max_) * size_t(max_width()) * 8);
  ch_.hdr->passes.store(0, std::memory_order_relaxed);
  passes_seen_.store(0, std::memory_order_relaxed);
  ch_.hdr->done.store(0, std::memory_order_release);
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_wait_ = -1;
    pass_wait_ns_ = 0;
    pass_late_ns_ = 0;
    pass_served_ = 0;
    pass_bytes_ = 0;
    std::fill(pass_rank_.begin(), pass_rank_.end(), 0.0);
  }
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
  // The tags start at 0 (construction, restart) and only grow.
  uint32_t last_seq = 0, last_pass = 0;
  const std::atomic<uint64_t>& head = *ll_at(&ch_.hdr->head[0]);
  const auto& passes = ch_.hdr->passes;
  for (;;) {
    // Spin while hand-offs are near (decode steps are milliseconds apart); after 20 ms without
    // one, poll every 50 µs so an idle model does not hold a core.
    const int64_t t0 = now_ns();
    uint32_t spins = 0, k = 0;
    uint64_t h = 0;
    for (;;) {
      // HEAD first: a pass end the GPU published before this hand-off (a kernel before the one
      // that wrote HEAD, whose writes were flushed when it completed) is then visible below
      h = head.load(std::memory_order_acquire);
      k = passes.load(std::memory_order_acquire);
      if (ll_seq(h) != last_seq || k != last_pass) break;
      if (stop_.load(std::memory_order_relaxed)) return;
      __builtin_ia32_pause();  // leave the core's other hyperthread its issue slots
      if (++spins < 4096) continue;
      spins = 0;
      if (now_ns() - t0 > 20000000)
        std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    // A pass's end comes after all its hand-offs and before the next pass's first.
    for (; last_pass != k; ++last_pass) end_pass(last_pass);
    passes_seen_.store(last_pass, std::memory_order_release);
    if (ll_seq(h) != last_seq) {
      serve(ll_seq(h), ll_word(h));
      last_seq = ll_seq(h);
    }
    // Idle until the next hand-off: the next points' factors into the workers' caches, so that
    // their products read them there (the reads move from the critical path into the GPU's time
    // on other points). Interrupted by a hand-off or a pass end (taken up again after it).
    if (prefetch_from_ >= 0 && prefetch_after(prefetch_from_, last_seq, last_pass))
      prefetch_from_ = -1;
  }
}

bool CompServer::prefetch_after(int point, uint32_t seq, uint32_t pass) {
  const int P = n_points();
  const int ahead = std::min(prefetch_points_, 4);
  if (ahead <= 0) return true;
  int next[4], cnt = 0;
  int ranks[4][16];
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (int s = 1; s <= P && cnt < ahead; ++s) {
      const int q = (point + s) % P;
      if (!on_[size_t(q)]) continue;
      const std::vector<int>& r = ranks_[size_t(q)];
      for (size_t j = 0; j < r.size() && j < 16; ++j) ranks[cnt][j] = r[j];
      next[cnt++] = q;
    }
  }
  // the pool serve() picks for a decode hand-off
  WorkerPool& pool = decode_pool_ && !large_decode_ ? *decode_pool_ : *pool_;
  const std::atomic<uint64_t>& head = *ll_at(&ch_.hdr->head[0]);
  const auto& passes = ch_.hdr->passes;
  auto interrupted = [&] {
    return ll_seq(head.load(std::memory_order_acquire)) != seq ||
           passes.load(std::memory_order_acquire) != pass || stop_.load(std::memory_order_relaxed);
  };
  const int64_t t0 = now_ns();
  std::atomic<bool> cut{false};
  pool.run([&](int w) {
    const int W = pool.size();
    for (int i = 0; i < cnt; ++i) {
      const bool all = points_[size_t(next[i])].cp->worker_ranges(
          ranks[i], w, W, [&](const uint8_t* range, int64_t bytes) {
            // a hint per cache line (into L2); a look at HEAD every 2 KiB
            for (int64_t o = 0; o < bytes; o += 64) {
              if ((o & 2047) == 0 && interrupted()) return false;
              __builtin_prefetch(range + o, 0, 2);
            }
            if (bytes > 0) __builtin_prefetch(range + bytes - 1, 0, 2);
            return true;
          });
      if (!all) {
        cut.store(true, std::memory_order_relaxed);
        return;
      }
    }
  });
  const double spent = double(now_ns() - t0);
  std::lock_guard<std::mutex> lock(mu_);
  st_.cpu_busy_ns += spent;  // the workers' time, as a product's span is
  st_.prefetch_ns += spent;
  return !cut.load();
}

void CompServer::take_x(const ServedPoint& sp, int n, uint32_t seq, bool norm, int w, int W,
                        SpinBarrier& bar, std::atomic<bool>& stopped) {
  const int d = sp.cp->d_in();
  float* xs = xs_.data();
  if (n <= kSplitRows) {
    // Column split (CompPoint::apply_tagged with t_part): this worker's columns of every row,
    // as their words arrive; with the RMSNorm, the rows' sums of squares from every worker's
    // part (one barrier) and this worker's columns normalized.
    int c0, c1;
    CompPoint::input_columns(d, w, W, &c0, &c1);
    for (int b = 0; b < n; ++b) {
      float* x = xs + size_t(b) * size_t(d);
      if (!tagged_unpack(ch_.x + int64_t(b) * d + c0, x + c0, c1 - c0, seq, cfg_.level, &stop_))
        stopped.store(true);
      if (norm) ss_[size_t(w) * kSplitRows + size_t(b)] = sum_squares(x + c0, c1 - c0, cfg_.level);
    }
    if (!norm) return;
    bar.wait();
    const float* g = sp.norm_gamma.data();
    for (int b = 0; b < n; ++b) {
      float ss = 0.f;
      for (int v = 0; v < W; ++v) ss += ss_[size_t(v) * kSplitRows + size_t(b)];
      const float inv = 1.0f / std::sqrt(ss / float(d) + sp.norm_eps);
      float* x = xs + size_t(b) * size_t(d);
      for (int c = c0; c < c1; ++c) x[c] = g[c] * (x[c] * inv);
      if (sp.norm_round != ServedPoint::Round::None)
        round_to_half(x + c0, c1 - c0, sp.norm_round == ServedPoint::Round::F16, cfg_.level);
    }
    return;
  }
  // Row split (prefill chunks): all of x before the A pass, unpacked in slices.
  const int64_t total = int64_t(n) * d;
  const int64_t b = total * w / W, e = total * (w + 1) / W;
  if (!tagged_unpack(ch_.x + b, xs + b, e - b, seq, cfg_.level, &stop_)) stopped.store(true);
  if (!norm) return;
  bar.wait();
  if (w != 0) return;
  const float* g = sp.norm_gamma.data();
  for (int r = 0; r < n; ++r) {
    float* x = xs + size_t(r) * size_t(d);
    const float inv = 1.0f / std::sqrt(sum_squares(x, d, cfg_.level) / float(d) + sp.norm_eps);
    for (int c = 0; c < d; ++c) x[c] = g[c] * (x[c] * inv);
    if (sp.norm_round != ServedPoint::Round::None)
      round_to_half(x, d, sp.norm_round == ServedPoint::Round::F16, cfg_.level);
  }
}

void CompServer::serve(uint32_t seq, uint32_t point) {
  const int64_t t0 = now_ns();
  const int P = n_points();
  uint64_t rw = 0;
  if (!ll_wait(&ch_.hdr->head[1], seq, &rw, &stop_)) return;
  const int p = int(point);
  const uint32_t rows_word = ll_word(rw);
  const bool prefill = (rows_word & kPrefillFlag) != 0;
  const bool norm = (rows_word & kNormFlag) != 0;
  const int n = int(rows_word & kRowsMask);
  const int expect = int((seq - 1) % uint32_t(P));  // (points the GPU skips leave gaps)
  const bool bad_norm = p == expect && norm && points_[size_t(p)].norm_gamma.empty();
  if (p != expect || n < 1 || n > rows_max_ || bad_norm) {
    // Answer anyway (zeros over the whole buffer) so the GPU does not hang; the engine reports
    // the error on its next call.
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.empty())
      error_ = "compensation hand-off " + std::to_string(seq) + " carried point " +
               std::to_string(p) + " with " + std::to_string(n) + " rows" +
               (bad_norm ? " and a residual to normalize but the point has no RMSNorm" : "") +
               "; expected point " + std::to_string(expect) + " and 1.." +
               std::to_string(rows_max_) + " rows";
    // Only once the GPU is done reading the last Y: after this hand-off's input where it can be
    // read, else after a pause far longer than the GPU's reads take.
    if (p >= 0 && p < P && n >= 1 && n <= rows_max_) {
      const int64_t cnt = int64_t(n) * points_[size_t(p)].cp->d_in();
      if (!tagged_unpack(ch_.x, xs_.data(), cnt, seq, cfg_.level, &stop_)) return;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    const int64_t all = int64_t(rows_max_) * max_width();
    for (int64_t i = 0; i < all; ++i)
      ll_at(ch_.y + i)->store(ll_pack(0.f, seq), std::memory_order_relaxed);
    ch_.hdr->done.store(seq, std::memory_order_release);
    return;
  }
  // The previous point's GPU wait is final now (the GPU wrote it before this hand-off).
  if (pending_wait_ >= 0) account_wait(pending_wait_);
  pending_wait_ = -1;
  const ServedPoint& sp = points_[size_t(p)];
  const CompPoint& cp = *sp.cp;
  const int L = cp.layers();
  int ranks[16];
  uint64_t* y[16];
  {
    // the controller chooses decode ranks only: prefill under it uses the full ranks
    std::lock_guard<std::mutex> lock(mu_);
    for (int j = 0; j < L && j < 16; ++j)
      ranks[j] = prefill && cfg_.controller ? cp.r_max(j) : ranks_[size_t(p)][size_t(j)];
  }
  int64_t off = 0, width = 0;
  for (int j = 0; j < L && j < 16; ++j) {
    y[j] = ch_.y + off;
    off += int64_t(n) * cp.d_out(j);
    width += cp.d_out(j);
  }
  // Decode hand-offs on the small pool (latency-bound points: 6 workers measured best, 10-12 much
  // slower) unless the last decode pass's points averaged more than kLargePointBytes of factors
  // (bandwidth-bound: the large pool's 12 workers keep more reads in flight; H100 host, rank 32
  // 168.7 -> 220.1 tok/s, rank 128 43.9 -> 61.8).
  WorkerPool& pool = !prefill && decode_pool_ && !large_decode_ ? *decode_pool_ : *pool_;
  const int64_t t_head = now_ns();
  // One parallel section: the input (and its RMSNorm), then the product (CompPoint::Prologue).
  std::atomic<bool> stopped{false};
  int64_t t_x = 0;
  const CompPoint::Prologue take = [&](int w, int W, SpinBarrier& bar) {
    take_x(sp, n, seq, norm, w, W, bar, stopped);
    if (w == 0) t_x = now_ns();
  };
  cp.apply_tagged(ranks, xs_.data(), n, y, seq, t_.data(), pool, cfg_.level, &take,
                  n <= kSplitRows ? tp_.data() : nullptr);
  if (stopped.load()) return;  // (the server is stopping)
  ch_.hdr->done.store(seq, std::memory_order_release);
  const int64_t t_done = now_ns();
  const int64_t span = t_done - t0;
  if (serve_trace_ && !prefill) {
    // per point of a 4-point layer (q/k/v, o, gate/up, down): since the last DONE, HEAD, x, y
    double* a = serve_trace_sum_ + 5 * (p % 4);
    a[0] += last_done_ns_ ? double(t0 - last_done_ns_) : 0.0;
    a[1] += double(t_head - t0);
    a[2] += double(t_x - t_head);
    a[3] += double(t_done - t_x);
    a[4] += 1;
  }
  last_done_ns_ = t_done;

  prefetch_from_ = prefill || n > kSplitRows ? -1 : p;
  std::lock_guard<std::mutex> lock(mu_);
  span_ns_[size_t(p)] = span;
  rows_[size_t(p)] = n;
  prefill_[size_t(p)] = prefill;
  if (prefill) {
    st_.prefill_rows += p == 0 ? n : 0;
    st_.prefill_cpu_ns += double(span);
    return;
  }
  pending_wait_ = p;
  ++pass_served_;
  const int64_t bytes = cp.bytes_read(ranks);
  pass_bytes_ += bytes;
  if (bytes > (64 << 10)) {  // CPU speed from a substantial product (span includes a fork-join)
    const double bps = double(bytes) / (double(std::max<int64_t>(span, 1000)) * 1e-9);
    cpu_bps_ = cpu_bps_ > 0 ? 0.8 * cpu_bps_ + 0.2 * bps : bps;
  }
  for (int j = 0; j < L && j < 16; ++j) pass_rank_[size_t(sp.linear[size_t(j)])] += ranks[j];
  st_.cpu_busy_ns += double(span);
  // tagged words: 8 bytes a value, and the two header words
  st_.bytes_to_host += int64_t(n) * cp.d_in() * 8 + 16;
  st_.bytes_to_device += int64_t(n) * width * 8;
  st_.factor_bytes_read += bytes;
}

void CompServer::end_pass(uint32_t k) {
  // the stamp was written before the release store of `passes` that the loop acquired
  const PassStamp s = ch_.hdr->stamps[k % kPassStamps];
  if (pending_wait_ >= 0) account_wait(pending_wait_);  // the pass's last point
  pending_wait_ = -1;
  std::lock_guard<std::mutex> lock(mu_);
  if (s.decode) {
    ++st_.steps;
    double used = 0;
    const double full = double(full_rank_sum_);
    for (size_t l = 0; l < pass_rank_.size(); ++l) {
      used += pass_rank_[l];
      rank_sum_[l] += pass_rank_[l];
    }
    st_.rank_fraction_sum += full > 0 ? used / full : 0.0;
    if (!starving_.empty() && (since_change_ >= kSetPeriod || phase_ != Phase::Run)) {
      // one set change for the points that starved since the last (on the set's schedule)
      for (int q : starving_)
        if (on_[size_t(q)]) {
          ++starved_[size_t(q)];
          set_on(q, false);
        }
      starving_.clear();
      set_changed();
    }
    if (cfg_.controller && s.t_end > s.t_begin)
      control_points(int64_t(s.t_end - s.t_begin), pass_late_ns_, pass_served_);
  }
  // (with hysteresis: the controller's levels move the mean across the line from pass to pass,
  // and each switch wakes the other pool's workers)
  if (s.decode && pass_served_ > 0) {
    const int64_t mean = pass_bytes_ / pass_served_;
    large_decode_ = decode_pool_mode_ == 2 ||
                    (decode_pool_mode_ == 0 &&
                     (large_decode_ ? mean > kLargePointBytes / 2 : mean > kLargePointBytes));
  }
  std::fill(pass_rank_.begin(), pass_rank_.end(), 0.0);
  pass_wait_ns_ = 0;
  pass_late_ns_ = 0;
  pass_served_ = 0;
  pass_bytes_ = 0;
}

void CompServer::account_wait(int q) {
  auto read = [q](const uint32_t* a) {
    return a ? reinterpret_cast<const std::atomic<uint32_t>*>(a)[q].load(std::memory_order_acquire)
             : 0u;
  };
  const uint32_t w = read(ch_.wait_ns), window = read(ch_.window_ns), turn = read(ch_.turn_ns);
  std::lock_guard<std::mutex> lock(mu_);
  if (rows_[size_t(q)] == 0 || prefill_[size_t(q)]) return;
  st_.gpu_wait_ns += double(w);
  st_.window_ns += double(window);
  pass_wait_ns_ += int64_t(w);
  // the part of the wait the CPU caused: its turnaround past the window (the rest of a wait is
  // the GPU's own reads of y); without a window, all of it
  pass_late_ns_ += window > 0 ? (turn > window ? int64_t(turn) - int64_t(window) : 0) : int64_t(w);
  if (cfg_.controller)
    control(q, span_ns_[size_t(q)], int64_t(w), int64_t(window), int64_t(turn));
}

void CompServer::control(int q, int64_t span_ns, int64_t wait_ns, int64_t window_ns,
                         int64_t turn_ns) {
  double& lv = level_[size_t(q)];
  const bool waited = wait_ns > cfg_.slack_ns;
  bool hopeless = false;
  last_window_[size_t(q)] = window_ns;
  last_turn_[size_t(q)] = turn_ns;
  if (window_ns > 0) {
    // The turnaround (x handed over to correction found), measured where the GPU's first look
    // missed the correction; else the CPU's span plus the hand-off's latency both ways, learned
    // from the passes where it was measured (a median: a preempted pass gives one sample far off).
    const bool measured = turn_ns > 0;
    if (measured) {
      const double l = double(turn_ns - span_ns);
      lat_ns_[size_t(q)][size_t(lat_n_[size_t(q)]++ % kLatSamples)] = l;
      lat_all_[size_t(lat_all_n_++ % kLatAllSamples)] = l;
    }
    const double turnaround = measured ? double(turn_ns) : double(span_ns) + latency(q);
    // bytes the point may add (< 0: must shed) for its turnaround to fit (1 − margin) · window
    const double fit = (1.0 - kWindowMargin) * double(window_ns);
    const double bps = cpu_bps_ > 0 ? cpu_bps_ : kDefaultBps;
    const double now = double(points_[size_t(q)].cp->bytes_read(ranks_[size_t(q)].data()));
    const double target = std::clamp(
        (now + (fit - turnaround) * 1e-9 * bps) / std::max(full_bytes_[size_t(q)], 1.0), 0.0, 1.0);
    const bool over = measured && turnaround > fit;
    if (over)
      lv = std::min(lv, target);  // cut at once
    else  // grow: half way to the fit, and by the probe at least (it finds λ and the margin)
      lv = std::min(1.0, std::max(lv + 0.5 * (target - lv),
                                  lv + std::max(lv * cfg_.probe, 0.5 * cfg_.probe)));
    // a turnaround past the fit at rank 0: no rank would have brought it within the window
    hopeless = over && now <= 0.0;
  } else if (waited) {
    // No window from the GPU: it reached its wait (span − wait) after the hand-off; fit 90% of
    // that. A wait longer than the whole span means the hand-off was seen late (latency,
    // preemption): cut gently while the CPU's own work is substantial, and not at all once it is
    // negligible (a rank cut cannot remove latency).
    const int64_t window = span_ns - wait_ns;
    if (window > 0)
      lv *= std::clamp(0.9 * double(window) / double(span_ns), 0.05, 0.97);
    else if (span_ns > 4 * cfg_.slack_ns)
      lv *= 0.9;
  } else {
    lv = std::min(1.0, lv + std::max(lv * cfg_.probe, 0.5 * cfg_.probe));
  }
  apply_level(q);
  // Turnarounds that even rank 0 would not have fitted in kStarvePasses of the point's passes
  // running: the point only costs its hand-off and its waits; turned off with the set's next
  // change. (Without a window: every rank at 0 that long.)
  if (cfg_.slowdown >= 0 && phase_ == Phase::Run && on_[size_t(q)]) {
    bool zero = true;
    for (int r : ranks_[size_t(q)]) zero = zero && r == 0;
    int& low = low_passes_[size_t(q)];
    low = (window_ns > 0 ? hopeless : zero) ? low + 1 : 0;
    if (low >= kStarvePasses &&
        std::find(starving_.begin(), starving_.end(), q) == starving_.end()) {
      if (controller_log())
        std::fprintf(stderr,
                     "ctl point %d starved (window %.1f us, turnaround %.1f us, span %.1f us, "
                     "wait %.1f us)\n",
                     q, window_ns / 1e3, turn_ns / 1e3, span_ns / 1e3, wait_ns / 1e3);
      low = 0;
      starving_.push_back(q);
    }
  }
}

double CompServer::latency(int q) const {
  // a median of the first n values of a ring, on the stack (called per point per pass)
  auto median = [](const auto& a, int n) {
    auto v = a;
    std::nth_element(v.begin(), v.begin() + n / 2, v.begin() + n);
    return v[size_t(n / 2)];
  };
  const int n = lat_n_[size_t(q)];
  if (n >= 3) return median(lat_ns_[size_t(q)], std::min(n, kLatSamples));
  // too few of its own: the last samples of any point (none yet: a few microseconds)
  return lat_all_n_ > 0 ? median(lat_all_, std::min(lat_all_n_, kLatAllSamples)) : 4000.0;
}

void CompServer::apply_level(int p) {
  const CompPoint& cp = *points_[size_t(p)].cp;
  for (int j = 0; j < cp.layers(); ++j)
    ranks_[size_t(p)][size_t(j)] =
        on_[size_t(p)] ? std::clamp(int(std::lround(level_[size_t(p)] * cp.r_max(j))), 0, cp.r_max(j))
                       : 0;
}

void CompServer::set_on(int p, bool on) {
  on_[size_t(p)] = on ? 1 : 0;
  if (on) {
    const CompPoint& cp = *points_[size_t(p)].cp;
    int rmax = 0;
    std::vector<int> full(size_t(cp.layers()));
    for (int j = 0; j < cp.layers(); ++j) {
      rmax = std::max(rmax, cp.r_max(j));
      full[size_t(j)] = cp.r_max(j);
    }
    double& lv = level_[size_t(p)];
    // A point turned on starts where its work would take kStartNs at the CPU's measured speed
    // (at its old level, or at full rank, it could take far longer than its window: the CPU's
    // speed and the other points have changed meanwhile, and each pass over costs a GPU wait);
    // the controller grows it from there within a few passes.
    if (cpu_bps_ > 0) {
      const double full_b = double(cp.bytes_read(full.data()));
      lv = std::min(lv, kStartNs * 1e-9 * cpu_bps_ / std::max(full_b, 1.0));
    }
    if (rmax > 0) lv = std::max(lv, 1.0 / rmax);  // at least rank 1 somewhere
  }
  apply_level(p);
}

double CompServer::value(int p) const {
  // the ranks it keeps (a point off: those it kept when last on); 0 once starved
  if (starved_[size_t(p)] > 0) return 0.0;
  const CompPoint& cp = *points_[size_t(p)].cp;
  double r = 0;
  for (int j = 0; j < cp.layers(); ++j) r += cp.r_max(j);
  return r * std::max(level_[size_t(p)], 1e-3);
}

void CompServer::control_points(int64_t step_ns, int64_t late_ns, int served) {
  if (cfg_.slowdown < 0) return;
  constexpr size_t kCalibPasses = 3;
  const int P = n_points();
  if (controller_log()) {  // one line per decode pass
    int n_on = 0;
    for (char c : on_) n_on += c ? 1 : 0;
    std::fprintf(stderr,
                 "ctl phase %d skip %d since %d step %.1f us t0 %.1f us served %d on %d "
                 "CPU-caused wait %.1f us cost %.2f us\n",
                 int(phase_), skip_, since_change_, step_ns / 1e3, t0_ns_ / 1e3, served, n_on,
                 late_ns / 1e3, cost_ns_ / 1e3);
    if (phase_ == Phase::Run && passes_run_ % 32 == 0)  // per point % 4 (a dense block's groups)
      for (int g = 0; g < 4; ++g) {
        double win = 0, span = 0, turn = 0, lv = 0, lat = 0;
        int cnt = 0, off = 0, measured = 0;
        for (int p = g; p < P; p += 4) {
          if (!on_[size_t(p)]) {
            ++off;
            continue;
          }
          win += double(last_window_[size_t(p)]);
          span += double(span_ns_[size_t(p)]);
          turn += double(last_turn_[size_t(p)]);
          measured += last_turn_[size_t(p)] > 0 ? 1 : 0;
          lv += level_[size_t(p)];
          lat += latency(p);
          ++cnt;
        }
        const double c = std::max(cnt, 1);
        std::fprintf(stderr,
                     "ctl points %% 4 = %d: %d on, %d off; means of those on: window %.1f us, "
                     "span %.1f us, latency %.1f us, level %.3f; turnaround %.1f us where "
                     "measured (%d) (CPU %.2f GB/s)\n",
                     g, cnt, off, win / c / 1e3, span / c / 1e3, lat / c / 1e3, lv / c,
                     measured ? turn / measured / 1e3 : 0.0, measured, cpu_bps_ / 1e9);
      }
  }
  // points by value, best first; ties: the longer backbone product (more time to hide under)
  auto ranked = [&](bool on) {
    std::vector<int> v;
    for (int p = 0; p < P; ++p)
      if (bool(on_[size_t(p)]) == on) v.push_back(p);
    auto window = [&](int p) {
      const CompPoint& cp = *points_[size_t(p)].cp;
      int64_t w = 0;
      for (int j = 0; j < cp.layers(); ++j) w += cp.d_out(j);
      return w * cp.d_in();
    };
    std::stable_sort(v.begin(), v.end(), [&](int a, int b) {
      const double va = value(a), vb = value(b);
      if (va != vb) return va > vb;
      return window(a) > window(b);
    });
    return v;
  };
  if (phase_ == Phase::Start) {  // measure the backbone alone: every point off
    saved_on_.clear();
    if (t0_ns_ > 0) {  // a repeated measurement: the set in force comes back after it
      saved_on_ = on_;
      saved_version_ = version_;
    }
    for (int p = 0; p < P; ++p) set_on(p, false);
    phase_ = Phase::Calib;
    set_changed();
    return;
  }
  if (skip_ > 0) {
    --skip_;
    return;
  }
  if (phase_ == Phase::Calib) {
    if (served != 0) return;  // an older set still ran
    recent_.push_back(step_ns);
    if (recent_.size() < kCalibPasses) return;
    t0_ns_ = *std::min_element(recent_.begin(), recent_.end());
    phase_ = Phase::Run;
    passes_run_ = 0;
    prev_own_ns_ = double(t0_ns_);
    prev_n_ = 0;
    if (!saved_on_.empty()) {  // the set before the measurement, under its old version
      for (int p = 0; p < P; ++p) set_on(p, saved_on_[size_t(p)] != 0);
      saved_on_.clear();
      set_changed();
      version_ = saved_version_;
      return;
    }
    // every point on (but the starved); the budget then turns off the least valuable
    for (int p = 0; p < P; ++p)
      if (starved_[size_t(p)] == 0) set_on(p, true);
    set_changed();
    return;
  }
  if (++passes_run_ >= cfg_.recalib_passes) {  // measure the backbone again
    phase_ = Phase::Start;
    control_points(step_ns, late_ns, served);
    return;
  }
  ++since_change_;
  ++since_off_;
  recent_.push_back(step_ns);
  own_.push_back(step_ns - late_ns);
  // Decisions on the set at most every kSetPeriod passes, from the median of its last
  // kSetPeriod: each change re-captures the engine's decode graph (milliseconds of host time, the
  // GPU idle) and its first passes run with points new to their levels.
  if (since_change_ < kSetPeriod) return;
  auto median = [](const std::vector<int64_t>& v) {
    std::vector<int64_t> last(v.end() - kSetPeriod, v.end());
    std::nth_element(last.begin(), last.begin() + kSetPeriod / 2, last.end());
    return double(last[kSetPeriod / 2]);
  };
  const double t = median(recent_);  // the step
  const double own = median(own_);   // the same without the waits the CPU caused
  int n_on = 0;
  for (char c : on_) n_on += c ? 1 : 0;
  if (served != n_on) return;  // an older set still ran
  // A point's GPU cost from the difference between this set and the one before it (measured
  // minutes apart the backbone's own step has grown with the context, so not against t0), once
  // per set: taken as it is where many points changed, else averaged with the estimate before.
  if (since_change_ == kSetPeriod && n_on != prev_n_) {
    const double c_obs = (own - prev_own_ns_) / double(n_on - prev_n_);
    if (c_obs > 0)
      cost_ns_ = std::clamp(std::abs(n_on - prev_n_) >= 4 ? c_obs : 0.5 * cost_ns_ + 0.5 * c_obs,
                            500.0, 100000.0);
  }
  prev_own_ns_ = own;
  prev_n_ = n_on;
  // Points off where the step without the CPU's lateness is over budget: that is the points'
  // own GPU cost, which only fewer points can lower (the lateness is the levels' to remove, and
  // they do within a few passes). Points back on only where the whole step has room for two
  // points' cost, and not within kOffCooldown passes of turning some off (no see-saw).
  const double budget = (1.0 + cfg_.slowdown) * double(t0_ns_);
  const double over = own - budget, excess = t - budget;
  const double per = cost_ns_;
  if (over > 0.5 * per && n_on > 0) {  // (half a point's cost of dead band: noise)
    const std::vector<int> on = ranked(true);
    const int k = std::min(n_on, int(std::ceil(over / per)));
    for (int i = 0; i < k; ++i) set_on(on[on.size() - 1 - size_t(i)], false);
    since_off_ = 0;
    set_changed();
  } else if (-excess > 2.0 * cost_ns_ && since_off_ >= kOffCooldown && n_on < P) {
    std::vector<int> off = ranked(false);
    off.erase(std::remove_if(off.begin(), off.end(), [&](int p) { return value(p) <= 0; }),
              off.end());  // (the starved stay off)
    if (off.empty()) return;
    const int k = std::clamp(int(-excess / (2.0 * per)), 1, int(off.size()));
    for (int i = 0; i < k; ++i) set_on(off[size_t(i)], true);
    set_changed();
  }
}

void CompServer::set_changed() {
  ++version_;
  skip_ = 2;  // the engine may still run the old set for a step or two
  since_change_ = 0;
  recent_.clear();
  own_.clear();
}

uint64_t CompServer::active_points(std::vector<char>& on) {
  std::lock_guard<std::mutex> lock(mu_);
  on = on_;
  // every set with a point on has its own version (>= 1); every point off is version 0
  return std::any_of(on_.begin(), on_.end(), [](char c) { return c != 0; }) ? version_ : 0;
}

int64_t CompServer::backbone_step_ns() {
  std::lock_guard<std::mutex> lock(mu_);
  return t0_ns_;
}

int64_t CompServer::involuntary_switches() const {
  const int64_t a = pool_->involuntary_switches();
  const int64_t b = decode_pool_ ? decode_pool_->involuntary_switches() : 0;
  return a < 0 || b < 0 ? -1 : a + b;
}

void CompServer::catch_up() {
  const uint32_t want = ch_.hdr->passes.load(std::memory_order_acquire);
  const int64_t t0 = now_ns();
  while (int32_t(passes_seen_.load(std::memory_order_acquire) - want) < 0 &&
         now_ns() - t0 < 100000000)
    std::this_thread::yield();
}

CompServerStats CompServer::stats() {
  catch_up();
  const int64_t sw = involuntary_switches();
  std::lock_guard<std::mutex> lock(mu_);
  CompServerStats s = st_;
  s.preemptions = sw < 0 ? -1 : sw - switches_at_reset_;
  return s;
}

void CompServer::reset_stats() {
  catch_up();
  const int64_t sw = involuntary_switches();
  std::lock_guard<std::mutex> lock(mu_);
  switches_at_reset_ = sw < 0 ? 0 : sw;
  st_ = CompServerStats{};
  std::fill(rank_sum_.begin(), rank_sum_.end(), 0.0);
}

void CompServer::ranks(int32_t* full, int32_t* last, double* mean, int n) {
  catch_up();
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
  for (size_t q = 0; q < points_.size(); ++q) {
    on_[q] = 1;
    for (int j = 0; j < points_[q].cp->layers(); ++j)
      ranks_[q][size_t(j)] = ranks[points_[q].linear[size_t(j)]];
  }
  ++version_;
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
