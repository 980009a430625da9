/**
 * Deno FFI bindings of libhcinfer (`runtime/include/hcinfer.h`, ABI version 1).
 *
 * ```ts
 * import { Model, Session } from "./ffi/mod.ts";
 * using model = await Model.load("models/tiny");
 * using session = Session.create(model);
 * const ids = await session.generateGreedy([0, 496, 3378], 16);
 * ```
 *
 * Needs `--allow-ffi` (and `--allow-env=HCINFER_LIB` to point at another build of the library).
 *
 * @module
 */

export {
  ABI_VERSION,
  type Library,
  library,
  LIBRARY_ENV,
  libraryPath,
  libraryVersion,
} from "./library.ts";
export { type HciSymbols, symbols } from "./symbols.ts";
export { HciError, Status, statusName } from "./errors.ts";
export {
  type CalibrateOptions,
  type EvalOptions,
  type LoadOptions,
  type LongCallOptions,
  Model,
  type QuantizeOptions,
  type QuantMethodName,
  type ScalingName,
} from "./model.ts";
export { sampleCalibrationWindows, seededRandom, type WindowOptions } from "./calibration.ts";
export { Session, type SessionOptions } from "./session.ts";
export {
  benchLowRank,
  type FactorType,
  type LowRankBenchOptions,
  type LowRankBenchResult,
  type SimdLevel,
} from "./hetero.ts";
export {
  type CalibInfo,
  type EvalResult,
  LINEAR_ALL,
  LINEAR_KINDS,
  type LinearInfo,
  LinearKind,
  type ModelInfo,
  QuantMethod,
  Scaling,
  type SessionParams,
} from "./structs.ts";
export {
  type BenchOptions,
  type BenchResult,
  type CompRanks,
  type CompStats,
  defaultGpuParams,
  deviceInfo,
  type GpuBandwidth,
  type GpuDeviceInfo,
  GpuModel,
  type GpuModelInfo,
  type GpuOptions,
  type GpuParams,
  type GpuPlacement,
  gpuUnavailableReason,
  measureBandwidth,
  type SyntheticOptions,
} from "./gpu.ts";
