#include "hetero/tagged_words.h"

// GCC 12 warns inside its own AVX-512 intrinsics (a known false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <cstring>

#include "hetero/handoff.h"
#include "safetensors.h"  // f32_to_f16, f32_to_bf16, f16_to_f32

namespace hci {

namespace {

bool unpack_scalar(const uint64_t* src, float* dst, int64_t n, uint32_t seq,
                   const std::atomic<bool>* stop) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t spins = 0;
    for (;;) {
      const uint64_t w = ll_at(src + i)->load(std::memory_order_relaxed);
      if (ll_seq(w) == seq) {
        dst[i] = ll_value(w);
        break;
      }
      if ((++spins & 1023) == 0 && stop && stop->load(std::memory_order_relaxed)) return false;
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
    }
  }
  return true;
}

__attribute__((target("avx512f"))) bool unpack_avx512(const uint64_t* src, float* dst, int64_t n,
                                                      uint32_t seq,
                                                      const std::atomic<bool>* stop) {
  const __m512i want = _mm512_set1_epi64(static_cast<long long>(uint64_t(seq) << 32));
  const __m512i hi = _mm512_set1_epi64(static_cast<long long>(0xFFFFFFFF00000000ull));
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m512i v;
    for (uint32_t spins = 0;; ++spins) {
      asm volatile("" ::: "memory");  // load the words again on every try
      v = _mm512_loadu_si512(static_cast<const void*>(src + i));
      if (_mm512_cmpeq_epi64_mask(_mm512_and_si512(v, hi), want) == 0xFF) break;
      if ((spins & 1023) == 1023 && stop && stop->load(std::memory_order_relaxed)) return false;
      _mm_pause();
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm512_cvtepi64_epi32(v));
  }
  return unpack_scalar(src + i, dst + i, n - i, seq, stop);
}

__attribute__((target("avx2"))) bool unpack_avx2(const uint64_t* src, float* dst, int64_t n,
                                                 uint32_t seq, const std::atomic<bool>* stop) {
  const __m256i want = _mm256_set1_epi64x(static_cast<long long>(uint64_t(seq) << 32));
  const __m256i hi = _mm256_set1_epi64x(static_cast<long long>(0xFFFFFFFF00000000ull));
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    __m256i v;
    for (uint32_t spins = 0;; ++spins) {
      asm volatile("" ::: "memory");
      v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
      if (_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpeq_epi64(_mm256_and_si256(v, hi), want))) == 0xF)
        break;
      if ((spins & 1023) == 1023 && stop && stop->load(std::memory_order_relaxed)) return false;
      _mm_pause();
    }
    // the low halves of the four words
    const __m256i lo = _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm256_castsi256_si128(lo));
  }
  return unpack_scalar(src + i, dst + i, n - i, seq, stop);
}

__attribute__((target("avx512f"))) void pack_avx512(const float* src, uint64_t* dst, int64_t n,
                                                    uint32_t seq) {
  const __m512i tag = _mm512_set1_epi64(static_cast<long long>(uint64_t(seq) << 32));
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    _mm512_storeu_si512(static_cast<void*>(dst + i), _mm512_or_si512(_mm512_cvtepu32_epi64(bits), tag));
  }
  ll_store(dst + i, src + i, n - i, seq);
}

__attribute__((target("avx2"))) void pack_avx2(const float* src, uint64_t* dst, int64_t n,
                                               uint32_t seq) {
  const __m256i tag = _mm256_set1_epi64x(static_cast<long long>(uint64_t(seq) << 32));
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_or_si256(_mm256_cvtepu32_epi64(bits), tag));
  }
  ll_store(dst + i, src + i, n - i, seq);
}

float bf16_round(float v) {
  const uint32_t u = uint32_t(f32_to_bf16(v)) << 16;
  std::memcpy(&v, &u, 4);
  return v;
}

__attribute__((target("avx2,f16c"))) void round_f16_f16c(float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
    _mm256_storeu_ps(x + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) x[i] = f16_to_f32(f32_to_f16(x[i]));
}

__attribute__((target("avx512f"))) float sum_squares_avx512(const float* x, int64_t n) {
  __m512 a = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    a = _mm512_fmadd_ps(v, v, a);
  }
  float s = _mm512_reduce_add_ps(a);
  for (; i < n; ++i) s += x[i] * x[i];
  return s;
}

}  // namespace

float sum_squares(const float* x, int64_t n, SimdLevel level) {
  if (level == SimdLevel::Avx512) return sum_squares_avx512(x, n);
  float a[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int k = 0; k < 16; ++k) a[k] += x[i + k] * x[i + k];
  float s = 0.f;
  for (int k = 0; k < 16; ++k) s += a[k];
  for (; i < n; ++i) s += x[i] * x[i];
  return s;
}

bool tagged_unpack(const uint64_t* src, float* dst, int64_t n, uint32_t seq, SimdLevel level,
                   const std::atomic<bool>* stop) {
  switch (level) {
    case SimdLevel::Avx512: return unpack_avx512(src, dst, n, seq, stop);
    case SimdLevel::Avx2: return unpack_avx2(src, dst, n, seq, stop);
    default: return unpack_scalar(src, dst, n, seq, stop);
  }
}

void tagged_pack(const float* src, uint64_t* dst, int64_t n, uint32_t seq, SimdLevel level) {
  switch (level) {
    case SimdLevel::Avx512: pack_avx512(src, dst, n, seq); break;
    case SimdLevel::Avx2: pack_avx2(src, dst, n, seq); break;
    default: ll_store(dst, src, n, seq); break;
  }
}

void round_to_half(float* x, int64_t n, bool f16, SimdLevel level) {
  if (f16 && level != SimdLevel::Scalar) {
    round_f16_f16c(x, n);
    return;
  }
  if (f16) {
    for (int64_t i = 0; i < n; ++i) x[i] = f16_to_f32(f32_to_f16(x[i]));
  } else {
    for (int64_t i = 0; i < n; ++i) x[i] = bf16_round(x[i]);  // (the compiler vectorizes it)
  }
}

}  // namespace hci
