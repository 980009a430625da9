// Activation-aware compensation: the output-space error of each scaling against plain factors,
// the Eckart–Young tail of the scaled singular values, exact reconstruction at full rank, and the
// square root of the covariance. Output errors are tr(M H Mᵀ) = ||M H^½||², no square root needed.
#include <algorithm>
#include <cmath>

#include "check.h"
#include "error.h"
#include "lowrank.h"
#include "test_util.h"

using Mat = std::vector<double>;

// Anisotropic, correlated inputs: X = Z · diag(spread) · R, H = XᵀX / N.
static Mat make_cov(int n, int N, uint32_t seed) {
  const auto z = testutil::random_vec(size_t(N * n), seed);
  const auto rot = testutil::random_vec(size_t(n * n), seed + 1, 0.2f);
  Mat X(size_t(N * n), 0.0);
  for (int t = 0; t < N; ++t)
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int k = 0; k < n; ++k)
        s += z[size_t(t * n + k)] * std::pow(10.0, -1.5 * k / n) * (double(k == j) + rot[size_t(k * n + j)]);
      X[size_t(t * n + j)] = s * (j % 7 == 0 ? 8.0 : 1.0);  // a few outlier channels
    }
  Mat H(size_t(n * n), 0.0);
  for (int t = 0; t < N; ++t)
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) H[size_t(i * n + j)] += X[size_t(t * n + i)] * X[size_t(t * n + j)] / N;
  return H;
}

// tr(M H Mᵀ) with M = E − B[:, :r] A[:r] (B has stride rs).
static double out_err(const Mat& E, const std::vector<float>& A, const std::vector<float>& B, int m,
                      int n, int rs, int r, const Mat& H) {
  Mat M(E);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j)
      for (int k = 0; k < r; ++k) M[size_t(i * n + j)] -= double(B[size_t(i * rs + k)]) * A[size_t(k * n + j)];
  double s = 0;
  for (int i = 0; i < m; ++i)
    for (int a = 0; a < n; ++a)
      for (int b = 0; b < n; ++b) s += M[size_t(i * n + a)] * H[size_t(a * n + b)] * M[size_t(i * n + b)];
  return s;
}

struct Factors {
  std::vector<float> A, B;
  std::vector<double> s;
};

TEST(scaled_factors_minimize_their_output_error) {
  const int m = 24, n = 40, full = 24;
  const auto ef = testutil::random_vec(size_t(m * n), 71, 0.01f);
  const Mat E(ef.begin(), ef.end());
  const Mat H = make_cov(n, 400, 72);
  Mat D(size_t(n * n), 0.0), sq(static_cast<size_t>(n));
  for (int j = 0; j < n; ++j) D[size_t(j * n + j)] = sq[size_t(j)] = H[size_t(j * n + j)];
  Factors plain, diag, fullf;
  hci::factorize_scaled(E, m, n, full, hci::Scaling{}, plain.A, plain.B, plain.s);
  hci::factorize_scaled(E, m, n, full, hci::make_diag_scaling(sq.data(), n, 1e-12), diag.A, diag.B, diag.s);
  hci::factorize_scaled(E, m, n, full, hci::make_full_scaling(H.data(), n, 1e-12), fullf.A, fullf.B, fullf.s);
  CHECK(plain.s.size() == size_t(full) && diag.s.size() == size_t(full) && fullf.s.size() == size_t(full));
  const double totH = out_err(E, fullf.A, fullf.B, m, n, full, 0, H);
  const double totD = out_err(E, diag.A, diag.B, m, n, full, 0, D);
  double sum_full = 0, sum_diag = 0;
  for (int i = 0; i < full; ++i) sum_full += fullf.s[size_t(i)] * fullf.s[size_t(i)], sum_diag += diag.s[size_t(i)] * diag.s[size_t(i)];
  CHECK_NEAR(sum_full, totH, 1e-9 * totH);  // ||E H^½||² = tr(E H Eᵀ)
  CHECK_NEAR(sum_diag, totD, 1e-9 * totD);
  for (int r : {1, 2, 4, 8, 16}) {
    const double p_h = out_err(E, plain.A, plain.B, m, n, full, r, H);
    const double d_h = out_err(E, diag.A, diag.B, m, n, full, r, H);
    const double f_h = out_err(E, fullf.A, fullf.B, m, n, full, r, H);
    const double p_d = out_err(E, plain.A, plain.B, m, n, full, r, D);
    const double d_d = out_err(E, diag.A, diag.B, m, n, full, r, D);
    std::printf("  rank %2d: tr(M H Mt) plain %.4g act-diag %.4g act-full %.4g\n", r, p_h, d_h, f_h);
    CHECK(f_h <= p_h * (1 + 1e-6));
    CHECK(f_h <= d_h * (1 + 1e-6));
    CHECK(d_d <= p_d * (1 + 1e-6));
    double tail_full = 0, tail_diag = 0;
    for (int i = r; i < full; ++i) tail_full += fullf.s[size_t(i)] * fullf.s[size_t(i)], tail_diag += diag.s[size_t(i)] * diag.s[size_t(i)];
    CHECK_NEAR(f_h, tail_full, 1e-5 * totH);
    CHECK_NEAR(d_d, tail_diag, 1e-5 * totD);
  }
  // a prefix of the factors is the smaller factorization
  Factors f8;
  hci::factorize_scaled(E, m, n, 8, hci::make_full_scaling(H.data(), n, 1e-12), f8.A, f8.B, f8.s);
  CHECK_NEAR(out_err(E, f8.A, f8.B, m, n, 8, 8, H), out_err(E, fullf.A, fullf.B, m, n, full, 8, H), 1e-5 * totH);
}

