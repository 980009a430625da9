/**
 * Experiment `hetero_throughput`: decode speed of error-compensated quantized models when the
 * low-rank compensation runs on the GPU, on the CPU without overlap (`cpu-sync`), or on the CPU
 * overlapped with the GPU's backbone products (`cpu-async`, HCInfer's heterogeneous path), with
 * and without the run-time rank controller, against the uncompensated backbone (`none`) and,
 * under a GPU memory budget, against fp16 weights streamed from host memory.
 *
 * Models are synthetic checkpoints at real scale (`synthetic:llama-2-7b`, ...): seeded random
 * packed weights and seeded random rank-r factors on every linear (`SyntheticOptions.rank`), so
 * speed is measured at the exact shapes without the checkpoint.
 *
 * Each record is one (model, weights, placement, rank, batch, budget, CPU threads, controller)
 * point. Beside the timings of `GpuModel.benchDecode`, it holds the compensation statistics of
 * the timed repeats (`GpuModel.compStats`, reset by the benchmark after its warm-up) per decode
 * step: CPU busy time, GPU wait time, the GPU's own time (ms/step − wait), bytes handed each way,
 * factor bytes the CPU read, and the rank fraction the controller kept (with a summary of the
 * ranks it chose). Rooflines: `rooflineTokensPerS = batch × HBM bandwidth / weight bytes per
 * step` (the backbone's, as in `throughput`; HBM measured in the same run) and
 * `cpuRooflineMs = factor bytes per step / host read bandwidth` (measured in the same run with
 * the same CPU threads and pinning, by `benchLowRank`). A point whose model cannot be made (does
 * not fit its budget, say) is recorded as `status: "failed"` with the library's message.
 *
 * @module
 */

import { join } from "node:path";
import { z } from "zod";
import {
  deviceInfo,
  type GpuBandwidth,
  GpuModel,
  type GpuModelInfo,
  type GpuPlacement,
  gpuUnavailableReason,
  measureBandwidth,
} from "../ffi/gpu.ts";
import { benchLowRank, HciError, libraryVersion } from "../ffi/mod.ts";
import { lineFigure, type Series } from "../results/figure.ts";
import { collectGpuProvenance } from "./gpu_provenance.ts";
import { type Column, toCsv, toMarkdown } from "../results/table.ts";
import type { Experiment, NamedFigure, PointRunner } from "./experiment.ts";
import type { SweepRecord } from "./runner.ts";
import { PlacementSchema } from "./schema.ts";

/** Experiment name, as recorded in every record. */
export const EXPERIMENT = "hetero_throughput";

/** The synthetic checkpoints of `hci_gpu_model_synthetic`. */
export const SYNTHETIC_MODELS = [
  "synthetic:llama-2-7b",
  "synthetic:llama-2-13b",
  "synthetic:llama-3-8b",
  "synthetic:test",
] as const;

const ModelSchema = z.enum(SYNTHETIC_MODELS);
const FactorDtypeSchema = z.enum(["fp32", "bf16", "fp16"]);
const PrefillCompSchema = z.enum(["cpu", "gpu"]);
const CPU_PLACEMENTS: readonly GpuPlacement[] = ["cpu-sync", "cpu-async"];

/** One run of a config: a weight format and the placements, ranks, ... measured with it. */
export const HeteroRunSchema = z.strictObject({
  /** Models of this run (default: the config's `models`). */
  models: z.array(ModelSchema).min(1).optional(),
  /** 0 = fp16 float weights; 2, 3, 4 or 8 = packed codes. */
  bits: z.literal([0, 2, 3, 4, 8]),
  /** Packed group size (ignored for bits 0). */
  groupSize: z.literal([32, 64, 128, -1]).default(128),
  placements: z.array(PlacementSchema).min(1),
  /** Rank of every linear's synthetic factors (ignored for placement none). */
  ranks: z.array(z.int().min(1).max(4096)).min(1).default([64]),
  batches: z.array(z.int().min(1).max(16)).min(1).default([1]),
  /** GPU memory cap in GiB (null = none). */
  budgetGiB: z.number().positive().nullable().default(null),
  /** Stream blocks that do not fit the budget from pinned host memory. */
  offload: z.boolean().default(true),
  /** CPU placements: compensation threads (0 = the library's default). */
  cpuThreads: z.array(z.int().min(0).max(256)).min(1).default([0]),
  /** cpu-async only (other placements are measured once, without it). */
  rankController: z.array(z.boolean()).min(1).default([false]),
  /**
   * With the controller: decode steps may be this many percent slower than the backbone's own
   * (0 = the library's default, 3; -1 = every point stays on, only ranks change).
   */
  controllerSlowdownPct: z.int().min(-1).max(1000).default(0),
  /** CPU placements: storage of the host factors. */
  factorDtype: FactorDtypeSchema.default("bf16"),
  /** CPU placements: where prefill's compensation runs. */
  prefillComp: PrefillCompSchema.default("cpu"),
  /** Per-run overrides of the config's defaults. */
  newTokens: z.int().min(1).optional(),
  repeats: z.int().min(1).optional(),
}).superRefine((run, ctx) => {
  if (run.bits === 0 && run.placements.some((p) => p !== "none")) {
    ctx.addIssue({
      code: "custom",
      path: ["placements"],
      input: run.placements,
      message: 'float weights (bits 0) have no quantization error to compensate: use ["none"]',
    });
  }
});

/** The configuration. */
export const HeteroConfigSchema = z.strictObject({
  /** Synthetic checkpoints, e.g. `synthetic:llama-2-7b`. */
  models: z.array(ModelSchema).min(1),
  runs: z.array(HeteroRunSchema).min(1),
  promptLen: z.int().min(1).default(128),
  newTokens: z.int().min(1).default(64),
  repeats: z.int().min(1).default(3),
  warmup: z.int().min(0).default(1),
  useGraph: z.boolean().default(true),
  /** CPU placements: workers pinned from this core on (-1 = no pinning; the library's default 2). */
  cpuFirstCore: z.int().min(-1).default(2),
  /** Buffer size of the HBM bandwidth measurement (bytes). */
  bandwidthBytes: z.int().min(1 << 20).default(2 ** 30),
  /** Measure host read bandwidth per CPU thread count (for `cpuRooflineMs`). */
  hostBandwidth: z.boolean().default(true),
  /**
   * Run every model, and the HBM bandwidth measurement, on a partition of at least this many of
   * the GPU's SMs (a CUDA green context; `GpuOptions.smLimit`), emulating a smaller GPU, e.g. the
   * consumer cards of the HCInfer setting; 0 = every SM.
   */
  gpuSms: z.int().min(0).default(0),
  seed: z.int().min(0).default(0),
});
/** The configuration (input form). */
export type HeteroConfigInput = z.input<typeof HeteroConfigSchema>;
/** The configuration (parsed). */
export type HeteroConfig = z.output<typeof HeteroConfigSchema>;

