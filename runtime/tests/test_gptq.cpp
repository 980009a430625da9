// GPTQ checked against a float64 reimplementation written from the algorithm's definition: a
// plain column loop with the optimal-brain-surgeon update on an explicit inverse Hessian (no
// lazy blocks, no Cholesky), and against RTN on the output error it minimizes.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "check.h"
#include "error.h"
#include "gptq.h"
#include "quantize.h"
#include "test_util.h"

using Mat = std::vector<double>;

struct Grid {
  double scale, zero, qmax;
};

// The quantizer's definition: range including 0, scale rounded to fp16, integer zero.
static Grid grid_of(double lo, double hi, int bits) {
  const double qmax = std::pow(2.0, bits) - 1;
  lo = std::min(lo, 0.0);
  hi = std::max(hi, 0.0);
  if (lo == 0 && hi == 0) lo = -1, hi = 1;
  double scale = double(_Float16(float((hi - lo) / qmax)));
  if (scale == 0) scale = std::ldexp(1.0, -24);
  return {scale, std::clamp(std::nearbyint(-lo / scale), 0.0, qmax), qmax};
}
static double code_of(double w, const Grid& g) {
  return std::clamp(std::nearbyint(w / g.scale) + g.zero, 0.0, g.qmax);
}

// Gauss–Jordan inverse with partial pivoting.
static Mat inverse(Mat a, int n) {
  Mat inv(size_t(n * n), 0.0);
  for (int i = 0; i < n; ++i) inv[size_t(i * n + i)] = 1;
  for (int c = 0; c < n; ++c) {
    int p = c;
    for (int r = c + 1; r < n; ++r)
      if (std::fabs(a[size_t(r * n + c)]) > std::fabs(a[size_t(p * n + c)])) p = r;
    for (int k = 0; k < n; ++k) {
      std::swap(a[size_t(c * n + k)], a[size_t(p * n + k)]);
      std::swap(inv[size_t(c * n + k)], inv[size_t(p * n + k)]);
    }
    const double d = a[size_t(c * n + c)];
    for (int k = 0; k < n; ++k) a[size_t(c * n + k)] /= d, inv[size_t(c * n + k)] /= d;
    for (int r = 0; r < n; ++r) {
      if (r == c) continue;
      const double f = a[size_t(r * n + c)];
      if (f == 0) continue;
      for (int k = 0; k < n; ++k) {
        a[size_t(r * n + k)] -= f * a[size_t(c * n + k)];
        inv[size_t(r * n + k)] -= f * inv[size_t(c * n + k)];
      }
    }
  }
  return inv;
}

struct RefOut {
  std::vector<int> codes;  // original column order
  Mat deq;
};

// GPTQ by definition. block_snapshot > 0 emulates the reference code's group parameters: from
// the weights as they stood at the last multiple of block_snapshot columns.
static RefOut reference_gptq(const std::vector<float>& w32, int m, int n, const Mat& Hin, int bits,
                             int g, bool act_order, double damp, int block_snapshot = 0) {
  Mat W(w32.begin(), w32.end()), H(Hin);
  std::vector<Grid> grid(static_cast<size_t>(m));
  const bool per_row = g == n;
  if (per_row)
    for (int r = 0; r < m; ++r) {
      double lo = W[size_t(r * n)], hi = lo;
      for (int c = 0; c < n; ++c) lo = std::min(lo, W[size_t(r * n + c)]), hi = std::max(hi, W[size_t(r * n + c)]);
      grid[size_t(r)] = grid_of(lo, hi, bits);
    }
  for (int i = 0; i < n; ++i)
    if (H[size_t(i * n + i)] == 0) {
      H[size_t(i * n + i)] = 1;
      for (int r = 0; r < m; ++r) W[size_t(r * n + i)] = 0;
    }
  std::vector<int> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  if (act_order)
    std::stable_sort(perm.begin(), perm.end(),
                     [&](int a, int b) { return H[size_t(a * n + a)] > H[size_t(b * n + b)]; });
  Mat Wp(W.size()), Hp(H.size());
  for (int i = 0; i < n; ++i) {
    for (int r = 0; r < m; ++r) Wp[size_t(r * n + i)] = W[size_t(r * n + perm[size_t(i)])];
    for (int j = 0; j < n; ++j) Hp[size_t(i * n + j)] = H[size_t(perm[size_t(i)] * n + perm[size_t(j)])];
  }
  double mean = 0;
  for (int i = 0; i < n; ++i) mean += Hp[size_t(i * n + i)];
  for (int i = 0; i < n; ++i) Hp[size_t(i * n + i)] += damp * mean / n;
  Mat Hinv = inverse(Hp, n), snap;
  RefOut out{std::vector<int>(size_t(m * n)), Mat(size_t(m * n))};
  for (int j = 0; j < n; ++j) {
    if (block_snapshot > 0 && j % block_snapshot == 0) snap = Wp;
    if (!per_row && j % g == 0) {
      const Mat& src = block_snapshot > 0 ? snap : Wp;
      for (int r = 0; r < m; ++r) {
        double lo = src[size_t(r * n + j)], hi = lo;
        for (int c = j; c < j + g; ++c)
          lo = std::min(lo, src[size_t(r * n + c)]), hi = std::max(hi, src[size_t(r * n + c)]);
        grid[size_t(r)] = grid_of(lo, hi, bits);
      }
    }
    const double d = Hinv[size_t(j * n + j)];
    for (int r = 0; r < m; ++r) {
      const Grid& q = grid[size_t(r)];
      const double code = code_of(Wp[size_t(r * n + j)], q);
      const double deq = (code - q.zero) * q.scale;
      out.codes[size_t(r * n + perm[size_t(j)])] = int(code);
      out.deq[size_t(r * n + perm[size_t(j)])] = deq;
      const double e = (Wp[size_t(r * n + j)] - deq) / d;
      for (int k = j + 1; k < n; ++k) Wp[size_t(r * n + k)] -= e * Hinv[size_t(j * n + k)];
    }
    // remove column j from the inverse Hessian (OBS)
    for (int a = j + 1; a < n; ++a)
      for (int b = j + 1; b < n; ++b) Hinv[size_t(a * n + b)] -= Hinv[size_t(a * n + j)] * Hinv[size_t(j * n + b)] / d;
  }
  return out;
}

