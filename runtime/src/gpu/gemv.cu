// Bandwidth-bound decode kernels: float (fp16/bf16) GEMV, packed-quantized GEMV, and the
// dequantizer used by the prefill path.
//
// One warp computes RPW consecutive output rows for all nb (1..16) input rows. Each lane reads
// 16-byte vectors of the weight rows (consecutive lanes, consecutive vectors: fully coalesced,
// streaming loads that do not keep weights in L1/L2), U vectors per row in flight before the first
// use; the input rows (a few KB) come through the read-only cache. Products accumulate in fp32
// (packed: weights dequantized to fp16 in registers, 8-code partial sums in fp16x2, then fp32),
// followed by a warp reduction.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "common.h"
#include "kernels.h"
#include "device_util.cuh"
#include "kernel_stamps.cuh"
#include "launch.cuh"

namespace hci::gpu {

namespace {

constexpr int kThreads = 128;  // 4 warps per block
constexpr int kWarps = kThreads / 32;

int g_float_variant = 0;
NormEpilogue g_norm;  // the epilogue of the launch being issued (set around one gemv/qgemv call)
NormIn g_norm_in;     // the prologue norm of the launch being issued (likewise)
int g_packed_variant = 0;
// the lean 4-bit GEMV triggers its dependents at its start (set per forward pass by the engine,
// hence per thread)
thread_local int g_q4_early = 1;
// the lean 4-bit GEMV splits rows longer than one step into tasks per step (KSPLIT; per thread,
// like the early trigger)
thread_local int g_q4_ksplit = 1;
int g_stamp_tag = 0;  // host launch counter recorded by instrumented kernels (kernel_stamps.cuh)

__device__ __forceinline__ uint4 ld_stream(const uint4* p) { return __ldcs(p); }
__device__ __forceinline__ uint2 ld_stream2(const uint2* p) { return __ldcs(p); }


// After a residual GEMV (Y = x rows of width d): the last block to finish writes the RMSNorm of
// the nb rows, out[b*d + j] = T(gamma[j] * x[b, j] * rsqrt(mean(x_b^2) + eps)), as the
// rmsnorm kernel does; this saves that kernel's launch in the decode step. Every thread of the
// block must call it.
template <typename T>
__device__ void norm_epilogue(const NormEpilogue& e, const float* Y, int ldy, int d, int nb) {
  __shared__ int last;
  __shared__ float red[32];
  __threadfence();  // this block's outputs are visible device-wide before it is counted
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(e.counter, 1u) == gridDim.x - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  T* out = static_cast<T*>(e.out);
  for (int b = 0; b < nb; ++b) {
    const float* x = Y + int64_t(b) * ldy;
    float ss = 0.f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
      const float v = __ldcg(x + j);  // written by other multiprocessors: bypass L1
      ss += v * v;
    }
    ss = block_sum(ss, red);
    const float inv = rsqrtf(ss / float(d) + e.eps);
    for (int j = threadIdx.x; j < d; j += blockDim.x)
      out[int64_t(b) * d + j] = from_float<T>(e.gamma[j] * (__ldcg(x + j) * inv));
  }
  if (threadIdx.x == 0) *e.counter = 0u;  // ready for the next GEMV
}

template <int RPW, int NB>
__device__ __forceinline__ void reduce_store(float (&acc)[RPW][NB], int lane, int row0, int d_out,
                                             int nb, float* __restrict__ y, int ldy,
                                             int accumulate) {
#pragma unroll
  for (int r = 0; r < RPW; ++r)
#pragma unroll
    for (int b = 0; b < NB; ++b) {
      if (b >= nb) continue;
      const float v = warp_sum(acc[r][b]);
      if (lane == ((r * NB + b) & 31) && row0 + r < d_out) {
        float* dst = y + int64_t(b) * ldy + row0 + r;
        *dst = accumulate ? *dst + v : v;
      }
    }
}

// ---- float GEMV ------------------------------------------------------------------------------

// SILU: the warp computes gate row r and up row r + pair (RPW = 2) and writes
// H[b*ldh + r] = T(silu(gate) * up) instead of Y.
template <typename T, int NB, int RPW, int U, bool SILU = false>
__global__ void __launch_bounds__(kThreads) gemv_kernel(const T* __restrict__ W, int d_out,
                                                        int d_in, const T* __restrict__ X, int ldx,
                                                        int nb, float* __restrict__ Y, int ldy,
                                                        int accumulate, int pair,
                                                        T* __restrict__ H, int ldh,
                                                        NormEpilogue norm) {
  static_assert(!SILU || RPW == 2, "SILU pairs two rows");
  const int lane = threadIdx.x & 31;
  const int warp_id = blockIdx.x * kWarps + (threadIdx.x >> 5);
  const int row0 = SILU ? warp_id : warp_id * RPW;
  const bool active = row0 < (SILU ? pair : d_out);  // warps past the end only join the epilogue
  int rows[RPW];
  bool valid[RPW];
#pragma unroll
  for (int r = 0; r < RPW; ++r) {
    rows[r] = SILU ? row0 + r * pair : row0 + r;
    valid[r] = rows[r] < d_out;
  }
  const int chunks = d_in >> 3;  // 16-byte vectors per row
  const uint4* Wv = reinterpret_cast<const uint4*>(W);
  const uint4 zero4 = make_uint4(0, 0, 0, 0);
  float acc[RPW][NB];
#pragma unroll
  for (int r = 0; r < RPW; ++r)
#pragma unroll
    for (int b = 0; b < NB; ++b) acc[r][b] = 0.f;

  for (int base = 0; active && base < chunks; base += 32 * U) {
    uint4 w[U][RPW];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = base + u * 32 + lane;
#pragma unroll
      for (int r = 0; r < RPW; ++r)
        w[u][r] = (c < chunks && valid[r]) ? ld_stream(Wv + int64_t(rows[r]) * chunks + c) : zero4;
    }
    if (base == 0) pdl_wait();  // weights are constant: only x and y depend on earlier kernels
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = base + u * 32 + lane;
      if (c >= chunks) continue;
      float wf[RPW][8];
#pragma unroll
      for (int r = 0; r < RPW; ++r) to_float8(w[u][r], wf[r], T());
#pragma unroll
      for (int b = 0; b < NB; ++b) {
        if (b >= nb) continue;
        const uint4 xv = __ldg(reinterpret_cast<const uint4*>(X + int64_t(b) * ldx) + c);
        float xf[8];
        to_float8(xv, xf, T());
#pragma unroll
        for (int r = 0; r < RPW; ++r)
#pragma unroll
          for (int i = 0; i < 8; ++i) acc[r][b] = fmaf(wf[r][i], xf[i], acc[r][b]);
      }
    }
  }
  if (chunks == 0 || !active) pdl_wait();
  pdl_trigger();  // late: the next kernel launches during this one's tail, not earlier
  if (!active) {
  } else if constexpr (SILU) {
#pragma unroll
    for (int b = 0; b < NB; ++b) {
      if (b >= nb) continue;
      const float g = warp_sum(acc[0][b]), u = warp_sum(acc[1][b]);
      if (lane == (b & 31)) H[int64_t(b) * ldh + row0] = from_float<T>(g / (1.0f + expf(-g)) * u);
    }
  } else {
#pragma unroll
    for (int r = 0; r < RPW; ++r)
#pragma unroll
      for (int b = 0; b < NB; ++b) {
        if (b >= nb) continue;
        const float v = warp_sum(acc[r][b]);
        if (lane == ((r * NB + b) & 31) && valid[r]) {
          float* dst = Y + int64_t(b) * ldy + rows[r];
          *dst = accumulate ? *dst + v : v;
        }
      }
  }
  if constexpr (!SILU) {
    if (norm.counter) norm_epilogue<T>(norm, Y, ldy, d_out, nb);
  }
}

template <typename T, int NB, int RPW, int U>
void launch_gemv(const void* W, int d_out, int d_in, const void* x, int ldx, int nb, float* y,
                 int ldy, bool acc, cudaStream_t s) {
  const int rows_per_block = kWarps * RPW;
  const int blocks = (d_out + rows_per_block - 1) / rows_per_block;
  launch_k("gemv", gemv_kernel<T, NB, RPW, U, false>, dim3(blocks), dim3(kThreads), 0, s,
           static_cast<const T*>(W), d_out, d_in, static_cast<const T*>(x), ldx, nb, y, ldy,
           int(acc), 0, static_cast<T*>(nullptr), 0, g_norm);
}

template <typename T, int NB>
void launch_gemv_silu(const void* W, int dff, int d_in, const void* x, int ldx, int nb, void* h,
                      int ldh, cudaStream_t s) {
  const int blocks = (dff + kWarps - 1) / kWarps;
  launch_k("gemv_silu", gemv_kernel<T, NB, 2, 2, true>, dim3(blocks), dim3(kThreads), 0, s,
           static_cast<const T*>(W), 2 * dff, d_in, static_cast<const T*>(x), ldx, nb,
           static_cast<float*>(nullptr), 0, 0, dff, static_cast<T*>(h), ldh, NormEpilogue{});
}

template <typename T>
void gemv_t(const void* W, int d_out, int d_in, const void* x, int ldx, int nb, float* y, int ldy,
            bool acc, cudaStream_t s) {
  if (nb == 1) {
    switch (g_float_variant) {
      case 1: return launch_gemv<T, 1, 1, 4>(W, d_out, d_in, x, ldx, nb, y, ldy, acc, s);
      case 3: return launch_gemv<T, 1, 2, 4>(W, d_out, d_in, x, ldx, nb, y, ldy, acc, s);
      case 4: return launch_gemv<T, 1, 4, 2>(W, d_out, d_in, x, ldx, nb, y, ldy, acc, s);
      default: return launch_gemv<T, 1, 2, 2>(W, d_out, d_in, x, ldx, nb, y, ldy, acc, s);
    }
  }
  if (nb == 2) return launch_gemv<T, 2, 2, 2>(W, d_out, d_in, x, ldx, nb, y, ldy, acc, s);
  if (nb <= 4) return launch_gemv<T, 4, 2, 2>(W, d_out, d_in, x, ldx, nb, y, ldy, acc, s);
  if (nb <= 8) return launch_gemv<T, 8, 2, 1>(W, d_out, d_in, x, ldx, nb, y, ldy, acc, s);
  return launch_gemv<T, 16, 1, 2>(W, d_out, d_in, x, ldx, nb, y, ldy, acc, s);
}

// ---- packed GEMV -----------------------------------------------------------------------------

__device__ __forceinline__ __half2 as_half2(uint32_t v) {
  __half2 h;
  memcpy(&h, &v, 4);
  return h;
}

template <int BITS>
struct QT {
  static constexpr int CPL = (BITS == 8 || BITS == 4) ? 32 : 64;  // codes per lane step
  static constexpr int SUB = CPL / 32;                           // 32-code sub-steps
  static constexpr int LO_VEC = BITS == 8 ? 2 : 1;               // 16-byte lo vectors per step
  static constexpr int LO_STEP_BYTES = 16 * LO_VEC;
  static constexpr bool HI = BITS == 3;
};

// Raw words of one lane step of one row.
template <int BITS>
struct Raw {
  uint4 lo[QT<BITS>::LO_VEC];
  uint2 hi;
};

