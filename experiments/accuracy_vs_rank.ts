/**
 * Experiment `accuracy_vs_rank`: perplexity over bits × quantizer (RTN, GPTQ) × compensation
 * scaling (plain, act-diag, act-full) × rank allocation (uniform, energy, sensitivity) × budget
 * of extra parameters, on calibration-based methods.
 *
 * Per (bits, quantizer, scaling) the model is calibrated once (seeded windows of the calibration
 * corpus), quantized once with `maxRank` factors per layer, and every (allocation, budget) is a
 * choice of rank prefixes (experiments/rank_allocation.ts). `sensitivity` measures each layer's
 * loss-per-energy on the first calibration windows (experiments/sensitivity.ts), once per
 * quantization. Each record holds the chosen per-layer ranks.
 *
 * @module
 */

import { join } from "node:path";
import { z } from "zod";
import { loadC4Jsonl, loadCorpus, loadTokenizer, type TextTokenizer } from "../datasets/mod.ts";
import {
  libraryVersion,
  Model,
  type QuantizeOptions,
  sampleCalibrationWindows,
} from "../ffi/mod.ts";
import {
  collectProvenance,
  lineFigure,
  pivot,
  type Series,
  toCsv,
  toMarkdown,
  writeFigure,
} from "../results/mod.ts";
import type { Experiment, NamedFigure, PointRunner } from "./experiment.ts";
import { measurePerplexity, tokenizeCorpus } from "./perplexity_eval.ts";
import { allocateRanks, type AllocLayer, budgetParams, rankCost } from "./rank_allocation.ts";
import type { SweepRecord } from "./runner.ts";
import { measureSensitivity } from "./sensitivity.ts";
import {
  AllocationSchema,
  DatasetSpecSchema,
  GroupSizeSchema,
  ModelSpecSchema,
  SeqLenSchema,
} from "./schema.ts";

/** The experiment's configuration. */
export const AccuracyVsRankConfigSchema = z.strictObject({
  model: ModelSpecSchema,
  datasets: z.array(DatasetSpecSchema).min(1),
  seqLen: SeqLenSchema.default(512),
  groupSize: GroupSizeSchema.default(128),
  bits: z.array(z.literal([2, 3, 4, 8])).min(1),
  quantizers: z.array(z.enum(["rtn", "gptq"])).min(1),
  scalings: z.array(z.enum(["plain", "act-diag", "act-full"])).min(1),
  allocations: z.array(AllocationSchema).min(1),
  /** Extra parameters as a fraction of the quantized layers' parameters; 0 = no compensation. */
  budgets: z.array(z.number().min(0).max(4)).min(1),
  /** Factors kept per layer (the most any allocation may give one layer). */
  maxRank: z.int().positive().default(64),
  calibration: z.strictObject({
    path: z.string().min(1),
    windows: z.int().positive().default(128),
    seqLen: SeqLenSchema.default(512),
    seed: z.int().min(0).default(0),
    /** Calibration windows (the first ones) used to measure sensitivity. */
    sensitivityWindows: z.int().positive().default(4),
  }),
  threads: z.int().min(0).default(0),
});
/** Parsed config. */
export type AccuracyVsRankConfig = z.output<typeof AccuracyVsRankConfigSchema>;

/** One point. */
export interface AccPoint {
  model: string;
  dataset: string;
  seqLen: number;
  maxWindows: number | null;
  bits: number;
  groupSize: number;
  quantizer: "rtn" | "gptq";
  scaling: "plain" | "act-diag" | "act-full";
  allocation: "uniform" | "energy" | "sensitivity";
  budget: number;
}

/** What a point measures. */
export interface AccMetrics {
  ppl: number;
  nll: number;
  tokens: number;
  windows: number;
  /** Chosen rank of every linear (index = layer · 7 + kind). */
  ranks: number[];
  /** Parameters the budget allows, and those the ranks use. */
  budgetParams: number;
  usedParams: number;
  /** Mean rank over compensated linears. */
  meanRank: number;
  seconds: number;
}

/** Points in run order: one quantization per (bits, quantizer, scaling). */
export function accPoints(c: AccuracyVsRankConfig): AccPoint[] {
  const out: AccPoint[] = [];
  for (const bits of c.bits) {
    for (const quantizer of c.quantizers) {
      for (const scaling of c.scalings) {
        for (const budget of c.budgets) {
          // at budget 0 every allocation is rank 0: one point, recorded as uniform
          for (const allocation of budget === 0 ? ["uniform" as const] : c.allocations) {
            for (const d of c.datasets) {
              out.push({
                model: c.model.name,
                dataset: d.name,
                seqLen: c.seqLen,
                maxWindows: d.maxWindows ?? null,
                bits,
                groupSize: c.groupSize,
                quantizer,
                scaling,
                allocation,
                budget,
              });
            }
          }
        }
      }
    }
  }
  return out;
}

