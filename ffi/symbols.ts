/**
 * The `Deno.dlopen` symbol table of `runtime/include/hcinfer.h` (ABI version 1).
 *
 * Every function of the header is listed. Pointers to caller-owned memory (`char* err`,
 * `const int32_t* tokens`, `*_params*`, outputs) are `"buffer"`; opaque handles are `"pointer"`;
 * `size_t` is `"usize"`; `hci_status` (a C enum, an `int` on every supported ABI) is `"i32"`.
 * The long calls (load, calibration, quantize, evaluation, scoring, decoding, generation) are
 * `nonblocking: true`: they run on a Deno worker thread and return a `Promise`, so the buffers
 * passed to them must stay referenced until that promise settles.
 *
 * @module
 */

/** Field types of `hci_model_params` (returned by value). */
const MODEL_PARAMS = { struct: ["i32", "i32"] } as const;
/** Field types of `hci_quant_params` (returned by value). */
const QUANT_PARAMS = { struct: ["i32", "i32", "i32", "u32", "i32", "i32"] } as const;
/** Field types of `hci_quant_ex_params` (returned by value). */
const QUANT_EX_PARAMS = {
  struct: ["i32", "i32", "i32", "u32", "i32", "i32", "i32", "i32", "f64", "i32", "i32", "f64"],
} as const;
/** Field types of `hci_calib_params` (returned by value). */
const CALIB_PARAMS = { struct: ["i32", "i32", "i32", "i32"] } as const;
/** Field types of `hci_eval_params` (returned by value). */
const EVAL_PARAMS = { struct: ["i32", "i32", "i32", "i32"] } as const;
/** Field types of `hci_session_params` (returned by value). */
const SESSION_PARAMS = { struct: ["i32", "i32"] } as const;

/** Field types of `hci_lowrank_bench_params` (returned by value): 12 × int32. */
const LOWRANK_BENCH_PARAMS = {
  struct: ["i32", "i32", "i32", "i32", "i32", "i32", "i32", "i32", "i32", "i32", "i32", "i32"],
} as const;