template <int BITS>
__device__ __forceinline__ void load_raw(Raw<BITS>& r, const uint8_t* __restrict__ lo_row,
                                         const uint8_t* __restrict__ hi_row, int c, bool ok) {
  if (!ok) {
#pragma unroll
    for (int v = 0; v < QT<BITS>::LO_VEC; ++v) r.lo[v] = make_uint4(0, 0, 0, 0);
    r.hi = make_uint2(0, 0);
    return;
  }
  const uint4* p = reinterpret_cast<const uint4*>(lo_row + int64_t(c) * QT<BITS>::LO_STEP_BYTES);
#pragma unroll
  for (int v = 0; v < QT<BITS>::LO_VEC; ++v) r.lo[v] = ld_stream(p + v);
  if constexpr (QT<BITS>::HI) r.hi = ld_stream2(reinterpret_cast<const uint2*>(hi_row) + c);
}

// The 16 pairs of dequantized weights (code - zero) * scale of sub-step sb as fp16x2: the
// difference is exact in fp16, the product rounded once (the same fp16 weight as the float path's
// fp16(deq)). hz = 1024 + zero, sc = scale, both in both halves.
template <int BITS>
__device__ __forceinline__ void unpack_sub(const Raw<BITS>& r, int sb, __half2 hz, __half2 sc,
                                           __half2 d[16]) {
  const uint32_t* w = reinterpret_cast<const uint32_t*>(r.lo);
  if constexpr (BITS == 8) {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      d[2 * i] = __hmul2(__hsub2(as_half2(__byte_perm(w[i], 0x64646464u, 0x4140)), hz), sc);
      d[2 * i + 1] = __hmul2(__hsub2(as_half2(__byte_perm(w[i], 0x64646464u, 0x4342)), hz), sc);
    }
  } else if constexpr (BITS == 4) {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int s = 0; s < 4; ++s)
        d[4 * i + s] = __hmul2(__hsub2(as_half2(((w[i] >> (4 * s)) & 0x000F000Fu) | 0x64006400u), hz), sc);
  } else if constexpr (BITS == 2) {
#pragma unroll
    for (int jj = 0; jj < 2; ++jj)
#pragma unroll
      for (int s = 0; s < 8; ++s)
        d[8 * jj + s] =
            __hmul2(__hsub2(as_half2(((w[2 * sb + jj] >> (2 * s)) & 0x00030003u) | 0x64006400u), hz), sc);
  } else {  // 3-bit
    const uint32_t h = sb == 0 ? r.hi.x : r.hi.y;
#pragma unroll
    for (int jj = 0; jj < 2; ++jj)
#pragma unroll
      for (int s = 0; s < 8; ++s) {
        const int p = 8 * jj + s;
        const uint32_t lo = (w[2 * sb + jj] >> (2 * s)) & 0x00030003u;
        const uint32_t hb = (p >= 2 ? (h >> (p - 2)) : (h << (2 - p))) & 0x00040004u;
        d[8 * jj + s] = __hmul2(__hsub2(as_half2(lo | hb | 0x64006400u), hz), sc);
      }
  }
}

// sum over the 32 codes of w * x, w and x as 16 fp16 pairs; fp16x2 partials of 8 codes (their
// magnitude is that of 4 products of weights and activations: no overflow risk), then fp32.
__device__ __forceinline__ float dot32(const __half2 d[16], const __half2 x[16]) {
  float s = 0.f;
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    __half2 a = __hmul2(d[4 * q], x[4 * q]);
    a = __hfma2(d[4 * q + 1], x[4 * q + 1], a);
    a = __hfma2(d[4 * q + 2], x[4 * q + 2], a);
    a = __hfma2(d[4 * q + 3], x[4 * q + 3], a);
    const float2 f = __half22float2(a);
    s += f.x + f.y;
  }
  return s;
}

template <int BITS, int NB, int RPW, int U>
__global__ void __launch_bounds__(kThreads) qgemv_kernel(PackedView w, const __half* __restrict__ X,
                                                         int ldx, int nb, float* __restrict__ Y,
                                                         int ldy, int accumulate) {
  using Q = QT<BITS>;
  const int lane = threadIdx.x & 31;
  const int row0 = (blockIdx.x * kWarps + (threadIdx.x >> 5)) * RPW;
  if (row0 >= w.d_out) return;
  const int steps = w.d_in / Q::CPL;
  const int n_groups = w.d_in / w.group;
  const __half c1024 = __float2half(1024.f);
  float acc[RPW][NB];
#pragma unroll
  for (int r = 0; r < RPW; ++r)
#pragma unroll
    for (int b = 0; b < NB; ++b) acc[r][b] = 0.f;

  for (int base = 0; base < steps; base += 32 * U) {
    Raw<BITS> raw[U][RPW];
    uint32_t szr[U][RPW][Q::SUB];  // (scale, zero) loaded with the codes: no dependent miss later
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = base + u * 32 + lane;
#pragma unroll
      for (int r = 0; r < RPW; ++r) {
        const int row = row0 + r;
        const bool ok = c < steps && row < w.d_out;
        load_raw<BITS>(raw[u][r], w.lo + int64_t(row) * w.lo_row_bytes,
                       Q::HI ? w.hi + int64_t(row) * w.hi_row_bytes : nullptr, c, ok);
#pragma unroll
        for (int sb = 0; sb < Q::SUB; ++sb)
          szr[u][r][sb] = ok ? __ldg(w.sz + int64_t(row) * n_groups + (c * Q::CPL + sb * 32) / w.group)
                             : 0u;
      }
    }
    if (base == 0) pdl_wait();
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = base + u * 32 + lane;
      if (c >= steps) continue;
#pragma unroll
      for (int sb = 0; sb < Q::SUB; ++sb) {
        const int k0 = c * Q::CPL + sb * 32;
        __half2 d[RPW][16];
#pragma unroll
        for (int r = 0; r < RPW; ++r) {
          const __half2 szv = as_half2(szr[u][r][sb]);
          const __half2 hz = __half2half2(__hadd(__high2half(szv), c1024));
          unpack_sub<BITS>(raw[u][r], sb, hz, __half2half2(__low2half(szv)), d[r]);
        }
#pragma unroll
        for (int b = 0; b < NB; ++b) {
          if (b >= nb) continue;
          const uint4* xp = reinterpret_cast<const uint4*>(X + int64_t(b) * ldx + k0);
          uint4 xv[4];
#pragma unroll
          for (int v = 0; v < 4; ++v) xv[v] = __ldg(xp + v);
          const __half2* xh = reinterpret_cast<const __half2*>(xv);
#pragma unroll
          for (int r = 0; r < RPW; ++r) acc[r][b] += dot32(d[r], xh);
        }
      }
    }
  }
  if (steps == 0) pdl_wait();
  pdl_trigger();
  reduce_store<RPW, NB>(acc, lane, row0, w.d_out, nb, Y, ldy, accumulate);
}

template <int BITS, int NB, int RPW, int U>
void launch_qgemv(const PackedView& w, const void* x, int ldx, int nb, float* y, int ldy, bool acc,
                  cudaStream_t s) {
  const int rows_per_block = kWarps * RPW;
  const int blocks = (w.d_out + rows_per_block - 1) / rows_per_block;
  launch_k("qgemv", qgemv_kernel<BITS, NB, RPW, U>, dim3(blocks), dim3(kThreads), 0, s, w,
           static_cast<const __half*>(x), ldx, nb, y, ldy, int(acc));
}

template <int BITS>
void qgemv_bits(const PackedView& w, const void* x, int ldx, int nb, float* y, int ldy, bool acc,
                cudaStream_t s) {
  if (nb == 1) {
    switch (g_packed_variant) {
      case 1: return launch_qgemv<BITS, 1, 1, 2>(w, x, ldx, nb, y, ldy, acc, s);
      case 3: return launch_qgemv<BITS, 1, 4, 1>(w, x, ldx, nb, y, ldy, acc, s);
      case 4: return launch_qgemv<BITS, 1, 2, 4>(w, x, ldx, nb, y, ldy, acc, s);
      default: return launch_qgemv<BITS, 1, 2, 2>(w, x, ldx, nb, y, ldy, acc, s);
    }
  }
  if (nb == 2) return launch_qgemv<BITS, 2, 2, 2>(w, x, ldx, nb, y, ldy, acc, s);
  if (nb <= 4) return launch_qgemv<BITS, 4, 2, 1>(w, x, ldx, nb, y, ldy, acc, s);
  if (nb <= 8) return launch_qgemv<BITS, 8, 1, 2>(w, x, ldx, nb, y, ldy, acc, s);
  return launch_qgemv<BITS, 16, 1, 1>(w, x, ldx, nb, y, ldy, acc, s);
}

// ---- packed GEMV on tensor cores (4- and 8-bit) ---------------------------------------------
//
// mma.sync.m16n8k16 (fp16 in, fp32 accumulate) with A = 16 weight rows, B = up to 8 input rows
// (two MMAs for 9..16). A block of 8 warps owns 16 output rows (or 8 gate + 8 up rows with the
// SiLU epilogue) and splits K between its warps. The k order inside an MMA is free as long as A
// and B agree: lane (gid, tig) supplies, for each 128-column superchunk q and each of its 8 MMAs
// j, the columns k = 128q + 32*tig + 4j + {0,1 | 2,3}; so a lane's weights of one superchunk are
// the 32 consecutive codes of its row, one 16-byte vector (4-bit; two for 8-bit) in the layout of
// pack.h, and its activations are 64 consecutive bytes. Dequantization per code pair: one
// LOP3 (the 0x6400 trick) and one HSUB2 / HFMA2 (Marlin's 16*c variant avoids the shifts),
// giving the exact integer code - zero; the scale is applied in fp32 after each group's MMAs when
// groups are multiples of 128 (FOLD), else folded into the fp16 weight before the MMA.

constexpr int kMmaWarps = 8;

__device__ __forceinline__ uint32_t h2u(__half2 h) {
  uint32_t u;
  memcpy(&u, &h, 4);
  return u;
}

__device__ __forceinline__ void mma16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint32_t b0, uint32_t b1) {
  asm(  // (not volatile: a pure function of its operands, free to be scheduled)
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// 16 pairs (code - zero) of a lane's 32 consecutive codes (pair p = codes 2p, 2p+1), times the
// scale unless FOLD.
template <int BITS, bool FOLD>
__device__ __forceinline__ void unpack32(const uint4 (&q)[BITS / 4], __half2 szv,
                                         __half2 (&out)[16]) {
  const __half zh = __high2half(szv);
  const __half2 sc = __half2half2(__low2half(szv));
  if constexpr (BITS == 4) {
    const __half2 hz = __half2half2(__hadd(zh, __float2half(1024.f)));
    const __half2 nz = __half2half2(__hneg(__hadd(zh, __float2half(64.f))));
    const __half2 r16 = __float2half2_rn(0.0625f);
    const uint32_t* w = reinterpret_cast<const uint32_t*>(&q[0]);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      uint32_t v = w[i];
      out[4 * i + 0] = __hsub2(as_half2((v & 0x000F000Fu) | 0x64006400u), hz);
      out[4 * i + 1] = __hfma2(as_half2((v & 0x00F000F0u) | 0x64006400u), r16, nz);
      v >>= 8;
      out[4 * i + 2] = __hsub2(as_half2((v & 0x000F000Fu) | 0x64006400u), hz);
      out[4 * i + 3] = __hfma2(as_half2((v & 0x00F000F0u) | 0x64006400u), r16, nz);
    }
  } else {
    const __half2 hz = __half2half2(__hadd(zh, __float2half(1024.f)));
    const uint32_t* w = reinterpret_cast<const uint32_t*>(&q[0]);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      out[2 * i] = __hsub2(as_half2(__byte_perm(w[i], 0x64646464u, 0x4140)), hz);
      out[2 * i + 1] = __hsub2(as_half2(__byte_perm(w[i], 0x64646464u, 0x4342)), hz);
    }
  }
  if constexpr (!FOLD) {
#pragma unroll
    for (int p = 0; p < 16; ++p) out[p] = __hmul2(out[p], sc);
  }
}

