/**
 * `Model`: a loaded checkpoint, its quantized variant and low-rank factors, and scoring.
 *
 * ```ts
 * using model = await Model.load("models/tiny");
 * await model.quantize({ bits: 4, groupSize: 64, maxRank: 16 });
 * model.setUniformRank(8);
 * const { nllSum, nPredicted } = await model.evalNll(tokens, { seqLen: 512 });
 *
 * // GPTQ and activation-aware compensation need calibration windows first
 * const windows = sampleCalibrationWindows(c4Tokens, { seqLen: 512, nWindows: 128, seed: 0 });
 * await model.calibrate(windows, { seqLen: 512 });
 * await model.quantize({ bits: 3, groupSize: 128, maxRank: 16, method: "gptq", scaling: "act-full" });
 * ```
 *
 * @module
 */

import { check, ERR_LEN_ARG, errorBuffer, Status } from "./errors.ts";
import {
  cStringBytes,
  int32Copy,
  type LongCallOptions,
  modelFinalizer,
  NativeModel,
  retain,
  runLongCall,
} from "./handles.ts";
import { sym } from "./library.ts";
import {
  allocBytes,
  CALIB_INFO_SIZE,
  type CalibInfo,
  decodeCalibInfo,
  decodeCalibParams,
  decodeEvalParams,
  decodeEvalResult,
  decodeLinearInfo,
  decodeModelInfo,
  decodeModelParams,
  decodeQuantExParams,
  encodeCalibParams,
  encodeEvalParams,
  encodeModelParams,
  encodeQuantExParams,
  EVAL_RESULT_SIZE,
  type EvalResult,
  LINEAR_INFO_SIZE,
  type LinearInfo,
  MODEL_INFO_SIZE,
  type ModelInfo,
  QuantMethod,
  Scaling,
} from "./structs.ts";

export type { LongCallOptions } from "./handles.ts";

/** Options of {@linkcode Model.load}. */
export interface LoadOptions {
  /** Worker threads for this model's calls; 0 or absent = all online cores. */
  nThreads?: number;
}

/** Quantization algorithm of {@linkcode QuantizeOptions.method}. */
export type QuantMethodName = "rtn" | "gptq";
/** Compensation scaling of {@linkcode QuantizeOptions.scaling}. */
export type ScalingName = "plain" | "act-diag" | "act-full";

const METHODS: Record<QuantMethodName, QuantMethod> = {
  rtn: QuantMethod.Rtn,
  gptq: QuantMethod.Gptq,
};
const SCALINGS: Record<ScalingName, Scaling> = {
  plain: Scaling.Plain,
  "act-diag": Scaling.ActDiag,
  "act-full": Scaling.ActFull,
};

/** Options of {@linkcode Model.quantize} (the fields of `hci_quant_ex_params`). */
export interface QuantizeOptions {
  /** 2, 3, 4 or 8; 0 restores full precision (and drops the factors). */
  bits: number;
  /** 32, 64 or 128 input columns per group; -1 = one group per output row. */
  groupSize: number;
  /** Low-rank factors kept per layer; 0 = none. */
  maxRank: number;
  /** Linear kinds quantized (bit i = `LinearKind` i); default all (0x7F). */
  kindMask?: number;
  /** First block quantized (inclusive); default 0. */
  layerBegin?: number;
  /** Last block quantized (exclusive); default -1 = all blocks. */
  layerEnd?: number;
  /**
   * `"rtn"` (default): round-to-nearest. `"gptq"`: GPTQ, sequential over blocks on the
   * calibration windows (needs {@linkcode Model.calibrate} first).
   */
  method?: QuantMethodName;
  /** GPTQ only: quantize columns in order of descending diag(H). Default false. */
  actOrder?: boolean;
  /** GPTQ dampening as a fraction of mean diag(H); default 0.01 (1%). */
  dampPercent?: number;
  /**
   * Compensation factors from the SVD of E·S: `"plain"` (S = I, default), `"act-diag"`
   * (S = diag(sqrt(E[x²]))) or `"act-full"` (S = E[x xᵀ]^½); the act-* ones need calibration
   * when `maxRank > 0`. Singular values are then those of E·S.
   */
  scaling?: ScalingName;
  /** act-* scalings: relative floor on the eigenvalues / second moments; default 1e-6. */
  eigFloor?: number;
  /**
   * GPTQ with groups < 128: group scales from the weights at the start of each 128-column lazy
   * block, as the reference gptq.py computes them (default false: the current weights).
   */
  groupsFromBlockStart?: boolean;
}

