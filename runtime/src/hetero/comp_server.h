// The CPU side of heterogeneous compensation: a serving thread (plus its worker pool) that
// answers the GPU's hand-offs, one compensation point at a time, in pass order, and the run-time
// rank controller.
//
// Per forward pass the GPU visits points 0..P-1 in order; for point p of pass k it writes the
// point's input x into the channel's X buffer and the two header words, all tagged with
// seq = k·P + p + 1, and later reads Y (each word once it carries seq) into the point's outputs
// (handoff.h has the protocol and its ordering guarantees). Only one point is ever in flight,
// because the GPU needs point p's correction before it can produce point p+1's input, so one X
// and one Y buffer suffice:
//   X  [rows, d_in_p]                       tagged float32, written by the GPU
//   Y  [Σ_j rows · d_out_j] = y_0 | y_1 |…  tagged float32, y_j [rows, d_out_j], by the CPU
// When HEAD[1] carries kNormFlag, X is the residual stream before the point's RMSNorm and the
// server applies it (ServedPoint::norm_gamma), rounding to the activation type as the GPU does.
// The GPU also records, per point, on its own clock: how long it spun after the product waiting
// for the correction (wait_ns[p]; this includes its own PCIe reads of Y where its import kernel
// became resident only as the product ended, so it is not the CPU's lateness), the point's window
// (window_ns[p]: its input handed over to its backbone product's end, the time the CPU had), and
// where its first look at the correction missed it, the turnaround (turn_ns[p]: input handed over
// to correction found; 0 when the correction was there at the first look). The server reads
// point p's figures once point p+1 has been handed over (by then the GPU has written them), for
// the statistics and the controller.
//
// Between decode hand-offs the workers prefetch the next points' factors (prefetch_points, the
// parts each worker reads: CompPoint::worker_ranges) into their L2 caches, until the next
// hand-off or pass end shows up; a point's product then reads from cache what the idle time
// brought in, so the CPU's reads move off the critical path into the GPU's time on other points.
// (H100 host, W4 7B cpu-async on 16 SMs, same call: rank 64 114.0/119.5 -> 125.0/127.4 tok/s,
// rank 32 and 16 unchanged at ~128; two points ahead measured no better than one.)
//
// Rank controller (cpu-async decode passes only), two parts:
//  - Ranks within a point: each point has a level in [0, 1] and uses the rank prefix
//    round(level · r_max_j) of each of its layers (factors are ordered by singular value, so a
//    prefix is the best answer of its rank; r_max_j comes from the sensitivity-aware allocation,
//    so the controller scales that allocation per point). After each pass it sets the level from
//    the point's own figures: its window W, the turnaround T the GPU saw (where its first look
//    missed the correction), the CPU's span s (HEAD seen to correction published) and the factor
//    bytes read. Where T is not known (the correction was there at the first look) it is taken as
//    s + λ, λ (the hand-off's latency both ways, T − s) learned from the passes where it was. The
//    slack (1 − kWindowMargin) · W − T, times the CPU's factor throughput, is the bytes the point
//    may add (or must shed): a measured T past that margin cuts the level to fit at once;
//    otherwise it grows half way toward the fit, and by `probe` at least (which finds λ and the
//    margin again when the CPU speeds up). A point whose measured turnaround would not fit even at
//    rank 0, kStarvePasses of its passes running, is turned off ("starved") and stays off: its
//    window is the GPU's product time, which does not change. (Without a window from the GPU,
//    e.g. an older channel: the level is cut to fit 90% of span − wait after a wait above
//    `slack_ns` and grows by `probe` otherwise.)
//  - Which points are handed over at all: a point costs the GPU its hand-off kernels (and the
//    fusions its correction blocks) even at rank 0, microseconds against a decode step of a
//    millisecond or two. The GPU stamps every pass's begin and end (PassStamp); the controller
//    first measures the backbone alone (every point off, `kCalibPasses` passes), then turns every
//    point on (but the starved) and keeps the decode step within (1 + slowdown) of the
//    backbone's, deciding every kSetPeriod passes (each change re-captures the engine's decode
//    graph): when the step less the waits the CPU caused is over, it turns off the points of
//    least value (the ranks they keep), when the whole step has room for two points' cost it
//    turns points back on (not within kOffCooldown passes of turning some off; a point turned on
//    starts at the level whose work would take kStartNs at the CPU's measured speed). A point's
//    GPU cost is estimated from the step times of consecutive sets (their difference over the
//    difference in points on). The engine reads the set (active_points) before each decode step; an "off" point
//    runs the plain backbone path, with no hand-off. The backbone measurement is repeated every
//    `recalib_passes` decode passes (its step grows with the context), after which the set in
//    force returns under its old version (the engine keeps that graph). Off points report rank 0.
// MoE: a routed expert's branch is a point too; a pass visits only the routed experts' points,
// which the header's point id already allows (the server accepts any increasing sequence).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "hetero/comp_point.h"
#include "hetero/handoff.h"
#include "hetero/worker_pool.h"

