// The library's own tensor-core GEMM for prefill, used when the library is built without cuBLAS
// (or when asked for): y[m, n] (+)= sum_k x[m, k] * W[n, k], fp16/bf16 in, fp32 accumulate and
// out. 64x64 block tiles, 32-deep k steps, four warps of 32x32 (2x2 WMMA 16x16x16 fragments),
// double-buffered shared-memory tiles filled with 16-byte cp.async copies.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include "common.h"
#include "kernels.h"
#include "device_util.cuh"
#include "launch.cuh"

namespace hci::gpu {

namespace {

constexpr int BM = 64, BN = 64, BK = 32, PAD = 8, LDS = BK + PAD;

template <typename T>
struct Smem {
  union {
    struct {
      T xs[2][BM][LDS];
      T ws[2][BN][LDS];
    } ab;
    float c[BM][BN + 4];
  };
};

template <typename T>
__global__ void __launch_bounds__(128) gemm_kernel(const T* __restrict__ X, int ldx,
                                                   const T* __restrict__ W, int K, int M, int N,
                                                   float* __restrict__ Y, int ldy, int accumulate) {
  using namespace nvcuda;
  __shared__ __align__(128) Smem<T> sm;
  pdl_trigger();
  pdl_wait();
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const int warp = threadIdx.x >> 5;
  const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);

  // Each tile is 64 rows x 32 elements = 256 vectors of 16 bytes: two per thread.
  auto load = [&](int buf, int k0) {
#pragma unroll
    for (int t = 0; t < 2; ++t) {
      const int v = threadIdx.x + t * 128;
      const int r = v >> 2, c = (v & 3) * 8;
      const int gm = m0 + r, gn = n0 + r;
      cp_async16(&sm.ab.xs[buf][r][c], X + int64_t(min(gm, M - 1)) * ldx + k0 + c, gm < M);
      cp_async16(&sm.ab.ws[buf][r][c], W + int64_t(min(gn, N - 1)) * K + k0 + c, gn < N);
    }
    cp_async_commit();
  };

  const int steps = K / BK;
  load(0, 0);
  for (int s = 0; s < steps; ++s) {
    const int buf = s & 1;
    cp_async_wait_all();
    __syncthreads();
    if (s + 1 < steps) load(buf ^ 1, (s + 1) * BK);
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], &sm.ab.xs[buf][wm + 16 * i][kk], LDS);
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(b[j], &sm.ab.ws[buf][wn + 16 * j][kk], LDS);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(&sm.c[wm + 16 * i][wn + 16 * j], acc[i][j], BN + 4,
                              wmma::mem_row_major);
  __syncthreads();
  for (int v = threadIdx.x; v < BM * BN; v += 128) {
    const int r = v / BN, c = v % BN;
    const int gm = m0 + r, gn = n0 + c;
    if (gm < M && gn < N) {
      float* dst = Y + int64_t(gm) * ldy + gn;
      *dst = accumulate ? *dst + sm.c[r][c] : sm.c[r][c];
    }
  }
}

}  // namespace

void gemm_own(DType t, const void* W, int d_out, int d_in, const void* x, int ldx, int m,
              float* y, int ldy, bool accumulate, cudaStream_t s) {
  if (m <= 0) return;
  if (d_in % BK || ldx % 8) fail(HCI_ERR_UNSUPPORTED, "own GEMM: d_in must be a multiple of 32");
  const dim3 grid((d_out + BN - 1) / BN, (m + BM - 1) / BM);
  if (t == DType::F16)
    launch_k("gemm_kernel", gemm_kernel<__half>, dim3(grid), dim3(128), 0, s, static_cast<const __half*>(x), ldx,
                                             static_cast<const __half*>(W), d_in, m, d_out, y, ldy,
                                             accumulate);
  else
    launch_k("gemm_kernel", gemm_kernel<__nv_bfloat16>, dim3(grid), dim3(128), 0, s, static_cast<const __nv_bfloat16*>(x), ldx,
                                                    static_cast<const __nv_bfloat16*>(W), d_in, m,
                                                    d_out, y, ldy, accumulate);
  HCI_LAUNCH_CHECK("gemm_own");
}

}  // namespace hci::gpu
