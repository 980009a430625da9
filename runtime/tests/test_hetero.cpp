// CPU compensation kernels against a float64 reference, and the cpu-async hand-off protocol
// with a CPU thread standing in for the GPU stream.
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <thread>

#include "check.h"
#include "error.h"
#include "hetero/comp_point.h"
#include "hetero/handoff.h"
#include "hetero/worker_pool.h"
#include "safetensors.h"  // bf16_to_f32
#include "test_util.h"

using namespace hci;

static CompPoint make_point(FactorType type, uint32_t seed) {
  // a q/k/v-like point: three layers sharing d_in = 96
  CompPoint p(96, {64, 32, 32}, {12, 8, 8}, type);
  for (int j = 0; j < 3; ++j) {
    const auto A = testutil::random_vec(size_t(p.r_max(j) * 96), seed + 10 * j);
    const auto B = testutil::random_vec(size_t(p.d_out(j) * p.r_max(j)), seed + 10 * j + 1);
    p.set_factors(j, A.data(), B.data());
  }
  return p;
}

TEST(kernels_match_float64_reference) {
  std::vector<SimdLevel> levels = {SimdLevel::Scalar};
  if (best_simd_level() >= SimdLevel::Avx2) levels.push_back(SimdLevel::Avx2);
  if (best_simd_level() >= SimdLevel::Avx512) levels.push_back(SimdLevel::Avx512);
  std::printf("  SIMD levels tested: best here is %s\n", simd_level_name(best_simd_level()));
  for (FactorType type : {FactorType::F32, FactorType::BF16, FactorType::F16}) {
    const CompPoint p = make_point(type, 5);
    for (int threads : {1, 3}) {
      WorkerPool pool(threads);
      for (SimdLevel level : levels)
        for (int n : {1, 3, 4, 9}) {
          const int ranks[3] = {12, 5, 0};  // prefixes, one layer off
          const auto x = testutil::random_vec(size_t(n * 96), 77 + n);
          std::vector<std::vector<float>> y(3);
          std::vector<std::vector<double>> ref(3);
          float* yp[3];
          double* rp[3];
          for (int j = 0; j < 3; ++j) {
            y[size_t(j)] = testutil::random_vec(size_t(n * p.d_out(j)), 9);  // accumulate onto
            ref[size_t(j)].assign(y[size_t(j)].begin(), y[size_t(j)].end());
            yp[j] = y[size_t(j)].data();
            rp[j] = ref[size_t(j)].data();
          }
          std::vector<float> t(size_t(n * p.total_rank()), -1e30f);
          p.apply(ranks, x.data(), n, yp, t.data(), pool, level);
          p.apply_reference(ranks, x.data(), n, rp);
          double max_err = 0, max_ref = 0;
          for (int j = 0; j < 3; ++j)
            for (size_t i = 0; i < y[size_t(j)].size(); ++i) {
              max_err = std::max(max_err, std::fabs(y[size_t(j)][i] - ref[size_t(j)][i]));
              max_ref = std::max(max_ref, std::fabs(ref[size_t(j)][i]));
            }
          if (!(max_err <= 1e-5 * max_ref)) {
            std::printf("  type %d level %s threads %d n %d: max err %g (max |ref| %g)\n",
                        int(type), simd_level_name(level), threads, n, max_err, max_ref);
            ++check::failures();
          }
        }
    }
  }
}