/** One point. Fields that do not apply to its placement are null. */
export interface HeteroPoint {
  model: string;
  /** 0 = fp16 float weights. */
  bits: number;
  /** Packed group size (null for bits 0). */
  groupSize: number | null;
  placement: GpuPlacement;
  /** Factor rank of every linear (0 for placement none). */
  rank: number;
  batch: number;
  budgetGiB: number | null;
  offload: boolean;
  /** CPU placements: threads asked for (0 = the library's default). */
  cpuThreads: number | null;
  cpuFirstCore: number | null;
  factorDtype: "fp32" | "bf16" | "fp16" | null;
  prefillComp: "cpu" | "gpu" | null;
  /** cpu-async only; false elsewhere. */
  rankController: boolean;
  /** With the controller and a budget other than the library's default (absent: 8%). */
  controllerSlowdownPct?: number;
  /** On an SM partition of at least this many SMs (absent: every SM). */
  gpuSms?: number;
  promptLen: number;
  newTokens: number;
  repeats: number;
  useGraph: boolean;
}

/** The ranks the controller chose: means over decode steps, over the linears holding factors. */
export interface ChosenRanks {
  /** Mean of the per-linear mean ranks. */
  mean: number;
  /** Smallest and largest per-linear mean rank. */
  min: number;
  max: number;
  /** Mean per linear kind (q, k, v, o, gate, up, down). */
  byKind: Record<string, number>;
}

/** What a point measures (null where it does not apply or the point failed). */
export interface HeteroMetrics {
  status: "ok" | "failed";
  /** The library's message when the model could not be made or the benchmark failed. */
  error: string | null;
  /** Seconds from asking for the model to having it (or to the failure). */
  createSeconds: number;
  decodeTokensPerS: number | null;
  /** Median, fastest and slowest repeat's decode time per step, ms. */
  decodeMsPerStep: number | null;
  decodeMsPerStepMin: number | null;
  decodeMsPerStepMax: number | null;
  prefillTokensPerS: number | null;
  weightBytesPerStep: number | null;
  streamedBytesPerStep: number | null;
  pcieMsPerStep: number | null;
  peakDeviceBytes: number | null;
  deviceBytesNeeded: number | null;
  residentLayers: number | null;
  offloadedLayers: number | null;
  graphUsed: boolean | null;
  /** Measured in this run: HBM (device copy) and pinned host->device, GB/s. */
  hbmGbps: number;
  h2dGbps: number;
  /** SMs the model and the bandwidth measurement ran on (absent in records before it existed). */
  gpuSmCount?: number;
  /** Host streaming read bandwidth with the point's CPU threads and pinning, GB/s. */
  hostReadGbps: number | null;
  /** The thread count it was measured with. */
  hostReadThreads: number | null;
  /** batch × hbmGbps / weight bytes per step (the backbone's roofline). */
  rooflineTokensPerS: number | null;
  pctRoofline: number | null;
  /** weight bytes per step / HBM bandwidth, ms. */
  rooflineMsPerStep: number | null;
  /** factor bytes per step / host read bandwidth, ms (CPU placements). */
  cpuRooflineMs: number | null;
  /** Compensation points per forward pass and the CPU threads in force (CPU placements). */
  nPoints: number | null;
  cpuThreadsUsed: number | null;
  /** Decode steps the statistics cover (the timed repeats). */
  compSteps: number | null;
  cpuBusyMsPerStep: number | null;
  gpuWaitMsPerStep: number | null;
  /** ms/step − GPU wait per step (ms/step itself without CPU placement). */
  gpuBusyMsPerStep: number | null;
  bytesToHostPerStep: number | null;
  bytesToDevicePerStep: number | null;
  /**
   * Factor bytes read per decode step: by the CPU at the ranks used (CPU placements, from the
   * statistics), or from the device at full rank (placement gpu, computed from the shapes with
   * 2-byte factors).
   */
  factorBytesPerStep: number | null;
  /** Factor bytes held in host memory (CPU placements). */
  factorBytesHost: number | null;
  /** Mean over steps of Σ ranks used / Σ full ranks (CPU placements). */
  rankFraction: number | null;
  /** Prefill rows the CPU compensated and its time on them (the timed repeats' prompts). */
  prefillRows: number | null;
  prefillCpuMs: number | null;
  /**
   * Involuntary context switches of the CPU workers per decode step (prefill included in the
   * count): how often the OS took a spinning worker's core. Null where the OS does not tell.
   */
  cpuPreemptionsPerStep: number | null;
  /** Controller runs: the ranks it chose. */
  chosenRanks: ChosenRanks | null;
  device: string;
}

type Rec = SweepRecord<HeteroPoint, HeteroMetrics>;

const isCpu = (p: GpuPlacement) => CPU_PLACEMENTS.includes(p);

/**
 * The points of a config: models × runs × placements × ranks × batches × CPU threads ×
 * controller, in that order, without duplicates (a point two runs share is measured once). Ranks,
 * CPU settings and the controller collapse where they do not apply (rank 0 and CPU fields null
 * for placement none; CPU fields null for gpu; controller false except for cpu-async).
 */
