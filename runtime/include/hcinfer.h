// hcinfer: the C ABI of the engine.
//
// Conventions (after llama.cpp's llama.h):
// - opaque handles (hci_model, hci_session), created by *_load / *_create and released by *_free;
// - every configurable call takes a *_params struct; hci_*_default_params() fills the defaults;
// - every fallible entry point returns an hci_status and, on failure, writes a NUL-terminated
//   message naming what failed and where (file, tensor, key) into the caller's buffer `err`
//   of `err_len` bytes (truncated to fit; may be NULL / 0); no C++ exception crosses this boundary;
// - there is no thread-local "last error": callers from any thread get their own message;
// - a handle may be used from any thread; calls on one model are serialized internally
//   (calibrate / quantize / set_ranks take it exclusively, evaluation and sessions share it);
// - long calls (calibrate, quantize, eval) write progress into a caller-owned int64 counter (may
//   be NULL) and check a caller-owned int32 cancel flag (may be NULL; nonzero = stop with
//   HCI_ERR_CANCELLED).
//
// Shapes use row-major [rows, cols]; a linear layer's weight W is [d_out, d_in] as in PyTorch.
#ifndef HCINFER_H
#define HCINFER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HCI_ABI_VERSION 1

#ifndef HCI_API
#define HCI_API __attribute__((visibility("default")))
#endif

typedef enum hci_status {
  HCI_OK = 0,
  HCI_ERR_INVALID_ARGUMENT = 1,  // a parameter is out of range or inconsistent
  HCI_ERR_IO = 2,                // a file is missing or unreadable
  HCI_ERR_FORMAT = 3,            // a file is malformed (truncated, bad header, shape mismatch)
  HCI_ERR_UNSUPPORTED = 4,       // valid input that this build cannot handle (architecture, dtype)
  HCI_ERR_OUT_OF_MEMORY = 5,     // an allocation failed
  HCI_ERR_NUMERIC = 6,           // a numerical routine failed (SVD did not converge, NaN)
  HCI_ERR_CANCELLED = 7,         // the caller's cancel flag was raised
  HCI_ERR_INTERNAL = 8,          // a bug: please report with the message
} hci_status;

typedef struct hci_model hci_model;      // weights (+ quantized variant and factors), read-only in use
typedef struct hci_session hci_session;  // one sequence's KV cache on a model

// Linear layer kinds inside a transformer block; bit i of a mask selects kind i.
typedef enum hci_linear_kind {
  HCI_LINEAR_Q = 0,     // self_attn.q_proj  [n_heads*head_dim, d_model]
  HCI_LINEAR_K = 1,     // self_attn.k_proj  [n_kv_heads*head_dim, d_model]
  HCI_LINEAR_V = 2,     // self_attn.v_proj  [n_kv_heads*head_dim, d_model]
  HCI_LINEAR_O = 3,     // self_attn.o_proj  [d_model, n_heads*head_dim]
  HCI_LINEAR_GATE = 4,  // mlp.gate_proj     [d_ff, d_model]
  HCI_LINEAR_UP = 5,    // mlp.up_proj       [d_ff, d_model]
  HCI_LINEAR_DOWN = 6,  // mlp.down_proj     [d_model, d_ff]
  HCI_LINEAR_KINDS = 7,
} hci_linear_kind;

#define HCI_LINEAR_ALL 0x7F

// ---------------------------------------------------------------------------------------------
// Library

// HCI_ABI_VERSION of the built library; bindings refuse a library whose version differs.
HCI_API int32_t hci_abi_version(void);

// Library version string, e.g. "0.1.0 (g++ 12.2.0, OpenBLAS 0.3.21, Release)". Static storage.
HCI_API const char* hci_version(void);

// Human-readable name of a status code ("HCI_ERR_FORMAT"). Static storage.
HCI_API const char* hci_status_name(int32_t status);

// ---------------------------------------------------------------------------------------------
// Model

typedef struct hci_model_params {
  int32_t n_threads;  // worker threads for this model's calls; 0 = all online cores
  int32_t reserved;   // must be 0
} hci_model_params;

HCI_API hci_model_params hci_model_default_params(void);

