// Benchmarks of the CPU compensation kernels at real model shapes: one decode step's worth of
// compensation points (per block: q/k/v, o, gate/up, down) with random factors, timed per pass,
// beside the host memory read bandwidth measured with the same threads.
#pragma once

#include <cstdint>

#include "hetero/comp_point.h"

namespace hci {

struct LowRankBenchConfig {
  int d_model = 4096, d_ff = 11008, kv_dim = 4096, n_layers = 32, rank = 64, batch = 1;
  FactorType type = FactorType::BF16;
  int n_threads = 1;
  SimdLevel simd = SimdLevel::Avx2;
  int iters = 20, warmup = 3;
  int first_core = -1;  // pin workers to first_core, first_core+1, ...; -1 = no pinning
};

struct LowRankBenchResult {
  double seconds_median = 0, seconds_min = 0;  // per pass over all points
  double bytes = 0;                            // factor bytes read per pass
  double host_read_gbps = 0;                   // streaming read bandwidth, same threads
  int n_points = 0;
};

LowRankBenchResult bench_lowrank(const LowRankBenchConfig& c);

// Streaming read bandwidth (GB/s) of `bytes` of host memory with n_threads pinned as above.
double measure_host_read_gbps(int64_t bytes, int n_threads, int first_core, int iters);

}  // namespace hci
