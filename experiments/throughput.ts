/**
 * Experiment `throughput`: decode and prefill speed of GPU models (synthetic checkpoints at real
 * scale, or loaded ones) against the memory-bandwidth roofline measured in the same run, under
 * optional GPU memory budgets (fp16 with block offloading vs the packed backbone), with Hugging
 * Face transformers' fp16 `generate` as a peer (bench/hf_generate.py).
 *
 * Each record is one (model, engine, format, budget, batch) point. Metrics include the measured
 * HBM bandwidth (device-to-device copy, bytes read + written) and pinned host->device bandwidth,
 * the weight bytes one decode step reads, and from them the roofline:
 * `rooflineTokensPerS = batch × HBM bandwidth / weight bytes per step` and `pctRoofline`, and the
 * same with the KV cache's reads added (`rooflineKvTokensPerS`, `pctRooflineKv`: at long contexts
 * a step reads gigabytes of cache besides the weights). For
 * streamed (offloaded) points: PCIe time per step measured with CUDA events against
 * `streamed bytes / pinned bandwidth`. A point whose model does not fit its budget is recorded as
 * `status: "failed"` with the library's message (the failure comes before any work).
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
  gpuUnavailableReason,
  measureBandwidth,
} from "../ffi/gpu.ts";
import { HciError, libraryVersion, Model, Status } from "../ffi/mod.ts";
import { lineFigure, type PlotlyFigure } from "../results/figure.ts";
import { collectGpuProvenance } from "./gpu_provenance.ts";
import { type Column, toCsv, toMarkdown } from "../results/table.ts";
import type { Experiment, NamedFigure, PointRunner } from "./experiment.ts";
import type { SweepRecord } from "./runner.ts";

/** Experiment name, as recorded in every record. */
export const EXPERIMENT = "throughput";

/** Weight formats: fp16, bf16, or packed `w<bits>g<group>` (group -1 = per row). */
export const FormatSchema = z.string().regex(
  /^(fp16|bf16|w[2348]g(32|64|128|-1))$/,
  "expected fp16, bf16 or w<2|3|4|8>g<32|64|128|-1>",
);

/** One run of a config: a format (and engine, budget) measured at some batch sizes. */
export const RunSchema = z.strictObject({
  /** `hcinfer` (this library) or `hf` (transformers fp16 generate, batch as given). */
  engine: z.enum(["hcinfer", "hf"]).default("hcinfer"),
  format: FormatSchema.default("fp16"),
  batches: z.array(z.int().min(1).max(16)).min(1).default([1]),
  /** GPU memory cap in GiB (null = none). */
  budgetGiB: z.number().positive().nullable().default(null),
  /** Stream blocks that do not fit the budget from pinned host memory. */
  offload: z.boolean().default(true),
  /**
   * Prompt lengths of this run (default: the config's `promptLen`): decode against context
   * length. Each length gets its own model instance, with a KV cache for that context.
   */
  promptLens: z.array(z.int().min(1)).min(1).optional(),
  /** Per-run overrides of the config's defaults (offloaded runs are slow: fewer tokens). */
  newTokens: z.int().min(1).optional(),
  repeats: z.int().min(1).optional(),
});

/** The configuration. */
export const ThroughputConfigSchema = z.strictObject({
  /** `synthetic:<name>` or a checkpoint folder. */
  models: z.array(z.string().min(1)).min(1),
  runs: z.array(RunSchema).min(1),
  promptLen: z.int().min(1).default(128),
  newTokens: z.int().min(1).default(128),
  repeats: z.int().min(1).default(5),
  warmup: z.int().min(0).default(1),
  useGraph: z.boolean().default(true),
  /** Buffer size of the bandwidth measurement (bytes). */
  bandwidthBytes: z.int().min(1 << 20).default(2 ** 31),
  /** Python with torch + transformers, for engine `hf`. */
  python: z.string().default("python3"),
  seed: z.int().min(0).default(0),
  /**
   * Run every hcinfer model, and the bandwidth measurement, on a partition of at least this many
   * of the GPU's SMs (a CUDA green context, `GpuOptions.smLimit`), emulating a smaller GPU; 0 =
   * every SM. transformers runs (engine `hf`) cannot be confined so and are refused with it.
   */
  gpuSms: z.int().min(0).default(0),
}).superRefine((config, ctx) => {
  if (config.gpuSms > 0 && config.runs.some((r) => r.engine === "hf")) {
    ctx.addIssue({
      code: "custom",
      path: ["gpuSms"],
      input: config.gpuSms,
      message: "transformers (engine hf) runs on every SM: leave it out of an SM-partition config",
    });
  }
});
/** The configuration (input form). */
export type ThroughputConfigInput = z.input<typeof ThroughputConfigSchema>;
/** The configuration (parsed). */
export type ThroughputConfig = z.output<typeof ThroughputConfigSchema>;

