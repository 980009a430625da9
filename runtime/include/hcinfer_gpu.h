// hcinfer GPU backend: the C ABI of the CUDA half of the engine (optional at build and at run time).
//
// Same conventions as hcinfer.h: opaque handles created by *_create / *_synthetic and released by
// *_free; every configurable call takes a *_params struct filled by *_default_params(); every
// fallible entry point returns an hci_status and writes a NUL-terminated message into the caller's
// buffer `err` of `err_len` bytes (may be NULL / 0); no C++ exception crosses this boundary.
//
// Availability:
// - a library built without CUDA (no nvcc at build time) exports every function below; they
//   return HCI_ERR_UNSUPPORTED with "built without CUDA" (hci_gpu_device_info fills its struct
//   with built_with_cuda = 0 and the reason first);
// - a CUDA build on a machine without a usable GPU reports it through hci_gpu_device_info
//   (available = 0, reason = the CUDA error); the other calls then fail with HCI_ERR_UNSUPPORTED.
//
// Threading: a GPU model may be used from any thread; calls on one GPU model are serialized
// internally; each call selects the model's device itself.
//
// Numerics of the GPU forward (LLaMA-style dense models):
// - linear weights in fp16 or bf16 (the "float" formats), or packed 2/3/4/8-bit group-wise codes
//   with fp16 (scale, zero) pairs per group (the "packed" format; codes exactly as the CPU
//   quantizer made them: deq = (code - zero) * scale);
// - activations entering a matrix product are fp16 (bf16 with bf16 weights), every product
//   accumulates in fp32, the residual stream, RMSNorm, RoPE, softmax and logits are fp32; the KV
//   cache is fp16 or fp32;
// - decode (up to 16 rows per step) uses the library's own bandwidth-bound GEMV kernels; prefill
//   (more than 16 rows) uses cuBLAS (or the library's own tensor-core GEMM when built without
//   cuBLAS); packed layers are dequantized slice by slice into an fp16 scratch buffer for prefill;
// - the decode step can be captured as a CUDA graph (positions and token ids live in device
//   memory, so one graph per batch size is replayed for every token).
#ifndef HCINFER_GPU_H
#define HCINFER_GPU_H

#include "hcinfer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HCI_GPU_ABI_VERSION 5

typedef struct hci_gpu_model hci_gpu_model;  // weights, KV cache and buffers on one GPU

// Element types on the GPU.
typedef enum hci_gpu_dtype {
  HCI_GPU_F16 = 0,   // IEEE half
  HCI_GPU_BF16 = 1,  // bfloat16
  HCI_GPU_F32 = 2,   // float (KV cache only)
} hci_gpu_dtype;

// Which weights of a loaded hci_model are put on the GPU (hci_gpu_params.weights).
typedef enum hci_gpu_weights {
  HCI_GPU_WEIGHTS_CURRENT = 0,   // each linear's weight as the CPU forward uses it: deq(Q(W)) when
                                 // quantized, else W; converted to dtype
  HCI_GPU_WEIGHTS_PACKED = 1,    // quantized linears packed from their codes (2/3/4/8 bits, fp16
                                 // scale/zero per group), the others as CURRENT; needs dtype F16
  HCI_GPU_WEIGHTS_ORIGINAL = 2,  // the original W everywhere, whatever the quantization
} hci_gpu_weights;

// Prefill matrix-product backend (hci_gpu_params.gemm).
typedef enum hci_gpu_gemm {
  HCI_GPU_GEMM_AUTO = 0,    // cuBLAS when the library was built with it, else OWN
  HCI_GPU_GEMM_CUBLAS = 1,  // cuBLAS (HCI_ERR_UNSUPPORTED when built without it)
  HCI_GPU_GEMM_OWN = 2,     // the library's own tensor-core (WMMA) kernel
} hci_gpu_gemm;

