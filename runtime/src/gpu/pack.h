// Packed layouts of quantized weights on the GPU, the CPU packers that build them from the
// model's codes, and CPU references of the GPU kernels (used by the tests). No CUDA here.
//
// A quantized matrix [d_out, d_in] (bits b, group size g, codes in [0, 2^b)) is stored per row:
//   plane "lo": d_in * b' / 8 bytes per row, b' = 2 for 3-bit, else b;
//   plane "hi": 3-bit only, d_in / 8 bytes per row (bit 2 of each code);
//   "sz":      [d_out, d_in / g] pairs of fp16 (scale, zero), 4 bytes each.
// Inside a row, 32-bit little-endian words hold the codes so that one mask-and-or extracts two
// neighbouring codes (k, k+1) as the halves of an fp16 pair 1024 + code (the 0x6400 trick):
//   8-bit: byte k = code k (pairs come from byte_perm)
//   4-bit: word j covers k = 8j..8j+7;   nibble s (s < 4) = code 8j+2s,   nibble s+4 = 8j+2s+1
//   2-bit: word j covers k = 16j..16j+15; field s (s < 8) = code 16j+2s,  field s+8 = 16j+2s+1
//   3-bit: lo plane as 2-bit with the low two bits; hi plane word j covers k = 32j..32j+31:
//          bit s (s < 16) = bit 2 of code 32j+2s, bit s+16 = bit 2 of code 32j+2s+1
// A GEMV lane reads one 16-byte vector of the lo plane per step: 32 codes (8-bit: two vectors),
// 4-bit: 32, 2- and 3-bit: 64 (3-bit also 8 bytes of the hi plane). d_in must be a multiple of 64
// and g a multiple of 32 (or d_in).
#pragma once

#include <cstdint>
#include <vector>

namespace hci::gpu {

struct PackedShape {
  int d_out = 0, d_in = 0, bits = 0, group = 0;
  int n_groups() const { return d_in / group; }
  int64_t lo_row_bytes() const { return int64_t(d_in) * (bits == 3 ? 2 : bits) / 8; }
  int64_t hi_row_bytes() const { return bits == 3 ? d_in / 8 : 0; }
  int64_t lo_bytes() const { return int64_t(d_out) * lo_row_bytes(); }
  int64_t hi_bytes() const { return int64_t(d_out) * hi_row_bytes(); }
  int64_t sz_bytes() const { return int64_t(d_out) * n_groups() * 4; }
};

// Empty string when the shape is supported, else why not.
const char* packed_shape_problem(const PackedShape& s);

// Packs codes [d_out, d_in] into lo [lo_bytes] and hi [hi_bytes] (hi unused unless 3-bit).
void pack_codes(const PackedShape& s, const uint8_t* codes, uint8_t* lo, uint8_t* hi);
// Inverse of pack_codes (for tests).
void unpack_codes(const PackedShape& s, const uint8_t* lo, const uint8_t* hi, uint8_t* codes);
// sz [d_out, n_groups] as fp16 pairs (scale, zero) from float scales and zeros of that shape.
void pack_scales(const PackedShape& s, const float* scales, const float* zeros, uint16_t* sz);

// References in float64 (tests):
// y[b, r] (+)= sum_k (code[r,k] - zero[r,g]) * scale[r,g] * x[b, k], x [nb, d_in] row-major.
void ref_qgemv(const PackedShape& s, const uint8_t* codes, const float* scales,
               const float* zeros, const float* x, int nb, double* y);
// y[b, r] = sum_k w[r, k] x[b, k].
void ref_gemv(const float* w, int d_out, int d_in, const float* x, int nb, double* y);

// fp16 / bf16 conversions on the host (round to nearest even).
uint16_t host_f32_to_f16(float f);
float host_f16_to_f32(uint16_t h);
uint16_t host_f32_to_bf16(float f);
float host_bf16_to_f32(uint16_t h);

}  // namespace hci::gpu