// Correlated inputs X [N, n] = Z · M with per-column scales; H = XᵀX / N. `dead` columns are 0.
static Mat make_hessian(int n, int N, uint32_t seed, std::vector<int> dead = {}) {
  const auto z = testutil::random_vec(size_t(N * n), seed);
  const auto mix = testutil::random_vec(size_t(n * n), seed + 1, 0.3f);
  Mat X(size_t(N * n), 0.0);
  for (int t = 0; t < N; ++t)
    for (int j = 0; j < n; ++j) {
      double s = z[size_t(t * n + j)];
      for (int k = 0; k < n; ++k) s += z[size_t(t * n + k)] * mix[size_t(k * n + j)];
      X[size_t(t * n + j)] = s * (0.2 + 2.0 * ((j * 37) % n) / n);
    }
  for (int c : dead)
    for (int t = 0; t < N; ++t) X[size_t(t * n + c)] = 0;
  Mat H(size_t(n * n), 0.0);
  for (int t = 0; t < N; ++t)
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) H[size_t(i * n + j)] += X[size_t(t * n + i)] * X[size_t(t * n + j)] / N;
  return H;
}

struct Run {
  std::vector<uint8_t> codes;
  std::vector<float> scales, zeros, deq;
  std::vector<int32_t> g_idx;
};

static Run run_gptq(const std::vector<float>& w, int m, int n, const Mat& H, int bits, int g,
                    bool act_order, bool block_start = false) {
  hci::GptqSettings s;
  s.bits = bits;
  s.group_size = g;
  s.act_order = act_order;
  s.groups_from_block_start = block_start;
  Run r;
  hci::gptq_quantize(w.data(), m, n, H.data(), s, r.codes, r.scales, r.zeros, r.g_idx, r.deq);
  return r;
}

// tr((W − Q) H (W − Q)ᵀ)
static double output_error(const std::vector<float>& w, const std::vector<float>& q, int m, int n,
                           const Mat& H) {
  double s = 0;
  for (int r = 0; r < m; ++r)
    for (int i = 0; i < n; ++i) {
      const double di = double(w[size_t(r * n + i)]) - q[size_t(r * n + i)];
      for (int j = 0; j < n; ++j)
        s += di * H[size_t(i * n + j)] * (double(w[size_t(r * n + j)]) - q[size_t(r * n + j)]);
    }
  return s;
}

TEST(matches_float64_column_loop_reference) {
  const int m = 32, n = 128;
  const auto w = testutil::random_vec(size_t(m * n), 21, 0.05f);
  const Mat H = make_hessian(n, 512, 22, {5, 77});
  for (int bits : {3, 4})
    for (int g : {32, n})
      for (bool act : {false, true}) {
        const Run r = run_gptq(w, m, n, H, bits, g, act);
        const RefOut ref = reference_gptq(w, m, n, H, bits, g, act, 0.01);
        size_t mismatched = 0;
        double max_err = 0;
        for (size_t i = 0; i < w.size(); ++i) {
          mismatched += r.codes[i] != ref.codes[i];
          max_err = std::max(max_err, std::fabs(double(r.deq[i]) - ref.deq[i]));
        }
        std::printf("  bits %d g %3d act_order %d: %zu of %zu codes differ\n", bits, g, int(act),
                    mismatched, w.size());
        CHECK(mismatched <= w.size() / 1000);
        if (mismatched == 0) CHECK(max_err < 1e-7);
        // stored codes, scales, zeros and groups dequantize to w_deq in the original order
        const int n_groups = n / g;
        CHECK(r.scales.size() == size_t(m * n_groups));
        CHECK(r.g_idx.size() == (act && g < n ? size_t(n) : 0));
        std::vector<int> members(size_t(n_groups), 0);
        for (int c = 0; c < n; ++c) members[size_t(r.g_idx.empty() ? c / g : r.g_idx[size_t(c)])]++;
        for (int k : members) CHECK(k == g);
        double max_dq = 0;
        for (int row = 0; row < m; ++row)
          for (int c = 0; c < n; ++c) {
            const int gi = r.g_idx.empty() ? c / g : r.g_idx[size_t(c)];
            const size_t i = size_t(row * n + c);
            const double dq = (double(r.codes[i]) - r.zeros[size_t(row * n_groups + gi)]) *
                              r.scales[size_t(row * n_groups + gi)];
            max_dq = std::max(max_dq, std::fabs(dq - r.deq[i]));
          }
        CHECK(max_dq == 0);
        // dead columns are quantized to 0
        for (int row = 0; row < m; ++row) CHECK(r.deq[size_t(row * n + 5)] == 0.0f);
      }
}

