#include "lowrank.h"

#include <lapacke.h>

#include <algorithm>
#include <cmath>

#include "error.h"

namespace hci {

void factorize_residual(const std::vector<double>& E, int m, int n, int max_rank,
                        std::vector<float>& A, std::vector<float>& B,
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
  A.assign(size_t(r) * size_t(n), 0.0f);
  B.assign(size_t(m) * size_t(r), 0.0f);
  singular.assign(s.begin(), s.begin() + r);
  for (int j = 0; j < r; ++j) {
    const double root = std::sqrt(s[size_t(j)]);
    for (int c = 0; c < n; ++c)
      A[size_t(j) * size_t(n) + size_t(c)] = float(root * vt[size_t(j) * size_t(n) + size_t(c)]);
    for (int i = 0; i < m; ++i)
      B[size_t(i) * size_t(r) + size_t(j)] = float(u[size_t(i) * size_t(k) + size_t(j)] * root);
  }
}

}  // namespace hci
