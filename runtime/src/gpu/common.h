// Host-side helpers of the CUDA backend: error checks that throw hci::Error (the C ABI's guard
// turns them into a status and message), and small utilities shared by the .cu and .cpp files.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "error.h"

namespace hci::gpu {

// Throws hci::Error naming the failed call, the CUDA error and where.
[[noreturn]] inline void cuda_fail(cudaError_t e, const char* what, const char* file, int line) {
  const hci_status st =
      e == cudaErrorMemoryAllocation ? HCI_ERR_OUT_OF_MEMORY : HCI_ERR_INTERNAL;
  fail(st, std::string("CUDA error in ") + what + ": " + cudaGetErrorName(e) + " (" +
               cudaGetErrorString(e) + ") at " + file + ":" + std::to_string(line));
}

#define HCI_CUDA(call)                                                             \
  do {                                                                             \
    const cudaError_t e_ = (call);                                                 \
    if (e_ != cudaSuccess) ::hci::gpu::cuda_fail(e_, #call, __FILE__, __LINE__);   \
  } while (0)

// After a kernel launch: reports a bad launch configuration at once (no synchronization).
#define HCI_LAUNCH_CHECK(name)                                                     \
  do {                                                                             \
    const cudaError_t e_ = cudaPeekAtLastError();                                  \
    if (e_ != cudaSuccess) ::hci::gpu::cuda_fail(e_, name, __FILE__, __LINE__);    \
  } while (0)

inline int64_t align_up(int64_t v, int64_t a) { return (v + a - 1) / a * a; }

// "3.52 GiB" style.
inline std::string gib(int64_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f GiB", double(bytes) / double(1LL << 30));
  return buf;
}

}  // namespace hci::gpu
