// The compensation server (the CPU side of cpu-sync / cpu-async) with a CPU thread playing the
// GPU stream exactly as the decode graph does: write x and the header as tagged words, backbone
// work, wait for the correction (timing the wait on its own clock), read y. Checks the corrections against the
// float64 reference at every hand-off, decode and prefill row counts, fixed ranks, the protocol
// error path, and the rank controller's response to a GPU window shorter and longer than the
// CPU's work, to a window shorter than a point's round trip, and to a budget for the point set.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstring>
#include <thread>

#include "check.h"
#include "error.h"
#include "hetero/comp_server.h"
#include "safetensors.h"  // f32_to_f16, f16_to_f32
#include "test_util.h"

using namespace hci;

namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Points of a tiny block: q/k/v (3 layers sharing d_in 64) and o (1 layer), factors random.
std::vector<ServedPoint> tiny_points(FactorType type, int r) {
  std::vector<ServedPoint> pts;
  ServedPoint qkv;
  qkv.cp = std::make_unique<CompPoint>(64, std::vector<int>{64, 32, 32}, std::vector<int>{r, r, r},
                                       type);
  qkv.linear = {0, 1, 2};
  ServedPoint o;
  o.cp = std::make_unique<CompPoint>(64, std::vector<int>{64}, std::vector<int>{r}, type);
  o.linear = {3};
  for (ServedPoint* sp : {&qkv, &o})
    for (int j = 0; j < sp->cp->layers(); ++j) {
      const auto A = testutil::random_vec(size_t(r * 64), 3 + j);
      const auto B = testutil::random_vec(size_t(sp->cp->d_out(j) * r), 7 + j);
      sp->cp->set_factors(j, A.data(), B.data());
    }
  pts.push_back(std::move(qkv));
  pts.push_back(std::move(o));
  return pts;
}

// A one-layer point d_in → d_out = d of rank r (float32 factors, random from `seed`).
ServedPoint one_layer_point(int d, int r, int linear, uint64_t seed) {
  ServedPoint sp;
  sp.cp = std::make_unique<CompPoint>(d, std::vector<int>{d}, std::vector<int>{r}, FactorType::F32);
  sp.linear = {linear};
  WorkerPool fill(1);
  sp.cp->fill_random(seed, 0.02f, fill);
  return sp;
}

// The channel's memory, as the engine lays it out in mapped host memory.
struct FakeChannel {
  ChannelHeader hdr;
  std::vector<uint64_t> x, y;  // tagged words
  std::vector<float> xv;       // what the next hand-off writes into X
  std::vector<uint32_t> wait_ns, window_ns, turn_ns;
  FakeChannel(int rows, int d_in, int width, int points)
      : x(size_t(rows) * d_in),
        y(size_t(rows) * width),
        wait_ns(size_t(points), 0),
        window_ns(size_t(points), 0),
        turn_ns(size_t(points), 0) {}
  Channel channel() {
    Channel c;
    c.hdr = &hdr;
    c.x = x.data();
    c.y = y.data();
    c.wait_ns = wait_ns.data();
    c.window_ns = window_ns.data();
    c.turn_ns = turn_ns.data();
    return c;
  }
  float yv(size_t i) const { return ll_value(y[i]); }
  void fill_y(float v) { std::fill(y.begin(), y.end(), ll_pack(v, 0)); }  // stale words
};