/** The symbol table passed to `Deno.dlopen` for libhcinfer. */
export const symbols = {
  // Library
  hci_abi_version: { parameters: [], result: "i32" },
  hci_version: { parameters: [], result: "pointer" },
  hci_status_name: { parameters: ["i32"], result: "pointer" },

  // Model
  hci_model_default_params: { parameters: [], result: MODEL_PARAMS },
  // (dir, params, out hci_model**, err, err_len)
  hci_model_load: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "usize"],
    result: "i32",
    nonblocking: true,
  },
  hci_model_free: { parameters: ["pointer"], result: "void" },
  // (model, out hci_model_info*, err, err_len)
  hci_model_get_info: {
    parameters: ["pointer", "buffer", "buffer", "usize"],
    result: "i32",
  },

  // Quantization and low-rank compensation
  hci_quant_default_params: { parameters: [], result: QUANT_PARAMS },
  // (model, params, int64* progress, const int32* cancel, err, err_len)
  hci_model_quantize: {
    parameters: ["pointer", "buffer", "buffer", "buffer", "buffer", "usize"],
    result: "i32",
    nonblocking: true,
  },
  hci_quant_ex_default_params: { parameters: [], result: QUANT_EX_PARAMS },
  // (model, params, int64* progress, const int32* cancel, err, err_len)
  hci_model_quantize_ex: {
    parameters: ["pointer", "buffer", "buffer", "buffer", "buffer", "usize"],
    result: "i32",
    nonblocking: true,
  },
  // (model, const int32* ranks, n, err, err_len)
  hci_model_set_ranks: {
    parameters: ["pointer", "buffer", "i32", "buffer", "usize"],
    result: "i32",
  },
  // (model, rank, err, err_len)
  hci_model_set_uniform_rank: {
    parameters: ["pointer", "i32", "buffer", "usize"],
    result: "i32",
  },
  // (model, index, out hci_linear_info*, err, err_len)
  hci_model_get_linear: {
    parameters: ["pointer", "i32", "buffer", "buffer", "usize"],
    result: "i32",
  },
  // (model, index, double* out, n, int32* n_written, err, err_len)
  hci_model_get_singular_values: {
    parameters: ["pointer", "i32", "buffer", "i32", "buffer", "buffer", "usize"],
    result: "i32",
  },

  // Calibration
  hci_calib_default_params: { parameters: [], result: CALIB_PARAMS },
  // (model, const int32* tokens, int64 n_tokens, params, int64* progress, const int32* cancel,
  //  err, err_len)
  hci_model_calibrate: {
    parameters: ["pointer", "buffer", "i64", "buffer", "buffer", "buffer", "buffer", "usize"],
    result: "i32",
    nonblocking: true,
  },
  // (model, out hci_calib_info*, err, err_len)
  hci_model_get_calibration: {
    parameters: ["pointer", "buffer", "buffer", "usize"],
    result: "i32",
  },
  // (model, err, err_len)
  hci_model_clear_calibration: { parameters: ["pointer", "buffer", "usize"], result: "i32" },
  // (model, index, double* out, n, int32* n_written, err, err_len)
  hci_model_get_act_second_moments: {
    parameters: ["pointer", "i32", "buffer", "i32", "buffer", "buffer", "usize"],
    result: "i32",
  },
  // (model, index, double* out, n, int32* n_written, err, err_len)
  hci_model_get_act_covariance: {
    parameters: ["pointer", "i32", "buffer", "i32", "buffer", "buffer", "usize"],
    result: "i32",
  },

  // Scoring
  hci_eval_default_params: { parameters: [], result: EVAL_PARAMS },
  // (model, const int32* tokens, int64 n_tokens, params, out hci_eval_result*, int64* progress,
  //  const int32* cancel, err, err_len)
  hci_eval_nll: {
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
  // (model, const int32* tokens, int32 n_tokens, float* out, err, err_len)
  hci_score_tokens: {
    parameters: ["pointer", "buffer", "i32", "buffer", "buffer", "usize"],
    result: "i32",
    nonblocking: true,
  },

  // Sessions and generation
  hci_session_default_params: { parameters: [], result: SESSION_PARAMS },
  // (model, params, out hci_session**, err, err_len)
  hci_session_create: {
    parameters: ["pointer", "buffer", "buffer", "buffer", "usize"],
    result: "i32",
  },
  hci_session_free: { parameters: ["pointer"], result: "void" },
  // (session, err, err_len)
  hci_session_reset: { parameters: ["pointer", "buffer", "usize"], result: "i32" },
  hci_session_n_past: { parameters: ["pointer"], result: "i32" },
  // (session, const int32* tokens, n_tokens, float* logits_out, err, err_len)
  hci_session_decode: {
    parameters: ["pointer", "buffer", "i32", "buffer", "buffer", "usize"],
    result: "i32",
    nonblocking: true,
  },
  // (session, const int32* prompt, n_prompt, n_new, eos_id, int32* out, int32* n_out, err,
  //  err_len)
  hci_generate_greedy: {
    parameters: ["pointer", "buffer", "i32", "i32", "i32", "buffer", "buffer", "buffer", "usize"],
    result: "i32",
    nonblocking: true,
  },

  // CPU compensation kernels
  hci_lowrank_bench_default_params: { parameters: [], result: LOWRANK_BENCH_PARAMS },
  // (params, out, err, err_len)
  hci_lowrank_bench: {
    parameters: ["buffer", "buffer", "buffer", "usize"],
    result: "i32",
    nonblocking: true,
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** The opened library's symbols, typed from {@linkcode symbols}. */
export type HciSymbols = Deno.DynamicLibrary<typeof symbols>["symbols"];
