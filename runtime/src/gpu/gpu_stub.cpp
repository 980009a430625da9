// The GPU C ABI of a library built without CUDA: every entry point exists and reports
// HCI_ERR_UNSUPPORTED "built without CUDA" (hci_gpu_device_info fills its struct first).
#include <cstdio>
#include <cstring>

#include "hcinfer_gpu.h"
#include "defaults.h"
#include "layout_checks.h"

namespace {
const char kMsg[] = "built without CUDA: rebuild with nvcc on the PATH (cmake finds it and builds "
                    "the GPU backend)";
hci_status unsupported(char* err, size_t err_len) {
  if (err && err_len) std::snprintf(err, err_len, "%s", kMsg);
  return HCI_ERR_UNSUPPORTED;
}
}  // namespace

extern "C" {

hci_status hci_gpu_get_device_info(int32_t device, hci_gpu_device_info* out, char* err,
                               size_t err_len) {
  if (out) {
    std::memset(out, 0, sizeof *out);
    out->device = device;
    std::snprintf(out->reason, sizeof out->reason, "%s", kMsg);
    std::snprintf(out->build, sizeof out->build, "no CUDA");
  }
  return unsupported(err, err_len);
}

hci_status hci_gpu_measure_bandwidth(int32_t, int64_t, int32_t, hci_gpu_bandwidth*, char* err,
                                     size_t err_len) {
  return unsupported(err, err_len);
}

hci_status hci_gpu_measure_bandwidth_partition(int32_t, int32_t, int64_t, int32_t,
                                               hci_gpu_bandwidth*, char* err, size_t err_len) {
  return unsupported(err, err_len);
}

hci_gpu_params hci_gpu_default_params(void) { return hci::gpu::default_params(); }

hci_gpu_synth_params hci_gpu_synth_default_params(void) {
  return hci::gpu::default_synth_params();
}

hci_status hci_gpu_model_create(hci_model*, const hci_gpu_params*, hci_gpu_model** out, char* err,
                                size_t err_len) {
  if (out) *out = nullptr;
  return unsupported(err, err_len);
}

hci_status hci_gpu_model_synthetic(const char*, const hci_gpu_synth_params*,
                                   const hci_gpu_params*, hci_gpu_model** out, char* err,
                                   size_t err_len) {
  if (out) *out = nullptr;
  return unsupported(err, err_len);
}

void hci_gpu_model_free(hci_gpu_model*) {}

hci_status hci_gpu_model_get_info(const hci_gpu_model*, hci_gpu_model_info*, char* err,
                                  size_t err_len) {
  return unsupported(err, err_len);
}

hci_status hci_gpu_reset(hci_gpu_model*, int32_t, char* err, size_t err_len) {
  return unsupported(err, err_len);
}

int32_t hci_gpu_n_past(const hci_gpu_model*, int32_t) { return -1; }

hci_status hci_gpu_prefill(hci_gpu_model*, int32_t, const int32_t*, int32_t, float*, char* err,
                           size_t err_len) {
  return unsupported(err, err_len);
}

hci_status hci_gpu_decode(hci_gpu_model*, const int32_t*, int32_t, float*, char* err,
                          size_t err_len) {
  return unsupported(err, err_len);
}

hci_status hci_gpu_generate_greedy(hci_gpu_model*, const int32_t*, int32_t, int32_t, int32_t,
                                   int32_t*, int32_t* n_out, char* err, size_t err_len) {
  if (n_out) *n_out = 0;
  return unsupported(err, err_len);
}

hci_status hci_gpu_eval_nll(hci_gpu_model*, const int32_t*, int64_t, const hci_eval_params*,
                            hci_eval_result*, int64_t*, const int32_t*, char* err,
                            size_t err_len) {
  return unsupported(err, err_len);
}

hci_gpu_bench_params hci_gpu_bench_default_params(void) {
  return hci_gpu_bench_params{1, 128, 128, 5, 1, 1, 0};
}

hci_status hci_gpu_bench_decode(hci_gpu_model*, const hci_gpu_bench_params*,
                                hci_gpu_bench_result*, char* err, size_t err_len) {
  return unsupported(err, err_len);
}

hci_status hci_gpu_get_comp_stats(hci_gpu_model*, hci_gpu_comp_stats* out, char* err,
                                  size_t err_len) {
  if (out) *out = hci_gpu_comp_stats{};
  return unsupported(err, err_len);
}

hci_status hci_gpu_reset_comp_stats(hci_gpu_model*, char* err, size_t err_len) {
  return unsupported(err, err_len);
}

hci_status hci_gpu_get_comp_ranks(hci_gpu_model*, int32_t*, int32_t*, double*, int32_t,
                                  char* err, size_t err_len) {
  return unsupported(err, err_len);
}

hci_status hci_gpu_set_comp_ranks(hci_gpu_model*, const int32_t*, int32_t, char* err,
                                  size_t err_len) {
  return unsupported(err, err_len);
}

}  // extern "C"
