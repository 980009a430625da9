/**
 * The GPU backend (`runtime/include/hcinfer_gpu.h`): device discovery, bandwidth measurement,
 * and {@linkcode GpuModel}, a model's weights, KV cache and CUDA-graph decode on one GPU.
 *
 * ```ts
 * const dev = deviceInfo();
 * if (!dev.available) console.log(`CPU only: ${dev.reason}`);
 * using model = await Model.load("models/small");
 * using gpu = await GpuModel.fromModel(model, { dtype: "fp16" });
 * const { nllSum, nPredicted } = await gpu.evalNll(tokens, { seqLen: 512 });
 *
 * using big = await GpuModel.synthetic("synthetic:llama-2-7b", { bits: 4, groupSize: 128 });
 * const r = await big.benchDecode({ batch: 1, promptLen: 128, newTokens: 128 });
 *
 * // rank-64 compensation on the CPU, overlapped with the GPU's backbone products
 * using het = await GpuModel.synthetic("synthetic:llama-2-7b", {
 *   bits: 4, groupSize: 128, rank: 64, placement: "cpu-async", cpuThreads: 8,
 * });
 * await het.benchDecode({ newTokens: 64 });
 * const { steps, gpuWaitMs, factorBytesRead } = het.compStats(); // the timed repeats
 * ```
 *
 * The GPU symbols are opened from the same library file as the CPU ones. A library built without
 * CUDA (or one too old to have the GPU entry points) makes {@linkcode deviceInfo} report
 * `available: false` with the reason, and every other GPU call throw it.
 *
 * @module
 */

import { check, ERR_LEN_ARG, errorBuffer, Status } from "./errors.ts";
import { cStringBytes, int32Copy, type LongCallOptions, retain, runLongCall } from "./handles.ts";
import { library, libraryPath } from "./library.ts";
import { type Model, nativeOf } from "./model.ts";
import { type GpuSymbols, gpuSymbols } from "./gpu_symbols.ts";
import {
  allocBytes,
  decodeEvalParams,
  decodeEvalResult,
  encodeEvalParams,
  EVAL_RESULT_SIZE,
  type EvalResult,
} from "./structs.ts";
import { sym } from "./library.ts";

// ---------------------------------------------------------------------------------------------
// Opening the GPU symbols

let gpuOpened: { symbols: GpuSymbols } | { error: string } | undefined;

function gpuSym(): GpuSymbols {
  if (!gpuOpened) {
    try {
      library(); // locates the file and checks the ABI version
      const lib = Deno.dlopen(libraryPath(), gpuSymbols);
      gpuOpened = { symbols: lib.symbols };
    } catch (e) {
      gpuOpened = {
        error: `the library has no usable GPU entry points (${
          e instanceof Error ? e.message : String(e)
        })`,
      };
    }
  }
  if ("error" in gpuOpened) throw new Error(`hcinfer: ${gpuOpened.error}`);
  return gpuOpened.symbols;
}

