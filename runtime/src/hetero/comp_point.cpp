#include "hetero/comp_point.h"

// GCC 12 warns inside its own AVX-512 reduction intrinsics (a known false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "error.h"
#include "hetero/handoff.h"
#include "hetero/tagged_words.h"
#include "safetensors.h"  // f32_to_f16 / f32_to_bf16 / f16_to_f32 / bf16_to_f32

namespace hci {

namespace {

// ---- element loads, widened to float32 ------------------------------------------------------
template <FactorType T>
inline float load1(const uint8_t* p) {
  if constexpr (T == FactorType::F32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  } else {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return T == FactorType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
  }
}

constexpr int elem_size(FactorType t) { return t == FactorType::F32 ? 4 : 2; }

// out[b] = Σ_k a[k] · x[b][k] for nb ≤ 4 rows of x; scalar version.
template <FactorType T>
void rowdot_scalar(const uint8_t* a, const float* const* x, int nb, int n, float* out) {
  for (int b = 0; b < nb; ++b) out[b] = 0;
  for (int k = 0; k < n; ++k) {
    const float v = load1<T>(a + size_t(k) * elem_size(T));
    for (int b = 0; b < nb; ++b) out[b] += v * x[b][k];
  }
}

template <FactorType T>
__attribute__((target("avx2,fma,f16c"))) inline __m256 load8(const uint8_t* p) {
  if constexpr (T == FactorType::F32) return _mm256_loadu_ps(reinterpret_cast<const float*>(p));
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if constexpr (T == FactorType::BF16)
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  return _mm256_cvtph_ps(h);
}

__attribute__((target("avx2,fma"))) inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

template <FactorType T>
__attribute__((target("avx2,fma,f16c"))) void rowdot_avx2(const uint8_t* a, const float* const* x,
                                                          int nb, int n, float* out) {
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                   _mm256_setzero_ps()};
  int k = 0;
  if (nb == 1) {  // one row of x: four independent chains to cover the FMA latency
    const float* x0 = x[0];
    for (; k + 32 <= n; k += 32)
      for (int u = 0; u < 4; ++u)
        acc[u] = _mm256_fmadd_ps(load8<T>(a + size_t(k + 8 * u) * elem_size(T)),
                                 _mm256_loadu_ps(x0 + k + 8 * u), acc[u]);
    acc[0] = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    acc[1] = acc[2] = acc[3] = _mm256_setzero_ps();
  }
  for (; k + 8 <= n; k += 8) {
    const __m256 av = load8<T>(a + size_t(k) * elem_size(T));
    for (int b = 0; b < nb; ++b) acc[b] = _mm256_fmadd_ps(av, _mm256_loadu_ps(x[b] + k), acc[b]);
  }
  for (int b = 0; b < nb; ++b) out[b] = hsum8(acc[b]);
  for (; k < n; ++k) {
    const float v = load1<T>(a + size_t(k) * elem_size(T));
    for (int b = 0; b < nb; ++b) out[b] += v * x[b][k];
  }
}

template <FactorType T>
__attribute__((target("avx512f"))) inline __m512 load16(const uint8_t* p) {
  if constexpr (T == FactorType::F32) return _mm512_loadu_ps(reinterpret_cast<const float*>(p));
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  if constexpr (T == FactorType::BF16)
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  return _mm512_cvtph_ps(h);
}

template <FactorType T>
__attribute__((target("avx512f"))) void rowdot_avx512(const uint8_t* a, const float* const* x,
                                                      int nb, int n, float* out) {
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                   _mm512_setzero_ps()};
  int k = 0;
  if (nb == 1) {  // one row of x: four independent chains to cover the FMA latency
    const float* x0 = x[0];
    for (; k + 64 <= n; k += 64)
      for (int u = 0; u < 4; ++u)
        acc[u] = _mm512_fmadd_ps(load16<T>(a + size_t(k + 16 * u) * elem_size(T)),
                                 _mm512_loadu_ps(x0 + k + 16 * u), acc[u]);
    acc[0] = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    acc[1] = acc[2] = acc[3] = _mm512_setzero_ps();
  }
  for (; k + 16 <= n; k += 16) {
    const __m512 av = load16<T>(a + size_t(k) * elem_size(T));
    for (int b = 0; b < nb; ++b) acc[b] = _mm512_fmadd_ps(av, _mm512_loadu_ps(x[b] + k), acc[b]);
  }
  for (int b = 0; b < nb; ++b) out[b] = _mm512_reduce_add_ps(acc[b]);
  for (; k < n; ++k) {
    const float v = load1<T>(a + size_t(k) * elem_size(T));
    for (int b = 0; b < nb; ++b) out[b] += v * x[b][k];
  }
}

