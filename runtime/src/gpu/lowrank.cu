// Low-rank compensation on the device for decode rows (GPU placement): y += B·(A·x) for up to
// four branches that share one input (q/k/v, gate/up), in two kernels instead of three cuBLAS
// calls and a conversion per branch. Shapes:
//   x [nb, ldx] dtype T, A_c [rank_pad_c, d_in] T, B_c [d_out_c, rank_pad_c] T (rows 16-byte
//   aligned: d_in and rank_pad multiples of 8), t [nb, R] float with R = Σ_c rank_pad_c (branch c
//   at column Σ_{c'<c} rank_pad_c'), y [nb, ldy] float, branch c adding into columns
//   [out_col_c, out_col_c + d_out_c).
// The CPU reference: tests/test_gpu_kernels.cpp (lowrank_matches_reference).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <string>

#include "device_util.cuh"
#include "kernels.h"
#include "launch.cuh"

namespace hci::gpu {

namespace {

constexpr int kProjThreads = 256;  // one block per row of A
constexpr int kProjPer = 8;        // 16-byte vectors of the row per thread: d_in <= 16384

// t[b, r] = A[r, :] · x[b, :] over the concatenated rows r of every branch; grid R, one block per
// row: the row's loads are all issued before the wait for x (a warp per row would leave each
// lane a chain of dependent loads).
template <typename T>
__global__ void __launch_bounds__(kProjThreads)
    project_kernel(LowRankSet s, int d_in, const T* __restrict__ x, int ldx, int nb,
                   float* __restrict__ t) {
  __shared__ float sh[32];
  pdl_trigger();
  int R = 0;
  for (int c = 0; c < s.n; ++c) R += s.rank_pad[c];
  const int row = blockIdx.x;
  int r = row, c = 0;
  while (r >= s.rank_pad[c]) r -= s.rank_pad[c++];
  const uint4* a = reinterpret_cast<const uint4*>(static_cast<const T*>(s.a[c]) + int64_t(r) * d_in);
  const int vecs = d_in / 8;
  uint4 av[kProjPer];
#pragma unroll
  for (int i = 0; i < kProjPer; ++i) {
    const int v = threadIdx.x + i * kProjThreads;
    av[i] = v < vecs ? __ldg(a + v) : make_uint4(0, 0, 0, 0);
  }
  pdl_wait();  // x is the previous kernel's output
  for (int b = 0; b < nb; ++b) {
    const uint4* xv = reinterpret_cast<const uint4*>(x + int64_t(b) * ldx);
    float acc = 0.f;
#pragma unroll
    for (int i = 0; i < kProjPer; ++i) {
      const int v = threadIdx.x + i * kProjThreads;
      if (v >= vecs) break;
      float fa[8], fx[8];
      to_float8(av[i], fa, T());
      to_float8(xv[v], fx, T());
#pragma unroll
      for (int j = 0; j < 8; ++j) acc = fmaf(fa[j], fx[j], acc);
    }
    acc = block_sum(acc, sh);
    if (threadIdx.x == 0) t[int64_t(b) * R + row] = acc;
  }
}

constexpr int kExpandThreads = 256;

// y[b, out_col_c + i] += B_c[i, :] · t[b, branch c]; TPR threads per output row (each up to
// four 16-byte vectors of the row, then a shuffle sum), 256 / TPR rows per block; t staged in
// shared memory ([nb, R] floats, dynamic).
template <typename T, int TPR>
__global__ void __launch_bounds__(kExpandThreads)
    expand_kernel(LowRankSet s, const float* __restrict__ t, int nb, float* __restrict__ y,
                  int ldy) {
  extern __shared__ float ts[];
  pdl_trigger();
  int R = 0, rows = 0;
  for (int c = 0; c < s.n; ++c) {
    R += s.rank_pad[c];
    rows += s.d_out[c];
  }
  const int sub = threadIdx.x % TPR;
  const int grow = blockIdx.x * (kExpandThreads / TPR) + threadIdx.x / TPR;
  int i = grow, c = 0, col0 = 0;
  if (grow < rows)
    while (i >= s.d_out[c]) {
      i -= s.d_out[c];
      col0 += s.rank_pad[c];
      ++c;
    }
  // this thread's vectors of the row: sub, sub + TPR, ... (rank_pad / 8 of them in all)
  const int rp = grow < rows ? s.rank_pad[c] : 0;
  const uint4* bv = reinterpret_cast<const uint4*>(static_cast<const T*>(s.b[c]) + int64_t(i) * rp);
  uint4 w[4];
#pragma unroll
  for (int u = 0; u < 4; ++u) {
    const int v = sub + u * TPR;
    w[u] = v < rp / 8 ? __ldg(bv + v) : make_uint4(0, 0, 0, 0);
  }
  pdl_wait();  // t (the projection) and y (the backbone product) are complete
  for (int k = threadIdx.x; k < nb * R; k += kExpandThreads) ts[k] = t[k];
  __syncthreads();
  float acc[16];
#pragma unroll
  for (int b = 0; b < 16; ++b) acc[b] = 0.f;
  for (int v0 = 0; v0 < rp / 8; v0 += 4 * TPR) {
    if (v0 > 0) {  // rows longer than four vectors per thread
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int v = v0 + sub + u * TPR;
        w[u] = v < rp / 8 ? __ldg(bv + v) : make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int v = v0 + sub + u * TPR;
      if (v >= rp / 8) break;
      float fb[8];
      to_float8(w[u], fb, T());
#pragma unroll
      for (int b = 0; b < 16; ++b) {
        if (b >= nb) break;
        const float* tb = ts + b * R + col0 + v * 8;
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[b] = fmaf(fb[j], tb[j], acc[b]);
      }
    }
  }
#pragma unroll
  for (int b = 0; b < 16; ++b) {
    if (b >= nb) break;
    float a = acc[b];
#pragma unroll
    for (int o = TPR / 2; o > 0; o /= 2) a += __shfl_xor_sync(0xffffffffu, a, o);
    if (sub == 0 && grow < rows) y[int64_t(b) * ldy + s.out_col[c] + i] += a;
  }
}

int total_rank(const LowRankSet& s) {
  int R = 0;
  for (int c = 0; c < s.n; ++c) R += s.rank_pad[c];
  return R;
}

}  // namespace

bool lowrank_decode_supported(const LowRankSet& s, int d_in, int nb) {
  if (s.n < 1 || s.n > 4 || nb < 1 || nb > 16 || d_in % 8 != 0) return false;
  if (d_in > 8 * kProjThreads * kProjPer) return false;
  for (int c = 0; c < s.n; ++c)
    if (s.rank_pad[c] < 8 || s.rank_pad[c] % 8 != 0 || s.d_out[c] < 1) return false;
  return int64_t(nb) * total_rank(s) * 4 <= kLowRankSmemBytes;
}

void lowrank_project(DType t, const LowRankSet& s, int d_in, const void* x, int ldx, int nb,
                     float* tbuf, cudaStream_t st) {
  if (!lowrank_decode_supported(s, d_in, nb))
    fail(HCI_ERR_INTERNAL, "lowrank_project: unsupported shape (d_in " + std::to_string(d_in) +
                               ", rows " + std::to_string(nb) + ")");
  const dim3 grid(total_rank(s)), block(kProjThreads);
  if (t == DType::BF16)
    launch_k("lowrank_project", project_kernel<__nv_bfloat16>, grid, block, 0, st, s, d_in,
             static_cast<const __nv_bfloat16*>(x), ldx, nb, tbuf);
  else if (t == DType::F16)
    launch_k("lowrank_project", project_kernel<__half>, grid, block, 0, st, s, d_in,
             static_cast<const __half*>(x), ldx, nb, tbuf);
  else
    fail(HCI_ERR_INTERNAL, "lowrank_project: fp16 or bf16 factors only");
}

void lowrank_expand(DType t, const LowRankSet& s, const float* tbuf, int nb, float* y, int ldy,
                    cudaStream_t st) {
  int rows = 0, rmax = 0;
  for (int c = 0; c < s.n; ++c) {
    rows += s.d_out[c];
    rmax = std::max(rmax, s.rank_pad[c]);
  }
  // threads per row: up to 4 vectors (32 values) each at the largest rank, at most 8
  const int tpr = rmax <= 32 ? 1 : rmax <= 64 ? 2 : rmax <= 128 ? 4 : 8;
  const dim3 grid((rows + kExpandThreads / tpr - 1) / (kExpandThreads / tpr)), block(kExpandThreads);
  const size_t smem = size_t(nb) * size_t(total_rank(s)) * 4;
#define HCI_EXPAND(TT, N)                                                                      \
  launch_k("lowrank_expand", expand_kernel<TT, N>, grid, block, smem, st, s, tbuf, nb, y, ldy)
#define HCI_EXPAND_T(TT)                                                                       \
  switch (tpr) {                                                                               \
    case 1: HCI_EXPAND(TT, 1); break;                                                          \
    case 2: HCI_EXPAND(TT, 2); break;                                                          \
    case 4: HCI_EXPAND(TT, 4); break;                                                          \
    default: HCI_EXPAND(TT, 8); break;                                                         \
  }
  if (t == DType::BF16) {
    HCI_EXPAND_T(__nv_bfloat16)
  } else if (t == DType::F16) {
    HCI_EXPAND_T(__half)
  } else {
    fail(HCI_ERR_INTERNAL, "lowrank_expand: fp16 or bf16 factors only");
  }
#undef HCI_EXPAND_T
#undef HCI_EXPAND
}

}  // namespace hci::gpu