// The hand-off form: y as tagged words (every word written once, with the tag; layers at rank 0
// zeros), the A pass split by rows or (t_part) by input columns with a prologue that fills only
// each worker's columns of x, against the float64 reference. d_in 96 over 5 workers leaves some
// with no columns at all.
TEST(tagged_apply_matches_reference_row_and_column_split) {
  const CompPoint p = make_point(FactorType::BF16, 6);
  for (int threads : {1, 3, 5})
    for (bool columns : {false, true})
      for (int n : {1, 3, 9}) {
        WorkerPool pool(threads);
        const int ranks[3] = {12, 0, 5};
        const auto x = testutil::random_vec(size_t(n * 96), 40 + n);
        std::vector<float> xs(x.size(), std::nanf(""));  // filled by the prologue only
        std::vector<std::vector<uint64_t>> y(3);
        std::vector<std::vector<double>> ref(3);
        uint64_t* yp[3];
        double* rp[3];
        for (int j = 0; j < 3; ++j) {
          y[size_t(j)].assign(size_t(n * p.d_out(j)), ll_pack(5.0f, 6));  // stale words
          ref[size_t(j)].assign(size_t(n * p.d_out(j)), 0.0);
          yp[j] = y[size_t(j)].data();
          rp[j] = ref[size_t(j)].data();
        }
        const CompPoint::Prologue fill = [&](int w, int W, SpinBarrier&) {
          int c0 = 0, c1 = 96;
          if (columns) CompPoint::input_columns(96, w, W, &c0, &c1);
          else if (w != 0) return;
          for (int b = 0; b < n; ++b)
            for (int c = c0; c < c1; ++c) xs[size_t(b * 96 + c)] = x[size_t(b * 96 + c)];
        };
        const size_t tn = size_t(threads) * size_t(n) * size_t(p.total_rank());
        std::vector<float> t(tn, -1e30f), tp(tn, -1e30f);
        p.apply_tagged(ranks, xs.data(), n, yp, 7, t.data(), pool, best_simd_level(), &fill,
                       columns ? tp.data() : nullptr);
        p.apply_reference(ranks, x.data(), n, rp);
        double max_err = 0, max_ref = 0;
        int bad_tags = 0;
        for (int j = 0; j < 3; ++j)
          for (size_t i = 0; i < y[size_t(j)].size(); ++i) {
            bad_tags += ll_seq(y[size_t(j)][i]) != 7u;
            max_err = std::max(max_err, std::fabs(ll_value(y[size_t(j)][i]) - ref[size_t(j)][i]));
            max_ref = std::max(max_ref, std::fabs(ref[size_t(j)][i]));
          }
        if (!(max_err <= 1e-5 * max_ref) || bad_tags)
          std::printf("  threads %d columns %d n %d: max err %g (max |ref| %g), bad tags %d\n",
                      threads, int(columns), n, max_err, max_ref, bad_tags);
        CHECK(max_err <= 1e-5 * max_ref);
        CHECK(bad_tags == 0);
      }
  // column slices cover d_in exactly, in multiples of 16 but the last
  for (int W : {1, 3, 6, 7})
    for (int d : {96, 4096, 11008, 5}) {
      int prev = 0;
      for (int w = 0; w < W; ++w) {
        int c0, c1;
        CompPoint::input_columns(d, w, W, &c0, &c1);
        CHECK(c0 == prev && c1 >= c0 && (c0 % 16 == 0));
        prev = c1;
      }
      CHECK(prev == d);
    }
}

TEST(tiled_b_matches_the_factors_given) {
  // The reference above reads the stored factors back; this one uses the caller's A and B (float32
  // storage is exact), so the tiled layout of Bᵀ is checked end to end: several full column tiles
  // and a narrower last one (150 = 2 * 64 + 22), a layer narrower than a tile, one exactly a tile.
  const int d_in = 40, dout[3] = {150, 20, 64}, rmax[3] = {7, 3, 5};
  CompPoint p(d_in, {150, 20, 64}, {7, 3, 5}, FactorType::F32);
  std::vector<std::vector<float>> A(3), B(3);
  for (int j = 0; j < 3; ++j) {
    A[size_t(j)] = testutil::random_vec(size_t(rmax[j] * d_in), 31 + j);
    B[size_t(j)] = testutil::random_vec(size_t(dout[j] * rmax[j]), 41 + j);
    p.set_factors(j, A[size_t(j)].data(), B[size_t(j)].data());
  }
  std::vector<SimdLevel> levels = {SimdLevel::Scalar};
  if (best_simd_level() >= SimdLevel::Avx2) levels.push_back(SimdLevel::Avx2);
  if (best_simd_level() >= SimdLevel::Avx512) levels.push_back(SimdLevel::Avx512);
  const int n = 2, ranks[3] = {6, 3, 5};
  const auto x = testutil::random_vec(size_t(n * d_in), 51);
  for (int threads : {1, 4})
    for (SimdLevel level : levels) {
      WorkerPool pool(threads);
      std::vector<std::vector<float>> y(3);
      float* yp[3];
      for (int j = 0; j < 3; ++j) {
        y[size_t(j)].assign(size_t(n * dout[j]), 0.f);
        yp[j] = y[size_t(j)].data();
      }
      std::vector<float> t(size_t(n * p.total_rank()));
      p.apply(ranks, x.data(), n, yp, t.data(), pool, level, /*accumulate=*/false);
      double worst = 0;
      for (int j = 0; j < 3; ++j)
        for (int b = 0; b < n; ++b)
          for (int i = 0; i < dout[j]; ++i) {
            double s = 0;
            for (int k = 0; k < ranks[j]; ++k) {
              double tk = 0;
              for (int c = 0; c < d_in; ++c)
                tk += double(A[size_t(j)][size_t(k * d_in + c)]) * x[size_t(b * d_in + c)];
              s += double(B[size_t(j)][size_t(i * rmax[j] + k)]) * tk;
            }
            worst = std::max(worst, std::fabs(y[size_t(j)][size_t(b * dout[j] + i)] - s) /
                                        (1.0 + std::fabs(s)));
          }
      if (!(worst < 1e-5))
        std::printf("  %s, %d threads: worst %.2e\n", simd_level_name(level), threads, worst);
      CHECK(worst < 1e-5);
    }
}

