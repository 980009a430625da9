/**
 * Experiment `controller_accuracy`: what the run-time rank controller keeps of the compensation,
 * in perplexity. On a real checkpoint, quantized with rank-r compensation on every linear, it
 * times batch-1 decode with the compensation on the CPU overlapped with the GPU (`cpu-async`):
 *
 * - `none`: the backbone alone (perplexity at rank 0);
 * - `fixed`: every linear at its full rank r every step (perplexity at rank r);
 * - `controller`: the controller picks each point's rank prefix every step, per CPU thread count
 *   and slowdown budget; the ranks it used are recorded (per linear, the mean over the timed
 *   steps), and the perplexity is measured at those ranks (each mean rounded to the nearest
 *   integer: `ranksToEvaluate`).
 *
 * Perplexity is the CPU model's (`Model.evalNll`, GPTQ protocol) with the same quantized
 * backbone and factors; the GPU's figure equals it within 1e-3 relative (`gpu_accuracy`, the GPU
 * tests). Timings are `GpuModel.benchDecode`'s (median of repeats, warm-up excluded), with the
 * compensation statistics of the timed steps.
 *
 * @module
 */

import { join } from "node:path";
import { loadTokenizer } from "../datasets/mod.ts";
import { deviceInfo, GpuModel, type GpuOptions } from "../ffi/gpu.ts";
import { libraryVersion, Model } from "../ffi/mod.ts";
import { readRecords } from "../results/store.ts";
import { type Column, toCsv, toMarkdown } from "../results/table.ts";
import { collectGpuProvenance } from "./gpu_provenance.ts";
import { tokenizeCorpus } from "./perplexity_eval.ts";
import { runSweep, type SweepRecord } from "./runner.ts";

/** Experiment name of the records. */
export const EXPERIMENT = "controller_accuracy";

/** Options of {@linkcode runControllerAccuracy}. */
export interface ControllerAccuracyOptions {
  /** Checkpoint folder. */
  model: string;
  /** Text for perplexity. */
  data: string;
  /** Backbone bits and group size (default 4, 128). */
  bits?: number;
  groupSize?: number;
  /** Compensation rank of every linear (default 32). */
  rank?: number;
  /** Perplexity windows (default 256 tokens, 32 windows). */
  seqLen?: number;
  maxWindows?: number;
  /** Decode benchmark: prompt, new tokens, repeats (default 64, 256, 3). */
  promptLen?: number;
  newTokens?: number;
  repeats?: number;
  /** CPU worker threads of the controller runs (0 = the library's default; default [0, 2, 1]). */
  cpuThreads?: number[];
  /** The controller's slowdown budgets in percent (-1 = ranks only; default [8]). */
  slowdownPcts?: number[];
  /** Run on a partition of at least this many SMs (an emulated smaller GPU; 0 = all). */
  gpuSms?: number;
  /** Result folder (results.jsonl, table.md, table.csv). */
  outDir: string;
}

/** One point. */
export interface ControllerPoint {
  model: string;
  data: string;
  /** `w<bits>g<group>-r<rank>` */
  format: string;
  run: "none" | "fixed" | "controller";
  /** Controller runs: CPU threads (0 = default) and budget; null otherwise. */
  cpuThreads: number | null;
  slowdownPct: number | null;
  seqLen: number;
  maxWindows: number;
  promptLen: number;
  newTokens: number;
  repeats: number;
  gpuSms: number;
}

/** What a point measures. */
export interface ControllerMetrics {
  decodeTokensPerS: number;
  decodeMsPerStep: number;
  /** Per decode step of the timed repeats (CPU placements; null for `none`). */
  gpuWaitMsPerStep: number | null;
  cpuBusyMsPerStep: number | null;
  /** Mean over the timed steps of Σ ranks used / Σ full ranks (1 for `fixed`, 0 for `none`). */
  rankFraction: number;
  /** The ranks the perplexity was measured at, per linear (layer · 7 + kind). */
  ranks: number[];
  /** Their mean over the compensated linears. */
  meanRank: number;
  ppl: number;
  windows: number;
  cpuThreadsUsed: number | null;
  device: string;
}

/** The backbone format and compensation rank of a run, defaults applied. */
function quantization(o: ControllerAccuracyOptions): { bits: number; group: number; rank: number } {
  const q = { bits: o.bits ?? 4, group: o.groupSize ?? 128, rank: o.rank ?? 32 };
  if (!(q.rank > 0)) throw new RangeError("controller_accuracy: rank must be positive");
  return q;
}

