#include "safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "error.h"
#include "json.h"

namespace hci {

float bf16_to_f32(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1F;
  uint32_t man = h & 0x3FF;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: renormalize
      int e = -1;
      do {
        ++e;
        man <<= 1;
      } while ((man & 0x400) == 0);
      bits = sign | uint32_t(127 - 15 - e) << 23 | (man & 0x3FF) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7F800000u | man << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  int32_t exp = int32_t((x >> 23) & 0xFF) - 127 + 15;
  uint32_t man = x & 0x7FFFFF;
  if (((x >> 23) & 0xFF) == 0xFF) return uint16_t(sign | 0x7C00 | (man ? 0x200 : 0));
  if (exp >= 31) return uint16_t(sign | 0x7C00);
  if (exp <= 0) {
    if (exp < -10) return uint16_t(sign);
    man |= 0x800000;
    int shift = 14 - exp;
    uint32_t half = man >> shift;
    uint32_t rem = man & ((1u << shift) - 1);
    uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) ++half;
    return uint16_t(sign | half);
  }
  uint32_t half = sign | uint32_t(exp) << 10 | man >> 13;
  uint32_t rem = man & 0x1FFF;
  if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) ++half;  // may carry into exponent: correct
  return uint16_t(half);
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

void TensorView::to_f32(float* out) const {
  const int64_t n = numel();
  switch (dtype) {
    case DType::F32:
      std::memcpy(out, data, size_t(n) * 4);
      break;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, data + 2 * i, 2);
        out[i] = f16_to_f32(h);
      }
      break;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, data + 2 * i, 2);
        out[i] = bf16_to_f32(h);
      }
      break;
  }
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    fail(HCI_ERR_IO, path + ": cannot open safetensors file: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    fail(HCI_ERR_IO, path + ": cannot stat: " + std::strerror(errno));
  }
  size_ = size_t(st.st_size);
  if (size_ < 8) {
    ::close(fd);
    fail(HCI_ERR_FORMAT, path + ": truncated safetensors file (" + std::to_string(size_) +
                             " bytes, the 8-byte header length alone is missing)");
  }
  map_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    fail(HCI_ERR_IO, path + ": mmap failed: " + std::strerror(errno));
  }
  const uint8_t* base = static_cast<const uint8_t*>(map_);
  uint64_t header_len = 0;
  std::memcpy(&header_len, base, 8);  // little-endian on x86-64
  if (header_len > size_ - 8) {
    std::string msg = path + ": truncated safetensors file: header claims " +
                      std::to_string(header_len) + " bytes but the file has only " +
                      std::to_string(size_ - 8) + " after the length field";
    ::munmap(map_, size_);
    map_ = nullptr;
    fail(HCI_ERR_FORMAT, msg);
  }
  try {
    Json header = parse_json(std::string(reinterpret_cast<const char*>(base + 8), header_len),
                             path + " (safetensors header)");
    if (!header.is_object()) fail(HCI_ERR_FORMAT, path + ": safetensors header is not an object");
    const uint8_t* data = base + 8 + header_len;
    const uint64_t data_size = size_ - 8 - header_len;
    for (const auto& [name, t] : header.object) {
      if (name == "__metadata__") continue;
      const std::string where = path + ": tensor '" + name + "'";
      const Json* dt = t.find("dtype");
      const Json* shape = t.find("shape");
      const Json* offs = t.find("data_offsets");
      if (!dt || !dt->is_string() || !shape || !shape->is_array() || !offs || !offs->is_array() ||
          offs->array.size() != 2)
        fail(HCI_ERR_FORMAT, where + ": header entry needs dtype, shape and data_offsets [begin, end]");
      TensorView v;
      v.name = name;
      v.file = path;
      size_t elem = 0;
      if (dt->string == "F32") {
        v.dtype = DType::F32;
        elem = 4;
      } else if (dt->string == "F16") {
        v.dtype = DType::F16;
        elem = 2;
      } else if (dt->string == "BF16") {
        v.dtype = DType::BF16;
        elem = 2;
      } else {
        fail(HCI_ERR_UNSUPPORTED,
             where + ": dtype " + dt->string + " is not supported (F32, F16, BF16 are)");
      }
      uint64_t numel = 1;
      for (const Json& d : shape->array) {
        if (!d.is_number() || d.number < 0 || d.number != std::floor(d.number) || d.number > 1e12)
          fail(HCI_ERR_FORMAT, where + ": bad dimension in shape");
        v.shape.push_back(int64_t(d.number));
        numel *= uint64_t(d.number);
      }
      for (const Json& o : offs->array)
        if (!o.is_number() || o.number < 0 || o.number != std::floor(o.number))
          fail(HCI_ERR_FORMAT, where + ": data_offsets must be non-negative integers");
      const uint64_t begin = uint64_t(offs->array[0].number);
      const uint64_t end = uint64_t(offs->array[1].number);
      if (begin > end || end > data_size)
        fail(HCI_ERR_FORMAT, where + ": data_offsets [" + std::to_string(begin) + ", " +
                                 std::to_string(end) + "] out of range: the data section has " +
                                 std::to_string(data_size) + " bytes (truncated or corrupt file?)");
      if (end - begin != numel * elem)
        fail(HCI_ERR_FORMAT, where + ": data_offsets span " + std::to_string(end - begin) +
                                 " bytes but shape and dtype need " + std::to_string(numel * elem));
      v.data = data + begin;
      v.nbytes = size_t(end - begin);
      tensors_.emplace(name, std::move(v));
    }
  } catch (...) {
    ::munmap(map_, size_);
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, size_);
}