export function heteroPoints(config: HeteroConfig): HeteroPoint[] {
  const out: HeteroPoint[] = [];
  const seen = new Set<string>();
  const models = [...new Set([...config.models, ...config.runs.flatMap((r) => r.models ?? [])])];
  for (const model of models) {
    for (const run of config.runs) {
      if (!(run.models ?? config.models).includes(model)) continue;
      for (const placement of run.placements) {
        const cpu = isCpu(placement);
        const ranks = placement === "none" ? [0] : run.ranks;
        const threads = cpu ? run.cpuThreads : [null];
        const controllers = placement === "cpu-async" ? run.rankController : [false];
        for (const rank of ranks) {
          for (const batch of run.batches) {
            for (const cpuThreads of threads) {
              for (const rankController of controllers) {
                const p: HeteroPoint = {
                  model,
                  bits: run.bits,
                  groupSize: run.bits === 0 ? null : run.groupSize,
                  placement,
                  rank,
                  batch,
                  budgetGiB: run.budgetGiB,
                  offload: run.offload,
                  cpuThreads,
                  cpuFirstCore: cpu ? config.cpuFirstCore : null,
                  factorDtype: cpu ? run.factorDtype : null,
                  prefillComp: cpu ? run.prefillComp : null,
                  rankController,
                  ...(rankController && run.controllerSlowdownPct !== 0
                    ? { controllerSlowdownPct: run.controllerSlowdownPct }
                    : {}),
                  ...(config.gpuSms ? { gpuSms: config.gpuSms } : {}),
                  promptLen: config.promptLen,
                  newTokens: run.newTokens ?? config.newTokens,
                  repeats: run.repeats ?? config.repeats,
                  useGraph: config.useGraph,
                };
                const key = JSON.stringify(p);
                if (seen.has(key)) continue;
                seen.add(key);
                out.push(p);
              }
            }
          }
        }
      }
    }
  }
  return out;
}

/** The model instance a point needs (points differing only in batch share one). */
function instanceKey(p: HeteroPoint): string {
  const { batch: _b, newTokens: _n, repeats: _r, promptLen: _p, useGraph: _g, ...rest } = p;
  return JSON.stringify(rest);
}

/** Weights label: `fp16` or `W<bits> g<group>`. */
export function weightsLabel(p: Pick<HeteroPoint, "bits" | "groupSize">): string {
  return p.bits === 0 ? "fp16" : `W${p.bits} g${p.groupSize}`;
}

/** The controller's budget in words after a comma: "" (the default), `, 8%`, `, ranks only`. */
function controllerBudget(p: HeteroPoint): string {
  const pct = p.controllerSlowdownPct;
  return pct === undefined || pct === 0 ? "" : pct < 0 ? ", ranks only" : `, ${pct}%`;
}

/** The controller's setting in words: `on` (default budget), `on, 8%`, `on, ranks only`. */
export function controllerLabel(p: HeteroPoint): string {
  return `on${controllerBudget(p)}`;
}

/** The CPU settings of a point in words (`default threads`, `4 threads, fp32 factors`, ...). */
export function cpuVariant(p: HeteroPoint): string {
  if (!isCpu(p.placement)) return "-";
  const parts = [p.cpuThreads ? `${p.cpuThreads} threads` : "default threads"];
  if (p.factorDtype && p.factorDtype !== "bf16") parts.push(`${p.factorDtype} factors`);
  if (p.prefillComp === "gpu") parts.push("prefill comp on GPU");
  return parts.join(", ");
}

/** Factor bytes of rank `rank` on every linear (Σ min(r, d_in, d_out) · (d_in + d_out)). */
export function factorBytesOfShapes(
  info: Pick<GpuModelInfo, "nLayers" | "dModel" | "nHeads" | "nKvHeads" | "headDim" | "dFf">,
  rank: number,
  bytesPerElement: number,
): number {
  const q = info.nHeads * info.headDim;
  const kv = info.nKvHeads * info.headDim;
  const d = info.dModel;
  const shapes = [[d, q], [d, kv], [d, kv], [q, d], [d, info.dFf], [d, info.dFf], [info.dFf, d]];
  let elements = 0;
  for (const [din, dout] of shapes) elements += Math.min(rank, din, dout) * (din + dout);
  return info.nLayers * elements * bytesPerElement;
}

const KIND_NAMES = ["q", "k", "v", "o", "gate", "up", "down"] as const;

/** Summary of per-linear mean ranks (linears with full rank 0 left out); null when none hold any. */
export function summarizeRanks(
  full: ArrayLike<number>,
  mean: ArrayLike<number>,
): ChosenRanks | null {
  const vals: number[] = [];
  const byKind: number[][] = KIND_NAMES.map(() => []);
  for (let i = 0; i < full.length; i++) {
    if (full[i] <= 0) continue;
    vals.push(mean[i]);
    byKind[i % 7].push(mean[i]);
  }
  if (!vals.length) return null;
  const avg = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  return {
    mean: avg(vals),
    min: Math.min(...vals),
    max: Math.max(...vals),
    byKind: Object.fromEntries(
      KIND_NAMES.flatMap((k, i) => byKind[i].length ? [[k, avg(byKind[i])]] : []),
    ),
  };
}

const GiB = 2 ** 30;

/** Threads the library uses for `cpuThreads` 0: the cores from the first core on, at most 32. */
function defaultThreads(firstCore: number): number {
  const cores = navigator.hardwareConcurrency ?? 1;
  return Math.max(1, Math.min(32, firstCore >= 0 ? cores - firstCore : cores));
}

