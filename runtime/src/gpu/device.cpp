// Device discovery and bandwidth measurement.
#include <algorithm>
#include <cstring>
#include <vector>

#include "allocator.h"
#include "common.h"
#include "engine.h"
#include "kernels.h"

#ifndef HCI_CUDA_ARCHS
#define HCI_CUDA_ARCHS "?"
#endif

namespace hci::gpu {

const char* build_string() {
  static const std::string s = [] {
    int rt = 0;
    cudaRuntimeGetVersion(&rt);
    std::string b = "CUDA " + std::to_string(rt / 1000) + "." + std::to_string((rt % 1000) / 10) +
                    ", archs " + HCI_CUDA_ARCHS;
#ifdef HCI_HAVE_CUBLAS
    b += ", cuBLAS";
#else
    b += ", own GEMM (no cuBLAS)";
#endif
    return b;
  }();
  return s.c_str();
}

void device_info(int device, hci_gpu_device_info* out) {
  std::memset(out, 0, sizeof *out);
  out->built_with_cuda = 1;
#ifdef HCI_HAVE_CUBLAS
  out->built_with_cublas = 1;
#endif
  out->device = device;
  std::snprintf(out->build, sizeof out->build, "%s", build_string());
  int rt = 0, drv = 0;
  cudaRuntimeGetVersion(&rt);
  cudaDriverGetVersion(&drv);
  out->runtime_version = rt;
  out->driver_version = drv;
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    std::snprintf(out->reason, sizeof out->reason, "no usable CUDA device: %s (%s)",
                  cudaGetErrorName(e), cudaGetErrorString(e));
    return;
  }
  out->device_count = count;
  if (device < 0 || device >= count) {
    std::snprintf(out->reason, sizeof out->reason, "device %d does not exist (%d visible)", device,
                  count);
    return;
  }
  cudaDeviceProp prop;
  e = cudaGetDeviceProperties(&prop, device);
  if (e != cudaSuccess) {
    cudaGetLastError();
    std::snprintf(out->reason, sizeof out->reason, "cudaGetDeviceProperties: %s",
                  cudaGetErrorString(e));
    return;
  }
  std::snprintf(out->name, sizeof out->name, "%.127s", prop.name);
  out->cc_major = prop.major;
  out->cc_minor = prop.minor;
  out->sm_count = prop.multiProcessorCount;
  out->total_memory = int64_t(prop.totalGlobalMem);
  out->l2_bytes = prop.l2CacheSize;
  int v = 0;
  if (cudaDeviceGetAttribute(&v, cudaDevAttrMemoryClockRate, device) == cudaSuccess)
    out->memory_clock_khz = v;
  else
    cudaGetLastError();
  if (cudaDeviceGetAttribute(&v, cudaDevAttrGlobalMemoryBusWidth, device) == cudaSuccess)
    out->memory_bus_bits = v;
  else
    cudaGetLastError();
  if (prop.major < 8) {
    std::snprintf(out->reason, sizeof out->reason,
                  "compute capability %d.%d is below 8.0 (the kernels need sm_80 or newer)",
                  prop.major, prop.minor);
    return;
  }
  int prev = 0;
  cudaGetDevice(&prev);
  e = cudaSetDevice(device);
  size_t free_b = 0, total_b = 0;
  if (e == cudaSuccess) e = cudaMemGetInfo(&free_b, &total_b);
  if (e != cudaSuccess) {
    cudaGetLastError();
    std::snprintf(out->reason, sizeof out->reason, "cannot create a context on device %d: %s",
                  device, cudaGetErrorString(e));
    return;
  }
  out->free_memory = int64_t(free_b);
  out->available = 1;
}

void require_device(int device) {
  hci_gpu_device_info info;
  device_info(device, &info);
  if (!info.available) fail(HCI_ERR_UNSUPPORTED, std::string("GPU not usable: ") + info.reason);
}

namespace {
double median_ms(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (double(v[n / 2 - 1]) + v[n / 2]);
}
}  // namespace

void measure_bandwidth(int device, int64_t bytes, int repeats, hci_gpu_bandwidth* out,
                       int sm_limit) {
  require_device(device);
  HCI_CUDA(cudaSetDevice(device));
  if (sm_limit < 0)
    fail(HCI_ERR_INVALID_ARGUMENT, "bandwidth: sm_limit must be >= 0, not " + std::to_string(sm_limit));
  std::unique_ptr<SmPartition> part;
  if (sm_limit > 0) part = std::make_unique<SmPartition>(device, sm_limit);
  PartitionScope in_partition(part.get());
  int sms = 0;
  HCI_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  if (bytes <= 0) bytes = int64_t(1) << 30;
  if (repeats <= 0) repeats = 10;
  bytes = bytes / 256 * 256;
  DeviceAllocator a;
  DeviceBuffer src(a, bytes, "bandwidth source"), dst(a, bytes, "bandwidth destination");
  DeviceBuffer sink(a, int64_t(read_stream_blocks()) * 4, "bandwidth sink");
  PinnedBuffer host(bytes);
  std::memset(host.data(), 1, size_t(bytes));
  cudaStream_t s = nullptr;
  if (part)
    s = part->create_stream();
  else
    HCI_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaEvent_t e0, e1;
  HCI_CUDA(cudaEventCreate(&e0));
  HCI_CUDA(cudaEventCreate(&e1));
  auto time = [&](auto&& op) {
    std::vector<float> ms;
    for (int r = 0; r < repeats + 1; ++r) {
      HCI_CUDA(cudaEventRecord(e0, s));
      op();
      HCI_CUDA(cudaEventRecord(e1, s));
      HCI_CUDA(cudaEventSynchronize(e1));
      float t = 0;
      HCI_CUDA(cudaEventElapsedTime(&t, e0, e1));
      if (r > 0) ms.push_back(t);  // the first is the warm-up
    }
    return median_ms(ms);
  };
  double t_h2d = 0, t_d2h = 0, t_d2d = 0, t_rd = 0;
  try {
    t_h2d = time([&] {
      HCI_CUDA(cudaMemcpyAsync(src.get(), host.data(), size_t(bytes), cudaMemcpyHostToDevice, s));
    });
    t_d2h = time([&] {
      HCI_CUDA(cudaMemcpyAsync(host.data(), src.get(), size_t(bytes), cudaMemcpyDeviceToHost, s));
    });
    t_d2d = time([&] {
      HCI_CUDA(cudaMemcpyAsync(dst.get(), src.get(), size_t(bytes), cudaMemcpyDeviceToDevice, s));
    });
    t_rd = time([&] { read_stream(src.get(), bytes, sink.as<float>(), s); });
  } catch (...) {
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaStreamDestroy(s);
    throw;
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaStreamDestroy(s);
  const double gb = double(bytes) / 1e9;
  out->h2d_pinned_gbps = gb / (t_h2d / 1e3);
  out->d2h_pinned_gbps = gb / (t_d2h / 1e3);
  out->hbm_gbps = 2 * gb / (t_d2d / 1e3);
  out->hbm_read_gbps = gb / (t_rd / 1e3);
  out->bytes = bytes;
  out->repeats = repeats;
  out->sm_count = part ? part->sms() : sms;
}

}  // namespace hci::gpu
