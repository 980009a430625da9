#include "gptq.h"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "error.h"
#include "quantize.h"

namespace hci {

// U with H⁻¹ = Uᵀ U (upper triangular, lower part zeroed), from symmetric positive definite H.
static std::vector<double> inverse_cholesky_upper(std::vector<double> H, int n) {
  lapack_int info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', n, H.data(), n);
  if (info == 0) info = LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'L', n, H.data(), n);
  if (info != 0)
    fail(HCI_ERR_NUMERIC, "GPTQ: the dampened Hessian is not positive definite (LAPACK info " +
                              std::to_string(info) + "); raise damp_percent");
  // dpotri left H⁻¹ in the lower triangle: mirror it, then factor H⁻¹ = Uᵀ U.
  for (int i = 0; i < n; ++i)
    for (int j = i + 1; j < n; ++j) H[size_t(i) * n + j] = H[size_t(j) * n + i];
  info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', n, H.data(), n);
  if (info != 0)
    fail(HCI_ERR_NUMERIC, "GPTQ: the inverse Hessian is not positive definite (LAPACK info " +
                              std::to_string(info) + "); raise damp_percent");
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < i; ++j) H[size_t(i) * n + j] = 0.0;
  return H;
}

void gptq_quantize(const float* w, int d_out, int d_in, const double* H, const GptqSettings& s,
                   std::vector<uint8_t>& codes, std::vector<float>& scales,
                   std::vector<float>& zeros, std::vector<int32_t>& g_idx,
                   std::vector<float>& w_deq) {
  if (s.bits != 2 && s.bits != 3 && s.bits != 4 && s.bits != 8)
    fail(HCI_ERR_INVALID_ARGUMENT, "bits must be 2, 3, 4 or 8, got " + std::to_string(s.bits));
  if (s.group_size <= 0 || d_in % s.group_size != 0)
    fail(HCI_ERR_INVALID_ARGUMENT, "group size " + std::to_string(s.group_size) +
                                       " does not divide the input dimension " +
                                       std::to_string(d_in));
  if (!(s.damp >= 0) || !std::isfinite(s.damp))
    fail(HCI_ERR_INVALID_ARGUMENT, "GPTQ: damp must be a finite number >= 0");
  const int m = d_out, n = d_in, g = s.group_size;
  const bool per_row = g == n;
  const int n_groups = n / g;
  const size_t mn = size_t(m) * size_t(n);
  // Lazy block: a multiple of the group size, so that a group never straddles two blocks.
  int block = std::max(1, s.block_size);
  if (!per_row) block = g >= block ? g : (block / g) * g;

  codes.assign(mn, 0);
  w_deq.assign(mn, 0.0f);
  scales.assign(size_t(m) * size_t(n_groups), 0.0f);
  zeros.assign(scales.size(), 0.0f);
  g_idx.clear();

  // 1. per-row grids from the original rows
  std::vector<QuantGrid> grid(static_cast<size_t>(m));
  if (per_row)
    for (int r = 0; r < m; ++r) {
      const float* row = w + size_t(r) * n;
      const auto [lo, hi] = std::minmax_element(row, row + n);
      grid[size_t(r)] = quant_grid(*lo, *hi, s.bits);
    }

  // 2. dead inputs; Wt is Wᵀ [n, m] (column j of W is row j of Wt), in float64
  std::vector<double> h(H, H + size_t(n) * n);
  std::vector<double> wt(mn);
  for (int r = 0; r < m; ++r)
    for (int c = 0; c < n; ++c) wt[size_t(c) * m + r] = double(w[size_t(r) * n + c]);
  for (int i = 0; i < n; ++i)
    if (h[size_t(i) * n + i] == 0.0) {
      h[size_t(i) * n + i] = 1.0;
      std::fill_n(wt.begin() + ptrdiff_t(size_t(i) * m), m, 0.0);
    }

  // 3. activation order
  std::vector<int> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  if (s.act_order) {
    std::stable_sort(perm.begin(), perm.end(), [&](int a, int b) {
      return h[size_t(a) * n + a] > h[size_t(b) * n + b];
    });
    std::vector<double> hp(h.size()), wp(wt.size());
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < n; ++j) hp[size_t(i) * n + j] = h[size_t(perm[i]) * n + perm[j]];
      std::copy_n(wt.begin() + ptrdiff_t(size_t(perm[i]) * m), m,
                  wp.begin() + ptrdiff_t(size_t(i) * m));
    }
    h.swap(hp);
    wt.swap(wp);
  }

  // 4. dampening and the Cholesky factor of the inverse
  double mean_diag = 0;
  for (int i = 0; i < n; ++i) mean_diag += h[size_t(i) * n + i];
  mean_diag /= n;
  for (int i = 0; i < n; ++i) h[size_t(i) * n + i] += s.damp * mean_diag;
  const std::vector<double> U = inverse_cholesky_upper(std::move(h), n);

  // 5. the column loop in lazy blocks
  std::vector<double> err(size_t(block) * size_t(m)), start;
  for (int i1 = 0; i1 < n; i1 += block) {
    const int i2 = std::min(i1 + block, n), count = i2 - i1;
    if (s.groups_from_block_start && !per_row)
      start.assign(wt.begin() + ptrdiff_t(size_t(i1) * m), wt.begin() + ptrdiff_t(size_t(i2) * m));
    for (int j = i1; j < i2; ++j) {
      if (!per_row && j % g == 0) {
        const int gi = j / g;
        const double* src = s.groups_from_block_start ? start.data() + size_t(j - i1) * m
                                                      : wt.data() + size_t(j) * m;
        for (int r = 0; r < m; ++r) {
          double lo = src[r], hi = src[r];
          for (int k = 1; k < g; ++k) {
            lo = std::min(lo, src[size_t(k) * m + r]);
            hi = std::max(hi, src[size_t(k) * m + r]);
          }
          grid[size_t(r)] = quant_grid(lo, hi, s.bits);
          scales[size_t(r) * n_groups + gi] = float(grid[size_t(r)].scale);
          zeros[size_t(r) * n_groups + gi] = float(grid[size_t(r)].zero);
        }
      }
      const double d = U[size_t(j) * n + j];
      const double* col = wt.data() + size_t(j) * m;
      double* e = err.data() + size_t(j - i1) * m;
      const int c = perm[size_t(j)];
      for (int r = 0; r < m; ++r) {
        const QuantGrid& q = grid[size_t(r)];
        const double code = q.code(col[r]);
        const double deq = q.deq(code);
        codes[size_t(r) * n + c] = uint8_t(code);
        w_deq[size_t(r) * n + c] = float(deq);
        e[r] = (col[r] - deq) / d;
      }
      // W1[:, j+1:i2] -= err ⊗ U[j, j+1:i2]
      if (j + 1 < i2)
        cblas_dger(CblasRowMajor, i2 - j - 1, m, -1.0, U.data() + size_t(j) * n + j + 1, 1, e, 1,
                   wt.data() + size_t(j + 1) * m, m);
    }
    // W[:, i2:] -= Err1 · U[i1:i2, i2:]  (in Wt terms: Wt[i2:] -= U[i1:i2, i2:]ᵀ · Err)
    if (i2 < n)
      cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n - i2, m, count, -1.0,
                  U.data() + size_t(i1) * n + i2, n, err.data(), m, 1.0,
                  wt.data() + size_t(i2) * m, m);
  }

  if (per_row) {
    for (int r = 0; r < m; ++r) {
      scales[size_t(r)] = float(grid[size_t(r)].scale);
      zeros[size_t(r)] = float(grid[size_t(r)].zero);
    }
  } else if (s.act_order) {
    g_idx.assign(size_t(n), 0);
    for (int j = 0; j < n; ++j) g_idx[size_t(perm[size_t(j)])] = j / g;
  }
}

}  // namespace hci