/** Opens the runner: measures bandwidths, keeps one GPU model open between batch sizes. */
export async function openHetero(
  config: HeteroConfig,
): Promise<PointRunner<HeteroPoint, HeteroMetrics>> {
  const reason = gpuUnavailableReason();
  if (reason !== null) throw new Error(`hetero_throughput needs a GPU: ${reason}`);
  const bw: GpuBandwidth = await measureBandwidth({
    bytes: config.bandwidthBytes,
    repeats: 10,
    smLimit: config.gpuSms,
  });
  const dev = deviceInfo();
  const points = heteroPoints(config);
  const hostBw = new Map<string, number | null>();
  /** Host read bandwidth with `threads` workers pinned from `firstCore` (cached; null = off). */
  const hostRead = async (threads: number, firstCore: number): Promise<number | null> => {
    if (!config.hostBandwidth) return null;
    const key = `${threads}/${firstCore}`;
    if (!hostBw.has(key)) {
      try {
        // a tiny kernel benchmark; its host read figure streams 1 GiB with the same threads
        const r = await benchLowRank({
          dModel: 512,
          dFf: 1408,
          kvDim: 256,
          nLayers: 1,
          rank: 8,
          batch: 1,
          nThreads: threads,
          firstCore,
          iters: 1,
          warmup: 0,
        });
        hostBw.set(key, r.hostReadGbps);
      } catch (e) {
        if (!(e instanceof HciError)) throw e;
        hostBw.set(key, null);
      }
    }
    return hostBw.get(key)!;
  };
  let current: {
    key: string;
    gpu: GpuModel | null;
    error: string | null;
    seconds: number;
    hostThreads: number | null;
  } | null = null;
  const release = () => {
    current?.gpu?.close();
    current = null;
  };
  const maxBatch = (p: HeteroPoint) =>
    Math.max(...points.filter((q) => instanceKey(q) === instanceKey(p)).map((q) => q.batch));
  const nCtx = Math.ceil((config.promptLen + Math.max(...points.map((p) => p.newTokens))) / 64) *
    64;
  const base = (extra: Partial<HeteroMetrics>): HeteroMetrics => ({
    status: "ok",
    error: null,
    createSeconds: 0,
    decodeTokensPerS: null,
    decodeMsPerStep: null,
    decodeMsPerStepMin: null,
    decodeMsPerStepMax: null,
    prefillTokensPerS: null,
    weightBytesPerStep: null,
    streamedBytesPerStep: null,
    pcieMsPerStep: null,
    peakDeviceBytes: null,
    deviceBytesNeeded: null,
    residentLayers: null,
    offloadedLayers: null,
    graphUsed: null,
    hbmGbps: bw.hbmGbps,
    h2dGbps: bw.h2dPinnedGbps,
    gpuSmCount: bw.smCount,
    hostReadGbps: null,
    hostReadThreads: null,
    rooflineTokensPerS: null,
    pctRoofline: null,
    rooflineMsPerStep: null,
    cpuRooflineMs: null,
    nPoints: null,
    cpuThreadsUsed: null,
    compSteps: null,
    cpuBusyMsPerStep: null,
    gpuWaitMsPerStep: null,
    gpuBusyMsPerStep: null,
    bytesToHostPerStep: null,
    bytesToDevicePerStep: null,
    factorBytesPerStep: null,
    factorBytesHost: null,
    rankFraction: null,
    prefillRows: null,
    prefillCpuMs: null,
    cpuPreemptionsPerStep: null,
    chosenRanks: null,
    device: dev.name,
    ...extra,
  });
  /** The library's refusal as a record's message; anything else is rethrown. */
  const refusal = (e: unknown): string => {
    if (!(e instanceof HciError)) throw e;
    return `${e.statusName}: ${e.message}`;
  };
  return {
    provenance: () =>
      collectGpuProvenance({ library: libraryVersion(), seed: config.seed }, dev.build),
    runPoint: async (p) => {
      const cpu = isCpu(p.placement);
      const key = instanceKey(p);
      if (current?.key !== key) {
        release();
        // host bandwidth first, while no compensation workers exist
        let hostThreads: number | null = null;
        if (cpu) {
          hostThreads = p.cpuThreads || defaultThreads(p.cpuFirstCore!);
          await hostRead(hostThreads, p.cpuFirstCore!);
        }
        const t0 = performance.now();
        try {
          const gpu = await GpuModel.synthetic(p.model, {
            seed: config.seed,
            bits: p.bits,
            groupSize: p.groupSize ?? 128,
            rank: p.placement === "none" ? 0 : p.rank,
            placement: p.placement,
            maxBatch: maxBatch(p),
            nCtx,
            memoryBudget: p.budgetGiB === null ? 0 : Math.round(p.budgetGiB * GiB),
            offload: p.offload,
            smLimit: p.gpuSms ?? 0,
            ...(cpu
              ? {
                cpuThreads: p.cpuThreads!,
                cpuFirstCore: p.cpuFirstCore!,
                factorDtype: p.factorDtype!,
                prefillComp: p.prefillComp!,
                rankController: p.rankController,
                controllerSlowdownPct: p.controllerSlowdownPct ?? 0,
              }
              : {}),
          });
          current = { key, gpu, error: null, seconds: (performance.now() - t0) / 1e3, hostThreads };
        } catch (e) {
          const error = refusal(e);
          current = { key, gpu: null, error, seconds: (performance.now() - t0) / 1e3, hostThreads };
        }
      }
      const c = current!;
      if (!c.gpu) return base({ status: "failed", error: c.error, createSeconds: c.seconds });
      const gpu = c.gpu;
      let r;
      try {
        r = await gpu.benchDecode({
          batch: p.batch,
          promptLen: p.promptLen,
          newTokens: p.newTokens,
          repeats: p.repeats,
          warmup: config.warmup,
          useGraph: p.useGraph,
          seed: config.seed,
        });
      } catch (e) {
        const error = refusal(e);
        release(); // its state is unknown after a failure
        return base({ status: "failed", error, createSeconds: c.seconds });
      }
      const s = gpu.compStats();
      const info = gpu.info;
      if (info.smCount !== bw.smCount) {
        throw new Error(
          `the model runs on ${info.smCount} SMs but the bandwidth was measured on ${bw.smCount}`,
        );
      }
      let hostGbps: number | null = null;
      let hostThreads: number | null = null;
      if (cpu) {
        hostThreads = s.cpuThreads > 0 ? s.cpuThreads : c.hostThreads;
        // measured before the model existed with the expected count; again if the library
        // chose another (then beside its idle workers)
        hostGbps = hostThreads === null ? null : await hostRead(hostThreads, p.cpuFirstCore!);
      }
      const steps = cpu && s.steps > 0 ? s.steps : null;
      const per = (x: number) => (steps === null ? null : x / steps);
      const gpuWait = per(s.gpuWaitMs);
      const factorBytesPerStep = cpu
        ? per(s.factorBytesRead)
        : p.placement === "gpu"
        ? factorBytesOfShapes(info, p.rank, 2)
        : null;
      const roof = p.batch * bw.hbmGbps * 1e9 / r.weightBytesPerStep;
      return base({
        createSeconds: c.seconds,
        decodeTokensPerS: r.decodeTokensPerS,
        decodeMsPerStep: r.decodeMsPerStep,
        decodeMsPerStepMin: r.decodeMsPerStepMin,
        decodeMsPerStepMax: r.decodeMsPerStepMax,
        prefillTokensPerS: r.prefillTokensPerS,
        weightBytesPerStep: r.weightBytesPerStep,
        streamedBytesPerStep: r.streamedBytesPerStep,
        pcieMsPerStep: r.streamedBytesPerStep > 0 ? r.pcieMsPerStep : null,
        peakDeviceBytes: r.peakDeviceBytes,
        deviceBytesNeeded: info.deviceBytesNeeded,
        residentLayers: info.residentLayers,
        offloadedLayers: info.offloadedLayers,
        graphUsed: r.graphUsed,
        hostReadGbps: hostGbps,
        hostReadThreads: hostGbps === null ? null : hostThreads,
        rooflineTokensPerS: roof,
        pctRoofline: 100 * r.decodeTokensPerS / roof,
        rooflineMsPerStep: 1e3 * r.weightBytesPerStep / (bw.hbmGbps * 1e9),
        cpuRooflineMs: cpu && factorBytesPerStep !== null && hostGbps
          ? 1e3 * factorBytesPerStep / (hostGbps * 1e9)
          : null,
        nPoints: cpu ? s.nPoints : null,
        cpuThreadsUsed: cpu ? s.cpuThreads : null,
        compSteps: cpu ? s.steps : null,
        cpuBusyMsPerStep: per(s.cpuBusyMs),
        gpuWaitMsPerStep: gpuWait,
        gpuBusyMsPerStep: r.decodeMsPerStep - (gpuWait ?? 0),
        bytesToHostPerStep: per(s.bytesToHost),
        bytesToDevicePerStep: per(s.bytesToDevice),
        factorBytesPerStep,
        factorBytesHost: cpu ? s.factorBytesHost : null,
        rankFraction: steps === null ? null : s.rankFraction,
        prefillRows: cpu ? s.prefillRows : null,
        prefillCpuMs: cpu ? s.prefillCpuMs : null,
        cpuPreemptionsPerStep: s.cpuPreemptions < 0 ? null : per(s.cpuPreemptions),
        chosenRanks: cpu && p.rankController
          ? (() => {
            const ranks = gpu.compRanks();
            return summarizeRanks(ranks.full, ranks.mean);
          })()
          : null,
      });
    },
    close: () => release(),
  };
}