// y[c] += s · b[c] for c < n (one row of Bᵀ), scalar / AVX2 / AVX-512.
template <FactorType T>
void axpy_scalar(const uint8_t* b, float s, float* y, int n) {
  for (int c = 0; c < n; ++c) y[c] += s * load1<T>(b + size_t(c) * elem_size(T));
}

template <FactorType T>
__attribute__((target("avx2,fma,f16c"))) void axpy_avx2(const uint8_t* b, float s, float* y,
                                                        int n) {
  const __m256 sv = _mm256_set1_ps(s);
  int c = 0;
  for (; c + 8 <= n; c += 8)
    _mm256_storeu_ps(y + c, _mm256_fmadd_ps(sv, load8<T>(b + size_t(c) * elem_size(T)),
                                            _mm256_loadu_ps(y + c)));
  for (; c < n; ++c) y[c] += s * load1<T>(b + size_t(c) * elem_size(T));
}

template <FactorType T>
__attribute__((target("avx512f"))) void axpy_avx512(const uint8_t* b, float s, float* y, int n) {
  const __m512 sv = _mm512_set1_ps(s);
  int c = 0;
  for (; c + 16 <= n; c += 16)
    _mm512_storeu_ps(y + c, _mm512_fmadd_ps(sv, load16<T>(b + size_t(c) * elem_size(T)),
                                            _mm512_loadu_ps(y + c)));
  for (; c < n; ++c) y[c] += s * load1<T>(b + size_t(c) * elem_size(T));
}

using Axpy = void (*)(const uint8_t*, float, float*, int);

// One column tile of Bᵀ (kBTile columns, rows kBTile elements apart, contiguous): y[0, 64) +=
// Σ_{k<r} t[k] · tile[k]; y stays in registers across the r rows, which stream from memory.
template <FactorType T>
__attribute__((target("avx512f"))) void tile_avx512(const uint8_t* tile, const float* t, int r,
                                                    float* y) {
  static_assert(kBTile == 64, "four 16-lane accumulators");
  __m512 a0 = _mm512_loadu_ps(y), a1 = _mm512_loadu_ps(y + 16), a2 = _mm512_loadu_ps(y + 32),
         a3 = _mm512_loadu_ps(y + 48);
  for (int k = 0; k < r; ++k) {
    const uint8_t* row = tile + size_t(k) * kBTile * elem_size(T);
    const __m512 s = _mm512_set1_ps(t[k]);
    a0 = _mm512_fmadd_ps(s, load16<T>(row), a0);
    a1 = _mm512_fmadd_ps(s, load16<T>(row + 16 * elem_size(T)), a1);
    a2 = _mm512_fmadd_ps(s, load16<T>(row + 32 * elem_size(T)), a2);
    a3 = _mm512_fmadd_ps(s, load16<T>(row + 48 * elem_size(T)), a3);
  }
  _mm512_storeu_ps(y, a0);
  _mm512_storeu_ps(y + 16, a1);
  _mm512_storeu_ps(y + 32, a2);
  _mm512_storeu_ps(y + 48, a3);
}

