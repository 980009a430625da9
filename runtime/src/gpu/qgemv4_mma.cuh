// The lean 4-bit GEMV's tensor-core scheme (qgemv4_kernel<..., MMA>): its input staging and MMA
// helper. Included by gemv.cu inside its anonymous namespace, after q4_stage (it uses kQ4MaxDin,
// kQ4Threads and lop_or_magic).
//
// Why: the lean kernel spends ~77 warp instructions per 16-byte vector of 32 codes; the same loads
// without the arithmetic (HCI_Q4_NOMATH, a timing experiment with wrong results) decode Llama-2-7B
// W4 g128 at 638 against 545 tok/s on an H100. On the tensor cores a vector costs ~37-48 (SASS):
// each MMA A register is one LOP3 of a code word, 1024 + q (nibbles 0/4, and 2/6 after v >> 8)
// or 1024 + 16 q (nibbles 1/5, 3/7), exact in fp16, the "lo" and "hi" pairs in separate MMAs, so
// that per 128 columns (a segment, one group of 128 codes)
//   C_lo = 1024 S_lo + sum_lo q x,   C_hi = 1024 S_hi + 16 sum_hi q x,
// S_lo / S_hi the sums of x over the segment's columns k % 4 in {0, 1} / {2, 3}; in fp32:
//   sum (q - z) x = C_lo + C_hi / 16 - (1024 S_lo + 64 S_hi) - z (S_lo + S_hi).
// The offsets are removed after exact products and fp32 sums: worst relative error 3.7e-5 against
// the float64 reference, where the SIMT kernel's fp16 partial sums reach 1.0e-3 (test_gpu_kernels). Measured
// (H100, same calls): the MMA scheme on every product 529-531 tok/s against 545 for the SIMT dot
// products; on the rows longer than one step only (down, with KSPLIT) 549.6-550.8, but Llama-3-8B
// 464.2 against 466.5 and Llama-2-13B 278.5 against 281.0 that way: an option (HCINFER_QGEMV_SIMT
// 4 or 5), not the default (results/decode-profile/README.md, with the variants that were dropped).

// Stages x (fp16, piece-major as q4_stage) into xs and the chunk sums into ks; with NormIn, x is
// gamma * residual rounded to fp16 and the norm's scale rsqrt(mean(residual²) + eps) is returned
// (applied to the row sums; else 1). ga0/gb0: this thread's first 8 gamma values (loaded before
// the PDL wait).
__device__ __forceinline__ float mma_stage(const PackedView& w, const __half* __restrict__ X,
                                          const NormIn& nin, float4 ga0, float4 gb0, uint4* xs,
                                          float2* ks, float* red) {
  const int nvec = w.d_in >> 5;
  const int n16 = w.d_in >> 3;  // 16-byte pieces (8 columns)
  float ss = 0.f;
  constexpr int kRounds = (kQ4MaxDin / 8 + kQ4Threads - 1) / kQ4Threads;
  uint4 xraw[kRounds];
  if (!nin.gamma) {  // every piece's load in flight before the first is used
#pragma unroll
    for (int it = 0; it < kRounds; ++it) {
      const int i = it * kQ4Threads + int(threadIdx.x);
      xraw[it] = i < n16 ? __ldg(reinterpret_cast<const uint4*>(X) + i) : make_uint4(0, 0, 0, 0);
    }
  }
#pragma unroll
  for (int it = 0; it < kRounds; ++it) {  // uniform trip count: shuffles below
    const int i0 = it * kQ4Threads;
    if (i0 >= n16) break;
    const int i = i0 + threadIdx.x;
    uint4 o = make_uint4(0, 0, 0, 0);
    __half2* oh = reinterpret_cast<__half2*>(&o);
    if (i < n16) {
      if (nin.gamma) {
        const float4* r4 = reinterpret_cast<const float4*>(nin.x) + 2 * i;
        const float4* g4 = reinterpret_cast<const float4*>(nin.gamma) + 2 * i;
        const float4 a = r4[0], b = r4[1];
        const float4 ga = i0 == 0 ? ga0 : __ldg(g4), gb = i0 == 0 ? gb0 : __ldg(g4 + 1);
        ss += a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w + b.x * b.x + b.y * b.y + b.z * b.z +
              b.w * b.w;
        oh[0] = __floats2half2_rn(ga.x * a.x, ga.y * a.y);
        oh[1] = __floats2half2_rn(ga.z * a.z, ga.w * a.w);
        oh[2] = __floats2half2_rn(gb.x * b.x, gb.y * b.y);
        oh[3] = __floats2half2_rn(gb.z * b.z, gb.w * b.w);
      } else {
        o = xraw[it];
      }
      // stored as the pairs (01, 45, 23, 67): each MMA's two B registers are adjacent
      uint4 st = o;
      st.y = o.z;
      st.z = o.y;
      xs[(i & 3) * nvec + (i >> 2)] = st;
    }
    // piece i holds columns 8i..8i+7: halves 0, 1, 4, 5 are "lo" (k % 4 < 2), 2, 3, 6, 7 "hi"
    const float2 f0 = __half22float2(oh[0]), f1 = __half22float2(oh[1]);
    const float2 f2 = __half22float2(oh[2]), f3 = __half22float2(oh[3]);
    float slo = (f0.x + f0.y) + (f2.x + f2.y), shi = (f1.x + f1.y) + (f3.x + f3.y);
#pragma unroll
    for (int m = 1; m < 16; m <<= 1) {  // a chunk of 128 columns = 16 consecutive threads
      slo += __shfl_xor_sync(0xffffffffu, slo, m);
      shi += __shfl_xor_sync(0xffffffffu, shi, m);
    }
    if (i < n16 && (i & 15) == 0) ks[i >> 4] = make_float2(1024.f * slo + 64.f * shi, slo + shi);
  }
  if (nin.gamma) {
    ss = warp_sum(ss);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = ss;
  }
  __syncthreads();  // x, the chunk sums and the warps' sums of squares
  float inv = 1.f;
  if (nin.gamma) {
    ss = 0.f;
#pragma unroll
    for (int k = 0; k < kQ4Warps; ++k) ss += red[k];
    inv = rsqrtf(ss / float(w.d_in) + nin.eps);
  }
  return inv;
}

// C = A B for the first MMA of a chain (C starts at zero).
__device__ __forceinline__ void mma16816_zero(float (&c)[4], uint32_t a0, uint32_t a1,
                                              uint32_t a2, uint32_t a3, uint32_t b0,
                                              uint32_t b1) {
  const float z = 0.f;
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%10,%10,%10,%10};\n"
      : "=f"(c[0]), "=f"(c[1]), "=f"(c[2]), "=f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "f"(z));
}
