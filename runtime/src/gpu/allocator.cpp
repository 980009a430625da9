#include "allocator.h"

#include "common.h"

namespace hci::gpu {

DeviceAllocator::~DeviceAllocator() {
  for (auto& [p, n] : sizes_) cudaFree(p);
}

void* DeviceAllocator::alloc(int64_t bytes, const std::string& what) {
  if (bytes <= 0) bytes = 1;
  const int64_t n = charge(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  if (cap_ > 0 && used_ + n > cap_)
    fail(HCI_ERR_OUT_OF_MEMORY, "GPU memory budget exceeded: allocating " + gib(n) + " for " +
                                    what + " with " + gib(used_) + " in use would pass the cap of " +
                                    gib(cap_));
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, size_t(n));
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error state of the runtime
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    fail(HCI_ERR_OUT_OF_MEMORY, "cudaMalloc of " + gib(n) + " for " + what + " failed (" +
                                    cudaGetErrorString(e) + "); device free " +
                                    gib(int64_t(free_b)) + " of " + gib(int64_t(total_b)));
  }
  sizes_[p] = n;
  used_ += n;
  if (used_ > peak_) peak_ = used_;
  return p;
}

void DeviceAllocator::free(void* p) {
  if (!p) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sizes_.find(p);
  if (it == sizes_.end()) return;
  used_ -= it->second;
  sizes_.erase(it);
  cudaFree(p);
}

PinnedBuffer::PinnedBuffer(int64_t bytes) : bytes_(bytes) {
  const cudaError_t e = cudaHostAlloc(&p_, size_t(bytes), cudaHostAllocDefault);
  if (e != cudaSuccess) {
    cudaGetLastError();
    p_ = nullptr;
    fail(HCI_ERR_OUT_OF_MEMORY, "cudaHostAlloc of " + gib(bytes) + " pinned host memory failed (" +
                                    cudaGetErrorString(e) + ")");
  }
}

PinnedBuffer::~PinnedBuffer() {
  if (p_) cudaFreeHost(p_);
}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& o) noexcept {
  if (this != &o) {
    if (p_) cudaFreeHost(p_);
    p_ = o.p_;
    bytes_ = o.bytes_;
    o.p_ = nullptr;
  }
  return *this;
}

}  // namespace hci::gpu