namespace hci {

// Header words beside the hand-off words (mapped host memory).
// The GPU's clock (ns) at the begin and end of a forward pass that used the channel.
struct PassStamp {
  uint64_t t_begin = 0, t_end = 0;
  uint32_t decode = 0;  // 1: a decode pass
  uint32_t pad = 0;
};
constexpr int kPassStamps = 8;  // ring: pass k's stamp is stamps[k % 8]

struct ChannelHeader {
  // HEAD (GPU): tagged words (point id, seq) and (rows | kPrefillFlag | kNormFlag, seq)
  alignas(64) uint64_t head[2] = {0, 0};
  // DONE (CPU): seq of the last correction completed (the GPU times its wait with it)
  alignas(64) std::atomic<uint32_t> done{0};
  // passes ended so far (the GPU writes k + 1 with release after stamps[k % 8])
  alignas(64) std::atomic<uint32_t> passes{0};
  PassStamp stamps[kPassStamps];
};

// The GPU side of a pass end, for tests that play the GPU (the engine's kernels do the same).
inline void publish_pass_end(ChannelHeader& h, uint32_t pass, uint64_t t_begin, uint64_t t_end,
                             bool decode) {
  PassStamp& s = h.stamps[pass % kPassStamps];
  s.t_begin = t_begin;
  s.t_end = t_end;
  s.decode = decode ? 1u : 0u;
  h.passes.store(pass + 1, std::memory_order_release);
}
// Where the channel lives (mapped pinned host memory in the engine; plain memory in tests).
struct Channel {
  ChannelHeader* hdr = nullptr;
  const uint64_t* x = nullptr;           // tagged [rows_max, max d_in]
  uint64_t* y = nullptr;                 // tagged [rows_max · max Σ_j d_out_j]
  const uint32_t* wait_ns = nullptr;     // [P] GPU spin per point (0 when not measured)
  const uint32_t* window_ns = nullptr;   // [P] GPU window per point (0 / nullptr: not measured)
  const uint32_t* turn_ns = nullptr;     // [P] GPU-seen turnaround (0: not known this pass)
};

// One point as the server sees it.
struct ServedPoint {
  std::unique_ptr<CompPoint> cp;
  std::vector<int> linear;  // per layer j: the linear's global index (layer · 7 + kind)
  // The RMSNorm before the point (hand-offs with kNormFlag): x = round(gamma ⊙ h / rms(h)),
  // rounded to the GPU's activation type; empty gamma: the GPU always hands over x itself.
  std::vector<float> norm_gamma;  // [d_in]
  float norm_eps = 0.f;
  enum class Round : int { None = 0, F16 = 1, BF16 = 2 } norm_round = Round::None;
};

struct CompServerConfig {
  int threads = 1;          // workers, the serving thread included
  int decode_threads = 0;   // workers of decode passes (the first of them); 0 or >= threads: all
  int first_core = -1;      // pin workers to first_core.. (-1: no pinning)
  bool controller = false;  // run-time rank controller on decode passes
  int rows_max = 512;       // most rows one hand-off may carry
  SimdLevel level = SimdLevel::Scalar;
  int64_t slack_ns = 1500;  // controller: GPU waits below this count as none
  double probe = 0.02;      // controller: relative level increase per pass without a wait
  // controller: decode steps may take (1 + slowdown) × the backbone's (< 0: every point stays
  // on, ranks only). Every point on costs the GPU ~4.5% in hand-offs alone (H100, W4 7B on 16
  // SMs), so a budget below that can only be met by turning most points off.
  double slowdown = 0.08;
  double point_cost_ns = 6000;  // controller: first guess of a point's GPU cost (then measured)
  int recalib_passes = 128;     // controller: decode passes between backbone measurements
  bool isolate = false;     // keep the process's other threads off the workers' cores
                            // (WorkerPool::set_isolate; needs first_core >= 0)
  // After a decode hand-off, until the next one (or a pass end) shows up, the workers pull the
  // next this many points' factors into their caches (the parts each will read); 0: off.
  // HCINFER_PREFETCH=N overrides it.
  int prefetch_points = 1;
};

// Sums since the last reset (decode passes unless said otherwise; the GPU marks prefill passes in
// the header).
struct CompServerStats {
  int64_t steps = 0;
  double cpu_busy_ns = 0, gpu_wait_ns = 0;
  double window_ns = 0;  // Σ of the points' windows (the GPU's, where it measured them)
  int64_t bytes_to_host = 0, bytes_to_device = 0, factor_bytes_read = 0;
  double rank_fraction_sum = 0;
  int64_t prefill_rows = 0;
  double prefill_cpu_ns = 0;
  double prefetch_ns = 0;  // of cpu_busy_ns: the workers prefetching factors between hand-offs
  int64_t preemptions = 0;  // involuntary context switches of the workers (-1: unknown)
};

class CompServer {
 public:
  CompServer(std::vector<ServedPoint> points, Channel ch, const CompServerConfig& cfg);
  ~CompServer();  // stops the thread
  CompServer(const CompServer&) = delete;
  CompServer& operator=(const CompServer&) = delete;

