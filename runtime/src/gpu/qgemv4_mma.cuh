// The lean 4-bit GEMV's tensor-core scheme (qgemv4_kernel<..., MMA>): its input staging and MMA
// helper. Included by gemv.cu inside its anonymous namespace, after q4_stage (it uses
// q4_stage_pieces and lop_or_magic).
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
// The offsets are removed after exact products and fp32 sums: worst relative error 3.7e-5
// against the float64 reference, where the SIMT kernel's fp16 partial sums reach 1.0e-3
// (test_gpu_kernels). Measured (H100, same calls, means of 3 rounds where given): the MMA scheme
// on every product 527.8-529.7 tok/s against ~545 for the SIMT dot products; on the rows longer
// than one step only (down, with KSPLIT) 549.6-550.8, but Llama-3-8B 464.2 against 466.5 and
// Llama-2-13B 278.5 against 281.0 that way: an option (HCINFER_QGEMV_SIMT 4 or 5), not the
// default (results/decode-profile/README.md, with the variants that were dropped).

// Stages x (fp16, piece-major as q4_stage) into xs and the chunk sums into ks; returns the NormIn
// scale (q4_stage_pieces: x is gamma * residual rounded to fp16, the scale is applied to the row
// sums).
__device__ __forceinline__ float mma_stage(const PackedView& w, const __half* __restrict__ X,
                                          const NormIn& nin, float4 ga0, float4 gb0, uint4* xs,
                                          float2* ks, float* red) {
  const int nvec = w.d_in >> 5;
  const int n16 = w.d_in >> 3;  // 16-byte pieces (8 columns)
  return q4_stage_pieces(w, X, nin, ga0, gb0, red, [&](int i, const uint4& o) {
    if (i < n16) {  // stored as the pairs (01, 45, 23, 67): each MMA's two B registers adjacent
      uint4 st = o;
      st.y = o.z;
      st.z = o.y;
      xs[(i & 3) * nvec + (i >> 2)] = st;
    }
    // piece i holds columns 8i..8i+7: halves 0, 1, 4, 5 are "lo" (k % 4 < 2), 2, 3, 6, 7 "hi"
    const __half2* oh = reinterpret_cast<const __half2*>(&o);
    const float2 f0 = __half22float2(oh[0]), f1 = __half22float2(oh[1]);
    const float2 f2 = __half22float2(oh[2]), f3 = __half22float2(oh[3]);
    float slo = (f0.x + f0.y) + (f2.x + f2.y), shi = (f1.x + f1.y) + (f3.x + f3.y);
#pragma unroll
    for (int m = 1; m < 16; m <<= 1) {  // a chunk of 128 columns = 16 consecutive threads
      slo += __shfl_xor_sync(0xffffffffu, slo, m);
      shi += __shfl_xor_sync(0xffffffffu, shi, m);
    }
    if (i < n16 && (i & 15) == 0) ks[i >> 4] = make_float2(1024.f * slo + 64.f * shi, slo + shi);
  });
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
