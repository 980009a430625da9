// Decode attention (one new token per sequence, RoPE and the KV-cache store fused): the
// shared-memory kernel up to kAttnSmemCtx cache positions, optionally split over a cluster of
// blocks per head, and the online-softmax kernel beyond; the CPU reference is hci::attention
// (tests: decode_attention_matches_cpu).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <type_traits>

#include "common.h"
#include "device_util.cuh"
#include "kernel_stamps.cuh"
#include "kernels.h"
#include "launch.cuh"

namespace hci::gpu {

namespace {

constexpr int kOnlineWarps = 8;  // warps of the online-softmax kernel

// Loads E consecutive cache values (vectorized) as floats.
template <int E>
__device__ __forceinline__ void loadE(const __half* p, float (&f)[E]) {
  if constexpr (E == 4) {
    const uint2 v = *reinterpret_cast<const uint2*>(p);
    const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&v.x));
    const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&v.y));
    f[0] = a.x; f[1] = a.y; f[2] = b.x; f[3] = b.y;
  } else if constexpr (E == 2) {
    const float2 a = __half22float2(*reinterpret_cast<const __half2*>(p));
    f[0] = a.x; f[1] = a.y;
  } else {
    f[0] = __half2float(*p);
  }
}
template <int E>
__device__ __forceinline__ void loadE(const float* p, float (&f)[E]) {
  if constexpr (E == 4) {
    const float4 a = *reinterpret_cast<const float4*>(p);
    f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w;
  } else if constexpr (E == 2) {
    const float2 a = *reinterpret_cast<const float2*>(p);
    f[0] = a.x; f[1] = a.y;
  } else {
    f[0] = *p;
  }
}

// The decode kernels' common start (one block per (head h, row)): q and the new key with RoPE at
// position pos (q also scaled) and the new value into shared memory qs/ks/vs [HD]; then, in the
// one block per KV head, the new key and value stored into the cache at `base + pos * kvd`.
template <typename KV, int HD>
__device__ __forceinline__ void decode_new_qkv(const float* row, const float2* c, int h, int kvh,
                                               int qd, int kvd, float scale, bool store,
                                               KV* kc, KV* vc, int64_t at, float* qs, float* ks,
                                               float* vs) {
  constexpr int HALF = HD / 2;
  for (int f = threadIdx.x; f < HALF; f += blockDim.x) {
    const float2 cf = c[f];
    const float qa = row[h * HD + f], qb = row[h * HD + f + HALF];
    qs[f] = (qa * cf.x - qb * cf.y) * scale;
    qs[f + HALF] = (qb * cf.x + qa * cf.y) * scale;
    const float ka = row[qd + kvh * HD + f], kb = row[qd + kvh * HD + f + HALF];
    ks[f] = ka * cf.x - kb * cf.y;
    ks[f + HALF] = kb * cf.x + ka * cf.y;
  }
  for (int t = threadIdx.x; t < HD; t += blockDim.x) vs[t] = row[qd + kvd + kvh * HD + t];
  __syncthreads();
  if (store)
    for (int t = threadIdx.x; t < HD; t += blockDim.x) {
      kc[at + t] = from_float<KV>(ks[t]);
      vc[at + t] = from_float<KV>(vs[t]);
    }
}

