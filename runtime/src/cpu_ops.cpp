#include "cpu_ops.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace hci {

void matmul_wt(const float* x, const float* w, float* y, int n, int d_out, int d_in, float beta) {
  if (n == 1) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, d_out, d_in, 1.0f, w, d_in, x, 1, beta, y, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, d_out, d_in, 1.0f, x, d_in, w, d_in,
              beta, y, d_out);
}

void rmsnorm(const float* x, const float* weight, float* out, int n, int d, double eps) {
  for (int i = 0; i < n; ++i) {
    const float* xi = x + int64_t(i) * d;
    float* oi = out + int64_t(i) * d;
    double ss = 0;
    for (int j = 0; j < d; ++j) ss += double(xi[j]) * xi[j];
    const float inv = float(1.0 / std::sqrt(ss / d + eps));
    for (int j = 0; j < d; ++j) oi[j] = weight[j] * (xi[j] * inv);
  }
}

void rope(float* x, int n, int n_heads, int head_dim, int pos0, double theta) {
  const int half = head_dim / 2;
  std::vector<float> cs(size_t(half) * 2);
  for (int i = 0; i < n; ++i) {
    const double pos = pos0 + i;
    for (int f = 0; f < half; ++f) {
      // Same float32 inv_freq as transformers, angle in double.
      const float inv_freq = float(1.0 / std::pow(theta, double(2 * f) / head_dim));
      const double ang = pos * double(inv_freq);
      cs[size_t(2 * f)] = float(std::cos(ang));
      cs[size_t(2 * f + 1)] = float(std::sin(ang));
    }
    for (int h = 0; h < n_heads; ++h) {
      float* xh = x + (int64_t(i) * n_heads + h) * head_dim;
      for (int f = 0; f < half; ++f) {
        const float c = cs[size_t(2 * f)], s = cs[size_t(2 * f + 1)];
        const float a = xh[f], b = xh[f + half];
        xh[f] = a * c - b * s;
        xh[f + half] = b * c + a * s;
      }
    }
  }
}

void silu_mul(float* gate, const float* up, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

double log_sum_exp(const float* row, int n) {
  float mx = row[0];
  for (int j = 1; j < n; ++j) mx = std::max(mx, row[j]);
  double s = 0;
  for (int j = 0; j < n; ++j) s += std::exp(double(row[j]) - mx);
  return mx + std::log(s);
}

void attention(const float* q, const float* k, const float* v, float* out, float* scores, int n,
               int pos0, int n_heads, int n_kv_heads, int head_dim) {
  const int L = pos0 + n;
  const int q_stride = n_heads * head_dim, kv_stride = n_kv_heads * head_dim;
  const int group = n_heads / n_kv_heads;
  const float scale = float(1.0 / std::sqrt(double(head_dim)));
  for (int h = 0; h < n_heads; ++h) {
    const int kvh = h / group;
    // scores[n, L] = scale * q_h · k_h^T
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, L, head_dim, scale, q + h * head_dim,
                q_stride, k + kvh * head_dim, kv_stride, 0.0f, scores, L);
    for (int i = 0; i < n; ++i) {
      float* row = scores + int64_t(i) * L;
      const int visible = pos0 + i + 1;  // causal: keys 0..pos0+i
      float mx = row[0];
      for (int j = 1; j < visible; ++j) mx = std::max(mx, row[j]);
      float sum = 0;
      for (int j = 0; j < visible; ++j) {
        row[j] = std::exp(row[j] - mx);
        sum += row[j];
      }
      const float inv = 1.0f / sum;
      for (int j = 0; j < visible; ++j) row[j] *= inv;
      for (int j = visible; j < L; ++j) row[j] = 0.0f;
    }
    // out_h[n, head_dim] = P[n, L] · v_h[L, head_dim]
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, head_dim, L, 1.0f, scores, L,
                v + kvh * head_dim, kv_stride, 0.0f, out + h * head_dim, q_stride);
  }
}

}  // namespace hci