/** The points of a run, in order: `none`, `fixed`, then the controller per threads × budget. */
export function controllerPoints(o: ControllerAccuracyOptions): ControllerPoint[] {
  const { bits, group, rank } = quantization(o);
  const base = {
    model: o.model,
    data: o.data,
    format: `w${bits}g${group}-r${rank}`,
    seqLen: o.seqLen ?? 256,
    maxWindows: o.maxWindows ?? 32,
    promptLen: o.promptLen ?? 64,
    newTokens: o.newTokens ?? 256,
    repeats: o.repeats ?? 3,
    gpuSms: o.gpuSms ?? 0,
  };
  const points: ControllerPoint[] = [
    { ...base, run: "none", cpuThreads: null, slowdownPct: null },
    { ...base, run: "fixed", cpuThreads: 0, slowdownPct: null },
  ];
  for (const t of o.cpuThreads ?? [0, 2, 1]) {
    for (const s of o.slowdownPcts ?? [8]) {
      points.push({ ...base, run: "controller", cpuThreads: t, slowdownPct: s });
    }
  }
  return points;
}

/**
 * The integer ranks a controller run is evaluated at: each linear's mean rank over the timed
 * steps, rounded to the nearest integer and kept within [0, full].
 */
export function ranksToEvaluate(mean: ArrayLike<number>, full: ArrayLike<number>): number[] {
  if (mean.length !== full.length) throw new RangeError("ranksToEvaluate: lengths differ");
  return Array.from(mean, (m, i) => Math.min(full[i], Math.max(0, Math.round(m))));
}

/** Runs (or resumes) the points and writes table.md and table.csv; returns the records. */
export async function runControllerAccuracy(
  o: ControllerAccuracyOptions,
): Promise<SweepRecord<ControllerPoint, ControllerMetrics>[]> {
  const points = controllerPoints(o);
  const q = quantization(o);
  const dev = deviceInfo();
  if (!dev.available) throw new Error(`controller_accuracy needs a GPU: ${dev.reason}`);
  await Deno.mkdir(o.outDir, { recursive: true });
  const outPath = join(o.outDir, "results.jsonl");
  const tokenizer = await loadTokenizer(o.model);
  const tokens = await tokenizeCorpus(tokenizer, { path: o.data });
  let model: Model | null = null;
  try {
    await runSweep<ControllerPoint, ControllerMetrics>({
      experiment: EXPERIMENT,
      points,
      outPath,
      provenance: () =>
        collectGpuProvenance({ files: [o.model, o.data], library: libraryVersion() }, dev.build),
      runPoint: async (p) => {
        if (!model) {
          model = await Model.load(p.model);
          await model.quantize({ bits: q.bits, groupSize: q.group, maxRank: q.rank });
        }
        const m = model;
        // the GPU model takes the CPU model's active ranks as the full ones (an earlier point
        // left them at the ranks it evaluated)
        m.setUniformRank(q.rank);
        const options: GpuOptions = {
          weights: "packed",
          placement: p.run === "none" ? "none" : "cpu-async",
          nCtx: p.promptLen + p.newTokens + 8,
          smLimit: p.gpuSms,
        };
        if (p.run !== "none") options.cpuThreads = p.cpuThreads ?? 0;
        if (p.run === "controller") {
          options.rankController = true;
          options.controllerSlowdownPct = p.slowdownPct ?? 0;
        }
        let ranks: number[];
        let full: number[] | null = null;
        let stats = null;
        let fraction: number;
        using g = await GpuModel.fromModel(m, options);
        const r = await g.benchDecode({
          batch: 1,
          promptLen: p.promptLen,
          newTokens: p.newTokens,
          repeats: p.repeats,
        });
        const nLinears = m.info.nLayers * 7;
        if (p.run === "none") {
          ranks = new Array(nLinears).fill(0);
          fraction = 0;
        } else {
          stats = g.compStats();
          const cr = g.compRanks();
          full = Array.from(cr.full);
          ranks = p.run === "fixed" ? full : ranksToEvaluate(cr.mean, cr.full);
          fraction = p.run === "fixed" ? 1 : stats.rankFraction;
        }
        m.setRanks(ranks);
        const nll = await m.evalNll(tokens, { seqLen: p.seqLen, maxWindows: p.maxWindows });
        const held = full ? full.filter((v) => v > 0).length : 0;
        const steps = stats && stats.steps > 0 ? stats.steps : 1;
        return {
          decodeTokensPerS: r.decodeTokensPerS,
          decodeMsPerStep: r.decodeMsPerStep,
          gpuWaitMsPerStep: stats ? stats.gpuWaitMs / steps : null,
          cpuBusyMsPerStep: stats ? stats.cpuBusyMs / steps : null,
          rankFraction: fraction,
          ranks,
          meanRank: held ? ranks.reduce((a, b) => a + b, 0) / held : 0,
          ppl: Math.exp(nll.nllSum / nll.nPredicted),
          windows: Number(nll.nWindows),
          cpuThreadsUsed: stats ? stats.cpuThreads : null,
          device: dev.name,
        };
      },
    });
  } finally {
    (model as Model | null)?.close();
  }
  const records = await readRecords<SweepRecord<ControllerPoint, ControllerMetrics>>(outPath);
  await Deno.writeTextFile(join(o.outDir, "table.md"), controllerTables(records));
  await Deno.writeTextFile(join(o.outDir, "table.csv"), toCsv(records, COLUMNS));
  return records;
}