template <FactorType T>
__attribute__((target("avx2,fma,f16c"))) void tile_avx2(const uint8_t* tile, const float* t, int r,
                                                        float* y) {
  __m256 a[8];
  for (int i = 0; i < 8; ++i) a[i] = _mm256_loadu_ps(y + 8 * i);
  for (int k = 0; k < r; ++k) {
    const uint8_t* row = tile + size_t(k) * kBTile * elem_size(T);
    const __m256 s = _mm256_set1_ps(t[k]);
    for (int i = 0; i < 8; ++i) a[i] = _mm256_fmadd_ps(s, load8<T>(row + 8 * i * elem_size(T)), a[i]);
  }
  for (int i = 0; i < 8; ++i) _mm256_storeu_ps(y + 8 * i, a[i]);
}

template <FactorType T>
void tile_scalar(const uint8_t* tile, const float* t, int r, float* y) {
  for (int k = 0; k < r; ++k)
    for (int c = 0; c < kBTile; ++c)
      y[c] += t[k] * load1<T>(tile + (size_t(k) * kBTile + size_t(c)) * elem_size(T));
}

using TileFn = void (*)(const uint8_t*, const float*, int, float*);

template <FactorType T>
TileFn pick_tile(SimdLevel l) {
  switch (l) {
    case SimdLevel::Avx512: return tile_avx512<T>;
    case SimdLevel::Avx2: return tile_avx2<T>;
    default: return tile_scalar<T>;
  }
}

TileFn pick_tile(FactorType t, SimdLevel l) {
  switch (t) {
    case FactorType::F32: return pick_tile<FactorType::F32>(l);
    case FactorType::BF16: return pick_tile<FactorType::BF16>(l);
    default: return pick_tile<FactorType::F16>(l);
  }
}

template <FactorType T>
Axpy pick_axpy(SimdLevel l) {
  switch (l) {
    case SimdLevel::Avx512: return axpy_avx512<T>;
    case SimdLevel::Avx2: return axpy_avx2<T>;
    default: return axpy_scalar<T>;
  }
}

Axpy pick_axpy(FactorType t, SimdLevel l) {
  switch (t) {
    case FactorType::F32: return pick_axpy<FactorType::F32>(l);
    case FactorType::BF16: return pick_axpy<FactorType::BF16>(l);
    default: return pick_axpy<FactorType::F16>(l);
  }
}

using RowDot = void (*)(const uint8_t*, const float* const*, int, int, float*);

template <FactorType T>
RowDot pick(SimdLevel l) {
  switch (l) {
    case SimdLevel::Avx512: return rowdot_avx512<T>;
    case SimdLevel::Avx2: return rowdot_avx2<T>;
    default: return rowdot_scalar<T>;
  }
}

RowDot pick(FactorType t, SimdLevel l) {
  switch (t) {
    case FactorType::F32: return pick<FactorType::F32>(l);
    case FactorType::BF16: return pick<FactorType::BF16>(l);
    default: return pick<FactorType::F16>(l);
  }
}

// The i-th of w equal slices of [0, n).
inline void slice(int64_t n, int w, int i, int64_t& begin, int64_t& end) {
  begin = n * i / w;
  end = n * (i + 1) / w;
}

}  // namespace

SimdLevel best_simd_level() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return SimdLevel::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return SimdLevel::Avx2;
  return SimdLevel::Scalar;
}

const char* simd_level_name(SimdLevel l) {
  return l == SimdLevel::Avx512 ? "avx512" : l == SimdLevel::Avx2 ? "avx2" : "scalar";
}