// Decode attention with RoPE and the KV store fused; one block per (head, row). Scores: one key
// per lane (all of a lane's key loads in flight at once); values: lane owns E consecutive head
// dimensions, 16 keys' loads in flight per round; online softmax per warp, merged across warps.
template <typename KV, typename TO, int E>
__global__ void __launch_bounds__(kOnlineWarps * 32)
    attention_decode_kernel(const float* __restrict__ qkv, int ldq, int n_heads, int n_kv,
                            const float2* __restrict__ cs, const int* __restrict__ row_seq,
                            const int* __restrict__ row_pos, KV* __restrict__ kc,
                            KV* __restrict__ vc, int n_ctx, float scale, TO* __restrict__ out,
                            int ldo) {
  constexpr int HD = 32 * E, HALF = HD / 2;
  __shared__ float qs[HD], ks[HD], vs[HD];
  __shared__ float wm[kOnlineWarps], wl[kOnlineWarps];
  __shared__ float wacc[kOnlineWarps][HD];
  pdl_trigger();
  pdl_wait();
  const int h = blockIdx.x, i = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int seq = row_seq[i], pos = row_pos[i], L = pos + 1;
  const int group = n_heads / n_kv, kvh = h / group, kvd = n_kv * HD, qd = n_heads * HD;
  const int64_t base = int64_t(seq) * n_ctx * kvd + kvh * HD;
  decode_new_qkv<KV, HD>(qkv + int64_t(i) * ldq, cs + int64_t(pos) * HALF, h, kvh, qd, kvd, scale,
                         h % group == 0, kc, vc, base + int64_t(pos) * kvd, qs, ks, vs);
  const KV* K = kc + base;
  const KV* V = vc + base;
  float m = -FLT_MAX, l = 0.f, acc[E];
#pragma unroll
  for (int e = 0; e < E; ++e) acc[e] = 0.f;
  for (int tile = warp; tile * 32 < L; tile += kOnlineWarps) {
    const int j = tile * 32 + lane;
    float s = -FLT_MAX;
    if (j < pos) {  // cached key
      const KV* kr = K + int64_t(j) * kvd;
      float kf[HD];
#pragma unroll
      for (int d0 = 0; d0 < HD; d0 += 8) {
        float t8[8];
        load8(kr + d0, t8);
#pragma unroll
        for (int t = 0; t < 8; ++t) kf[d0 + t] = t8[t];
      }
      float dot = 0.f;
#pragma unroll
      for (int d = 0; d < HD; ++d) dot = fmaf(qs[d], kf[d], dot);
      s = dot;
    } else if (j == pos) {  // the new key, from shared memory
      float dot = 0.f;
#pragma unroll 8
      for (int d = 0; d < HD; ++d) dot = fmaf(qs[d], ks[d], dot);
      s = dot;
    }
    const float m_new = fmaxf(m, warp_max(s));
    const float p = j < L ? expf(s - m_new) : 0.f;
    const float corr = expf(m - m_new);
    l = l * corr + warp_sum(p);
#pragma unroll
    for (int e = 0; e < E; ++e) acc[e] *= corr;
    const int n_in = min(32, L - tile * 32);
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float vv[16][E];
#pragma unroll
      for (int q = 0; q < 16; ++q) {
        const int jj = r * 16 + q, jk = tile * 32 + jj;
#pragma unroll
        for (int e = 0; e < E; ++e) vv[q][e] = 0.f;
        if (jj < n_in) {
          if (jk == pos) {
#pragma unroll
            for (int e = 0; e < E; ++e) vv[q][e] = vs[lane * E + e];
          } else {
            loadE<E>(V + int64_t(jk) * kvd + lane * E, vv[q]);
          }
        }
      }
#pragma unroll
      for (int q = 0; q < 16; ++q) {
        const float pj = __shfl_sync(0xffffffffu, p, r * 16 + q);
#pragma unroll
        for (int e = 0; e < E; ++e) acc[e] = fmaf(pj, vv[q][e], acc[e]);
      }
    }
    m = m_new;
  }
  if (lane == 0) {
    wm[warp] = m;
    wl[warp] = l;
  }
#pragma unroll
  for (int e = 0; e < E; ++e) wacc[warp][lane * E + e] = acc[e];
  __syncthreads();
  for (int t = threadIdx.x; t < HD; t += blockDim.x)
    out[int64_t(i) * ldo + h * HD + t] = from_float<TO>(merge_warp_partials(wm, wl, wacc, t));
}

