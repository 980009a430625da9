// The GPU C ABI (include/hcinfer_gpu.h) of a CUDA build: argument checks, locking, device
// selection, and the guard that turns every exception into a status and a message.
#include <cuda_runtime.h>

#include <memory>
#include <mutex>
#include <shared_mutex>

#include "common.h"
#include "engine.h"
#include "c_guard.h"
#include "defaults.h"
#include "hcinfer_gpu.h"
#include "layout_checks.h"
#include "model_handle.h"

using hci::guard;
using hci::need;

struct hci_gpu_model {
  std::unique_ptr<hci::gpu::GpuModel> g;
  int device = 0;
};

namespace {
// Selects the model's device and returns its SM partition (nullptr: every SM); the launch-time
// SM count is the model's (persistent kernels size their grids by it).
hci::gpu::SmPartition* select(hci_gpu_model* m) {
  HCI_CUDA(cudaSetDevice(m->device));
  hci::gpu::set_sm_count(m->g->sm_count());
  return m->g->partition();
}

// Locks the model, selects its device and makes its SM partition current for a call.
struct Use {
  std::lock_guard<std::mutex> lock;
  hci::gpu::PartitionScope in_partition;
  explicit Use(hci_gpu_model* m) : lock(m->g->mu), in_partition(select(m)) {}
};
}  // namespace

