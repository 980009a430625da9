/**
 * Experiment `ppl_vs_rank`: perplexity of a quantized checkpoint with and without low-rank error
 * compensation, over bits × uniform rank × evaluation texts (RTN, plain SVD of the residual).
 * `deno task demo` runs it on the bundled tiny checkpoint; `deno task sweep ppl_vs_rank` runs
 * it on any checkpoint.
 *
 * Each record is one (model, text, bits, group size, rank) point. Ranks are prefixes of one
 * factorization, so the model is quantized once per bit width and evaluated at every rank.
 *
 * @module
 */

import { join } from "node:path";
import { z } from "zod";
import { loadTokenizer } from "../datasets/mod.ts";
import { libraryVersion, Model } from "../ffi/mod.ts";
import {
  collectProvenance,
  lineFigure,
  pivot,
  readRecords,
  toCsv,
  toMarkdown,
  writeFigure,
} from "../results/mod.ts";
import { runSweep, type SweepProgress, type SweepRecord } from "./runner.ts";
import {
  BitsSchema,
  DatasetSpecSchema,
  GroupSizeSchema,
  ModelSpecSchema,
  RankSchema,
  SeqLenSchema,
} from "./schema.ts";
import { measurePerplexity, tokenizeCorpus } from "./perplexity_eval.ts";
import { QuantState } from "./quant_state.ts";

/** Experiment name, as recorded in every record. */
export const EXPERIMENT = "ppl_vs_rank";

/** The sweep's configuration. */
export const PplVsRankConfigSchema = z.strictObject({
  model: ModelSpecSchema,
  datasets: z.array(DatasetSpecSchema).min(1),
  seqLen: SeqLenSchema.default(512),
  groupSize: GroupSizeSchema.default(128),
  bits: z.array(BitsSchema).min(1),
  ranks: z.array(RankSchema).min(1),
  threads: z.int().min(0).default(0),
});
/** The sweep's configuration (input form: defaults may be omitted). */
export type PplVsRankConfigInput = z.input<typeof PplVsRankConfigSchema>;
/** The sweep's configuration (parsed). */
export type PplVsRankConfig = z.output<typeof PplVsRankConfigSchema>;

/** One sweep point. `bits` 16 is the unquantized model (group size null, rank 0). */
export interface PplPoint {
  model: string;
  dataset: string;
  seqLen: number;
  maxWindows: number | null;
  bits: number;
  groupSize: number | null;
  rank: number;
}

/** What one point measures. */
export interface PplMetrics {
  ppl: number;
  nll: number;
  tokens: number;
  windows: number;
  predicted: number;
  seconds: number;
  quantSeconds: number;
  /** Mean over quantized linears of ||W − deq(Q(W))||_F / ||W||_F (null when unquantized). */
  relErrQuant: number | null;
  /** The same after adding the rank-r compensation. */
  relErrActive: number | null;
}

/**
 * The points of a config in run order: bits outermost (one quantization each), then rank, then
 * dataset. Bits 16 contributes one point per dataset.
 */
export function pplPoints(config: PplVsRankConfig): PplPoint[] {
  const points: PplPoint[] = [];
  for (const bits of config.bits) {
    for (const rank of bits === 16 ? [0] : config.ranks) {
      for (const d of config.datasets) {
        points.push({
          model: config.model.name,
          dataset: d.name,
          seqLen: config.seqLen,
          maxWindows: d.maxWindows ?? null,
          bits,
          groupSize: bits === 16 ? null : config.groupSize,
          rank,
        });
      }
    }
  }
  return points;
}

/** Options of {@linkcode runPplVsRank}. */
export interface RunOptions {
  /** Folder for results.jsonl, table.md, table.csv and figure.{json,html}. */
  outDir: string;
  /** Sweep progress. */
  onProgress?: (p: SweepProgress<PplPoint>) => void;
}

/**
 * Runs (or resumes) the sweep and rewrites its tables and figure from all records in the folder.
 *
 * @returns the records of the result file
 */