// Decode attention with RoPE and the KV store fused, scores kept in shared memory (n_ctx <=
// kAttnSmemCtx). One block of kDecWarps warps per (head, row) and, with C > 1, a cluster of C
// blocks per (head, row), each over its own contiguous range of positions (flash-decoding's
// split, combined through distributed shared memory instead of a second kernel; the engine uses
// C = 2 for long contexts, GpuModel::attention_split_for). Every phase keeps many loads in
// flight, since the time is latency and each block's share of the cache comes through one
// multiprocessor:
//   0. (kv_early) before the PDL wait, the first round of the block's cached keys and values is
//      loaded from the position read then (rows before it are final); after the wait each thread
//      loads again if its early read was stale. Else the round is loaded in phase 1, after the
//      new row's loads (which must not queue behind it).
//   1. RoPE of q and of the new key, q scaled; the new key and value stored (one block per KV head;
//      the other blocks of that head read them from shared memory, never from the cache);
//   2. scores: G = HD/8 lanes per key, each lane 8 dimensions (one 16-byte load of an fp16 row),
//      32/G keys per warp, UNS of them loaded at once, dot products reduced over the G lanes;
//   3. softmax over the block's positions with two block reductions (probabilities replace the
//      scores);
//   4. values: lane owns HD/32 consecutive dimensions (a warp reads whole rows), warps take UNV
//      consecutive keys at a time, loads in flight together; partials merged across warps;
//   5. (C > 1) every block publishes its max, sum and unnormalized output; after a cluster
//      barrier, block r combines dimensions [r*HD/C, (r+1)*HD/C) of the C partials in rank order
//      (deterministic) and writes them; a second barrier keeps each block's shared memory alive
//      until the others have read it.
// Cache values wait in registers as raw words (fp16: two per word), so a round holds UNS = 8 keys
// per lane group and UNV = 16 values per warp for an fp16 cache (256 positions per block at
// HD 128), half that for fp32.
// Before its PDL wait (while the q/k/v GEMV still runs) the block also asks L2 for its cached
// keys and values (`prefetch_kv_l2`): only a hint, so the position read there may be stale.
// Shapes: qkv [n, ldq] fp32 (q | k | v), cs [n_ctx, HD/2] (cos, sin), kc/vc [max_batch, n_ctx,
// n_kv*HD], out [n, ldo]; grid (n_heads*C, n), cluster (C, 1, 1); dynamic shared memory:
// attn_positions_per_block(n_ctx, C) floats.
constexpr int kDecWarps = 16, kDecUnS = 4, kDecUnV = 8;
constexpr int kAttnSmemCtx = 8192;
// blocks that found their row's sequence or position changed across the PDL wait (for tests)
__device__ unsigned g_attn_stale_reads = 0;

// Positions per block of a C-block split of L positions: a multiple of 8 (a warp's round of
// keys and of values starts on one), so block r covers [r*chunk, min(L, (r+1)*chunk)).
__host__ __device__ constexpr int attn_positions_per_block(int L, int C) {
  return ((L + C - 1) / C + 7) / 8 * 8;
}

// Asks L2 for rows [j0, j1) of a head's cached keys and values (HD elements each, kvd apart);
// the caller's threads share the rows. A hint only: no data is read.
template <typename KV, int HD>
__device__ __forceinline__ void prefetch_kv_l2(const KV* K, const KV* V, int64_t kvd, int j0,
                                               int j1) {
  constexpr int kRowBytes = HD * int(sizeof(KV));
  for (int t = threadIdx.x + 2 * j0; t < 2 * j1; t += blockDim.x) {
    const KV* row = (t & 1 ? V : K) + int64_t(t >> 1) * kvd;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(row), "n"(kRowBytes) : "memory");
#else
    for (int b = 0; b < kRowBytes; b += 128)
      asm volatile("prefetch.global.L2 [%0];" ::"l"(reinterpret_cast<const char*>(row) + b));
#endif
  }
}

// Every thread of every block of the cluster arrives and waits; shared-memory writes before it
// are visible to the cluster's blocks after it (release / acquire). No-op below sm_90 (no
// clusters are launched there).
__device__ __forceinline__ void cluster_barrier() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;"
               ::: "memory");
#endif
}

// The float at `p` (this block's shared memory) in the shared memory of cluster block `rank`.
__device__ __forceinline__ float ld_cluster_shared(const float* p, unsigned rank) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const unsigned local = static_cast<unsigned>(__cvta_generic_to_shared(p));
  unsigned remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(rank));
  float v;
  asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(remote) : "memory");
  return v;
#else
  return rank == 0 ? *p : 0.f;
#endif
}

