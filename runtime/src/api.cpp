// The C ABI (include/hcinfer.h): argument checks, locking, and the guard that turns every C++
// exception into a status code and a message in the caller's buffer.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <shared_mutex>
#include <thread>

#include "calibration.h"
#include "compensation.h"
#include "error.h"
#include "forward.h"
#include "hetero/lowrank_bench.h"
#include "hcinfer.h"
#include "model.h"
#include "model_handle.h"
#include "c_guard.h"
#include "scoring.h"

// Layouts the TypeScript bindings (ffi/structs.ts) encode by byte offset.
static_assert(sizeof(hci_model_params) == 8, "hci_model_params layout");
static_assert(sizeof(hci_model_info) == 64 && offsetof(hci_model_info, n_params) == 40 &&
                  offsetof(hci_model_info, rope_theta) == 48,
              "hci_model_info layout");
static_assert(sizeof(hci_quant_params) == 24, "hci_quant_params layout");
static_assert(sizeof(hci_linear_info) == 48 && offsetof(hci_linear_info, rel_err_quant) == 32,
              "hci_linear_info layout");
static_assert(sizeof(hci_quant_ex_params) == 56 && offsetof(hci_quant_ex_params, method) == 24 &&
                  offsetof(hci_quant_ex_params, damp_percent) == 32 &&
                  offsetof(hci_quant_ex_params, scaling) == 40 &&
                  offsetof(hci_quant_ex_params, groups_from_block_start) == 44 &&
                  offsetof(hci_quant_ex_params, eig_floor) == 48,
              "hci_quant_ex_params layout");
static_assert(sizeof(hci_calib_params) == 16, "hci_calib_params layout");
static_assert(sizeof(hci_calib_info) == 32 && offsetof(hci_calib_info, n_tokens) == 16 &&
                  offsetof(hci_calib_info, seconds) == 24,
              "hci_calib_info layout");
static_assert(sizeof(hci_eval_params) == 16, "hci_eval_params layout");
static_assert(sizeof(hci_eval_result) == 32, "hci_eval_result layout");
static_assert(sizeof(hci_session_params) == 8, "hci_session_params layout");
static_assert(sizeof(hci_lowrank_bench_params) == 48, "hci_lowrank_bench_params layout");
static_assert(sizeof(hci_lowrank_bench_result) == 40, "hci_lowrank_bench_result layout");

struct hci_session {
  hci_model* model;
  std::unique_ptr<hci::ForwardState> st;
  std::vector<float> hidden;
};