// Static description of a loaded model (from config.json and the weights).
typedef struct hci_model_info {
  int32_t n_layers;     // transformer blocks
  int32_t d_model;      // hidden size
  int32_t n_heads;      // query heads
  int32_t n_kv_heads;   // key/value heads (grouped-query attention when < n_heads)
  int32_t head_dim;     // per-head size
  int32_t d_ff;         // MLP intermediate size
  int32_t vocab_size;   // rows of the embedding
  int32_t max_positions;// max_position_embeddings
  int32_t tied_embeddings;  // 1 when the output head reuses the input embedding
  int32_t n_linears;    // quantizable linear layers = n_layers * HCI_LINEAR_KINDS
  int64_t n_params;     // parameters, counting a tied embedding once
  double rope_theta;    // RoPE base
  double rms_norm_eps;  // RMSNorm epsilon
} hci_model_info;

// Loads a Hugging Face checkpoint directory: config.json plus model.safetensors or
// model.safetensors.index.json with its shards (float32 / float16 / bfloat16). Weights are
// converted to float32 in memory. Supported model_type: "llama", "mistral" (dense).
HCI_API hci_status hci_model_load(const char* dir, const hci_model_params* params, hci_model** out,
                          char* err, size_t err_len);
HCI_API void hci_model_free(hci_model* model);  // NULL is a no-op
HCI_API hci_status hci_model_get_info(const hci_model* model, hci_model_info* out, char* err,
                              size_t err_len);

// ---------------------------------------------------------------------------------------------
// Quantization and low-rank compensation

typedef struct hci_quant_params {
  int32_t bits;           // 2, 3, 4 or 8; 0 restores full precision (drops factors too)
  int32_t group_size;     // 32, 64 or 128 input columns per group; -1 = one group per output row
  int32_t max_rank;       // factors kept per layer: A [max_rank, d_in], B [d_out, max_rank]; 0 = none
  uint32_t kind_mask;     // which linear kinds are quantized (bit hci_linear_kind); HCI_LINEAR_ALL
  int32_t layer_begin;    // first block quantized (inclusive)
  int32_t layer_end;      // last block quantized (exclusive); -1 = n_layers
} hci_quant_params;

HCI_API hci_quant_params hci_quant_default_params(void);

// Quantizes the selected linear layers with group-wise asymmetric round-to-nearest (scales kept
// at float16 precision, integer zero points) and factors each residual E = W - deq(Q(W)) by a
// truncated SVD (float64 LAPACK) into ordered factors with B = U sqrt(S), A = sqrt(S) V^T.
// Replaces any earlier quantization (always from the original weights) and sets every layer's
// active rank to min(max_rank, d_out, d_in). `progress` counts finished layers among the selected
// ones (n_linears with the default selection).
// Same as hci_model_quantize_ex with method RTN and plain scaling.
HCI_API hci_status hci_model_quantize(hci_model* model, const hci_quant_params* params,
                              int64_t* progress, const int32_t* cancel, char* err, size_t err_len);

// Quantization algorithm of hci_quant_ex_params.method.
typedef enum hci_quant_method {
  HCI_QUANT_RTN = 0,   // group-wise round-to-nearest (as hci_model_quantize)
  HCI_QUANT_GPTQ = 1,  // GPTQ (Hessian-aware, sequential over blocks; needs hci_model_calibrate)
} hci_quant_method;

// Input scaling S of the compensation factors (hci_quant_ex_params.scaling): the factors come
// from the truncated SVD of E·S, unscaled afterwards (A = sqrt(Σ) Vᵀ S⁻¹), so they minimize the
// output-space error ||(E − B A) S||_F instead of ||E − B A||_F.
typedef enum hci_scaling {
  HCI_SCALING_PLAIN = 0,     // S = I
  HCI_SCALING_ACT_DIAG = 1,  // S = diag(sqrt(E[x²])), entries floored at eig_floor * max
  HCI_SCALING_ACT_FULL = 2,  // S = E[x xᵀ]^½ (symmetric eigendecomposition, floored eigenvalues)
} hci_scaling;