// Where the low-rank compensation y += B_r (A_r x) of the quantized linears runs
// (hci_gpu_params.placement). The CPU placements keep the factors in host memory only; the CPU
// computes each compensation point's correction (the linears sharing one input: q/k/v, o,
// gate/up, down of a block) from the activations the GPU hands it through mapped pinned host
// memory, and the GPU adds it to the point's output. Protocol: runtime/src/hetero/handoff.h.
typedef enum hci_gpu_placement {
  HCI_GPU_PLACE_NONE = 0,       // backbone only (no compensation)
  HCI_GPU_PLACE_GPU = 1,        // factors in device memory (model dtype), products on the GPU
  HCI_GPU_PLACE_CPU_SYNC = 2,   // the GPU hands x over and waits for the correction before its
                                // own product of the point (no overlap: the baseline)
  HCI_GPU_PLACE_CPU_ASYNC = 3,  // the GPU runs the point's backbone product while the CPU computes
                                // the correction, and waits only when it needs it
} hci_gpu_placement;

// Compensation during prefill (more than 16 rows) for the CPU placements
// (hci_gpu_params.prefill_comp).
typedef enum hci_gpu_prefill_comp {
  HCI_GPU_PREFILL_COMP_CPU = 0,  // the CPU computes it (a GEMM over the chunk's rows) through the
                                 // same hand-off as decode (default)
  HCI_GPU_PREFILL_COMP_GPU = 1,  // a device copy of the factors (charged to the memory budget)
                                 // is used for prefill; decode still uses the CPU
} hci_gpu_prefill_comp;

// Storage of the host factors (hci_gpu_params.factor_dtype).
typedef enum hci_gpu_factor_dtype {
  HCI_GPU_FACTOR_F32 = 0,
  HCI_GPU_FACTOR_BF16 = 1,  // default
  HCI_GPU_FACTOR_F16 = 2,
} hci_gpu_factor_dtype;

// ---------------------------------------------------------------------------------------------
// Device

typedef struct hci_gpu_device_info {
  int32_t built_with_cuda;  // 1 when this library was compiled with nvcc
  int32_t built_with_cublas;// 1 when it links cuBLAS (prefill GEMMs), 0 = own GEMM only
  int32_t available;        // 1 when the device below can be used
  int32_t device;           // the CUDA ordinal asked for
  int32_t device_count;     // CUDA devices visible
  int32_t cc_major;         // compute capability
  int32_t cc_minor;
  int32_t sm_count;         // multiprocessors
  int32_t driver_version;   // cudaDriverGetVersion, e.g. 13000 (0 without a driver)
  int32_t runtime_version;  // cudaRuntimeGetVersion of the linked runtime
  int64_t total_memory;     // bytes of device memory
  int64_t free_memory;      // bytes free when asked
  int64_t l2_bytes;         // L2 cache size
  int32_t memory_clock_khz; // peak memory clock (0 when the runtime does not report it)
  int32_t memory_bus_bits;  // memory bus width (0 when not reported)
  char name[128];           // device name, e.g. "NVIDIA H100 80GB HBM3" ("" when not available)
  char reason[256];         // why not available ("" when available)
  char build[128];          // what the library was built with, e.g. "CUDA 13.0, sm_80 sm_90, cuBLAS"
} hci_gpu_device_info;

// Fills `out` for CUDA device `device` (0 = first). A CUDA build returns HCI_OK also when no GPU
// is usable (available = 0, reason filled); a build without CUDA fills the struct and returns
// HCI_ERR_UNSUPPORTED "built without CUDA".
HCI_API hci_status hci_gpu_get_device_info(int32_t device, hci_gpu_device_info* out, char* err,
                                       size_t err_len);

typedef struct hci_gpu_bandwidth {
  double hbm_gbps;         // device-to-device cudaMemcpy: (bytes read + bytes written) / time, GB/s
  double hbm_read_gbps;    // a read-only streaming kernel (16-byte loads): bytes read / time, GB/s
  double h2d_pinned_gbps;  // pinned host -> device cudaMemcpy, GB/s
  double d2h_pinned_gbps;  // device -> pinned host cudaMemcpy, GB/s
  int64_t bytes;           // buffer size used (device copy moves 2x this per repeat)
  int32_t repeats;         // timed repeats (median reported; one untimed warm-up first)
  int32_t sm_count;        // SMs the copies and the kernel ran on (the partition, or all) (ABI 5)
} hci_gpu_bandwidth;