async function open(c: AccuracyVsRankConfig): Promise<PointRunner<AccPoint, AccMetrics>> {
  const tokenizer: TextTokenizer = await loadTokenizer(c.model.path);
  const model = await Model.load(c.model.path, { nThreads: c.threads });
  const datasets = new Map(c.datasets.map((d) => [d.name, d]));
  let calibTokens: Int32Array | null = null;
  let quantKey = "";
  const sensitivities = new Map<string, number[]>();
  const calibration = async () => {
    if (!calibTokens) {
      const text = c.calibration.path.endsWith(".jsonl")
        ? await loadC4Jsonl(c.calibration.path)
        : await loadCorpus({ path: c.calibration.path });
      calibTokens = sampleCalibrationWindows(tokenizer.encode(text), {
        seqLen: c.calibration.seqLen,
        nWindows: c.calibration.windows,
        seed: c.calibration.seed,
      });
      await model.calibrate(calibTokens, { seqLen: c.calibration.seqLen });
    }
    return calibTokens;
  };
  const quantOptions = (p: AccPoint): QuantizeOptions => ({
    bits: p.bits,
    groupSize: p.groupSize,
    maxRank: c.maxRank,
    method: p.quantizer,
    scaling: p.scaling,
  });
  const files = [c.model.path, c.calibration.path, ...c.datasets.map((d) => d.path)];
  return {
    provenance: () =>
      collectProvenance({ files, library: libraryVersion(), seed: c.calibration.seed }),
    close: () => model.close(),
    runPoint: async (p) => {
      const t0 = performance.now();
      const key = JSON.stringify([p.bits, p.groupSize, p.quantizer, p.scaling]);
      const needsCalib = p.quantizer === "gptq" || p.scaling !== "plain" ||
        p.allocation === "sensitivity";
      const calib = needsCalib ? await calibration() : null;
      let sens: number[] | undefined;
      if (p.allocation === "sensitivity" && p.budget > 0) {
        sens = sensitivities.get(key);
        if (!sens) {
          const sensTokens = calib!.subarray(
            0,
            Math.min(c.calibration.sensitivityWindows, c.calibration.windows) *
              c.calibration.seqLen,
          );
          sens = (await measureSensitivity(model, {
            quant: quantOptions(p),
            tokens: sensTokens,
            seqLen: c.calibration.seqLen,
          })).map((s) => s.sensitivity);
          sensitivities.set(key, sens);
          quantKey = ""; // measuring left the model at full precision
        }
      }
      if (key !== quantKey) {
        quantKey = "";
        await model.quantize(quantOptions(p));
        quantKey = key;
      }
      const linears = model.linears();
      const layers: AllocLayer[] = linears.map((l, i) => ({
        dOut: l.dOut,
        dIn: l.dIn,
        gains: l.bits ? Array.from(model.singularValues(i), (v) => v * v) : [],
        sensitivity: sens?.[i] ?? 1,
      }));
      const ranks = p.budget === 0
        ? new Int32Array(layers.length)
        : allocateRanks(layers, { fraction: p.budget }, p.allocation);
      model.setRanks(ranks);
      const d = datasets.get(p.dataset)!;
      const tokens = await tokenizeCorpus(tokenizer, d);
      const r = await measurePerplexity(model, tokens, {
        seqLen: p.seqLen,
        maxWindows: p.maxWindows ?? undefined,
      });
      const compensated = layers.filter((l) => l.gains.length > 0).length;
      return {
        ppl: r.ppl,
        nll: r.nll,
        tokens: r.tokens,
        windows: r.windows,
        ranks: Array.from(ranks),
        budgetParams: budgetParams(layers.filter((l) => l.gains.length > 0), {
          fraction: p.budget,
        }),
        usedParams: rankCost(layers, ranks),
        meanRank: compensated ? ranks.reduce((s, v) => s + v, 0) / compensated : 0,
        seconds: (performance.now() - t0) / 1000,
      };
    },
  };
}

type Rec = SweepRecord<AccPoint, AccMetrics>;
const fmt = (v: unknown) => typeof v === "number" ? v.toFixed(2) : "";
const method = (p: AccPoint) => `${p.quantizer.toUpperCase()} ${p.scaling}`;