TEST(worker_ranges_are_exactly_the_factors_a_product_reads) {
  // Factors beyond the ranks in use are NaN, those in use finite: the workers' ranges must hold no
  // NaN, not overlap, and add up to bytes_read(ranks), i.e. be exactly the factors in use. Shapes
  // with a narrow last B tile, a layer at rank 0, and more workers than some layers have tiles.
  const int d_in = 200, dout[3] = {150, 20, 64}, rmax[3] = {7, 3, 5};
  CompPoint p(d_in, {150, 20, 64}, {7, 3, 5}, FactorType::BF16);
  const int ranks[3] = {4, 0, 5};
  for (int j = 0; j < 3; ++j) {
    auto A = testutil::random_vec(size_t(rmax[j] * d_in), 61 + j);
    auto B = testutil::random_vec(size_t(dout[j] * rmax[j]), 71 + j);
    for (int k = ranks[j]; k < rmax[j]; ++k) {
      for (int c = 0; c < d_in; ++c) A[size_t(k * d_in + c)] = NAN;
      for (int i = 0; i < dout[j]; ++i) B[size_t(i * rmax[j] + k)] = NAN;
    }
    p.set_factors(j, A.data(), B.data());
  }
  for (int W : {1, 3, 7}) {
    std::vector<std::pair<const uint8_t*, int64_t>> all;
    int64_t nan_elems = 0;
    for (int w = 0; w < W; ++w)
      CHECK(p.worker_ranges(ranks, w, W, [&](const uint8_t* r, int64_t bytes) {
        all.emplace_back(r, bytes);
        for (int64_t o = 0; o + 1 < bytes; o += 2) {
          uint16_t h;
          std::memcpy(&h, r + o, 2);
          nan_elems += std::isnan(bf16_to_f32(h)) ? 1 : 0;
        }
        return true;
      }));
    std::sort(all.begin(), all.end());
    int64_t total = 0;
    bool overlap = false;
    for (size_t i = 0; i < all.size(); ++i) {
      total += all[i].second;
      if (i + 1 < all.size()) overlap = overlap || all[i].first + all[i].second > all[i + 1].first;
    }
    CHECK(nan_elems == 0);
    CHECK(!overlap);
    CHECK(total == p.bytes_read(ranks));
  }
  // a visitor's false stops the walk
  int calls = 0;
  CHECK(!p.worker_ranges(ranks, 0, 1, [&](const uint8_t*, int64_t) { return ++calls < 3; }));
  CHECK(calls == 3);
}

TEST(bf16_storage_rounds_to_nearest) {
  CompPoint p(16, {1}, {1}, FactorType::BF16);
  std::vector<float> A(16, 1.0f + 1.0f / 256 + 1.0f / 4096), B = {1.0f};
  p.set_factors(0, A.data(), B.data());
  std::vector<float> x(16, 1.0f), t(1);
  float y = 0;
  float* yp[1] = {&y};
  WorkerPool pool(1);
  const int r[1] = {1};
  p.apply(r, x.data(), 1, yp, t.data(), pool, SimdLevel::Scalar);
  CHECK_NEAR(y, 16 * (1.0 + 1.0 / 128), 1e-6);  // 1 + 2^-8 + 2^-12 rounds up to 1 + 2^-7
  CHECK(p.bytes_read(r) == (16 + 1) * 2);
}

TEST(rank_out_of_range_is_an_error) {
  const CompPoint p = make_point(FactorType::F32, 1);
  WorkerPool pool(1);
  const int ranks[3] = {13, 0, 0};
  std::vector<float> x(96), t(size_t(p.total_rank()));
  std::vector<float> y0(64), y1(32), y2(32);
  float* yp[3] = {y0.data(), y1.data(), y2.data()};
  CHECK_THROWS(p.apply(ranks, x.data(), 1, yp, t.data(), pool, SimdLevel::Scalar),
               HCI_ERR_INVALID_ARGUMENT, "rank out of range");
}

