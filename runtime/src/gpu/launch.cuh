// Kernel launches with Programmatic Dependent Launch (Hopper): every kernel of the library is
// launched with the programmatic-stream-serialization attribute (when enabled), triggers its
// dependents at its start and waits for its predecessor (griddepcontrol.wait) before it reads
// activations or writes anything. A GEMV thus issues its first weight loads while the previous
// kernel is still finishing, and the launch gaps between the ~300 kernels of a decode step are
// hidden (also inside CUDA graphs). Kernels launched without the attribute, or on GPUs before
// sm_90, behave as ordinary launches (the device instructions are compiled out below sm_90).
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "common.h"

namespace hci::gpu {

bool pdl_enabled();

// launch_k with a cluster of `cluster_x` blocks along x (sm_90+; the grid's x a multiple of it;
// 1: no cluster attribute).
template <typename... KArgs, typename... Args>
inline void launch_k_cluster(const char* name, void (*kernel)(KArgs...), dim3 grid, dim3 block,
                             size_t smem, cudaStream_t s, unsigned cluster_x, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[2];
  unsigned n = 0;
  if (pdl_enabled()) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (cluster_x > 1) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n].val.clusterDim.x = cluster_x;
    attr[n].val.clusterDim.y = 1;
    attr[n++].val.clusterDim.z = 1;
  }
  cfg.attrs = attr;
  cfg.numAttrs = n;
  const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
  if (e != cudaSuccess) cuda_fail(e, name, __FILE__, __LINE__);
}

template <typename... KArgs, typename... Args>
inline void launch_k(const char* name, void (*kernel)(KArgs...), dim3 grid, dim3 block,
                     size_t smem, cudaStream_t s, Args&&... args) {
  launch_k_cluster(name, kernel, grid, block, smem, s, 1u, std::forward<Args>(args)...);
}

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

}  // namespace hci::gpu
