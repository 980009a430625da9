// The kernel timeline of one decode step from the blocks' stamps (kernel_stamps.cuh): per kernel
// launch, when its blocks became resident, when their PDL wait released, how long staging the
// input took, the main loop, the tail (last block against the median block) and the epilogue, all
// against the end of the launch before it, and averages per kind of launch over the layers.
// Host-only (no CUDA), so it is tested on the build machine.
#pragma once

#include <cstddef>
#include <string>

namespace hci::gpu {

// One block's stamps of the kernel timeline (kernel_stamps.cuh; HCINFER_KERNEL_STAMPS=1):
// t[0] entry, t[1] PDL wait released, t[2] input staged, t[3] main loop done (all warps),
// t[4] exit (after any epilogue); 0 where a kernel has no such phase. GPU %globaltimer ns.
constexpr int kKernelStampPhases = 5;
struct KernelStamp {
  unsigned long long t[kKernelStampPhases];
  int kind;   // kKind* below
  int tag;    // the launch's sequence number within the captured step (host counter)
  int block;  // blockIdx.x + blockIdx.y * gridDim.x
  int smid;
  int d_out, d_in;
};
enum KernelStampKind : int { kKindQgemv4 = 1, kKindQgemv4Silu = 2, kKindAttention = 3 };

// A report (text lines) of n stamps of one step; `bits` sizes the GEMVs' weight bytes (4-bit codes
// plus one 4-byte scale pair per `group`) for the bandwidth of their main loops.
std::string kernel_timeline_report(const KernelStamp* s, size_t n, int bits, int group);

}  // namespace hci::gpu
