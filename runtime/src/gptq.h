// GPTQ (Frantar et al., 2023): Hessian-aware column-by-column quantization of one linear layer,
// following the reference implementation (IST-DASLab/gptq, gptq.py fasterquant) in float64.
#pragma once

#include <cstdint>
#include <vector>

namespace hci {

struct GptqSettings {
  int bits = 4;           // 2, 3, 4 or 8
  int group_size = 128;   // input columns per group; d_in = one group per row
  bool act_order = false; // quantize columns in order of descending diag(H)
  double damp = 0.01;     // H += damp * mean(diag(H)) * I before the inverse (percdamp)
  int block_size = 128;   // columns per lazy batch update (rounded to a multiple of group_size)
  // Groups that start inside a lazy block: false = scales and zeros from the group's current,
  // fully error-updated weights (the algorithm as published, and what a plain column loop
  // computes); true = as the reference code does, from its `W`, which inside a block still holds
  // the weights as they were at the block's start (the block's own updates live in `W1`).
  // Identical when group_size >= block_size or for per-row quantization.
  bool groups_from_block_start = false;
};

// Quantizes W [d_out, d_in] (row-major float32) given the input Hessian H [d_in, d_in]
// (symmetric, float64, any positive scale: E[x xᵀ] or the reference's 2/N Σ x xᵀ; not modified).
// The steps, in the reference's order:
//  1. per-row quantization (group_size == d_in): each row's scale and zero from the original row
//     (before dead columns are zeroed), as the reference's find_params(W) before the loop;
//  2. dead inputs (H_ii == 0): H_ii = 1 and W[:, i] = 0;
//  3. act_order: permute columns (and H) by descending diag(H) (a stable sort: ties keep index
//     order; the reference uses torch.argsort, whose tie order is unspecified);
//  4. H += damp * mean(diag(H)) * I; U = upper Cholesky factor of H⁻¹ (LAPACK dpotrf, dpotri,
//     dpotrf, float64), H⁻¹ = Uᵀ U;
//  5. for each column j in (permuted) order, in lazy blocks of block_size columns: at a group
//     start (j % group_size == 0) compute each row's scale and zero from columns [j, j+g) (see
//     groups_from_block_start); q = deq(quant(w_j)); err = (w_j − q) / U_jj; w_k −= err · U_jk
//     for the later columns k of the block now, and for the columns after the block in one
//     matrix product when the block ends.
// With act_order and groups this is the reference's static_groups = False: groups are runs of
// group_size consecutive columns in the permuted order, so in the original order column c is in
// group g_idx[c] = (position of c in the permutation) / group_size. Outputs are in the original
// column order: codes [d_out, d_in], scales and zeros [d_out, d_in / group_size] indexed by group,
// g_idx [d_in] (filled only when act_order and groups, else empty: group = c / group_size),
// w_deq [d_out, d_in] = (code - zero[g]) * scale[g]. The quantizer is quantize.h's (range with 0,
// fp16 scale, integer zero). Throws HCI_ERR_NUMERIC when the dampened H is not positive definite.
void gptq_quantize(const float* w, int d_out, int d_in, const double* H, const GptqSettings& s,
                   std::vector<uint8_t>& codes, std::vector<float>& scales,
                   std::vector<float>& zeros, std::vector<int32_t>& g_idx,
                   std::vector<float>& w_deq);

}  // namespace hci