extern "C" {

hci_status hci_gpu_get_device_info(int32_t device, hci_gpu_device_info* out, char* err,
                               size_t err_len) {
  return guard(err, err_len, [&] {
    need(out, "hci_gpu_device_info: out must not be NULL");
    hci::gpu::device_info(device, out);
  });
}

hci_status hci_gpu_measure_bandwidth(int32_t device, int64_t bytes, int32_t repeats,
                                     hci_gpu_bandwidth* out, char* err, size_t err_len) {
  return guard(err, err_len, [&] {
    need(out, "hci_gpu_measure_bandwidth: out must not be NULL");
    need(bytes >= 0 && repeats >= 0, "hci_gpu_measure_bandwidth: bytes and repeats must be >= 0");
    hci::gpu::measure_bandwidth(device, bytes, repeats, out);
  });
}

hci_status hci_gpu_measure_bandwidth_partition(int32_t device, int32_t sm_limit, int64_t bytes,
                                               int32_t repeats, hci_gpu_bandwidth* out, char* err,
                                               size_t err_len) {
  return guard(err, err_len, [&] {
    need(out, "hci_gpu_measure_bandwidth_partition: out must not be NULL");
    need(bytes >= 0 && repeats >= 0 && sm_limit >= 0,
         "hci_gpu_measure_bandwidth_partition: sm_limit, bytes and repeats must be >= 0");
    hci::gpu::measure_bandwidth(device, bytes, repeats, out, sm_limit);
  });
}

hci_gpu_params hci_gpu_default_params(void) { return hci::gpu::default_params(); }

hci_gpu_synth_params hci_gpu_synth_default_params(void) {
  return hci::gpu::default_synth_params();
}

hci_status hci_gpu_model_create(hci_model* model, const hci_gpu_params* params,
                                hci_gpu_model** out, char* err, size_t err_len) {
  return guard(err, err_len, [&] {
    need(model && out, "hci_gpu_model_create: model and out must not be NULL");
    *out = nullptr;
    const hci_gpu_params p = params ? *params : hci_gpu_default_params();
    std::shared_lock lock(model->mu);
    auto h = std::make_unique<hci_gpu_model>();
    h->device = p.device;
    h->g = hci::gpu::GpuModel::from_model(model->m, p);
    *out = h.release();
  });
}

hci_status hci_gpu_model_synthetic(const char* name, const hci_gpu_synth_params* synth,
                                   const hci_gpu_params* params, hci_gpu_model** out, char* err,
                                   size_t err_len) {
  return guard(err, err_len, [&] {
    need(name && out, "hci_gpu_model_synthetic: name and out must not be NULL");
    *out = nullptr;
    const hci_gpu_params p = params ? *params : hci_gpu_default_params();
    const hci_gpu_synth_params s = synth ? *synth : hci_gpu_synth_default_params();
    auto h = std::make_unique<hci_gpu_model>();
    h->device = p.device;
    h->g = hci::gpu::GpuModel::synthetic(name, s, p);
    *out = h.release();
  });
}

void hci_gpu_model_free(hci_gpu_model* model) {
  if (!model) return;
  try {
    cudaSetDevice(model->device);
    delete model;
  } catch (...) {
  }
}

hci_status hci_gpu_model_get_info(const hci_gpu_model* model, hci_gpu_model_info* out, char* err,
                                  size_t err_len) {
  return guard(err, err_len, [&] {
    need(model && out, "hci_gpu_model_get_info: model and out must not be NULL");
    std::lock_guard<std::mutex> lock(model->g->mu);
    model->g->info(out);
  });
}

hci_status hci_gpu_reset(hci_gpu_model* model, int32_t seq, char* err, size_t err_len) {
  return guard(err, err_len, [&] {
    need(model, "hci_gpu_reset: model must not be NULL");
    Use u(model);
    model->g->reset(seq);
  });
}

int32_t hci_gpu_n_past(const hci_gpu_model* model, int32_t seq) {
  if (!model) return -1;
  std::lock_guard<std::mutex> lock(model->g->mu);
  return model->g->n_past(seq);
}

hci_status hci_gpu_prefill(hci_gpu_model* model, int32_t seq, const int32_t* tokens,
                           int32_t n_tokens, float* logits_out, char* err, size_t err_len) {
  return guard(err, err_len, [&] {
    need(model && tokens && n_tokens > 0,
         "hci_gpu_prefill: model and tokens must not be NULL, n_tokens > 0");
    Use u(model);
    hci::gpu::CallerAffinity keep_off_workers(*model->g);
    model->g->prefill(seq, tokens, n_tokens, logits_out);
  });
}

hci_status hci_gpu_decode(hci_gpu_model* model, const int32_t* tokens, int32_t n_seqs,
                          float* logits_out, char* err, size_t err_len) {
  return guard(err, err_len, [&] {
    need(model && tokens, "hci_gpu_decode: model and tokens must not be NULL");
    Use u(model);
    hci::gpu::CallerAffinity keep_off_workers(*model->g);
    model->g->decode(tokens, n_seqs, logits_out);
  });
}

hci_status hci_gpu_generate_greedy(hci_gpu_model* model, const int32_t* prompt, int32_t n_prompt,
                                   int32_t n_new, int32_t eos_id, int32_t* out, int32_t* n_out,
                                   char* err, size_t err_len) {
  return guard(err, err_len, [&] {
    need(model && prompt && n_prompt > 0 && n_new >= 0 && (out || n_new == 0) && n_out,
         "hci_gpu_generate_greedy: NULL argument, empty prompt or negative n_new");
    Use u(model);
    hci::gpu::CallerAffinity keep_off_workers(*model->g);
    model->g->generate_greedy(prompt, n_prompt, n_new, eos_id, out, n_out);
  });
}

hci_status hci_gpu_eval_nll(hci_gpu_model* model, const int32_t* tokens, int64_t n_tokens,
                            const hci_eval_params* params, hci_eval_result* out,
                            int64_t* progress, const int32_t* cancel, char* err,
                            size_t err_len) {
  return guard(err, err_len, [&] {
    need(model && params && out && (tokens || n_tokens == 0) && n_tokens >= 0,
         "hci_gpu_eval_nll: NULL argument or negative n_tokens");
    need(params->reserved == 0, "hci_gpu_eval_nll: params->reserved must be 0");
    Use u(model);
    hci::gpu::CallerAffinity keep_off_workers(*model->g);
    model->g->eval_nll(tokens, n_tokens, params->seq_len, params->max_windows, out, progress,
                       cancel);
  });
}

hci_gpu_bench_params hci_gpu_bench_default_params(void) {
  return hci_gpu_bench_params{1, 128, 128, 5, 1, 1, 0};
}

hci_status hci_gpu_bench_decode(hci_gpu_model* model, const hci_gpu_bench_params* params,
                                hci_gpu_bench_result* out, char* err, size_t err_len) {
  return guard(err, err_len, [&] {
    need(model && out, "hci_gpu_bench_decode: model and out must not be NULL");
    const hci_gpu_bench_params p = params ? *params : hci_gpu_bench_default_params();
    Use u(model);
    hci::gpu::CallerAffinity keep_off_workers(*model->g);
    model->g->bench(p, out);
  });
}

hci_status hci_gpu_get_comp_stats(hci_gpu_model* model, hci_gpu_comp_stats* out, char* err,
                                  size_t err_len) {
  return guard(err, err_len, [&] {
    need(model && out, "hci_gpu_get_comp_stats: model and out must not be NULL");
    Use u(model);
    model->g->comp_stats(out);
  });
}

hci_status hci_gpu_reset_comp_stats(hci_gpu_model* model, char* err, size_t err_len) {
  return guard(err, err_len, [&] {
    need(model, "hci_gpu_reset_comp_stats: model must not be NULL");
    Use u(model);
    model->g->reset_comp_stats();
  });
}

hci_status hci_gpu_get_comp_ranks(hci_gpu_model* model, int32_t* full, int32_t* last,
                                  double* mean, int32_t n, char* err, size_t err_len) {
  return guard(err, err_len, [&] {
    need(model, "hci_gpu_get_comp_ranks: model must not be NULL");
    Use u(model);
    model->g->comp_ranks(full, last, mean, n);
  });
}

hci_status hci_gpu_set_comp_ranks(hci_gpu_model* model, const int32_t* ranks, int32_t n,
                                  char* err, size_t err_len) {
  return guard(err, err_len, [&] {
    need(model && ranks, "hci_gpu_set_comp_ranks: model and ranks must not be NULL");
    Use u(model);
    model->g->set_comp_ranks(ranks, n);
  });
}

}  // extern "C"
