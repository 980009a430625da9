// Elementwise, normalization, RoPE, prefill attention, scoring and synthetic-weight kernels
// (decode attention: decode_attention.cu).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>
#include <cstdlib>
#include <cmath>
#include <type_traits>

#include "common.h"
#include "device_util.cuh"
#include "kernels.h"
#include "launch.cuh"

namespace hci::gpu {

namespace {
bool g_pdl = false;
}
bool pdl_enabled() { return g_pdl; }
void set_pdl(bool on) { g_pdl = on; }

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F16: return "fp16";
    case DType::BF16: return "bf16";
    case DType::F32: return "fp32";
  }
  return "?";
}

namespace {


template <typename T>
__global__ void embed_kernel(const T* __restrict__ table, int d, const int* __restrict__ tokens,
                             float* __restrict__ x) {
  pdl_trigger();
  pdl_wait();
  const int i = blockIdx.x;
  const T* row = table + int64_t(tokens[i]) * d;
  for (int j = threadIdx.x; j < d; j += blockDim.x) x[int64_t(i) * d + j] = to_float(row[j]);
}

// One block per row. Decode runs it at batch 1, where it is all latency: with d % 4 == 0 and
// d <= 4 * 4 * blockDim.x the row is read once in 16-byte loads held in registers, and gamma (a
// weight) is loaded before the PDL wait, so one read of x sits on the critical path (the plain
// loop below read x and gamma in dependent rounds: 6.8 us per call on an H200 at d = 4096).
template <typename T>
__global__ void rmsnorm_kernel(const float* __restrict__ x, int ldx, const float* __restrict__ g,
                               int d, float eps, T* __restrict__ out, int ldo) {
  pdl_trigger();
  __shared__ float sh[32];
  constexpr int kMaxV = 4;  // float4s of the row per thread
  const int d4 = d >> 2;
  if (d % 4 == 0 && ldx % 4 == 0 && d4 <= kMaxV * int(blockDim.x)) {
    const float4* g4 = reinterpret_cast<const float4*>(g);
    float4 gv[kMaxV], xv[kMaxV];
#pragma unroll
    for (int k = 0; k < kMaxV; ++k) {
      const int j = threadIdx.x + k * blockDim.x;
      if (j < d4) gv[k] = __ldg(g4 + j);
    }
    pdl_wait();
    const float4* x4 = reinterpret_cast<const float4*>(x + int64_t(blockIdx.x) * ldx);
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < kMaxV; ++k) {
      const int j = threadIdx.x + k * blockDim.x;
      if (j < d4) {
        xv[k] = x4[j];
        ss += xv[k].x * xv[k].x + xv[k].y * xv[k].y + xv[k].z * xv[k].z + xv[k].w * xv[k].w;
      }
    }
    ss = block_sum(ss, sh);
    const float inv = rsqrtf(ss / float(d) + eps);
    T* oi = out + int64_t(blockIdx.x) * ldo;
#pragma unroll
    for (int k = 0; k < kMaxV; ++k) {
      const int j = threadIdx.x + k * blockDim.x;
      if (j < d4) {
        oi[4 * j] = from_float<T>(gv[k].x * (xv[k].x * inv));
        oi[4 * j + 1] = from_float<T>(gv[k].y * (xv[k].y * inv));
        oi[4 * j + 2] = from_float<T>(gv[k].z * (xv[k].z * inv));
        oi[4 * j + 3] = from_float<T>(gv[k].w * (xv[k].w * inv));
      }
    }
    return;
  }
  pdl_wait();
  const float* xi = x + int64_t(blockIdx.x) * ldx;
  float ss = 0.f;
  for (int j = threadIdx.x; j < d; j += blockDim.x) ss += xi[j] * xi[j];
  ss = block_sum(ss, sh);
  const float inv = rsqrtf(ss / float(d) + eps);
  T* oi = out + int64_t(blockIdx.x) * ldo;
  for (int j = threadIdx.x; j < d; j += blockDim.x) oi[j] = from_float<T>(g[j] * (xi[j] * inv));
}