TEST(act_full_at_full_rank_reproduces_E) {
  const int m = 20, n = 20;
  const auto ef = testutil::random_vec(size_t(m * n), 81);
  const Mat E(ef.begin(), ef.end());
  const Mat H = make_cov(n, 300, 82);
  Factors f;
  hci::factorize_scaled(E, m, n, n, hci::make_full_scaling(H.data(), n, 1e-6), f.A, f.B, f.s);
  double num = 0, den = 0;
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double v = E[size_t(i * n + j)];
      for (int k = 0; k < n; ++k) v -= double(f.B[size_t(i * n + k)]) * f.A[size_t(k * n + j)];
      num += v * v;
      den += E[size_t(i * n + j)] * E[size_t(i * n + j)];
    }
  std::printf("  ||E - BA|| / ||E|| = %.3g\n", std::sqrt(num / den));
  CHECK(std::sqrt(num / den) < 1e-5);
  // prefix_errors agrees with the direct residual
  const auto pe = hci::prefix_errors(E, m, n, f.A, f.B, n);
  CHECK(pe.size() == size_t(n + 1));
  CHECK_NEAR(pe[0], std::sqrt(den), 1e-12 * std::sqrt(den));
  CHECK_NEAR(pe[size_t(n)], std::sqrt(num), 1e-9 * std::sqrt(den));
}

TEST(square_root_of_the_covariance) {
  const int n = 16;
  Mat H = make_cov(n, 200, 91);
  const hci::Scaling S = hci::make_full_scaling(H.data(), n, 1e-9);
  double e1 = 0, e2 = 0, h = 0;
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      double ss = 0, si = 0;
      for (int k = 0; k < n; ++k) {
        ss += S.s[size_t(i * n + k)] * S.s[size_t(k * n + j)];
        si += S.s[size_t(i * n + k)] * S.s_inv[size_t(k * n + j)];
      }
      e1 = std::max(e1, std::fabs(ss - H[size_t(i * n + j)]));
      e2 = std::max(e2, std::fabs(si - (i == j)));
      h = std::max(h, std::fabs(H[size_t(i * n + j)]));
    }
  CHECK(e1 < 1e-10 * h);
  CHECK(e2 < 1e-8);
  // a dead input (zero row and column): floored, still invertible, exact at full rank
  for (int k = 0; k < n; ++k) H[size_t(3 * n + k)] = H[size_t(k * n + 3)] = 0;
  const hci::Scaling F = hci::make_full_scaling(H.data(), n, 1e-6);
  for (double v : F.s_inv) CHECK(std::isfinite(v));
  Mat sq(static_cast<size_t>(n));
  for (int j = 0; j < n; ++j) sq[size_t(j)] = H[size_t(j * n + j)];
  const hci::Scaling Dg = hci::make_diag_scaling(sq.data(), n, 1e-6);
  CHECK(Dg.s[3] > 0 && std::isfinite(Dg.s_inv[3]));
  const auto ef = testutil::random_vec(size_t(8 * n), 92);
  const Mat E(ef.begin(), ef.end());
  for (const hci::Scaling* sc : {&F, &Dg}) {
    Factors f;
    hci::factorize_scaled(E, 8, n, 8, *sc, f.A, f.B, f.s);
    const auto pe = hci::prefix_errors(E, 8, n, f.A, f.B, 8);
    CHECK(pe[8] < 1e-4 * pe[0]);
  }
}

TEST_MAIN()
