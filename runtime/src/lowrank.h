// Low-rank factorization of a quantization residual by truncated SVD, optionally scaled by
// activation statistics so that the layer's output error is what is minimized.
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

// The input scaling S [n, n] of an activation-aware factorization and its inverse.
struct Scaling {
  enum Kind { kPlain = 0, kActDiag = 1, kActFull = 2 };
  int kind = kPlain;
  int n = 0;
  std::vector<double> s, s_inv;  // act-diag: the diagonals [n]; act-full: [n, n] symmetric
};

// act-diag from the second moments sq[n] = E[x_j²]:
//   S = diag(sqrt(max(sq_j, floor · max_k sq_k))), S⁻¹ its inverse
// (a diagonal matrix's eigenvalues are its entries, so this is act-full on diag(H)).
// All-zero moments give S = I.
Scaling make_diag_scaling(const double* sq, int n, double floor);
// act-full from H [n, n] = E[x xᵀ] (symmetric): H = Q Λ Qᵀ (LAPACKE_dsyevd, float64),
//   λ_i ← max(λ_i, floor · λ_max),  S = Q Λ^½ Qᵀ = H^½,  S⁻¹ = Q Λ^-½ Qᵀ
// (the same floored eigenvalues, so S⁻¹ is exactly S's inverse). H = 0 gives S = I.
// Throws HCI_ERR_NUMERIC when the eigendecomposition fails.
Scaling make_full_scaling(const double* H, int n, double floor);

// Activation-aware factors: E·S = U Σ Vᵀ (truncated to r = min(max_rank, m, n)),
//   B [m, r] = U_r Σ_r^½,  A [r, n] = Σ_r^½ V_rᵀ S⁻¹,
// so B·A·S is the best rank-r approximation of E·S (the output-space error ||(E − BA) S||_F is
// minimal; with S = H^½ it is the error on inputs of covariance H) and any prefix of rank k is
// that scaling's rank-k answer. singular[r] receives Σ_r, the singular values of E·S. At full
// rank B·A = E (up to rounding) for any invertible S. A plain scaling is factorize_residual.
void factorize_scaled(const std::vector<double>& E, int m, int n, int max_rank, const Scaling& S,
                      std::vector<float>& A, std::vector<float>& B, std::vector<double>& singular);

// err[k] = ||E − B[:, :k] A[:k, :]||_F for k = 0..r, in float64 from the float32 factors
// (A [r, n], B [m, r]); the exact weight-space error of every prefix, for any scaling.
std::vector<double> prefix_errors(const std::vector<double>& E, int m, int n,
                                  const std::vector<float>& A, const std::vector<float>& B, int r);

}  // namespace hci