// One hand-off from the "GPU" (X = xv): returns the nanoseconds it waited for the correction.
// Recorded for the server, as the GPU does, unless `record` is false (then 0 for all): the wait
// in wait_ns, in window_ns the point's window (X written to the backbone work's end), and in
// turn_ns, where the correction was not there at the first look, X written to DONE seen.
int64_t hand_off(FakeChannel& ch, uint32_t seq, int point, int rows, int64_t backbone_ns,
                 bool prefill = false, bool record = true, bool norm = false) {
  ll_store(ch.x.data(), ch.xv.data(), int64_t(ch.xv.size()), seq);
  ll_publish_head(ch.hdr.head, seq, uint32_t(point),
                  uint32_t(rows) | (prefill ? kPrefillFlag : 0u) | (norm ? kNormFlag : 0u));
  const int64_t t_x = now_ns();
  // the "backbone work": sleep rather than spin, so the server keeps a core on a small machine;
  // windows below a sleep's granularity spin
  if (backbone_ns >= 100000)
    std::this_thread::sleep_for(std::chrono::nanoseconds(backbone_ns));
  else
    while (now_ns() - t_x < backbone_ns) {
    }
  const int64_t window = now_ns() - t_x;
  // Wait for DONE (after every Y word): spin briefly, then sleep-poll. A thread that only spins
  // and yields would share the server's core on a small machine in scheduler time slices.
  const int64_t t0 = now_ns();
  bool missed = false;
  while (int32_t(ch.hdr.done.load(std::memory_order_acquire) - seq) < 0) {
    missed = true;
    if (now_ns() - t0 > 20000) std::this_thread::sleep_for(std::chrono::microseconds(10));
  }
  const int64_t t_seen = now_ns(), waited = t_seen - t0;
  auto put = [&](std::vector<uint32_t>& a, int64_t v) {
    reinterpret_cast<std::atomic<uint32_t>*>(&a[size_t(point)])
        ->store(record ? uint32_t(std::min<int64_t>(v, 0xFFFFFFFF)) : 0u, std::memory_order_release);
  };
  put(ch.window_ns, window);
  put(ch.turn_ns, missed ? t_seen - t_x : 0);
  put(ch.wait_ns, waited);
  return waited;
}

// The end of forward pass `pass`, stamped as taking step_ns on the "GPU's" clock; waits until the
// server has taken it (as the next pass's first hand-off would).
void pass_end(FakeChannel& ch, uint32_t pass, int64_t step_ns, bool decode, CompServer& server) {
  const uint64_t t0 = uint64_t(pass) * 10000000ull;
  const int64_t before = server.stats().steps;
  publish_pass_end(ch.hdr, pass, t0, t0 + uint64_t(step_ns), decode);
  if (!decode) return;
  while (server.stats().steps == before) std::this_thread::sleep_for(std::chrono::microseconds(20));
}

}  // namespace

