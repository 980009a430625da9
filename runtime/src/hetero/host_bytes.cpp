#include "hetero/host_bytes.h"

#include <sys/mman.h>

#include <cstring>
#include <new>

namespace hci {

namespace {
constexpr size_t kHuge = size_t(2) << 20;

bool huge_pages_wanted() {
  static const bool on = [] {
    const char* e = std::getenv("HCINFER_FACTOR_HUGEPAGES");
    return !(e && e[0] == '0');
  }();
  return on;
}
}  // namespace

void HostBytes::assign(size_t n) {
  p_.reset();
  n_ = 0;
  huge_ = false;
  if (n == 0) return;
  const bool huge = n >= kHuge && huge_pages_wanted();
  const size_t align = huge ? kHuge : 64;
  const size_t padded = (n + align - 1) / align * align;  // aligned_alloc wants a multiple
  void* p = std::aligned_alloc(align, padded);
  if (!p) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  if (huge) huge_ = madvise(p, padded, MADV_HUGEPAGE) == 0;
#endif
  std::memset(p, 0, n);
  p_.reset(static_cast<uint8_t*>(p));
  n_ = n;
}

}  // namespace hci
