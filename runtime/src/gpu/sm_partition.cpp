#include "sm_partition.h"

#include <cuda.h>

#include <string>

#include "common.h"

namespace hci::gpu {

namespace {

// The driver functions used here, resolved once through the runtime.
struct Driver {
  decltype(&cuGetErrorString) error_string = nullptr;
  decltype(&cuDeviceGetDevResource) get_resource = nullptr;
  decltype(&cuDevSmResourceSplitByCount) split = nullptr;
  decltype(&cuDevResourceGenerateDesc) generate_desc = nullptr;
  decltype(&cuGreenCtxCreate) create = nullptr;
  decltype(&cuGreenCtxDestroy) destroy = nullptr;
  decltype(&cuCtxFromGreenCtx) to_ctx = nullptr;
  decltype(&cuGreenCtxStreamCreate) stream_create = nullptr;
  decltype(&cuCtxPushCurrent) push = nullptr;
  decltype(&cuCtxPopCurrent) pop = nullptr;
  std::string missing;  // the first symbol not found ("" = all there)
};

template <typename F>
void resolve(const char* name, F& fn, std::string& missing) {
  void* p = nullptr;
  cudaDriverEntryPointQueryResult q{};
  // the ABI of the headers this file was compiled with (a symbol newer than the asked version
  // is not found: cuGreenCtxStreamCreate is 12.5)
  if (cudaGetDriverEntryPointByVersion(name, &p, CUDART_VERSION, cudaEnableDefault, &q) !=
          cudaSuccess ||
      q != cudaDriverEntryPointSuccess || !p) {
    if (missing.empty()) missing = name;
    return;
  }
  fn = reinterpret_cast<F>(p);
}

const Driver& driver() {
  static const Driver d = [] {
    Driver r;
    resolve("cuGetErrorString", r.error_string, r.missing);
    resolve("cuDeviceGetDevResource", r.get_resource, r.missing);
    resolve("cuDevSmResourceSplitByCount", r.split, r.missing);
    resolve("cuDevResourceGenerateDesc", r.generate_desc, r.missing);
    resolve("cuGreenCtxCreate", r.create, r.missing);
    resolve("cuGreenCtxDestroy", r.destroy, r.missing);
    resolve("cuCtxFromGreenCtx", r.to_ctx, r.missing);
    resolve("cuGreenCtxStreamCreate", r.stream_create, r.missing);
    resolve("cuCtxPushCurrent", r.push, r.missing);
    resolve("cuCtxPopCurrent", r.pop, r.missing);
    return r;
  }();
  return d;
}

void check(CUresult r, const char* what) {
  if (r == CUDA_SUCCESS) return;
  const char* msg = nullptr;
  if (driver().error_string) driver().error_string(r, &msg);
  fail(HCI_ERR_INTERNAL, std::string("SM partition: ") + what + " failed: " +
                             (msg ? msg : "CUDA driver error " + std::to_string(int(r))));
}

}  // namespace

SmPartition::SmPartition(int device, int min_sms) {
  const Driver& d = driver();
  if (!d.missing.empty())
    fail(HCI_ERR_UNSUPPORTED, "SM partition (hci_gpu_params.sm_limit): the CUDA driver has no " +
                                  d.missing + " (green contexts need a CUDA 12.5+ driver)");
  int total = 0;
  HCI_CUDA(cudaDeviceGetAttribute(&total, cudaDevAttrMultiProcessorCount, device));
  if (min_sms <= 0 || min_sms >= total)
    fail(HCI_ERR_INVALID_ARGUMENT, "SM partition: sm_limit must be 1.." + std::to_string(total - 1) +
                                       " on device " + std::to_string(device) + " (" +
                                       std::to_string(total) + " SMs), not " +
                                       std::to_string(min_sms));
  HCI_CUDA(cudaSetDevice(device));
  HCI_CUDA(cudaFree(nullptr));  // the primary context exists before the green one retains it
  CUdevResource all{}, part{}, rest{};
  check(d.get_resource(CUdevice(device), &all, CU_DEV_RESOURCE_TYPE_SM), "cuDeviceGetDevResource");
  unsigned groups = 1;
  check(d.split(&part, &groups, &all, &rest, 0, unsigned(min_sms)), "cuDevSmResourceSplitByCount");
  if (groups != 1 || part.sm.smCount == 0 || part.sm.smCount >= all.sm.smCount)
    fail(HCI_ERR_INVALID_ARGUMENT,
         "SM partition: " + std::to_string(min_sms) + " of " + std::to_string(all.sm.smCount) +
             " SMs cannot be split off (the driver's granularity is " +
             std::to_string(all.sm.smCoscheduledAlignment) + " SMs, at least " +
             std::to_string(all.sm.minSmPartitionSize) + ")");
  CUdevResourceDesc desc = nullptr;
  check(d.generate_desc(&desc, &part, 1), "cuDevResourceGenerateDesc");
  CUgreenCtx g = nullptr;
  check(d.create(&g, desc, CUdevice(device), CU_GREEN_CTX_DEFAULT_STREAM), "cuGreenCtxCreate");
  CUcontext c = nullptr;
  const CUresult r = d.to_ctx(&c, g);
  if (r != CUDA_SUCCESS) {
    d.destroy(g);
    check(r, "cuCtxFromGreenCtx");
  }
  green_ = g;
  ctx_ = c;
  sms_ = int(part.sm.smCount);
}

SmPartition::~SmPartition() {
  if (green_) driver().destroy(static_cast<CUgreenCtx>(green_));
}

cudaStream_t SmPartition::create_stream() {
  CUstream s = nullptr;
  check(driver().stream_create(&s, static_cast<CUgreenCtx>(green_), CU_STREAM_NON_BLOCKING, 0),
        "cuGreenCtxStreamCreate");
  return s;
}

void SmPartition::push() { check(driver().push(static_cast<CUcontext>(ctx_)), "cuCtxPushCurrent"); }

void SmPartition::pop() {
  CUcontext c = nullptr;
  driver().pop(&c);  // (from destructors: nothing to report)
}

}  // namespace hci::gpu