// Cache values as raw 32-bit words (16-byte and 8-byte read-only loads: cache rows are written
// by earlier kernels, and a step's new row is never read back by the kernel that writes it) and
// their floats: 8 consecutive values (fp16: 4 words, fp32: 8) and a lane's E values (fp16:
// (E+1)/2 words, fp32: E).
__device__ __forceinline__ void load_words8(const __half* p, uint32_t (&w)[4]) {
  const uint4 v = __ldg(reinterpret_cast<const uint4*>(p));
  w[0] = v.x; w[1] = v.y; w[2] = v.z; w[3] = v.w;
}
__device__ __forceinline__ void load_words8(const float* p, uint32_t (&w)[8]) {
  const float4 a = __ldg(reinterpret_cast<const float4*>(p)),
               b = __ldg(reinterpret_cast<const float4*>(p) + 1);
  w[0] = __float_as_uint(a.x); w[1] = __float_as_uint(a.y);
  w[2] = __float_as_uint(a.z); w[3] = __float_as_uint(a.w);
  w[4] = __float_as_uint(b.x); w[5] = __float_as_uint(b.y);
  w[6] = __float_as_uint(b.z); w[7] = __float_as_uint(b.w);
}
template <typename KV, int W>
__device__ __forceinline__ void words_to_float8(const uint32_t (&w)[W], float (&f)[8]) {
  if constexpr (std::is_same_v<KV, __half>) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 t = __half22float2(*reinterpret_cast<const __half2*>(&w[i]));
      f[2 * i] = t.x;
      f[2 * i + 1] = t.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) f[i] = __uint_as_float(w[i]);
  }
}
template <int E, int W>
__device__ __forceinline__ void load_wordsE(const __half* p, uint32_t (&w)[W]) {
  if constexpr (E == 4) {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
    w[0] = v.x;
    w[1] = v.y;
  } else if constexpr (E == 2) {
    w[0] = __ldg(reinterpret_cast<const unsigned*>(p));
  } else {
    w[0] = __ldg(reinterpret_cast<const unsigned short*>(p));
  }
}
template <int E, int W>
__device__ __forceinline__ void load_wordsE(const float* p, uint32_t (&w)[W]) {
  if constexpr (E == 4) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(p));
    w[0] = __float_as_uint(a.x); w[1] = __float_as_uint(a.y);
    w[2] = __float_as_uint(a.z); w[3] = __float_as_uint(a.w);
  } else if constexpr (E == 2) {
    const float2 a = __ldg(reinterpret_cast<const float2*>(p));
    w[0] = __float_as_uint(a.x);
    w[1] = __float_as_uint(a.y);
  } else {
    w[0] = __float_as_uint(__ldg(p));
  }
}
template <typename KV, int E, int W>
__device__ __forceinline__ void words_to_floatE(const uint32_t (&w)[W], float (&f)[E]) {
  if constexpr (std::is_same_v<KV, __half>) {
    if constexpr (E == 1) {
      f[0] = __half2float(__ushort_as_half(static_cast<unsigned short>(w[0])));
    } else {
#pragma unroll
      for (int i = 0; i < E / 2; ++i) {
        const float2 t = __half22float2(*reinterpret_cast<const __half2*>(&w[i]));
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
      }
    }
  } else {
#pragma unroll
    for (int i = 0; i < E; ++i) f[i] = __uint_as_float(w[i]);
  }
}