/** Options of {@linkcode Model.calibrate} (the fields of `hci_calib_params`). */
export interface CalibrateOptions {
  /** Tokens per window. */
  seqLen: number;
  /** Windows used from the start of the tokens; 0 or absent = floor(n / seqLen). */
  nWindows?: number;
  /**
   * Keep the full covariance H = E[x xᵀ] of every linear input (default true; needed by
   * act-full with RTN, 8·d_in² bytes per input group); false keeps only E[x²].
   */
  fullCovariance?: boolean;
  /** Threads for this call; 0 or absent = the model's. */
  nThreads?: number;
}

/** Options of {@linkcode Model.evalNll} (the fields of `hci_eval_params`). */
export interface EvalOptions {
  /** Window length in tokens; each window is scored independently. */
  seqLen: number;
  /** Score at most this many windows from the start; 0 or absent = all floor(n / seqLen). */
  maxWindows?: number;
  /** Threads for this call; 0 or absent = the model's. */
  nThreads?: number;
}

const natives = new WeakMap<Model, NativeModel>();

/**
 * The native state behind a model, for `Session` (internal; not re-exported by mod.ts).
 *
 * @throws Error when the model is closed
 */
export function nativeOf(model: Model): NativeModel {
  const native = natives.get(model);
  if (!native || native.closing || native.ptr === null) {
    throw new Error(`hcinfer: model ${model.dir} is closed`);
  }
  return native;
}

/**
 * A model loaded by libhcinfer (`hci_model*`).
 *
 * Close it with {@linkcode Model.close} or a `using` declaration. Closing a model also closes
 * every `Session` created on it (later use of those throws); native memory is released once
 * calls still running on worker threads have finished. A model that is never closed is freed
 * when it is garbage-collected (a backstop, not a schedule).
 *
 * Long calls (load, calibrate, quantize, evalNll, scoreTokens) run on worker threads and may
 * overlap; the library serializes them per model (calibrate, quantize and the rank setters
 * exclusively), so a
 * synchronous call such as {@linkcode Model.linear} made while a quantization runs waits for it.
 */
export class Model implements Disposable {
  /** The checkpoint directory, as passed to {@linkcode Model.load}. */
  readonly dir: string;
  /** Static description of the model (`hci_model_info`), read once at load. */
  readonly info: Readonly<ModelInfo>;

  private constructor(dir: string, native: NativeModel, info: Readonly<ModelInfo>) {
    this.dir = dir;
    this.info = info;
    natives.set(this, native);
    modelFinalizer.register(this, native, this);
  }

  /**
   * Loads a Hugging Face checkpoint directory (config.json plus safetensors) on a worker thread.
   *
   * @throws HciError when the directory, its config or weights are missing or unsupported
   */
  static async load(dir: string, options: LoadOptions = {}): Promise<Model> {
    const s = sym();
    const defaults = decodeModelParams(s.hci_model_default_params());
    const params = encodeModelParams({
      ...defaults,
      nThreads: options.nThreads ?? defaults.nThreads,
    });
    const path = cStringBytes(dir);
    const out = allocBytes(8);
    const err = errorBuffer();
    const status = await s.hci_model_load(path, params, out, err, ERR_LEN_ARG);
    retain(path, params, out, err);
    check(status, err);
    const ptr = Deno.UnsafePointer.create(new BigUint64Array(out.buffer)[0]);
    if (ptr === null) throw new Error(`hcinfer: hci_model_load returned no model for ${dir}`);
    const native = new NativeModel(ptr);
    try {
      const infoBytes = allocBytes(MODEL_INFO_SIZE);
      const infoErr = errorBuffer();
      check(s.hci_model_get_info(ptr, infoBytes, infoErr, ERR_LEN_ARG), infoErr);
      return new Model(dir, native, Object.freeze(decodeModelInfo(infoBytes)));
    } catch (e) {
      native.close();
      throw e;
    }
  }