TEST(reference_code_group_parameters_from_block_start) {
  const int m = 16, n = 256;  // two lazy blocks of 128
  const auto w = testutil::random_vec(size_t(m * n), 31, 0.05f);
  const Mat H = make_hessian(n, 600, 32);
  for (bool act : {false, true}) {
    const Run quirk = run_gptq(w, m, n, H, 3, 32, act, true);
    const RefOut ref = reference_gptq(w, m, n, H, 3, 32, act, 0.01, 128);
    const RefOut clean = reference_gptq(w, m, n, H, 3, 32, act, 0.01);
    size_t mismatched = 0, differs = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      mismatched += quirk.codes[i] != ref.codes[i];
      differs += clean.codes[i] != ref.codes[i];
    }
    std::printf("  act_order %d: %zu codes differ from the emulation; the published variant "
                "differs in %zu\n", int(act), mismatched, differs);
    CHECK(mismatched <= w.size() / 1000);
    CHECK(differs > 0);  // the option does change something
  }
  // with groups as wide as the block, both variants agree
  const Run a = run_gptq(w, m, n, H, 4, 128, false, true), b = run_gptq(w, m, n, H, 4, 128, false);
  CHECK(a.codes == b.codes);
}

TEST(identity_hessian_is_rtn) {
  const int m = 24, n = 128;
  const auto w = testutil::random_vec(size_t(m * n), 41, 0.05f);
  Mat H(size_t(n * n), 0.0);
  for (int i = 0; i < n; ++i) H[size_t(i * n + i)] = 1;
  for (int g : {32, 64, n}) {
    const Run r = run_gptq(w, m, n, H, 3, g, false);
    std::vector<uint8_t> codes;
    std::vector<float> scales, zeros, deq;
    hci::quantize_rtn(w.data(), m, n, 3, g, codes, scales, zeros, deq);
    size_t mismatched = 0;
    for (size_t i = 0; i < codes.size(); ++i) mismatched += codes[i] != r.codes[i];
    CHECK(mismatched <= codes.size() / 1000);
    CHECK(scales == r.scales);
  }
}

TEST(lower_output_error_than_rtn) {
  const int m = 32, n = 128;
  const auto w = testutil::random_vec(size_t(m * n), 51, 0.05f);
  const Mat H = make_hessian(n, 512, 52);
  for (int bits : {2, 3, 4})
    for (int g : {32, n})
      for (bool act : {false, true}) {
        const Run r = run_gptq(w, m, n, H, bits, g, act);
        std::vector<uint8_t> codes;
        std::vector<float> scales, zeros, deq;
        hci::quantize_rtn(w.data(), m, n, bits, g, codes, scales, zeros, deq);
        const double eg = output_error(w, r.deq, m, n, H), er = output_error(w, deq, m, n, H);
        std::printf("  bits %d g %3d act_order %d: tr((W-Q)H(W-Q)^T) GPTQ %.4g, RTN %.4g\n", bits,
                    g, int(act), eg, er);
        CHECK(eg < er);
      }
}

TEST(errors) {
  const int m = 4, n = 32;
  const auto w = testutil::random_vec(size_t(m * n), 61);
  Mat H(size_t(n * n), 0.0);
  for (int i = 0; i < n; ++i) H[size_t(i * n + i)] = -1;  // negative definite
  hci::GptqSettings s;
  s.group_size = 32;
  std::vector<uint8_t> codes;
  std::vector<float> scales, zeros, deq;
  std::vector<int32_t> g_idx;
  CHECK_THROWS(hci::gptq_quantize(w.data(), m, n, H.data(), s, codes, scales, zeros, g_idx, deq),
               HCI_ERR_NUMERIC, "not positive definite");
  s.group_size = 48;
  CHECK_THROWS(hci::gptq_quantize(w.data(), m, n, H.data(), s, codes, scales, zeros, g_idx, deq),
               HCI_ERR_INVALID_ARGUMENT, "does not divide");
}

TEST_MAIN()