// Measures memory bandwidths on `device` with buffers of `bytes` (0 = 1 GiB) and `repeats`
// timed copies (0 = 10); CUDA events, median. Allocates its buffers outside any model's budget.
HCI_API hci_status hci_gpu_measure_bandwidth(int32_t device, int64_t bytes, int32_t repeats,
                                             hci_gpu_bandwidth* out, char* err, size_t err_len);
// The same on a partition of at least `sm_limit` SMs (as hci_gpu_params.sm_limit; 0 = every SM),
// so that a model run on a partition has its roofline from the same SMs (ABI 5).
HCI_API hci_status hci_gpu_measure_bandwidth_partition(int32_t device, int32_t sm_limit,
                                                       int64_t bytes, int32_t repeats,
                                                       hci_gpu_bandwidth* out, char* err,
                                                       size_t err_len);

// ---------------------------------------------------------------------------------------------
// GPU models

typedef struct hci_gpu_params {
  int32_t device;         // CUDA device ordinal (default 0)
  int32_t weights;        // hci_gpu_weights (from an hci_model only; default CURRENT)
  int32_t dtype;          // hci_gpu_dtype of float weights and of matrix-product inputs: F16
                          // (default) or BF16; packed weights need F16
  int32_t kv_dtype;       // hci_gpu_dtype of the KV cache: F16 (default) or F32
  int32_t max_batch;      // sequences held (decoded together), 1..16 (default 1)
  int32_t n_ctx;          // KV capacity per sequence in tokens; 0 = min(max_positions, 4096)
  int32_t placement;      // hci_gpu_placement of each quantized linear's low-rank compensation
                          // (its active rank from an hci_model, or hci_gpu_synth_params.rank);
                          // default NONE
  int32_t offload;        // 1 = when the weights do not fit memory_budget, keep the blocks that do
                          // not fit in pinned host memory and stream each one in before use
                          // (double-buffered, own copy stream; default 1); 0 = fail instead
  int32_t use_graphs;     // 1 = capture each decode step as a CUDA graph and replay it (default
                          // 1; graphs are not used while blocks are streamed)
  int32_t gemm;           // hci_gpu_gemm for prefill (default AUTO)
  int64_t memory_budget;  // cap in bytes on everything the model allocates on the device
                          // (weights, KV cache, activations, scratch, cuBLAS workspace), enforced
                          // by the library's allocator; 0 = none (the device's free memory)
  int32_t prefill_chunk;  // rows per forward step (activation buffers); 0 = 512
  int32_t cpu_threads;    // CPU placements: compensation worker threads, the serving thread
                          // included; 0 = the cores from cpu_first_core on but the last two
                          // (left to the rest of the process and the OS; all of them where
                          // fewer than 5), at most 32, of which decode passes use the first 4
  int32_t cpu_first_core; // CPU placements: workers pinned to cores cpu_first_core ..
                          // cpu_first_core + cpu_threads - 1 (default 2: cores 0 and 1 are left
                          // to the thread feeding the GPU and the driver); -1 = no pinning
  int32_t factor_dtype;   // CPU placements: hci_gpu_factor_dtype of the host factors (default BF16)
  int32_t prefill_comp;   // CPU placements: hci_gpu_prefill_comp (default CPU)
  int32_t rank_controller;// CPU_ASYNC: 1 = the run-time rank controller picks each point's rank
                          // prefix every decode step so the CPU stays off the critical path,
                          // and which points are handed to the CPU at all (default 0: the full
                          // ranks every step)
  int32_t controller_slowdown_pct; // rank controller: decode steps may be this many percent
                          // slower than the backbone's own (measured with every point off);
                          // 0 = 8 (every point's hand-off alone costs the GPU ~4.5%),
                          // -1 = keep every point on (ranks only) (ABI 4)
  int32_t sm_limit;       // run every kernel of the model on a partition of at least this many
                          // SMs (a CUDA green context; the driver rounds up, to multiples of 8 on
                          // Hopper), emulating a smaller GPU as memory_budget emulates a smaller
                          // memory; 0 = every SM (default) (ABI 5)
} hci_gpu_params;