template <int BITS, bool NB16, bool FOLD, bool SILU>
__global__ void __launch_bounds__(kMmaWarps * 32)
    qmma_kernel(PackedView w, const __half* __restrict__ X, int ldx, int nb,
                float* __restrict__ Y, int ldy, int accumulate, int pair,
                __half* __restrict__ H, int ldh, NormEpilogue norm) {
  constexpr int VEC = BITS / 4;  // 16-byte vectors per lane per superchunk
  constexpr int U = 2;           // superchunks per pipeline stage (two stages in flight)
  constexpr int NACC = NB16 ? 8 : 4;
  __shared__ float red[kMmaWarps][NACC][32];
  const int kw = blockDim.x >> 5;  // warps splitting K
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int gid = lane >> 2, tig = lane & 3;
  const int n0 = blockIdx.x * (SILU ? 8 : 16);
  // A rows of this lane: gid and gid + 8 (SILU: gate row and its up row)
  const int ra = n0 + gid;
  const int rb = SILU ? pair + n0 + gid : n0 + gid + 8;
  const int ra_c = min(ra, w.d_out - 1), rb_c = min(rb, w.d_out - 1);
  const int n_sc = w.d_in >> 7;
  const int per = (n_sc + kw - 1) / kw;
  const int s_begin = min(n_sc, warp * per), s_end = min(n_sc, s_begin + per);
  const uint4* pa =
      reinterpret_cast<const uint4*>(w.lo + int64_t(ra_c) * w.lo_row_bytes) + tig * VEC;
  const uint4* pb =
      reinterpret_cast<const uint4*>(w.lo + int64_t(rb_c) * w.lo_row_bytes) + tig * VEC;
  const int n_groups = w.d_in / w.group;
  const uint32_t* sza_p = w.sz + int64_t(ra_c) * n_groups;
  const uint32_t* szb_p = w.sz + int64_t(rb_c) * n_groups;
  const uint4 z4 = make_uint4(0, 0, 0, 0);
  float acc[NACC];
#pragma unroll
  for (int i = 0; i < NACC; ++i) acc[i] = 0.f;
  // Two register stages of U superchunks: codes and their (scale, zero) pairs.
  uint4 qa[2][U][VEC], qb[2][U][VEC];
  uint32_t sa[2][U], sb[2][U];
  auto load = [&](int st, int base) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int sc = base + u;
      const bool ok = sc < s_end;
#pragma unroll
      for (int v = 0; v < VEC; ++v) {
        qa[st][u][v] = ok ? ld_stream(pa + sc * 4 * VEC + v) : z4;
        qb[st][u][v] = ok ? ld_stream(pb + sc * 4 * VEC + v) : z4;
      }
      const int g = ok ? (sc * 128 + tig * 32) / w.group : 0;
      sa[st][u] = ok ? __ldg(sza_p + g) : 0u;
      sb[st][u] = ok ? __ldg(szb_p + g) : 0u;
    }
  };
  auto compute = [&](int st, int base) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int sc = base + u;
      if (sc >= s_end) break;
      const int k0 = sc * 128 + tig * 32;
      uint4 x0[4], x1[4];
#pragma unroll
      for (int v = 0; v < 4; ++v) {
        x0[v] = gid < nb ? __ldg(reinterpret_cast<const uint4*>(X + int64_t(gid) * ldx + k0) + v)
                         : z4;
        if constexpr (NB16)
          x1[v] = gid + 8 < nb
                      ? __ldg(reinterpret_cast<const uint4*>(X + int64_t(gid + 8) * ldx + k0) + v)
                      : z4;
      }
      const __half2 sza = as_half2(sa[st][u]), szb = as_half2(sb[st][u]);
      __half2 A[16], B[16];
      unpack32<BITS, FOLD>(qa[st][u], sza, A);
      unpack32<BITS, FOLD>(qb[st][u], szb, B);
      const uint32_t* xb0 = reinterpret_cast<const uint32_t*>(x0);
      const uint32_t* xb1 = reinterpret_cast<const uint32_t*>(x1);
      float f[4] = {0.f, 0.f, 0.f, 0.f}, f1[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        mma16816(f, h2u(A[2 * j]), h2u(B[2 * j]), h2u(A[2 * j + 1]), h2u(B[2 * j + 1]),
                 xb0[2 * j], xb0[2 * j + 1]);
        if constexpr (NB16)
          mma16816(f1, h2u(A[2 * j]), h2u(B[2 * j]), h2u(A[2 * j + 1]), h2u(B[2 * j + 1]),
                   xb1[2 * j], xb1[2 * j + 1]);
      }
      const float s_a = FOLD ? __low2float(sza) : 1.f, s_b = FOLD ? __low2float(szb) : 1.f;
      acc[0] = fmaf(s_a, f[0], acc[0]);
      acc[1] = fmaf(s_a, f[1], acc[1]);
      acc[2] = fmaf(s_b, f[2], acc[2]);
      acc[3] = fmaf(s_b, f[3], acc[3]);
      if constexpr (NB16) {
        acc[4] = fmaf(s_a, f1[0], acc[4]);
        acc[5] = fmaf(s_a, f1[1], acc[5]);
        acc[6] = fmaf(s_b, f1[2], acc[6]);
        acc[7] = fmaf(s_b, f1[3], acc[7]);
      }
    }
  };
  load(0, s_begin);
  pdl_wait();  // weights are constant; x and y come from earlier kernels
  // stages alternate with compile-time indices (a run-time index would put them in local memory)
  for (int base = s_begin; base < s_end; base += 2 * U) {
    if (base + U < s_end) load(1, base + U);  // next stage in flight during this one
    compute(0, base);
    if (base + U >= s_end) break;
    if (base + 2 * U < s_end) load(0, base + 2 * U);
    compute(1, base + U);
  }
  pdl_trigger();
#pragma unroll
  for (int i = 0; i < NACC; ++i) red[warp][i][lane] = acc[i];
  __syncthreads();
  if (warp == 0) {
#pragma unroll
  for (int i = 0; i < NACC; ++i) {
    float v = 0.f;
    for (int k = 0; k < kw; ++k) v += red[k][i][lane];
    acc[i] = v;
  }
  // C fragment: acc[0], acc[1] = (row ra, inputs 2tig, 2tig+1); acc[2], acc[3] = row rb;
  // acc[4..7] the same for inputs 8 + 2tig, 8 + 2tig + 1.
#pragma unroll
  for (int h = 0; h < (NB16 ? 2 : 1); ++h)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int b = 8 * h + 2 * tig + e;
      if (b >= nb) continue;
      const float va = acc[4 * h + e], vb = acc[4 * h + 2 + e];
      if constexpr (SILU) {
        if (ra < pair) H[int64_t(b) * ldh + ra] = __float2half_rn(va / (1.0f + expf(-va)) * vb);
      } else {
        if (ra < w.d_out) {
          float* d = Y + int64_t(b) * ldy + ra;
          *d = accumulate ? *d + va : va;
        }
        if (rb < w.d_out) {
          float* d = Y + int64_t(b) * ldy + rb;
          *d = accumulate ? *d + vb : vb;
        }
      }
    }
  }
  if constexpr (!SILU) {
    if (norm.counter) norm_epilogue<__half>(norm, Y, ldy, w.d_out, nb);
  }
}

int g_sm_count = 132;

template <int BITS, bool NB16, bool FOLD, bool SILU>
void launch_qmma(const PackedView& w, const void* x, int ldx, int nb, float* y, int ldy, bool acc,
                 int pair, void* h, int ldh, cudaStream_t s) {
  const int rows = SILU ? pair : w.d_out;
  const int blocks = (rows + (SILU ? 7 : 15)) / (SILU ? 8 : 16);
  // K split over 8 warps (measured faster than fewer, longer warps for 7B shapes)
  const int n_sc = w.d_in / 128;
  const int kw = std::max(1, std::min(kMmaWarps, n_sc));
  launch_k("qmma", qmma_kernel<BITS, NB16, FOLD, SILU>, dim3(blocks), dim3(kw * 32), 0, s, w,
           static_cast<const __half*>(x), ldx, nb, y, ldy, int(acc), pair,
           static_cast<__half*>(h), ldh, SILU ? NormEpilogue{} : g_norm);
}

template <int BITS, bool SILU>
void qmma_dispatch(const PackedView& w, const void* x, int ldx, int nb, float* y, int ldy,
                   bool acc, int pair, void* h, int ldh, cudaStream_t s) {
  const bool fold = w.group % 128 == 0;
  if (nb <= 8) {
    if (fold) return launch_qmma<BITS, false, true, SILU>(w, x, ldx, nb, y, ldy, acc, pair, h, ldh, s);
    return launch_qmma<BITS, false, false, SILU>(w, x, ldx, nb, y, ldy, acc, pair, h, ldh, s);
  }
  if (fold) return launch_qmma<BITS, true, true, SILU>(w, x, ldx, nb, y, ldy, acc, pair, h, ldh, s);
  launch_qmma<BITS, true, false, SILU>(w, x, ldx, nb, y, ldy, acc, pair, h, ldh, s);
}

bool qmma_eligible(const PackedView& w) {
  return (w.bits == 4 || w.bits == 8) && w.d_in % 128 == 0 && g_packed_variant == 0;
}

// ---- packed GEMV, batch 1: streaming kernel with the input row in shared memory ---------------
//
// For nb == 1 every bit width. A block of 8 warps first issues its first weight loads, then (after
// the PDL wait) copies x (d_in fp16) into shared memory once; the grid is sized to the resident
// capacity (persistent blocks), and each warp walks over units of RPW consecutive rows (SiLU: gate
// row j and up row j + pair) with a stride of all warps of the grid, so that every warp gets the
// same number of units (±1). Inside a row each lane reads 16-byte vectors (U per row in flight,
// consecutive lanes consecutive vectors: 512 contiguous bytes per warp and row), and the next
// (unit, K-slice) position is loaded before the current one is computed (two register stages).
// x is read from shared memory with a XOR swizzle of its 16-byte pieces, so the 64-byte chunks of
// 8 consecutive lanes fall into distinct banks (no conflicts for 4- and 8-bit, and 2/3-bit where a
// lane step covers two chunks). Dequantization as in the SIMT kernel (exact code - zero in fp16,
// times the scale, 8-code fp16x2 partial sums, then fp32); 4-bit uses the Marlin-style pair
// extraction (one LOP3 per pair, the odd nibbles scaled by 1/16 in the HFMA2).

constexpr int kS1Threads = 256;
constexpr int kS1Warps = kS1Threads / 32;
constexpr int kS1MaxDin = 23552;  // x (46 KB) + the static shared memory within 48 KB

// 16-byte unit of piece v (0..3) of the 32-half chunk q of x in shared memory.
__device__ __forceinline__ int xs_unit(int q, int v) {
  return 8 * (q >> 1) + ((4 * (q & 1) + v) ^ ((q >> 1) & 7));
}