template <typename KV>
__global__ void rope_store_kernel(float* __restrict__ qkv, int ldq, int n_heads, int n_kv, int hd,
                                  const float2* __restrict__ cs, const int* __restrict__ row_seq,
                                  const int* __restrict__ row_pos, KV* __restrict__ kc,
                                  KV* __restrict__ vc, int n_ctx) {
  pdl_trigger();
  pdl_wait();
  const int i = blockIdx.x;
  const int half = hd / 2, kvd = n_kv * hd, qd = n_heads * hd;
  const int pos = row_pos[i], seq = row_seq[i];
  float* row = qkv + int64_t(i) * ldq;
  const float2* c = cs + int64_t(pos) * half;
  const int64_t cache_row = (int64_t(seq) * n_ctx + pos) * kvd;
  const int rot = (n_heads + n_kv) * half;
  for (int t = threadIdx.x; t < rot; t += blockDim.x) {
    const int h = t / half, f = t % half;
    const float2 cf = c[f];
    if (h < n_heads) {
      float* xh = row + h * hd;
      const float a = xh[f], b = xh[f + half];
      xh[f] = a * cf.x - b * cf.y;
      xh[f + half] = b * cf.x + a * cf.y;
    } else {
      const int kh = h - n_heads;
      const float* xh = row + qd + kh * hd;
      const float a = xh[f], b = xh[f + half];
      kc[cache_row + kh * hd + f] = from_float<KV>(a * cf.x - b * cf.y);
      kc[cache_row + kh * hd + f + half] = from_float<KV>(b * cf.x + a * cf.y);
    }
  }
  const float* v = row + qd + kvd;
  for (int t = threadIdx.x; t < kvd; t += blockDim.x) vc[cache_row + t] = from_float<KV>(v[t]);
}

constexpr int kAttnWarps = 8;

// One block per (head, row): keys in tiles of 32 (one key per lane for the scores, one head
// dimension slice per lane for the values), online softmax per warp, merged across warps.
template <typename KV, typename TO, int E>
__global__ void __launch_bounds__(kAttnWarps * 32)
    attention_kernel(const float* __restrict__ qkv, int ldq, int n_heads, int n_kv,
                     const KV* __restrict__ kc, const KV* __restrict__ vc, int n_ctx,
                     const int* __restrict__ row_seq, const int* __restrict__ row_pos, float scale,
                     TO* __restrict__ out, int ldo) {
  pdl_trigger();
  pdl_wait();
  constexpr int HD = 32 * E;
  __shared__ float qs[HD];
  __shared__ float wm[kAttnWarps], wl[kAttnWarps];
  __shared__ float wacc[kAttnWarps][HD];
  const int h = blockIdx.x, i = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int seq = row_seq[i], L = row_pos[i] + 1;
  const int kvh = h / (n_heads / n_kv), kvd = n_kv * HD;
  for (int t = threadIdx.x; t < HD; t += blockDim.x)
    qs[t] = qkv[int64_t(i) * ldq + h * HD + t] * scale;
  __syncthreads();
  const KV* K = kc + int64_t(seq) * n_ctx * kvd + kvh * HD;
  const KV* V = vc + int64_t(seq) * n_ctx * kvd + kvh * HD;
  float m = -FLT_MAX, l = 0.f, acc[E];
#pragma unroll
  for (int e = 0; e < E; ++e) acc[e] = 0.f;
  for (int tile = warp; tile * 32 < L; tile += kAttnWarps) {
    const int j = tile * 32 + lane;
    float s = -FLT_MAX;
    if (j < L) {
      const KV* kr = K + int64_t(j) * kvd;
      float dot = 0.f;
#pragma unroll
      for (int d0 = 0; d0 < HD; d0 += 8) {
        float kf[8];
        load8(kr + d0, kf);
#pragma unroll
        for (int t = 0; t < 8; ++t) dot = fmaf(qs[d0 + t], kf[t], dot);
      }
      s = dot;
    }
    const float m_new = fmaxf(m, warp_max(s));
    const float p = j < L ? expf(s - m_new) : 0.f;
    const float corr = expf(m - m_new);
    l = l * corr + warp_sum(p);
#pragma unroll
    for (int e = 0; e < E; ++e) acc[e] *= corr;
    const int n_in = min(32, L - tile * 32);
#pragma unroll 8
    for (int jj = 0; jj < n_in; ++jj) {
      const float pj = __shfl_sync(0xffffffffu, p, jj);
      const KV* vr = V + int64_t(tile * 32 + jj) * kvd;
#pragma unroll
      for (int e = 0; e < E; ++e) acc[e] = fmaf(pj, to_float(vr[lane + 32 * e]), acc[e]);
    }
    m = m_new;
  }
  if (lane == 0) {
    wm[warp] = m;
    wl[warp] = l;
  }
#pragma unroll
  for (int e = 0; e < E; ++e) wacc[warp][lane + 32 * e] = acc[e];
  __syncthreads();
  for (int t = threadIdx.x; t < HD; t += blockDim.x)
    out[int64_t(i) * ldo + h * HD + t] = from_float<TO>(merge_warp_partials(wm, wl, wacc, t));
}