TEST(served_corrections_match_reference_for_decode_and_prefill_rows) {
  for (int decode_threads : {1, 2})
  for (int prefetch : {0, 1, 3}) {
  // A separate set of points with the same seeds gives the reference.
  const std::vector<ServedPoint> ref = tiny_points(FactorType::BF16, 8);
  CompServerConfig cfg;
  cfg.threads = 3;
  cfg.decode_threads = decode_threads;  // decode rows on a pool of 1 or 2, prefill rows on all 3
  cfg.prefetch_points = prefetch;       // between hand-offs: off, the next point, all (wrapping)
  cfg.rows_max = 40;
  cfg.level = best_simd_level();
  FakeChannel fc(40, 64, 128, 2);
  CompServer server(tiny_points(FactorType::BF16, 8), fc.channel(), cfg);
  CHECK(server.n_points() == 2 && server.max_d_in() == 64 && server.max_width() == 128);
  CHECK(server.threads() == 3 && server.decode_threads() == decode_threads);
  uint32_t seq = 0;
  double worst = 0;
  for (int pass = 0; pass < 12; ++pass) {
    const int rows = pass % 4 == 3 ? 40 : 1 + pass % 3;  // decode rows, and a prefill chunk
    for (int p = 0; p < 2; ++p) {
      const auto x = testutil::random_vec(size_t(rows * 64), 100 + pass * 2 + p);
      fc.xv = x;
      fc.fill_y(1e30f);  // stale data must be overwritten
      hand_off(fc, ++seq, p, rows, 0, /*prefill=*/rows == 40);
      const CompPoint& cp = *ref[size_t(p)].cp;
      std::vector<std::vector<double>> r(size_t(cp.layers()));
      std::vector<double*> rp;
      std::vector<int> ranks;
      for (int j = 0; j < cp.layers(); ++j) {
        r[size_t(j)].assign(size_t(rows * cp.d_out(j)), 0.0);
        rp.push_back(r[size_t(j)].data());
        ranks.push_back(cp.r_max(j));
      }
      cp.apply_reference(ranks.data(), x.data(), rows, rp.data());
      size_t off = 0;
      for (int j = 0; j < cp.layers(); ++j)
        for (size_t i = 0; i < r[size_t(j)].size(); ++i, ++off)
        {
          CHECK(ll_seq(fc.y[off]) == seq);
          worst = std::max(worst, std::fabs(double(fc.yv(off)) - r[size_t(j)][i]) /
                                      (1.0 + std::fabs(r[size_t(j)][i])));
        }
    }
    pass_end(fc, uint32_t(pass), 1000000, rows != 40, server);
  }
  CHECK(worst < 1e-5);
  const CompServerStats st = server.stats();
  CHECK(st.steps == 9);           // decode passes
  CHECK(st.prefill_rows == 120);  // three 40-row chunks
  CHECK(st.bytes_to_host > 0 && st.bytes_to_device > 0 && st.factor_bytes_read > 0);
  CHECK_NEAR(st.rank_fraction_sum / double(st.steps), 1.0, 1e-12);
  // the workers prefetched between decode hand-offs exactly when asked to (the time counts as
  // CPU busy)
  CHECK((st.prefetch_ns > 0) == (prefetch > 0));
  CHECK(st.cpu_busy_ns >= st.prefetch_ns);
  CHECK(server.error().empty());
  }
}

TEST(fixed_ranks_are_used_and_reported) {
  CompServerConfig cfg;
  cfg.rows_max = 4;
  FakeChannel fc(4, 64, 128, 2);
  CompServer server(tiny_points(FactorType::F32, 8), fc.channel(), cfg);
  const int32_t ranks[7] = {0, 3, 8, 5, 0, 0, 0};
  server.set_ranks(ranks, 7);
  const auto x = testutil::random_vec(64, 5);
  fc.xv = x;
  fc.fill_y(7.0f);
  hand_off(fc, 1, 0, 1, 0);
  // layer 0 (q) at rank 0: its correction is exactly zero, not the stale 7
  CHECK(std::all_of(fc.y.begin(), fc.y.begin() + 64,
                    [](uint64_t w) { return ll_value(w) == 0.0f && ll_seq(w) == 1; }));
  CHECK(fc.yv(64) != 7.0f && ll_seq(fc.y[64]) == 1);
  hand_off(fc, 2, 1, 1, 0);
  int32_t full[7], last[7];
  double mean[7];
  server.ranks(full, last, mean, 7);
  CHECK(full[0] == 8 && full[3] == 8 && full[4] == 0);
  CHECK(last[1] == 3 && last[2] == 8 && last[3] == 5);
  CHECK_NEAR(mean[1], 3.0, 1e-12);
  const int32_t bad[7] = {9, 0, 0, 0, 0, 0, 0};
  CHECK_THROWS(server.set_ranks(bad, 7), HCI_ERR_INVALID_ARGUMENT, "outside 0..8");
}

TEST(out_of_order_handoff_is_reported_not_hung) {
  CompServerConfig cfg;
  cfg.rows_max = 4;
  FakeChannel fc(4, 64, 128, 2);
  CompServer server(tiny_points(FactorType::F32, 4), fc.channel(), cfg);
  fc.xv = testutil::random_vec(64, 4);
  hand_off(fc, 1, 1, 1, 0);  // point 1 first: wrong, but answered
  CHECK(server.error().find("expected point 0") != std::string::npos);
  CHECK(ll_seq(fc.y[0]) == 1 && ll_seq(fc.y.back()) == 1);  // every word, so no GPU waits on
  server.restart();
  CHECK(fc.hdr.done.load() == 0);
  // no word keeps a tag of the run before (the new run's sequence numbers start at 1 again)
  CHECK(std::all_of(fc.x.begin(), fc.x.end(), [](uint64_t w) { return w == 0; }));
  CHECK(std::all_of(fc.y.begin(), fc.y.end(), [](uint64_t w) { return w == 0; }));
  hand_off(fc, 1, 0, 1, 0);  // a fresh sequence after the restart is served
  CHECK(fc.hdr.done.load() == 1);
}