// The hand-off with a "GPU" thread (stream order: write X and HEAD as tagged words, backbone
// work, take Y word by word) and a CPU server thread, over many steps and points with random
// delays on both sides, and the single X and Y buffers the engine uses. Every correction the "GPU"
// adds must be the one computed from that step's x; the points' widths differ, so stale words of a
// wider point sit beyond a narrower one's.
TEST(async_handoff_preserves_order_under_random_delays) {
  const int n_points = 4, steps = 300, max_d = 40;
  const int width[n_points] = {40, 8, 24, 33};
  uint64_t head[2] = {0, 0};
  std::vector<uint64_t> X(static_cast<size_t>(max_d)), Y(static_cast<size_t>(max_d));
  std::atomic<bool> stop{false};
  std::atomic<int> wrong{0};
  auto jitter = [](std::mt19937& rng) {
    if (rng() % 4 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 50));
  };
  // the correction is a simple function of x so stale or torn data is detectable
  auto correct = [](float v) { return 2.0f * v + 1.0f; };
  std::thread cpu([&] {
    std::mt19937 rng(2);
    uint32_t last = 0;
    std::vector<float> x(static_cast<size_t>(max_d));
    while (!stop.load()) {
      const uint64_t h = ll_at(&head[0])->load(std::memory_order_acquire);  // a. new HEAD
      if (ll_seq(h) == last) continue;
      last = ll_seq(h);
      uint64_t rw;
      if (!ll_wait(&head[1], last, &rw, &stop)) return;
      const int p = int(ll_word(h)), d = int(ll_word(rw));
      if (p != int((last - 1) % n_points) || d != width[p]) wrong.fetch_add(1);
      jitter(rng);
      if (!ll_load(X.data(), x.data(), d, last, &stop)) return;  // b. read x
      for (float& v : x) v = correct(v);
      ll_store(Y.data(), x.data(), d, last);  // c. write y
    }
  });
  std::mt19937 rng(1);
  for (int s = 0; s < steps; ++s)
    for (int p = 0; p < n_points; ++p) {
      const uint32_t seq = uint32_t(s * n_points + p + 1);
      const int d = width[p];
      const float base = float(s * 1000 + p * 100);
      std::vector<float> x(static_cast<size_t>(d)), y(static_cast<size_t>(d));
      for (int i = 0; i < d; ++i) x[size_t(i)] = base + float(i);
      // 1. x and HEAD, in an order that puts HEAD first half the time
      if (rng() % 2) ll_publish_head(head, seq, uint32_t(p), uint32_t(d));
      ll_store(X.data(), x.data(), d, seq);
      if (ll_seq(ll_at(&head[0])->load()) != seq) ll_publish_head(head, seq, uint32_t(p), uint32_t(d));
      jitter(rng);                              // 2. backbone work
      ll_load(Y.data(), y.data(), d, seq);      // 3. take y
      for (int i = 0; i < d; ++i)
        if (y[size_t(i)] != correct(base + float(i))) wrong.fetch_add(1);
    }
  stop.store(true);
  cpu.join();
  CHECK(wrong.load() == 0);
  CHECK(ll_seq(Y[0]) == uint32_t(steps * n_points));
}

// A deliberately broken protocol (the "GPU" reads Y's values without checking their tags) must be
// caught by the same check, so the test above can fail.
TEST(broken_handoff_is_detected) {
  const int steps = 2000, d = 8;
  uint64_t head[2] = {0, 0};
  std::vector<uint64_t> X(static_cast<size_t>(d)), Y(static_cast<size_t>(d));
  std::atomic<bool> stop{false};
  int wrong = 0;
  std::thread cpu([&] {
    std::vector<float> x(static_cast<size_t>(d));
    for (int s = 0; s < steps; ++s) {
      uint64_t h;
      if (!ll_wait(&head[0], uint32_t(s + 1), &h, &stop)) return;
      std::this_thread::sleep_for(std::chrono::microseconds(20));
      if (!ll_load(X.data(), x.data(), d, uint32_t(s + 1), &stop)) return;
      for (float& v : x) v += 1;
      ll_store(Y.data(), x.data(), d, uint32_t(s + 1));
    }
  });
  std::vector<float> x(static_cast<size_t>(d)), y(static_cast<size_t>(d));
  for (int s = 0; s < steps && wrong == 0; ++s) {
    std::fill(x.begin(), x.end(), float(s));
    ll_store(X.data(), x.data(), d, uint32_t(s + 1));
    ll_publish_head(head, uint32_t(s + 1), 0, uint32_t(d));
    for (int i = 0; i < d; ++i)  // no tag check: a race
      wrong += ll_value(ll_at(&Y[size_t(i)])->load()) != float(s) + 1;
    ll_load(Y.data(), y.data(), d, uint32_t(s + 1));
  }
  stop.store(true);
  cpu.join();
  CHECK(wrong > 0);
}