/** One point. */
export interface ThroughputPoint {
  model: string;
  engine: "hcinfer" | "hf";
  format: string;
  batch: number;
  budgetGiB: number | null;
  offload: boolean;
  promptLen: number;
  newTokens: number;
  repeats: number;
  useGraph: boolean;
  /** On an SM partition of at least this many SMs (absent: every SM). */
  gpuSms?: number;
}

/** What a point measures (null where it does not apply or the point failed). */
export interface ThroughputMetrics {
  status: "ok" | "failed";
  /** The library's message when the model could not be created. */
  error: string | null;
  /** Seconds from asking for the model to having it (or to the failure). */
  createSeconds: number;
  decodeTokensPerS: number | null;
  decodeMsPerStep: number | null;
  decodeMsPerStepMin: number | null;
  decodeMsPerStepMax: number | null;
  prefillTokensPerS: number | null;
  weightBytesPerStep: number | null;
  kvBytesPerStep: number | null;
  streamedBytesPerStep: number | null;
  /** Measured in this run. */
  hbmGbps: number;
  hbmReadGbps: number;
  h2dGbps: number;
  /** SMs the models and the bandwidth measurement ran on (absent in records before it existed). */
  gpuSmCount?: number;
  /** batch × hbmGbps / weight bytes per step. */
  rooflineTokensPerS: number | null;
  pctRoofline: number | null;
  /** batch × hbmGbps / (weight + KV-cache bytes per step) (absent in records before it existed). */
  rooflineKvTokensPerS?: number | null;
  pctRooflineKv?: number | null;
  /** Measured PCIe time per step, and streamed bytes / measured pinned bandwidth. */
  pcieMsPerStep: number | null;
  pciePredictedMs: number | null;
  /** Predicted step time: max(streamed / pinned bw, weight bytes / HBM bw). */
  predictedMsPerStep: number | null;
  peakDeviceBytes: number | null;
  deviceBytesNeeded: number | null;
  residentLayers: number | null;
  offloadedLayers: number | null;
  graphUsed: boolean | null;
  gemm: string | null;
  device: string;
}

/**
 * The points of a config: models × runs × prompt lengths × batches, in that order (models are
 * reused).
 */
export function throughputPoints(config: ThroughputConfig): ThroughputPoint[] {
  const out: ThroughputPoint[] = [];
  for (const model of config.models) {
    for (const run of config.runs) {
      for (const promptLen of run.promptLens ?? [config.promptLen]) {
        for (const batch of run.batches) {
          out.push({
            model,
            engine: run.engine,
            format: run.engine === "hf" ? "fp16" : run.format,
            batch,
            budgetGiB: run.budgetGiB,
            offload: run.offload,
            promptLen,
            newTokens: run.newTokens ?? config.newTokens,
            repeats: run.repeats ?? config.repeats,
            useGraph: config.useGraph,
            ...(config.gpuSms ? { gpuSms: config.gpuSms } : {}),
          });
        }
      }
    }
  }
  return out;
}

/**
 * Positions of the KV cache of a point's model instance: its prompt and the most new tokens of
 * any run, rounded up to 64 (the instances of points that differ only in batch are shared).
 */
export function contextFor(config: ThroughputConfig, p: ThroughputPoint): number {
  const newTokens = Math.max(...config.runs.map((r) => r.newTokens ?? config.newTokens));
  return Math.ceil((p.promptLen + newTokens) / 64) * 64;
}