HCI_API hci_gpu_params hci_gpu_default_params(void);

// Uploads a loaded model (read under its shared lock; the GPU model keeps no reference to it, so
// the hci_model may be changed or freed afterwards). The need in device bytes is computed from the
// shapes first: when it exceeds the budget (and offloading is off or cannot help) this fails with
// HCI_ERR_OUT_OF_MEMORY naming the need and the cap, before any device allocation. PACKED needs a
// quantized model with plain column groups (no GPTQ act-order g_idx) and input sizes that are
// multiples of 64.
HCI_API hci_status hci_gpu_model_create(hci_model* model, const hci_gpu_params* params,
                                        hci_gpu_model** out, char* err, size_t err_len);

typedef struct hci_gpu_synth_params {
  uint64_t seed;       // weights are a function of (seed, tensor, index): same seed, same model
  int32_t bits;        // 0 = float weights of hci_gpu_params.dtype; 2, 3, 4 or 8 = packed codes
  int32_t group_size;  // packed: 32, 64 or 128 input columns per group, -1 = one group per row
  int32_t rank;        // rank of every linear's synthetic compensation factors (seeded random,
                       // used when hci_gpu_params.placement is not NONE); 0 = none
  int32_t reserved;    // must be 0
} hci_gpu_synth_params;

HCI_API hci_gpu_synth_params hci_gpu_synth_default_params(void);  // {0, 0, 128, 0, 0}

// A model with the exact shapes of a public checkpoint and seeded random weights generated on the
// device (no files, no host copy except for blocks that are offloaded). Names (the "synthetic:"
// prefix is optional):
//   llama-2-7b   32 layers, d 4096, 32/32 heads, ffn 11008, vocab 32000
//   llama-2-13b  40 layers, d 5120, 40/40 heads, ffn 13824, vocab 32000
//   llama-3-8b   32 layers, d 4096, 32/8 heads,  ffn 14336, vocab 128256, rope theta 500000
//   test         2 layers, d 512, 8/4 heads, ffn 1408, vocab 1000 (for tests)
// Float weights ~ N(0, 0.02²) (approximately), norms 1; packed codes uniform with per-group
// scales giving the same standard deviation, zero points at the middle of the range. Weights
// of params->weights are ignored.
HCI_API hci_status hci_gpu_model_synthetic(const char* name, const hci_gpu_synth_params* synth,
                                           const hci_gpu_params* params, hci_gpu_model** out,
                                           char* err, size_t err_len);

HCI_API void hci_gpu_model_free(hci_gpu_model* model);  // NULL is a no-op

typedef struct hci_gpu_model_info {
  int32_t n_layers;           // transformer blocks
  int32_t d_model;            // hidden size
  int32_t n_heads;            // query heads
  int32_t n_kv_heads;         // key/value heads
  int32_t head_dim;           // per-head size
  int32_t d_ff;               // MLP intermediate size
  int32_t vocab_size;         // rows of the embedding
  int32_t n_ctx;              // KV capacity per sequence
  int32_t max_batch;          // sequences held
  int32_t bits;               // packed bits of the linear layers (0 = float weights, -1 = mixed)
  int32_t group_size;         // packed group size (0 = float, -1 = one group per row, -2 = mixed)
  int32_t dtype;              // hci_gpu_dtype of float weights / matrix inputs
  int32_t kv_dtype;           // hci_gpu_dtype of the KV cache
  int32_t resident_layers;    // blocks whose weights stay on the device
  int32_t offloaded_layers;   // blocks kept in pinned host memory and streamed per step
  int32_t gemm;               // hci_gpu_gemm in use for prefill (CUBLAS or OWN)
  int64_t weight_bytes;       // all weights, wherever they live
  int64_t weight_bytes_per_token;  // bytes of weights one decode step reads (every linear and
                                   // norm, the lm_head, one embedding row per sequence)
  int64_t streamed_bytes_per_step; // bytes copied host -> device per forward step (offload)
  int64_t device_bytes_needed;     // the up-front need computed from the shapes (as allocated)
  int64_t memory_budget;      // cap in force (0 = none)
  int64_t device_bytes_in_use;// allocated through the library's allocator now
  int64_t device_bytes_peak;  // peak of the above since creation
  int64_t pinned_host_bytes;  // pinned host memory held (offloaded blocks)
  int32_t sm_count;           // SMs the model's kernels run on (the partition of sm_limit, or all)
  int32_t reserved;           // 0
} hci_gpu_model_info;