function dv(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function cStringAt(bytes: Uint8Array, offset: number, size: number): string {
  const s = bytes.subarray(offset, offset + size);
  const end = s.indexOf(0);
  return new TextDecoder().decode(end < 0 ? s : s.subarray(0, end));
}

// ---------------------------------------------------------------------------------------------
// Device

/** `hci_gpu_device_info`: what the library and the machine offer. */
export interface GpuDeviceInfo {
  /** The library was compiled with nvcc. */
  builtWithCuda: boolean;
  /** It links cuBLAS (else its own GEMM does prefill). */
  builtWithCublas: boolean;
  /** The device can be used. */
  available: boolean;
  /** The CUDA ordinal asked for. */
  device: number;
  /** CUDA devices visible. */
  deviceCount: number;
  /** Compute capability, e.g. 9.0 as major 9, minor 0. */
  ccMajor: number;
  ccMinor: number;
  /** Multiprocessors. */
  smCount: number;
  /** `cudaDriverGetVersion`, e.g. 13000; 0 without a driver. */
  driverVersion: number;
  /** `cudaRuntimeGetVersion` of the linked runtime. */
  runtimeVersion: number;
  /** Bytes of device memory. */
  totalMemory: number;
  /** Bytes free when asked. */
  freeMemory: number;
  /** L2 cache bytes. */
  l2Bytes: number;
  /** Peak memory clock (kHz), 0 when not reported. */
  memoryClockKhz: number;
  /** Memory bus width (bits), 0 when not reported. */
  memoryBusBits: number;
  /** Device name, e.g. "NVIDIA H100 80GB HBM3". */
  name: string;
  /** Why the device is not available ("" when it is). */
  reason: string;
  /** What the library was built with, e.g. "CUDA 13.0, archs sm 80 90, cuBLAS". */
  build: string;
}

/** `sizeof(hci_gpu_device_info)`. */
export const GPU_DEVICE_INFO_SIZE = 584;

/** Decodes an `hci_gpu_device_info`. */
export function decodeGpuDeviceInfo(bytes: Uint8Array): GpuDeviceInfo {
  const v = dv(bytes);
  const i = (o: number) => v.getInt32(o, true);
  const l = (o: number) => Number(v.getBigInt64(o, true));
  return {
    builtWithCuda: i(0) !== 0,
    builtWithCublas: i(4) !== 0,
    available: i(8) !== 0,
    device: i(12),
    deviceCount: i(16),
    ccMajor: i(20),
    ccMinor: i(24),
    smCount: i(28),
    driverVersion: i(32),
    runtimeVersion: i(36),
    totalMemory: l(40),
    freeMemory: l(48),
    l2Bytes: l(56),
    memoryClockKhz: i(64),
    memoryBusBits: i(68),
    name: cStringAt(bytes, 72, 128),
    reason: cStringAt(bytes, 200, 256),
    build: cStringAt(bytes, 456, 128),
  };
}

/**
 * What the GPU backend can do here. Never throws: a library without GPU entry points, a build
 * without CUDA or a machine without a usable GPU all give `available: false` and the reason.
 *
 * @param device CUDA ordinal (default 0)
 */
export function deviceInfo(device = 0): GpuDeviceInfo {
  const unavailable = (reason: string): GpuDeviceInfo => ({
    builtWithCuda: false,
    builtWithCublas: false,
    available: false,
    device,
    deviceCount: 0,
    ccMajor: 0,
    ccMinor: 0,
    smCount: 0,
    driverVersion: 0,
    runtimeVersion: 0,
    totalMemory: 0,
    freeMemory: 0,
    l2Bytes: 0,
    memoryClockKhz: 0,
    memoryBusBits: 0,
    name: "",
    reason,
    build: "",
  });
  let s: GpuSymbols;
  try {
    s = gpuSym();
  } catch (e) {
    return unavailable(e instanceof Error ? e.message : String(e));
  }
  const out = allocBytes(GPU_DEVICE_INFO_SIZE);
  const err = errorBuffer();
  const status = s.hci_gpu_get_device_info(device, out, err, ERR_LEN_ARG);
  const info = decodeGpuDeviceInfo(out);
  if (status !== Status.Ok && !info.reason) {
    return unavailable(new TextDecoder().decode(err.subarray(0, err.indexOf(0))));
  }
  return info;
}

/**
 * Why GPU work cannot run here, or null when it can: for tests (`Deno.test({ ignore })`) and
 * entry points that fall back to the CPU with a clear message.
 */
export function gpuUnavailableReason(device = 0): string | null {
  const info = deviceInfo(device);
  return info.available ? null : info.reason || "no usable GPU";
}

/** `hci_gpu_bandwidth`: measured memory bandwidths, GB/s (1e9 bytes per second). */
export interface GpuBandwidth {
  /** Device-to-device copy, (bytes read + bytes written) / time. */
  hbmGbps: number;
  /** A read-only streaming kernel, bytes read / time. */
  hbmReadGbps: number;
  /** Pinned host -> device copy. */
  h2dPinnedGbps: number;
  /** Device -> pinned host copy. */
  d2hPinnedGbps: number;
  /** Buffer size used. */
  bytes: number;
  /** Timed repeats (median). */
  repeats: number;
  /** SMs the copies and the kernel ran on (a partition's, or every SM). */
  smCount: number;
}

/** `sizeof(hci_gpu_bandwidth)`. */
export const GPU_BANDWIDTH_SIZE = 48;

/** Decodes an `hci_gpu_bandwidth`. */
export function decodeGpuBandwidth(bytes: Uint8Array): GpuBandwidth {
  const v = dv(bytes);
  return {
    hbmGbps: v.getFloat64(0, true),
    hbmReadGbps: v.getFloat64(8, true),
    h2dPinnedGbps: v.getFloat64(16, true),
    d2hPinnedGbps: v.getFloat64(24, true),
    bytes: Number(v.getBigInt64(32, true)),
    repeats: v.getInt32(40, true),
    smCount: v.getInt32(44, true),
  };
}

/**
 * Measures HBM bandwidth (large device-to-device copy and a read-only kernel) and pinned host
 * transfer bandwidth, on a worker thread.
 *
 * @param options.bytes buffer size (default 1 GiB); options.repeats timed repeats (default 10);
 * options.smLimit: on a partition of at least that many SMs, as {@linkcode GpuOptions.smLimit}
 * (default 0: every SM)
 * @throws HciError when no GPU is usable or the partition cannot be made
 */
export async function measureBandwidth(
  options: { device?: number; bytes?: number; repeats?: number; smLimit?: number } = {},
): Promise<GpuBandwidth> {
  const s = gpuSym();
  const out = allocBytes(GPU_BANDWIDTH_SIZE);
  const err = errorBuffer();
  const status = await s.hci_gpu_measure_bandwidth_partition(
    options.device ?? 0,
    options.smLimit ?? 0,
    BigInt(options.bytes ?? 0),
    options.repeats ?? 0,
    out,
    err,
    ERR_LEN_ARG,
  );
  retain(out, err);
  check(status, err);
  return decodeGpuBandwidth(out);
}

// ---------------------------------------------------------------------------------------------
// GPU model options and results

/** Options of {@linkcode GpuModel.fromModel} and {@linkcode GpuModel.synthetic}. */
export interface GpuOptions {
  /** CUDA ordinal (default 0). */
  device?: number;
  /**
   * Which weights of a loaded model go to the GPU: `"current"` (default: deq(Q(W)) where
   * quantized, else W, in `dtype`), `"packed"` (quantized layers as packed codes with fp16
   * scale/zero), `"original"` (W everywhere).
   */
  weights?: "current" | "packed" | "original";
  /** Float weights and matrix inputs: `"fp16"` (default) or `"bf16"`. */
  dtype?: "fp16" | "bf16";
  /** KV cache: `"fp16"` (default) or `"fp32"`. */
  kvDtype?: "fp16" | "fp32";
  /** Sequences held and decoded together, 1..16 (default 1). */
  maxBatch?: number;
  /** KV capacity per sequence; default min(max positions, 4096). */
  nCtx?: number;
  /**
   * Where the quantized linears' low-rank compensation runs (`hci_gpu_placement`): `"none"`
   * (default: backbone only), `"gpu"` (factors in device memory, in `dtype`), `"cpu-sync"` (factors
   * in host memory; the GPU hands each compensation point's input to the CPU and waits for the
   * correction before its own product: the no-overlap baseline) or `"cpu-async"` (the GPU runs the
   * point's backbone product while the CPU computes the correction). The ranks are the loaded
   * model's active ranks, or {@linkcode SyntheticOptions.rank}.
   */
  placement?: GpuPlacement;
  /** Stream blocks that do not fit `memoryBudget` from pinned host memory (default true). */
  offload?: boolean;
  /** Capture each decode step as a CUDA graph (default true). */
  useGraphs?: boolean;
  /** Prefill GEMM: `"auto"` (default), `"cublas"` or `"own"`. */
  gemm?: "auto" | "cublas" | "own";
  /** Cap on device bytes the model may allocate (0 or absent = none). */
  memoryBudget?: number;
  /** Rows per forward step (default 512). */
  prefillChunk?: number;
  /**
   * CPU placements: compensation worker threads, the serving thread included (0 or absent = the
   * library's default: the cores from `cpuFirstCore` on but the last two, which stay free for the
   * rest of the process and the OS; at most 32).
   */
  cpuThreads?: number;
  /**
   * CPU placements: pin the workers to cores cpuFirstCore .. cpuFirstCore + cpuThreads - 1
   * (library default 2: cores 0 and 1 are left to the thread feeding the GPU and the driver);
   * -1 = no pinning.
   */
  cpuFirstCore?: number;
  /** CPU placements: storage of the host factors, `"fp32"`, `"bf16"` (default) or `"fp16"`. */
  factorDtype?: "fp32" | "bf16" | "fp16";
  /**
   * CPU placements: compensation during prefill (more than 16 rows): `"cpu"` (default: a CPU
   * GEMM over the chunk's rows, same hand-off as decode) or `"gpu"` (a device copy of the factors,
   * charged to the memory budget; decode still uses the CPU).
   */
  prefillComp?: "cpu" | "gpu";
  /**
   * `"cpu-async"` only: the run-time rank controller picks each point's rank prefix every decode
   * step so the CPU stays off the critical path (default false: the full ranks every step).
   */
  rankController?: boolean;
  /**
   * The rank controller's budget: decode steps may be this many percent slower than the
   * backbone's own step (which it measures with every point off), and it turns points off (their
   * hand-off costs the GPU even at rank 0) or back on to stay there. 0 or absent = the library's
   * default (8); -1 = every point stays on, only ranks change.
   */
  controllerSlowdownPct?: number;
  /**
   * Run every kernel on a partition of at least this many SMs (a CUDA green context; the driver
   * rounds up, to multiples of 8 on Hopper), emulating a smaller GPU as `memoryBudget` emulates a
   * smaller memory; 0 or absent = every SM. The SMs used are in {@linkcode GpuModelInfo.smCount}.
   */
  smLimit?: number;
}

/** Where the low-rank compensation runs (`hci_gpu_placement`, in its order). */
export type GpuPlacement = "none" | "gpu" | "cpu-sync" | "cpu-async";

/** The placements, indexed by their `hci_gpu_placement` value. */
export const GPU_PLACEMENTS: readonly GpuPlacement[] = ["none", "gpu", "cpu-sync", "cpu-async"];

/** Options of {@linkcode GpuModel.synthetic}. */
export interface SyntheticOptions extends GpuOptions {
  /** Weights are a function of the seed (default 0). */
  seed?: number;
  /** 0 (default) = float weights; 2, 3, 4 or 8 = packed codes. */
  bits?: number;
  /** Packed group size: 32, 64, 128 (default) or -1 per row. */
  groupSize?: number;
  /**
   * Rank of every linear's seeded random compensation factors, used when `placement` is not
   * `"none"` (default 0: none).
   */
  rank?: number;
}

const WEIGHTS = { current: 0, packed: 1, original: 2 } as const;
const DTYPES = { fp16: 0, bf16: 1, fp32: 2 } as const;
const GEMMS = { auto: 0, cublas: 1, own: 2 } as const;
const PLACEMENTS = { none: 0, gpu: 1, "cpu-sync": 2, "cpu-async": 3 } as const;
const FACTOR_DTYPES = { fp32: 0, bf16: 1, fp16: 2 } as const;
const PREFILL_COMPS = { cpu: 0, gpu: 1 } as const;
const DTYPE_NAMES = ["fp16", "bf16", "fp32"] as const;
const WEIGHTS_NAMES = ["current", "packed", "original"] as const;
const GEMM_NAMES = ["auto", "cublas", "own"] as const;
const FACTOR_DTYPE_NAMES = ["fp32", "bf16", "fp16"] as const;
const PREFILL_COMP_NAMES = ["cpu", "gpu"] as const;

/** `sizeof(hci_gpu_params)` (GPU ABI version 5). */
export const GPU_PARAMS_SIZE = 80;
/** `sizeof(hci_gpu_synth_params)` (GPU ABI version 5). */
export const GPU_SYNTH_PARAMS_SIZE = 24;

/** Encodes an `hci_gpu_params` from the library's defaults and `o`. */
export function encodeGpuParams(defaults: Uint8Array, o: GpuOptions): Uint8Array<ArrayBuffer> {
  const bytes = allocBytes(GPU_PARAMS_SIZE);
  bytes.set(defaults.subarray(0, GPU_PARAMS_SIZE));
  const v = dv(bytes);
  const setI = (off: number, value: number | undefined, name: string) => {
    if (value === undefined) return;
    if (!Number.isInteger(value)) throw new RangeError(`${name} must be an integer, got ${value}`);
    v.setInt32(off, value, true);
  };
  const pick = <T extends Record<string, number>>(
    table: T,
    value: string | undefined,
    name: string,
  ): number | undefined => {
    if (value === undefined) return undefined;
    if (!Object.hasOwn(table, value)) {
      throw new RangeError(
        `${name}: expected one of ${Object.keys(table).join(", ")}, got ${value}`,
      );
    }
    return table[value];
  };
  setI(0, o.device, "device");
  setI(4, pick(WEIGHTS, o.weights, "weights"), "weights");
  setI(8, pick(DTYPES, o.dtype, "dtype"), "dtype");
  setI(12, pick(DTYPES, o.kvDtype, "kvDtype"), "kvDtype");
  setI(16, o.maxBatch, "maxBatch");
  setI(20, o.nCtx, "nCtx");
  setI(24, pick(PLACEMENTS, o.placement, "placement"), "placement");
  setI(28, o.offload === undefined ? undefined : o.offload ? 1 : 0, "offload");
  setI(32, o.useGraphs === undefined ? undefined : o.useGraphs ? 1 : 0, "useGraphs");
  setI(36, pick(GEMMS, o.gemm, "gemm"), "gemm");
  if (o.memoryBudget !== undefined) {
    if (!Number.isSafeInteger(o.memoryBudget) || o.memoryBudget < 0) {
      throw new RangeError(`memoryBudget must be a non-negative integer, got ${o.memoryBudget}`);
    }
    v.setBigInt64(40, BigInt(o.memoryBudget), true);
  }
  setI(48, o.prefillChunk, "prefillChunk");
  setI(52, o.cpuThreads, "cpuThreads");
  setI(56, o.cpuFirstCore, "cpuFirstCore");
  setI(60, pick(FACTOR_DTYPES, o.factorDtype, "factorDtype"), "factorDtype");
  setI(64, pick(PREFILL_COMPS, o.prefillComp, "prefillComp"), "prefillComp");
  setI(68, o.rankController === undefined ? undefined : o.rankController ? 1 : 0, "rankController");
  setI(72, o.controllerSlowdownPct, "controllerSlowdownPct");
  if (o.smLimit !== undefined && (!Number.isInteger(o.smLimit) || o.smLimit < 0)) {
    throw new RangeError(`smLimit must be a non-negative integer, got ${o.smLimit}`);
  }
  setI(76, o.smLimit, "smLimit");
  return bytes;
}

/** Every field of an `hci_gpu_params`, as {@linkcode GpuOptions} names them. */
export type GpuParams = Required<GpuOptions>;

function nameOf<T extends string>(names: readonly T[], value: number, what: string): T {
  const name = names[value];
  if (name === undefined) throw new RangeError(`hci_gpu_params: ${what} ${value} is unknown`);
  return name;
}

/**
 * Decodes an `hci_gpu_params` (the inverse of {@linkcode encodeGpuParams}), e.g. the library's
 * defaults from {@linkcode defaultGpuParams}.
 *
 * @throws RangeError for an enum value these bindings do not know
 */
export function decodeGpuParams(bytes: Uint8Array): GpuParams {
  if (bytes.byteLength < GPU_PARAMS_SIZE) {
    throw new RangeError(`hci_gpu_params: ${bytes.byteLength} bytes, need ${GPU_PARAMS_SIZE}`);
  }
  const v = dv(bytes);
  const i = (o: number) => v.getInt32(o, true);
  return {
    device: i(0),
    weights: nameOf(WEIGHTS_NAMES, i(4), "weights"),
    dtype: nameOf(["fp16", "bf16"] as const, i(8), "dtype"),
    kvDtype: nameOf(["fp16", "fp32"] as const, i(12) === 2 ? 1 : i(12) === 0 ? 0 : -1, "kv_dtype"),
    maxBatch: i(16),
    nCtx: i(20),
    placement: nameOf(GPU_PLACEMENTS, i(24), "placement"),
    offload: i(28) !== 0,
    useGraphs: i(32) !== 0,
    gemm: nameOf(GEMM_NAMES, i(36), "gemm"),
    memoryBudget: Number(v.getBigInt64(40, true)),
    prefillChunk: i(48),
    cpuThreads: i(52),
    cpuFirstCore: i(56),
    factorDtype: nameOf(FACTOR_DTYPE_NAMES, i(60), "factor_dtype"),
    prefillComp: nameOf(PREFILL_COMP_NAMES, i(64), "prefill_comp"),
    rankController: i(68) !== 0,
    controllerSlowdownPct: i(72),
    smLimit: i(76),
  };
}

/**
 * The library's `hci_gpu_default_params()`, decoded (a library built without CUDA has them too).
 *
 * @throws Error when the library has no usable GPU entry points
 */
export function defaultGpuParams(): GpuParams {
  return decodeGpuParams(gpuSym().hci_gpu_default_params());
}

/** The fields of `hci_gpu_synth_params` that {@linkcode SyntheticOptions} sets. */
export type SynthParams = Required<Pick<SyntheticOptions, "seed" | "bits" | "groupSize" | "rank">>;

/** Encodes an `hci_gpu_synth_params` from the library's defaults and `o`. */
export function encodeSynthParams(
  defaults: Uint8Array,
  o: SyntheticOptions,
): Uint8Array<ArrayBuffer> {
  const bytes = allocBytes(GPU_SYNTH_PARAMS_SIZE);
  bytes.set(defaults.subarray(0, GPU_SYNTH_PARAMS_SIZE));
  const v = dv(bytes);
  if (o.seed !== undefined) {
    if (!Number.isSafeInteger(o.seed) || o.seed < 0) {
      throw new RangeError(`seed must be a non-negative integer, got ${o.seed}`);
    }
    v.setBigUint64(0, BigInt(o.seed), true);
  }
  const setI = (off: number, value: number | undefined, name: string) => {
    if (value === undefined) return;
    if (!Number.isInteger(value)) throw new RangeError(`${name} must be an integer, got ${value}`);
    v.setInt32(off, value, true);
  };
  setI(8, o.bits, "bits");
  setI(12, o.groupSize, "groupSize");
  setI(16, o.rank, "rank");
  return bytes;
}

/** Decodes an `hci_gpu_synth_params`. */
export function decodeSynthParams(bytes: Uint8Array): SynthParams {
  const v = dv(bytes);
  return {
    seed: Number(v.getBigUint64(0, true)),
    bits: v.getInt32(8, true),
    groupSize: v.getInt32(12, true),
    rank: v.getInt32(16, true),
  };
}

/**
 * The library's `hci_gpu_synth_default_params()`, decoded.
 *
 * @throws Error when the library has no usable GPU entry points
 */
export function defaultSynthParams(): SynthParams {
  return decodeSynthParams(gpuSym().hci_gpu_synth_default_params());
}

/** `hci_gpu_model_info`: shapes, formats, placement and memory of a GPU model. */
export interface GpuModelInfo {
  nLayers: number;
  dModel: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  dFf: number;
  vocabSize: number;
  /** KV capacity per sequence. */
  nCtx: number;
  /** Sequences held. */
  maxBatch: number;
  /** Packed bits of the linears (0 = float, -1 = mixed formats). */
  bits: number;
  /** Packed group size (0 = float). */
  groupSize: number;
  /** Float weights / matrix inputs. */
  dtype: string;
  /** KV cache element type. */
  kvDtype: string;
  /** Blocks resident on the device. */
  residentLayers: number;
  /** Blocks streamed from pinned host memory each step. */
  offloadedLayers: number;
  /** Prefill GEMM in use: "cublas" or "own". */
  gemm: string;
  /** All weight bytes, wherever they live. */
  weightBytes: number;
  /** Weight bytes one decode step reads (batch 1). */
  weightBytesPerToken: number;
  /** Host -> device bytes per forward step (offload). */
  streamedBytesPerStep: number;
  /** Device bytes planned up front. */
  deviceBytesNeeded: number;
  /** Cap in force (0 = none). */
  memoryBudget: number;
  /** Allocated now through the library's allocator. */
  deviceBytesInUse: number;
  /** Peak of that since creation. */
  deviceBytesPeak: number;
  /** Pinned host memory held. */
  pinnedHostBytes: number;
  /** SMs the model's kernels run on (its `smLimit` partition, or every SM). */
  smCount: number;
}

/** `sizeof(hci_gpu_model_info)`. */
export const GPU_MODEL_INFO_SIZE = 136;

/** Decodes an `hci_gpu_model_info`. */
export function decodeGpuModelInfo(bytes: Uint8Array): GpuModelInfo {
  const v = dv(bytes);
  const i = (o: number) => v.getInt32(o, true);
  const l = (o: number) => Number(v.getBigInt64(o, true));
  return {
    nLayers: i(0),
    dModel: i(4),
    nHeads: i(8),
    nKvHeads: i(12),
    headDim: i(16),
    dFf: i(20),
    vocabSize: i(24),
    nCtx: i(28),
    maxBatch: i(32),
    bits: i(36),
    groupSize: i(40),
    dtype: DTYPE_NAMES[i(44)] ?? `dtype ${i(44)}`,
    kvDtype: DTYPE_NAMES[i(48)] ?? `dtype ${i(48)}`,
    residentLayers: i(52),
    offloadedLayers: i(56),
    gemm: i(60) === 1 ? "cublas" : "own",
    weightBytes: l(64),
    weightBytesPerToken: l(72),
    streamedBytesPerStep: l(80),
    deviceBytesNeeded: l(88),
    memoryBudget: l(96),
    deviceBytesInUse: l(104),
    deviceBytesPeak: l(112),
    pinnedHostBytes: l(120),
    smCount: i(128),
  };
}

/** Options of {@linkcode GpuModel.benchDecode} (`hci_gpu_bench_params`). */
export interface BenchOptions {
  /** Sequences decoded together, 1..maxBatch (default 1). */
  batch?: number;
  /** Prompt tokens per sequence (default 128). */
  promptLen?: number;
  /** Decode steps per repeat (default 128). */
  newTokens?: number;
  /** Timed repeats, medians reported (default 5). */
  repeats?: number;
  /** Untimed repeats first (default 1). */
  warmup?: number;
  /** Replay the CUDA graph (default true). */
  useGraph?: boolean;
  /** Prompt ids seed (default 0). */
  seed?: number;
}

/** `hci_gpu_bench_result`. */
export interface BenchResult {
  /** batch × newTokens / median decode time. */
  decodeTokensPerS: number;
  /** Median decode time per step, ms. */
  decodeMsPerStep: number;
  /** Fastest repeat's time per step, ms. */
  decodeMsPerStepMin: number;
  /** Slowest repeat's time per step, ms. */
  decodeMsPerStepMax: number;
  /** batch × promptLen / median prefill time. */
  prefillTokensPerS: number;
  /** Median prefill time of the batch's prompts, ms. */
  prefillMs: number;
  /** Median host -> device weight-copy time per decode step, ms (0 unless streaming). */
  pcieMsPerStep: number;
  /** Weight bytes one decode step reads. */
  weightBytesPerStep: number;
  /** Mean KV bytes read per decode step. */
  kvBytesPerStep: number;
  /** Host -> device bytes per decode step. */
  streamedBytesPerStep: number;
  /** Allocator peak after the run. */
  peakDeviceBytes: number;
  /** The decode steps replayed a CUDA graph. */
  graphUsed: boolean;
  /** Decode steps per repeat. */
  steps: number;
}

const BENCH_PARAMS_SIZE = 32;
const BENCH_RESULT_SIZE = 96;

/** Decodes an `hci_gpu_bench_result`. */
export function decodeBenchResult(bytes: Uint8Array): BenchResult {
  const v = dv(bytes);
  const f = (o: number) => v.getFloat64(o, true);
  const l = (o: number) => Number(v.getBigInt64(o, true));
  return {
    decodeTokensPerS: f(0),
    decodeMsPerStep: f(8),
    decodeMsPerStepMin: f(16),
    decodeMsPerStepMax: f(24),
    prefillTokensPerS: f(32),
    prefillMs: f(40),
    pcieMsPerStep: f(48),
    weightBytesPerStep: l(56),
    kvBytesPerStep: l(64),
    streamedBytesPerStep: l(72),
    peakDeviceBytes: l(80),
    graphUsed: v.getInt32(88, true) !== 0,
    steps: v.getInt32(92, true),
  };
}

// ---------------------------------------------------------------------------------------------
// Heterogeneous compensation statistics

/**
 * `hci_gpu_comp_stats`: what the CPU compensation did since the last reset. The sums cover
 * decode steps only (prefill rows separately); {@linkcode GpuModel.benchDecode} resets them after
 * its warm-up, so figures read after it cover the timed repeats. All zero but `placement` for
 * the `"none"` and `"gpu"` placements.
 */
export interface CompStats {
  /** Placement in force (`placement <n>` for a value these bindings do not know). */
  placement: GpuPlacement | `placement ${number}`;
  /** Compensation points per forward pass (CPU placements: n_layers × 4). */
  nPoints: number;
  /** Worker threads computing corrections. */
  cpuThreads: number;
  /** The run-time controller chooses the ranks. */
  rankController: boolean;
  /** Decode steps served by the CPU. */
  steps: number;
  /** CPU time computing corrections (x received to correction published), summed, ms. */
  cpuBusyMs: number;
  /** Time the GPU waited for corrections (GPU global timer), summed, ms. */
  gpuWaitMs: number;
  /** Activation bytes handed to the CPU, summed. */
  bytesToHost: number;
  /** Correction bytes read back by the GPU, summed. */
  bytesToDevice: number;
  /** Factor bytes the CPU read at the ranks used, summed. */
  factorBytesRead: number;
  /** Factor bytes held in host memory. */
  factorBytesHost: number;
  /** Mean over steps of (Σ ranks used / Σ full ranks). */
  rankFraction: number;
  /** Prefill rows served by the CPU. */
  prefillRows: number;
  /** CPU time on them, ms. */
  prefillCpuMs: number;
  /**
   * Involuntary context switches of the worker threads (the OS gave a spinning worker's core to
   * another thread); -1 where the OS does not tell.
   */
  cpuPreemptions: number;
}

/** `sizeof(hci_gpu_comp_stats)`. */
export const GPU_COMP_STATS_SIZE = 104;

/** Decodes an `hci_gpu_comp_stats`. */
export function decodeCompStats(bytes: Uint8Array): CompStats {
  const v = dv(bytes);
  const i = (o: number) => v.getInt32(o, true);
  const l = (o: number) => Number(v.getBigInt64(o, true));
  const f = (o: number) => v.getFloat64(o, true);
  return {
    placement: GPU_PLACEMENTS[i(0)] ?? `placement ${i(0)}`,
    nPoints: i(4),
    cpuThreads: i(8),
    rankController: i(12) !== 0,
    steps: l(16),
    cpuBusyMs: f(24),
    gpuWaitMs: f(32),
    bytesToHost: l(40),
    bytesToDevice: l(48),
    factorBytesRead: l(56),
    factorBytesHost: l(64),
    rankFraction: f(72),
    prefillRows: l(80),
    prefillCpuMs: f(88),
    cpuPreemptions: l(96),
  };
}

/** Ranks per linear (`layer * 7 + kind`), from {@linkcode GpuModel.compRanks}. */
export interface CompRanks {
  /** The ranks held (0 where a linear has no compensation). */
  full: Int32Array<ArrayBuffer>;
  /** Those the last decode step used. */
  last: Int32Array<ArrayBuffer>;
  /** Their mean over the decode steps since the last reset. */
  mean: Float64Array<ArrayBuffer>;
}

// ---------------------------------------------------------------------------------------------
// GpuModel

interface NativeGpu {
  ptr: Deno.PointerObject | null;
  busy: boolean;
  closing: boolean;
}

function freeNative(n: NativeGpu): void {
  if (!n.closing || n.busy || n.ptr === null) return;
  const p = n.ptr;
  n.ptr = null;
  gpuSym().hci_gpu_model_free(p);
}

const gpuFinalizer = new FinalizationRegistry<NativeGpu>((n) => {
  n.closing = true;
  freeNative(n);
});

/**
 * A model on one GPU (`hci_gpu_model*`): weights, KV cache for `maxBatch` sequences, buffers.
 * Calls run on worker threads, one at a time (a second call while one runs throws). Close it with
 * {@linkcode GpuModel.close} or `using`; device memory is released when the last call finishes.
 */
export class GpuModel implements Disposable {
  /** Shapes, formats, placement and planned memory, read at creation. */
  readonly info: Readonly<GpuModelInfo>;
  /** "synthetic:<name>" or the loaded model's folder. */
  readonly source: string;
  #n: NativeGpu;

  private constructor(source: string, ptr: Deno.PointerObject) {
    this.source = source;
    this.#n = { ptr, busy: false, closing: false };
    gpuFinalizer.register(this, this.#n, this);
    try {
      this.info = Object.freeze(this.#readInfo(ptr));
    } catch (e) {
      this.close();
      throw e;
    }
  }

  #readInfo(ptr: Deno.PointerObject): GpuModelInfo {
    const out = allocBytes(GPU_MODEL_INFO_SIZE);
    const err = errorBuffer();
    check(gpuSym().hci_gpu_model_get_info(ptr, out, err, ERR_LEN_ARG), err);
    return decodeGpuModelInfo(out);
  }

  /**
   * Puts a loaded model on the GPU (on a worker thread). The need in device bytes is computed
   * first: a budget too small fails with HCI_ERR_OUT_OF_MEMORY naming the need and the cap.
   *
   * @throws HciError (HCI_ERR_UNSUPPORTED without a usable GPU, with the reason)
   */
  static async fromModel(model: Model, options: GpuOptions = {}): Promise<GpuModel> {
    const s = gpuSym();
    const native = nativeOf(model);
    const params = encodeGpuParams(s.hci_gpu_default_params(), options);
    const out = allocBytes(8);
    const err = errorBuffer();
    native.inflight++;
    let status: number;
    try {
      status = await s.hci_gpu_model_create(native.ptr!, params, out, err, ERR_LEN_ARG);
    } finally {
      native.inflight--;
      native.settle();
    }
    retain(params, out, err);
    check(status, err);
    return new GpuModel(model.dir, GpuModel.#pointer(out));
  }

  /**
   * A model with the exact shapes of a public checkpoint and seeded random weights made on the
   * device: `synthetic:llama-2-7b`, `synthetic:llama-2-13b`, `synthetic:llama-3-8b`,
   * `synthetic:test`.
   */
  static async synthetic(name: string, options: SyntheticOptions = {}): Promise<GpuModel> {
    const s = gpuSym();
    const params = encodeGpuParams(s.hci_gpu_default_params(), options);
    const synth = encodeSynthParams(s.hci_gpu_synth_default_params(), options);
    const nameBytes = cStringBytes(name);
    const out = allocBytes(8);
    const err = errorBuffer();
    const status = await s.hci_gpu_model_synthetic(nameBytes, synth, params, out, err, ERR_LEN_ARG);
    retain(nameBytes, synth, params, out, err);
    check(status, err);
    return new GpuModel(
      name.startsWith("synthetic:") ? name : `synthetic:${name}`,
      GpuModel.#pointer(out),
    );
  }

  static #pointer(out: Uint8Array<ArrayBuffer>): Deno.PointerObject {
    const ptr = Deno.UnsafePointer.create(new BigUint64Array(out.buffer)[0]);
    if (ptr === null) throw new Error("hcinfer: the GPU model was not created");
    return ptr;
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#n.closing;
  }

  #ptr(): Deno.PointerObject {
    if (this.#n.closing || this.#n.ptr === null) {
      throw new Error(`hcinfer: GPU model ${this.source} is closed`);
    }
    if (this.#n.busy) {
      throw new Error("hcinfer: a call on this GPU model is still running; await it first");
    }
    return this.#n.ptr;
  }

  async #call<T>(run: (ptr: Deno.PointerObject, s: GpuSymbols) => Promise<T>): Promise<T> {
    const ptr = this.#ptr();
    this.#n.busy = true;
    try {
      return await run(ptr, gpuSym());
    } finally {
      this.#n.busy = false;
      freeNative(this.#n);
    }
  }

  /** Current memory figures (in use and peak change as the model runs). */
  memory(): GpuModelInfo {
    return this.#readInfo(this.#ptr());
  }

  /** Empties sequence `seq`, or all of them (default). */
  reset(seq = -1): void {
    const err = errorBuffer();
    check(gpuSym().hci_gpu_reset(this.#ptr(), seq, err, ERR_LEN_ARG), err);
  }

  /** Tokens in sequence `seq`'s cache. */
  nPast(seq = 0): number {
    return gpuSym().hci_gpu_n_past(this.#ptr(), seq);
  }

  /** Appends `tokens` to sequence `seq`; returns the last token's logits. */
  prefill(seq: number, tokens: Int32Array | readonly number[]): Promise<Float32Array<ArrayBuffer>> {
    return this.#call(async (ptr, s) => {
      const data = int32Copy(tokens);
      const logits = new Float32Array(new ArrayBuffer(this.info.vocabSize * 4));
      const err = errorBuffer();
      const status = await s.hci_gpu_prefill(ptr, seq, data, data.length, logits, err, ERR_LEN_ARG);
      retain(data, logits, err);
      check(status, err);
      return logits;
    });
  }

  /**
   * One decode step of sequences 0..n-1 (`tokens[i]` appended to sequence i); returns
   * logits [n, vocab] row-major.
   */
  decode(tokens: Int32Array | readonly number[]): Promise<Float32Array<ArrayBuffer>> {
    return this.#call(async (ptr, s) => {
      const data = int32Copy(tokens);
      const logits = new Float32Array(
        new ArrayBuffer(Math.max(1, data.length) * this.info.vocabSize * 4),
      );
      const err = errorBuffer();
      const status = await s.hci_gpu_decode(ptr, data, data.length, logits, err, ERR_LEN_ARG);
      retain(data, logits, err);
      check(status, err);
      return logits;
    });
  }

  /** Greedy generation on sequence 0 (reset first); returns the new tokens. */
  generateGreedy(
    prompt: Int32Array | readonly number[],
    nNew: number,
    eosId = -1,
  ): Promise<Int32Array<ArrayBuffer>> {
    return this.#call(async (ptr, s) => {
      const data = int32Copy(prompt);
      const out = new Int32Array(new ArrayBuffer(Math.max(nNew, 1) * 4));
      const nOut = new Int32Array(new ArrayBuffer(4));
      const err = errorBuffer();
      const status = await s.hci_gpu_generate_greedy(
        ptr,
        data,
        data.length,
        nNew,
        eosId,
        out,
        nOut,
        err,
        ERR_LEN_ARG,
      );
      retain(data, out, nOut, err);
      check(status, err);
      return out.slice(0, nOut[0]);
    });
  }

  /** Perplexity by the GPTQ protocol on the GPU (as `Model.evalNll`). */
  evalNll(
    tokens: Int32Array | readonly number[],
    params: { seqLen: number; maxWindows?: number },
    options: LongCallOptions = {},
  ): Promise<EvalResult> {
    return this.#call(async (ptr, s) => {
      const defaults = decodeEvalParams(sym().hci_eval_default_params());
      const bytes = encodeEvalParams({
        ...defaults,
        seqLen: params.seqLen,
        maxWindows: params.maxWindows ?? defaults.maxWindows,
      });
      const data = int32Copy(tokens);
      const out = allocBytes(EVAL_RESULT_SIZE);
      const err = errorBuffer();
      const status = await runLongCall(
        (progress, cancel) =>
          s.hci_gpu_eval_nll(
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

  /** Times prefill and (CUDA-graph) decode; see `hci_gpu_bench_decode`. */
  benchDecode(options: BenchOptions = {}): Promise<BenchResult> {
    return this.#call(async (ptr, s) => {
      const bytes = allocBytes(BENCH_PARAMS_SIZE);
      bytes.set(s.hci_gpu_bench_default_params().subarray(0, BENCH_PARAMS_SIZE));
      const v = dv(bytes);
      const setI = (o: number, x: number | undefined) => x !== undefined && v.setInt32(o, x, true);
      setI(0, options.batch);
      setI(4, options.promptLen);
      setI(8, options.newTokens);
      setI(12, options.repeats);
      setI(16, options.warmup);
      setI(20, options.useGraph === undefined ? undefined : options.useGraph ? 1 : 0);
      if (options.seed !== undefined) v.setBigUint64(24, BigInt(options.seed), true);
      const out = allocBytes(BENCH_RESULT_SIZE);
      const err = errorBuffer();
      const status = await s.hci_gpu_bench_decode(ptr, bytes, out, err, ERR_LEN_ARG);
      retain(bytes, out, err);
      check(status, err);
      return decodeBenchResult(out);
    });
  }

  /**
   * What the CPU compensation did since the last reset ({@linkcode CompStats}); all zero but
   * `placement` for the `"none"` and `"gpu"` placements.
   */
  compStats(): CompStats {
    const out = allocBytes(GPU_COMP_STATS_SIZE);
    const err = errorBuffer();
    check(gpuSym().hci_gpu_get_comp_stats(this.#ptr(), out, err, ERR_LEN_ARG), err);
    return decodeCompStats(out);
  }

  /** Zeroes the sums of {@linkcode compStats} and the means of {@linkcode compRanks}. */
  resetCompStats(): void {
    const err = errorBuffer();
    check(gpuSym().hci_gpu_reset_comp_stats(this.#ptr(), err, ERR_LEN_ARG), err);
  }

  /**
   * Ranks per linear (`layer * 7 + kind`, `nLayers * 7` of them): held, used by the last decode
   * step, and their mean over the decode steps since the last reset. For the `"gpu"` placement
   * all three are the ranks on the device.
   *
   * @throws HciError when the library refuses (the `"none"` placement holds no ranks)
   */
  compRanks(): CompRanks {
    const ptr = this.#ptr();
    const n = this.info.nLayers * 7;
    const full = new Int32Array(new ArrayBuffer(n * 4));
    const last = new Int32Array(new ArrayBuffer(n * 4));
    const mean = new Float64Array(new ArrayBuffer(n * 8));
    const err = errorBuffer();
    check(gpuSym().hci_gpu_get_comp_ranks(ptr, full, last, mean, n, err, ERR_LEN_ARG), err);
    return { full, last, mean };
  }

  /**
   * Fixes the ranks the CPU uses, one per linear (`layer * 7 + kind`), each in 0..its held rank;
   * turns the rank controller off. CPU placements only.
   *
   * @throws RangeError when `ranks` does not have `nLayers * 7` entries; HciError when the
   *   library refuses (a rank out of range, a placement other than the CPU ones)
   */
  setCompRanks(ranks: Int32Array | readonly number[]): void {
    const ptr = this.#ptr();
    const n = this.info.nLayers * 7;
    if (ranks.length !== n) {
      throw new RangeError(`setCompRanks: expected ${n} ranks (nLayers × 7), got ${ranks.length}`);
    }
    const data = int32Copy(ranks);
    const err = errorBuffer();
    check(gpuSym().hci_gpu_set_comp_ranks(ptr, data, n, err, ERR_LEN_ARG), err);
  }

  /** Releases the GPU model (now, or when the call in flight finishes); idempotent. */
  close(): void {
    if (this.#n.closing) return;
    gpuFinalizer.unregister(this);
    this.#n.closing = true;
    freeNative(this.#n);
  }

  /** Same as {@linkcode GpuModel.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Same as {@linkcode GpuModel.close}: the name the API sketch uses. */
  dispose(): void {
    this.close();
  }
}