template <typename KV, typename TO, int HD, int C>
__global__ void __launch_bounds__(kDecWarps * 32)
    attention_decode_smem_kernel(const float* __restrict__ qkv, int ldq, int n_heads, int n_kv,
                                 const float2* __restrict__ cs, const int* __restrict__ row_seq,
                                 const int* __restrict__ row_pos, KV* __restrict__ kc,
                                 KV* __restrict__ vc, int n_ctx, float scale,
                                 TO* __restrict__ out, int ldo, int tag, int kv_early) {
  constexpr int HALF = HD / 2, G = HD / 8, KPW = 32 / G, E = HD / 32, NT = kDecWarps * 32;
  static_assert(NT >= HD, "phase 1 takes one element pair per thread");
  // Cache values stay in registers as raw 32-bit words until used (an fp16 row of 8 keys' values
  // is 4 words, not 8 floats), so an fp16 cache takes twice the keys and values per round in the
  // same registers: 256 positions per round at HD 128.
  constexpr bool kHalf = std::is_same_v<KV, __half>;
  constexpr int KW = kHalf ? 4 : 8;            // words of 8 key values
  constexpr int VW = kHalf ? (E + 1) / 2 : E;  // words of a lane's E values
  constexpr int UNS = kHalf ? 2 * kDecUnS : kDecUnS, UNV = kHalf ? 2 * kDecUnV : kDecUnV;
  constexpr int KEYS_W = KPW * UNS;  // keys of a warp per round
  extern __shared__ float s[];  // [chunk] scores of the block's positions, then probabilities
  __shared__ float qs[HD], ks[HD], vs[HD];
  __shared__ float part[kDecWarps][HD];
  __shared__ float red[32];
  __shared__ float blk_m, blk_l;  // (C > 1) the block's max and sum, read by the cluster
  __shared__ int kslot;
  kstamp_begin(&kslot, kKindAttention, tag, n_heads, HD);
  pdl_trigger();
  const int h = blockIdx.x / C, r = blockIdx.x % C, i = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int group = n_heads / n_kv, kvh = h / group, kvd = n_kv * HD, qd = n_heads * HD;
  // The row's sequence and position are read twice: before the wait to warm L2 and (kv_early)
  // to load the first round of keys and values (they may be stale then: the step's first kernel
  // may not have run), after it for real. Both reads go
  // through L2 only (__ldcg): with a plain read of the `const __restrict__` arrays the first read
  // left the line in the read-only cache and the second returned it, stale (the decode attention
  // test caught it with PDL holding the positions' writer back: wrong rows attended and the new
  // key and value stored at the stale position). The two L2 reads cost 0.2-0.4% of W4 decode
  // (H100, same call; the stale counter below was added after that A/B).
  const int seq_early = __ldcg(row_seq + i), pos_early = __ldcg(row_pos + i);
  // This block's positions [j_lo, j_hi) of a row at `pos`, its cache rows K, V: first from the
  // early (possibly stale) reads, then from the final ones.
  int seq = max(0, seq_early), pos = min(max(0, pos_early), n_ctx - 1);
  int L, j_lo, j_hi;
  const KV* K;
  const KV* V;
  auto place = [&] {
    L = pos + 1;
    const int chunk = attn_positions_per_block(L, C);
    j_lo = C == 1 ? 0 : r * chunk;
    j_hi = C == 1 ? L : min(L, j_lo + chunk);
    const int64_t base = int64_t(seq) * n_ctx * kvd + kvh * HD;
    K = kc + base;
    V = vc + base;
  };
  place();
  // the cache rows before pos are final (written by earlier steps): warm L2 with them
  prefetch_kv_l2<KV, HD>(K, V, kvd, min(j_lo, pos), min(j_hi, pos));
  const int sub = lane / G, gl = lane % G;
  // Cached keys (in the layout of phase 2) and values (of phase 4) of the block's positions
  // before pos, as raw words; the rest are zero, and position pos comes from shared memory once
  // phase 1 has run (where the words are used).
  auto load_keys = [&](int j0, uint32_t (&kw)[UNS][KW]) {
#pragma unroll
    for (int u = 0; u < UNS; ++u) {
      const int j = j0 + u * KPW + sub;
      if (j < pos && (C == 1 || j < j_hi)) {
        load_words8(K + int64_t(j) * kvd + gl * 8, kw[u]);
      } else {
#pragma unroll
        for (int t = 0; t < KW; ++t) kw[u][t] = 0u;
      }
    }
  };
  auto load_values = [&](int j0, uint32_t (&vw)[UNV][VW]) {
#pragma unroll
    for (int u = 0; u < UNV; ++u) {
      const int j = j0 + u;
      if (j < pos && (C == 1 || j < j_hi)) {
        load_wordsE<E>(V + int64_t(j) * kvd + lane * E, vw[u]);
      } else {
#pragma unroll
        for (int t = 0; t < VW; ++t) vw[u][t] = 0u;
      }
    }
  };
  // The first round of keys and values: with kv_early, loaded before the PDL wait from the
  // early reads (rows before pos are final, so the loads are right whenever those reads were;
  // each thread checks its own after the wait and loads again if not), their latency under the
  // q/k/v GEMV's tail; else after phase 1's loads of the new row, which then do not queue
  // behind them.
  uint32_t k_first[UNS][KW], v_first[UNV][VW];
  if (kv_early) {
    load_keys(j_lo + warp * KEYS_W, k_first);
    load_values(j_lo + warp * UNV, v_first);
  }
  pdl_wait();
  kstamp_at(&kslot, 1);
  const int seq_now = __ldcg(row_seq + i), pos_now = __ldcg(row_pos + i);
  const bool moved = seq_now != seq || pos_now != pos;
  if (threadIdx.x == 0 && (seq_now != seq_early || pos_now != pos_early))
    atomicAdd(&g_attn_stale_reads, 1u);
  seq = seq_now;
  pos = pos_now;
  place();
  // 1. the new row's q, k, v (one element pair per thread: blockDim >= HD), then the first round
  const float* row = qkv + int64_t(i) * ldq;
  const int t0 = threadIdx.x;
  float qa = 0.f, qb = 0.f, ka = 0.f, kb = 0.f, vn = 0.f;
  float2 cf = make_float2(0.f, 0.f);
  if (t0 < HALF) {
    cf = cs[int64_t(pos) * HALF + t0];
    qa = row[h * HD + t0];
    qb = row[h * HD + t0 + HALF];
    ka = row[qd + kvh * HD + t0];
    kb = row[qd + kvh * HD + t0 + HALF];
  }
  if (t0 < HD) vn = row[qd + kvd + kvh * HD + t0];
  if (!kv_early || moved) {
    load_keys(j_lo + warp * KEYS_W, k_first);
    load_values(j_lo + warp * UNV, v_first);
  }
  if (t0 < HALF) {
    qs[t0] = (qa * cf.x - qb * cf.y) * scale;
    qs[t0 + HALF] = (qb * cf.x + qa * cf.y) * scale;
    ks[t0] = ka * cf.x - kb * cf.y;
    ks[t0 + HALF] = kb * cf.x + ka * cf.y;
  }
  if (t0 < HD) vs[t0] = vn;
  __syncthreads();
  if (r == 0 && h % group == 0 && t0 < HD) {  // the new key and value into the cache
    const int64_t at = int64_t(seq) * n_ctx * kvd + kvh * HD + int64_t(pos) * kvd + t0;
    kc[at] = from_float<KV>(ks[t0]);
    vc[at] = from_float<KV>(vs[t0]);
  }
  kstamp_at(&kslot, 2);  // (timeline: "stage" = phase 1, "loop" = scores and softmax)
  // 2. scores
  float qr[8];
#pragma unroll
  for (int t = 0; t < 8; ++t) qr[t] = qs[gl * 8 + t];
  for (int j0 = j_lo + warp * KEYS_W; j0 < j_hi; j0 += kDecWarps * KEYS_W) {
    uint32_t kw[UNS][KW];
    if (j0 == j_lo + warp * KEYS_W) {
#pragma unroll
      for (int u = 0; u < UNS; ++u)
#pragma unroll
        for (int t = 0; t < KW; ++t) kw[u][t] = k_first[u][t];
    } else {
      load_keys(j0, kw);
    }
#pragma unroll
    for (int u = 0; u < UNS; ++u) {
      const int j = j0 + u * KPW + sub;
      float kf[8];
      if (j == pos) {
#pragma unroll
        for (int t = 0; t < 8; ++t) kf[t] = ks[gl * 8 + t];
      } else {
        words_to_float8<KV>(kw[u], kf);
      }
      float d = 0.f;
#pragma unroll
      for (int t = 0; t < 8; ++t) d = fmaf(qr[t], kf[t], d);
#pragma unroll
      for (int o = G / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
      if (gl == 0 && j < j_hi) s[j - j_lo] = d;
    }
  }
  __syncthreads();
  // 3. softmax over the block's positions (none: m = -FLT_MAX, sum = 0)
  const int n_loc = max(0, j_hi - j_lo);
  float m = -FLT_MAX;
  for (int j = threadIdx.x; j < n_loc; j += NT) m = fmaxf(m, s[j]);
  m = block_max(m, red);
  float sum = 0.f;
  for (int j = threadIdx.x; j < n_loc; j += NT) {
    const float p = expf(s[j] - m);
    s[j] = p;
    sum += p;
  }
  sum = block_sum(sum, red);  // its barriers also publish the probabilities
  kstamp_at(&kslot, 3);
  // 4. values
  float acc[E];
#pragma unroll
  for (int e = 0; e < E; ++e) acc[e] = 0.f;
  auto accumulate = [&](int j0, const uint32_t (&vw)[UNV][VW]) {
#pragma unroll
    for (int u = 0; u < UNV; ++u) {
      const int j = j0 + u;
      const float pj = j < j_hi ? s[j - j_lo] : 0.f;
      float vf[E];
      if (j == pos) {
#pragma unroll
        for (int e = 0; e < E; ++e) vf[e] = vs[lane * E + e];
      } else {
        words_to_floatE<KV, E>(vw[u], vf);
      }
#pragma unroll
      for (int e = 0; e < E; ++e) acc[e] = fmaf(pj, vf[e], acc[e]);
    }
  };
  accumulate(j_lo + warp * UNV, v_first);
  for (int j0 = j_lo + (warp + kDecWarps) * UNV; j0 < j_hi; j0 += kDecWarps * UNV) {
    uint32_t vw[UNV][VW];
    load_values(j0, vw);
    accumulate(j0, vw);
  }
#pragma unroll
  for (int e = 0; e < E; ++e) part[warp][lane * E + e] = acc[e];
  __syncthreads();
  if constexpr (C == 1) {
    const float inv = 1.f / sum;
    for (int t = threadIdx.x; t < HD; t += NT) {
      float a = 0.f;
#pragma unroll
      for (int w = 0; w < kDecWarps; ++w) a += part[w][t];
      out[int64_t(i) * ldo + h * HD + t] = from_float<TO>(a * inv);
    }
  } else {
    // 5. the block's partial into part[0] (its unnormalized output), its max and sum beside it
    for (int t = threadIdx.x; t < HD; t += NT) {
      float a = 0.f;
#pragma unroll
      for (int w = 0; w < kDecWarps; ++w) a += part[w][t];
      part[0][t] = a;
    }
    if (threadIdx.x == 0) {
      blk_m = m;
      blk_l = sum;
    }
    cluster_barrier();
    constexpr int DPB = (HD + C - 1) / C;  // output dimensions combined per block
    for (int t = r * DPB + threadIdx.x; t < min(HD, (r + 1) * DPB); t += NT) {
      float mq[C], lq[C], M = -FLT_MAX;
#pragma unroll
      for (int q = 0; q < C; ++q) {
        mq[q] = ld_cluster_shared(&blk_m, unsigned(q));
        lq[q] = ld_cluster_shared(&blk_l, unsigned(q));
        if (lq[q] > 0.f) M = fmaxf(M, mq[q]);
      }
      float num = 0.f, den = 0.f;
#pragma unroll
      for (int q = 0; q < C; ++q) {
        if (!(lq[q] > 0.f)) continue;  // a block past the last position
        const float f = expf(mq[q] - M);
        num = fmaf(ld_cluster_shared(&part[0][t], unsigned(q)), f, num);
        den = fmaf(lq[q], f, den);
      }
      out[int64_t(i) * ldo + h * HD + t] = from_float<TO>(num / den);
    }
    cluster_barrier();  // the others may still read this block's shared memory
  }
  kstamp_at(&kslot, 4);
}

}  // namespace