typedef struct hci_quant_ex_params {
  int32_t bits;            // 2, 3, 4 or 8; 0 restores full precision (drops factors too)
  int32_t group_size;      // 32, 64 or 128 input columns per group; -1 = one group per output row
  int32_t max_rank;        // factors kept per layer: A [max_rank, d_in], B [d_out, max_rank]; 0 = none
  uint32_t kind_mask;      // which linear kinds are quantized (bit hci_linear_kind); HCI_LINEAR_ALL
  int32_t layer_begin;     // first block quantized (inclusive)
  int32_t layer_end;       // last block quantized (exclusive); -1 = n_layers
  int32_t method;          // hci_quant_method: HCI_QUANT_RTN or HCI_QUANT_GPTQ
  int32_t act_order;       // GPTQ only: 1 = columns in order of descending diag(H) (else 0)
  double damp_percent;     // GPTQ: H += damp_percent * mean(diag(H)) * I; 0.01 = 1% (default)
  int32_t scaling;         // hci_scaling of the compensation factors (used when max_rank > 0)
  int32_t groups_from_block_start;  // GPTQ with groups < 128: 1 = group scales from the weights
                           // as they stood at the start of the 128-column lazy block, as the
                           // reference code (gptq.py) computes them; 0 = from the current,
                           // fully error-updated weights, as the algorithm is published (default)
  double eig_floor;        // act-diag / act-full: eigenvalues (second moments) below eig_floor
                           // times the largest are raised to it, for S and S⁻¹; in (0, 1),
                           // default 1e-6
} hci_quant_ex_params;

HCI_API hci_quant_ex_params hci_quant_ex_default_params(void);

// Quantizes the selected linear layers and factors each residual E = W - deq(Q(W)).
// Replaces any earlier quantization (always from the original weights) and sets every layer's
// active rank to min(max_rank, d_out, d_in). `progress` counts finished layers among the selected
// ones. Methods:
// - RTN: as hci_model_quantize. Activation-aware scalings use the statistics of the last
//   hci_model_calibrate (those of the full-precision model).
// - GPTQ (Frantar et al.; the reference implementation's steps, in float64, lazy blocks of 128
//   columns, dead inputs zeroed, damping, optional act_order, group scales and zeros computed on
//   the fly when each group starts, static_groups = False): sequential: the calibration windows
//   are run through the model block by block, block l's Hessians H = E[x xᵀ] collected with
//   blocks < l already quantized (quantized weights, no factors), then block l quantized; one
//   pass over the model. Activation-aware scalings use those same per-block statistics. With
//   act_order and groups, groups are runs of consecutive columns in the permuted order; codes
//   and dequantized weights are stored in the original column order with each column's group.
// Scaled factors (act-diag, act-full) are ordered by the singular values of E·S, which
// hci_model_get_singular_values returns. GPTQ, and act-* with max_rank > 0, need calibration
// (HCI_ERR_INVALID_ARGUMENT "call hci_model_calibrate first"); RTN with act-full also needs it
// with full_covariance. On error or cancel every layer is left at full precision.
HCI_API hci_status hci_model_quantize_ex(hci_model* model, const hci_quant_ex_params* params,
                                 int64_t* progress, const int32_t* cancel, char* err,
                                 size_t err_len);

// Sets the active rank of every quantized layer: ranks[i] for linear i = layer*7 + kind, n must be
// n_linears; each rank in [0, that layer's max rank]. Unquantized layers need rank 0.
HCI_API hci_status hci_model_set_ranks(hci_model* model, const int32_t* ranks, int32_t n, char* err,
                               size_t err_len);
// Same rank for every quantized layer, clamped to each layer's max rank.
HCI_API hci_status hci_model_set_uniform_rank(hci_model* model, int32_t rank, char* err, size_t err_len);

// One linear layer's state and errors (relative Frobenius norms against the original weight,
// in weight space for every scaling: rel_err_active is computed exactly from the stored factors,
// one value per prefix rank, when the layer is quantized).
typedef struct hci_linear_info {
  int32_t layer;            // block index
  int32_t kind;             // hci_linear_kind
  int32_t d_out;            // rows of W
  int32_t d_in;             // columns of W
  int32_t bits;             // 0 when not quantized
  int32_t group_size;       // input columns per group as quantized (d_in when per row); 0 if not
  int32_t max_rank;         // factors stored
  int32_t rank;             // factors in use
  double rel_err_quant;     // ||W - deq(Q(W))||_F / ||W||_F
  double rel_err_active;    // ||W - deq(Q(W)) - B[:, :rank] A[:rank]||_F / ||W||_F
} hci_linear_info;

HCI_API hci_status hci_model_get_linear(const hci_model* model, int32_t index, hci_linear_info* out,
                                char* err, size_t err_len);