HCI_API hci_status hci_gpu_model_get_info(const hci_gpu_model* model, hci_gpu_model_info* out,
                                          char* err, size_t err_len);

// ---------------------------------------------------------------------------------------------
// Sequences, decoding, generation

// Empties sequence `seq` (0..max_batch-1), or all of them when seq is -1.
HCI_API hci_status hci_gpu_reset(hci_gpu_model* model, int32_t seq, char* err, size_t err_len);
// Tokens in sequence `seq`'s cache (-1 for a bad index).
HCI_API int32_t hci_gpu_n_past(const hci_gpu_model* model, int32_t seq);

// Appends n_tokens to sequence `seq` (prefill in chunks of prefill_chunk rows) and writes the
// logits of the last one into logits_out [vocab_size] (may be NULL).
HCI_API hci_status hci_gpu_prefill(hci_gpu_model* model, int32_t seq, const int32_t* tokens,
                                   int32_t n_tokens, float* logits_out, char* err,
                                   size_t err_len);

// One decode step of sequences 0..n_seqs-1 together: tokens[i] is appended to sequence i at its
// own position; logits_out [n_seqs, vocab_size] (may be NULL). Replays the CUDA graph of this
// batch size when graphs are on (captured on first use).
HCI_API hci_status hci_gpu_decode(hci_gpu_model* model, const int32_t* tokens, int32_t n_seqs,
                                  float* logits_out, char* err, size_t err_len);

// Greedy generation on sequence 0 (reset first): prefill the prompt, then n_new argmax tokens
// (computed on the device, ties to the lowest id) until eos_id (if >= 0) is produced (included).
// out [n_new]; *n_out receives how many were written.
HCI_API hci_status hci_gpu_generate_greedy(hci_gpu_model* model, const int32_t* prompt,
                                           int32_t n_prompt, int32_t n_new, int32_t eos_id,
                                           int32_t* out, int32_t* n_out, char* err,
                                           size_t err_len);

// Perplexity by the GPTQ protocol, as hci_eval_nll (params->n_threads is ignored): windows of
// seq_len tokens, each scored from an empty sequence 0; per-token NLLs from fp32 logits summed
// in float64. `progress` counts windows; `cancel` is checked between windows.
HCI_API hci_status hci_gpu_eval_nll(hci_gpu_model* model, const int32_t* tokens, int64_t n_tokens,
                                    const hci_eval_params* params, hci_eval_result* out,
                                    int64_t* progress, const int32_t* cancel, char* err,
                                    size_t err_len);

// ---------------------------------------------------------------------------------------------
// Benchmark

typedef struct hci_gpu_bench_params {
  int32_t batch;       // sequences decoded together, 1..max_batch (default 1)
  int32_t prompt_len;  // prompt tokens per sequence (seeded random ids; default 128)
  int32_t new_tokens;  // decode steps per repeat (default 128)
  int32_t repeats;     // timed repeats; medians are reported (default 5)
  int32_t warmup;      // untimed repeats first (default 1)
  int32_t use_graph;   // 1 = replay the captured decode graph (default), 0 = launch each step
  uint64_t seed;       // prompt ids
} hci_gpu_bench_params;

HCI_API hci_gpu_bench_params hci_gpu_bench_default_params(void);