TEST(residual_for_a_point_without_rmsnorm_is_reported_not_hung) {
  CompServerConfig cfg;
  cfg.rows_max = 4;
  FakeChannel fc(4, 64, 128, 2);
  CompServer server(tiny_points(FactorType::F32, 4), fc.channel(), cfg);
  fc.xv = testutil::random_vec(64, 4);
  hand_off(fc, 1, 0, 1, 0, false, true, /*norm=*/true);  // answered (else this would hang)
  CHECK(server.error().find("no RMSNorm") != std::string::npos);
}

// A hand-off of the raw residual (kNormFlag): the server applies the point's RMSNorm (weights,
// epsilon, rounding to the activation type) before the product, as the GPU's product does.
TEST(server_normalizes_a_raw_residual) {
  for (ServedPoint::Round round :
       {ServedPoint::Round::None, ServedPoint::Round::F16, ServedPoint::Round::BF16}) {
    std::vector<ServedPoint> pts = tiny_points(FactorType::F32, 8);
    const std::vector<ServedPoint> ref = tiny_points(FactorType::F32, 8);
    const auto gamma = testutil::random_vec(64, 31);
    pts[0].norm_gamma = gamma;
    pts[0].norm_eps = 1e-5f;
    pts[0].norm_round = round;
    CompServerConfig cfg;
    cfg.rows_max = 2;
    cfg.threads = round == ServedPoint::Round::F16 ? 3 : 1;  // column-split norm over 3 workers
    FakeChannel fc(2, 64, 128, 2);
    CompServer server(std::move(pts), fc.channel(), cfg);
    auto h = testutil::random_vec(128, 32);
    for (float& v : h) v *= 30.0f;  // a residual stream well away from unit scale
    fc.xv = h;
    hand_off(fc, 1, 0, 2, 0, false, true, /*norm=*/true);
    CHECK(server.error().empty());
    // reference: normalize in float64, round as the GPU would, then the float64 product
    std::vector<float> xn(128);
    for (int b = 0; b < 2; ++b) {
      double ss = 0;
      for (int c = 0; c < 64; ++c) ss += double(h[size_t(b * 64 + c)]) * h[size_t(b * 64 + c)];
      const double inv = 1.0 / std::sqrt(ss / 64 + 1e-5);
      for (int c = 0; c < 64; ++c) {
        float v = float(gamma[size_t(c)] * (h[size_t(b * 64 + c)] * inv));
        if (round == ServedPoint::Round::F16) v = f16_to_f32(f32_to_f16(v));
        if (round == ServedPoint::Round::BF16) {  // nearest even, as __float2bfloat16
          uint32_t u;
          std::memcpy(&u, &v, 4);
          u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
          std::memcpy(&v, &u, 4);
        }
        xn[size_t(b * 64 + c)] = v;
      }
    }
    const CompPoint& cp = *ref[0].cp;
    std::vector<std::vector<double>> r(3);
    std::vector<double*> rp;
    for (int j = 0; j < 3; ++j) {
      r[size_t(j)].assign(size_t(2 * cp.d_out(j)), 0.0);
      rp.push_back(r[size_t(j)].data());
    }
    const int ranks[3] = {8, 8, 8};
    cp.apply_reference(ranks, xn.data(), 2, rp.data());
    double worst = 0, scale = 0;
    size_t off = 0;
    for (int j = 0; j < 3; ++j)
      for (size_t i = 0; i < r[size_t(j)].size(); ++i, ++off) {
        worst = std::max(worst, std::fabs(double(fc.yv(off)) - r[size_t(j)][i]));
        scale = std::max(scale, std::fabs(r[size_t(j)][i]));
      }
    // a rounding step apart at most in a few inputs (the sums' order differs): tiny against the
    // correction, and far below what the unnormalized residual (30x) would give
    CHECK(worst < 1e-2 * scale);
  }
}