namespace {

using hci::guard;
using hci::need;

int resolve_threads(int requested, int fallback) {
  if (requested > 0) return requested;
  if (fallback > 0) return fallback;
  return int(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace

extern "C" {

int32_t hci_abi_version(void) { return HCI_ABI_VERSION; }

const char* hci_version(void) {
  static const std::string v = std::string("hcinfer 0.1.0 (") +
#if defined(__clang__)
                               "clang " __clang_version__
#elif defined(__GNUC__)
                               "g++ " __VERSION__
#else
                               "unknown compiler"
#endif
                               + ", OpenBLAS " + openblas_get_config() + ", " + HCI_BUILD_TYPE +
                               ")";
  return v.c_str();
}

const char* hci_status_name(int32_t status) {
  switch (status) {
    case HCI_OK: return "HCI_OK";
    case HCI_ERR_INVALID_ARGUMENT: return "HCI_ERR_INVALID_ARGUMENT";
    case HCI_ERR_IO: return "HCI_ERR_IO";
    case HCI_ERR_FORMAT: return "HCI_ERR_FORMAT";
    case HCI_ERR_UNSUPPORTED: return "HCI_ERR_UNSUPPORTED";
    case HCI_ERR_OUT_OF_MEMORY: return "HCI_ERR_OUT_OF_MEMORY";
    case HCI_ERR_NUMERIC: return "HCI_ERR_NUMERIC";
    case HCI_ERR_CANCELLED: return "HCI_ERR_CANCELLED";
    case HCI_ERR_INTERNAL: return "HCI_ERR_INTERNAL";
    default: return "HCI_ERR_UNKNOWN";
  }
}

hci_model_params hci_model_default_params(void) { return hci_model_params{0, 0}; }

hci_status hci_model_load(const char* dir, const hci_model_params* params, hci_model** out,
                          char* err, size_t err_len) {
  return guard(err, err_len, [&] {
    need(dir && out, "hci_model_load: dir and out must not be NULL");
    *out = nullptr;
    const hci_model_params p = params ? *params : hci_model_default_params();
    need(p.n_threads >= 0, "hci_model_load: n_threads must be >= 0");
    // Our own threads parallelize over windows and layers; BLAS calls stay single-threaded.
    openblas_set_num_threads(1);
    auto h = std::make_unique<hci_model>();
    h->m = hci::load_model(dir);
    h->m.n_threads = resolve_threads(p.n_threads, 0);
    *out = h.release();
  });
}

void hci_model_free(hci_model* model) { delete model; }

hci_status hci_model_get_info(const hci_model* model, hci_model_info* out, char* err,
                              size_t err_len) {
  return guard(err, err_len, [&] {
    need(model && out, "hci_model_get_info: model and out must not be NULL");
    const hci::ModelConfig& c = model->m.cfg;
    *out = hci_model_info{};
    out->n_layers = c.n_layers;
    out->d_model = c.d_model;
    out->n_heads = c.n_heads;
    out->n_kv_heads = c.n_kv_heads;
    out->head_dim = c.head_dim;
    out->d_ff = c.d_ff;
    out->vocab_size = c.vocab_size;
    out->max_positions = c.max_positions;
    out->tied_embeddings = c.tied_embeddings ? 1 : 0;
    out->n_linears = model->m.n_linears();
    out->n_params = model->m.n_params();
    out->rope_theta = c.rope_theta;
    out->rms_norm_eps = c.rms_norm_eps;
  });
}

hci_quant_params hci_quant_default_params(void) {
  return hci_quant_params{4, 128, 0, HCI_LINEAR_ALL, 0, -1};
}

hci_status hci_model_quantize(hci_model* model, const hci_quant_params* params,
                              int64_t* progress, const int32_t* cancel, char* err,
                              size_t err_len) {
  if (!params) {
    hci::write_err(err, err_len, "hci_model_quantize: model and params must not be NULL");
    return HCI_ERR_INVALID_ARGUMENT;
  }
  // RTN with plain SVD factors: the extended entry point with its defaults for the rest.
  hci_quant_ex_params ex = hci_quant_ex_default_params();
  ex.bits = params->bits;
  ex.group_size = params->group_size;
  ex.max_rank = params->max_rank;
  ex.kind_mask = params->kind_mask;
  ex.layer_begin = params->layer_begin;
  ex.layer_end = params->layer_end;
  return hci_model_quantize_ex(model, &ex, progress, cancel, err, err_len);
}

hci_quant_ex_params hci_quant_ex_default_params(void) {
  hci_quant_ex_params p{};
  p.bits = 4;
  p.group_size = 128;
  p.max_rank = 0;
  p.kind_mask = HCI_LINEAR_ALL;
  p.layer_begin = 0;
  p.layer_end = -1;
  p.method = HCI_QUANT_RTN;
  p.act_order = 0;
  p.damp_percent = 0.01;
  p.scaling = HCI_SCALING_PLAIN;
  p.groups_from_block_start = 0;
  p.eig_floor = 1e-6;
  return p;
}

hci_status hci_model_quantize_ex(hci_model* model, const hci_quant_ex_params* params,
                                 int64_t* progress, const int32_t* cancel, char* err,
                                 size_t err_len) {
  return guard(err, err_len, [&] {
    need(model && params, "hci_model_quantize_ex: model and params must not be NULL");
    need(params->act_order == 0 || params->act_order == 1,
         "hci_model_quantize_ex: act_order must be 0 or 1");
    need(params->groups_from_block_start == 0 || params->groups_from_block_start == 1,
         "hci_model_quantize_ex: groups_from_block_start must be 0 or 1");
    std::unique_lock lock(model->mu);
    hci::QuantSettings s;
    s.bits = params->bits;
    s.group_size = params->group_size;
    s.max_rank = params->max_rank;
    s.kind_mask = params->kind_mask;
    s.layer_begin = params->layer_begin;
    s.layer_end = params->layer_end;
    s.method = params->method;
    s.act_order = params->act_order != 0;
    s.damp_percent = params->damp_percent;
    s.scaling = params->scaling;
    s.eig_floor = params->eig_floor;
    s.groups_from_block_start = params->groups_from_block_start != 0;
    hci::quantize_model(model->m, s, model->m.n_threads, progress, cancel);
  });
}

hci_status hci_model_set_ranks(hci_model* model, const int32_t* ranks, int32_t n, char* err,
                               size_t err_len) {
  return guard(err, err_len, [&] {
    need(model && ranks, "hci_model_set_ranks: model and ranks must not be NULL");
    std::unique_lock lock(model->mu);
    hci::Model& m = model->m;
    if (n != m.n_linears())
      hci::fail(HCI_ERR_INVALID_ARGUMENT, "hci_model_set_ranks: got " + std::to_string(n) +
                                              " ranks, the model has " +
                                              std::to_string(m.n_linears()) + " linears");
    for (int i = 0; i < n; ++i) {
      const hci::Linear& l = m.linear(i);
      if (ranks[i] < 0 || ranks[i] > l.max_rank)
        hci::fail(HCI_ERR_INVALID_ARGUMENT,
                  "hci_model_set_ranks: rank " + std::to_string(ranks[i]) + " for " +
                      hci::linear_name(i) + " is outside [0, " + std::to_string(l.max_rank) + "]");
    }
    for (int i = 0; i < n; ++i) m.linear(i).rank = ranks[i];
  });
}

hci_status hci_model_set_uniform_rank(hci_model* model, int32_t rank, char* err, size_t err_len) {
  return guard(err, err_len, [&] {
    need(model, "hci_model_set_uniform_rank: model must not be NULL");
    need(rank >= 0, "hci_model_set_uniform_rank: rank must be >= 0");
    std::unique_lock lock(model->mu);
    for (int i = 0; i < model->m.n_linears(); ++i) {
      hci::Linear& l = model->m.linear(i);
      l.rank = std::min(rank, l.max_rank);
    }
  });
}

hci_status hci_model_get_linear(const hci_model* model, int32_t index, hci_linear_info* out,
                                char* err, size_t err_len) {
  return guard(err, err_len, [&] {
    need(model && out, "hci_model_get_linear: model and out must not be NULL");
    std::shared_lock lock(model->mu);
    if (index < 0 || index >= model->m.n_linears())
      hci::fail(HCI_ERR_INVALID_ARGUMENT, "hci_model_get_linear: index " + std::to_string(index) +
                                              " out of range");
    const hci::Linear& l = model->m.linear(index);
    *out = hci_linear_info{};
    out->layer = index / 7;
    out->kind = index % 7;
    out->d_out = l.d_out;
    out->d_in = l.d_in;
    out->bits = l.bits;
    out->group_size = l.bits ? l.group_size : 0;
    out->max_rank = l.max_rank;
    out->rank = l.rank;
    out->rel_err_quant = l.norm_w > 0 ? l.norm_e / l.norm_w : 0;
    out->rel_err_active = l.norm_w > 0 ? l.active_error() / l.norm_w : 0;
  });
}

hci_status hci_model_get_singular_values(const hci_model* model, int32_t index, double* out,
                                         int32_t n, int32_t* n_written, char* err,
                                         size_t err_len) {
  return guard(err, err_len, [&] {
    need(model && (out || n == 0) && n_written && n >= 0,
         "hci_model_get_singular_values: NULL argument or negative n");
    std::shared_lock lock(model->mu);
    if (index < 0 || index >= model->m.n_linears())
      hci::fail(HCI_ERR_INVALID_ARGUMENT, "hci_model_get_singular_values: index out of range");
    const auto& s = model->m.linear(index).singular;
    const int32_t k = std::min<int32_t>(n, int32_t(s.size()));
    std::copy_n(s.begin(), k, out);
    *n_written = k;
  });
}

hci_calib_params hci_calib_default_params(void) { return hci_calib_params{512, 0, 1, 0}; }

hci_status hci_model_calibrate(hci_model* model, const int32_t* tokens, int64_t n_tokens,
                               const hci_calib_params* params, int64_t* progress,
                               const int32_t* cancel, char* err, size_t err_len) {
  return guard(err, err_len, [&] {
    need(model && tokens && params, "hci_model_calibrate: NULL argument");
    need(n_tokens >= 0, "hci_model_calibrate: n_tokens must be >= 0");
    need(params->full_covariance == 0 || params->full_covariance == 1,
         "hci_model_calibrate: full_covariance must be 0 or 1");
    need(params->n_threads >= 0, "hci_model_calibrate: n_threads must be >= 0");
    std::unique_lock lock(model->mu);
    // Free the old statistics first: they can be large.
    model->m.calib.reset();
    auto cal = std::make_shared<hci::Calibration>(hci::calibrate(
        model->m, tokens, n_tokens, params->seq_len, params->n_windows,
        params->full_covariance != 0, resolve_threads(params->n_threads, model->m.n_threads),
        progress, cancel));
    model->m.calib = std::move(cal);
  });
}

hci_status hci_model_get_calibration(const hci_model* model, hci_calib_info* out, char* err,
                                     size_t err_len) {
  return guard(err, err_len, [&] {
    need(model && out, "hci_model_get_calibration: model and out must not be NULL");
    std::shared_lock lock(model->mu);
    *out = hci_calib_info{};
    const auto& c = model->m.calib;
    if (!c) return;
    out->calibrated = 1;
    out->seq_len = c->seq_len;
    out->n_windows = c->n_windows;
    out->full_covariance = c->full_covariance ? 1 : 0;
    out->n_tokens = int64_t(c->n_windows) * c->seq_len;
    out->seconds = c->seconds;
  });
}

hci_status hci_model_clear_calibration(hci_model* model, char* err, size_t err_len) {
  return guard(err, err_len, [&] {
    need(model, "hci_model_clear_calibration: model must not be NULL");
    std::unique_lock lock(model->mu);
    model->m.calib.reset();
  });
}

}  // extern "C"

namespace {

// The statistics of linear `index`'s input, after the checks shared by the accessors below.
const hci::ActStats& stats_for(const hci_model* model, int32_t index, const char* fn) {
  if (index < 0 || index >= model->m.n_linears())
    hci::fail(HCI_ERR_INVALID_ARGUMENT, std::string(fn) + ": index " + std::to_string(index) +
                                            " out of range");
  if (!model->m.calib)
    hci::fail(HCI_ERR_INVALID_ARGUMENT,
              std::string(fn) + ": the model has no calibration: call hci_model_calibrate first");
  return model->m.calib->stats_of(index);
}

}  // namespace

extern "C" {

hci_status hci_model_get_act_second_moments(const hci_model* model, int32_t index, double* out,
                                            int32_t n, int32_t* n_written, char* err,
                                            size_t err_len) {
  return guard(err, err_len, [&] {
    need(model && (out || n == 0) && n_written && n >= 0,
         "hci_model_get_act_second_moments: NULL argument or negative n");
    std::shared_lock lock(model->mu);
    const hci::ActStats& s = stats_for(model, index, "hci_model_get_act_second_moments");
    const int32_t k = std::min<int32_t>(n, int32_t(s.sq.size()));
    std::copy_n(s.sq.begin(), k, out);
    *n_written = k;
  });
}

hci_status hci_model_get_act_covariance(const hci_model* model, int32_t index, double* out,
                                        int32_t n, int32_t* n_written, char* err,
                                        size_t err_len) {
  return guard(err, err_len, [&] {
    need(model && (out || n == 0) && n_written && n >= 0,
         "hci_model_get_act_covariance: NULL argument or negative n");
    std::shared_lock lock(model->mu);
    const hci::ActStats& s = stats_for(model, index, "hci_model_get_act_covariance");
    if (!s.full())
      hci::fail(HCI_ERR_INVALID_ARGUMENT,
                "hci_model_get_act_covariance: the model was calibrated without full_covariance");
    const int32_t k = int32_t(std::min<int64_t>(n, int64_t(s.H.size())));
    std::copy_n(s.H.begin(), k, out);
    *n_written = k;
  });
}

hci_eval_params hci_eval_default_params(void) { return hci_eval_params{2048, 0, 0, 0}; }

hci_status hci_eval_nll(hci_model* model, const int32_t* tokens, int64_t n_tokens,
                        const hci_eval_params* params, hci_eval_result* out, int64_t* progress,
                        const int32_t* cancel, char* err, size_t err_len) {
  return guard(err, err_len, [&] {
    need(model && tokens && params && out, "hci_eval_nll: NULL argument");
    std::shared_lock lock(model->mu);
    const auto t0 = std::chrono::steady_clock::now();
    const hci::EvalResult r =
        hci::eval_nll(model->m, tokens, n_tokens, params->seq_len, params->max_windows,
                      resolve_threads(params->n_threads, model->m.n_threads), progress, cancel);
    out->nll_sum = r.nll_sum;
    out->n_predicted = r.n_predicted;
    out->n_windows = r.n_windows;
    out->seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  });
}

hci_status hci_score_tokens(hci_model* model, const int32_t* tokens, int32_t n_tokens, float* out,
                            char* err, size_t err_len) {
  return guard(err, err_len, [&] {
    need(model && tokens && out, "hci_score_tokens: NULL argument");
    std::shared_lock lock(model->mu);
    hci::score_tokens(model->m, tokens, n_tokens, out);
  });
}

hci_session_params hci_session_default_params(void) { return hci_session_params{0, 0}; }

hci_status hci_session_create(hci_model* model, const hci_session_params* params,
                              hci_session** out, char* err, size_t err_len) {
  return guard(err, err_len, [&] {
    need(model && out, "hci_session_create: model and out must not be NULL");
    *out = nullptr;
    const hci_session_params p = params ? *params : hci_session_default_params();
    const int n_ctx = p.n_ctx > 0 ? p.n_ctx : model->m.cfg.max_positions;
    if (n_ctx > model->m.cfg.max_positions)
      hci::fail(HCI_ERR_INVALID_ARGUMENT, "hci_session_create: n_ctx " + std::to_string(n_ctx) +
                                              " exceeds max_position_embeddings " +
                                              std::to_string(model->m.cfg.max_positions));
    auto s = std::make_unique<hci_session>();
    s->model = model;
    s->st = std::make_unique<hci::ForwardState>(model->m, n_ctx);
    *out = s.release();
  });
}

void hci_session_free(hci_session* session) { delete session; }

hci_status hci_session_reset(hci_session* session, char* err, size_t err_len) {
  return guard(err, err_len, [&] {
    need(session, "hci_session_reset: session must not be NULL");
    session->st->reset();
  });
}

int32_t hci_session_n_past(const hci_session* session) {
  return session ? session->st->n_past() : 0;
}

hci_status hci_session_decode(hci_session* session, const int32_t* tokens, int32_t n_tokens,
                              float* logits_out, char* err, size_t err_len) {
  return guard(err, err_len, [&] {
    need(session && tokens && n_tokens > 0, "hci_session_decode: NULL argument or no tokens");
    std::shared_lock lock(session->model->mu);
    const hci::Model& m = session->model->m;
    session->hidden.resize(size_t(n_tokens) * size_t(m.cfg.d_model));
    session->st->forward(tokens, n_tokens, session->hidden.data());
    if (logits_out)
      session->st->logits(session->hidden.data() + size_t(n_tokens - 1) * size_t(m.cfg.d_model), 1,
                          logits_out);
  });
}

hci_status hci_generate_greedy(hci_session* session, const int32_t* prompt, int32_t n_prompt,
                               int32_t n_new, int32_t eos_id, int32_t* out, int32_t* n_out,
                               char* err, size_t err_len) {
  return guard(err, err_len, [&] {
    need(session && prompt && n_prompt > 0 && n_new >= 0 && (out || n_new == 0) && n_out,
         "hci_generate_greedy: NULL argument, empty prompt or negative n_new");
    std::shared_lock lock(session->model->mu);
    const hci::Model& m = session->model->m;
    const int d = m.cfg.d_model, V = m.cfg.vocab_size;
    *n_out = 0;
    session->st->reset();
    session->hidden.resize(size_t(n_prompt) * size_t(d));
    std::vector<float> logits(static_cast<size_t>(V));
    session->st->forward(prompt, n_prompt, session->hidden.data());
    session->st->logits(session->hidden.data() + size_t(n_prompt - 1) * size_t(d), 1,
                        logits.data());
    for (int i = 0; i < n_new; ++i) {
      const int32_t next = hci::argmax(logits.data(), V);
      out[i] = next;
      *n_out = i + 1;
      if (next == eos_id || i + 1 == n_new) break;
      session->st->forward(&next, 1, session->hidden.data());
      session->st->logits(session->hidden.data(), 1, logits.data());
    }
  });
}

hci_lowrank_bench_params hci_lowrank_bench_default_params(void) {
  return hci_lowrank_bench_params{4096, 11008, 4096, 32, 64, 1, 1, 0, -1, 20, 3, -1};
}

hci_status hci_lowrank_bench(const hci_lowrank_bench_params* params,
                             hci_lowrank_bench_result* out, char* err, size_t err_len) {
  return guard(err, err_len, [&] {
    need(params && out, "hci_lowrank_bench: NULL argument");
    const hci_lowrank_bench_params& p = *params;
    if (p.factor_type < 0 || p.factor_type > 2)
      hci::fail(HCI_ERR_INVALID_ARGUMENT, "hci_lowrank_bench: factor_type must be 0, 1 or 2");
    if (p.simd < -1 || p.simd > 2)
      hci::fail(HCI_ERR_INVALID_ARGUMENT, "hci_lowrank_bench: simd must be -1, 0, 1 or 2");
    hci::LowRankBenchConfig c;
    c.d_model = p.d_model;
    c.d_ff = p.d_ff;
    c.kv_dim = p.kv_dim;
    c.n_layers = p.n_layers;
    c.rank = p.rank;
    c.batch = p.batch;
    c.type = hci::FactorType(p.factor_type);
    c.n_threads = resolve_threads(p.n_threads, 0);
    c.simd = p.simd < 0 ? hci::best_simd_level() : hci::SimdLevel(p.simd);
    c.iters = p.iters;
    c.warmup = p.warmup;
    c.first_core = p.first_core;
    const hci::LowRankBenchResult r = hci::bench_lowrank(c);
    *out = hci_lowrank_bench_result{};
    out->seconds_median = r.seconds_median;
    out->seconds_min = r.seconds_min;
    out->bytes = r.bytes;
    out->host_read_gbps = r.host_read_gbps;
    out->simd = int32_t(c.simd);
    out->n_points = r.n_points;
  });
}

}  // extern "C"
