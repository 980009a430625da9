// A GPU restricted to a subset of its multiprocessors: a CUDA green context (CUDA 12.5+ driver),
// used to emulate a smaller GPU on a large one, as hci_gpu_params.memory_budget emulates a smaller
// memory. Kernels launched into the partition's streams run only on its SMs; memory is shared
// with the device's primary context (allocations, mapped host memory and events are unchanged).
//
// The driver entry points are looked up at run time through the CUDA runtime
// (cudaGetDriverEntryPointByVersion), so the library does not link libcuda and still loads on
// machines without a driver.
#pragma once

#include <cuda_runtime.h>

namespace hci::gpu {

class SmPartition {
 public:
  // At least `min_sms` SMs of `device` (the driver rounds up to its granularity: multiples of 8
  // on Hopper). Throws hci::Error (HCI_ERR_INVALID_ARGUMENT) when min_sms is not below the
  // device's SM count, HCI_ERR_UNSUPPORTED when the driver has no green contexts.
  SmPartition(int device, int min_sms);
  ~SmPartition();
  SmPartition(const SmPartition&) = delete;
  SmPartition& operator=(const SmPartition&) = delete;

  int sms() const { return sms_; }
  // A non-blocking stream whose kernels run only on the partition's SMs (cudaStreamDestroy frees).
  cudaStream_t create_stream();
  // Makes the partition's context current on the calling thread (launches into its streams need
  // it), or restores the previous one; calls nest.
  void push();
  void pop();

 private:
  void* green_ = nullptr;  // CUgreenCtx
  void* ctx_ = nullptr;    // CUcontext of the green context
  int sms_ = 0;
};

// push() for a scope (no-op for a null partition).
class PartitionScope {
 public:
  explicit PartitionScope(SmPartition* p) : p_(p) {
    if (p_) p_->push();
  }
  ~PartitionScope() {
    if (p_) p_->pop();
  }
  PartitionScope(const PartitionScope&) = delete;
  PartitionScope& operator=(const PartitionScope&) = delete;

 private:
  SmPartition* p_;
};

}  // namespace hci::gpu
