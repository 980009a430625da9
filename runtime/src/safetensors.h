// Memory-mapped reader for Hugging Face safetensors checkpoints, one file or sharded with a
// model.safetensors.index.json. Every header is validated before any tensor is touched: header
// length, JSON, dtype, shape, and that data_offsets lie inside the file and match the shape.
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace hci {

enum class DType { F32, F16, BF16 };

struct TensorView {
  std::string name;
  std::string file;            // the safetensors file holding it (for error messages)
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // row-major
  const uint8_t* data = nullptr;  // into the mapping; valid while the file is open
  size_t nbytes = 0;

  int64_t numel() const;
  // Converts to float32 into out[numel()].
  void to_f32(float* out) const;
};

// One mapped safetensors file.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  std::map<std::string, TensorView> tensors_;
};

// All tensors of a checkpoint directory (single file or index + shards).
class Checkpoint {
 public:
  explicit Checkpoint(const std::string& dir);
  // The tensor, or nullptr when absent.
  const TensorView* find(const std::string& name) const;
  // The tensor; throws HCI_ERR_FORMAT naming the tensor and the directory when absent.
  const TensorView& get(const std::string& name) const;
  const std::string& dir() const { return dir_; }
  // Files read, for provenance and messages.
  std::vector<std::string> files() const;

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> index_;
};

float bf16_to_f32(uint16_t h);
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);  // round to nearest even; used to hold scales at fp16 precision
// Round to nearest even (as __float2bfloat16); inf and NaN keep their class. Inline: it sits in
// loops the compiler vectorizes (the CPU compensation server's rounding of normalized rows).
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7F800000u) == 0x7F800000u) return uint16_t(u >> 16 | ((u & 0xFFFFu) ? 0x40u : 0u));
  u += 0x7FFFu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

}  // namespace hci