namespace {
// Blocks per (head, row) of the shared-memory decode attention: -1 until first asked
// (HCINFER_ATTN_SPLIT or the default), then 1, 2, 4 or 8.
int g_attn_split = -1;
}  // namespace

void set_attention_split(int c) {
  if (c != 1 && c != 2 && c != 4 && c != 8)
    fail(HCI_ERR_INVALID_ARGUMENT, "decode attention split must be 1, 2, 4 or 8 blocks per head");
  g_attn_split = c;
}

bool attention_split_supported() {
  static const bool ok = [] {
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) == cudaSuccess)
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    return major >= 9;
  }();
  return ok;
}

int attention_split() {
  if (g_attn_split < 0) {
    int c = 1;
    if (const char* e = std::getenv("HCINFER_ATTN_SPLIT")) c = std::atoi(e);
    if (!attention_split_supported()) c = 1;
    set_attention_split(c == 1 || c == 2 || c == 4 || c == 8 ? c : 1);
  }
  return g_attn_split;
}

namespace {
int g_attn_kv_early = -1;  // -1 until first asked (HCINFER_ATTN_KV_EARLY or the default)
}  // namespace

void set_attention_kv_early(bool on) { g_attn_kv_early = on ? 1 : 0; }

int attention_kv_early() {
  if (g_attn_kv_early < 0) {  // on unless HCINFER_ATTN_KV_EARLY=0 (H100 W4 7B: 534.7 -> 540.5)
    const char* e = std::getenv("HCINFER_ATTN_KV_EARLY");
    g_attn_kv_early = e && e[0] == '0' ? 0 : 1;
  }
  return g_attn_kv_early;
}