// The 16 pairs (code - zero) * scale of one 16-byte vector of 4-bit codes (as unpack_sub<4>).
__device__ __forceinline__ void unpack4_fast(const uint4& q, __half2 hz, __half2 nz, __half2 sc,
                                             __half2 d[16]) {
  const __half2 r16 = __float2half2_rn(0.0625f);
  const uint32_t* w = reinterpret_cast<const uint32_t*>(&q);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    uint32_t v = w[i];
    d[4 * i + 0] = __hmul2(__hsub2(as_half2((v & 0x000F000Fu) | 0x64006400u), hz), sc);
    d[4 * i + 1] = __hmul2(__hfma2(as_half2((v & 0x00F000F0u) | 0x64006400u), r16, nz), sc);
    v >>= 8;
    d[4 * i + 2] = __hmul2(__hsub2(as_half2((v & 0x000F000Fu) | 0x64006400u), hz), sc);
    d[4 * i + 3] = __hmul2(__hfma2(as_half2((v & 0x00F000F0u) | 0x64006400u), r16, nz), sc);
  }
}

template <int BITS, int RPW, int U, int MINB, bool SILU>
__global__ void __launch_bounds__(kS1Threads, MINB)
    qgemv1_kernel(PackedView w, const __half* __restrict__ X, float* __restrict__ Y,
                  int accumulate, int pair, __half* __restrict__ H, int gshift,
                  NormEpilogue norm, NormIn nin) {
  static_assert(!SILU || RPW == 2, "SILU pairs two rows");
  using Q = QT<BITS>;
  extern __shared__ uint4 xs[];
  __shared__ float red[32];
  const int lane = threadIdx.x & 31;
  const int gw = blockIdx.x * kS1Warps + (threadIdx.x >> 5);
  const int nw = gridDim.x * kS1Warps;
  const int units = SILU ? pair : (w.d_out + RPW - 1) / RPW;
  const int steps = w.d_in / Q::CPL;
  const int nbase = (steps + 32 * U - 1) / (32 * U);
  const int my_units = gw < units ? (units - gw + nw - 1) / nw : 0;
  const int total = my_units * nbase;
  const int n_groups = w.d_in / w.group;
  const __half c1024 = __float2half(1024.f), c64 = __float2half(64.f);

  Raw<BITS> raw[2][U][RPW];
  uint32_t szr[2][U][RPW][Q::SUB];
  float acc[RPW];
#pragma unroll
  for (int r = 0; r < RPW; ++r) acc[r] = 0.f;

  auto row_of = [&](int unit, int r) { return SILU ? unit + r * pair : unit * RPW + r; };
  auto load = [&](int st, int p) {
    const int ui = nbase == 1 ? p : p / nbase;
    const int unit = gw + ui * nw;
    const int base = (p - ui * nbase) * 32 * U;
#pragma unroll
    for (int r = 0; r < RPW; ++r) {
      const int row = row_of(unit, r);
      const bool rok = row < w.d_out;
      const uint8_t* lo_row = w.lo + int64_t(rok ? row : 0) * w.lo_row_bytes;
      const uint8_t* hi_row = Q::HI ? w.hi + int64_t(rok ? row : 0) * w.hi_row_bytes : nullptr;
      const uint32_t* szp = w.sz + int64_t(rok ? row : 0) * n_groups;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int c = base + u * 32 + lane;
        const bool ok = rok && c < steps;
        load_raw<BITS>(raw[st][u][r], lo_row, hi_row, c, ok);
#pragma unroll
        for (int sb = 0; sb < Q::SUB; ++sb) {
          const int k = c * Q::CPL + sb * 32;
          const int g = gshift >= 0 ? k >> gshift : k / w.group;
          szr[st][u][r][sb] = ok ? __ldg(szp + g) : 0u;
        }
      }
    }
  };
  auto compute = [&](int st, int p) {
    const int ui = nbase == 1 ? p : p / nbase;
    const int bi = p - ui * nbase;
    const int base = bi * 32 * U;
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = base + u * 32 + lane;
      if (c >= steps) continue;
#pragma unroll
      for (int sb = 0; sb < Q::SUB; ++sb) {
        const int q = c * Q::SUB + sb;
        uint4 xv[4];
#pragma unroll
        for (int v = 0; v < 4; ++v) xv[v] = xs[xs_unit(q, v)];
        const __half2* xh = reinterpret_cast<const __half2*>(xv);
#pragma unroll
        for (int r = 0; r < RPW; ++r) {
          const __half2 szv = as_half2(szr[st][u][r][sb]);
          const __half zh = __high2half(szv);
          const __half2 hz = __half2half2(__hadd(zh, c1024));
          const __half2 sc = __half2half2(__low2half(szv));
          __half2 d[16];
          if constexpr (BITS == 4) {
            const __half2 nz = __half2half2(__hneg(__hadd(zh, c64)));
            unpack4_fast(raw[st][u][r].lo[0], hz, nz, sc, d);
          } else {
            unpack_sub<BITS>(raw[st][u][r], sb, hz, sc, d);
          }
          acc[r] += dot32(d, xh);
        }
      }
    }
    if (bi == nbase - 1) {  // the unit's rows are complete
      const int unit = gw + ui * nw;
      if constexpr (SILU) {
        const float g = warp_sum(acc[0]), up = warp_sum(acc[1]);
        if (lane == 0) H[unit] = __float2half_rn(g / (1.0f + expf(-g)) * up);
      } else {
#pragma unroll
        for (int r = 0; r < RPW; ++r) {
          const float v = warp_sum(acc[r]);
          const int row = row_of(unit, r);
          if (lane == r && row < w.d_out) Y[row] = accumulate ? Y[row] + v : v;
        }
      }
#pragma unroll
      for (int r = 0; r < RPW; ++r) acc[r] = 0.f;
    }
  };

  if (total > 0) load(0, 0);
  pdl_wait();  // weights are constant; x and y come from earlier kernels
  const int n16 = w.d_in >> 3;
  if (nin.gamma) {  // x = fp16(gamma * r * rsqrt(mean(r²) + eps)) of the fp32 residual r
    const float4* r4 = reinterpret_cast<const float4*>(nin.x);
    const float4* g4 = reinterpret_cast<const float4*>(nin.gamma);
    float ss = 0.f;
    for (int i = threadIdx.x; i < n16; i += kS1Threads) {
      const float4 a = r4[2 * i], b = r4[2 * i + 1];
      ss += a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w + b.x * b.x + b.y * b.y + b.z * b.z +
            b.w * b.w;
    }
    const float inv = rsqrtf(block_sum(ss, red) / float(w.d_in) + nin.eps);
    for (int i = threadIdx.x; i < n16; i += kS1Threads) {
      const float4 a = r4[2 * i], b = r4[2 * i + 1], ga = __ldg(g4 + 2 * i), gb = __ldg(g4 + 2 * i + 1);
      uint4 o;
      __half2* oh = reinterpret_cast<__half2*>(&o);
      oh[0] = __floats2half2_rn(ga.x * (a.x * inv), ga.y * (a.y * inv));
      oh[1] = __floats2half2_rn(ga.z * (a.z * inv), ga.w * (a.w * inv));
      oh[2] = __floats2half2_rn(gb.x * (b.x * inv), gb.y * (b.y * inv));
      oh[3] = __floats2half2_rn(gb.z * (b.z * inv), gb.w * (b.w * inv));
      xs[xs_unit(i >> 2, i & 3)] = o;
    }
  } else {
    const uint4* xg = reinterpret_cast<const uint4*>(X);
    for (int i = threadIdx.x; i < n16; i += kS1Threads) xs[xs_unit(i >> 2, i & 3)] = __ldg(xg + i);
  }
  __syncthreads();
  // stages alternate with compile-time indices (a run-time index would put them in local memory)
  for (int p = 0; p < total; p += 2) {
    if (p + 1 < total) load(1, p + 1);  // next position in flight during this one
    compute(0, p);
    if (p + 1 >= total) break;
    if (p + 2 < total) load(0, p + 2);
    compute(1, p + 1);
  }
  pdl_trigger();
  if constexpr (!SILU) {
    if (norm.counter) norm_epilogue<__half>(norm, Y, w.d_out, w.d_out, 1);
  }
}

// Blocks of a persistent grid over `units` warp units: one per kThreads/32 units, at most what is
// resident at once with `smem` bytes of shared memory. `cache` ({smem, blocks per multiprocessor},
// one per launch site) spares the occupancy query on every launch.
template <typename Kernel>
int persistent_blocks(Kernel kern, int threads, size_t smem, int units, int (&cache)[2]) {
  if (cache[0] != int(smem)) {
    int occ = 0;
    HCI_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kern, threads, smem));
    cache[1] = std::max(1, occ);
    cache[0] = int(smem);
  }
  const int warps = threads / 32, want = (units + warps - 1) / warps;
  return std::max(1, std::min(want, g_sm_count * cache[1]));
}

// log2(v) for a power of two v, else -1.
int exact_log2(int v) {
  if (v <= 0 || (v & (v - 1)) != 0) return -1;
  int k = 0;
  while ((1 << k) < v) ++k;
  return k;
}

template <int BITS, int RPW, int U, int MINB, bool SILU>
void launch_qgemv1(const PackedView& w, const void* x, float* y, bool acc, int pair, void* h,
                   const NormEpilogue& norm, cudaStream_t s) {
  const NormIn nin = g_norm_in;
  auto kern = qgemv1_kernel<BITS, RPW, U, MINB, SILU>;
  const size_t smem = size_t(w.d_in) * 2;
  const int units = SILU ? pair : (w.d_out + RPW - 1) / RPW;
  static int occ_cache[2] = {-1, 1};
  const int blocks = persistent_blocks(kern, kS1Threads, smem, units, occ_cache);
  const int gshift = exact_log2(w.group);
  launch_k("qgemv1", kern, dim3(blocks), dim3(kS1Threads), smem, s, w,
           static_cast<const __half*>(x), y, int(acc), pair, static_cast<__half*>(h), gshift,
           norm, nin);
}

// (rows per warp, unroll, resident blocks asked of the register allocator): config 0 (2,2,1),
// 1 (2,4,1), 2 (2,1,4), 3 (1,2,4), 4 (2,2,3)
constexpr int kS1Configs = 5;
template <int BITS, bool SILU>
void qgemv1_bits(int config, const PackedView& w, const void* x, float* y, bool acc, int pair,
                 void* h, const NormEpilogue& norm, cudaStream_t s) {
  switch (config) {  // SiLU pairs two rows: configuration 3 is 2 there
    case 1: return launch_qgemv1<BITS, 2, 4, 1, SILU>(w, x, y, acc, pair, h, norm, s);
    case 2: return launch_qgemv1<BITS, 2, 1, 4, SILU>(w, x, y, acc, pair, h, norm, s);
    case 3:
      if constexpr (SILU) return launch_qgemv1<BITS, 2, 1, 4, SILU>(w, x, y, acc, pair, h, norm, s);
      else return launch_qgemv1<BITS, 1, 2, 4, SILU>(w, x, y, acc, pair, h, norm, s);
    case 4: return launch_qgemv1<BITS, 2, 2, 3, SILU>(w, x, y, acc, pair, h, norm, s);
    default: return launch_qgemv1<BITS, 2, 2, 1, SILU>(w, x, y, acc, pair, h, norm, s);
  }
}

