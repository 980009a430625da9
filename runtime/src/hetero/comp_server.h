// The CPU side of heterogeneous compensation: a serving thread (plus its worker pool) that
// answers the GPU's hand-offs, one compensation point at a time, in pass order, and the run-time
// rank controller.
//
// Per forward pass the GPU visits points 0..P-1 in order; for point p of pass k it writes the
// point's input x into the channel's X buffer, the header (point, rows) and READY = k·P + p + 1,
// and later waits for DONE >= that value before adding Y into the point's outputs
// (handoff.h has the protocol and its ordering guarantees). Only one point is ever in flight,
// because the GPU needs point p's correction before it can produce point p+1's input, so one X
// and one Y buffer suffice:
//   X  [rows, d_in_p]                       float32, written by the GPU
//   Y  [Σ_j rows · d_out_j] = y_0 | y_1 |…  float32, y_j [rows, d_out_j], written by the CPU
// The GPU also records, per point, how long it spun waiting for DONE (wait_ns[p], its own
// clock); the server reads point p's figure once point p+1 has been handed over (by then the GPU
// has written it), for the statistics and the controller.
//
// Rank controller (cpu-async decode passes only): each point has a level in [0, 1] and uses the
// rank prefix round(level · r_max_j) of each of its layers (factors are ordered by singular value,
// so a prefix is the best answer of its rank; r_max_j comes from the sensitivity-aware
// allocation, so the controller scales that allocation per point). After each pass it compares
// the point's CPU span (x received to correction published) with the GPU's wait: a wait above
// `slack_ns` means the CPU was on the critical path, and the level is cut so that the span would
// fit 90% of the GPU's window (span − wait); otherwise the level grows by `probe` per pass, to
// find the window again when the CPU speeds up (by `probe` relative, at least `probe` / 2). MoE: a routed expert's branch is a point too; a
// pass visits only the routed experts' points, which the header's point id already allows.
#pragma once

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
struct ChannelHeader {
  HandoffWords words;
  alignas(64) uint32_t point;  // point id of the hand-off (written by the GPU before READY)
  uint32_t rows;               // rows of x, | kPrefillFlag when the pass is a prefill chunk
};
constexpr uint32_t kPrefillFlag = 0x80000000u;

// Where the channel lives (mapped pinned host memory in the engine; plain memory in tests).
struct Channel {
  ChannelHeader* hdr = nullptr;
  const float* x = nullptr;              // [rows_max, max d_in]
  float* y = nullptr;                    // [rows_max · max Σ_j d_out_j]
  const uint32_t* wait_ns = nullptr;     // [P] GPU spin per point (0 when not measured)
};

// One point as the server sees it.
struct ServedPoint {
  std::unique_ptr<CompPoint> cp;
  std::vector<int> linear;  // per layer j: the linear's global index (layer · 7 + kind)
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
  bool isolate = false;     // keep the process's other threads off the workers' cores
                            // (WorkerPool::set_isolate; needs first_core >= 0)
};

// Sums since the last reset (decode passes unless said otherwise; the GPU marks prefill passes in
// the header).
struct CompServerStats {
  int64_t steps = 0;
  double cpu_busy_ns = 0, gpu_wait_ns = 0;
  int64_t bytes_to_host = 0, bytes_to_device = 0, factor_bytes_read = 0;
  double rank_fraction_sum = 0;
  int64_t prefill_rows = 0;
  double prefill_cpu_ns = 0;
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
  // A protocol violation seen by the server ("" when none).
  std::string error();
  // Stops the thread, zeroes the hand-off words and starts again expecting sequence 1 (the GPU's
  // pass counter must be reset with it); only while no pass is in flight.
  void restart();

 private:
  void loop();
  void serve(uint32_t seq);
  void account_wait(int q);
  void control(int q, int64_t span_ns, int64_t wait_ns);
  void apply_level(int p);

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
  int rows_max_ = 0;

  std::mutex mu_;  // guards everything below against the API thread
  std::vector<std::vector<int>> ranks_;  // per point, per layer: ranks in use
  std::vector<double> level_;            // controller level per point
  std::vector<int64_t> span_ns_;         // last span per point
  std::vector<int> rows_;                // rows of the last hand-off per point
  std::vector<char> prefill_;            // whether it was a prefill pass
  std::vector<double> rank_sum_;         // per linear: Σ ranks over decode passes
  CompServerStats st_;
  std::string error_;
  int n_linears_ = 0;

  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace hci
