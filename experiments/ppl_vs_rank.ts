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

import { dirname, join } from "node:path";
import { z } from "zod";
import { loadTokenizer } from "../datasets/mod.ts";
import { libraryVersion, Model } from "../ffi/mod.ts";
import {
  bitsPerWeight,
  collectProvenance,
  type LinearShape,
  lineFigure,
  meanWithError,
  PAPER_COLORWAY,
  pivot,
  readModelShapes,
  type Series,
  toCsv,
  toMarkdown,
  writeFigure,
} from "../results/mod.ts";
import {
  type Experiment,
  locateRecordedFile,
  type NamedFigure,
  type PointRunner,
  recordedModelDir,
  runExperiment,
} from "./experiment.ts";
import type { SweepProgress, SweepRecord } from "./runner.ts";
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
 * Opens what measuring points needs: the tokenizer now, the model at the first point.
 *
 * @param config the parsed config
 * @returns the point runner
 */
export async function openPplVsRank(
  config: PplVsRankConfig,
): Promise<PointRunner<PplPoint, PplMetrics>> {
  const datasets = new Map(config.datasets.map((d) => [d.name, d]));
  const maxRank = Math.max(0, ...config.ranks);
  const tokenizer = await loadTokenizer(config.model.path);
  let model: Model | null = null;
  let state: QuantState | null = null;
  const files = [config.model.path, ...config.datasets.map((d) => d.path)];
  return {
    provenance: () => collectProvenance({ files, library: libraryVersion() }),
    runPoint: async (p) => {
      model ??= await Model.load(config.model.path, { nThreads: config.threads });
      state ??= new QuantState(model, maxRank);
      const d = datasets.get(p.dataset);
      if (!d) throw new Error(`dataset '${p.dataset}' is not in the config's datasets`);
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
    close: () => (model as Model | null)?.close(),
  };
}

/**
 * Runs (or resumes) the sweep and rewrites its tables and figure from all records in the folder.
 *
 * @returns the records of the result file
 */
export function runPplVsRank(
  config: PplVsRankConfig,
  options: RunOptions,
): Promise<SweepRecord<PplPoint, PplMetrics>[]> {
  return runExperiment(pplVsRank, config, options);
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
  await writeFigure(pplRankFigure(records, modelName), join(outDir, "figure"));
}

type PplRecord = SweepRecord<PplPoint, PplMetrics>;

const distinctOf = <T>(values: T[]) => [...new Set(values)];
/** Bit widths in table order: fp first, then ascending. */
const bitsOrder = (records: readonly PplRecord[]) =>
  distinctOf(records.map((r) => r.point.bits)).sort((a, b) => a === 16 ? -1 : b === 16 ? 1 : a - b);
const slug = (s: string) => s.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");
const quantLabel = (records: readonly PplRecord[]) => {
  const g = records.find((r) => r.point.groupSize !== null)?.point.groupSize;
  return g === undefined ? "" : `RTN ${g === -1 ? "per-channel" : `g${g}`}, `;
};

/**
 * Perplexity against compensation rank: one line per (bits, dataset) (mean ± standard deviation
 * where a point was measured more than once); the unquantized model as a dashed line.
 *
 * @param records the records
 * @param withDataset whether trace names carry the dataset (then colours follow Plotly's
 *   colourway; otherwise each bit width has its fixed colour, {@linkcode bitsColor})
 */
function rankSeries(records: readonly PplRecord[], withDataset: boolean): Series[] {
  const ranks = distinctOf(records.map((r) => r.point.rank)).sort((a, b) => a - b);
  const series: Series[] = [];
  for (const dataset of distinctOf(records.map((r) => r.point.dataset))) {
    const inSet = records.filter((r) => r.point.dataset === dataset);
    for (const bits of bitsOrder(inSet)) {
      const rs = inSet.filter((r) => r.point.bits === bits);
      if (!rs.length) continue;
      const name = withDataset ? `${bitsLabel(bits)} · ${dataset}` : bitsLabel(bits);
      if (bits === 16) {
        const m = meanWithError(rs.map((r) => ({ x: 0, y: r.metrics.ppl })));
        series.push({
          name,
          x: ranks,
          y: ranks.map(() => m.y[0]),
          style: {
            mode: "lines",
            line: { dash: "dash", ...(withDataset ? {} : { color: bitsColor(16) }) },
          },
        });
      } else {
        const m = meanWithError(rs.map((r) => ({ x: r.point.rank, y: r.metrics.ppl })));
        series.push({
          name,
          x: m.x,
          y: m.y,
          error: m.error,
          ...(withDataset ? {} : { style: colorStyle(bits) }),
        });
      }
    }
  }
  return series;
}

/**
 * The result folder's figure (figure.json): perplexity against rank, every dataset in one plot.
 *
 * @param records the records
 * @param modelName the model's name for the title
 * @returns the figure
 */
export function pplRankFigure(records: readonly PplRecord[], modelName: string) {
  return lineFigure({
    title: `${modelName}: perplexity vs compensation rank (RTN + SVD of the residual)`,
    xTitle: "rank per quantized layer",
    yTitle: "perplexity (log scale)",
    logY: true,
    series: rankSeries(records, true),
  });
}

/**
 * The paper figures of ppl_vs_rank records, per (model, dataset): perplexity against rank
 * (`ppl-vs-rank-<dataset>`), and perplexity against storage in bits per weight including the
 * compensation factors (`ppl-vs-bpw-<dataset>`, when the model's config.json can be found; see
 * results/memory.ts for the formula).
 *
 * @param records the records
 * @returns the named figures
 */
export async function pplFigures(records: readonly PplRecord[]): Promise<NamedFigure[]> {
  const out: NamedFigure[] = [];
  const models = distinctOf(records.map((r) => r.point.model));
  for (const model of models) {
    const ofModel = records.filter((r) => r.point.model === model);
    let shapes: LinearShape[] | null = null;
    const dir = recordedModelDir(ofModel[0]);
    if (dir) shapes = await readModelShapes(dir).catch(() => null);
    for (const dataset of distinctOf(ofModel.map((r) => r.point.dataset))) {
      const rs = ofModel.filter((r) => r.point.dataset === dataset);
      const prefix = models.length > 1 ? `${slug(model)}-` : "";
      const where = `${model}, ${dataset} (seq ${rs[0].point.seqLen})`;
      out.push({
        name: `${prefix}ppl-vs-rank-${slug(dataset)}`,
        figure: lineFigure({
          title: `${where}: perplexity vs rank`,
          xTitle: `compensation rank r per quantized layer (${quantLabel(rs)}plain SVD)`,
          yTitle: "perplexity (log scale)",
          logY: true,
          series: rankSeries(rs, false),
        }),
      });
      if (shapes) {
        const figure = lineFigure({
          title: `${where}: accuracy vs memory`,
          xTitle: "bits per weight (weights, fp16 scales and zeros, rank-r factors)",
          yTitle: "perplexity (log scale)",
          logY: true,
          series: storageSeries(rs, shapes),
        });
        figure.layout.legend = { title: { text: "label: rank r" } };
        out.push({ name: `${prefix}ppl-vs-bpw-${slug(dataset)}`, figure });
      }
    }
  }
  return out;
}

/** The colour of a bit width in the per-dataset figures (fp: black). */
export function bitsColor(bits: number): string {
  const i = [2, 3, 4, 8].indexOf(bits);
  return bits === 16 ? "#000000" : PAPER_COLORWAY[i >= 0 ? i : 4 + (bits % 4)];
}

const colorStyle = (bits: number) => ({
  line: { color: bitsColor(bits) },
  marker: { color: bitsColor(bits) },
});

/**
 * Perplexity against bits per weight: one line per bit width through its ranks (each marker
 * labelled with its rank); the unquantized model as a dashed line.
 */
function storageSeries(records: readonly PplRecord[], shapes: LinearShape[]): Series[] {
  const series: Series[] = [];
  const quantized = records.filter((r) => r.point.bits !== 16);
  const bpw = (r: PplRecord) => bitsPerWeight(r.point, shapes);
  for (const bits of bitsOrder(quantized)) {
    const rs = quantized.filter((r) => r.point.bits === bits);
    const m = meanWithError(rs.map((r) => ({ x: bpw(r), y: r.metrics.ppl })));
    const rankAt = new Map(rs.map((r) => [bpw(r), r.point.rank]));
    series.push({
      name: bitsLabel(bits),
      x: m.x,
      y: m.y,
      error: m.error,
      style: {
        ...colorStyle(bits),
        mode: "lines+markers+text",
        text: m.x.map((x) => `${rankAt.get(x as number)}`),
        textposition: "top center",
        textfont: { size: 9, color: bitsColor(bits) },
        hovertemplate: "%{x:.2f} bits/weight, ppl %{y:.2f}, rank %{text}",
      },
    });
  }
  const fp = records.filter((r) => r.point.bits === 16);
  if (fp.length && quantized.length) {
    const m = meanWithError(fp.map((r) => ({ x: 0, y: r.metrics.ppl })));
    const xs = quantized.map(bpw);
    series.push({
      name: "fp32",
      x: [Math.min(...xs), Math.max(...xs)],
      y: [m.y[0], m.y[0]],
      style: { mode: "lines", line: { dash: "dash", color: bitsColor(16) } },
    });
  }
  return series;
}

/**
 * For records written before configs were recorded: a config whose points include theirs,
 * from their points and the files hashed in their provenance (the model folder is the one
 * holding model.safetensors; a dataset's file is the one whose path contains its name, ignoring
 * case and punctuation).
 *
 * @param records records of one model
 * @returns the config (input form), or undefined when it cannot be inferred
 */
export function pplConfigFromRecords(records: readonly PplRecord[]): unknown {
  if (!records.length) return undefined;
  const model = recordedModelDir(records[0]);
  if (!model) return undefined;
  const files = Object.keys((records[0].provenance as { files?: object }).files ?? {});
  const weights = files.find((f) => f.endsWith(".safetensors"));
  const dataFiles = files.filter((f) => !weights || !f.startsWith(dirname(weights) + "/"));
  const norm = (s: string) => s.toLowerCase().replace(/[^a-z0-9]/g, "");
  const datasets = [];
  for (const name of distinctOf(records.map((r) => r.point.dataset))) {
    const matches = dataFiles.filter((f) => norm(f).includes(norm(name)));
    if (matches.length !== 1) return undefined;
    const path = locateRecordedFile(matches[0]);
    if (!path) return undefined;
    const maxWindows = records.find((r) => r.point.dataset === name)!.point.maxWindows;
    datasets.push({ name, path, ...(maxWindows === null ? {} : { maxWindows }) });
  }
  const groups = distinctOf(records.map((r) => r.point.groupSize).filter((g) => g !== null));
  const seqLens = distinctOf(records.map((r) => r.point.seqLen));
  if (groups.length > 1 || seqLens.length !== 1) return undefined;
  return {
    model: { name: records[0].point.model, path: model },
    datasets,
    seqLen: seqLens[0],
    ...(groups.length ? { groupSize: groups[0] } : {}),
    bits: distinctOf(records.map((r) => r.point.bits)),
    ranks: distinctOf(records.map((r) => r.point.rank)),
  };
}

/** The `ppl_vs_rank` experiment's declaration. */
export const pplVsRank: Experiment<PplVsRankConfig, PplPoint, PplMetrics> = {
  name: EXPERIMENT,
  summary: "perplexity over bits × uniform compensation rank × texts (RTN, plain SVD)",
  schema: PplVsRankConfigSchema,
  points: pplPoints,
  open: openPplVsRank,
  describePoint: (p) => {
    const q = p.bits === 16 ? "fp32" : `W${p.bits} g${p.groupSize} rank ${p.rank}`;
    return `${p.model} ${q} on ${p.dataset}`;
  },
  tables: pplTables,
  writeReport: (records, outDir) =>
    writePplReport(records, outDir, records[0]?.point.model ?? "model"),
  figures: pplFigures,
  reproducibleMetrics: [
    "ppl",
    "nll",
    "tokens",
    "windows",
    "predicted",
    "relErrQuant",
    "relErrActive",
  ],
  configFromRecords: pplConfigFromRecords,
};
