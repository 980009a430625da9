// Device helpers shared by the kernels (kernels.cu, decode_attention.cu, gemv.cu, gemm.cu,
// comp_kernels.cu): dtype conversion, cache loads, block-wide sums and maxima, asynchronous
// global-to-shared copies.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>
#include <cstdint>
#include <type_traits>

namespace hci::gpu {

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }

__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(float v) { return v; }

// The 8 fp16 / bf16 values of a 16-byte vector as floats (the last argument picks the type).
template <typename T>
__device__ __forceinline__ void to_float8(const uint4& v, float f[8], T) {
  static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>, "fp16 or bf16");
  const uint32_t* w = reinterpret_cast<const uint32_t*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float2 t;
    if constexpr (std::is_same_v<T, __half>)
      t = __half22float2(*reinterpret_cast<const __half2*>(w + i));
    else
      t = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(w + i));
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}

// Loads 8 consecutive cache values as floats (fp16: one 16-byte load through the read-only path;
// cache rows are written by earlier kernels, never read back by the kernel that writes them).
__device__ __forceinline__ void load8(const __half* p, float f[8]) {
  to_float8(__ldg(reinterpret_cast<const uint4*>(p)), f, __half());
}
__device__ __forceinline__ void load8(const float* p, float f[8]) {
  const float4 a = *reinterpret_cast<const float4*>(p);
  const float4 b = *reinterpret_cast<const float4*>(p + 4);
  f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w;
  f[4] = b.x; f[5] = b.y; f[6] = b.z; f[7] = b.w;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Block-wide sum for blockDim.x a multiple of 32 (<= 1024), sh [32] shared scratch; every thread
// gets the result.
__device__ __forceinline__ float block_sum(float v, float* sh) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  float t = lane < nw ? sh[lane] : 0.f;
  return warp_sum(t);
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide max for blockDim.x a multiple of 32 (<= 1024); every thread gets the result.
__device__ __forceinline__ float block_max(float v, float* sh) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  float t = lane < nw ? sh[lane] : -FLT_MAX;
  return warp_max(t);
}

// Head dimension t of a block's attention output merged from W warps' online-softmax partials:
// wm[w] the warp's running maximum, wl[w] its sum of exp(score - wm[w]), wacc[w][t] its weighted
// sum of values; warps that saw no key (wl[w] == 0) are skipped. Shared by the prefill and the
// online decode kernel.
template <int W, int HD>
__device__ __forceinline__ float merge_warp_partials(const float (&wm)[W], const float (&wl)[W],
                                                     const float (&wacc)[W][HD], int t) {
  float M = -FLT_MAX;
  for (int w = 0; w < W; ++w) M = fmaxf(M, wm[w]);
  float num = 0.f, den = 0.f;
  for (int w = 0; w < W; ++w) {
    if (wl[w] == 0.f) continue;
    const float f = expf(wm[w] - M);
    num += wacc[w][t] * f;
    den += wl[w] * f;
  }
  return num / den;
}

// Asynchronous copies global -> shared (sm_80+), tracked per thread in commit groups.
// 16 bytes, L2 only (streamed data); `ok` false fills the destination with zeros, reading nothing.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool ok = true) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int n = ok ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}
// 4 bytes (through L1: small, reused words such as scales).
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most N of this thread's most recent groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() { cp_async_wait<0>(); }

}  // namespace hci::gpu
