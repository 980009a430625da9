// Low-rank factorization of a quantization residual by truncated SVD.
#pragma once

#include <vector>

namespace hci {

// E [m, n] ≈ B[:, :r] · A[:r, :] with E = U S V^T (float64 LAPACK dgesdd), r = min(max_rank, m, n):
//   B [m, r] = U[:, :r] · sqrt(S[:r]),  A [r, n] = sqrt(S[:r]) · V^T[:r, :]
// Factors are ordered by singular value, so any prefix of rank k is the best rank-k
// approximation of E in Frobenius norm (Eckart–Young). singular[r] receives S[:r].
// Throws HCI_ERR_NUMERIC when the SVD fails to converge.
void factorize_residual(const std::vector<double>& E, int m, int n, int max_rank,
                        std::vector<float>& A, std::vector<float>& B,
                        std::vector<double>& singular);

}  // namespace hci