// Which kernel runs nb == 1 packed GEMVs: 0 = tensor-core (4/8-bit; others SIMT), 1 = SIMT,
// 2 = streaming (above; falls back to 0 where not eligible), 3 = the lean 4-bit kernel where it
// applies (qgemv4_eligible), else as 2; 4 = the lean kernel with its dot products on the tensor
// cores (qgemv4_mma.cuh; d_in a multiple of 128, else as 3), 5 = that for rows longer than one
// step (d_in > 4096) and 3 otherwise. -1 = the library default (3). H100, W4 g128 batch 1, same
// call, modes 5 / 3 / 4: Llama-2-7B 550.1 / 545.9 / 528.7 tok/s, Llama-3-8B 464.2 / 466.5 /
// 461.4, Llama-2-13B 278.5 / 281.0 / 278.6: 5 helps 7B's down only, so 3 stays the default.
// Default: the lean 4-bit kernel where it applies, else streaming, configuration 0 for 8-bit and
// 3 for 2/3-bit; measured on an H200 (Llama-2-7B, batch-1 CUDA-graph decode,
// results/throughput-h200/packed-nb1.md): streaming W4 345 vs 341 tok/s with the tensor-core
// kernel, W8 312 vs 307, W3 313 vs 286, W2 360 vs 299; the lean W4 kernel: see qgemv4_kernel.
constexpr int kDefaultNb1Kernel = 3;
int default_s1_config(int bits) { return bits == 2 || bits == 3 ? 3 : 0; }
int g_nb1_kernel = -1;
int g_s1_config = -1;  // streaming kernel configuration (-1: default)

bool qgemv4_eligible(const PackedView& w);
template <bool SILU>
void launch_qgemv4(const PackedView& w, const void* x, float* y, bool acc, int pair, void* h,
                   const NormEpilogue& norm, bool mma, cudaStream_t s);

template <bool SILU>
void qgemv1_dispatch(int config, const PackedView& w, const void* x, float* y, bool acc, int pair,
                     void* h, const NormEpilogue& norm, cudaStream_t s) {
  const int mode = g_nb1_kernel >= 0 ? g_nb1_kernel : kDefaultNb1Kernel;
  if (mode >= 3 && g_packed_variant == 0 && qgemv4_eligible(w))
    return launch_qgemv4<SILU>(w, x, y, acc, pair, h, norm,
                               mode == 4 || (mode == 5 && w.d_in > 4096), s);
  switch (w.bits) {
    case 2: return qgemv1_bits<2, SILU>(config, w, x, y, acc, pair, h, norm, s);
    case 3: return qgemv1_bits<3, SILU>(config, w, x, y, acc, pair, h, norm, s);
    case 4: return qgemv1_bits<4, SILU>(config, w, x, y, acc, pair, h, norm, s);
    case 8: return qgemv1_bits<8, SILU>(config, w, x, y, acc, pair, h, norm, s);
    default: fail(HCI_ERR_INTERNAL, "qgemv: bits must be 2, 3, 4 or 8");
  }
}

bool qgemv1_eligible(const PackedView& w) { return w.d_in <= kS1MaxDin && w.d_in % 64 == 0; }

// ---- packed GEMV, batch 1, 4-bit codes in power-of-two groups: the lean kernel ----------------
//
// The streaming kernel above spends ~170 instructions per 16-byte vector of 32 codes (measured
// with Nsight Compute on an H100: 8.5 M warp instructions for the 12288 x 4096 q/k/v matrix, at
// 46% issue utilization and 42% of DRAM bandwidth), so W4 decode ran into the issue rate, not
// memory: at the H200's 4.3 TB/s a multiprocessor must finish one warp-wide vector (512 bytes)
// every ~31 cycles, i.e. within ~125 warp instructions at full issue (~62 on the integer pipe).
// This kernel needs ~77 per vector in its main loop (read off its SASS):
//   - the scale leaves the inner loop: each 32-code vector's dot product of exact (code - zero)
//     values in fp16x2 (two partials of 8 products per half) is scaled once, in fp32;
//   - so that these unscaled partials cannot overflow fp16, x is staged in shared memory as
//     x' = x * 2^-e per 32-element chunk (e from the chunk's largest |x|, so |x'| < 1 and a
//     partial stays below 8 * 15); 2^e joins the weight scale (power-of-two scaling is exact);
//   - a nibble pair becomes an fp16 pair with one LOP3 ((v & mask) | magic: `lop_or_magic`);
//     written as C, ptxas emits an AND and an OR, because LOP3 takes only one immediate;
//   - x is staged piece-major (xs[v * chunks + c], v the 16-byte piece of chunk c), so a warp's
//     shared loads are contiguous (no bank conflicts, no swizzle) and their addresses are a base
//     register plus an immediate;
//   - every warp walks whole rows (RPW of them, U vectors per lane in flight each) with a fixed
//     stride; a row's code pointer advances by 32 U vectors per step, so the loads take
//     immediate offsets; the (scale, zero) pairs of a step come in one coalesced load per row
//     (lane L: group kb / group + L; 32 groups of >= 128 codes cover the step's 32 U vectors) and
//     reach the lanes that need them by shuffle;
//   - with the RMSNorm in the prologue (NormIn) the norm's scale is applied to the row sums, not
//     to x: x' is built from gamma * x directly and the sum of squares is reduced in the same
//     pass, so the only wait after the PDL wait is one read of the residual.
// One block of 16 warps per multiprocessor (x staged 132 times rather than 264: 582 -> 590
// tok/s), gamma loaded before the PDL wait.
// The kernel triggers its dependents (PDL) at its start: the next kernel is then launched while
// this one runs and its blocks take each multiprocessor as this one's block leaves it, with their
// weight loads issued before their wait; the kernel timeline (HCINFER_KERNEL_STAMPS) shows each
// successor's wait released 0.5-0.9 us after this kernel's last block. Triggered after the main
// loop instead: 572 against 602 tok/s (H200, same call; ~0.7 us per GEMV). With the fp16 input's
// loads all issued before their first use (down: 3 rounds of 512 pieces): 585 -> 605 tok/s.
// Also tried then (same-call A/B, results/decode-profile/README.md): L2
// prefetch hints for the next product's rows or a warp's next units (slower), the gated product's
// last round split over the row (slower), the input row by one bulk copy (TMA; its staging took
// longer) and the codes through per-warp shared-memory rings filled by bulk copies (loops up to
// 4.0 TB/s while the ring was filled before the input was staged, but the reads queued ahead of
// the PDL release and the input: 470-517 tok/s against 605).
// Measured (H200, Llama-2-7B W4 g128 batch-1 graph decode): 446 -> 590 tok/s with the attention
// changes of the same commits. Tried and dropped: feeding each warp from a cp.async ring of 2-3
// stages in shared memory (523 tok/s: more instructions) and double-buffering stages in
// registers (567: no spills, no gain). Stall sampling (ncu source page) puts ~30% of a q/k/v
// GEMV's samples on the first use of the residual after the PDL wait and ~10% on the first use
// of the weights; the rest is issue (~2 of 4 instructions per cycle per multiprocessor at ~80
// instructions per 16-byte vector). Tensor-core versions (mma.sync, x as the A operand, one
// LOP3 per B register) were correct but slower: at best 426 against 587 tok/s
// (results/decode-profile/attempts/).
// Shapes: W [d_out, d_in] 4-bit codes (pack.h layout), sz [d_out, d_in/group] (scale, zero) fp16;
// x [d_in] fp16 (or the NormIn residual); y [d_out] fp32 (SILU: h [pair] fp16).
constexpr int kQ4Threads = 512;  // one block per multiprocessor: x is staged 132 times, not 264
constexpr int kQ4Warps = kQ4Threads / 32;
constexpr int kQ4MaxDin = 20480;  // x (40 KB) + chunk scales within the 48 KB of shared memory

bool qgemv4_eligible(const PackedView& w) {
  return w.bits == 4 && w.group >= 128 && w.group <= 4096 && (w.group & (w.group - 1)) == 0 &&
         w.d_in % 64 == 0 && w.d_in <= kQ4MaxDin;
}

// (v & MASK) | magic in one LOP3; `magic` must be a register (0x64006400: the fp16 pair 1024).
template <uint32_t MASK>
__device__ __forceinline__ uint32_t lop_or_magic(uint32_t v, uint32_t magic) {
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(v), "n"(MASK), "r"(magic));
  return r;
}

// The lean kernels' prologue after the PDL wait (every thread of the block): the input row x as
// fp16 pieces of 8 columns, each handed to store(i, o) (piece i, o = 0 past the row's end; every
// thread calls it the same number of times, so it may shuffle); with NormIn, x is gamma *
// residual (rounded to fp16, as the separate norm kernel would round its output), the residual's
// sum of squares is reduced on the way and the norm's scale rsqrt(mean(residual²) + eps) is
// returned (else 1). ga0/gb0: this thread's first 8 gamma values, loaded before the wait. Every
// block stages all of x, so this runs on every multiprocessor.
template <typename Store>
__device__ __forceinline__ float q4_stage_pieces(const PackedView& w, const __half* __restrict__ X,
                                                 const NormIn& nin, float4 ga0, float4 gb0,
                                                 float* red, Store&& store) {
  const int n16 = w.d_in >> 3;
  float ss = 0.f;
  // fp16 input (no NormIn): every piece's load issued before the first is used (d_in 11008 takes
  // 3 rounds: one L2 round trip instead of three)
  constexpr int kStageRounds = (kQ4MaxDin / 8 + kQ4Threads - 1) / kQ4Threads;
  uint4 xraw[kStageRounds];
  if (!nin.gamma) {
#pragma unroll
    for (int it = 0; it < kStageRounds; ++it) {
      const int i = it * kQ4Threads + int(threadIdx.x);
      xraw[it] = i < n16 ? __ldg(reinterpret_cast<const uint4*>(X) + i) : make_uint4(0, 0, 0, 0);
    }
  }
#pragma unroll
  for (int it = 0; it < kStageRounds; ++it) {  // uniform trip count (store may shuffle)
    const int i0 = it * kQ4Threads;
    if (i0 >= n16) break;
    const int i = i0 + threadIdx.x;
    uint4 o = make_uint4(0, 0, 0, 0);
    if (i < n16) {
      if (nin.gamma) {
        const float4* r4 = reinterpret_cast<const float4*>(nin.x) + 2 * i;
        const float4* g4 = reinterpret_cast<const float4*>(nin.gamma) + 2 * i;
        const float4 a = r4[0], b = r4[1];
        const float4 ga = i0 == 0 ? ga0 : __ldg(g4), gb = i0 == 0 ? gb0 : __ldg(g4 + 1);
        ss += a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w + b.x * b.x + b.y * b.y + b.z * b.z +
              b.w * b.w;
        __half2* oh = reinterpret_cast<__half2*>(&o);
        oh[0] = __floats2half2_rn(ga.x * a.x, ga.y * a.y);
        oh[1] = __floats2half2_rn(ga.z * a.z, ga.w * a.w);
        oh[2] = __floats2half2_rn(gb.x * b.x, gb.y * b.y);
        oh[3] = __floats2half2_rn(gb.z * b.z, gb.w * b.w);
      } else {
        o = xraw[it];
      }
    }
    store(i, o);
  }
  if (nin.gamma) {
    ss = warp_sum(ss);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = ss;
  }
  __syncthreads();  // the staged x and the warps' sums of squares
  float inv = 1.f;  // the norm's scale, applied to the row sums
  if (nin.gamma) {
    ss = 0.f;
#pragma unroll
    for (int k = 0; k < kQ4Warps; ++k) ss += red[k];
    inv = rsqrtf(ss / float(w.d_in) + nin.eps);
  }
  return inv;
}