namespace {

template <typename KV, typename TO>
void attention_decode_t(const float* qkv, int ldq, int n, int n_heads, int n_kv, int hd,
                        const float2* cs, const int* row_seq, const int* row_pos, void* kc,
                        void* vc, int n_ctx, void* out, int ldo, cudaStream_t s, int want) {
  const float scale = float(1.0 / std::sqrt(double(hd)));
  KV* k = static_cast<KV*>(kc);
  KV* v = static_cast<KV*>(vc);
  TO* o = static_cast<TO*>(out);
  // scores in shared memory up to kAttnSmemCtx positions; beyond, the online-softmax kernel
  const bool smem = n_ctx <= kAttnSmemCtx;
  int split = want > 0 ? want : attention_split();
  if (!smem || !attention_split_supported()) split = 1;
  if (split != 1 && split != 2 && split != 4 && split != 8)
    fail(HCI_ERR_INVALID_ARGUMENT, "decode attention split must be 1, 2, 4 or 8 blocks per head");
  const size_t sbytes = size_t(attn_positions_per_block(n_ctx, split)) * sizeof(float);
  const dim3 grid(n_heads * split, n);
  const dim3 tb(smem ? kDecWarps * 32 : kOnlineWarps * 32);
  auto go = [&](auto head_dim) {
    constexpr int HD = decltype(head_dim)::value;
    auto clustered = [&](auto blocks) {
      constexpr int C = decltype(blocks)::value;
      launch_k_cluster("attention_decode", attention_decode_smem_kernel<KV, TO, HD, C>, grid, tb,
                       sbytes, s, C, qkv, ldq, n_heads, n_kv, cs, row_seq, row_pos, k, v, n_ctx,
                       scale, o, ldo, next_stamp_tag(), attention_kv_early());
    };
    if (!smem)
      launch_k("attention_decode", attention_decode_kernel<KV, TO, HD / 32>, grid, tb, 0, s, qkv,
               ldq, n_heads, n_kv, cs, row_seq, row_pos, k, v, n_ctx, scale, o, ldo);
    else if (split == 1)
      launch_k("attention_decode", attention_decode_smem_kernel<KV, TO, HD, 1>, grid, tb, sbytes,
               s, qkv, ldq, n_heads, n_kv, cs, row_seq, row_pos, k, v, n_ctx, scale, o, ldo,
               next_stamp_tag(), attention_kv_early());
    else if (split == 2)
      clustered(std::integral_constant<int, 2>{});
    else if (split == 4)
      clustered(std::integral_constant<int, 4>{});
    else
      clustered(std::integral_constant<int, 8>{});
  };
  switch (hd) {
    case 32: return go(std::integral_constant<int, 32>{});
    case 64: return go(std::integral_constant<int, 64>{});
    case 128: return go(std::integral_constant<int, 128>{});
    default: fail(HCI_ERR_UNSUPPORTED, "GPU attention supports head_dim 32, 64 or 128");
  }
}
}  // namespace

