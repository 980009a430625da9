// The library's device allocator: every device allocation of a GPU model goes through one of
// these, which enforces a byte cap (to emulate a smaller GPU) and records the peak.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

namespace hci::gpu {

class DeviceAllocator {
 public:
  // cap_bytes 0 = no cap (the device's own memory is the limit).
  explicit DeviceAllocator(int64_t cap_bytes = 0) : cap_(cap_bytes) {}
  ~DeviceAllocator();
  DeviceAllocator(const DeviceAllocator&) = delete;
  DeviceAllocator& operator=(const DeviceAllocator&) = delete;

  // cudaMalloc of `bytes` (rounded up to 256) for `what`; throws HCI_ERR_OUT_OF_MEMORY naming
  // `what`, the request, the bytes in use and the cap when the cap would be exceeded.
  void* alloc(int64_t bytes, const std::string& what);
  void free(void* p);  // nullptr is a no-op

  int64_t cap() const { return cap_; }
  int64_t used() const { return used_; }
  int64_t peak() const { return peak_; }
  // Rounded size alloc() charges for `bytes`.
  static int64_t charge(int64_t bytes) { return (bytes + 255) / 256 * 256; }

 private:
  int64_t cap_;
  int64_t used_ = 0;
  int64_t peak_ = 0;
  std::unordered_map<void*, int64_t> sizes_;
  std::mutex mu_;
};

// A device buffer owned through an allocator (move-only).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(DeviceAllocator& a, int64_t bytes, const std::string& what)
      : a_(&a), p_(a.alloc(bytes, what)), bytes_(bytes) {}
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept : a_(o.a_), p_(o.p_), bytes_(o.bytes_) {
    o.p_ = nullptr;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      a_ = o.a_;
      p_ = o.p_;
      bytes_ = o.bytes_;
      o.p_ = nullptr;
    }
    return *this;
  }
  void reset() {
    if (p_ && a_) a_->free(p_);
    p_ = nullptr;
  }
  template <typename T = void>
  T* as() const { return static_cast<T*>(p_); }
  void* get() const { return p_; }
  int64_t bytes() const { return bytes_; }

 private:
  DeviceAllocator* a_ = nullptr;
  void* p_ = nullptr;
  int64_t bytes_ = 0;
};

// Pinned (page-locked) host memory, for offloaded weights.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(int64_t bytes);
  ~PinnedBuffer();
  PinnedBuffer(PinnedBuffer&& o) noexcept : p_(o.p_), bytes_(o.bytes_) { o.p_ = nullptr; }
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  uint8_t* data() const { return static_cast<uint8_t*>(p_); }
  int64_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  int64_t bytes_ = 0;
};

}  // namespace hci::gpu
