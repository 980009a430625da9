#include "pack.h"

#include <cstring>

#include "safetensors.h"

namespace hci::gpu {

const char* packed_shape_problem(const PackedShape& s) {
  if (s.bits != 2 && s.bits != 3 && s.bits != 4 && s.bits != 8) return "bits must be 2, 3, 4 or 8";
  if (s.d_in <= 0 || s.d_in % 64 != 0) return "the input size must be a multiple of 64";
  if (s.group <= 0 || s.d_in % s.group != 0) return "the group size must divide the input size";
  if (s.group != s.d_in && s.group % 32 != 0) return "the group size must be a multiple of 32";
  return "";
}

namespace {
inline void put_bits(uint8_t* row, int64_t word, int shift, uint32_t v) {
  uint32_t w;
  std::memcpy(&w, row + word * 4, 4);
  w |= v << shift;
  std::memcpy(row + word * 4, &w, 4);
}
inline uint32_t get_bits(const uint8_t* row, int64_t word, int shift, uint32_t mask) {
  uint32_t w;
  std::memcpy(&w, row + word * 4, 4);
  return (w >> shift) & mask;
}
}  // namespace

void pack_codes(const PackedShape& s, const uint8_t* codes, uint8_t* lo, uint8_t* hi) {
  const int64_t lrb = s.lo_row_bytes(), hrb = s.hi_row_bytes();
  std::memset(lo, 0, size_t(s.lo_bytes()));
  if (s.bits == 3) std::memset(hi, 0, size_t(s.hi_bytes()));
  for (int r = 0; r < s.d_out; ++r) {
    const uint8_t* c = codes + int64_t(r) * s.d_in;
    uint8_t* L = lo + r * lrb;
    uint8_t* H = s.bits == 3 ? hi + r * hrb : nullptr;
    for (int k = 0; k < s.d_in; ++k) {
      const uint32_t v = c[k];
      switch (s.bits) {
        case 8: L[k] = uint8_t(v); break;
        case 4: {
          const int j = k / 8, i = k % 8;
          put_bits(L, j, 4 * ((i / 2) + 4 * (i % 2)), v & 0xF);
          break;
        }
        case 2:
        case 3: {
          const int j = k / 16, i = k % 16;
          put_bits(L, j, 2 * ((i / 2) + 8 * (i % 2)), v & 0x3);
          if (s.bits == 3) {
            const int jh = k / 32, ih = k % 32;
            put_bits(H, jh, (ih / 2) + 16 * (ih % 2), (v >> 2) & 1);
          }
          break;
        }
      }
    }
  }
}

void unpack_codes(const PackedShape& s, const uint8_t* lo, const uint8_t* hi, uint8_t* codes) {
  const int64_t lrb = s.lo_row_bytes(), hrb = s.hi_row_bytes();
  for (int r = 0; r < s.d_out; ++r) {
    uint8_t* c = codes + int64_t(r) * s.d_in;
    const uint8_t* L = lo + r * lrb;
    const uint8_t* H = s.bits == 3 ? hi + r * hrb : nullptr;
    for (int k = 0; k < s.d_in; ++k) {
      switch (s.bits) {
        case 8: c[k] = L[k]; break;
        case 4: c[k] = uint8_t(get_bits(L, k / 8, 4 * (((k % 8) / 2) + 4 * (k % 2)), 0xF)); break;
        case 2:
        case 3: {
          uint32_t v = get_bits(L, k / 16, 2 * (((k % 16) / 2) + 8 * (k % 2)), 0x3);
          if (s.bits == 3) v |= get_bits(H, k / 32, ((k % 32) / 2) + 16 * (k % 2), 1) << 2;
          c[k] = uint8_t(v);
          break;
        }
      }
    }
  }
}

void pack_scales(const PackedShape& s, const float* scales, const float* zeros, uint16_t* sz) {
  const int64_t n = int64_t(s.d_out) * s.n_groups();
  for (int64_t i = 0; i < n; ++i) {
    sz[2 * i] = host_f32_to_f16(scales[i]);
    sz[2 * i + 1] = host_f32_to_f16(zeros[i]);
  }
}

void ref_qgemv(const PackedShape& s, const uint8_t* codes, const float* scales,
               const float* zeros, const float* x, int nb, double* y) {
  const int G = s.n_groups();
  for (int b = 0; b < nb; ++b)
    for (int r = 0; r < s.d_out; ++r) {
      double acc = 0;
      for (int k = 0; k < s.d_in; ++k) {
        const int g = k / s.group;
        const double w = (double(codes[int64_t(r) * s.d_in + k]) - zeros[int64_t(r) * G + g]) *
                         scales[int64_t(r) * G + g];
        acc += w * x[int64_t(b) * s.d_in + k];
      }
      y[int64_t(b) * s.d_out + r] = acc;
    }
}

void ref_gemv(const float* w, int d_out, int d_in, const float* x, int nb, double* y) {
  for (int b = 0; b < nb; ++b)
    for (int r = 0; r < d_out; ++r) {
      double acc = 0;
      for (int k = 0; k < d_in; ++k) acc += double(w[int64_t(r) * d_in + k]) * x[int64_t(b) * d_in + k];
      y[int64_t(b) * d_out + r] = acc;
    }
}

uint16_t host_f32_to_f16(float f) { return f32_to_f16(f); }

float host_f16_to_f32(uint16_t h) { return f16_to_f32(h); }

uint16_t host_f32_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7FFFFFFF) > 0x7F800000) return uint16_t((x >> 16) | 0x40);
  x += 0x7FFF + ((x >> 16) & 1);
  return uint16_t(x >> 16);
}

float host_bf16_to_f32(uint16_t h) {
  const uint32_t x = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

}  // namespace hci::gpu