template <typename T>
__global__ void silu_mul_kernel(const float* __restrict__ gu, int ldgu, int dff,
                                T* __restrict__ h, int ldh) {
  pdl_trigger();
  pdl_wait();
  const int i = blockIdx.y;
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < dff; j += gridDim.x * blockDim.x) {
    const float g = gu[int64_t(i) * ldgu + j], u = gu[int64_t(i) * ldgu + dff + j];
    h[int64_t(i) * ldh + j] = from_float<T>(g / (1.0f + expf(-g)) * u);
  }
}

template <typename T>
__global__ void to_dtype_kernel(const float* __restrict__ x, int64_t n, T* __restrict__ out) {
  pdl_trigger();
  pdl_wait();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = from_float<T>(x[i]);
}

__global__ void nll_kernel(const float* __restrict__ logits, int V, const int* __restrict__ targets,
                           float* __restrict__ nll) {
  pdl_trigger();
  pdl_wait();
  __shared__ float sh[32];
  const int i = blockIdx.x;
  const float* row = logits + int64_t(i) * V;
  float mx = -FLT_MAX;
  for (int j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, row[j]);
  mx = block_max(mx, sh);
  float s = 0.f;
  for (int j = threadIdx.x; j < V; j += blockDim.x) s += expf(row[j] - mx);
  s = block_sum(s, sh);
  if (threadIdx.x == 0) {
    const int t = targets[i];
    nll[i] = t < 0 ? 0.f : (mx + logf(s)) - row[t];
  }
}

__global__ void argmax_kernel(const float* __restrict__ logits, int V, int* __restrict__ out) {
  pdl_trigger();
  pdl_wait();
  __shared__ float sv[32];
  __shared__ int si[32];
  const int i = blockIdx.x;
  const float* row = logits + int64_t(i) * V;
  float bv = -FLT_MAX;
  int bi = 0x7fffffff;
  auto take = [&](float v, int j) {
    if (v > bv) {
      bv = v;
      bi = j;
    }
  };
  // 16-byte loads, many in flight per thread (one block reads the whole row: latency bound)
  const int v4 = V % 4 == 0 ? V / 4 : 0;
  const float4* row4 = reinterpret_cast<const float4*>(row);
#pragma unroll 8
  for (int j = threadIdx.x; j < v4; j += blockDim.x) {
    const float4 v = row4[j];
    take(v.x, 4 * j);
    take(v.y, 4 * j + 1);
    take(v.z, 4 * j + 2);
    take(v.w, 4 * j + 3);
  }
  for (int j = 4 * v4 + threadIdx.x; j < V; j += blockDim.x) take(row[j], j);
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > bv || (ov == bv && oi < bi)) {
      bv = ov;
      bi = oi;
    }
  }
  if (lane == 0) {
    sv[w] = bv;
    si[w] = bi;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int k = 1; k < int(blockDim.x >> 5); ++k)
      if (sv[k] > bv || (sv[k] == bv && si[k] < bi)) {
        bv = sv[k];
        bi = si[k];
      }
    out[i] = bi == 0x7fffffff ? 0 : bi;
  }
}

__global__ void decode_begin_kernel(int nb, const int* seq_len, int* row_seq, int* row_pos) {
  pdl_trigger();
  pdl_wait();
  const int i = threadIdx.x;
  if (i < nb) {
    row_seq[i] = i;
    row_pos[i] = seq_len[i];
  }
}
__global__ void decode_end_kernel(int nb, int* seq_len) {
  pdl_trigger();
  pdl_wait();
  const int i = threadIdx.x;
  if (i < nb) seq_len[i] += 1;
}

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
__device__ __forceinline__ uint64_t rng(uint64_t seed, uint64_t id, uint64_t i) {
  return mix64(mix64(seed ^ (id * 0xD6E8FEB86659FD93ull)) + i);
}