  int n_points() const { return int(points_.size()); }
  int threads() const { return pool_->size(); }
  int decode_threads() const { return decode_pool_ ? decode_pool_->size() : pool_->size(); }
  bool controller();
  int64_t factor_bytes() const;
  // Rows of x per point and max Σ_j d_out_j: what the channel's buffers must hold per row.
  int max_d_in() const;
  int max_width() const;

  // Statistics (a consistent copy) and their reset.
  CompServerStats stats();
  void reset_stats();
  // Per linear (n = 7 · layers): full ranks, the last decode pass's, the mean over decode passes.
  void ranks(int32_t* full, int32_t* last, double* mean, int n);
  // Fixes the ranks (turns the controller off); each within 0..full.
  void set_ranks(const int32_t* ranks, int n);
  // The points decode passes hand over (on[p] != 0) and the set's version, which changes with it
  // (the engine re-captures its decode graph then); 0 when every point is off, and a set the
  // controller returns to after measuring the backbone keeps its version. All on without the
  // controller.
  uint64_t active_points(std::vector<char>& on);
  // Backbone-alone decode step (ns) the controller last measured (0: not yet).
  int64_t backbone_step_ns();
  // A protocol violation seen by the server ("" when none).
  std::string error();
  // Stops the thread, zeroes the hand-off words and starts again expecting sequence 1 (the GPU's
  // pass counter must be reset with it); only while no pass is in flight.
  void restart();

 private:
  void loop();
  void serve(uint32_t seq, uint32_t point);
  // Prefetch of the points after `point` (prefetch_points), on the pool that serves decode
  // hand-offs, until HEAD moves past `seq` or the pass count past `pass`; true when it finished.
  bool prefetch_after(int point, uint32_t seq, uint32_t pass);
  // Worker w of W: its part of X of hand-off `seq` into xs_ (rows n of d_in), then (worker 0,
  // after the barrier) the RMSNorm where `norm`; `stopped` set when the server stops meanwhile.
  void take_x(const ServedPoint& sp, int n, uint32_t seq, bool norm, int w, int W,
              SpinBarrier& bar, std::atomic<bool>& stopped);
  void end_pass(uint32_t k);
  void account_wait(int q);
  void control(int q, int64_t span_ns, int64_t wait_ns, int64_t window_ns, int64_t turn_ns);
  void apply_level(int p);
  // the point set (under mu_); late_ns: the GPU's waits the CPU caused in the pass
  void control_points(int64_t step_ns, int64_t late_ns, int served);
  void set_on(int p, bool on);
  void set_changed();  // a new set: a new version, and its passes measured afresh
  double value(int p) const;

  std::vector<ServedPoint> points_;
  Channel ch_;
  CompServerConfig cfg_;
  // Declared first so that it is destroyed last: each pool moves other threads off its cores
  // (isolation) and back on destruction, and the decode pool's cores are among the large one's.
  std::unique_ptr<WorkerPool> decode_pool_;  // decode passes: the first decode_threads cores
  std::unique_ptr<WorkerPool> pool_;         // all workers: prefill (and decode without the above)
  int64_t switches_at_reset_ = 0;  // involuntary_switches() at the last reset
  int64_t involuntary_switches() const;
  std::vector<float> t_;        // scratch [rows_max · max total rank]
  std::vector<float> xs_;       // the hand-off's x [rows_max · max d_in]
  static constexpr int kSplitRows = 16;  // hand-offs of up to this many rows: column-split A pass
  std::vector<float> tp_;       // column split: partial t [workers, 16, max total rank]
  std::vector<float> ss_;       // column split: partial sums of squares [workers, 16]
  // HCINFER_SERVE_TRACE=1: per point % 4, sums of the serving thread's phases (printed at exit)
  bool serve_trace_ = false;
  double serve_trace_sum_[20] = {};
  int64_t last_done_ns_ = 0;
  int rows_max_ = 0;