// The controller against a "GPU" whose backbone work per point (its window, which it reports)
// is shorter than the CPU's work at full rank: from the window, the wait and the CPU's speed the
// ranks must come down within a few passes to where the GPU hardly waits; then, with a long
// window, they must return to full.
TEST(controller_fits_a_point_in_its_window) {
  // one point, big enough that full rank takes milliseconds on one thread
  std::vector<ServedPoint> pts;
  ServedPoint sp;
  sp.cp = std::make_unique<CompPoint>(2048, std::vector<int>{8192}, std::vector<int>{512},
                                      FactorType::F32);
  sp.linear = {0};
  WorkerPool fill_pool(1);
  sp.cp->fill_random(1, 0.02f, fill_pool);
  pts.push_back(std::move(sp));
  CompServerConfig cfg;
  cfg.threads = 1;
  cfg.rows_max = 1;
  cfg.controller = true;
  cfg.probe = 0.05;
  cfg.slowdown = -1;  // ranks only: the one point stays on
  cfg.level = best_simd_level();
  FakeChannel fc(1, 2048, 8192, 1);
  fc.xv = testutil::random_vec(2048, 9);
  CompServer server(std::move(pts), fc.channel(), cfg);
  uint32_t seq = 0;
  // the warm full-rank span first (nothing recorded: the controller sees no window and no wait)
  int64_t full_ns = INT64_MAX;  // the fastest of a few: preemption only makes passes longer
  for (int i = 0; i < 6; ++i) {
    const int64_t t0 = now_ns();
    hand_off(fc, ++seq, 0, 1, 0, false, /*record=*/false);
    if (i > 0) full_ns = std::min(full_ns, now_ns() - t0);
  }
  int32_t last = 0;
  server.ranks(nullptr, &last, nullptr, 1);
  CHECK(last == 512);
  const int64_t window = std::max<int64_t>(full_ns / 4, 100000);
  std::vector<int64_t> waits;
  std::vector<int32_t> ranks;  // after each pass
  for (int pass = 0; pass < 24; ++pass) {
    waits.push_back(hand_off(fc, ++seq, 0, 1, window));
    server.ranks(nullptr, &last, nullptr, 1);
    ranks.push_back(last);
  }
  // medians of passes 4..23 (a late pass on a shared machine costs a cut, not a failure)
  std::vector<int64_t> late(waits.begin() + 4, waits.end());
  std::sort(late.begin(), late.end());
  const int64_t late_wait = late[late.size() / 2];
  std::vector<int32_t> late_ranks(ranks.begin() + 4, ranks.end());
  std::sort(late_ranks.begin(), late_ranks.end());
  last = late_ranks[late_ranks.size() / 2];
  std::printf("  full rank %.0f us, window %.0f us: median rank %d of 512, waits %.0f, %.0f, "
              "%.0f us, then median %.1f us\n",
              full_ns / 1e3, window / 1e3, last, waits[0] / 1e3, waits[1] / 1e3, waits[2] / 1e3,
              late_wait / 1e3);
  CHECK(last > 0 && last < 400);
  // at full rank the GPU would wait about full_ns − window each pass
  CHECK(late_wait < (full_ns - window) / 4);
  // A window far longer than the full-rank work: back to full rank (about 6 passes undisturbed;
  // a late pass on a shared machine costs a cut, so allow many more).
  int passes_to_full = -1;
  for (int pass = 0; pass < 100 && passes_to_full < 0; ++pass) {
    hand_off(fc, ++seq, 0, 1, 4 * full_ns);
    pass_end(fc, uint32_t(pass), 5 * full_ns, true, server);
    server.ranks(nullptr, &last, nullptr, 1);
    if (last == 512) passes_to_full = pass + 1;
  }
  std::printf("  long window: full rank again after %d passes\n", passes_to_full);
  CHECK(last == 512);
  CHECK(server.stats().rank_fraction_sum > 0);
  CHECK(server.stats().window_ns > 0);
}