// The SIMT kernel's staging: x' = x * 2^-e per 32-element chunk (4 consecutive threads per chunk;
// exponents by bit operations, scaling by exact powers of two) into xs (piece-major) and 2^e
// into xsc; returns the NormIn scale (q4_stage_pieces).
__device__ __forceinline__ float q4_stage(const PackedView& w, const __half* __restrict__ X,
                                          const NormIn& nin, float4 ga0, float4 gb0, uint4* xs,
                                          float* xsc, float* red) {
  const int steps = w.d_in >> 5;
  const int n16 = w.d_in >> 3;
  return q4_stage_pieces(w, X, nin, ga0, gb0, red, [&](int i, const uint4& o) {
    const __half2* h = reinterpret_cast<const __half2*>(&o);
    float v[8];
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      const float2 f = __half22float2(h[t]);
      v[2 * t] = f.x;
      v[2 * t + 1] = f.y;
    }
    float m = 0.f;
#pragma unroll
    for (int t = 0; t < 8; ++t) m = fmaxf(m, fabsf(v[t]));
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
    // m = f * 2^e with f in [0.5, 1) (frexp's e; subnormal m gives -126, still |x| * 2^-e < 1);
    // |x| <= 65504 keeps e <= 17, so both 2^-e and 2^e are normal floats
    const int e = m > 0.f ? ((__float_as_int(m) >> 23) & 0xFF) - 126 : 0;
    if (i < n16) {
      const float down = __int_as_float((127 - e) << 23);
      uint4 s;
      __half2* sh = reinterpret_cast<__half2*>(&s);
#pragma unroll
      for (int t = 0; t < 4; ++t) sh[t] = __floats2half2_rn(v[2 * t] * down, v[2 * t + 1] * down);
      xs[(i & 3) * steps + (i >> 2)] = s;
      if ((i & 3) == 0) xsc[i >> 2] = __int_as_float((127 + e) << 23);
    }
  });
}

#include "qgemv4_mma.cuh"  // (uses q4_stage's constants and lop_or_magic)

// KSPLIT (rows longer than one step of 32 U vectors per lane, e.g. Llama-2-7B's down: 344
// vectors = 3 steps): without it a warp's unit is its whole row pair, the steps' loads wait for
// the previous step's arithmetic (the registers hold one step) and down has one unit per warp, so
// nothing overlaps them (the H100 timeline: its loop at 2.16 TB/s against 2.86-3.0 for the
// products of one step). With it, block b owns the contiguous units [u0, u1) and its warps take
// the tasks (unit, step) in turn, the next task's loads issued during this one's sums, as the
// one-step products do; each task's warp sum goes to shared memory and, after one barrier, the
// steps of a row are added in step order (deterministic) and stored (SILU: gated). H100, W4 7B
// batch 1, same call: 526.3 -> 532.7 tok/s (down's loop 2.08 -> 2.53 TB/s; q/k/v after it gives
// back about half: down's blocks now end together and q/k/v's early loads delay its release).
//
// MMA: the same loads, loop and schedule, with the dot products on the tensor cores
// (mma.m16n8k16, fp32 accumulation; the "diagonal" scheme): lane L = (g, t) (g = L / 4, t = L % 4)
// holds 16-byte vector L of a step block of each of the warp's two rows, i.e. lanes 4g..4g+3
// together hold "segment" g, 128 consecutive columns (one group of 128 codes). Per code word i
// of the vectors, A = (segment g of row 0 as A row g, of row 1 as A row g + 8), each register one
// LOP3 of a word (1024 + q, or 1024 + 16 q: lo and hi MMAs, see qgemv4_mma.cuh), and B column n =
// x of segment n (lane (n, t) supplies its own columns). Only C[g][g] (row 0) and C[g + 8][g]
// (row 1) are used: segment g's dot products, each in lane (g, g / 2) (c0/c2 for even g, c1/c3
// for odd g). The offsets 1024 S + z S come off per segment in fp32 with its group's scale, from
// x staged plainly by mma_stage. Per 16-byte vector ~48 instructions instead of ~77 (SASS), and x
// needs no per-chunk exponent. Each vector's registers take the next unit's loads as soon as its
// codes are unpacked, before its MMAs (in a separate tile kernel of results/decode-profile/attempts
// that took 521.6 -> 531 tok/s). Modes 4 and 5 of the batch-1 dispatch (qgemv1_dispatch).
template <int RPW, int U, bool SILU, bool KSPLIT, bool MMA>
__global__ void __launch_bounds__(kQ4Threads, 1)
    qgemv4_kernel(PackedView w, const __half* __restrict__ X, float* __restrict__ Y,
                  int accumulate, int pair, __half* __restrict__ H, int gshift5,
                  NormEpilogue norm, NormIn nin, uint32_t magic, int early, int tag) {
  static_assert(!SILU || RPW == 2, "SILU pairs two rows");
  static_assert(!MMA || RPW == 2, "the MMA scheme takes two rows per warp");
  // dynamic shared memory: [4][d_in / 32] pieces of x' (piece-major), [d_in / 32] 2^e;
  // KSPLIT: then the tasks' sums [u1 - u0][steps of a row][RPW]
  extern __shared__ uint4 xs[];
  __shared__ float red[kQ4Warps];
  __shared__ int kslot;
  kstamp_begin(&kslot, SILU ? kKindQgemv4Silu : kKindQgemv4, tag, w.d_out, w.d_in);
  if (early) pdl_trigger();
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int gw = blockIdx.x * kQ4Warps + warp;
  const int nw = gridDim.x * kQ4Warps;
  const int units = SILU ? pair : (w.d_out + RPW - 1) / RPW;
  const int steps = w.d_in >> 5;  // 16-byte vectors (32 codes) per row = chunks of x
  const int n_groups = w.d_in / w.group;
  float* xsc = reinterpret_cast<float*>(xs + 4 * steps);

  uint4 q[U][RPW];
  uint32_t szw[RPW];          // lane L: the pair of group (kb >> gshift5) + L of each row
  const uint4* qrow[RPW];     // this unit's rows: the lane's code vector of the next step
  const uint32_t* srow[RPW];  // and the rows' (scale, zero) pairs
  auto row_of = [&](int unit, int r) { return SILU ? unit + r * pair : unit * RPW + r; };
  auto rows = [&](int unit, int kb) {  // point at vector kb of the unit's rows
#pragma unroll
    for (int r = 0; r < RPW; ++r) {
      const int row = min(row_of(unit, r), w.d_out - 1);  // a clamped row is computed, not stored
      qrow[r] = reinterpret_cast<const uint4*>(w.lo + int64_t(row) * w.lo_row_bytes) + kb + lane;
      srow[r] = w.sz + int64_t(row) * n_groups;
    }
  };
  auto load = [&](int kb) {
    const int gi = (kb >> gshift5) + lane;
#pragma unroll
    for (int r = 0; r < RPW; ++r) {
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (kb + u * 32 + lane < steps) q[u][r] = __ldcs(qrow[r] + u * 32);  // (else unused)
      qrow[r] += 32 * U;
      szw[r] = gi < n_groups ? __ldg(srow[r] + gi) : 0u;
    }
  };
  // KSPLIT: this block's units and tasks (task t: unit u0 + t / nsteps, step t % nsteps)
  constexpr int kStep = 32 * U;
  const int nsteps = (steps + kStep - 1) / kStep;
  const int u0 = KSPLIT ? int(int64_t(units) * blockIdx.x / gridDim.x) : 0;
  const int u1 = KSPLIT ? int(int64_t(units) * (blockIdx.x + 1) / gridDim.x) : 0;
  const int tasks = (u1 - u0) * nsteps;
  float* part = xsc + steps;

  if constexpr (KSPLIT) {
    if (warp < tasks) {
      rows(u0 + warp / nsteps, (warp % nsteps) * kStep);
      load((warp % nsteps) * kStep);
    }
  } else if (gw < units) {
    rows(gw, 0);
    load(0);
  }
  // gamma is a weight too: this thread's first 8 values before the wait
  float4 ga0 = make_float4(0.f, 0.f, 0.f, 0.f), gb0 = ga0;
  if (nin.gamma && int(threadIdx.x) < (w.d_in >> 3)) {
    const float4* g4 = reinterpret_cast<const float4*>(nin.gamma) + 2 * threadIdx.x;
    ga0 = __ldg(g4);
    gb0 = __ldg(g4 + 1);
  }
  pdl_wait();  // weights are constant; x and y come from earlier kernels
  kstamp_at(&kslot, 1);
  // (MMA: the chunk sums of 128 columns as float2 where the exponents were: d_in / 16 bytes of
  // the d_in / 8)
  float2* ks = reinterpret_cast<float2*>(xsc);
  const float inv = MMA ? mma_stage(w, X, nin, ga0, gb0, xs, ks, red)
                        : q4_stage(w, X, nin, ga0, gb0, xs, xsc, red);
  kstamp_at(&kslot, 2);
  const __half2 r16 = __float2half2_rn(0.0625f);
  const uint4* xl = xs + lane;
  const float* xscl = xsc + lane;
  const int g8 = lane >> 2;                     // MMA: the lane's segment
  const bool diag = (lane & 3) == (g8 >> 1);    // MMA: holds C[g][g] (and C[g + 8][g])
  const bool odd = (g8 & 1) != 0;               // ... in c1 / c3 rather than c0 / c2
  const int nchunks = w.d_in >> 7;
  // MMA: acc[r] += segment g8's dot products of step kb (lane (g8, g8 / 2) only); after unpacking
  // vector u the lane calls reload(u) (the next unit's vector u into q[u]; its szw after the
  // shuffles: reload(-1))
  auto step_mma = [&](int kb, float (&acc)[RPW], auto&& reload) {
    uint32_t sz[U][RPW];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int r = 0; r < RPW; ++r)
        sz[u][r] = __shfl_sync(0xffffffffu, szw[r], (u * 32 + 4 * g8) >> gshift5);
    reload(-1);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (kb + u * 32 >= steps) {  // (uniform)
        reload(u);
        continue;
      }
#ifdef HCI_Q4_NOMATH  // timing experiment only: the loads without the arithmetic
      acc[0] += float((q[u][0].x ^ q[u][1].w ^ sz[u][0] ^ sz[u][1]) & 7u);
      reload(u);
      continue;
#endif
      uint32_t alo[4][4], ahi[4][4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const uint32_t va = reinterpret_cast<const uint32_t*>(&q[u][0])[i];
        const uint32_t vb = reinterpret_cast<const uint32_t*>(&q[u][1])[i];
        const uint32_t va8 = va >> 8, vb8 = vb >> 8;
        alo[i][0] = lop_or_magic<0x000F000Fu>(va, magic);
        alo[i][1] = lop_or_magic<0x000F000Fu>(vb, magic);
        alo[i][2] = lop_or_magic<0x000F000Fu>(va8, magic);
        alo[i][3] = lop_or_magic<0x000F000Fu>(vb8, magic);
        ahi[i][0] = lop_or_magic<0x00F000F0u>(va, magic);
        ahi[i][1] = lop_or_magic<0x00F000F0u>(vb, magic);
        ahi[i][2] = lop_or_magic<0x00F000F0u>(va8, magic);
        ahi[i][3] = lop_or_magic<0x00F000F0u>(vb8, magic);
      }
      reload(u);
      // (lanes past the row's end read the last vector's x: their segments are not used)
      const uint4* xp = xs + min(kb + u * 32 + lane, steps - 1);
      float clo[4], chi[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const uint4 xv = xp[i * steps];  // x of columns 8i..8i+7 as pairs (01, 45, 23, 67)
        if (i == 0) {
          mma16816_zero(clo, alo[i][0], alo[i][1], alo[i][2], alo[i][3], xv.x, xv.y);
          mma16816_zero(chi, ahi[i][0], ahi[i][1], ahi[i][2], ahi[i][3], xv.z, xv.w);
        } else {
          mma16816(clo, alo[i][0], alo[i][1], alo[i][2], alo[i][3], xv.x, xv.y);
          mma16816(chi, ahi[i][0], ahi[i][1], ahi[i][2], ahi[i][3], xv.z, xv.w);
        }
      }
      const int chunk = min(((kb + u * 32) >> 2) + g8, nchunks - 1);
      const float2 k = ks[chunk];  // (1024 S_lo + 64 S_hi, S_lo + S_hi)
      const float2 za = __half22float2(as_half2(sz[u][0]));  // (scale, zero)
      const float2 zb = __half22float2(as_half2(sz[u][1]));
      const float la = odd ? clo[1] : clo[0], ha = odd ? chi[1] : chi[0];
      const float lb = odd ? clo[3] : clo[2], hb = odd ? chi[3] : chi[2];
      const float da = fmaf(-za.y, k.y, fmaf(ha, 0.0625f, la) - k.x);
      const float db = fmaf(-zb.y, k.y, fmaf(hb, 0.0625f, lb) - k.x);
      if (kb + u * 32 + 4 * g8 < steps) {  // the segment is inside the row
        acc[0] = fmaf(za.x, da, acc[0]);
        acc[1] = fmaf(zb.x, db, acc[1]);
      }
    }
  };
  // MMA: the lanes that hold no diagonal entry add nothing to the warp sums
  auto diag_only = [&](float (&acc)[RPW]) {
    if constexpr (MMA) {
#pragma unroll
      for (int r = 0; r < RPW; ++r) acc[r] = diag ? acc[r] : 0.f;
    }
  };
  // the next task's loads into the registers the current step has unpacked (MMA); qrow/srow
  // already point at it, kbn is its step
  auto reload_at = [&](int kbn) {
    return [&, kbn](int u) {
      if (u < 0) {
        const int gi = (kbn >> gshift5) + lane;
#pragma unroll
        for (int r = 0; r < RPW; ++r) szw[r] = gi < n_groups ? __ldg(srow[r] + gi) : 0u;
        return;
      }
#pragma unroll
      for (int r = 0; r < RPW; ++r)
        if (kbn + u * 32 + lane < steps) q[u][r] = __ldcs(qrow[r] + u * 32);
    };
  };
  auto no_reload = [](int) {};
  auto advance = [&]() {  // as load() leaves the row pointers
#pragma unroll
    for (int r = 0; r < RPW; ++r) qrow[r] += 32 * U;
  };
  // acc[r] += the lane's part of step kb of the unit's rows (its codes and pairs already loaded)
  auto step = [&](int kb, float (&acc)[RPW]) {
#ifdef HCI_Q4_NOMATH  // timing experiment only: the loads without the arithmetic (wrong results)
    {
#pragma unroll
      for (int r = 0; r < RPW; ++r) {
        uint32_t m = szw[r];
#pragma unroll
        for (int u = 0; u < U; ++u) m ^= q[u][r].x ^ q[u][r].y ^ q[u][r].z ^ q[u][r].w;
        acc[r] += float(m & 7u);
      }
      return;
    }
#endif
    uint32_t sz[U][RPW];  // the pairs of the lane's vectors (all lanes take part in the shuffles)
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int r = 0; r < RPW; ++r)
        sz[u][r] = __shfl_sync(0xffffffffu, szw[r], (u * 32 + lane) >> gshift5);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (kb + u * 32 + lane >= steps) continue;
      uint4 xv[4];
