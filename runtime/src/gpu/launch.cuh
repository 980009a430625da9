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

template <typename... KArgs, typename... Args>
inline void launch_k(const char* name, void (*kernel)(KArgs...), dim3 grid, dim3 block,
                     size_t smem, cudaStream_t s, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled() ? 1 : 0;
  const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
  if (e != cudaSuccess) cuda_fail(e, name, __FILE__, __LINE__);
}

// launch_k with a cluster of `cluster_x` blocks along x (sm_90+; the grid's x a multiple of it).
template <typename... KArgs, typename... Args>
inline void launch_k_cluster(const char* name, void (*kernel)(KArgs...), dim3 grid, dim3 block,
                             size_t smem, cudaStream_t s, unsigned cluster_x, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[2];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = cluster_x;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[1].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled() ? 2 : 1;
  const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
  if (e != cudaSuccess) cuda_fail(e, name, __FILE__, __LINE__);
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