type Rec = SweepRecord<ControllerPoint, ControllerMetrics>;

const fx = (d: number) => (v: unknown) =>
  typeof v === "number" && Number.isFinite(v) ? v.toFixed(d) : "";

const COLUMNS: Column<Rec>[] = [
  { key: "point.run", header: "run" },
  {
    key: "point.cpuThreads",
    header: "CPU threads",
    format: (v, r) =>
      r.point.run === "none"
        ? "-"
        : v === 0
        ? `default (${r.metrics.cpuThreadsUsed ?? "?"})`
        : String(v),
    align: "right",
  },
  {
    key: "point.slowdownPct",
    header: "budget",
    format: (v) => v === null ? "-" : v === -1 ? "ranks only" : v === 0 ? "8%" : `${v}%`,
  },
  { key: "metrics.decodeTokensPerS", header: "tok/s", format: fx(1), align: "right" },
  { key: "metrics.rankFraction", header: "rank fraction", format: fx(3), align: "right" },
  { key: "metrics.meanRank", header: "mean rank", format: fx(2), align: "right" },
  { key: "metrics.ppl", header: "ppl at those ranks", format: fx(3), align: "right" },
  { key: "metrics.gpuWaitMsPerStep", header: "GPU wait ms/step", format: fx(3), align: "right" },
  { key: "metrics.cpuBusyMsPerStep", header: "CPU busy ms/step", format: fx(3), align: "right" },
];

/** Markdown: one table, with the speed relative to `none` and the perplexity range beside it. */
export function controllerTables(records: Rec[]): string {
  if (!records.length) return "";
  const p = records[0].point;
  const none = records.find((r) => r.point.run === "none");
  const fixed = records.find((r) => r.point.run === "fixed");
  const ratio: Column<Rec> = {
    key: "metrics.decodeTokensPerS",
    header: "÷ none",
    format: (v) =>
      none && typeof v === "number" ? `${(v / none.metrics.decodeTokensPerS).toFixed(2)}x` : "",
    align: "right",
  };
  const cols = [...COLUMNS.slice(0, 4), ratio, ...COLUMNS.slice(4)];
  const lines = [
    `### Rank controller: speed and perplexity at the ranks it used (${
      p.model.replace(/^.*\//, "")
    } ${p.format}, batch 1, prompt ${p.promptLen}, ${p.newTokens} new tokens${
      p.gpuSms ? `, ${p.gpuSms} SMs` : ""
    })`,
    "",
    toMarkdown(records, cols),
    "",
  ];
  if (none && fixed) {
    lines.push(
      `- Perplexity on ${
        p.data.replace(/^.*\//, "")
      } (seq ${p.seqLen}, ${none.metrics.windows} windows, CPU model): backbone ${
        none.metrics.ppl.toFixed(3)
      }, full rank ${
        fixed.metrics.ppl.toFixed(3)
      }; controller rows at each linear's mean rank over the timed steps, rounded.`,
    );
  }
  return lines.join("\n") + "\n";
}
