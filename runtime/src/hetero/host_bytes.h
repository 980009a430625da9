// Zeroed host memory for a compensation point's factors. Blocks of 2 MiB and more are 2 MiB
// aligned and marked for transparent huge pages (Linux madvise, before the first touch), so that
// the workers streaming them walk one TLB entry per 2 MiB instead of one per 4 KiB page; whether
// the kernel grants them depends on its THP setting ("never" leaves 4 KiB pages).
// HCINFER_FACTOR_HUGEPAGES=0 turns the advice off (A/B measurements).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

namespace hci {

class HostBytes {
 public:
  // n zero bytes (the previous block is freed)
  void assign(size_t n);
  uint8_t* data() { return p_.get(); }
  const uint8_t* data() const { return p_.get(); }
  size_t size() const { return n_; }
  // whether the block was advised for huge pages
  bool huge_advised() const { return huge_; }

 private:
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t[], Free> p_;
  size_t n_ = 0;
  bool huge_ = false;
};

}  // namespace hci
