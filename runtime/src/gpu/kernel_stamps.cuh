// Kernel timeline stamps (diagnostics, HCINFER_KERNEL_STAMPS=1 in hci_gpu_bench_decode): thread 0
// of every block of the instrumented kernels writes GPU clock stamps (%globaltimer, ns) at its
// phases, so that one CUDA-graph decode step shows when each kernel's blocks became resident, when
// their PDL wait released, how long staging the input took and when the last block finished.
// Unbound, a kernel pays one load of a null pointer and a branch in thread 0 per stamp; the slot
// lives in shared memory, so no register is held across the kernel's main loop.
//
// Each translation unit that instruments kernels has its own copy of the two device words below
// (no relocatable device code) and defines a setter with HCI_KERNEL_STAMPS_SETTER.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels.h"

// Compiled in only with HCI_KERNEL_STAMPS=1 (CMake option HCI_KERNEL_STAMPS): even unbound, the
// stamp code cost ~1.5% of W4 decode (H200), so the default build has none.
#ifndef HCI_KERNEL_STAMPS
#define HCI_KERNEL_STAMPS 0
#endif

namespace hci::gpu {
namespace {

__device__ KernelStamp* g_kstamps = nullptr;  // [g_kstamp_cap] or nullptr (off)
__device__ unsigned g_kstamp_n = 0;           // slots taken
__device__ unsigned g_kstamp_cap = 0;

__device__ __forceinline__ unsigned long long kstamp_now() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Whether a stamp buffer is bound (uniform over the grid).
__device__ __forceinline__ bool kstamps_on() { return HCI_KERNEL_STAMPS && g_kstamps != nullptr; }

// Block entry (thread 0 takes the slot; -1 when off).
__device__ __forceinline__ void kstamp_begin(int* slot, int kind, int tag, int d_out, int d_in) {
  if (!kstamps_on()) {
    if (threadIdx.x == 0) *slot = -1;
    return;
  }
  KernelStamp* s = g_kstamps;
  if (threadIdx.x == 0) {
    const unsigned long long t = kstamp_now();
    const unsigned i = atomicAdd(&g_kstamp_n, 1u);
    *slot = i < g_kstamp_cap ? int(i) : -1;
    if (*slot >= 0) {
      unsigned smid;
      asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
      KernelStamp& k = s[i];
      k.t[0] = t;
      k.kind = kind;
      k.tag = tag;
      k.block = int(blockIdx.x + blockIdx.y * gridDim.x);
      k.smid = int(smid);
      k.d_out = d_out;
      k.d_in = d_in;
    }
  }
}

// Phase stamp i (1..kKernelStampPhases-1) by thread 0. The clock is read before anything else:
// a global load here would wait behind the block's weight loads in flight and date the phase late.
__device__ __forceinline__ void kstamp_at(const int* slot, int i) {
  if (HCI_KERNEL_STAMPS && threadIdx.x == 0) {
    const unsigned long long t = kstamp_now();
    if (*slot >= 0) g_kstamps[*slot].t[i] = t;
  }
}

}  // namespace
}  // namespace hci::gpu

// Defines `void NAME(KernelStamp* buf, unsigned cap)`: binds (or, with nullptr, unbinds) this
// translation unit's stamp buffer and zeroes its slot count.
#define HCI_KERNEL_STAMPS_SETTER(NAME)                                                       \
  void NAME(KernelStamp* buf, unsigned cap) {                                                \
    const unsigned zero = 0;                                                                 \
    HCI_CUDA(cudaMemcpyToSymbol(g_kstamps, &buf, sizeof buf));                               \
    HCI_CUDA(cudaMemcpyToSymbol(g_kstamp_cap, &cap, sizeof cap));                            \
    HCI_CUDA(cudaMemcpyToSymbol(g_kstamp_n, &zero, sizeof zero));                            \
  }