// Singular values of linear `index`'s scaled residual E·S (S of its scaling: I for plain, so then
// those of E), largest first: writes min(n, max_rank) doubles. They order the factors; for a
// scaled layer their tail sum of squares is the output-space error ||(E − B_r A_r) S||², not
// the weight-space error. `out` may be NULL when n is 0.
HCI_API hci_status hci_model_get_singular_values(const hci_model* model, int32_t index, double* out,
                                         int32_t n, int32_t* n_written, char* err, size_t err_len);

// ---------------------------------------------------------------------------------------------
// Calibration: activation statistics of every linear layer's input

typedef struct hci_calib_params {
  int32_t seq_len;          // tokens per window, at most max_position_embeddings
  int32_t n_windows;        // windows: tokens[w*seq_len, (w+1)*seq_len) for w < n_windows;
                            // 0 = floor(n_tokens / seq_len)
  int32_t full_covariance;  // 1 = keep H = E[x xᵀ] per input group (8 d_in² bytes each; needed
                            // by act-full with RTN); 0 = keep only E[x²]
  int32_t n_threads;        // 0 = the model's n_threads
} hci_calib_params;

HCI_API hci_calib_params hci_calib_default_params(void);  // {512, 0, 1, 0}

// Runs the full-precision model (whatever its current quantization) on the calibration windows
// and keeps, in the model, a copy of those tokens (sequential GPTQ runs them again) and for each
// linear input group of each block (q/k/v share one input, gate/up share one; o and down have
// their own) E[x²] and, with full_covariance, H = E[x xᵀ], accumulated in float64 over all
// window tokens. Replaces an earlier calibration. The caller chooses the windows: the TS
// bindings sample them with a seeded generator (ffi/calibration.ts). `progress` counts windows.
// The earlier calibration is dropped first: on error or cancel the model has none.
HCI_API hci_status hci_model_calibrate(hci_model* model, const int32_t* tokens, int64_t n_tokens,
                               const hci_calib_params* params, int64_t* progress,
                               const int32_t* cancel, char* err, size_t err_len);

typedef struct hci_calib_info {
  int32_t calibrated;       // 1 after hci_model_calibrate; 0 (and every field 0) before
  int32_t seq_len;          // tokens per window
  int32_t n_windows;        // windows
  int32_t full_covariance;  // 1 when H is kept
  int64_t n_tokens;         // n_windows * seq_len
  double seconds;           // wall time of the statistics pass
} hci_calib_info;

HCI_API hci_status hci_model_get_calibration(const hci_model* model, hci_calib_info* out, char* err,
                                     size_t err_len);
// Drops the calibration tokens and statistics (a no-op when there are none).
HCI_API hci_status hci_model_clear_calibration(hci_model* model, char* err, size_t err_len);

// E[x²] of linear `index`'s input (of the full-precision model): writes min(n, d_in) doubles.
// HCI_ERR_INVALID_ARGUMENT before hci_model_calibrate.
HCI_API hci_status hci_model_get_act_second_moments(const hci_model* model, int32_t index,
                                            double* out, int32_t n, int32_t* n_written,
                                            char* err, size_t err_len);
// H = E[x xᵀ] of linear `index`'s input, row-major [d_in, d_in]: writes min(n, d_in²) doubles.
// HCI_ERR_INVALID_ARGUMENT before hci_model_calibrate or when calibrated without full_covariance.
HCI_API hci_status hci_model_get_act_covariance(const hci_model* model, int32_t index, double* out,
                                        int32_t n, int32_t* n_written, char* err,
                                        size_t err_len);

// ---------------------------------------------------------------------------------------------
// Scoring

typedef struct hci_eval_params {
  int32_t seq_len;      // window length in tokens (each window is scored independently)
  int32_t max_windows;  // score at most this many windows from the start; 0 = all floor(n/seq_len)
  int32_t n_threads;    // 0 = the model's n_threads
  int32_t reserved;     // must be 0
} hci_eval_params;

HCI_API hci_eval_params hci_eval_default_params(void);

typedef struct hci_eval_result {
  double nll_sum;       // sum of -log p(t[i+1] | t[..i]) over predicted tokens
  int64_t n_predicted;  // windows * (seq_len - 1)
  int64_t n_windows;    // windows scored
  double seconds;       // wall time of the call
} hci_eval_result;