CompPoint::CompPoint(int d_in, std::vector<int> d_out, std::vector<int> r_max, FactorType type)
    : d_in_(d_in), d_out_(std::move(d_out)), r_max_(std::move(r_max)), type_(type),
      elem_(elem_size(type)) {
  if (d_in <= 0 || d_out_.empty() || d_out_.size() != r_max_.size())
    fail(HCI_ERR_INVALID_ARGUMENT, "compensation point: bad shapes");
  int64_t b_bytes = 0;
  for (size_t j = 0; j < d_out_.size(); ++j) {
    if (d_out_[j] <= 0 || r_max_[j] < 0)
      fail(HCI_ERR_INVALID_ARGUMENT, "compensation point: bad layer shape");
    row0_.push_back(total_rank_);
    total_rank_ += r_max_[j];
    b_off_.push_back(b_bytes);
    b_bytes += int64_t(d_out_[j]) * r_max_[j] * elem_;
  }
  a_.assign(size_t(total_rank_) * size_t(d_in_) * size_t(elem_), 0);
  b_.assign(size_t(b_bytes), 0);
}

void CompPoint::set_factors(int j, const float* A, const float* B) {
  auto store = [&](uint8_t* dst, const float* src, int64_t count) {
    for (int64_t i = 0; i < count; ++i) {
      if (type_ == FactorType::F32) {
        std::memcpy(dst + 4 * i, src + i, 4);
      } else {
        const uint16_t h = type_ == FactorType::BF16 ? f32_to_bf16(src[i]) : f32_to_f16(src[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
    }
  };
  store(a_.data() + size_t(row0_[size_t(j)]) * size_t(d_in_) * size_t(elem_), A,
        int64_t(r_max_[size_t(j)]) * d_in_);
  // B_j is kept transposed in column tiles (see b_index), so that a worker of phase 2 streams
  // one contiguous block per tile.
  const int dout = d_out_[size_t(j)], r = r_max_[size_t(j)];
  std::vector<float> bt(size_t(dout) * size_t(r));
  for (int i = 0; i < dout; ++i)
    for (int k = 0; k < r; ++k) bt[size_t(b_index(j, i, k))] = B[size_t(i) * size_t(r) + size_t(k)];
  store(b_.data() + b_off_[size_t(j)], bt.data(), int64_t(dout) * r);
}

float CompPoint::a_at(int64_t row, int col) const {
  const uint8_t* p = a_.data() + (size_t(row) * size_t(d_in_) + size_t(col)) * size_t(elem_);
  switch (type_) {
    case FactorType::F32: return load1<FactorType::F32>(p);
    case FactorType::BF16: return load1<FactorType::BF16>(p);
    default: return load1<FactorType::F16>(p);
  }
}

int64_t CompPoint::b_index(int j, int row, int col) const {
  // tile t = row / kBTile holds Bᵀ_j[:, t kBTile + [0, w)), w = kBTile but for a narrower last
  // tile, as r_max_j rows of w contiguous elements
  const int dout = d_out_[size_t(j)], r = r_max_[size_t(j)];
  const int t = row / kBTile, w = std::min(kBTile, dout - t * kBTile);
  return int64_t(t) * kBTile * r + int64_t(col) * w + (row - t * kBTile);
}

float CompPoint::b_at(int j, int row, int col) const {
  const uint8_t* p = b_.data() + b_off_[size_t(j)] + size_t(b_index(j, row, col)) * size_t(elem_);
  switch (type_) {
    case FactorType::F32: return load1<FactorType::F32>(p);
    case FactorType::BF16: return load1<FactorType::BF16>(p);
    default: return load1<FactorType::F16>(p);
  }
}

int64_t CompPoint::bytes_read(const int* ranks) const {
  int64_t s = 0;
  for (int j = 0; j < layers(); ++j) s += int64_t(ranks[j]) * (d_in_ + d_out_[size_t(j)]) * elem_;
  return s;
}

void CompPoint::fill_random(uint64_t seed, float stddev, WorkerPool& pool) {
  // uniform on [-a, a] has standard deviation a / sqrt(3)
  const float a = stddev * 1.7320508f;
  auto fill = [&](std::vector<uint8_t>& buf, uint64_t salt, int w) {
    const int64_t count = int64_t(buf.size()) / elem_;
    int64_t begin, end;
    slice(count, pool.size(), w, begin, end);
    uint64_t s = (seed + 1) * 0x9E3779B97F4A7C15ull ^ (salt + uint64_t(w) * 0xD1B54A32D192ED03ull);
    for (int64_t i = begin; i < end; ++i) {
      s ^= s << 13;  // xorshift64
      s ^= s >> 7;
      s ^= s << 17;
      const float v = a * (float(int64_t(s >> 40) - (int64_t(1) << 23)) / float(1 << 23));
      uint8_t* dst = buf.data() + i * elem_;
      if (type_ == FactorType::F32) {
        std::memcpy(dst, &v, 4);
      } else {
        const uint16_t h = type_ == FactorType::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
        std::memcpy(dst, &h, 2);
      }
    }
  };
  pool.run([&](int w) {
    fill(a_, 1, w);
    fill(b_, 2, w);
  });
}

void CompPoint::apply(const int* ranks, const float* x, int n, float* const* y, float* t,
                      WorkerPool& pool, SimdLevel level, bool accumulate) const {
  run(ranks, x, n, y, nullptr, 0, t, pool, level, accumulate, nullptr, nullptr);
}

void CompPoint::input_columns(int d_in, int w, int W, int* c0, int* c1) {
  auto at = [&](int k) { return k >= W ? d_in : int(int64_t(d_in) * k / W) / 16 * 16; };
  *c0 = at(w);
  *c1 = at(w + 1);
}

void CompPoint::apply_tagged(const int* ranks, const float* x, int n, uint64_t* const* y,
                             uint32_t seq, float* t, WorkerPool& pool, SimdLevel level,
                             const Prologue* before, float* t_part) const {
  if (t_part && n > 16) fail(HCI_ERR_INVALID_ARGUMENT, "compensation point: column split for n <= 16");
  run(ranks, x, n, nullptr, y, seq, t, pool, level, false, before, t_part);
}

void CompPoint::run(const int* ranks, const float* x, int n, float* const* y,
                    uint64_t* const* yt, uint32_t seq, float* t, WorkerPool& pool,
                    SimdLevel level, bool accumulate, const Prologue* before,
                    float* t_part) const {
  const RowDot dot = pick(type_, level);
  const int L = layers();
  for (int j = 0; j < L; ++j)
    if (ranks[j] < 0 || ranks[j] > r_max_[size_t(j)])
      fail(HCI_ERR_INVALID_ARGUMENT, "compensation point: rank out of range");
  // Active A rows, flattened: layer j contributes ranks[j] rows starting at row0_j.
  int64_t active = 0;
  for (int j = 0; j < L; ++j) active += ranks[j];
  int64_t outputs = 0;
  for (int j = 0; j < L; ++j) outputs += ranks[j] > 0 ? d_out_[size_t(j)] : 0;
  // Layers at rank 0 without accumulation: zeros. Tagged words only after the prologue (it
  // reads the hand-off's input; until all of it is there the GPU may still read the last Y).
  auto zero_rank0 = [&] {
    if (accumulate) return;
    for (int j = 0; j < L; ++j) {
      if (ranks[j] != 0) continue;
      const int64_t cnt = int64_t(n) * d_out_[size_t(j)];
      if (yt)
        for (int64_t i = 0; i < cnt; ++i) ll_at(yt[j] + i)->store(ll_pack(0.f, seq), std::memory_order_relaxed);
      else
        std::memset(y[j], 0, size_t(cnt) * 4);
    }
  };
  const int W = pool.size();
  const int T = total_rank_;
  // Phase 1: t[b, row0_j + k] = A_j[k] · x[b]
  auto phase1 = [&](int w) {
    int64_t begin, end;
    slice(active, W, w, begin, end);
    int j = 0;
    int64_t base = 0;
    for (int64_t i = begin; i < end; ++i) {
      while (i >= base + ranks[j]) base += ranks[j++];
      const int64_t row = row0_[size_t(j)] + (i - base);
      const uint8_t* a = a_.data() + size_t(row) * size_t(d_in_) * size_t(elem_);
      for (int b0 = 0; b0 < n; b0 += 4) {
        const int nb = std::min(4, n - b0);
        const float* xs[4];
        float out[4];
        for (int b = 0; b < nb; ++b) xs[b] = x + size_t(b0 + b) * size_t(d_in_);
        dot(a, xs, nb, d_in_, out);
        for (int b = 0; b < nb; ++b) t[size_t(b0 + b) * size_t(T) + size_t(row)] = out[b];
      }
    }
  };
  // Phase 1, column-split: t_part[w, b, row0_j + k] = A_j[k, c0:c1] · x[b, c0:c1]
  auto phase1_columns = [&](int w) {
    int c0, c1;
    input_columns(d_in_, w, W, &c0, &c1);
    float* tp = t_part + size_t(w) * size_t(n) * size_t(T);
    for (int j = 0; j < L; ++j)
      for (int k = 0; k < ranks[j]; ++k) {
        const int64_t row = row0_[size_t(j)] + k;
        const uint8_t* a = a_.data() + (size_t(row) * size_t(d_in_) + size_t(c0)) * size_t(elem_);
        for (int b0 = 0; b0 < n; b0 += 4) {
          const int nb = std::min(4, n - b0);
          const float* xs[4];
          float out[4] = {0.f, 0.f, 0.f, 0.f};
          for (int b = 0; b < nb; ++b) xs[b] = x + size_t(b0 + b) * size_t(d_in_) + size_t(c0);
          if (c1 > c0) dot(a, xs, nb, c1 - c0, out);
          for (int b = 0; b < nb; ++b) tp[size_t(b0 + b) * size_t(T) + size_t(row)] = out[b];
        }
      }
  };
  // ... and its sums, each worker for itself (t is then per worker: t + w · n · T)
  auto sum_columns = [&](int w) {
    float* tw = t + size_t(w) * size_t(n) * size_t(T);
    for (int b = 0; b < n; ++b)
      for (int j = 0; j < L; ++j)
        for (int k = 0; k < ranks[j]; ++k) {
          const size_t i = size_t(b) * size_t(T) + size_t(row0_[size_t(j)] + k);
          float s = 0.f;
          for (int v = 0; v < W; ++v) s += t_part[size_t(v) * size_t(n) * size_t(T) + i];
          tw[i] = s;
        }
  };
  // Phase 2: y_j[b, c] += Σ_k t[b, row0_j + k] · Bᵀ_j[k, c], each worker a slice of the
  // active layers' column tiles: a tile's rows k < rank are one contiguous block (the first
  // layout, rows of the whole Bᵀ_j, made each worker read rank short pieces d_out_j apart: 52%
  // of the host read bandwidth at rank 128 on the 16-core GPU host), and its kBTile outputs stay
  // in registers while they stream.
  const TileFn tile_fn = pick_tile(type_, level);
  const Axpy axpy = pick_axpy(type_, level);
  auto phase2 = [&](int w, const float* t) {
    worker_tiles(ranks, w, W, [&](int j, int c0, int wt, const uint8_t* tile) {
      const int dout = d_out_[size_t(j)], rk = ranks[j];
      for (int b = 0; b < n; ++b) {
        const float* tb = t + size_t(b) * size_t(T) + size_t(row0_[size_t(j)]);
        // tagged output: the tile in a local buffer, then packed (one 8-byte store a word)
        alignas(64) float local[kBTile];
        float* yb = yt ? local : y[j] + size_t(b) * size_t(dout) + size_t(c0);
        if (!accumulate) std::memset(yb, 0, size_t(wt) * 4);
        if (wt == kBTile) {
          tile_fn(tile, tb, rk, yb);
        } else {
          for (int k = 0; k < rk; ++k)
            axpy(tile + size_t(k) * size_t(wt) * size_t(elem_), tb[k], yb, wt);
        }
        if (yt) tagged_pack(local, yt[j] + size_t(b) * size_t(dout) + size_t(c0), wt, seq, level);
      }
      return true;
    });
  };
  // One parallel section: the prologue, the A pass and the B pass, separated by a spinning
  // barrier (a fork-join per phase cost ~0.5 us each at 8 workers).
  SpinBarrier bar(W);
  pool.run([&](int w) {
    if (t_part) {  // the prologue left this worker's columns of x: no barrier before the A pass
      if (before) (*before)(w, W, bar);
      phase1_columns(w);
      bar.wait();
      if (w == 0) zero_rank0();
      sum_columns(w);
      phase2(w, t + size_t(w) * size_t(n) * size_t(T));
      return;
    }
    if (before) {
      (*before)(w, W, bar);
      bar.wait();
    }
    if (w == 0) zero_rank0();
    phase1(w);
    bar.wait();
    phase2(w, t);
  });
}

bool CompPoint::worker_tiles(const int* ranks, int w, int W, const TileVisitor& fn) const {
  const int L = layers();
  int64_t tiles = 0;
  for (int j = 0; j < L; ++j) tiles += ranks[j] > 0 ? (d_out_[size_t(j)] + kBTile - 1) / kBTile : 0;
  int64_t begin, end;
  slice(tiles, W, w, begin, end);
  int64_t base = 0;
  for (int j = 0; j < L && base < end; ++j) {
    const int dout = d_out_[size_t(j)], r = r_max_[size_t(j)];
    const int64_t nt = ranks[j] > 0 ? (dout + kBTile - 1) / kBTile : 0;
    const int64_t t0 = std::max(begin, base) - base, t1 = std::min(end, base + nt) - base;
    base += nt;
    for (int64_t ti = t0; ti < t1; ++ti) {
      const int c0 = int(ti) * kBTile, wt = std::min(kBTile, dout - c0);
      const uint8_t* tile = b_.data() + b_off_[size_t(j)] + size_t(c0) * size_t(r) * size_t(elem_);
      if (!fn(j, c0, wt, tile)) return false;
    }
  }
  return true;
}

bool CompPoint::worker_ranges(const int* ranks, int w, int W, const RangeVisitor& visit) const {
  int c0, c1;
  input_columns(d_in_, w, W, &c0, &c1);
  if (c1 > c0)
    for (int j = 0; j < layers(); ++j)
      for (int k = 0; k < ranks[j]; ++k) {
        const size_t row = size_t(row0_[size_t(j)] + k);
        if (!visit(a_.data() + (row * size_t(d_in_) + size_t(c0)) * size_t(elem_),
                   int64_t(c1 - c0) * elem_))
          return false;
      }
  // a tile's rows k < rank are one contiguous block (rows of `width` elements)
  return worker_tiles(ranks, w, W, [&](int j, int, int wt, const uint8_t* tile) {
    return visit(tile, int64_t(ranks[j]) * wt * elem_);
  });
}

void CompPoint::apply_reference(const int* ranks, const float* x, int n, double* const* y) const {
  for (int j = 0; j < layers(); ++j) {
    const int r = ranks[j], dout = d_out_[size_t(j)];
    for (int b = 0; b < n; ++b) {
      std::vector<double> tj(size_t(r), 0.0);
      for (int k = 0; k < r; ++k)
        for (int c = 0; c < d_in_; ++c)
          tj[size_t(k)] += double(a_at(row0_[size_t(j)] + k, c)) * x[size_t(b) * size_t(d_in_) + size_t(c)];
      for (int i = 0; i < dout; ++i) {
        double s = 0;
        for (int k = 0; k < r; ++k) s += double(b_at(j, i, k)) * tj[size_t(k)];
        y[j][size_t(b) * size_t(dout) + size_t(i)] += s;
      }
    }
  }
}

}  // namespace hci