// A point whose window cannot hold even its round trip at rank 0 (a wide point, 1 us of GPU work)
// beside one with a long window: with a budget that does not bind, the controller measures the
// backbone, turns both on, and turns the first off once its ranks have sat at 0 for a few passes
// ("starved"); it stays off, while the other keeps its full rank.
TEST(controller_turns_off_a_point_whose_window_is_shorter_than_its_round_trip) {
  std::vector<ServedPoint> pts;
  const int d[2] = {64, 16384}, rmax[2] = {8, 4};
  const int64_t window[2] = {2000000, 1000};
  for (int p = 0; p < 2; ++p) pts.push_back(one_layer_point(d[p], rmax[p], p, uint64_t(p + 1)));
  CompServerConfig cfg;
  cfg.rows_max = 1;
  cfg.controller = true;
  cfg.slowdown = 1.0;
  cfg.level = best_simd_level();
  FakeChannel fc(1, 16384, 16384, 2);
  fc.xv = testutil::random_vec(16384, 13);
  CompServer server(std::move(pts), fc.channel(), cfg);
  std::vector<char> on;
  int wide_on_after_calibration = 0;
  for (uint32_t pass = 0; pass < 40; ++pass) {
    server.active_points(on);
    int n = 0;
    for (int p = 0; p < 2; ++p)
      if (on[size_t(p)]) {
        hand_off(fc, pass * 2 + uint32_t(p) + 1, p, 1, window[p]);
        ++n;
      }
    if (server.backbone_step_ns() > 0 && on[1]) ++wide_on_after_calibration;
    pass_end(fc, pass, 1000000 + 5000 * int64_t(n), true, server);
  }
  CHECK(server.error().empty());
  server.active_points(on);
  int32_t last[2];
  double mean[2];
  server.ranks(nullptr, last, mean, 2);
  std::printf("  wide point on for %d passes after the backbone measurement; set %d%d, ranks %d %d "
              "(means %.1f %.1f)\n",
              wide_on_after_calibration, on[0], on[1], last[0], last[1], mean[0], mean[1]);
  CHECK(wide_on_after_calibration >= 3);  // tried, then turned off
  CHECK(on == std::vector<char>({1, 0}));
  // the other keeps (about) its full rank: a preempted pass on a shared machine may cut it once
  CHECK(last[0] > 0 && mean[0] > 5.0 && last[1] == 0);  // (mean: 0 while off to calibrate)
}