// Perplexity by the GPTQ protocol: tokens[0..n) cut into floor(n / seq_len) non-overlapping
// windows (capped by max_windows); within each window every token after the first is predicted.
// ppl = exp(nll_sum / n_predicted). `progress` counts finished windows.
HCI_API hci_status hci_eval_nll(hci_model* model, const int32_t* tokens, int64_t n_tokens,
                        const hci_eval_params* params, hci_eval_result* out, int64_t* progress,
                        const int32_t* cancel, char* err, size_t err_len);

// Log-probabilities of one sequence: out[i] = log p(tokens[i+1] | tokens[0..i]), i < n - 1.
HCI_API hci_status hci_score_tokens(hci_model* model, const int32_t* tokens, int32_t n_tokens,
                            float* out, char* err, size_t err_len);

// ---------------------------------------------------------------------------------------------
// Sessions (KV cache) and generation

typedef struct hci_session_params {
  int32_t n_ctx;      // KV cache capacity in tokens; 0 = the model's max_positions
  int32_t n_threads;  // 0 = the model's n_threads
} hci_session_params;

HCI_API hci_session_params hci_session_default_params(void);

HCI_API hci_status hci_session_create(hci_model* model, const hci_session_params* params,
                              hci_session** out, char* err, size_t err_len);
HCI_API void hci_session_free(hci_session* session);  // NULL is a no-op
HCI_API hci_status hci_session_reset(hci_session* session, char* err, size_t err_len);
// Tokens already in the cache.
HCI_API int32_t hci_session_n_past(const hci_session* session);

// Appends n tokens to the cache (prefill when n > 1, decode when n == 1) and writes the logits of
// the last one into logits_out [vocab_size] (may be NULL).
HCI_API hci_status hci_session_decode(hci_session* session, const int32_t* tokens, int32_t n_tokens,
                              float* logits_out, char* err, size_t err_len);

// Greedy generation: prefill the prompt, then append argmax tokens until n_new are produced or
// eos_id (if >= 0) is produced (it is included). Writes the new tokens to out [n_new]; *n_out
// receives how many were written. Resets the session first.
HCI_API hci_status hci_generate_greedy(hci_session* session, const int32_t* prompt, int32_t n_prompt,
                               int32_t n_new, int32_t eos_id, int32_t* out, int32_t* n_out,
                               char* err, size_t err_len);

// ---------------------------------------------------------------------------------------------
// CPU compensation kernels (the heterogeneous path's CPU half): benchmark at real model shapes

typedef struct hci_lowrank_bench_params {
  int32_t d_model;      // hidden size (4096 for Llama-2-7B)
  int32_t d_ff;         // MLP intermediate size (11008)
  int32_t kv_dim;       // k/v projection output size (n_kv_heads * head_dim; 4096, or 1024 for Llama-3-8B)
  int32_t n_layers;     // blocks; each has 4 compensation points: q/k/v, o, gate/up, down
  int32_t rank;         // rank of every branch
  int32_t batch;        // rows of x per point (decode batch)
  int32_t factor_type;  // 0 float32, 1 bfloat16 (default), 2 float16
  int32_t n_threads;    // worker threads (the caller is one of them); 0 = all online cores
  int32_t simd;         // -1 = best available, 0 scalar, 1 AVX2+FMA, 2 AVX-512F
  int32_t iters;        // timed passes (the median is reported)
  int32_t warmup;       // untimed passes first
  int32_t first_core;   // pin worker i to core first_core + i; -1 = no pinning
} hci_lowrank_bench_params;

HCI_API hci_lowrank_bench_params hci_lowrank_bench_default_params(void);

typedef struct hci_lowrank_bench_result {
  double seconds_median;  // one pass over every point (a decode step's compensation)
  double seconds_min;     // fastest pass
  double bytes;           // factor bytes read per pass (A rows and B columns in use)
  double host_read_gbps;  // streaming read bandwidth of 1 GiB with the same threads and pinning
  int32_t simd;           // level that ran
  int32_t n_points;       // compensation points per pass
} hci_lowrank_bench_result;

// Builds n_layers * 4 compensation points with random factors, times passes over all of them
// (each point: t = A·x over the concatenated A of the layers sharing x, then y_j += B_j·t_j,
// split over the threads), and measures host read bandwidth beside it. Memory: about `bytes`.
HCI_API hci_status hci_lowrank_bench(const hci_lowrank_bench_params* params,
                                     hci_lowrank_bench_result* out, char* err, size_t err_len);

#ifdef __cplusplus
}
#endif

#endif  // HCINFER_H
