/**
 * The CPU half of heterogeneous compensation, from TypeScript: the low-rank kernel benchmark at
 * real model shapes (`hci_lowrank_bench`).
 *
 * @module
 */

import { check, ERR_LEN_ARG, errorBuffer } from "./errors.ts";
import { retain } from "./handles.ts";
import { sym } from "./library.ts";
import { allocBytes } from "./structs.ts";

/** Storage type of the factors. */
export type FactorType = "f32" | "bf16" | "f16";
/** SIMD kernel: "best" picks the widest the CPU has. */
export type SimdLevel = "best" | "scalar" | "avx2" | "avx512";

const TYPES: Record<FactorType, number> = { f32: 0, bf16: 1, f16: 2 };
const SIMD: Record<SimdLevel, number> = { best: -1, scalar: 0, avx2: 1, avx512: 2 };
const SIMD_NAMES = ["scalar", "avx2", "avx512"] as const;

/** Options of {@linkcode benchLowRank} (the fields of `hci_lowrank_bench_params`). */
export interface LowRankBenchOptions {
  /** Hidden size (default 4096, Llama-2-7B). */
  dModel?: number;
  /** MLP size (default 11008). */
  dFf?: number;
  /** k/v output size, n_kv_heads · head_dim (default 4096). */
  kvDim?: number;
  /** Blocks; 4 compensation points each (default 32). */
  nLayers?: number;
  /** Rank of every branch (default 64). */
  rank?: number;
  /** Decode batch (default 1). */
  batch?: number;
  /** Factor storage (default bf16). */
  factorType?: FactorType;
  /** Worker threads (default: all cores). */
  nThreads?: number;
  /** SIMD kernel (default best). */
  simd?: SimdLevel;
  /** Timed passes, median reported (default 20). */
  iters?: number;
  /** Untimed passes first (default 3). */
  warmup?: number;
  /** Pin worker i to core firstCore + i (default: no pinning). */
  firstCore?: number;
}

/** What {@linkcode benchLowRank} measures. */
export interface LowRankBenchResult {
  /** One pass over every point (a decode step's compensation), median and fastest. */
  secondsMedian: number;
  secondsMin: number;
  /** Factor bytes read per pass. */
  bytes: number;
  /** bytes / secondsMedian, GB/s. */
  gbps: number;
  /** Streaming read bandwidth of host memory with the same threads, GB/s. */
  hostReadGbps: number;
  /** gbps / hostReadGbps. */
  fractionOfHostBandwidth: number;
  /** Kernel that ran. */
  simd: (typeof SIMD_NAMES)[number];
  /** Compensation points per pass. */
  nPoints: number;
}

/**
 * Times the CPU low-rank kernels over a decode step's compensation points (random factors of
 * the given shapes), beside the host memory read bandwidth.
 *
 * @throws HciError for bad sizes or a SIMD level this CPU lacks
 */
export async function benchLowRank(options: LowRankBenchOptions = {}): Promise<LowRankBenchResult> {
  const s = sym();
  const d = new DataView(s.hci_lowrank_bench_default_params().buffer);
  const def = (i: number) => d.getInt32(4 * i, true);
  const fields = [
    options.dModel ?? def(0),
    options.dFf ?? def(1),
    options.kvDim ?? def(2),
    options.nLayers ?? def(3),
    options.rank ?? def(4),
    options.batch ?? def(5),
    options.factorType ? TYPES[options.factorType] : def(6),
    options.nThreads ?? def(7),
    options.simd ? SIMD[options.simd] : def(8),
    options.iters ?? def(9),
    options.warmup ?? def(10),
    options.firstCore ?? def(11),
  ];
  const params = allocBytes(48);
  const pv = new DataView(params.buffer);
  fields.forEach((v, i) => {
    if (!Number.isInteger(v)) throw new RangeError(`benchLowRank: field ${i} is not an integer`);
    pv.setInt32(4 * i, v, true);
  });
  const out = allocBytes(40);
  const err = errorBuffer();
  const status = await s.hci_lowrank_bench(params, out, err, ERR_LEN_ARG);
  retain(params, out, err);
  check(status, err);
  const o = new DataView(out.buffer);
  const secondsMedian = o.getFloat64(0, true);
  const bytes = o.getFloat64(16, true);
  const hostReadGbps = o.getFloat64(24, true);
  const gbps = bytes / secondsMedian / 1e9;
  return {
    secondsMedian,
    secondsMin: o.getFloat64(8, true),
    bytes,
    gbps,
    hostReadGbps,
    fractionOfHostBandwidth: gbps / hostReadGbps,
    simd: SIMD_NAMES[o.getInt32(32, true)],
    nPoints: o.getInt32(36, true),
  };
}