template <typename T>
__global__ void fill_normal_kernel(T* p, int64_t n, uint64_t seed, uint64_t id, float stddev) {
  pdl_trigger();
  pdl_wait();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t r = rng(seed, id, uint64_t(i));
    // Irwin-Hall(4): sum of four 16-bit uniforms, mean 2, variance 1/3.
    const float u = float(r & 0xFFFF) + float((r >> 16) & 0xFFFF) + float((r >> 32) & 0xFFFF) +
                    float(r >> 48);
    const float z = (u * (1.0f / 65536.0f) - 2.0f) * 1.7320508f;
    p[i] = from_float<T>(z * stddev);
  }
}

__global__ void fill_words_kernel(uint32_t* p, int64_t n, uint64_t seed, uint64_t id) {
  pdl_trigger();
  pdl_wait();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    p[i] = uint32_t(rng(seed, id, uint64_t(i)) >> 16);
}

__global__ void fill_scales_kernel(uint32_t* sz, int64_t n, uint64_t seed, uint64_t id,
                                   float scale, float zero) {
  pdl_trigger();
  pdl_wait();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float u = 0.9f + 0.2f * float(rng(seed, id, uint64_t(i)) >> 40) * (1.0f / 16777216.0f);
    const __half2 h = __halves2half2(__float2half_rn(scale * u), __float2half_rn(zero));
    uint32_t v;
    memcpy(&v, &h, 4);
    sz[i] = v;
  }
}

__global__ void fill_const_kernel(float* p, int64_t n, float v) {
  pdl_trigger();
  pdl_wait();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    p[i] = v;
}

constexpr int kStreamBlocks = 132 * 8;

__global__ void read_stream_kernel(const uint4* __restrict__ p, int64_t n, float* sink) {
  pdl_trigger();
  pdl_wait();
  uint32_t acc = 0;
  int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    const uint4 a = __ldcs(p + i), b = __ldcs(p + i + stride), c = __ldcs(p + i + 2 * stride),
                d = __ldcs(p + i + 3 * stride);
    acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^
           d.z ^ d.w;
  }
  for (; i < n; i += stride) {
    const uint4 a = __ldcs(p + i);
    acc ^= a.x ^ a.y ^ a.z ^ a.w;
  }
  acc = __reduce_xor_sync(0xffffffffu, acc);
  if (threadIdx.x == 0) sink[blockIdx.x] = float(acc & 0xFF);
}

int grid_for(int64_t n, int threads, int cap = 65535) {
  return int(std::min<int64_t>((n + threads - 1) / threads, cap));
}

}  // namespace

void embed(DType t, const void* table, int d, const int* tokens, int n, float* x, cudaStream_t s) {
  if (n <= 0) return;
  if (t == DType::F16)
    launch_k("embed_kernel", embed_kernel<__half>, dim3(n), dim3(256), 0, s, static_cast<const __half*>(table), d, tokens, x);
  else
    launch_k("embed_kernel", embed_kernel<__nv_bfloat16>, dim3(n), dim3(256), 0, s, static_cast<const __nv_bfloat16*>(table), d, tokens, x);
  HCI_LAUNCH_CHECK("embed");
}

void rmsnorm(DType out_t, const float* x, int ldx, const float* g, int n, int d, float eps,
             void* out, int ldo, cudaStream_t s) {
  if (n <= 0) return;
  const int threads = d >= 2048 ? 512 : 256;
  switch (out_t) {
    case DType::F16:
      launch_k("rmsnorm_kernel", rmsnorm_kernel<__half>, dim3(n), dim3(threads), 0, s, x, ldx, g, d, eps, static_cast<__half*>(out), ldo);
      break;
    case DType::BF16:
      launch_k("rmsnorm_kernel", rmsnorm_kernel<__nv_bfloat16>, dim3(n), dim3(threads), 0, s, x, ldx, g, d, eps, static_cast<__nv_bfloat16*>(out),
                                           ldo);
      break;
    case DType::F32:
      launch_k("rmsnorm_kernel", rmsnorm_kernel<float>, dim3(n), dim3(threads), 0, s, x, ldx, g, d, eps, static_cast<float*>(out), ldo);
      break;
  }
  HCI_LAUNCH_CHECK("rmsnorm");
}