typedef struct hci_gpu_bench_result {
  double decode_tokens_per_s;   // batch * new_tokens / median decode time (all steps of a repeat)
  double decode_ms_per_step;    // median over repeats of (decode time / new_tokens)
  double decode_ms_per_step_min;// fastest repeat
  double decode_ms_per_step_max;// slowest repeat
  double prefill_tokens_per_s;  // batch * prompt_len / median prefill time (sequences one by one)
  double prefill_ms;            // median prefill time of the batch's prompts
  double pcie_ms_per_step;      // median per decode step of the host -> device weight copies
                                // (CUDA events around each copy on the copy stream; 0 unless
                                // blocks are streamed)
  int64_t weight_bytes_per_step;   // weight bytes one decode step reads
  int64_t kv_bytes_per_step;       // mean KV-cache bytes read per decode step (all sequences)
  int64_t streamed_bytes_per_step; // host -> device bytes per decode step (offload)
  int64_t peak_device_bytes;       // allocator peak after the run
  int32_t graph_used;              // 1 when the decode steps replayed a CUDA graph
  int32_t steps;                   // decode steps timed per repeat (new_tokens)
} hci_gpu_bench_result;

// Times prefill and decode: each repeat resets the first `batch` sequences, prefills each with
// its prompt, then runs new_tokens greedy decode steps of all of them together (argmax on the
// device, no host round trip per step). Decode time comes from CUDA events around the steps.
HCI_API hci_status hci_gpu_bench_decode(hci_gpu_model* model, const hci_gpu_bench_params* params,
                                        hci_gpu_bench_result* out, char* err, size_t err_len);

// ---------------------------------------------------------------------------------------------
// Heterogeneous compensation (CPU placements)

typedef struct hci_gpu_comp_stats {
  int32_t placement;        // hci_gpu_placement in force
  int32_t n_points;         // compensation points per forward pass (CPU placements; 0 otherwise)
  int32_t cpu_threads;      // worker threads computing corrections
  int32_t rank_controller;  // 1 when the run-time controller chooses the ranks
  int64_t steps;            // decode steps served by the CPU since the last reset
  double cpu_busy_ms;       // decode: CPU time computing corrections (serving thread, from x
                            // received to correction published, and the workers' prefetch of
                            // the next points' factors between hand-offs), summed over steps
  double gpu_wait_ms;       // decode: time the GPU spent waiting for corrections (measured on
                            // the GPU with its global timer), summed over steps
  int64_t bytes_to_host;    // decode: activation bytes the GPU handed to the CPU, summed
  int64_t bytes_to_device;  // decode: correction bytes the GPU read back, summed
  int64_t factor_bytes_read;// decode: factor bytes the CPU read at the ranks used, summed
  int64_t factor_bytes_host;// factor bytes held in host memory
  double rank_fraction;     // decode: mean over steps of (Σ ranks used / Σ full ranks)
  int64_t prefill_rows;     // rows of prefill served by the CPU since the last reset
  double prefill_cpu_ms;    // CPU time on them
  int64_t cpu_preemptions;  // involuntary context switches of the worker threads since the last
                            // reset (the OS gave a spinning worker's core to another thread);
                            // -1 where the OS does not tell (ABI 3)
} hci_gpu_comp_stats;

// Fills `out` (all zero but placement for NONE and GPU placements).
HCI_API hci_status hci_gpu_get_comp_stats(hci_gpu_model* model, hci_gpu_comp_stats* out,
                                          char* err, size_t err_len);
// Zeroes the sums of hci_gpu_comp_stats and of hci_gpu_get_comp_ranks' means.
HCI_API hci_status hci_gpu_reset_comp_stats(hci_gpu_model* model, char* err, size_t err_len);

// Ranks per linear, in hcinfer.h's linear order (layer * 7 + kind), n = n_layers * 7:
// `full` the ranks held (0 where a linear has no compensation), `last` those of the last decode
// step, `mean` their mean over decode steps since the last reset (any may be NULL). CPU placements
// only (GPU placement: full = last = mean = the ranks on the device).
HCI_API hci_status hci_gpu_get_comp_ranks(hci_gpu_model* model, int32_t* full, int32_t* last,
                                          double* mean, int32_t n, char* err, size_t err_len);

// Fixes the ranks the CPU uses (each 0..full; n = n_layers * 7); turns the controller off.
// CPU placements only.
HCI_API hci_status hci_gpu_set_comp_ranks(hci_gpu_model* model, const int32_t* ranks, int32_t n,
                                          char* err, size_t err_len);

#ifdef __cplusplus
}
#endif

#endif  // HCINFER_GPU_H