  /** True once {@linkcode Model.close} was called. */
  get closed(): boolean {
    const native = natives.get(this);
    return !native || native.closing;
  }

  #ptr(): Deno.PointerObject {
    return nativeOf(this).ptr!;
  }

  /** Runs a nonblocking call while counting it as in flight (the model is not freed under it). */
  async #inflight<T>(call: (ptr: Deno.PointerObject) => Promise<T>): Promise<T> {
    const native = nativeOf(this);
    native.inflight++;
    try {
      return await call(native.ptr!);
    } finally {
      native.inflight--;
      native.settle();
    }
  }

  /**
   * Quantizes the selected linear layers (group-wise asymmetric RTN, or GPTQ) and factors each
   * residual by a truncated SVD (of E·S for the act-* scalings), on a worker thread
   * (`hci_model_quantize_ex`). Replaces any earlier quantization and sets every layer's active
   * rank to min(maxRank, dOut, dIn).
   *
   * @param options.onProgress called with the number of layers finished
   * @param options.signal aborting it cancels the call, which rejects with `signal.reason`
   * @throws HciError on invalid parameters (GPTQ or act-* without calibration: "call
   *   hci_model_calibrate first") or a numerical failure
   */
  quantize(params: QuantizeOptions, options: LongCallOptions = {}): Promise<void> {
    const method = params.method ?? "rtn";
    const scaling = params.scaling ?? "plain";
    if (!(method in METHODS)) throw new RangeError(`quantize: unknown method "${method}"`);
    if (!(scaling in SCALINGS)) throw new RangeError(`quantize: unknown scaling "${scaling}"`);
    return this.#inflight(async (ptr) => {
      const s = sym();
      const defaults = decodeQuantExParams(s.hci_quant_ex_default_params());
      const bytes = encodeQuantExParams({
        bits: params.bits,
        groupSize: params.groupSize,
        maxRank: params.maxRank,
        kindMask: params.kindMask ?? defaults.kindMask,
        layerBegin: params.layerBegin ?? defaults.layerBegin,
        layerEnd: params.layerEnd ?? defaults.layerEnd,
        method: METHODS[method],
        actOrder: params.actOrder ?? defaults.actOrder,
        dampPercent: params.dampPercent ?? defaults.dampPercent,
        scaling: SCALINGS[scaling],
        groupsFromBlockStart: params.groupsFromBlockStart ?? defaults.groupsFromBlockStart,
        eigFloor: params.eigFloor ?? defaults.eigFloor,
      });
      const err = errorBuffer();
      const status = await runLongCall(
        (progress, cancel) =>
          s.hci_model_quantize_ex(ptr, bytes, progress, cancel, err, ERR_LEN_ARG),
        options,
        Status.Cancelled,
      );
      retain(bytes, err);
      check(status, err);
    });
  }

  /**
   * Collects activation statistics on calibration windows, on a worker thread
   * (`hci_model_calibrate`): runs the full-precision model on `tokens` cut into windows of
   * `seqLen` and keeps, in the model, those tokens (sequential GPTQ runs them again) and E[x²]
   * and H = E[x xᵀ] of every linear input, in float64. Replaces an earlier calibration (on
   * error the model has none). The windows are the caller's: `sampleCalibrationWindows`
   * draws them reproducibly from a tokenized corpus.
   *
   * @param options.onProgress called with the number of windows finished
   * @param options.signal aborting it cancels the call, which rejects with `signal.reason`
   * @throws HciError when the tokens do not fill the windows or hold an id outside the vocabulary
   */
  calibrate(
    tokens: Int32Array | readonly number[],
    params: CalibrateOptions,
    options: LongCallOptions = {},
  ): Promise<void> {
    return this.#inflight(async (ptr) => {
      const s = sym();
      const defaults = decodeCalibParams(s.hci_calib_default_params());
      const bytes = encodeCalibParams({
        seqLen: params.seqLen,
        nWindows: params.nWindows ?? defaults.nWindows,
        fullCovariance: params.fullCovariance ?? defaults.fullCovariance,
        nThreads: params.nThreads ?? defaults.nThreads,
      });
      // At least one element: an empty buffer would reach C as NULL.
      const data = int32Copy(tokens.length > 0 ? tokens : [0]);
      const n = BigInt(tokens.length);
      const err = errorBuffer();
      const status = await runLongCall(
        (progress, cancel) =>
          s.hci_model_calibrate(ptr, data, n, bytes, progress, cancel, err, ERR_LEN_ARG),
        options,
        Status.Cancelled,
      );
      retain(bytes, data, err);
      check(status, err);
    });
  }

  /** The model's calibration (`hci_calib_info`), or null before {@linkcode Model.calibrate}. */
  calibration(): CalibInfo | null {
    const ptr = this.#ptr();
    const out = allocBytes(CALIB_INFO_SIZE);
    const err = errorBuffer();
    check(sym().hci_model_get_calibration(ptr, out, err, ERR_LEN_ARG), err);
    const info = decodeCalibInfo(out);
    return info.calibrated ? info : null;
  }

  /** Drops the calibration tokens and statistics (a no-op when there are none). */
  clearCalibration(): void {
    const ptr = this.#ptr();
    const err = errorBuffer();
    check(sym().hci_model_clear_calibration(ptr, err, ERR_LEN_ARG), err);
  }

  /**
   * E[x²] of linear `index`'s input in the full-precision model (`dIn` values; q/k/v share one
   * input, gate/up share one).
   *
   * @throws HciError before {@linkcode Model.calibrate} or when the index is out of range
   */
  actSecondMoments(index: number): Float64Array<ArrayBuffer> {
    const dIn = this.linear(index).dIn;
    return this.#statsArray("hci_model_get_act_second_moments", index, dIn);
  }

  /**
   * H = E[x xᵀ] of linear `index`'s input, row-major `dIn × dIn`.
   *
   * @throws HciError before {@linkcode Model.calibrate}, or when it ran without fullCovariance
   */
  actCovariance(index: number): Float64Array<ArrayBuffer> {
    const dIn = this.linear(index).dIn;
    return this.#statsArray("hci_model_get_act_covariance", index, dIn * dIn);
  }

  #statsArray(
    fn: "hci_model_get_act_second_moments" | "hci_model_get_act_covariance",
    index: number,
    n: number,
  ): Float64Array<ArrayBuffer> {
    const ptr = this.#ptr();
    const out = new Float64Array(new ArrayBuffer(Math.max(n, 1) * 8));
    const written = new Int32Array(new ArrayBuffer(4));
    const err = errorBuffer();
    check(sym()[fn](ptr, index, out, n, written, err, ERR_LEN_ARG), err);
    return out.slice(0, written[0]);
  }

  /**
   * Sets the active rank of every linear layer: `ranks[layer * 7 + kind]`, one per linear
   * (`info.nLinears`), each in [0, that layer's maxRank]; unquantized layers need 0.
   *
   * @throws HciError when the length or a rank is out of range
   */
  setRanks(ranks: Int32Array | readonly number[]): void {
    const ptr = this.#ptr();
    const data = int32Copy(ranks);
    const err = errorBuffer();
    check(sym().hci_model_set_ranks(ptr, data, data.length, err, ERR_LEN_ARG), err);
  }

  /** Sets the same active rank on every quantized layer, clamped to each layer's maxRank. */
  setUniformRank(rank: number): void {
    const ptr = this.#ptr();
    const err = errorBuffer();
    check(sym().hci_model_set_uniform_rank(ptr, rank, err, ERR_LEN_ARG), err);
  }

  /**
   * One linear layer's state and errors; `index = layer * 7 + kind`.
   *
   * @throws HciError when the index is out of range
   */
  linear(index: number): LinearInfo {
    const ptr = this.#ptr();
    const out = allocBytes(LINEAR_INFO_SIZE);
    const err = errorBuffer();
    check(sym().hci_model_get_linear(ptr, index, out, err, ERR_LEN_ARG), err);
    return decodeLinearInfo(out);
  }

  /** Every linear layer's state, in index order (`info.nLinears` entries). */
  linears(): LinearInfo[] {
    const out: LinearInfo[] = [];
    for (let i = 0; i < this.info.nLinears; i++) out.push(this.linear(i));
    return out;
  }

  /**
   * Singular values of linear `index`'s scaled quantization residual E·S (S = I for plain
   * factors), largest first (maxRank of them; empty when the layer is not quantized or has no
   * factors). They order the factors; for act-* scalings their squares' tail is the
   * output-space error, not the weight-space one of {@linkcode LinearInfo.relErrActive}.
   */
  singularValues(index: number): Float64Array<ArrayBuffer> {
    const maxRank = this.linear(index).maxRank;
    const ptr = this.#ptr();
    // At least one element: an empty buffer would reach C as NULL.
    const out = new Float64Array(new ArrayBuffer(Math.max(maxRank, 1) * 8));
    const written = new Int32Array(new ArrayBuffer(4));
    const err = errorBuffer();
    check(
      sym().hci_model_get_singular_values(ptr, index, out, maxRank, written, err, ERR_LEN_ARG),
      err,
    );
    return out.slice(0, written[0]);
  }

  /**
   * Perplexity by the GPTQ protocol, on a worker thread: `tokens` cut into non-overlapping
   * windows of `seqLen`; within each window every token after the first is predicted.
   * `ppl = exp(nllSum / nPredicted)`.
   *
   * @param options.onProgress called with the number of windows finished
   * @param options.signal aborting it cancels the call, which rejects with `signal.reason`
   */
  evalNll(
    tokens: Int32Array | readonly number[],
    params: EvalOptions,
    options: LongCallOptions = {},
  ): Promise<EvalResult> {
    return this.#inflight(async (ptr) => {
      const s = sym();
      const defaults = decodeEvalParams(s.hci_eval_default_params());
      const bytes = encodeEvalParams({
        ...defaults,
        seqLen: params.seqLen,
        maxWindows: params.maxWindows ?? defaults.maxWindows,
        nThreads: params.nThreads ?? defaults.nThreads,
      });
      const data = int32Copy(tokens);
      const out = allocBytes(EVAL_RESULT_SIZE);
      const err = errorBuffer();
      const status = await runLongCall(
        (progress, cancel) =>
          s.hci_eval_nll(
            ptr,
            data,
            BigInt(data.length),
            bytes,
            out,
            progress,
            cancel,
            err,
            ERR_LEN_ARG,
          ),
        options,
        Status.Cancelled,
      );
      retain(bytes, data, out, err);
      check(status, err);
      return decodeEvalResult(out);
    });
  }

  /**
   * Log-probabilities of one sequence, on a worker thread:
   * `out[i] = log p(tokens[i + 1] | tokens[0..i])`, `n - 1` of them.
   */
  scoreTokens(tokens: Int32Array | readonly number[]): Promise<Float32Array<ArrayBuffer>> {
    return this.#inflight(async (ptr) => {
      const data = int32Copy(tokens);
      // At least one element: an empty buffer would reach C as NULL.
      const out = new Float32Array(new ArrayBuffer(Math.max(data.length - 1, 1) * 4));
      const err = errorBuffer();
      const status = await sym().hci_score_tokens(ptr, data, data.length, out, err, ERR_LEN_ARG);
      retain(data, out, err);
      check(status, err);
      return data.length > 1 ? out : out.slice(0, 0);
    });
  }

  /**
   * Closes the model and every session created on it; idempotent. Native memory is released
   * now, or when the calls still running on it finish.
   */
  close(): void {
    const native = natives.get(this);
    if (!native || native.closing) return;
    modelFinalizer.unregister(this);
    native.close();
  }

  /** Same as {@linkcode Model.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
