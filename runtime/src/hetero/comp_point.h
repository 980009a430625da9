// A compensation point: the low-rank branches of the linear layers that share one input
// (q/k/v share the attention input, gate/up the MLP input; o and down stand alone), stored in
// host memory and computed by the CPU:
//   t_j = A_j[:r_j] · x          (one pass over the concatenated A factors)
//   y_j += B_j[:, :r_j] · t_j
// Shapes, for batch n:
//   x      [n, d_in]                  float32 activations
//   A_cat  [Σ_j r_max_j, d_in]        factors of all layers, row block j starts at row0_j
//   B_j    [d_out_j, r_max_j]         one per layer, stored transposed in column tiles:
//                                     [ceil(d_out_j / kBTile)][r_max_j][kBTile] (a narrower
//                                     last tile), so a tile's rows are one contiguous block
//   t      [n, Σ_j r_max_j]           scratch
//   y_j    [n, d_out_j]               accumulated into
// Factors are stored as float32, bfloat16 (default) or float16 and widened to float32 in the
// kernel; arithmetic is float32 with FMA. Kernels: AVX-512F, AVX2+FMA+F16C, and portable C++,
// chosen at run time. Per-expert branches of MoE models are points too (one per routed expert),
// so a step touches only the routed experts' points.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "hetero/worker_pool.h"

namespace hci {

enum class FactorType : int32_t { F32 = 0, BF16 = 1, F16 = 2 };

// Columns of Bᵀ per tile: 64 outputs (four AVX-512 accumulators), 128 bytes a row in bf16.
constexpr int kBTile = 64;

// Which SIMD kernel runs.
enum class SimdLevel : int32_t { Scalar = 0, Avx2 = 1, Avx512 = 2 };
SimdLevel best_simd_level();
const char* simd_level_name(SimdLevel l);

class CompPoint {
 public:
  // d_in: shared input size; d_out[j], r_max[j] per layer; factors zero until set_factors().
  CompPoint(int d_in, std::vector<int> d_out, std::vector<int> r_max, FactorType type);

  // Copies layer j's float32 factors A [r_max_j, d_in] and B [d_out_j, r_max_j] into storage.
  void set_factors(int j, const float* A, const float* B);

  // Fills every factor with seeded uniform values of standard deviation `stddev` (synthetic
  // models: throughput only), in parallel over the pool.
  void fill_random(uint64_t seed, float stddev, WorkerPool& pool);

  // y[j] += B_j[:, :ranks[j]] · (A_j[:ranks[j]] · x) for each of n rows of x (y[j] = ... when
  // `accumulate` is false; a layer at rank 0 is then zeroed). `t` is scratch of
  // n * total_rank() floats. Work is split over the pool's workers (two phases, one barrier).
  void apply(const int* ranks, const float* x, int n, float* const* y, float* t, WorkerPool& pool,
             SimdLevel level, bool accumulate = true) const;

  // The same with y written as tagged words (hetero/handoff.h): y[j][b · d_out_j + c] =
  // (y_j[b, c], seq), each written once (a layer at rank 0: zeros), so the reader can take every
  // word as soon as its tag says it is there. Each worker packs the tiles it computed.
  // `before` (optional) runs on every worker first, in the same parallel section (one fork-join
  // for the whole point), and may wait on the section's barrier itself (e.g. the hand-off's
  // input arriving, then its RMSNorm); the product starts once every worker has returned from it.
  //
  // With `t_part` (scratch of workers · n · total_rank() floats, n ≤ 16; `t` must then hold as
  // many: each worker sums the partials into its own copy) the A pass is split by
  // input columns instead of A's rows: worker w multiplies its own columns input_columns(w) of
  // every active row into partial sums, and the B pass adds the partials. The prologue then
  // needs to provide only x[:, input_columns(w)] on worker w, and the A pass follows it without
  // a barrier: the x a worker just unpacked stays in its own cache (row-split, every worker read
  // all of x from the others' caches).
  using Prologue = std::function<void(int worker, int workers, SpinBarrier& barrier)>;
  void apply_tagged(const int* ranks, const float* x, int n, uint64_t* const* y, uint32_t seq,
                    float* t, WorkerPool& pool, SimdLevel level,
                    const Prologue* before = nullptr, float* t_part = nullptr) const;
  // Columns [c0, c1) of x that worker w of W handles in the column-split A pass (multiples of 16
  // but the last).
  static void input_columns(int d_in, int w, int W, int* c0, int* c1);

  // The factors worker w of W reads in a column-split product (apply_tagged with t_part) at
  // these ranks, as contiguous byte ranges in reading order: its columns input_columns(w) of every
  // active A row, then the active rows of its B tiles. visit(range, bytes) returns false to stop
  // early; the function returns false then. For prefetching a point's factors into the cache of
  // the worker that will read them, before the point's input arrives.
  using RangeVisitor = std::function<bool(const uint8_t* range, int64_t bytes)>;
  bool worker_ranges(const int* ranks, int w, int W, const RangeVisitor& visit) const;

  // Float64 reference of apply() from the stored (rounded) factors, single-threaded.
  void apply_reference(const int* ranks, const float* x, int n, double* const* y) const;

  int d_in() const { return d_in_; }
  int layers() const { return int(d_out_.size()); }
  int d_out(int j) const { return d_out_[size_t(j)]; }
  int r_max(int j) const { return r_max_[size_t(j)]; }
  int total_rank() const { return total_rank_; }
  FactorType type() const { return type_; }
  // Bytes of factors read by apply() at these ranks (A rows + B columns in use).
  int64_t bytes_read(const int* ranks) const;
  // Bytes stored.
  int64_t bytes_stored() const { return int64_t(a_.size() + b_.size()); }

 private:
  float a_at(int64_t row, int col) const;
  float b_at(int j, int row, int col) const;
  int64_t b_index(int j, int row, int col) const;  // element of B_j[row, col] in its storage
  // fn(j, c0, width, tile) for each active B tile of worker w of W in the B pass (the active
  // layers' column tiles split in W equal slices), in order; fn returns false to stop.
  using TileVisitor = std::function<bool(int j, int c0, int width, const uint8_t* tile)>;
  bool worker_tiles(const int* ranks, int w, int W, const TileVisitor& fn) const;
  // apply (y) or apply_tagged (yt, seq)
  void run(const int* ranks, const float* x, int n, float* const* y, uint64_t* const* yt,
           uint32_t seq, float* t, WorkerPool& pool, SimdLevel level, bool accumulate,
           const Prologue* before, float* t_part) const;

  int d_in_;
  std::vector<int> d_out_, r_max_, row0_;
  std::vector<int64_t> b_off_;  // byte offset of layer j's tiled Bᵀ_j in b_
  int total_rank_ = 0;
  FactorType type_;
  int elem_ = 4;  // bytes per stored element
  std::vector<uint8_t> a_, b_;  // 64-byte aligned in practice through vector growth; see cpp
};

}  // namespace hci