  std::mutex mu_;  // guards everything below against the API thread
  std::vector<std::vector<int>> ranks_;  // per point, per layer: ranks in use
  std::vector<double> level_;            // controller level per point
  std::vector<double> full_bytes_;       // per point: factor bytes read at the full ranks
  // per point: the hand-off's latency both ways (ns: turnaround − span), the last kLatSamples of
  // the passes where the GPU measured the turnaround (a ring; lat_n_ counts them all)
  static constexpr int kLatSamples = 8;
  std::vector<std::array<double, kLatSamples>> lat_ns_;
  std::vector<int> lat_n_;
  static constexpr int kLatAllSamples = 64;
  std::array<double, kLatAllSamples> lat_all_{};  // the same over every point (a ring) ...
  int lat_all_n_ = 0;                             // ... and its count
  double latency(int q) const;  // the median of q's samples (of the last of any point's while
                                // q has fewer than 3)
  std::vector<int> low_passes_;          // per point: passes running with every rank at 0
  std::vector<int64_t> last_window_, last_turn_;  // per point: the last pass's (controller log)
  std::vector<int> starving_;            // points to turn off at the pass end (starved)
  static constexpr double kWindowMargin = 0.1;  // of a window, left free for jitter
  static constexpr int kStarvePasses = 3;
  static constexpr int kSetPeriod = 16;    // passes between decisions on the point set
  static constexpr int kOffCooldown = 64;  // passes after turning points off before any go on
  int since_off_ = 1 << 20;              // passes since points were last turned off (budget)
  static constexpr double kDefaultBps = 10e9;   // CPU factor bytes/s before one is measured
  std::vector<int64_t> span_ns_;         // last span per point
  std::vector<int> rows_;                // rows of the last hand-off per point
  std::vector<char> prefill_;            // whether it was a prefill pass
  std::vector<double> rank_sum_;         // per linear: Σ ranks over decode passes
  std::vector<double> pass_rank_;        // per linear: Σ ranks served in the pass in flight
  int64_t pass_wait_ns_ = 0;             // GPU waits of the pass in flight
  int64_t pass_late_ns_ = 0;             // the part of them the CPU caused (turnaround > window)
  int pass_served_ = 0;                  // decode hand-offs of the pass in flight
  int64_t pass_bytes_ = 0;               // their factor bytes
  // decode hand-offs on the large pool: the last decode pass averaged more than this per point
  // (back to the small one below half of it)
  static constexpr int64_t kLargePointBytes = 1 << 20;
  bool large_decode_ = false;
  int decode_pool_mode_ = 0;             // HCINFER_DECODE_POOL: 0 auto, 1 small, 2 large
  int pending_wait_ = -1;                // served point whose GPU wait is not accounted yet
  int prefetch_points_ = 0;              // cfg_.prefetch_points or HCINFER_PREFETCH
  int prefetch_from_ = -1;               // decode point served last, its successors not fetched
  // the point set (controller)
  std::vector<char> on_;                 // per point: handed over in decode passes
  std::vector<int> starved_;             // per point: times turned off at rank 0
  double cpu_bps_ = 0;                   // factor bytes per second of decode passes (EMA)
  static constexpr double kStartNs = 4000;  // CPU work of a point turned on for the first time
  uint64_t version_ = 1;
  enum class Phase { Start, Calib, Run } phase_ = Phase::Start;
  int skip_ = 0;                         // passes to ignore after a set change (graph lag)
  int since_change_ = 0;
  int64_t passes_run_ = 0;               // decode passes since the last calibration
  std::vector<int64_t> recent_;          // step times (ns) since the last change
  std::vector<int64_t> own_;             // the same less the GPU's waits
  double prev_own_ns_ = 0;               // own step time of the set before (ns) ...
  int prev_n_ = 0;                       // ... and its points on
  std::vector<char> saved_on_;           // the set in force before a repeated measurement
  uint64_t saved_version_ = 0;
  int64_t t0_ns_ = 0;                    // backbone-alone step
  double cost_ns_ = 0;                   // GPU cost per point on (estimate)
  CompServerStats st_;
  std::string error_;
  int n_linears_ = 0;
  int64_t full_rank_sum_ = 0;  // Σ r_max over every point's layers

  // Pass ends the loop has processed; stats(), reset_stats() and ranks() first wait (briefly) for
  // it to reach the GPU's count, so a caller that has synchronized with the GPU sees every pass.
  std::atomic<uint32_t> passes_seen_{0};
  void catch_up();

  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace hci
