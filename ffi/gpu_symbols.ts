/**
 * The `Deno.dlopen` symbol table of `runtime/include/hcinfer_gpu.h` (GPU ABI version 5), opened
 * from the same libhcinfer as {@linkcode symbols} (a library built without CUDA exports the same
 * functions as stubs that report "built without CUDA").
 *
 * Conventions as in symbols.ts: caller-owned memory is `"buffer"`, opaque handles `"pointer"`,
 * `size_t` `"usize"`, `hci_status` `"i32"`; calls that run kernels are `nonblocking: true`.
 *
 * @module
 */

/**
 * Field types of `hci_gpu_params` (returned by value, 80 bytes): device, weights, dtype, kv_dtype,
 * max_batch, n_ctx, placement, offload, use_graphs, gemm, memory_budget (i64 at 40),
 * prefill_chunk, cpu_threads, cpu_first_core, factor_dtype, prefill_comp, rank_controller,
 * controller_slowdown_pct, sm_limit (80 bytes).
 */
export const GPU_PARAMS = {
  struct: [
    "i32",
    "i32",
    "i32",
    "i32",
    "i32",
    "i32",
    "i32",
    "i32",
    "i32",
    "i32",
    "i64",
    "i32",
    "i32",
    "i32",
    "i32",
    "i32",
    "i32",
    "i32",
    "i32",
  ],
} as const;
/** Field types of `hci_gpu_synth_params` (returned by value, 24 bytes): seed, bits, group_size,
 * rank, reserved. */
export const SYNTH_PARAMS = { struct: ["u64", "i32", "i32", "i32", "i32"] } as const;
/** Field types of `hci_gpu_bench_params` (returned by value). */
export const BENCH_PARAMS = { struct: ["i32", "i32", "i32", "i32", "i32", "i32", "u64"] } as const;

/** The GPU symbol table passed to `Deno.dlopen`. */
export const gpuSymbols = {
  // (device, out hci_gpu_device_info*, err, err_len)
  hci_gpu_get_device_info: { parameters: ["i32", "buffer", "buffer", "usize"], result: "i32" },
  // (device, int64 bytes, int32 repeats, out hci_gpu_bandwidth*, err, err_len)
  hci_gpu_measure_bandwidth: {
    parameters: ["i32", "i64", "i32", "buffer", "buffer", "usize"],
    result: "i32",
    nonblocking: true,
  },
  // (device, int32 sm_limit, int64 bytes, int32 repeats, out hci_gpu_bandwidth*, err, err_len)
  hci_gpu_measure_bandwidth_partition: {
    parameters: ["i32", "i32", "i64", "i32", "buffer", "buffer", "usize"],
    result: "i32",
    nonblocking: true,
  },
  hci_gpu_default_params: { parameters: [], result: GPU_PARAMS },
  hci_gpu_synth_default_params: { parameters: [], result: SYNTH_PARAMS },
  hci_gpu_bench_default_params: { parameters: [], result: BENCH_PARAMS },
  // (hci_model*, params, out hci_gpu_model**, err, err_len)
  hci_gpu_model_create: {
    parameters: ["pointer", "buffer", "buffer", "buffer", "usize"],
    result: "i32",
    nonblocking: true,
  },
  // (name, synth params, params, out hci_gpu_model**, err, err_len)
  hci_gpu_model_synthetic: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "buffer", "usize"],
    result: "i32",
    nonblocking: true,
  },
  hci_gpu_model_free: { parameters: ["pointer"], result: "void" },
  // (model, out hci_gpu_model_info*, err, err_len)
  hci_gpu_model_get_info: { parameters: ["pointer", "buffer", "buffer", "usize"], result: "i32" },
  // (model, seq, err, err_len)
  hci_gpu_reset: { parameters: ["pointer", "i32", "buffer", "usize"], result: "i32" },
  // (model, seq) -> n_past
  hci_gpu_n_past: { parameters: ["pointer", "i32"], result: "i32" },
  // (model, seq, const int32* tokens, n, float* logits_out, err, err_len)
  hci_gpu_prefill: {
    parameters: ["pointer", "i32", "buffer", "i32", "buffer", "buffer", "usize"],
    result: "i32",
    nonblocking: true,
  },
  // (model, const int32* tokens, n_seqs, float* logits_out, err, err_len)
  hci_gpu_decode: {
    parameters: ["pointer", "buffer", "i32", "buffer", "buffer", "usize"],
    result: "i32",
    nonblocking: true,
  },
  // (model, prompt, n_prompt, n_new, eos_id, int32* out, int32* n_out, err, err_len)
  hci_gpu_generate_greedy: {
    parameters: ["pointer", "buffer", "i32", "i32", "i32", "buffer", "buffer", "buffer", "usize"],
    result: "i32",
    nonblocking: true,
  },
  // (model, tokens, int64 n, hci_eval_params*, out hci_eval_result*, int64* progress,
  //  const int32* cancel, err, err_len)
  hci_gpu_eval_nll: {
    parameters: [
      "pointer",
      "buffer",
      "i64",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "usize",
    ],
    result: "i32",
    nonblocking: true,
  },
  // (model, hci_gpu_bench_params*, out hci_gpu_bench_result*, err, err_len)
  hci_gpu_bench_decode: {
    parameters: ["pointer", "buffer", "buffer", "buffer", "usize"],
    result: "i32",
    nonblocking: true,
  },
  // Heterogeneous compensation: cheap reads and writes of host-side state (blocking, like
  // hci_gpu_model_get_info; GpuModel refuses them while one of its calls is in flight).
  // (model, out hci_gpu_comp_stats*, err, err_len)
  hci_gpu_get_comp_stats: { parameters: ["pointer", "buffer", "buffer", "usize"], result: "i32" },
  // (model, err, err_len)
  hci_gpu_reset_comp_stats: { parameters: ["pointer", "buffer", "usize"], result: "i32" },
  // (model, int32* full, int32* last, double* mean, n, err, err_len); any array may be NULL
  hci_gpu_get_comp_ranks: {
    parameters: ["pointer", "buffer", "buffer", "buffer", "i32", "buffer", "usize"],
    result: "i32",
  },
  // (model, const int32* ranks, n, err, err_len)
  hci_gpu_set_comp_ranks: {
    parameters: ["pointer", "buffer", "i32", "buffer", "usize"],
    result: "i32",
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** The typed GPU symbols of an opened library. */
export type GpuSymbols = Deno.DynamicLibrary<typeof gpuSymbols>["symbols"];
