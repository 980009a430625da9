// Float32 CPU kernels of the reference forward pass. Matrices are row-major.
#pragma once

#include <cstdint>

namespace hci {

// y[n, d_out] = x[n, d_in] · W[d_out, d_in]^T (OpenBLAS sgemm); beta = 0 overwrites y, 1 adds.
void matmul_wt(const float* x, const float* w, float* y, int n, int d_out, int d_in,
               float beta = 0.0f);

// out[n, d] = x / sqrt(mean(x²) + eps) * weight, per row (the HF LlamaRMSNorm).
void rmsnorm(const float* x, const float* weight, float* out, int n, int d, double eps);

// Rotates heads in place: x[n, n_heads * head_dim] at absolute positions pos0 .. pos0+n-1, with
// the HF "rotate_half" pairing (i, i + head_dim/2) and inv_freq = theta^(-2i/head_dim).
void rope(float* x, int n, int n_heads, int head_dim, int pos0, double theta);

// gate[n*d] = silu(gate) * up.
void silu_mul(float* gate, const float* up, int64_t count);

// Numerically stable log-sum-exp of a row.
double log_sum_exp(const float* row, int n);

// Causal grouped-query attention for n new queries at positions pos0..pos0+n-1 against a cache
// holding keys/values for positions 0..pos0+n-1.
//   q      [n, n_heads * head_dim] (already rotated)
//   k, v   [pos0 + n, n_kv_heads * head_dim] (cache rows, keys rotated)
//   out    [n, n_heads * head_dim]
//   scores scratch [n, pos0 + n]
void attention(const float* q, const float* k, const float* v, float* out, float* scores, int n,
               int pos0, int n_heads, int n_kv_heads, int head_dim);

}  // namespace hci