export async function runPplVsRank(
  config: PplVsRankConfig,
  options: RunOptions,
): Promise<SweepRecord<PplPoint, PplMetrics>[]> {
  const outPath = join(options.outDir, "results.jsonl");
  const points = pplPoints(config);
  const datasets = new Map(config.datasets.map((d) => [d.name, d]));
  const maxRank = Math.max(0, ...config.ranks);
  const tokenizer = await loadTokenizer(config.model.path);
  let model: Model | null = null;
  let state: QuantState | null = null;
  const files = [config.model.path, ...config.datasets.map((d) => d.path)];
  try {
    await runSweep<PplPoint, PplMetrics>({
      experiment: EXPERIMENT,
      points,
      outPath,
      onProgress: options.onProgress,
      provenance: () => collectProvenance({ files, library: libraryVersion() }),
      runPoint: async (p) => {
        model ??= await Model.load(config.model.path, { nThreads: config.threads });
        state ??= new QuantState(model, maxRank);
        const d = datasets.get(p.dataset)!;
        const tokens = await tokenizeCorpus(tokenizer, d);
        const quantSeconds = await state.apply({
          bits: p.bits,
          groupSize: p.groupSize ?? -1,
          rank: p.rank,
        });
        const r = await measurePerplexity(model, tokens, {
          seqLen: p.seqLen,
          maxWindows: p.maxWindows ?? undefined,
        });
        const quantized = model.linears().filter((l) => l.bits > 0);
        const mean = (f: (l: (typeof quantized)[number]) => number) =>
          quantized.length ? quantized.reduce((s, l) => s + f(l), 0) / quantized.length : null;
        return {
          ...r,
          quantSeconds,
          relErrQuant: mean((l) => l.relErrQuant),
          relErrActive: mean((l) => l.relErrActive),
        };
      },
    });
  } finally {
    (model as Model | null)?.close();
  }
  const records = await readRecords<SweepRecord<PplPoint, PplMetrics>>(outPath);
  await writePplReport(records, options.outDir, config.model.name);
  return records;
}

const fmtPpl = (v: unknown) => typeof v === "number" ? v.toFixed(2) : "";
const bitsLabel = (b: unknown) => b === 16 ? "fp32" : `W${b}`;

/**
 * The Markdown report: one table per dataset, rows = bits, columns = rank, cells = perplexity.
 *
 * @param records the sweep's records
 * @returns Markdown text
 */
export function pplTables(records: SweepRecord<PplPoint, PplMetrics>[]): string {
  const out: string[] = [];
  const datasets = [...new Set(records.map((r) => r.point.dataset))];
  for (const dataset of datasets) {
    const rows = records.filter((r) => r.point.dataset === dataset);
    const first = rows[0].point;
    const windows = rows[0].metrics.windows;
    const group = rows.find((r) => r.point.groupSize !== null)?.point.groupSize;
    out.push(
      `### ${first.model} on ${dataset}: perplexity (seq ${first.seqLen}, ${windows} windows, ` +
        `RTN g${group === -1 ? " per-channel" : group ?? "-"}, uniform rank)\n`,
    );
    const t = pivot(rows, {
      row: (r) => bitsLabel(r.point.bits),
      col: (r) => r.point.rank,
      value: "metrics.ppl",
      rowHeader: "bits \\ rank",
      format: fmtPpl,
    });
    out.push(toMarkdown(t.rows, t.columns));
  }
  return out.join("\n");
}

/** Writes table.md, table.csv and figure.{json,html} for the records into `outDir`. */
export async function writePplReport(
  records: SweepRecord<PplPoint, PplMetrics>[],
  outDir: string,
  modelName: string,
): Promise<void> {
  await Deno.writeTextFile(join(outDir, "table.md"), pplTables(records));
  await Deno.writeTextFile(
    join(outDir, "table.csv"),
    toCsv(records, [
      { key: "point.model", header: "model" },
      { key: "point.dataset", header: "dataset" },
      { key: "point.seqLen", header: "seq" },
      { key: "point.bits", header: "bits" },
      { key: "point.groupSize", header: "group" },
      { key: "point.rank", header: "rank" },
      { key: "metrics.ppl", header: "ppl" },
      { key: "metrics.nll", header: "nll" },
      { key: "metrics.windows", header: "windows" },
      { key: "metrics.relErrQuant", header: "rel_err_quant" },
      { key: "metrics.relErrActive", header: "rel_err_active" },
      { key: "metrics.seconds", header: "seconds" },
    ]),
  );
  const series = [];
  for (const dataset of new Set(records.map((r) => r.point.dataset))) {
    for (const bits of new Set(records.map((r) => r.point.bits))) {
      const rs = records.filter((r) => r.point.dataset === dataset && r.point.bits === bits)
        .sort((a, b) => a.point.rank - b.point.rank);
      if (!rs.length) continue;
      const ranks = bits === 16
        ? [...new Set(records.map((r) => r.point.rank))].sort((a, b) => a - b)
        : rs.map((r) => r.point.rank);
      series.push({
        name: `${bitsLabel(bits)} · ${dataset}`,
        x: ranks,
        y: bits === 16 ? ranks.map(() => rs[0].metrics.ppl) : rs.map((r) => r.metrics.ppl),
      });
    }
  }
  await writeFigure(
    lineFigure({
      title: `${modelName}: perplexity vs compensation rank (RTN + SVD of the residual)`,
      xTitle: "rank per quantized layer",
      yTitle: "perplexity (log scale)",
      logY: true,
      series,
    }),
    join(outDir, "figure"),
  );
}
