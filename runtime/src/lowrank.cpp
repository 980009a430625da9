#include "lowrank.h"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "error.h"

namespace hci {

// Truncated SVD of E [m, n]: double factors A [r, n] = sqrt(S) Vᵀ, B [m, r] = U sqrt(S).
static void svd_factors(const std::vector<double>& E, int m, int n, int max_rank,
                        std::vector<double>& A, std::vector<double>& B,
                        std::vector<double>& singular) {
  const int k = std::min(m, n);
  const int r = std::min(max_rank, k);
  std::vector<double> a(E);  // dgesdd overwrites its input
  std::vector<double> s(static_cast<size_t>(k)), u(size_t(m) * size_t(k)), vt(size_t(k) * size_t(n));
  const lapack_int info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', m, n, a.data(), n, s.data(),
                                         u.data(), k, vt.data(), n);
  if (info != 0)
    fail(HCI_ERR_NUMERIC, "SVD of a " + std::to_string(m) + "x" + std::to_string(n) +
                              " residual failed (LAPACKE_dgesdd info " + std::to_string(info) + ")");
  A.assign(size_t(r) * size_t(n), 0.0);
  B.assign(size_t(m) * size_t(r), 0.0);
  singular.assign(s.begin(), s.begin() + r);
  for (int j = 0; j < r; ++j) {
    const double root = std::sqrt(s[size_t(j)]);
    for (int c = 0; c < n; ++c)
      A[size_t(j) * size_t(n) + size_t(c)] = root * vt[size_t(j) * size_t(n) + size_t(c)];
    for (int i = 0; i < m; ++i)
      B[size_t(i) * size_t(r) + size_t(j)] = u[size_t(i) * size_t(k) + size_t(j)] * root;
  }
}

void factorize_residual(const std::vector<double>& E, int m, int n, int max_rank,
                        std::vector<float>& A, std::vector<float>& B,
                        std::vector<double>& singular) {
  std::vector<double> a, b;
  svd_factors(E, m, n, max_rank, a, b, singular);
  A.assign(a.begin(), a.end());
  B.assign(b.begin(), b.end());
}

Scaling make_diag_scaling(const double* sq, int n, double floor) {
  Scaling S;
  S.kind = Scaling::kActDiag;
  S.n = n;
  double mx = 0;
  for (int j = 0; j < n; ++j) mx = std::max(mx, sq[j]);
  S.s.assign(size_t(n), 1.0);
  S.s_inv.assign(size_t(n), 1.0);
  if (!(mx > 0)) return S;
  for (int j = 0; j < n; ++j) {
    const double v = std::sqrt(std::max(sq[j], floor * mx));
    S.s[size_t(j)] = v;
    S.s_inv[size_t(j)] = 1.0 / v;
  }
  return S;
}

Scaling make_full_scaling(const double* H, int n, double floor) {
  Scaling S;
  S.kind = Scaling::kActFull;
  S.n = n;
  const size_t nn = size_t(n) * size_t(n);
  std::vector<double> q(H, H + nn), lam(static_cast<size_t>(n));
  const lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', n, q.data(), n, lam.data());
  if (info != 0)
    fail(HCI_ERR_NUMERIC, "eigendecomposition of a " + std::to_string(n) + "x" +
                              std::to_string(n) + " activation covariance failed "
                              "(LAPACKE_dsyevd info " + std::to_string(info) + ")");
  const double mx = *std::max_element(lam.begin(), lam.end());
  S.s.assign(nn, 0.0);
  S.s_inv.assign(nn, 0.0);
  if (!(mx > 0)) {
    for (int i = 0; i < n; ++i) S.s[size_t(i) * n + i] = S.s_inv[size_t(i) * n + i] = 1.0;
    return S;
  }
  // S = Q diag(sqrt λ) Qᵀ: scale Q's columns, then one product each.
  std::vector<double> qa(nn), qb(nn);
  for (int i = 0; i < n; ++i)
    for (int k = 0; k < n; ++k) {
      const double root = std::sqrt(std::max(lam[size_t(k)], floor * mx));
      qa[size_t(i) * n + k] = q[size_t(i) * n + k] * root;
      qb[size_t(i) * n + k] = q[size_t(i) * n + k] / root;
    }
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0, qa.data(), n, q.data(), n,
              0.0, S.s.data(), n);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0, qb.data(), n, q.data(), n,
              0.0, S.s_inv.data(), n);
  // exact symmetry
  for (int i = 0; i < n; ++i)
    for (int j = i + 1; j < n; ++j) {
      double& a = S.s[size_t(i) * n + j];
      double& b = S.s[size_t(j) * n + i];
      a = b = 0.5 * (a + b);
      double& c = S.s_inv[size_t(i) * n + j];
      double& d = S.s_inv[size_t(j) * n + i];
      c = d = 0.5 * (c + d);
    }
  return S;
}

void factorize_scaled(const std::vector<double>& E, int m, int n, int max_rank, const Scaling& S,
                      std::vector<float>& A, std::vector<float>& B,
                      std::vector<double>& singular) {
  if (S.kind == Scaling::kPlain) {
    factorize_residual(E, m, n, max_rank, A, B, singular);
    return;
  }
  if (S.n != n) fail(HCI_ERR_INTERNAL, "scaling width does not match the layer's input width");
  std::vector<double> es(E.size());
  if (S.kind == Scaling::kActDiag) {
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j)
        es[size_t(i) * n + j] = E[size_t(i) * n + j] * S.s[size_t(j)];
  } else {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, n, 1.0, E.data(), n, S.s.data(),
                n, 0.0, es.data(), n);
  }
  std::vector<double> a, b;
  svd_factors(es, m, n, max_rank, a, b, singular);
  const int r = int(singular.size());
  std::vector<double> as(a.size());
  if (S.kind == Scaling::kActDiag) {
    for (int k = 0; k < r; ++k)
      for (int j = 0; j < n; ++j)
        as[size_t(k) * n + j] = a[size_t(k) * n + j] * S.s_inv[size_t(j)];
  } else if (r > 0) {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, n, n, 1.0, a.data(), n,
                S.s_inv.data(), n, 0.0, as.data(), n);
  }
  A.assign(as.begin(), as.end());
  B.assign(b.begin(), b.end());
}

std::vector<double> prefix_errors(const std::vector<double>& E, int m, int n,
                                  const std::vector<float>& A, const std::vector<float>& B,
                                  int r) {
  std::vector<double> out(size_t(r) + 1);
  std::vector<double> R(E), a(static_cast<size_t>(n)), b(static_cast<size_t>(m));
  auto norm = [&] {
    double s = 0;
    for (double v : R) s += v * v;
    return std::sqrt(s);
  };
  out[0] = norm();
  for (int k = 0; k < r; ++k) {
    for (int j = 0; j < n; ++j) a[size_t(j)] = A[size_t(k) * n + j];
    for (int i = 0; i < m; ++i) b[size_t(i)] = B[size_t(i) * r + k];
    cblas_dger(CblasRowMajor, m, n, -1.0, b.data(), 1, a.data(), 1, R.data(), n);
    out[size_t(k) + 1] = norm();
  }
  return out;
}

}  // namespace hci