#pragma unroll
      for (int v = 0; v < 4; ++v) xv[v] = xl[v * steps + kb + u * 32];
      const __half2* xh = reinterpret_cast<const __half2*>(xv);
      const float xe = xscl[kb + u * 32];
#pragma unroll
      for (int r = 0; r < RPW; ++r) {
        const __half2 szv = as_half2(sz[u][r]);
        const __half zh = __high2half(szv);
        const __half2 hz = __half2half2(__hadd(zh, __float2half(1024.f)));
        const __half2 nz = __half2half2(__hneg(__hadd(zh, __float2half(64.f))));
        const uint32_t* wq = reinterpret_cast<const uint32_t*>(&q[u][r]);
        __half2 p0 = __float2half2_rn(0.f), p1 = p0;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const uint32_t v = wq[i], v8 = v >> 8;
          // (code - zero) exactly, as in unpack4_fast, without the scale
          const __half2 d0 = __hsub2(as_half2(lop_or_magic<0x000F000Fu>(v, magic)), hz);
          const __half2 d1 = __hfma2(as_half2(lop_or_magic<0x00F000F0u>(v, magic)), r16, nz);
          const __half2 d2 = __hsub2(as_half2(lop_or_magic<0x000F000Fu>(v8, magic)), hz);
          const __half2 d3 = __hfma2(as_half2(lop_or_magic<0x00F000F0u>(v8, magic)), r16, nz);
          __half2& p = i < 2 ? p0 : p1;
          p = __hfma2(d0, xh[4 * i + 0], p);
          p = __hfma2(d1, xh[4 * i + 1], p);
          p = __hfma2(d2, xh[4 * i + 2], p);
          p = __hfma2(d3, xh[4 * i + 3], p);
        }
        const float2 f = __half22float2(__hadd2(p0, p1));  // |each| < 16 * 15
        acc[r] = fmaf(f.x + f.y, __low2float(szv) * xe, acc[r]);
      }
    }
  };
  // The MMA steps reload each vector's registers as soon as it is unpacked; the SIMT steps issue
  // the next unit's loads after all their sums: reloading them per vector too measured (H100, same
  // call) Llama-2-7B 544.4-545.5 against 544.7-545.5 tok/s, Llama-3-8B 464.9-465.5 against
  // 466.6-466.8, Llama-2-13B 270.4-270.6 against 280.7-281.2, 7B on 16 SMs 124.7 against 140.1.
  constexpr bool kRoll = MMA;
  auto run_step = [&](int kb, float (&acc)[RPW], auto&& reload) {
    if constexpr (MMA) {
      step_mma(kb, acc, reload);
    } else {
      step(kb, acc);  // (kRoll is false: reload is no_reload)
    }
  };
  if constexpr (KSPLIT) {
    for (int t = warp; t < tasks; t += kQ4Warps) {
      float acc[RPW];
#pragma unroll
      for (int r = 0; r < RPW; ++r) acc[r] = 0.f;
      const int tn = t + kQ4Warps;
      if (kRoll && tn < tasks) {  // the next task's loads as this one's vectors are used
        rows(u0 + tn / nsteps, (tn % nsteps) * kStep);
        run_step((t % nsteps) * kStep, acc, reload_at((tn % nsteps) * kStep));
        advance();
      } else {
        run_step((t % nsteps) * kStep, acc, no_reload);
        if (tn < tasks) {  // the next task's loads during the sums
          rows(u0 + tn / nsteps, (tn % nsteps) * kStep);
          load((tn % nsteps) * kStep);
        }
      }
      diag_only(acc);
#pragma unroll
      for (int r = 0; r < RPW; ++r) {
        const float v = warp_sum(acc[r]);
        if (lane == 0) part[t * RPW + r] = v;
      }
    }
    __syncthreads();  // every task's sum
    const int outs = (u1 - u0) * (SILU ? 1 : RPW);
    for (int i = threadIdx.x; i < outs; i += kQ4Threads) {
      const int lu = SILU ? i : i / RPW, r = SILU ? 0 : i % RPW;
      const float* pt = part + lu * nsteps * RPW;
      float s0 = 0.f, s1 = 0.f;
      for (int k = 0; k < nsteps; ++k) {
        s0 += pt[k * RPW + r];
        if constexpr (SILU) s1 += pt[k * RPW + 1];
      }
      if constexpr (SILU) {
        const float g = s0 * inv, up = s1 * inv;
        H[u0 + lu] = __float2half_rn(g / (1.0f + expf(-g)) * up);
      } else {
        const int row = row_of(u0 + lu, r);
        const float v = s0 * inv;
        if (row < w.d_out) Y[row] = accumulate ? Y[row] + v : v;
      }
    }
  } else {
    for (int unit = gw; unit < units; unit += nw) {
      float acc[RPW];
#pragma unroll
      for (int r = 0; r < RPW; ++r) acc[r] = 0.f;
      bool rolled = false;
      for (int kb = 0; kb < steps; kb += kStep) {
        if (kb > 0) load(kb);
        if (kRoll && kb + kStep >= steps && unit + nw < units) {  // last step: roll into the next
          rows(unit + nw, 0);
          run_step(kb, acc, reload_at(0));
          advance();
          rolled = true;
        } else {
          run_step(kb, acc, no_reload);
        }
      }
      diag_only(acc);
      if (!rolled && unit + nw < units) {  // the next unit's first loads during the sums
        rows(unit + nw, 0);
        load(0);
      }
      if constexpr (SILU) {
        const float g = warp_sum(acc[0]) * inv, up = warp_sum(acc[1]) * inv;
        if (lane == 0) H[unit] = __float2half_rn(g / (1.0f + expf(-g)) * up);
      } else {
#pragma unroll
        for (int r = 0; r < RPW; ++r) {
          const float v = warp_sum(acc[r]) * inv;
          const int row = row_of(unit, r);
          if (lane == r && row < w.d_out) Y[row] = accumulate ? Y[row] + v : v;
        }
      }
    }
  }
  if (kstamps_on()) {  // (uniform) the block's last warp done
    __syncthreads();
    kstamp_at(&kslot, 3);
  }
  if (!early) pdl_trigger();
  if constexpr (!SILU) {
    if (norm.counter) norm_epilogue<__half>(norm, Y, w.d_out, w.d_out, 1);
  }
  kstamp_at(&kslot, 4);
}

template <bool SILU, bool MMA>
void launch_qgemv4_as(const PackedView& w, const void* x, float* y, bool acc, int pair, void* h,
                      const NormEpilogue& norm, cudaStream_t s) {
  constexpr int RPW = 2, U = 4;
  const size_t smem = size_t(w.d_in) * 2 + size_t(w.d_in / 32) * 4;
  const int units = SILU ? pair : (w.d_out + RPW - 1) / RPW;
  const int gshift5 = exact_log2(w.group) - 5;  // (qgemv4_eligible: a power of two, 128..4096)
  const int nsteps = (w.d_in / 32 + 32 * U - 1) / (32 * U);
  if (g_q4_ksplit && nsteps > 1) {
    auto kern = qgemv4_kernel<RPW, U, SILU, true, MMA>;
    static int occ_cache[2] = {-1, 1};
    const int blocks = persistent_blocks(kern, kQ4Threads, smem, units * nsteps, occ_cache);
    const int per_block = (units + blocks - 1) / blocks;  // (u1 - u0 <= this)
    const size_t smem_split = smem + size_t(per_block) * nsteps * RPW * 4;
    if (smem_split <= 48 * 1024) {
      launch_k("qgemv4", kern, dim3(blocks), dim3(kQ4Threads), smem_split, s, w,
               static_cast<const __half*>(x), y, int(acc), pair, static_cast<__half*>(h),
               gshift5, norm, g_norm_in, 0x64006400u, g_q4_early, next_stamp_tag());
      return;
    }
  }
  auto kern = qgemv4_kernel<RPW, U, SILU, false, MMA>;
  static int occ_cache[2] = {-1, 1};
  const int blocks = persistent_blocks(kern, kQ4Threads, smem, units, occ_cache);
  launch_k("qgemv4", kern, dim3(blocks), dim3(kQ4Threads), smem, s, w,
           static_cast<const __half*>(x), y, int(acc), pair, static_cast<__half*>(h), gshift5,
           norm, g_norm_in, 0x64006400u, g_q4_early, next_stamp_tag());
}