void attention_decode(DType kv, DType out_t, const float* qkv, int ldq, int n, int n_heads,
                      int n_kv, int hd, const float2* cs, const int* row_seq, const int* row_pos,
                      void* kc, void* vc, int n_ctx, void* out, int ldo, cudaStream_t s,
                      int split) {
  if (n <= 0) return;
  if (kv == DType::F16 && out_t == DType::F16)
    attention_decode_t<__half, __half>(qkv, ldq, n, n_heads, n_kv, hd, cs, row_seq, row_pos, kc,
                                       vc, n_ctx, out, ldo, s, split);
  else if (kv == DType::F16)
    attention_decode_t<__half, __nv_bfloat16>(qkv, ldq, n, n_heads, n_kv, hd, cs, row_seq,
                                              row_pos, kc, vc, n_ctx, out, ldo, s, split);
  else if (out_t == DType::F16)
    attention_decode_t<float, __half>(qkv, ldq, n, n_heads, n_kv, hd, cs, row_seq, row_pos, kc,
                                      vc, n_ctx, out, ldo, s, split);
  else
    attention_decode_t<float, __nv_bfloat16>(qkv, ldq, n, n_heads, n_kv, hd, cs, row_seq,
                                             row_pos, kc, vc, n_ctx, out, ldo, s, split);
}

unsigned attention_stale_reads() {
  unsigned v = 0;
  HCI_CUDA(cudaMemcpyFromSymbol(&v, g_attn_stale_reads, sizeof v));
  return v;
}

HCI_KERNEL_STAMPS_SETTER(bind_stamps_attention)

}  // namespace hci::gpu