static bool file_exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

static std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(HCI_ERR_IO, path + ": cannot read: " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Checkpoint::Checkpoint(const std::string& dir) : dir_(dir) {
  const std::string single = dir + "/model.safetensors";
  const std::string index_path = dir + "/model.safetensors.index.json";
  std::vector<std::string> shard_files;
  std::map<std::string, std::string> weight_map;
  if (file_exists(index_path)) {
    Json idx = parse_json(read_text_file(index_path), index_path);
    const Json* wm = idx.find("weight_map");
    if (!wm || !wm->is_object())
      fail(HCI_ERR_FORMAT, index_path + ": missing object 'weight_map'");
    std::set<std::string> seen;
    for (const auto& [name, file] : wm->object) {
      if (!file.is_string()) fail(HCI_ERR_FORMAT, index_path + ": weight_map['" + name + "'] is not a string");
      if (file.string.find('/') != std::string::npos)
        fail(HCI_ERR_FORMAT, index_path + ": shard name '" + file.string + "' must be a plain file name");
      weight_map[name] = file.string;
      if (seen.insert(file.string).second) shard_files.push_back(file.string);
    }
    for (const std::string& f : shard_files)
      if (!file_exists(dir + "/" + f))
        fail(HCI_ERR_IO, dir + "/" + f + ": shard listed in " + index_path + " is missing");
  } else if (file_exists(single)) {
    shard_files.push_back("model.safetensors");
  } else {
    fail(HCI_ERR_IO, dir + ": no model.safetensors or model.safetensors.index.json found");
  }
  for (const std::string& f : shard_files) {
    files_.push_back(std::make_unique<SafetensorsFile>(dir + "/" + f));
    for (const auto& [name, view] : files_.back()->tensors()) {
      if (!weight_map.empty()) {
        auto it = weight_map.find(name);
        if (it == weight_map.end() || it->second != f) continue;  // the index decides
      }
      index_[name] = &view;
    }
  }
  for (const auto& [name, file] : weight_map)
    if (!index_.count(name))
      fail(HCI_ERR_FORMAT, dir + "/" + file + ": tensor '" + name +
                               "' listed in model.safetensors.index.json is not in that shard");
}

const TensorView* Checkpoint::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

const TensorView& Checkpoint::get(const std::string& name) const {
  const TensorView* t = find(name);
  if (!t) fail(HCI_ERR_FORMAT, dir_ + ": tensor '" + name + "' not found in the checkpoint");
  return *t;
}

std::vector<std::string> Checkpoint::files() const {
  std::vector<std::string> out;
  for (const auto& f : files_) out.push_back(f->path());
  return out;
}

}  // namespace hci