// The MMA scheme needs whole segments of 128 columns.
bool qgemv4_mma_eligible(const PackedView& w) { return qgemv4_eligible(w) && w.d_in % 128 == 0; }

template <bool SILU>
void launch_qgemv4(const PackedView& w, const void* x, float* y, bool acc, int pair, void* h,
                   const NormEpilogue& norm, bool mma, cudaStream_t s) {
  if (mma && qgemv4_mma_eligible(w))
    return launch_qgemv4_as<SILU, true>(w, x, y, acc, pair, h, norm, s);
  launch_qgemv4_as<SILU, false>(w, x, y, acc, pair, h, norm, s);
}

// The kernel of a packed GEMV of nb rows: 0 tensor-core, 1 SIMT, 2 streaming.
int packed_kernel(const PackedView& w, int nb) {
  const int mode = g_nb1_kernel >= 0 ? g_nb1_kernel : kDefaultNb1Kernel;
  if (nb == 1 && qgemv1_eligible(w) &&
      (g_packed_variant >= 6 || (g_packed_variant == 0 && mode >= 2)))
    return 2;
  if (qmma_eligible(w) && !(nb == 1 && mode == 1)) return 0;
  return 1;
}

int s1_config(int bits) {
  if (g_packed_variant >= 6) return std::min(g_packed_variant - 6, kS1Configs - 1);
  return g_s1_config >= 0 ? g_s1_config : default_s1_config(bits);
}

// ---- dequantizer -----------------------------------------------------------------------------

template <int BITS>
__global__ void dequant_kernel(PackedView w, int row0, int rows, __half* __restrict__ out) {
  using Q = QT<BITS>;
  pdl_trigger();
  pdl_wait();
  const int steps = w.d_in / Q::CPL;
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= int64_t(rows) * steps) return;
  const int rr = int(idx / steps), c = int(idx % steps);
  const int row = row0 + rr;
  const int n_groups = w.d_in / w.group;
  Raw<BITS> raw;
  load_raw<BITS>(raw, w.lo + int64_t(row) * w.lo_row_bytes,
                 Q::HI ? w.hi + int64_t(row) * w.hi_row_bytes : nullptr, c, true);
  const __half c1024 = __float2half(1024.f);
#pragma unroll
  for (int sb = 0; sb < Q::SUB; ++sb) {
    const int k0 = c * Q::CPL + sb * 32;
    const __half2 szv = as_half2(w.sz[int64_t(row) * n_groups + k0 / w.group]);
    const __half2 hz = __half2half2(__hadd(__high2half(szv), c1024));
    const __half2 sc = __half2half2(__low2half(szv));
    uint4 o[4];
    __half2* oh = reinterpret_cast<__half2*>(o);
    unpack_sub<BITS>(raw, sb, hz, sc, oh);
    uint4* dst = reinterpret_cast<uint4*>(out + int64_t(rr) * w.d_in + k0);
#pragma unroll
    for (int v = 0; v < 4; ++v) dst[v] = o[v];
  }
}

}  // namespace

void set_qgemv_simt_nb1(bool on) { g_nb1_kernel = on ? 1 : -1; }
void set_qgemv_nb1_kernel(int kernel, int config) {
  g_nb1_kernel = kernel >= 0 && kernel <= 5 ? kernel : -1;
  g_s1_config = config >= 0 && config < kS1Configs ? config : -1;
}
void set_sm_count(int n) { g_sm_count = n > 0 ? n : 132; }

void set_gemv_variants(int float_variant, int packed_variant) {
  g_float_variant = float_variant;
  g_packed_variant = packed_variant;
}

void gemv(DType t, const void* W, int d_out, int d_in, const void* x, int ldx, int nb, float* y,
          int ldy, bool accumulate, cudaStream_t s, const NormEpilogue* norm) {
  g_norm = norm ? *norm : NormEpilogue{};
  struct Reset {
    ~Reset() { g_norm = NormEpilogue{}; }
  } reset;
  if (nb < 1 || nb > 16) fail(HCI_ERR_INTERNAL, "gemv: nb must be 1..16");
  if (d_in % 8 || ldx % 8) fail(HCI_ERR_INTERNAL, "gemv: d_in and ldx must be multiples of 8");
  if (t == DType::F16)
    gemv_t<__half>(W, d_out, d_in, x, ldx, nb, y, ldy, accumulate, s);
  else if (t == DType::BF16)
    gemv_t<__nv_bfloat16>(W, d_out, d_in, x, ldx, nb, y, ldy, accumulate, s);
  else
    fail(HCI_ERR_INTERNAL, "gemv: weights must be fp16 or bf16");
  HCI_LAUNCH_CHECK("gemv");
}

void qgemv(const PackedView& w, const void* x, int ldx, int nb, float* y, int ldy,
           bool accumulate, cudaStream_t s, const NormEpilogue* norm, const NormIn* norm_in) {
  if (nb < 1 || nb > 16) fail(HCI_ERR_INTERNAL, "qgemv: nb must be 1..16");
  const int kernel = packed_kernel(w, nb);
  if (norm && kernel == 1)
    fail(HCI_ERR_INTERNAL, "qgemv: the norm epilogue needs the tensor-core or streaming kernel");
  if (norm_in && norm_in->gamma && kernel != 2)
    fail(HCI_ERR_INTERNAL, "qgemv: the prologue norm needs the batch-1 streaming kernel");
  g_norm = norm ? *norm : NormEpilogue{};
  g_norm_in = norm_in ? *norm_in : NormIn{};
  struct Reset {
    ~Reset() {
      g_norm = NormEpilogue{};
      g_norm_in = NormIn{};
    }
  } reset;
  if (kernel == 2) {
    qgemv1_dispatch<false>(s1_config(w.bits), w, x, y, accumulate, 0, nullptr, g_norm, s);
    HCI_LAUNCH_CHECK("qgemv");
    return;
  }
  if (kernel == 0) {
    if (w.bits == 4)
      qmma_dispatch<4, false>(w, x, ldx, nb, y, ldy, accumulate, 0, nullptr, 0, s);
    else
      qmma_dispatch<8, false>(w, x, ldx, nb, y, ldy, accumulate, 0, nullptr, 0, s);
    return;
  }
  switch (w.bits) {
    case 2: qgemv_bits<2>(w, x, ldx, nb, y, ldy, accumulate, s); break;
    case 3: qgemv_bits<3>(w, x, ldx, nb, y, ldy, accumulate, s); break;
    case 4: qgemv_bits<4>(w, x, ldx, nb, y, ldy, accumulate, s); break;
    case 8: qgemv_bits<8>(w, x, ldx, nb, y, ldy, accumulate, s); break;
    default: fail(HCI_ERR_INTERNAL, "qgemv: bits must be 2, 3, 4 or 8");
  }
  HCI_LAUNCH_CHECK("qgemv");
}

bool qgemv_silu(const PackedView& w, int dff, const void* x, int ldx, int nb, void* h, int ldh,
                cudaStream_t s, const NormIn* norm_in) {
  if (nb < 1 || nb > 16 || w.d_out != 2 * dff) return false;
  if (packed_kernel(w, nb) == 2) {
    g_norm_in = norm_in ? *norm_in : NormIn{};
    struct Reset {
      ~Reset() { g_norm_in = NormIn{}; }
    } reset;
    qgemv1_dispatch<true>(s1_config(w.bits), w, x, nullptr, false, dff, h, NormEpilogue{}, s);
    HCI_LAUNCH_CHECK("qgemv_silu");
    return true;
  }
  if (norm_in && norm_in->gamma) return false;
  if (!qmma_eligible(w)) return false;
  if (w.bits == 4)
    qmma_dispatch<4, true>(w, x, ldx, nb, nullptr, 0, false, dff, h, ldh, s);
  else
    qmma_dispatch<8, true>(w, x, ldx, nb, nullptr, 0, false, dff, h, ldh, s);
  return true;
}

bool packed_norm_epilogue_supported(const PackedView& w, int nb) {
  return nb >= 1 && nb <= 16 && packed_kernel(w, nb) != 1;
}

bool packed_norm_in_supported(const PackedView& w, int nb) {
  return nb == 1 && packed_kernel(w, nb) == 2;
}

bool packed_gemv_supported(const PackedView& w, int nb) {
  return nb >= 1 && nb <= 16 && (packed_kernel(w, nb) == 2 || qmma_eligible(w) || nb <= 2);
}

void gemv_silu(DType t, const void* W, int dff, int d_in, const void* x, int ldx, int nb, void* h,
               int ldh, cudaStream_t s) {
  if (nb < 1 || nb > 16) fail(HCI_ERR_INTERNAL, "gemv_silu: nb must be 1..16");
  if (d_in % 8 || ldx % 8) fail(HCI_ERR_INTERNAL, "gemv_silu: d_in and ldx must be multiples of 8");
  auto go = [&](auto tag) {
    using T = decltype(tag);
    if (nb == 1) return launch_gemv_silu<T, 1>(W, dff, d_in, x, ldx, nb, h, ldh, s);
    if (nb == 2) return launch_gemv_silu<T, 2>(W, dff, d_in, x, ldx, nb, h, ldh, s);
    if (nb <= 4) return launch_gemv_silu<T, 4>(W, dff, d_in, x, ldx, nb, h, ldh, s);
    if (nb <= 8) return launch_gemv_silu<T, 8>(W, dff, d_in, x, ldx, nb, h, ldh, s);
    return launch_gemv_silu<T, 16>(W, dff, d_in, x, ldx, nb, h, ldh, s);
  };
  if (t == DType::F16)
    go(__half());
  else
    go(__nv_bfloat16());
}

void dequant(const PackedView& w, int row0, int rows, void* out, cudaStream_t s) {
  if (rows <= 0) return;
  const int cpl = (w.bits == 8 || w.bits == 4) ? 32 : 64;
  const int64_t n = int64_t(rows) * (w.d_in / cpl);
  const int threads = 256;
  const int blocks = int((n + threads - 1) / threads);
  __half* o = static_cast<__half*>(out);
  switch (w.bits) {
    case 2: launch_k("dequant_kernel", dequant_kernel<2>, dim3(blocks), dim3(threads), 0, s, w, row0, rows, o); break;
    case 3: launch_k("dequant_kernel", dequant_kernel<3>, dim3(blocks), dim3(threads), 0, s, w, row0, rows, o); break;
    case 4: launch_k("dequant_kernel", dequant_kernel<4>, dim3(blocks), dim3(threads), 0, s, w, row0, rows, o); break;
    case 8: launch_k("dequant_kernel", dequant_kernel<8>, dim3(blocks), dim3(threads), 0, s, w, row0, rows, o); break;
    default: fail(HCI_ERR_INTERNAL, "dequant: bits must be 2, 3, 4 or 8");
  }
  HCI_LAUNCH_CHECK("dequant");
}

void set_qgemv4_early_trigger(bool on) { g_q4_early = on ? 1 : 0; }
void set_qgemv4_ksplit(bool on) { g_q4_ksplit = on ? 1 : 0; }
int next_stamp_tag() { return g_stamp_tag++; }
bool kernel_stamps_compiled() { return HCI_KERNEL_STAMPS != 0; }

HCI_KERNEL_STAMPS_SETTER(bind_stamps_gemv)
void bind_stamps_attention(KernelStamp* buf, unsigned cap);  // decode_attention.cu
void bind_kernel_stamps(KernelStamp* buf, unsigned cap) {  // each unit counts its own slots
  bind_stamps_gemv(buf, cap / 2);
  bind_stamps_attention(buf ? buf + cap / 2 : nullptr, cap - cap / 2);
}

}  // namespace hci::gpu
