#include "hetero/lowrank_bench.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "error.h"

namespace hci {

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::vector<int> cores_from(int first, int n) {
  std::vector<int> c;
  if (first >= 0)
    for (int i = 0; i < n; ++i) c.push_back(first + i);
  return c;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

__attribute__((target("avx2"))) double sum_avx2(const float* p, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + i + 24));
  }
  alignas(32) float t[8];
  _mm256_store_ps(t, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  double s = 0;
  for (float v : t) s += v;
  for (; i < n; ++i) s += p[i];
  return s;
}

}  // namespace

double measure_host_read_gbps(int64_t bytes, int n_threads, int first_core, int iters) {
  const int64_t n = bytes / 4;
  std::unique_ptr<float[]> buf(new float[size_t(n)]);
  WorkerPool pool(n_threads, cores_from(first_core, n_threads));
  // first touch by the readers (NUMA-friendly), then timed reads
  pool.run([&](int w) {
    const int64_t b = n * w / n_threads, e = n * (w + 1) / n_threads;
    for (int64_t i = b; i < e; ++i) buf[size_t(i)] = 1.0f;
  });
  std::vector<double> times;
  std::vector<double> sink(static_cast<size_t>(n_threads));
  for (int it = 0; it < iters + 1; ++it) {
    const double t0 = now();
    pool.run([&](int w) {
      const int64_t b = n * w / n_threads, e = n * (w + 1) / n_threads;
      sink[size_t(w)] += sum_avx2(buf.get() + b, e - b);
    });
    if (it > 0) times.push_back(now() - t0);  // first pass warms the pages and threads
  }
  double s = 0;
  for (double v : sink) s += v;
  if (s < 0) fail(HCI_ERR_INTERNAL, "impossible");  // keeps the reads alive
  return double(bytes) / median(times) / 1e9;
}

LowRankBenchResult bench_lowrank(const LowRankBenchConfig& c) {
  if (c.d_model <= 0 || c.d_ff <= 0 || c.kv_dim <= 0 || c.n_layers <= 0 || c.rank <= 0 ||
      c.batch <= 0 || c.n_threads <= 0 || c.iters <= 0 || c.warmup < 0)
    fail(HCI_ERR_INVALID_ARGUMENT, "lowrank bench: every size, rank, batch, thread and iteration "
                                   "count must be positive");
  if (c.simd > best_simd_level())
    fail(HCI_ERR_UNSUPPORTED, std::string("lowrank bench: this CPU has no ") +
                                  simd_level_name(c.simd) + " (best: " +
                                  simd_level_name(best_simd_level()) + ")");
  const int r = c.rank;
  std::vector<std::unique_ptr<CompPoint>> points;
  // Factor values do not affect the timing; a cheap xorshift fill keeps set-up fast at 7B scale.
  uint64_t state = 0x9E3779B97F4A7C15ull;
  auto next = [&state]() {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return (float(state >> 40) / float(1 << 24) - 0.5f) * 0.04f;
  };
  for (int l = 0; l < c.n_layers; ++l) {
    // q/k/v (input d_model), o (input d_model), gate/up (input d_model), down (input d_ff)
    points.push_back(std::make_unique<CompPoint>(
        c.d_model, std::vector<int>{c.d_model, c.kv_dim, c.kv_dim}, std::vector<int>{r, r, r},
        c.type));
    points.push_back(std::make_unique<CompPoint>(c.d_model, std::vector<int>{c.d_model},
                                                 std::vector<int>{r}, c.type));
    points.push_back(std::make_unique<CompPoint>(
        c.d_model, std::vector<int>{c.d_ff, c.d_ff}, std::vector<int>{r, r}, c.type));
    points.push_back(std::make_unique<CompPoint>(c.d_ff, std::vector<int>{c.d_model},
                                                 std::vector<int>{r}, c.type));
  }
  size_t max_out = 0;
  for (auto& p : points) {
    for (int j = 0; j < p->layers(); ++j) {
      std::vector<float> A(size_t(p->r_max(j)) * size_t(p->d_in())), B(size_t(p->d_out(j)) * size_t(r));
      for (auto& v : A) v = next();
      for (auto& v : B) v = next();
      p->set_factors(j, A.data(), B.data());
      max_out = std::max(max_out, size_t(p->d_out(j)));
    }
  }
  const size_t max_in = size_t(std::max(c.d_model, c.d_ff));
  std::vector<float> x(size_t(c.batch) * max_in, 0.5f), t(size_t(c.batch) * size_t(3 * r));
  std::vector<std::vector<float>> y(3, std::vector<float>(size_t(c.batch) * max_out, 0.0f));
  float* yp[3] = {y[0].data(), y[1].data(), y[2].data()};
  const int ranks[3] = {r, r, r};
  WorkerPool pool(c.n_threads, cores_from(c.first_core, c.n_threads));
  LowRankBenchResult res;
  res.n_points = int(points.size());
  for (auto& p : points) res.bytes += double(p->bytes_read(ranks));
  std::vector<double> times;
  for (int it = 0; it < c.warmup + c.iters; ++it) {
    const double t0 = now();
    for (auto& p : points) p->apply(ranks, x.data(), c.batch, yp, t.data(), pool, c.simd);
    if (it >= c.warmup) times.push_back(now() - t0);
  }
  res.seconds_median = median(times);
  res.seconds_min = *std::min_element(times.begin(), times.end());
  // measured once per (threads, pinning) in a process
  static std::mutex mu;
  static std::map<std::pair<int, int>, double> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto key = std::make_pair(c.n_threads, c.first_core);
  if (!cache.count(key))
    cache[key] = measure_host_read_gbps(int64_t(1) << 30, c.n_threads, c.first_core, 5);
  res.host_read_gbps = cache[key];
  return res;
}

}  // namespace hci