// ---------------------------------------------------------------------------------------------
// Tables

const num = (digits: number) => (v: unknown) =>
  typeof v === "number" && Number.isFinite(v) ? v.toFixed(digits) : "";
const gib = (v: unknown) => typeof v === "number" ? (v / GiB).toFixed(2) : "";
const mb = (v: unknown) => typeof v === "number" ? (v / 1e6).toFixed(1) : "";
const kb = (v: unknown) => typeof v === "number" ? (v / 1e3).toFixed(1) : "";

const ok = (r: Rec) => r.metrics.status === "ok";

/** Same model and weights (and batch, budget) as `r`, any rank: the uncompensated point. */
function noneOf(records: Rec[], p: HeteroPoint): Rec | undefined {
  return records.find((n) =>
    ok(n) && n.point.placement === "none" && n.point.model === p.model &&
    n.point.bits === p.bits && n.point.groupSize === p.groupSize && n.point.batch === p.batch &&
    n.point.budgetGiB === p.budgetGiB && (p.budgetGiB === null || n.point.offload === p.offload)
  );
}

/** A row of the placement table (batch 1, no budget, controller off). */
export interface PlacementRow {
  model: string;
  weights: string;
  rank: number;
  /** CPU settings of the cpu-sync / cpu-async cells. */
  cpu: string;
  none: number | null;
  gpu: number | null;
  cpuSync: number | null;
  cpuAsync: number | null;
  /** cpu-async ÷ none. */
  asyncOverNone: number | null;
}