/** bits and group size of a format (bits 0 = float). */
export function parseFormat(
  format: string,
): { bits: number; groupSize: number; dtype: "fp16" | "bf16" } {
  if (format === "fp16" || format === "bf16") return { bits: 0, groupSize: 128, dtype: format };
  const m = /^w(\d)g(-?\d+)$/.exec(format);
  if (!m) throw new Error(`bad format ${format}`);
  return { bits: Number(m[1]), groupSize: Number(m[2]), dtype: "fp16" };
}

const GiB = 2 ** 30;

/** Result of bench/hf_generate.py. */
interface HfResult {
  decode_tokens_per_s: number;
  decode_ms_per_step: number;
  prefill_tokens_per_s: number;
  weight_bytes: number;
  peak_bytes: number;
  transformers: string;
  torch: string;
}

async function runHf(config: ThroughputConfig, p: ThroughputPoint): Promise<HfResult> {
  const script = new URL("../bench/hf_generate.py", import.meta.url).pathname;
  const name = p.model.replace(/^synthetic:/, "");
  const out = await new Deno.Command(config.python, {
    args: [
      script,
      "--model",
      name,
      "--batch",
      String(p.batch),
      "--prompt",
      String(p.promptLen),
      "--new",
      String(p.newTokens),
      "--repeats",
      String(Math.min(p.repeats, 3)),
      "--seed",
      String(config.seed),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (out.code !== 0) {
    const err = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-5).join(" | ");
    throw new Error(`bench/hf_generate.py failed (exit ${out.code}): ${err}`);
  }
  return JSON.parse(text.split("\n").at(-1)!);
}

/** Opens the runner: measures bandwidth once, keeps one GPU model open between points. */
export async function openThroughput(
  config: ThroughputConfig,
): Promise<PointRunner<ThroughputPoint, ThroughputMetrics>> {
  const reason = gpuUnavailableReason();
  if (reason !== null) throw new Error(`throughput needs a GPU: ${reason}`);
  const bw: GpuBandwidth = await measureBandwidth({
    bytes: config.bandwidthBytes,
    repeats: 10,
    smLimit: config.gpuSms,
  });
  const dev = deviceInfo();
  let current: {
    key: string;
    gpu: GpuModel | null;
    info: GpuModelInfo | null;
    error: string | null;
    seconds: number;
  } | null = null;
  let loaded: Model | null = null;
  // sequences held (KV cache) = the largest batch of the points sharing a model instance, so a
  // batch-1 budget point does not pay for the cache of batch 16
  const maxBatch = (p: ThroughputPoint) =>
    Math.max(
      ...throughputPoints(config).filter((q) =>
        q.engine === "hcinfer" && q.model === p.model && q.format === p.format &&
        q.budgetGiB === p.budgetGiB && q.offload === p.offload && q.promptLen === p.promptLen
      ).map((q) => q.batch),
    );
  const release = () => {
    current?.gpu?.close();
    current = null;
  };
  const base = (extra: Partial<ThroughputMetrics>): ThroughputMetrics => ({
    status: "ok",
    error: null,
    createSeconds: 0,
    decodeTokensPerS: null,
    decodeMsPerStep: null,
    decodeMsPerStepMin: null,
    decodeMsPerStepMax: null,
    prefillTokensPerS: null,
    weightBytesPerStep: null,
    kvBytesPerStep: null,
    streamedBytesPerStep: null,
    hbmGbps: bw.hbmGbps,
    hbmReadGbps: bw.hbmReadGbps,
    h2dGbps: bw.h2dPinnedGbps,
    gpuSmCount: bw.smCount,
    rooflineTokensPerS: null,
    pctRoofline: null,
    rooflineKvTokensPerS: null,
    pctRooflineKv: null,
    pcieMsPerStep: null,
    pciePredictedMs: null,
    predictedMsPerStep: null,
    peakDeviceBytes: null,
    deviceBytesNeeded: null,
    residentLayers: null,
    offloadedLayers: null,
    graphUsed: null,
    gemm: null,
    device: dev.name,
    ...extra,
  });
  return {
    provenance: () =>
      collectGpuProvenance({
        files: config.models.filter((m) => !m.startsWith("synthetic:")),
        library: libraryVersion(),
        seed: config.seed,
      }, dev.build),
    runPoint: async (p) => {
      if (p.engine === "hf") {
        release();
        const r = await runHf(config, p);
        const roof = p.batch * bw.hbmGbps * 1e9 / r.weight_bytes;
        return base({
          decodeTokensPerS: r.decode_tokens_per_s,
          decodeMsPerStep: r.decode_ms_per_step,
          prefillTokensPerS: r.prefill_tokens_per_s,
          weightBytesPerStep: r.weight_bytes,
          rooflineTokensPerS: roof,
          pctRoofline: 100 * r.decode_tokens_per_s / roof,
          predictedMsPerStep: 1e3 * r.weight_bytes / (bw.hbmGbps * 1e9),
          peakDeviceBytes: r.peak_bytes,
          gemm: `transformers ${r.transformers}, torch ${r.torch}`,
        });
      }
      const f = parseFormat(p.format);
      const key = JSON.stringify([p.model, p.format, p.budgetGiB, p.offload, p.promptLen]);
      if (current?.key !== key) {
        release();
        const options = {
          dtype: f.dtype,
          maxBatch: maxBatch(p),
          nCtx: contextFor(config, p),
          memoryBudget: p.budgetGiB === null ? 0 : Math.round(p.budgetGiB * GiB),
          offload: p.offload,
          smLimit: p.gpuSms ?? 0,
        };
        const t0 = performance.now();
        try {
          let gpu: GpuModel;
          if (p.model.startsWith("synthetic:")) {
            gpu = await GpuModel.synthetic(p.model, {
              ...options,
              seed: config.seed,
              bits: f.bits,
              groupSize: f.groupSize,
            });
          } else {
            loaded ??= await Model.load(p.model);
            if (f.bits) {
              await loaded.quantize({ bits: f.bits, groupSize: f.groupSize, maxRank: 0 });
            }
            gpu = await GpuModel.fromModel(loaded, {
              ...options,
              weights: f.bits ? "packed" : "original",
            });
          }
          current = {
            key,
            gpu,
            info: gpu.info,
            error: null,
            seconds: (performance.now() - t0) / 1e3,
          };
        } catch (e) {
          if (!(e instanceof HciError) || e.status !== Status.OutOfMemory) {
            throw e;
          }
          current = {
            key,
            gpu: null,
            info: null,
            error: e.message,
            seconds: (performance.now() - t0) / 1e3,
          };
        }
      }
      const c = current!;
      if (!c.gpu || !c.info) {
        return base({ status: "failed", error: c.error, createSeconds: c.seconds });
      }
      const r = await c.gpu.benchDecode({
        batch: p.batch,
        promptLen: p.promptLen,
        newTokens: p.newTokens,
        repeats: p.repeats,
        warmup: config.warmup,
        useGraph: p.useGraph,
        seed: config.seed,
      });
      const roof = p.batch * bw.hbmGbps * 1e9 / r.weightBytesPerStep;
      const roofKv = p.batch * bw.hbmGbps * 1e9 / (r.weightBytesPerStep + r.kvBytesPerStep);
      const pciePred = r.streamedBytesPerStep > 0
        ? 1e3 * r.streamedBytesPerStep / (bw.h2dPinnedGbps * 1e9)
        : null;
      return base({
        createSeconds: c.seconds,
        decodeTokensPerS: r.decodeTokensPerS,
        decodeMsPerStep: r.decodeMsPerStep,
        decodeMsPerStepMin: r.decodeMsPerStepMin,
        decodeMsPerStepMax: r.decodeMsPerStepMax,
        prefillTokensPerS: r.prefillTokensPerS,
        weightBytesPerStep: r.weightBytesPerStep,
        kvBytesPerStep: r.kvBytesPerStep,
        streamedBytesPerStep: r.streamedBytesPerStep,
        rooflineTokensPerS: roof,
        pctRoofline: 100 * r.decodeTokensPerS / roof,
        rooflineKvTokensPerS: roofKv,
        pctRooflineKv: 100 * r.decodeTokensPerS / roofKv,
        pcieMsPerStep: r.streamedBytesPerStep > 0 ? r.pcieMsPerStep : null,
        pciePredictedMs: pciePred,
        predictedMsPerStep: Math.max(
          pciePred ?? 0,
          1e3 * r.weightBytesPerStep / (bw.hbmGbps * 1e9),
        ),
        peakDeviceBytes: r.peakDeviceBytes,
        deviceBytesNeeded: c.info.deviceBytesNeeded,
        residentLayers: c.info.residentLayers,
        offloadedLayers: c.info.offloadedLayers,
        graphUsed: r.graphUsed,
        gemm: c.info.gemm,
      });
    },
    close: () => {
      release();
      loaded?.close();
    },
  };
}

const num = (digits: number) => (v: unknown) =>
  typeof v === "number" && Number.isFinite(v) ? v.toFixed(digits) : "";
const gib = (v: unknown) => typeof v === "number" ? (v / GiB).toFixed(2) : "";
const gb = (v: unknown) => typeof v === "number" && v > 0 ? (v / 1e9).toFixed(2) : "";

type Rec = SweepRecord<ThroughputPoint, ThroughputMetrics>;

const COLUMNS: Column<Rec>[] = [
  { key: "point.model", header: "model" },
  { key: "point.engine", header: "engine" },
  { key: "point.format", header: "format" },
  {
    key: "point.budgetGiB",
    header: "budget GiB",
    format: (v, r) =>
      (v === null ? "-" : String(v)) + (v !== null && !r.point.offload ? " (no offload)" : ""),
  },
  { key: "point.batch", header: "batch", align: "right" },
  { key: "point.promptLen", header: "prompt", align: "right" },
  { key: "metrics.decodeTokensPerS", header: "decode tok/s", format: num(1), align: "right" },
  { key: "metrics.decodeMsPerStep", header: "ms/step", format: num(3), align: "right" },
  { key: "metrics.rooflineTokensPerS", header: "roofline tok/s", format: num(1), align: "right" },
  { key: "metrics.pctRoofline", header: "% roofline", format: num(1), align: "right" },
  { key: "metrics.pctRooflineKv", header: "% roofline w+KV", format: num(1), align: "right" },
  { key: "metrics.prefillTokensPerS", header: "prefill tok/s", format: num(0), align: "right" },
  { key: "metrics.weightBytesPerStep", header: "weight GB/step", format: gb, align: "right" },
  { key: "metrics.streamedBytesPerStep", header: "streamed GB/step", format: gb, align: "right" },
  { key: "metrics.pcieMsPerStep", header: "PCIe ms/step", format: num(2), align: "right" },
  { key: "metrics.pciePredictedMs", header: "bytes/pinned bw ms", format: num(2), align: "right" },
  { key: "metrics.peakDeviceBytes", header: "peak GiB", format: gib, align: "right" },
  { key: "metrics.offloadedLayers", header: "streamed blocks", align: "right" },
  {
    key: "metrics.status",
    header: "status",
    format: (v, r) => v === "ok" ? "ok" : `failed: ${r.metrics.error}`,
  },
];

/** Summary lines: HF ratio, offload PCIe agreement, W4 vs offloaded fp16. */
export function throughputSummary(records: Rec[]): string[] {
  const lines: string[] = [];
  const ok = records.filter((r) => r.metrics.status === "ok");
  const find = (pred: (r: Rec) => boolean) => ok.find(pred);
  for (const model of new Set(records.map((r) => r.point.model))) {
    const mine = find((r) =>
      r.point.model === model && r.point.engine === "hcinfer" && r.point.format === "fp16" &&
      r.point.batch === 1 && r.point.budgetGiB === null
    );
    const hf = find((r) =>
      r.point.model === model && r.point.engine === "hf" && r.point.batch === 1 &&
      r.point.promptLen === mine?.point.promptLen
    );
    if (mine && hf) {
      lines.push(
        `${model}: hcinfer fp16 batch 1 decodes ${
          (mine.metrics.decodeTokensPerS! / hf.metrics.decodeTokensPerS!).toFixed(2)
        }x as fast as transformers fp16 generate (${mine.metrics.decodeTokensPerS!.toFixed(1)} vs ${
          hf.metrics.decodeTokensPerS!.toFixed(1)
        } tok/s)`,
      );
    }
    for (
      const off of ok.filter((r) => r.point.model === model && (r.metrics.offloadedLayers ?? 0) > 0)
    ) {
      const m = off.metrics;
      lines.push(
        `${model} ${off.point.format} under ${off.point.budgetGiB} GiB: ${m.offloadedLayers} blocks ` +
          `streamed, ${gb(m.streamedBytesPerStep)} GB/step; PCIe ${
            m.pcieMsPerStep!.toFixed(2)
          } ms/step ` +
          `measured vs ${m.pciePredictedMs!.toFixed(2)} ms predicted from the measured pinned ` +
          `bandwidth (${m.h2dGbps.toFixed(1)} GB/s): ratio ${
            (m.pcieMsPerStep! / m.pciePredictedMs!).toFixed(3)
          }`,
      );
      const packed = find((r) =>
        r.point.model === model && r.point.budgetGiB === off.point.budgetGiB &&
        r.point.format !== off.point.format && r.point.batch === off.point.batch &&
        r.point.promptLen === off.point.promptLen && (r.metrics.offloadedLayers ?? 0) === 0
      );
      if (packed) {
        lines.push(
          `${model} under ${off.point.budgetGiB} GiB: ${packed.point.format} (fits, ${
            gib(packed.metrics.peakDeviceBytes)
          } GiB peak) is ${
            (packed.metrics.decodeTokensPerS! / m.decodeTokensPerS!).toFixed(1)
          }x faster than ${off.point.format} with offloading; the bytes predict ${
            (m.predictedMsPerStep! / packed.metrics.predictedMsPerStep!).toFixed(1)
          }x`,
        );
      }
    }
  }
  for (const f of records.filter((r) => r.metrics.status === "failed")) {
    lines.push(
      `${f.point.model} ${f.point.format} under ${f.point.budgetGiB} GiB: refused after ${
        (f.metrics.createSeconds * 1e3).toFixed(0)
      } ms, before any work: "${f.metrics.error}"`,
    );
  }
  const first = records[0]?.metrics;
  if (first) {
    const partition = records.find((r) => r.point.gpuSms)?.point.gpuSms;
    lines.push(
      `Measured on ${first.device}${
        partition && first.gpuSmCount
          ? ` restricted to ${first.gpuSmCount} SMs (a green-context partition of at least ` +
            `${partition}: an emulated smaller GPU)`
          : ""
      }: HBM ${first.hbmGbps.toFixed(0)} GB/s (device copy, read + ` +
        `write), ${first.hbmReadGbps.toFixed(0)} GB/s (read-only kernel), pinned H2D ${
          first.h2dGbps.toFixed(1)
        } GB/s. Roofline = batch x HBM copy bandwidth / weight bytes per step; w+KV: / (weight ` +
        "+ KV-cache bytes per step).",
    );
  }
  return lines;
}

/**
 * Records written before the weights + KV roofline existed get it from their own measured fields
 * (batch, HBM bandwidth, weight and KV-cache bytes per step), so old tables and figures show it.
 */
export function withKvRoofline(records: Rec[]): Rec[] {
  return records.map((r) => {
    const m = r.metrics;
    if (m.rooflineKvTokensPerS !== undefined || m.weightBytesPerStep === null) return r;
    if (m.kvBytesPerStep === null || m.kvBytesPerStep === undefined) return r;
    const roof = r.point.batch * m.hbmGbps * 1e9 / (m.weightBytesPerStep + m.kvBytesPerStep);
    const pct = m.decodeTokensPerS === null ? null : 100 * m.decodeTokensPerS / roof;
    return { ...r, metrics: { ...m, rooflineKvTokensPerS: roof, pctRooflineKv: pct } };
  });
}

/** The Markdown report. */
export function throughputTables(all: Rec[]): string {
  const records = withKvRoofline(all);
  const prompts = [...new Set(records.map((r) => r.point.promptLen))];
  const head = records.length
    ? `### Decode throughput (prompt ${
      prompts.length === 1 ? prompts[0] : "per row"
    }, CUDA-graph decode, median of repeats)\n\n`
    : "";
  return head + toMarkdown(records, COLUMNS) + "\n" +
    throughputSummary(records).map((l) => `- ${l}`).join("\n") + "\n";
}

/** Writes table.md and table.csv. */
export async function writeThroughputReport(records: Rec[], outDir: string): Promise<void> {
  await Deno.writeTextFile(join(outDir, "table.md"), throughputTables(records));
  await Deno.writeTextFile(join(outDir, "table.csv"), toCsv(withKvRoofline(records), COLUMNS));
}

/** Decode tokens/s against batch per (model, engine, format, budget), with the rooflines. */
export function throughputFigures(records: Rec[]): Promise<NamedFigure[]> {
  const ok = withKvRoofline(records).filter((r) => r.metrics.status === "ok");
  const manyPrompts = new Set(ok.map((r) => r.point.promptLen)).size > 1;
  const groupName = (r: Rec) =>
    `${r.point.model} ${r.point.engine} ${r.point.format}` +
    (r.point.budgetGiB === null ? "" : ` ${r.point.budgetGiB} GiB`);
  const groups = new Map<string, Rec[]>();
  for (const r of ok) {
    const k = groupName(r) + (manyPrompts ? ` prompt ${r.point.promptLen}` : "");
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  const series = [];
  for (const [name, rs] of groups) {
    rs.sort((a, b) => a.point.batch - b.point.batch);
    series.push({
      name,
      x: rs.map((r) => r.point.batch),
      y: rs.map((r) => r.metrics.decodeTokensPerS),
    });
    if (rs[0].point.engine === "hcinfer" && rs[0].point.budgetGiB === null) {
      series.push({
        name: `${name} roofline`,
        x: rs.map((r) => r.point.batch),
        y: rs.map((r) => r.metrics.rooflineTokensPerS),
        style: { line: { dash: "dash" } },
      });
    }
  }
  const figure: PlotlyFigure = lineFigure({
    title: "Decode throughput vs batch (dashed: HBM roofline)",
    xTitle: "batch (sequences)",
    yTitle: "tokens/s (log scale)",
    logY: true,
    series,
  });
  const figures: NamedFigure[] = [{ name: "throughput", figure }];
  if (manyPrompts) { // batch-1 decode against context length, one line per format
    const byFormat = new Map<string, Rec[]>();
    for (const r of ok.filter((r) => r.point.batch === 1)) {
      byFormat.set(groupName(r), [...(byFormat.get(groupName(r)) ?? []), r]);
    }
    const context = [...byFormat].filter(([, rs]) => rs.length > 1).flatMap(([name, rs]) => {
      rs.sort((a, b) => a.point.promptLen - b.point.promptLen);
      const x = rs.map((r) => r.point.promptLen);
      const line = { name, x, y: rs.map((r) => r.metrics.decodeTokensPerS) };
      const kv = rs.map((r) => r.metrics.rooflineKvTokensPerS ?? null);
      return kv.every((v) => v !== null)
        ? [line, {
          name: `${name} roofline (weights + KV)`,
          x,
          y: kv,
          style: { line: { dash: "dash" } },
        }]
        : [line];
    });
    if (context.length) {
      figures.push({
        name: "throughput-context",
        figure: lineFigure({
          title: "Batch-1 decode throughput vs prompt length (dashed: HBM roofline, weights + KV)",
          xTitle: "prompt tokens (decode continues from there)",
          yTitle: "tokens/s",
          series: context,
        }),
      });
    }
  }
  return Promise.resolve(figures);
}

/** The experiment's declaration. */
export const throughput: Experiment<ThroughputConfig, ThroughputPoint, ThroughputMetrics> = {
  name: EXPERIMENT,
  summary: "GPU decode/prefill tokens/s vs the measured HBM roofline, memory budgets, offload",
  schema: ThroughputConfigSchema,
  points: throughputPoints,
  open: openThroughput,
  describePoint: (p) =>
    `${p.model} ${p.engine} ${p.format} batch ${p.batch} prompt ${p.promptLen}` +
    (p.budgetGiB === null ? "" : ` budget ${p.budgetGiB} GiB`),
  tables: throughputTables,
  writeReport: writeThroughputReport,
  figures: throughputFigures,
  reproducibleMetrics: ["status", "weightBytesPerStep", "streamedBytesPerStep", "offloadedLayers"],
};