TEST(pool_counts_workers_preempted) {
  // Two workers pinned to one core, both busy for 60 ms: the scheduler must take the core from
  // one of them (time slices are a few ms), and the pool's count has to show it.
  cpu_set_t allowed;
  CHECK(sched_getaffinity(0, sizeof allowed, &allowed) == 0);
  int core = 0;
  while (core < CPU_SETSIZE && !CPU_ISSET(core, &allowed)) ++core;
  cpu_set_t old = allowed;
  {
    WorkerPool pool(2, {core, core});
    pool.run([](int) {});  // the caller joins the pool (worker 0)
    const int64_t before = pool.involuntary_switches();
    CHECK(before >= 0);
    pool.run([](int) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(60);
      while (std::chrono::steady_clock::now() < until) {
      }
    });
    CHECK(pool.involuntary_switches() > before);
  }
  sched_setaffinity(0, sizeof old, &old);  // (the pool gives its caller the cores back too)
}

TEST(pool_keeps_other_threads_off_its_cores) {
  // A bystander thread allowed everywhere must leave the pool's core while the pool lives and get
  // its cores back afterwards; the pool's own threads stay where they were pinned.
  cpu_set_t allowed;
  CHECK(sched_getaffinity(0, sizeof allowed, &allowed) == 0);
  if (CPU_COUNT(&allowed) < 2) {
    std::printf("  (one core allowed: nothing to move a thread to; not checked)\n");
    return;
  }
  int core = CPU_SETSIZE - 1;
  while (!CPU_ISSET(core, &allowed)) --core;  // the last allowed core
  std::atomic<int> tid{0};
  std::atomic<bool> stop{false};
  std::thread bystander([&] {
    tid.store(int(syscall(SYS_gettid)));
    while (!stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  while (tid.load() == 0) std::this_thread::yield();
  cpu_set_t before, during, pool_thread, after;
  CHECK(sched_getaffinity(tid.load(), sizeof before, &before) == 0);
  int moved = 0;
  std::thread owner([&] {  // the pool's caller is pinned by it: not this test's main thread
    WorkerPool pool(2, {core, core});
    pool.set_isolate(true);
    pool.run([](int) {});
    moved = pool.isolated_threads();
    sched_getaffinity(tid.load(), sizeof during, &during);
    sched_getaffinity(0, sizeof pool_thread, &pool_thread);
  });
  owner.join();
  CHECK(sched_getaffinity(tid.load(), sizeof after, &after) == 0);
  stop.store(true);
  bystander.join();
  CHECK(moved >= 2);  // the bystander and this test's main thread
  CHECK(CPU_ISSET(core, &before) && !CPU_ISSET(core, &during));
  CHECK(CPU_COUNT(&during) == CPU_COUNT(&before) - 1);
  CHECK(CPU_COUNT(&pool_thread) == 1 && CPU_ISSET(core, &pool_thread));
  CHECK(CPU_EQUAL(&after, &before));
}

TEST(pool_gives_its_caller_the_cores_back) {
  // The pool pins its caller (worker 0) to its first core; once the pool is gone the caller must
  // have its old cores again. A caller left on a worker core (a benchmark's thread that later
  // feeds the GPU) took turns with the next pool's spinning workers: millisecond GPU waits.
  cpu_set_t allowed;
  CHECK(sched_getaffinity(0, sizeof allowed, &allowed) == 0);
  if (CPU_COUNT(&allowed) < 2) {
    std::printf("  (one core allowed: pinning changes nothing; not checked)\n");
    return;
  }
  int core = CPU_SETSIZE - 1;
  while (!CPU_ISSET(core, &allowed)) --core;
  cpu_set_t during, after;
  {
    WorkerPool pool(2, {core, core});
    pool.run([](int) {});
    CHECK(sched_getaffinity(0, sizeof during, &during) == 0);
  }
  CHECK(sched_getaffinity(0, sizeof after, &after) == 0);
  CHECK(CPU_COUNT(&during) == 1 && CPU_ISSET(core, &during));
  CHECK(CPU_EQUAL(&after, &allowed));
}

TEST_MAIN()
