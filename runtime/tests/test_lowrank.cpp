// SVD factorization checked against an independent eigen-decomposition (LAPACK dsyev of E·Eᵀ),
// and full-rank compensation checked to reproduce the unquantized layer.
#include <lapacke.h>

#include <algorithm>
#include <cmath>

#include "check.h"
#include "error.h"
#include "forward.h"
#include "lowrank.h"
#include "quantize.h"
#include "test_util.h"

static double frob2_residual(const std::vector<double>& E, const std::vector<float>& A,
                             const std::vector<float>& B, int m, int n, int r_stride, int r) {
  double s = 0;
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double v = E[size_t(i * n + j)];
      for (int k = 0; k < r; ++k) v -= double(B[size_t(i * r_stride + k)]) * A[size_t(k * n + j)];
      s += v * v;
    }
  return s;
}

TEST(prefix_error_matches_eckart_young) {
  const int m = 40, n = 72;
  const auto ef = testutil::random_vec(size_t(m * n), 3);
  std::vector<double> E(ef.begin(), ef.end());
  // independent singular values: eigenvalues of E·Eᵀ (m × m), descending
  std::vector<double> G(size_t(m * m), 0.0), eig(static_cast<size_t>(m));
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < m; ++j)
      for (int k = 0; k < n; ++k) G[size_t(i * m + j)] += E[size_t(i * n + k)] * E[size_t(j * n + k)];
  CHECK(LAPACKE_dsyev(LAPACK_ROW_MAJOR, 'N', 'U', m, G.data(), m, eig.data()) == 0);
  std::sort(eig.rbegin(), eig.rend());
  std::vector<float> A, B;
  std::vector<double> s;
  hci::factorize_residual(E, m, n, m, A, B, s);
  CHECK(int(s.size()) == m);
  for (int i = 0; i < m; ++i) CHECK_NEAR(s[size_t(i)] * s[size_t(i)], eig[size_t(i)], 1e-8 * eig[0]);
  double total = 0;
  for (double v : eig) total += v;
  for (int r : {0, 1, 5, 20, m}) {
    double tail = 0;
    for (int i = r; i < m; ++i) tail += eig[size_t(i)];
    CHECK_NEAR(frob2_residual(E, A, B, m, n, m, r), tail, 1e-5 * total);
  }
}

TEST(truncated_factors_are_prefixes_of_full) {
  const int m = 30, n = 20;
  const auto ef = testutil::random_vec(size_t(m * n), 5);
  std::vector<double> E(ef.begin(), ef.end());
  std::vector<float> A8, B8, Af, Bf;
  std::vector<double> s8, sf;
  hci::factorize_residual(E, m, n, 8, A8, B8, s8);
  hci::factorize_residual(E, m, n, 1000, Af, Bf, sf);
  CHECK(s8.size() == 8 && sf.size() == 20);
  CHECK_NEAR(frob2_residual(E, A8, B8, m, n, 8, 8), frob2_residual(E, Af, Bf, m, n, 20, 8), 1e-6);
}

TEST(full_rank_compensation_reproduces_unquantized_output) {
  hci::Linear lin;
  lin.d_out = 48;
  lin.d_in = 64;
  lin.w = testutil::random_vec(size_t(48 * 64), 9, 0.1f);
  hci::quantize_rtn(lin.w.data(), 48, 64, 2, 32, lin.codes, lin.scales, lin.zeros, lin.w_deq);
  lin.bits = 2;
  std::vector<double> E(lin.w.size());
  for (size_t i = 0; i < E.size(); ++i) E[i] = double(lin.w[i]) - lin.w_deq[i];
  hci::factorize_residual(E, 48, 64, 48, lin.A, lin.B, lin.singular);
  lin.max_rank = lin.rank = 48;
  const int n = 5;
  const auto x = testutil::random_vec(size_t(n * 64), 10);
  std::vector<float> y(size_t(n * 48)), tmp;
  hci::linear_forward(lin, x.data(), n, y.data(), tmp);
  double max_diff = 0, max_ref = 0, max_q_diff = 0;
  for (int t = 0; t < n; ++t)
    for (int o = 0; o < 48; ++o) {
      double ref = 0, q = 0;
      for (int i = 0; i < 64; ++i) {
        ref += double(lin.w[size_t(o * 64 + i)]) * x[size_t(t * 64 + i)];
        q += double(lin.w_deq[size_t(o * 64 + i)]) * x[size_t(t * 64 + i)];
      }
      max_diff = std::max(max_diff, std::fabs(ref - y[size_t(t * 48 + o)]));
      max_q_diff = std::max(max_q_diff, std::fabs(ref - q));
      max_ref = std::max(max_ref, std::fabs(ref));
    }
  CHECK(max_q_diff > 1e-2 * max_ref);  // 2-bit alone is far off...
  CHECK(max_diff < 1e-5 * max_ref);    // ...full-rank compensation is exact to float32
  lin.rank = 0;
  hci::linear_forward(lin, x.data(), 1, y.data(), tmp);  // rank 0 = plain quantized
  double q0 = 0;
  for (int i = 0; i < 64; ++i) q0 += double(lin.w_deq[size_t(i)]) * x[size_t(i)];
  CHECK_NEAR(y[0], q0, 1e-5);
}

TEST_MAIN()