void rope_store(DType kv, float* qkv, int ldq, int n, int n_heads, int n_kv, int hd,
                const float2* cs, const int* row_seq, const int* row_pos, void* kc, void* vc,
                int n_ctx, cudaStream_t s) {
  if (n <= 0) return;
  if (kv == DType::F16)
    launch_k("rope_store_kernel", rope_store_kernel<__half>, dim3(n), dim3(256), 0, s, qkv, ldq, n_heads, n_kv, hd, cs, row_seq, row_pos,
                                        static_cast<__half*>(kc), static_cast<__half*>(vc), n_ctx);
  else
    launch_k("rope_store_kernel", rope_store_kernel<float>, dim3(n), dim3(256), 0, s, qkv, ldq, n_heads, n_kv, hd, cs, row_seq, row_pos,
                                        static_cast<float*>(kc), static_cast<float*>(vc), n_ctx);
  HCI_LAUNCH_CHECK("rope_store");
}

namespace {
template <typename KV, typename TO>
void attention_t(const float* qkv, int ldq, int n, int n_heads, int n_kv, int hd, const void* kc,
                 const void* vc, int n_ctx, const int* row_seq, const int* row_pos, void* out,
                 int ldo, cudaStream_t s) {
  const dim3 grid(n_heads, n);
  const float scale = float(1.0 / std::sqrt(double(hd)));
  const KV* k = static_cast<const KV*>(kc);
  const KV* v = static_cast<const KV*>(vc);
  TO* o = static_cast<TO*>(out);
  switch (hd) {
    case 32:
      launch_k("attention_kernel", attention_kernel<KV, TO, 1>, dim3(grid), dim3(kAttnWarps * 32), 0, s, 
          qkv, ldq, n_heads, n_kv, k, v, n_ctx, row_seq, row_pos, scale, o, ldo);
      break;
    case 64:
      launch_k("attention_kernel", attention_kernel<KV, TO, 2>, dim3(grid), dim3(kAttnWarps * 32), 0, s, 
          qkv, ldq, n_heads, n_kv, k, v, n_ctx, row_seq, row_pos, scale, o, ldo);
      break;
    case 128:
      launch_k("attention_kernel", attention_kernel<KV, TO, 4>, dim3(grid), dim3(kAttnWarps * 32), 0, s, 
          qkv, ldq, n_heads, n_kv, k, v, n_ctx, row_seq, row_pos, scale, o, ldo);
      break;
    default: fail(HCI_ERR_UNSUPPORTED, "GPU attention supports head_dim 32, 64 or 128");
  }
}
}  // namespace

void attention(DType kv, DType out_t, const float* qkv, int ldq, int n, int n_heads, int n_kv,
               int hd, const void* kc, const void* vc, int n_ctx, const int* row_seq,
               const int* row_pos, void* out, int ldo, cudaStream_t s) {
  if (n <= 0) return;
  if (kv == DType::F16 && out_t == DType::F16)
    attention_t<__half, __half>(qkv, ldq, n, n_heads, n_kv, hd, kc, vc, n_ctx, row_seq, row_pos,
                                out, ldo, s);
  else if (kv == DType::F16 && out_t == DType::BF16)
    attention_t<__half, __nv_bfloat16>(qkv, ldq, n, n_heads, n_kv, hd, kc, vc, n_ctx, row_seq,
                                       row_pos, out, ldo, s);
  else if (kv == DType::F32 && out_t == DType::F16)
    attention_t<float, __half>(qkv, ldq, n, n_heads, n_kv, hd, kc, vc, n_ctx, row_seq, row_pos,
                               out, ldo, s);
  else
    attention_t<float, __nv_bfloat16>(qkv, ldq, n, n_heads, n_kv, hd, kc, vc, n_ctx, row_seq,
                                      row_pos, out, ldo, s);
  HCI_LAUNCH_CHECK("attention");
}

void silu_mul(DType out_t, const float* gu, int ldgu, int dff, int n, void* h, int ldh,
              cudaStream_t s) {
  if (n <= 0) return;
  const dim3 grid(std::min((dff + 255) / 256, 64), n);
  if (out_t == DType::F16)
    launch_k("silu_mul_kernel", silu_mul_kernel<__half>, dim3(grid), dim3(256), 0, s, gu, ldgu, dff, static_cast<__half*>(h), ldh);
  else
    launch_k("silu_mul_kernel", silu_mul_kernel<__nv_bfloat16>, dim3(grid), dim3(256), 0, s, gu, ldgu, dff, static_cast<__nv_bfloat16*>(h), ldh);
  HCI_LAUNCH_CHECK("silu_mul");
}

