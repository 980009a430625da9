/**
 * Encoders and decoders for the structs of `runtime/include/hcinfer.h`, with explicit byte
 * offsets (natural C alignment on x86-64 / aarch64: int32 4, int64 and double 8; little-endian).
 * The C++ side static_asserts the same sizes. TypeScript fields are the C fields in camelCase.
 *
 * Buffers made here are always backed by a fresh `ArrayBuffer` (never a small V8 on-heap typed
 * array), so they are safe to hand to nonblocking FFI calls.
 *
 * @module
 */

/** Allocates a zeroed, off-heap byte buffer of `size` bytes. */
export function allocBytes(size: number): Uint8Array<ArrayBuffer> {
  return new Uint8Array(new ArrayBuffer(size));
}

function view(bytes: Uint8Array, size: number, name: string): DataView {
  if (bytes.byteLength < size) {
    throw new RangeError(`${name}: expected ${size} bytes, got ${bytes.byteLength}`);
  }
  return new DataView(bytes.buffer, bytes.byteOffset, size);
}

function i32(value: number, field: string): number {
  if (!Number.isInteger(value) || value < -0x8000_0000 || value > 0x7fff_ffff) {
    throw new RangeError(`${field} must be an int32, got ${value}`);
  }
  return value;
}

function u32(value: number, field: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw new RangeError(`${field} must be a uint32, got ${value}`);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// hci_model_params

/** `hci_model_params`: options for `Model.load`. */
export interface ModelParams {
  /** Worker threads for this model's calls; 0 = all online cores. */
  nThreads: number;
  /** Must be 0. */
  reserved: number;
}

/** `sizeof(hci_model_params)`. */
export const MODEL_PARAMS_SIZE = 8;

/** Encodes an `hci_model_params`. */
export function encodeModelParams(p: ModelParams): Uint8Array<ArrayBuffer> {
  const bytes = allocBytes(MODEL_PARAMS_SIZE);
  const dv = view(bytes, MODEL_PARAMS_SIZE, "hci_model_params");
  dv.setInt32(0, i32(p.nThreads, "nThreads"), true);
  dv.setInt32(4, i32(p.reserved, "reserved"), true);
  return bytes;
}

/** Decodes an `hci_model_params`. */
export function decodeModelParams(bytes: Uint8Array): ModelParams {
  const dv = view(bytes, MODEL_PARAMS_SIZE, "hci_model_params");
  return { nThreads: dv.getInt32(0, true), reserved: dv.getInt32(4, true) };
}

// ---------------------------------------------------------------------------------------------
// hci_model_info

/** `hci_model_info`: static description of a loaded model. */
export interface ModelInfo {
  /** Transformer blocks. */
  nLayers: number;
  /** Hidden size. */
  dModel: number;
  /** Query heads. */
  nHeads: number;
  /** Key/value heads (grouped-query attention when < nHeads). */
  nKvHeads: number;
  /** Per-head size. */
  headDim: number;
  /** MLP intermediate size. */
  dFf: number;
  /** Rows of the embedding. */
  vocabSize: number;
  /** `max_position_embeddings`. */
  maxPositions: number;
  /** True when the output head reuses the input embedding. */
  tiedEmbeddings: boolean;
  /** Quantizable linear layers = nLayers * 7. */
  nLinears: number;
  /** Parameters, counting a tied embedding once. */
  nParams: number;
  /** RoPE base. */
  ropeTheta: number;
  /** RMSNorm epsilon. */
  rmsNormEps: number;
}

/** `sizeof(hci_model_info)`: 10 int32 (0..39), int64 at 40, doubles at 48 and 56. */
export const MODEL_INFO_SIZE = 64;

/** Encodes an `hci_model_info` (for tests; the library only writes this struct). */
export function encodeModelInfo(m: ModelInfo): Uint8Array<ArrayBuffer> {
  const bytes = allocBytes(MODEL_INFO_SIZE);
  const dv = view(bytes, MODEL_INFO_SIZE, "hci_model_info");
  dv.setInt32(0, i32(m.nLayers, "nLayers"), true);
  dv.setInt32(4, i32(m.dModel, "dModel"), true);
  dv.setInt32(8, i32(m.nHeads, "nHeads"), true);
  dv.setInt32(12, i32(m.nKvHeads, "nKvHeads"), true);
  dv.setInt32(16, i32(m.headDim, "headDim"), true);
  dv.setInt32(20, i32(m.dFf, "dFf"), true);
  dv.setInt32(24, i32(m.vocabSize, "vocabSize"), true);
  dv.setInt32(28, i32(m.maxPositions, "maxPositions"), true);
  dv.setInt32(32, m.tiedEmbeddings ? 1 : 0, true);
  dv.setInt32(36, i32(m.nLinears, "nLinears"), true);
  dv.setBigInt64(40, BigInt(m.nParams), true);
  dv.setFloat64(48, m.ropeTheta, true);
  dv.setFloat64(56, m.rmsNormEps, true);
  return bytes;
}

/** Decodes an `hci_model_info`. */
export function decodeModelInfo(bytes: Uint8Array): ModelInfo {
  const dv = view(bytes, MODEL_INFO_SIZE, "hci_model_info");
  return {
    nLayers: dv.getInt32(0, true),
    dModel: dv.getInt32(4, true),
    nHeads: dv.getInt32(8, true),
    nKvHeads: dv.getInt32(12, true),
    headDim: dv.getInt32(16, true),
    dFf: dv.getInt32(20, true),
    vocabSize: dv.getInt32(24, true),
    maxPositions: dv.getInt32(28, true),
    tiedEmbeddings: dv.getInt32(32, true) !== 0,
    nLinears: dv.getInt32(36, true),
    nParams: Number(dv.getBigInt64(40, true)),
    ropeTheta: dv.getFloat64(48, true),
    rmsNormEps: dv.getFloat64(56, true),
  };
}

// ---------------------------------------------------------------------------------------------
// hci_quant_params

/** `hci_quant_params`: what `Model.quantize` does. */
export interface QuantParams {
  /** 2, 3, 4 or 8; 0 restores full precision (drops factors too). */
  bits: number;
  /** 32, 64 or 128 input columns per group; -1 = one group per output row. */
  groupSize: number;
  /** Factors kept per layer; 0 = none. */
  maxRank: number;
  /** Which linear kinds are quantized (bit i = {@linkcode LinearKind} i); 0x7F = all. */
  kindMask: number;
  /** First block quantized (inclusive). */
  layerBegin: number;
  /** Last block quantized (exclusive); -1 = n_layers. */
  layerEnd: number;
}

/** `sizeof(hci_quant_params)`: 6 × 4 bytes. */
export const QUANT_PARAMS_SIZE = 24;

/** Encodes an `hci_quant_params`. */
export function encodeQuantParams(p: QuantParams): Uint8Array<ArrayBuffer> {
  const bytes = allocBytes(QUANT_PARAMS_SIZE);
  const dv = view(bytes, QUANT_PARAMS_SIZE, "hci_quant_params");
  dv.setInt32(0, i32(p.bits, "bits"), true);
  dv.setInt32(4, i32(p.groupSize, "groupSize"), true);
  dv.setInt32(8, i32(p.maxRank, "maxRank"), true);
  dv.setUint32(12, u32(p.kindMask, "kindMask"), true);
  dv.setInt32(16, i32(p.layerBegin, "layerBegin"), true);
  dv.setInt32(20, i32(p.layerEnd, "layerEnd"), true);
  return bytes;
}

/** Decodes an `hci_quant_params`. */
export function decodeQuantParams(bytes: Uint8Array): QuantParams {
  const dv = view(bytes, QUANT_PARAMS_SIZE, "hci_quant_params");
  return {
    bits: dv.getInt32(0, true),
    groupSize: dv.getInt32(4, true),
    maxRank: dv.getInt32(8, true),
    kindMask: dv.getUint32(12, true),
    layerBegin: dv.getInt32(16, true),
    layerEnd: dv.getInt32(20, true),
  };
}

// ---------------------------------------------------------------------------------------------
// hci_quant_ex_params

/** Quantization algorithms (`hci_quant_method`). */
export enum QuantMethod {
  /** Group-wise round-to-nearest. */
  Rtn = 0,
  /** GPTQ, sequential over blocks (needs calibration). */
  Gptq = 1,
}

/** Input scalings of the compensation factors (`hci_scaling`): SVD of E·S, unscaled after. */
export enum Scaling {
  /** S = I. */
  Plain = 0,
  /** S = diag(sqrt(E[x²])). */
  ActDiag = 1,
  /** S = E[x xᵀ]^½. */
  ActFull = 2,
}

/** `hci_quant_ex_params`: what `Model.quantize` does. */
export interface QuantExParams extends QuantParams {
  /** {@linkcode QuantMethod}. */
  method: QuantMethod;
  /** GPTQ only: quantize columns in order of descending diag(H). */
  actOrder: boolean;
  /** GPTQ dampening: H += dampPercent · mean(diag(H)) · I; 0.01 = 1%. */
  dampPercent: number;
  /** {@linkcode Scaling} of the compensation factors. */
  scaling: Scaling;
  /**
   * GPTQ with groups < 128: group scales from the weights as they stood at the start of the
   * 128-column lazy block (as the reference gptq.py computes them) instead of the current ones.
   */
  groupsFromBlockStart: boolean;
  /** act-diag / act-full: relative floor on the eigenvalues (second moments), in (0, 1). */
  eigFloor: number;
}

/** `sizeof(hci_quant_ex_params)`: 8 × 4 bytes, double at 32, 2 × int32 at 40, double at 48. */
export const QUANT_EX_PARAMS_SIZE = 56;

function bool01(value: boolean, field: string): number {
  if (typeof value !== "boolean") throw new TypeError(`${field} must be a boolean, got ${value}`);
  return value ? 1 : 0;
}

/** Encodes an `hci_quant_ex_params`. */
export function encodeQuantExParams(p: QuantExParams): Uint8Array<ArrayBuffer> {
  const bytes = allocBytes(QUANT_EX_PARAMS_SIZE);
  bytes.set(encodeQuantParams(p), 0);
  const dv = view(bytes, QUANT_EX_PARAMS_SIZE, "hci_quant_ex_params");
  dv.setInt32(24, i32(p.method, "method"), true);
  dv.setInt32(28, bool01(p.actOrder, "actOrder"), true);
  dv.setFloat64(32, p.dampPercent, true);
  dv.setInt32(40, i32(p.scaling, "scaling"), true);
  dv.setInt32(44, bool01(p.groupsFromBlockStart, "groupsFromBlockStart"), true);
  dv.setFloat64(48, p.eigFloor, true);
  return bytes;
}

/** Decodes an `hci_quant_ex_params`. */
export function decodeQuantExParams(bytes: Uint8Array): QuantExParams {
  const dv = view(bytes, QUANT_EX_PARAMS_SIZE, "hci_quant_ex_params");
  return {
    ...decodeQuantParams(bytes),
    method: dv.getInt32(24, true),
    actOrder: dv.getInt32(28, true) !== 0,
    dampPercent: dv.getFloat64(32, true),
    scaling: dv.getInt32(40, true),
    groupsFromBlockStart: dv.getInt32(44, true) !== 0,
    eigFloor: dv.getFloat64(48, true),
  };
}

// ---------------------------------------------------------------------------------------------
// hci_calib_params, hci_calib_info

/** `hci_calib_params`: how `Model.calibrate` windows its tokens. */
export interface CalibParams {
  /** Tokens per window (at most maxPositions). */
  seqLen: number;
  /** Windows: tokens[w·seqLen, (w+1)·seqLen) for w < nWindows; 0 = floor(n / seqLen). */
  nWindows: number;
  /** Keep H = E[x xᵀ] per input group (needed by act-full with RTN); else only E[x²]. */
  fullCovariance: boolean;
  /** 0 = the model's nThreads. */
  nThreads: number;
}

/** `sizeof(hci_calib_params)`: 4 × int32. */
export const CALIB_PARAMS_SIZE = 16;

/** Encodes an `hci_calib_params`. */
export function encodeCalibParams(p: CalibParams): Uint8Array<ArrayBuffer> {
  const bytes = allocBytes(CALIB_PARAMS_SIZE);
  const dv = view(bytes, CALIB_PARAMS_SIZE, "hci_calib_params");
  dv.setInt32(0, i32(p.seqLen, "seqLen"), true);
  dv.setInt32(4, i32(p.nWindows, "nWindows"), true);
  dv.setInt32(8, bool01(p.fullCovariance, "fullCovariance"), true);
  dv.setInt32(12, i32(p.nThreads, "nThreads"), true);
  return bytes;
}

/** Decodes an `hci_calib_params`. */
export function decodeCalibParams(bytes: Uint8Array): CalibParams {
  const dv = view(bytes, CALIB_PARAMS_SIZE, "hci_calib_params");
  return {
    seqLen: dv.getInt32(0, true),
    nWindows: dv.getInt32(4, true),
    fullCovariance: dv.getInt32(8, true) !== 0,
    nThreads: dv.getInt32(12, true),
  };
}

/** `hci_calib_info`: the model's calibration, if any. */
export interface CalibInfo {
  /** False before `Model.calibrate` (then every other field is 0). */
  calibrated: boolean;
  /** Tokens per window. */
  seqLen: number;
  /** Windows. */
  nWindows: number;
  /** True when H is kept. */
  fullCovariance: boolean;
  /** nWindows × seqLen. */
  nTokens: number;
  /** Wall time of the statistics pass in seconds. */
  seconds: number;
}

/** `sizeof(hci_calib_info)`: 4 × int32, int64 at 16, double at 24. */
export const CALIB_INFO_SIZE = 32;

/** Encodes an `hci_calib_info` (for tests; the library only writes this struct). */
export function encodeCalibInfo(c: CalibInfo): Uint8Array<ArrayBuffer> {
  const bytes = allocBytes(CALIB_INFO_SIZE);
  const dv = view(bytes, CALIB_INFO_SIZE, "hci_calib_info");
  dv.setInt32(0, c.calibrated ? 1 : 0, true);
  dv.setInt32(4, i32(c.seqLen, "seqLen"), true);
  dv.setInt32(8, i32(c.nWindows, "nWindows"), true);
  dv.setInt32(12, c.fullCovariance ? 1 : 0, true);
  dv.setBigInt64(16, BigInt(c.nTokens), true);
  dv.setFloat64(24, c.seconds, true);
  return bytes;
}

/** Decodes an `hci_calib_info`. */
export function decodeCalibInfo(bytes: Uint8Array): CalibInfo {
  const dv = view(bytes, CALIB_INFO_SIZE, "hci_calib_info");
  return {
    calibrated: dv.getInt32(0, true) !== 0,
    seqLen: dv.getInt32(4, true),
    nWindows: dv.getInt32(8, true),
    fullCovariance: dv.getInt32(12, true) !== 0,
    nTokens: Number(dv.getBigInt64(16, true)),
    seconds: dv.getFloat64(24, true),
  };
}

// ---------------------------------------------------------------------------------------------
// hci_linear_info

/** Linear layer kinds inside a transformer block (`hci_linear_kind`); linear i = layer*7+kind. */
export enum LinearKind {
  /** self_attn.q_proj [n_heads*head_dim, d_model] */
  Q = 0,
  /** self_attn.k_proj [n_kv_heads*head_dim, d_model] */
  K = 1,
  /** self_attn.v_proj [n_kv_heads*head_dim, d_model] */
  V = 2,
  /** self_attn.o_proj [d_model, n_heads*head_dim] */
  O = 3,
  /** mlp.gate_proj [d_ff, d_model] */
  Gate = 4,
  /** mlp.up_proj [d_ff, d_model] */
  Up = 5,
  /** mlp.down_proj [d_model, d_ff] */
  Down = 6,
}

/** `HCI_LINEAR_KINDS`: linear layers per transformer block. */
export const LINEAR_KINDS = 7;
/** `HCI_LINEAR_ALL`: a kind mask selecting every linear kind. */
export const LINEAR_ALL = 0x7f;

/** `hci_linear_info`: one linear layer's state and errors. */
export interface LinearInfo {
  /** Block index. */
  layer: number;
  /** {@linkcode LinearKind}. */
  kind: LinearKind;
  /** Rows of W. */
  dOut: number;
  /** Columns of W. */
  dIn: number;
  /** 0 when not quantized. */
  bits: number;
  /** Input columns per group as quantized (d_in when per row); 0 when not quantized. */
  groupSize: number;
  /** Factors stored. */
  maxRank: number;
  /** Factors in use. */
  rank: number;
  /** ‖W − deq(Q(W))‖_F / ‖W‖_F. */
  relErrQuant: number;
  /** ‖W − deq(Q(W)) − B[:, :rank] A[:rank]‖_F / ‖W‖_F (weight space, for every scaling). */
  relErrActive: number;
}

/** `sizeof(hci_linear_info)`: 8 int32 then 2 doubles. */
export const LINEAR_INFO_SIZE = 48;

/** Encodes an `hci_linear_info` (for tests; the library only writes this struct). */
export function encodeLinearInfo(l: LinearInfo): Uint8Array<ArrayBuffer> {
  const bytes = allocBytes(LINEAR_INFO_SIZE);
  const dv = view(bytes, LINEAR_INFO_SIZE, "hci_linear_info");
  dv.setInt32(0, i32(l.layer, "layer"), true);
  dv.setInt32(4, i32(l.kind, "kind"), true);
  dv.setInt32(8, i32(l.dOut, "dOut"), true);
  dv.setInt32(12, i32(l.dIn, "dIn"), true);
  dv.setInt32(16, i32(l.bits, "bits"), true);
  dv.setInt32(20, i32(l.groupSize, "groupSize"), true);
  dv.setInt32(24, i32(l.maxRank, "maxRank"), true);
  dv.setInt32(28, i32(l.rank, "rank"), true);
  dv.setFloat64(32, l.relErrQuant, true);
  dv.setFloat64(40, l.relErrActive, true);
  return bytes;
}

/** Decodes an `hci_linear_info`. */
export function decodeLinearInfo(bytes: Uint8Array): LinearInfo {
  const dv = view(bytes, LINEAR_INFO_SIZE, "hci_linear_info");
  return {
    layer: dv.getInt32(0, true),
    kind: dv.getInt32(4, true),
    dOut: dv.getInt32(8, true),
    dIn: dv.getInt32(12, true),
    bits: dv.getInt32(16, true),
    groupSize: dv.getInt32(20, true),
    maxRank: dv.getInt32(24, true),
    rank: dv.getInt32(28, true),
    relErrQuant: dv.getFloat64(32, true),
    relErrActive: dv.getFloat64(40, true),
  };
}

// ---------------------------------------------------------------------------------------------
// hci_eval_params, hci_eval_result

/** `hci_eval_params`: how `Model.evalNll` windows the tokens. */
export interface EvalParams {
  /** Window length in tokens (each window is scored independently). */
  seqLen: number;
  /** Score at most this many windows from the start; 0 = all floor(n / seqLen). */
  maxWindows: number;
  /** 0 = the model's nThreads. */
  nThreads: number;
  /** Must be 0. */
  reserved: number;
}

/** `sizeof(hci_eval_params)`. */
export const EVAL_PARAMS_SIZE = 16;

/** Encodes an `hci_eval_params`. */
export function encodeEvalParams(p: EvalParams): Uint8Array<ArrayBuffer> {
  const bytes = allocBytes(EVAL_PARAMS_SIZE);
  const dv = view(bytes, EVAL_PARAMS_SIZE, "hci_eval_params");
  dv.setInt32(0, i32(p.seqLen, "seqLen"), true);
  dv.setInt32(4, i32(p.maxWindows, "maxWindows"), true);
  dv.setInt32(8, i32(p.nThreads, "nThreads"), true);
  dv.setInt32(12, i32(p.reserved, "reserved"), true);
  return bytes;
}

/** Decodes an `hci_eval_params`. */
export function decodeEvalParams(bytes: Uint8Array): EvalParams {
  const dv = view(bytes, EVAL_PARAMS_SIZE, "hci_eval_params");
  return {
    seqLen: dv.getInt32(0, true),
    maxWindows: dv.getInt32(4, true),
    nThreads: dv.getInt32(8, true),
    reserved: dv.getInt32(12, true),
  };
}

/** `hci_eval_result`: the outcome of `Model.evalNll`. */
export interface EvalResult {
  /** Sum of −log p(t[i+1] | t[..i]) over predicted tokens. */
  nllSum: number;
  /** windows × (seqLen − 1). */
  nPredicted: number;
  /** Windows scored. */
  nWindows: number;
  /** Wall time of the call in seconds. */
  seconds: number;
}

/** `sizeof(hci_eval_result)`: double, int64, int64, double. */
export const EVAL_RESULT_SIZE = 32;

/** Encodes an `hci_eval_result` (for tests; the library only writes this struct). */
export function encodeEvalResult(r: EvalResult): Uint8Array<ArrayBuffer> {
  const bytes = allocBytes(EVAL_RESULT_SIZE);
  const dv = view(bytes, EVAL_RESULT_SIZE, "hci_eval_result");
  dv.setFloat64(0, r.nllSum, true);
  dv.setBigInt64(8, BigInt(r.nPredicted), true);
  dv.setBigInt64(16, BigInt(r.nWindows), true);
  dv.setFloat64(24, r.seconds, true);
  return bytes;
}

/** Decodes an `hci_eval_result`. */
export function decodeEvalResult(bytes: Uint8Array): EvalResult {
  const dv = view(bytes, EVAL_RESULT_SIZE, "hci_eval_result");
  return {
    nllSum: dv.getFloat64(0, true),
    nPredicted: Number(dv.getBigInt64(8, true)),
    nWindows: Number(dv.getBigInt64(16, true)),
    seconds: dv.getFloat64(24, true),
  };
}

// ---------------------------------------------------------------------------------------------
// hci_session_params

/** `hci_session_params`: options for `Session.create`. */
export interface SessionParams {
  /** KV cache capacity in tokens; 0 = the model's maxPositions. */
  nCtx: number;
  /** 0 = the model's nThreads. */
  nThreads: number;
}

/** `sizeof(hci_session_params)`. */
export const SESSION_PARAMS_SIZE = 8;

/** Encodes an `hci_session_params`. */
export function encodeSessionParams(p: SessionParams): Uint8Array<ArrayBuffer> {
  const bytes = allocBytes(SESSION_PARAMS_SIZE);
  const dv = view(bytes, SESSION_PARAMS_SIZE, "hci_session_params");
  dv.setInt32(0, i32(p.nCtx, "nCtx"), true);
  dv.setInt32(4, i32(p.nThreads, "nThreads"), true);
  return bytes;
}

/** Decodes an `hci_session_params`. */
export function decodeSessionParams(bytes: Uint8Array): SessionParams {
  const dv = view(bytes, SESSION_PARAMS_SIZE, "hci_session_params");
  return { nCtx: dv.getInt32(0, true), nThreads: dv.getInt32(4, true) };
}