/** Decode tok/s at batch 1 without a budget: one row per (model, weights, rank, CPU settings). */
export function placementRows(records: Rec[]): PlacementRow[] {
  const rs = records.filter((r) =>
    ok(r) && r.point.batch === 1 && r.point.budgetGiB === null && !r.point.rankController
  );
  const rows: PlacementRow[] = [];
  const groups = new Map<string, Rec[]>();
  for (const r of rs) {
    const k = JSON.stringify([r.point.model, r.point.bits, r.point.groupSize]);
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  for (const g of groups.values()) {
    const p0 = g[0].point;
    const none = g.find((r) => r.point.placement === "none")?.metrics.decodeTokensPerS ?? null;
    const ranks = [
      ...new Set(g.filter((r) => r.point.placement !== "none").map((r) => r.point.rank)),
    ]
      .sort((a, b) => a - b);
    if (!ranks.length) {
      rows.push({
        model: p0.model,
        weights: weightsLabel(p0),
        rank: 0,
        cpu: "-",
        none,
        gpu: null,
        cpuSync: null,
        cpuAsync: null,
        asyncOverNone: null,
      });
    }
    for (const rank of ranks) {
      const at = g.filter((r) => r.point.rank === rank);
      const gpu = at.find((r) => r.point.placement === "gpu")?.metrics.decodeTokensPerS ?? null;
      const variants = [
        ...new Set(at.filter((r) => isCpu(r.point.placement)).map((r) => cpuVariant(r.point))),
      ];
      for (const cpu of variants.length ? variants : ["-"]) {
        const tps = (pl: GpuPlacement) =>
          at.find((r) => r.point.placement === pl && cpuVariant(r.point) === cpu)?.metrics
            .decodeTokensPerS ?? null;
        const cpuAsync = tps("cpu-async");
        rows.push({
          model: p0.model,
          weights: weightsLabel(p0),
          rank,
          cpu,
          none,
          gpu,
          cpuSync: tps("cpu-sync"),
          cpuAsync,
          asyncOverNone: cpuAsync !== null && none ? cpuAsync / none : null,
        });
      }
    }
  }
  return rows;
}

/** A row of the budget table. */
export interface BudgetRow {
  model: string;
  budgetGiB: number;
  weights: string;
  placement: GpuPlacement;
  rank: number;
  cpu: string;
  /** null when the point failed (see `error`). */
  tokensPerS: number | null;
  error: string | null;
  peakDeviceBytes: number | null;
  offloadedLayers: number | null;
  /** The fp16 offload baseline under the same budget (bits 0, placement none). */
  baselineTokensPerS: number | null;
  /** tokensPerS ÷ baselineTokensPerS. */
  overBaseline: number | null;
}

/** Under each budget: every point but the fp16 baseline, against the fp16 baseline. */
export function budgetRows(records: Rec[]): BudgetRow[] {
  const isBaseline = (r: Rec) => r.point.bits === 0 && r.point.placement === "none";
  const rows: BudgetRow[] = [];
  for (const r of records.filter((r) => r.point.budgetGiB !== null && !isBaseline(r))) {
    const base = records.find((b) =>
      ok(b) && isBaseline(b) && b.point.model === r.point.model &&
      b.point.budgetGiB === r.point.budgetGiB && b.point.batch === r.point.batch
    );
    const tps = ok(r) ? r.metrics.decodeTokensPerS : null;
    const baseTps = base?.metrics.decodeTokensPerS ?? null;
    rows.push({
      model: r.point.model,
      budgetGiB: r.point.budgetGiB!,
      weights: weightsLabel(r.point),
      placement: r.point.placement,
      rank: r.point.rank,
      cpu: cpuVariant(r.point) +
        (r.point.rankController ? `, controller${controllerBudget(r.point)}` : ""),
      tokensPerS: tps,
      error: ok(r) ? null : r.metrics.error,
      peakDeviceBytes: r.metrics.peakDeviceBytes,
      offloadedLayers: r.metrics.offloadedLayers,
      baselineTokensPerS: baseTps,
      overBaseline: tps !== null && baseTps ? tps / baseTps : null,
    });
  }
  return rows;
}

/** A row of the controller table. */
export interface ControllerRow {
  model: string;
  weights: string;
  rank: number;
  batch: number;
  cpuThreads: string;
  /** `off`, `on` (the library's default budget), `on, 8%`, `on, ranks only`. */
  controller: string;
  tokensPerS: number | null;
  overNone: number | null;
  rankFraction: number | null;
  meanRank: number | null;
  gpuWaitMsPerStep: number | null;
  cpuBusyMsPerStep: number | null;
}

/**
 * cpu-async without a budget, for each (model, weights, rank, batch) where the controller ran:
 * CPU threads × controller off/on.
 */
export function controllerRows(records: Rec[]): ControllerRow[] {
  const rs = records.filter((r) =>
    ok(r) && r.point.placement === "cpu-async" && r.point.budgetGiB === null
  );
  const groupKey = (r: Rec) =>
    JSON.stringify([r.point.model, r.point.bits, r.point.groupSize, r.point.rank, r.point.batch]);
  const withController = new Set(rs.filter((r) => r.point.rankController).map(groupKey));
  return rs.filter((r) => withController.has(groupKey(r)))
    .sort((a, b) =>
      groupKey(a).localeCompare(groupKey(b)) ||
      (a.point.cpuThreads ?? 0) - (b.point.cpuThreads ?? 0) ||
      Number(a.point.rankController) - Number(b.point.rankController) ||
      (a.point.controllerSlowdownPct ?? 0) - (b.point.controllerSlowdownPct ?? 0)
    )
    .map((r) => {
      const none = noneOf(records, r.point)?.metrics.decodeTokensPerS ?? null;
      const tps = r.metrics.decodeTokensPerS;
      return {
        model: r.point.model,
        weights: weightsLabel(r.point),
        rank: r.point.rank,
        batch: r.point.batch,
        cpuThreads: r.point.cpuThreads
          ? String(r.point.cpuThreads)
          : r.metrics.cpuThreadsUsed === null
          ? "default"
          : `default (${r.metrics.cpuThreadsUsed})`,
        controller: r.point.rankController ? controllerLabel(r.point) : "off",
        tokensPerS: tps,
        overNone: tps !== null && none ? tps / none : null,
        rankFraction: r.metrics.rankFraction,
        meanRank: r.metrics.chosenRanks?.mean ?? null,
        gpuWaitMsPerStep: r.metrics.gpuWaitMsPerStep,
        cpuBusyMsPerStep: r.metrics.cpuBusyMsPerStep,
      };
    });
}

const tpsCell = num(1);
const ratio = (v: unknown) => typeof v === "number" && Number.isFinite(v) ? `${v.toFixed(2)}x` : "";

const PLACEMENT_COLUMNS: Column<PlacementRow>[] = [
  { key: "model", header: "model" },
  { key: "weights", header: "weights" },
  { key: "rank", header: "rank", align: "right", format: (v) => (v ? String(v) : "-") },
  { key: "cpu", header: "CPU" },
  { key: "none", header: "none", format: tpsCell, align: "right" },
  { key: "gpu", header: "gpu", format: tpsCell, align: "right" },
  { key: "cpuSync", header: "cpu-sync", format: tpsCell, align: "right" },
  { key: "cpuAsync", header: "cpu-async", format: tpsCell, align: "right" },
  { key: "asyncOverNone", header: "cpu-async ÷ none", format: ratio, align: "right" },
];

const BUDGET_COLUMNS: Column<BudgetRow>[] = [
  { key: "model", header: "model" },
  { key: "budgetGiB", header: "budget GiB", align: "right" },
  { key: "weights", header: "weights" },
  { key: "placement", header: "placement" },
  { key: "rank", header: "rank", align: "right", format: (v) => (v ? String(v) : "-") },
  { key: "cpu", header: "CPU" },
  {
    key: "tokensPerS",
    header: "tok/s",
    align: "right",
    format: (v, r) => (r.error !== null ? `failed: ${r.error}` : tpsCell(v)),
  },
  { key: "peakDeviceBytes", header: "peak GiB", format: gib, align: "right" },
  { key: "offloadedLayers", header: "streamed blocks", align: "right" },
  { key: "baselineTokensPerS", header: "fp16 offload tok/s", format: tpsCell, align: "right" },
  { key: "overBaseline", header: "÷ fp16 offload", format: ratio, align: "right" },
];

const CONTROLLER_COLUMNS: Column<ControllerRow>[] = [
  { key: "model", header: "model" },
  { key: "weights", header: "weights" },
  { key: "rank", header: "rank", align: "right" },
  { key: "batch", header: "batch", align: "right" },
  { key: "cpuThreads", header: "CPU threads", align: "right" },
  { key: "controller", header: "controller" },
  { key: "tokensPerS", header: "tok/s", format: tpsCell, align: "right" },
  { key: "overNone", header: "÷ none", format: ratio, align: "right" },
  { key: "rankFraction", header: "rank fraction", format: num(3), align: "right" },
  { key: "meanRank", header: "mean rank", format: num(1), align: "right" },
  { key: "gpuWaitMsPerStep", header: "GPU wait ms/step", format: num(3), align: "right" },
  { key: "cpuBusyMsPerStep", header: "CPU busy ms/step", format: num(3), align: "right" },
];

/** Every record, one row each (table.csv and the last table of table.md). */
const RECORD_COLUMNS: Column<Rec>[] = [
  { key: "point.model", header: "model" },
  { key: "point.bits", header: "weights", format: (_v, r) => weightsLabel(r.point) },
  { key: "point.placement", header: "placement" },
  { key: "point.rank", header: "rank", align: "right" },
  { key: "point.batch", header: "batch", align: "right" },
  { key: "point.budgetGiB", header: "budget GiB", format: (v) => (v === null ? "-" : String(v)) },
  { key: "point.cpuThreads", header: "CPU", format: (_v, r) => cpuVariant(r.point) },
  {
    key: "point.rankController",
    header: "controller",
    format: (v, r) => (v ? controllerLabel(r.point) : ""),
  },
  { key: "metrics.decodeTokensPerS", header: "decode tok/s", format: num(1), align: "right" },
  { key: "metrics.decodeMsPerStep", header: "ms/step", format: num(3), align: "right" },
  { key: "metrics.decodeMsPerStepMin", header: "min", format: num(3), align: "right" },
  { key: "metrics.decodeMsPerStepMax", header: "max", format: num(3), align: "right" },
  { key: "metrics.rooflineMsPerStep", header: "HBM roofline ms", format: num(3), align: "right" },
  { key: "metrics.pctRoofline", header: "% roofline", format: num(1), align: "right" },
  { key: "metrics.prefillTokensPerS", header: "prefill tok/s", format: num(0), align: "right" },
  { key: "metrics.gpuBusyMsPerStep", header: "GPU busy ms/step", format: num(3), align: "right" },
  { key: "metrics.gpuWaitMsPerStep", header: "GPU wait ms/step", format: num(3), align: "right" },
  { key: "metrics.cpuBusyMsPerStep", header: "CPU busy ms/step", format: num(3), align: "right" },
  {
    key: "metrics.cpuPreemptionsPerStep",
    header: "worker preemptions/step",
    format: num(2),
    align: "right",
  },
  { key: "metrics.cpuRooflineMs", header: "CPU roofline ms", format: num(3), align: "right" },
  { key: "metrics.factorBytesPerStep", header: "factor MB/step", format: mb, align: "right" },
  { key: "metrics.bytesToHostPerStep", header: "to host kB/step", format: kb, align: "right" },
  { key: "metrics.bytesToDevicePerStep", header: "to device kB/step", format: kb, align: "right" },
  { key: "metrics.rankFraction", header: "rank fraction", format: num(3), align: "right" },
  { key: "metrics.peakDeviceBytes", header: "peak GiB", format: gib, align: "right" },
  { key: "metrics.offloadedLayers", header: "streamed blocks", align: "right" },
  {
    key: "metrics.status",
    header: "status",
    format: (v, r) => (v === "ok" ? "ok" : `failed: ${r.metrics.error}`),
  },
];

/** Every field of every record, for table.csv. */
const CSV_COLUMNS: Column<Rec>[] = [
  ...[
    "model",
    "bits",
    "groupSize",
    "placement",
    "rank",
    "batch",
    "budgetGiB",
    "offload",
    "cpuThreads",
    "cpuFirstCore",
    "factorDtype",
    "prefillComp",
    "rankController",
    "promptLen",
    "newTokens",
    "repeats",
  ].map((k) => ({ key: `point.${k}`, header: k })),
  ...[
    "status",
    "error",
    "createSeconds",
    "decodeTokensPerS",
    "decodeMsPerStep",
    "decodeMsPerStepMin",
    "decodeMsPerStepMax",
    "prefillTokensPerS",
    "weightBytesPerStep",
    "streamedBytesPerStep",
    "pcieMsPerStep",
    "peakDeviceBytes",
    "deviceBytesNeeded",
    "residentLayers",
    "offloadedLayers",
    "graphUsed",
    "hbmGbps",
    "h2dGbps",
    "gpuSmCount",
    "hostReadGbps",
    "hostReadThreads",
    "rooflineTokensPerS",
    "pctRoofline",
    "rooflineMsPerStep",
    "cpuRooflineMs",
    "nPoints",
    "cpuThreadsUsed",
    "compSteps",
    "cpuBusyMsPerStep",
    "gpuWaitMsPerStep",
    "gpuBusyMsPerStep",
    "bytesToHostPerStep",
    "bytesToDevicePerStep",
    "factorBytesPerStep",
    "factorBytesHost",
    "rankFraction",
    "prefillRows",
    "prefillCpuMs",
    "cpuPreemptionsPerStep",
  ].map((k) => ({ key: `metrics.${k}`, header: k })),
  {
    key: "metrics.chosenRanks",
    header: "chosenRanksMean",
    format: (v) => v ? String((v as ChosenRanks).mean) : "",
  },
];

/** Summary lines: bandwidths measured, failures. */
export function heteroSummary(records: Rec[]): string[] {
  const lines: string[] = [];
  const first = records.find(ok)?.metrics ?? records[0]?.metrics;
  if (first) {
    const sms = first.gpuSmCount;
    const partition = records.find((r) => r.point.gpuSms)?.point.gpuSms;
    lines.push(
      `Measured on ${first.device}${
        partition && sms
          ? ` restricted to ${sms} SMs (a green-context partition of at least ${partition}: ` +
            `an emulated smaller GPU)`
          : ""
      }: HBM ${first.hbmGbps.toFixed(0)} GB/s (device copy, read + ` +
        `write), pinned H2D ${first.h2dGbps.toFixed(1)} GB/s. HBM roofline = weight bytes per ` +
        `step / HBM bandwidth (the backbone's; factors not included).`,
    );
  }
  const host = new Map<number, number>();
  for (const r of records) {
    if (r.metrics.hostReadGbps !== null && r.metrics.hostReadThreads !== null) {
      host.set(r.metrics.hostReadThreads, r.metrics.hostReadGbps);
    }
  }
  if (host.size) {
    lines.push(
      `Host read bandwidth (1 GiB streamed, same pinning): ${
        [...host].sort((a, b) => a[0] - b[0]).map(([t, g]) => `${t} threads ${g.toFixed(1)} GB/s`)
          .join(", ")
      }. CPU roofline = factor bytes per step / that bandwidth.`,
    );
  }
  for (const f of records.filter((r) => !ok(r))) {
    const p = f.point;
    lines.push(
      `${p.model} ${weightsLabel(p)} ${p.placement}${p.rank ? ` rank ${p.rank}` : ""}` +
        `${p.budgetGiB === null ? "" : ` under ${p.budgetGiB} GiB`}: failed after ${
          (f.metrics.createSeconds * 1e3).toFixed(0)
        } ms: "${f.metrics.error}"`,
    );
  }
  return lines;
}

/** The Markdown report: placement table, budget table, controller table, every record. */
export function heteroTables(records: Rec[]): string {
  const p = records[0]?.point;
  const out: string[] = [];
  const setting = p
    ? `prompt ${p.promptLen}, ${p.useGraph ? "CUDA-graph decode, " : ""}median of repeats`
    : "";
  const placement = placementRows(records);
  if (placement.length) {
    out.push(
      `### Batch-1 decode tokens/s by placement of the compensation (${setting})\n`,
      toMarkdown(placement, PLACEMENT_COLUMNS),
    );
  }
  const budget = budgetRows(records);
  if (budget.length) {
    out.push(
      `### Under a GPU memory budget: compensated quantized model vs fp16 weights streamed ` +
        `from host memory\n`,
      toMarkdown(budget, BUDGET_COLUMNS),
    );
  }
  const controller = controllerRows(records);
  if (controller.length) {
    out.push(
      `### Run-time rank controller (cpu-async): CPU threads × controller\n`,
      toMarkdown(controller, CONTROLLER_COLUMNS),
    );
  }
  out.push(`### Every point\n`, toMarkdown(records, RECORD_COLUMNS));
  const summary = heteroSummary(records);
  if (summary.length) out.push(summary.map((l) => `- ${l}`).join("\n") + "\n");
  return out.join("\n");
}

/** Decode tok/s against rank, one line per (model, weights, placement, CPU settings). */
export function heteroRankFigure(records: Rec[]): NamedFigure {
  const rs = records.filter((r) => ok(r) && r.point.batch === 1 && r.point.budgetGiB === null);
  // short trace names (the legend takes the plot's width): the model without "synthetic:", the
  // weights only where they differ, the CPU settings without the defaults' words
  const formats = new Set(rs.map((r) => weightsLabel(r.point)));
  const head = (p: HeteroPoint) =>
    p.model.replace(/^synthetic:/, "") + (formats.size > 1 ? ` ${weightsLabel(p)}` : "");
  const groups = new Map<string, Rec[]>();
  for (const r of rs.filter((r) => r.point.placement !== "none")) {
    const cpu = cpuVariant(r.point).replace(/^default threads(, )?/, "").replace(
      "prefill comp on GPU",
      "GPU prefill",
    );
    // controller points at the rank of the factors held (it uses less)
    const k = `${head(r.point)} ${r.point.placement}` +
      (r.point.rankController ? ` + controller${controllerBudget(r.point)}` : "") +
      (cpu === "-" || cpu === "" ? "" : ` (${cpu})`);
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  const series: Series[] = [];
  for (const [name, g] of groups) {
    g.sort((a, b) => a.point.rank - b.point.rank);
    series.push({
      name,
      x: g.map((r) => r.point.rank),
      y: g.map((r) => r.metrics.decodeTokensPerS),
    });
  }
  // the uncompensated backbone as a flat dashed line over the ranks measured with it
  for (const n of rs.filter((r) => r.point.placement === "none")) {
    const ranks = [
      ...new Set(
        rs.filter((r) =>
          r.point.placement !== "none" && r.point.model === n.point.model &&
          r.point.bits === n.point.bits && r.point.groupSize === n.point.groupSize
        ).map((r) => r.point.rank),
      ),
    ].sort((a, b) => a - b);
    if (ranks.length < 1) continue;
    const xs = ranks.length === 1 ? [ranks[0], ranks[0]] : [ranks[0], ranks.at(-1)!];
    series.push({
      name: `${head(n.point)} none`,
      x: xs,
      y: [n.metrics.decodeTokensPerS, n.metrics.decodeTokensPerS],
      style: { mode: "lines", line: { dash: "dash" } },
    });
  }
  return {
    name: "tokens-vs-rank",
    figure: lineFigure({
      title: "Batch-1 decode throughput vs compensation rank" +
        (formats.size === 1 ? `, ${[...formats][0]}` : "") + " (dashed: none)",
      xTitle: "rank of every linear's compensation (log scale)",
      yTitle: "decode tokens/s",
      logX: true,
      series,
    }),
  };
}

/** Writes table.md, table.csv and figure.json / figure.html. */
export async function writeHeteroReport(records: Rec[], outDir: string): Promise<void> {
  await Deno.writeTextFile(join(outDir, "table.md"), heteroTables(records));
  await Deno.writeTextFile(join(outDir, "table.csv"), toCsv(records, CSV_COLUMNS));
  // figures are drawn by `deno task figures` (the GPU machine has no renderer)
}

/** The experiment's declaration. */
export const heteroThroughput: Experiment<HeteroConfig, HeteroPoint, HeteroMetrics> = {
  name: EXPERIMENT,
  summary: "GPU decode tok/s with low-rank compensation on the GPU, the CPU, or overlapped",
  schema: HeteroConfigSchema,
  points: heteroPoints,
  open: openHetero,
  describePoint: (p) =>
    `${p.model} ${weightsLabel(p)} ${p.placement}` + (p.rank ? ` rank ${p.rank}` : "") +
    ` batch ${p.batch}` + (p.budgetGiB === null ? "" : ` budget ${p.budgetGiB} GiB`) +
    (isCpu(p.placement) ? ` ${cpuVariant(p)}` : "") +
    (p.rankController ? ` controller${controllerBudget(p)}` : ""),
  tables: heteroTables,
  writeReport: writeHeteroReport,
  figures: (records) => Promise.resolve([heteroRankFigure(records)]),
  reproducibleMetrics: [
    "status",
    "weightBytesPerStep",
    "streamedBytesPerStep",
    "offloadedLayers",
    "nPoints",
    "factorBytesHost",
  ],
};