void to_dtype(DType t, const float* x, int64_t n, void* out, cudaStream_t s) {
  if (n <= 0) return;
  const int g = grid_for(n, 256, 4096);
  if (t == DType::F16)
    launch_k("to_dtype_kernel", to_dtype_kernel<__half>, dim3(g), dim3(256), 0, s, x, n, static_cast<__half*>(out));
  else
    launch_k("to_dtype_kernel", to_dtype_kernel<__nv_bfloat16>, dim3(g), dim3(256), 0, s, x, n, static_cast<__nv_bfloat16*>(out));
  HCI_LAUNCH_CHECK("to_dtype");
}

void nll_rows(const float* logits, int V, const int* targets, int n, float* nll, cudaStream_t s) {
  if (n <= 0) return;
  launch_k("nll_kernel", nll_kernel, dim3(n), dim3(512), 0, s, logits, V, targets, nll);
  HCI_LAUNCH_CHECK("nll_rows");
}

void argmax_rows(const float* logits, int V, int n, int* out, cudaStream_t s) {
  if (n <= 0) return;
  launch_k("argmax_kernel", argmax_kernel, dim3(n), dim3(1024), 0, s, logits, V, out);
  HCI_LAUNCH_CHECK("argmax_rows");
}

void decode_begin(int nb, const int* seq_len, int* row_seq, int* row_pos, cudaStream_t s) {
  launch_k("decode_begin_kernel", decode_begin_kernel, dim3(1), dim3(32), 0, s, nb, seq_len, row_seq, row_pos);
  HCI_LAUNCH_CHECK("decode_begin");
}

void decode_end(int nb, int* seq_len, cudaStream_t s) {
  launch_k("decode_end_kernel", decode_end_kernel, dim3(1), dim3(32), 0, s, nb, seq_len);
  HCI_LAUNCH_CHECK("decode_end");
}

void fill_normal(DType t, void* p, int64_t n, uint64_t seed, uint64_t id, float stddev,
                 cudaStream_t s) {
  if (n <= 0) return;
  const int g = grid_for(n, 256, 8192);
  if (t == DType::F16)
    launch_k("fill_normal_kernel", fill_normal_kernel<__half>, dim3(g), dim3(256), 0, s, static_cast<__half*>(p), n, seed, id, stddev);
  else if (t == DType::BF16)
    launch_k("fill_normal_kernel", fill_normal_kernel<__nv_bfloat16>, dim3(g), dim3(256), 0, s, static_cast<__nv_bfloat16*>(p), n, seed, id, stddev);
  else
    launch_k("fill_normal_kernel", fill_normal_kernel<float>, dim3(g), dim3(256), 0, s, static_cast<float*>(p), n, seed, id, stddev);
  HCI_LAUNCH_CHECK("fill_normal");
}

void fill_words(uint32_t* p, int64_t n_words, uint64_t seed, uint64_t id, cudaStream_t s) {
  if (n_words <= 0) return;
  launch_k("fill_words_kernel", fill_words_kernel, dim3(grid_for(n_words, 256, 8192)), dim3(256), 0, s, p, n_words, seed, id);
  HCI_LAUNCH_CHECK("fill_words");
}

void fill_scales(uint32_t* sz, int64_t n, uint64_t seed, uint64_t id, float scale, float zero,
                 cudaStream_t s) {
  if (n <= 0) return;
  launch_k("fill_scales_kernel", fill_scales_kernel, dim3(grid_for(n, 256, 8192)), dim3(256), 0, s, sz, n, seed, id, scale, zero);
  HCI_LAUNCH_CHECK("fill_scales");
}

void fill_const(float* p, int64_t n, float v, cudaStream_t s) {
  if (n <= 0) return;
  launch_k("fill_const_kernel", fill_const_kernel, dim3(grid_for(n, 256, 4096)), dim3(256), 0, s, p, n, v);
  HCI_LAUNCH_CHECK("fill_const");
}

int read_stream_blocks() { return kStreamBlocks; }

void read_stream(const void* p, int64_t bytes, float* sink, cudaStream_t s) {
  launch_k("read_stream_kernel", read_stream_kernel, dim3(kStreamBlocks), dim3(256), 0, s, static_cast<const uint4*>(p), bytes / 16,
                                                   sink);
  HCI_LAUNCH_CHECK("read_stream");
}



}  // namespace hci::gpu