/** Markdown: per dataset and bits, rows = quantizer·scaling·allocation, columns = budget. */
export function accTables(records: Rec[]): string {
  const out: string[] = [];
  for (const dataset of new Set(records.map((r) => r.point.dataset))) {
    for (const bits of new Set(records.map((r) => r.point.bits))) {
      const rs = records.filter((r) => r.point.dataset === dataset && r.point.bits === bits);
      if (!rs.length) continue;
      const p0 = rs[0].point;
      out.push(
        `### ${p0.model}, W${bits} g${p0.groupSize}, ${dataset} (seq ${p0.seqLen}, ` +
          `${rs[0].metrics.windows} windows): perplexity vs extra-parameter budget\n`,
      );
      // budget 0 (no compensation) is shared by every allocation of a method
      const expanded = rs.flatMap((r) =>
        r.point.budget === 0
          ? [...new Set(rs.map((x) => x.point.allocation))].map((a) => ({
            ...r,
            point: { ...r.point, allocation: a },
          }))
          : [r]
      );
      const t = pivot(expanded, {
        row: (r) => `${method(r.point)} · ${r.point.allocation}`,
        col: (r) => r.point.budget,
        colHeader: (b) => `${(Number(b) * 100).toFixed(0)}%`,
        value: "metrics.ppl",
        rowHeader: "method · allocation \\ budget",
        format: fmt,
      });
      out.push(toMarkdown(t.rows, t.columns));
    }
  }
  return out.join("\n");
}

/** One figure per (dataset, bits): perplexity vs budget, a line per method · allocation. */
export function accFigures(records: Rec[]): NamedFigure[] {
  const figs: NamedFigure[] = [];
  for (const dataset of new Set(records.map((r) => r.point.dataset))) {
    for (const bits of new Set(records.map((r) => r.point.bits))) {
      const rs = records.filter((r) => r.point.dataset === dataset && r.point.bits === bits);
      if (!rs.length) continue;
      const series: Series[] = [];
      const methods = new Set(rs.map((r) => method(r.point)));
      const allocs = new Set(rs.map((r) => r.point.allocation));
      for (const m of methods) {
        for (const a of allocs) {
          const line = rs.filter((r) =>
            method(r.point) === m && (r.point.allocation === a || r.point.budget === 0)
          ).sort((x, y) => x.point.budget - y.point.budget);
          if (line.length < 2) continue;
          series.push({
            name: `${m} · ${a}`,
            x: line.map((r) => r.point.budget * 100),
            y: line.map((r) => r.metrics.ppl),
          });
        }
      }
      figs.push({
        name: `ppl-vs-budget-w${bits}-${dataset}`,
        figure: lineFigure({
          title: `${rs[0].point.model} W${bits}: perplexity vs compensation budget (${dataset})`,
          xTitle: "extra parameters (% of quantized layers' parameters)",
          yTitle: "perplexity (log scale)",
          logY: true,
          series,
        }),
      });
    }
  }
  return figs;
}

/** The declaration. */
export const accuracyVsRank: Experiment<AccuracyVsRankConfig, AccPoint, AccMetrics> = {
  name: "accuracy_vs_rank",
  summary: "perplexity over bits × quantizer × scaling × rank allocation × budget",
  schema: AccuracyVsRankConfigSchema,
  points: accPoints,
  open,
  describePoint: (p) =>
    `${p.model} W${p.bits} ${method(p)} ${p.allocation} ${
      (p.budget * 100).toFixed(0)
    }% on ${p.dataset}`,
  tables: accTables,
  writeReport: async (records, outDir) => {
    await Deno.writeTextFile(join(outDir, "table.md"), accTables(records));
    await Deno.writeTextFile(
      join(outDir, "table.csv"),
      toCsv(records, [
        { key: "point.model", header: "model" },
        { key: "point.dataset", header: "dataset" },
        { key: "point.bits", header: "bits" },
        { key: "point.groupSize", header: "group" },
        { key: "point.quantizer", header: "quantizer" },
        { key: "point.scaling", header: "scaling" },
        { key: "point.allocation", header: "allocation" },
        { key: "point.budget", header: "budget" },
        { key: "metrics.ppl", header: "ppl" },
        { key: "metrics.meanRank", header: "mean_rank" },
        { key: "metrics.usedParams", header: "used_params" },
        { key: "metrics.budgetParams", header: "budget_params" },
        { key: "metrics.seconds", header: "seconds" },
      ]),
    );
    for (const f of accFigures(records)) await writeFigure(f.figure, join(outDir, f.name));
  },
  figures: (records) => Promise.resolve(accFigures(records)),
  reproducibleMetrics: ["ppl", "nll", "tokens", "windows", "ranks"],
};