// The point set against a "GPU" whose step costs a fixed 20 us per point handed over (and whose
// waits are zero): with a 5% budget over a 1 ms backbone, the controller must measure the
// backbone with every point off, then keep the two points of most value (the largest allocated
// ranks) and turn the others off; the GPU hands over only the points that are on (the sequence
// words then skip the others), and off points report rank 0. Every 60 passes it measures the
// backbone again (version 0: every point off) and returns to the same set under its old version.
TEST(controller_keeps_the_points_that_fit_the_slowdown) {
  std::vector<ServedPoint> pts;
  const int rmax[4] = {2, 8, 1, 4};  // values: point 1 > 3 > 0 > 2
  for (int p = 0; p < 4; ++p) pts.push_back(one_layer_point(64, rmax[p], p, uint64_t(p + 1)));
  CompServerConfig cfg;
  cfg.rows_max = 1;
  cfg.controller = true;
  cfg.slowdown = 0.05;
  cfg.recalib_passes = 60;
  FakeChannel fc(1, 64, 64, 4);
  fc.xv = testutil::random_vec(64, 12);
  CompServer server(std::move(pts), fc.channel(), cfg);
  std::vector<char> on;
  std::vector<int> counts;
  std::vector<uint64_t> versions;
  int64_t calibrated = 0;
  for (uint32_t pass = 0; pass < 80; ++pass) {
    versions.push_back(server.active_points(on));
    int n = 0;
    for (int p = 0; p < 4; ++p)
      if (on[size_t(p)]) {
        hand_off(fc, pass * 4 + uint32_t(p) + 1, p, 1, 0, false, /*record=*/false);
        ++n;
      }
    counts.push_back(n);
    pass_end(fc, pass, 1000000 + 20000 * int64_t(n), true, server);
    if (!calibrated) calibrated = server.backbone_step_ns();
  }
  CHECK(server.error().empty());
  CHECK(counts[0] == 4);                       // all on until the controller has measured
  CHECK(std::count(counts.begin(), counts.end(), 0) >= 3);  // the backbone alone
  CHECK(calibrated == 1000000);
  server.active_points(on);
  CHECK(on == std::vector<char>({0, 1, 0, 1}));
  CHECK(counts.back() == 2);
  for (size_t i = 0; i < counts.size(); ++i) CHECK((versions[i] == 0) == (counts[i] == 0));
  // the second measurement: off for a few passes, then the set before it, same version
  size_t off_again = 0;
  for (size_t i = 40; i < counts.size() && !off_again; ++i)
    if (counts[i] == 0) off_again = i;
  CHECK(off_again > 40);
  CHECK(versions.back() == versions[off_again - 1] && counts[off_again - 1] == 2);
  int32_t last[4];
  double mean[4];
  server.ranks(nullptr, last, mean, 4);
  CHECK(last[0] == 0 && last[1] > 0 && last[2] == 0 && last[3] > 0);
  CHECK(mean[1] > mean[0]);
  const CompServerStats st = server.stats();
  CHECK(st.steps == 80);
  CHECK(st.rank_fraction_sum / 80.0 < 0.9);
}

// `test_comp_server --bench`: round-trip latency of one hand-off (no backbone work) for a small
// and a 7B-sized point, by thread count: the CPU side's fixed cost per compensation point.
static int bench_latency() {
  const int hw = int(std::thread::hardware_concurrency());
  for (int d : {512, 4096})
    for (int threads : {1, 2, 4, 8, 14}) {
      if (threads + 2 > hw) continue;
      std::vector<ServedPoint> pts;
      ServedPoint sp;
      sp.cp = std::make_unique<CompPoint>(d, std::vector<int>{d, d, d}, std::vector<int>{16, 16, 16},
                                          FactorType::BF16);
      sp.linear = {0, 1, 2};
      WorkerPool fill(1);
      sp.cp->fill_random(1, 0.02f, fill);
      pts.push_back(std::move(sp));
      CompServerConfig cfg;
      cfg.threads = threads;
      cfg.first_core = 2;
      cfg.rows_max = 1;
      cfg.level = best_simd_level();
      FakeChannel fc(1, d, 3 * d, 1);
      CompServer server(std::move(pts), fc.channel(), cfg);
      uint32_t seq = 0;
      for (int i = 0; i < 200; ++i) hand_off(fc, ++seq, 0, 1, 0);
      std::vector<int64_t> t;
      for (int i = 0; i < 2000; ++i) {
        const int64_t t0 = now_ns();
        hand_off(fc, ++seq, 0, 1, 0);
        t.push_back(now_ns() - t0);
      }
      std::sort(t.begin(), t.end());
      std::printf("hand-off d %d (q/k/v, rank 16, bf16), %2d threads: median %.1f us, p90 %.1f us\n",
                  d, threads, t[t.size() / 2] / 1e3, t[t.size() * 9 / 10] / 1e3);
    }
  return 0;
}

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "--bench") return bench_latency();
  return check::run_all();
}
