/**
 * Experiment `zero_shot`: zero-shot accuracy of a checkpoint under several quantization
 * settings, over the lm-evaluation-harness tasks of the shared tree (ARC-Easy, ARC-Challenge,
 * OpenBookQA, PIQA, BoolQ, COPA, WinoGrande, LAMBADA (OpenAI), HellaSwag), scored with lm-eval's
 * conventions (experiments/zero_shot_eval.ts; prompts in datasets/tasks.ts).
 *
 * Each record is one (config, task) point. Points run config by config, so the model is
 * quantized at most once per config (and not at all between configs that differ only in rank:
 * ranks are prefixes of one factorization).
 *
 * @module
 */

import { basename, join } from "node:path";
import { z } from "zod";
import {
  loadTask,
  loadTokenizer,
  TASK_NAMES,
  TASK_SPECS,
  type TaskData,
  type TaskName,
  taskPath,
} from "../datasets/mod.ts";
import { libraryVersion, Model } from "../ffi/mod.ts";
import {
  collectProvenance,
  type Column,
  PAPER_COLORWAY,
  type PlotlyFigure,
  type PlotlyTrace,
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
import { QuantState } from "./quant_state.ts";
import type { SweepProgress, SweepRecord } from "./runner.ts";
import { BitsSchema, GroupSizeSchema, ModelSpecSchema, RankSchema } from "./schema.ts";
import { evaluateTask, type TaskResult } from "./zero_shot_eval.ts";

/** Experiment name, as recorded in every record. */
export const EXPERIMENT = "zero_shot";

/** A task: its name (file from the shared tree), or its name and a file. */
export const ZeroShotTaskSchema = z.union([
  z.enum(TASK_NAMES),
  z.strictObject({ name: z.enum(TASK_NAMES), path: z.string().min(1) }),
]);

/** One named quantization setting. `bits` 16 is the unquantized model. */
export const ZeroShotSettingSchema = z.strictObject({
  name: z.string().min(1),
  bits: BitsSchema,
  groupSize: GroupSizeSchema.default(128),
  rank: RankSchema.default(0),
});

/** The experiment's configuration. */
export const ZeroShotConfigSchema = z.strictObject({
  model: ModelSpecSchema,
  tasks: z.array(ZeroShotTaskSchema).min(1),
  /** Score only the first `limit` examples of each task. */
  limit: z.int().positive().optional(),
  /** Put the BOS first when tokenizing (lm-eval v0.3 / HF Llama convention). */
  addBos: z.boolean().default(true),
  threads: z.int().min(0).default(0),
  configs: z.array(ZeroShotSettingSchema).min(1),
}).superRefine((c, ctx) => {
  const dup = (names: string[], path: string) => {
    names.forEach((n, i) => {
      if (names.indexOf(n) !== i) {
        ctx.addIssue({ code: "custom", path: [path, i], message: `duplicate name "${n}"` });
      }
    });
  };
  dup(c.configs.map((s) => s.name), "configs");
  dup(c.tasks.map((t) => typeof t === "string" ? t : t.name), "tasks");
});
/** The experiment's configuration (input form: defaults may be omitted). */
export type ZeroShotConfigInput = z.input<typeof ZeroShotConfigSchema>;
/** The experiment's configuration (parsed). */
export type ZeroShotConfig = z.output<typeof ZeroShotConfigSchema>;

/** One sweep point. */
export interface ZeroShotPoint {
  model: string;
  /** The setting's name. */
  config: string;
  bits: number;
  /** Null when unquantized. */
  groupSize: number | null;
  /** 0 when unquantized. */
  rank: number;
  task: TaskName;
  /** Examples scored per task; null = all. */
  limit: number | null;
  addBos: boolean;
}

/** What one point measures: the task's result and the time spent quantizing before it. */
export type ZeroShotMetrics = Omit<TaskResult, "task"> & { quantSeconds: number };

/** A record of this experiment. */
export type ZeroShotRecord = SweepRecord<ZeroShotPoint, ZeroShotMetrics>;

/**
 * The points of a config in run order: settings outermost (one quantization each), then tasks.
 *
 * @param config the parsed config
 * @returns the points
 */
export function zeroShotPoints(config: ZeroShotConfig): ZeroShotPoint[] {
  const points: ZeroShotPoint[] = [];
  for (const s of config.configs) {
    for (const t of config.tasks) {
      points.push({
        model: config.model.name,
        config: s.name,
        bits: s.bits,
        groupSize: s.bits === 16 ? null : s.groupSize,
        rank: s.bits === 16 ? 0 : s.rank,
        task: typeof t === "string" ? t : t.name,
        limit: config.limit ?? null,
        addBos: config.addBos,
      });
    }
  }
  return points;
}

/** Options of {@linkcode runZeroShot}. */
export interface RunOptions {
  /** Folder for results.jsonl, table.md, table.csv and figure.{json,html}. */
  outDir: string;
  /** Sweep progress. */
  onProgress?: (p: SweepProgress<ZeroShotPoint>) => void;
}

/**
 * Opens what scoring points needs: the tokenizer now; the model, its quantization state and
 * each task's examples at the first point that needs them.
 *
 * @param config the parsed config
 * @returns the point runner
 */
export async function openZeroShot(
  config: ZeroShotConfig,
): Promise<PointRunner<ZeroShotPoint, ZeroShotMetrics>> {
  const paths = new Map<TaskName, string>(
    config.tasks.map((t) => typeof t === "string" ? [t, taskPath(t)] : [t.name, t.path]),
  );
  const maxRank = Math.max(0, ...config.configs.filter((s) => s.bits !== 16).map((s) => s.rank));
  const tokenizer = await loadTokenizer(config.model.path);
  const tasks = new Map<string, TaskData>();
  let model: Model | null = null;
  let state: QuantState | null = null;
  return {
    provenance: () =>
      collectProvenance({
        files: [config.model.path, ...paths.values()],
        library: libraryVersion(),
      }),
    runPoint: async (p) => {
      const path = paths.get(p.task);
      if (!path) throw new Error(`task '${p.task}' is not in the config's tasks`);
      model ??= await Model.load(config.model.path, { nThreads: config.threads });
      state ??= new QuantState(model, maxRank);
      const taskKey = JSON.stringify([p.task, p.limit]);
      let task = tasks.get(taskKey);
      if (!task) {
        task = await loadTask(p.task, { path, limit: p.limit ?? undefined });
        tasks.set(taskKey, task);
      }
      const quantSeconds = await state.apply({
        bits: p.bits,
        groupSize: p.groupSize ?? 128,
        rank: p.rank,
      });
      const { task: _, ...result } = await evaluateTask(model, tokenizer, task, {
        addBos: p.addBos,
      });
      return { ...result, quantSeconds };
    },
    close: () => (model as Model | null)?.close(),
  };
}

/**
 * Runs (or resumes) the experiment and rewrites its tables and figure from all records in the
 * folder.
 *
 * @param config the parsed config
 * @param options the result folder and a progress callback
 * @returns the records of the result file
 */
export function runZeroShot(
  config: ZeroShotConfig,
  options: RunOptions,
): Promise<ZeroShotRecord[]> {
  return runExperiment(zeroShot, config, options);
}

const fmt = (v: unknown, digits = 4) =>
  typeof v === "number" && Number.isFinite(v) ? v.toFixed(digits) : "";

/** Records by (model, limit, addBos): one table and one figure each, in order of appearance. */
function tableGroups(records: readonly ZeroShotRecord[]): ZeroShotRecord[][] {
  const groups = new Map<string, ZeroShotRecord[]>();
  for (const r of records) {
    const key = JSON.stringify([r.point.model, r.point.limit, r.point.addBos]);
    groups.set(key, [...groups.get(key) ?? [], r]);
  }
  return [...groups.values()];
}

const distinctOf = <T>(values: readonly T[]) => [...new Set(values)];

const settingLabel = (p: ZeroShotPoint) =>
  p.bits === 16 ? "fp32" : `W${p.bits} g${p.groupSize === -1 ? "channel" : p.groupSize} r${p.rank}`;

/**
 * The Markdown report: rows = settings, columns = tasks, cells = the task's headline metric
 * (acc_norm where lm-eval reports it, else acc), with a first row of chance levels; LAMBADA adds
 * a perplexity column. One table per (model, limit).
 *
 * @param records the experiment's records
 * @returns Markdown text
 */
export function zeroShotTables(records: readonly ZeroShotRecord[]): string {
  const out: string[] = [];
  for (const rows of tableGroups(records)) {
    const { model, limit, addBos } = rows[0].point;
    const tasks = [...new Set(rows.map((r) => r.point.task))];
    const configs = [...new Set(rows.map((r) => r.point.config))];
    const n = (t: TaskName) => rows.find((r) => r.point.task === t)!.metrics.n;
    out.push(
      `### ${model}: zero-shot accuracy (lm-eval conventions; ` +
        `${limit === null ? "all examples" : `first ${limit} examples per task`}` +
        `${addBos ? "" : ", no BOS"})\n`,
    );
    const columns: Column[] = [
      { key: "config", header: "config" },
      { key: "setting", header: "setting" },
    ];
    for (const t of tasks) {
      columns.push({
        key: t,
        header: `${t} ${TASK_SPECS[t].primaryMetric} (n=${n(t)})`,
        align: "right",
      });
      if (TASK_SPECS[t].kind === "greedy") {
        columns.push({ key: `${t}:ppl`, header: `${t} ppl`, align: "right" });
      }
    }
    const table: Record<string, string>[] = [{ config: "chance", setting: "" }];
    for (const t of tasks) table[0][t] = fmt(TASK_SPECS[t].chance);
    for (const c of configs) {
      const row: Record<string, string> = { config: c };
      for (const r of rows.filter((r) => r.point.config === c)) {
        row.setting = settingLabel(r.point);
        row[r.point.task] = fmt(r.metrics[TASK_SPECS[r.point.task].primaryMetric]);
        if (r.metrics.ppl !== null) row[`${r.point.task}:ppl`] = fmt(r.metrics.ppl, 2);
      }
      table.push(row);
    }
    out.push(toMarkdown(table, columns));
  }
  return out.join("\n");
}

/**
 * Writes table.md ({@linkcode zeroShotTables}), table.csv (one line per record, every metric)
 * and the figure ({@linkcode zeroShotFigures}: figure.{json,html}, or
 * `figure-<model>-<limit>[-nobos]` per table when there are several) into `outDir`.
 *
 * @param records the experiment's records
 * @param outDir the result folder
 */
export async function writeZeroShotReport(
  records: readonly ZeroShotRecord[],
  outDir: string,
): Promise<void> {
  await Deno.writeTextFile(join(outDir, "table.md"), zeroShotTables(records));
  await Deno.writeTextFile(
    join(outDir, "table.csv"),
    toCsv(records, [
      { key: "point.model", header: "model" },
      { key: "point.config", header: "config" },
      { key: "point.bits", header: "bits" },
      { key: "point.groupSize", header: "group" },
      { key: "point.rank", header: "rank" },
      { key: "point.task", header: "task" },
      { key: "point.limit", header: "limit" },
      { key: "metrics.n", header: "n" },
      { key: "metrics.primaryMetric", header: "metric" },
      { key: "metrics.acc", header: "acc" },
      { key: "metrics.acc_norm", header: "acc_norm" },
      { key: "metrics.acc_bytes", header: "acc_bytes" },
      { key: "metrics.ppl", header: "ppl" },
      { key: "metrics.chance", header: "chance" },
      { key: "metrics.truncated", header: "truncated" },
      { key: "metrics.seconds", header: "seconds" },
      { key: "metrics.examplesPerSecond", header: "examples_per_s" },
    ]),
  );
  for (const f of zeroShotFigures(records)) {
    await writeFigure(f.figure, join(outDir, f.name.replace(/^zero-shot-accuracy/, "figure")));
  }
}

/** Short task names for axis labels. */
const TASK_LABELS: Readonly<Record<TaskName, string>> = {
  arc_easy: "ARC-e",
  arc_challenge: "ARC-c",
  openbook_qa: "OBQA",
  piqa: "PIQA",
  boolq: "BoolQ",
  copa: "COPA",
  winogrande: "WinoGrande",
  lambada_openai: "LAMBADA",
  hellaswag: "HellaSwag",
};

const slug = (s: string) => s.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");

/**
 * lm-eval's standard error of a mean of 0/1 scores: sqrt(p (1 − p) / (n − 1)).
 *
 * @param p the accuracy
 * @param n the examples scored
 * @returns the standard error (0 for fewer than two examples)
 */
export function accuracyStderr(p: number, n: number): number {
  return n > 1 ? Math.sqrt(p * (1 - p) / (n - 1)) : 0;
}

/** Fraction of a task's slot (1 on the x axis) that its bar group fills (Plotly's bargap 0.2). */
const GROUP_WIDTH = 0.8;

/**
 * One grouped bar chart of the headline metric per task ({@linkcode zeroShotTables}'s cells)
 * for one table's records: x = task, one bar per config (± lm-eval's standard error), and a
 * dashed segment across each task's bar group at its chance level.
 */
function accuracyFigure(rows: readonly ZeroShotRecord[]): PlotlyFigure {
  const { model, limit, addBos } = rows[0].point;
  const tasks = distinctOf(rows.map((r) => r.point.task));
  const configs = distinctOf(rows.map((r) => r.point.config));
  const data: PlotlyTrace[] = configs.map((config, i) => {
    const rs = rows.filter((r) => r.point.config === config);
    const at = tasks.map((t) => rs.find((r) => r.point.task === t));
    const value = (r: ZeroShotRecord | undefined) =>
      r ? r.metrics[TASK_SPECS[r.point.task].primaryMetric] : null;
    const color = PAPER_COLORWAY[i % PAPER_COLORWAY.length];
    return {
      type: "bar",
      name: config,
      x: tasks.map((_, j) => j),
      y: at.map(value),
      error_y: {
        type: "data",
        array: at.map((r) => r ? accuracyStderr(value(r) ?? 0, r.metrics.n) : 0),
        visible: true,
        thickness: 1,
        width: 2,
        color: "#444",
      },
      marker: { color },
      customdata: at.map((r) =>
        r ? [TASK_LABELS[r.point.task], TASK_SPECS[r.point.task].primaryMetric, r.metrics.n] : null
      ),
      hovertemplate: `${config} (${settingLabel(rs[0].point)})<br>%{customdata[0]} ` +
        "%{customdata[1]} %{y:.3f} ± %{error_y.array:.3f} (n=%{customdata[2]})<extra></extra>",
    };
  });
  const half = GROUP_WIDTH / 2;
  data.push({
    type: "scatter",
    mode: "lines",
    name: "chance",
    x: tasks.flatMap((_, j) => [j - half, j + half, null]),
    y: tasks.flatMap((t) => [TASK_SPECS[t].chance, TASK_SPECS[t].chance, null]),
    line: { dash: "dash", color: "#000000", width: 1.5 },
    hovertemplate: "chance %{y:.2f}<extra></extra>",
  });
  const top = Math.max(
    ...data.slice(0, -1).flatMap((d) =>
      (d.y as Array<number | null>).map((y, j) =>
        (y ?? 0) + ((d.error_y as { array: number[] }).array[j] ?? 0)
      )
    ),
    ...tasks.map((t) => TASK_SPECS[t].chance),
  );
  const examples = limit === null ? "all examples" : `first ${limit} examples per task`;
  return {
    data,
    layout: {
      title: { text: `${model}: zero-shot accuracy (${examples}${addBos ? "" : ", no BOS"})` },
      xaxis: {
        title: { text: "task (headline metric as lm-eval reports it)" },
        tickmode: "array",
        tickvals: tasks.map((_, j) => j),
        ticktext: tasks.map((t) => `${TASK_LABELS[t]}<br>${TASK_SPECS[t].primaryMetric}`),
        tickangle: 0,
        tickfont: { size: 10 },
        range: [-0.5, tasks.length - 0.5],
        showgrid: false,
      },
      yaxis: {
        title: { text: "accuracy (± standard error)" },
        // room above the bars for the legend
        range: [0, Math.min(1, top) + 0.2],
        dtick: 0.1,
      },
      barmode: "group",
      bargap: 1 - GROUP_WIDTH,
      bargroupgap: 0.05,
      legend: {
        orientation: "h",
        x: 0.01,
        xanchor: "left",
        y: 0.99,
        yanchor: "top",
      },
      template: "plotly_white",
    },
  };
}

/**
 * The figures of zero_shot records: per (model, limit, BOS) table, a grouped bar chart of the
 * headline metric per task, one bar per config, chance dashed (`zero-shot-accuracy`, suffixed
 * with `-<model>-<limit>[-nobos]` when the records make several tables).
 *
 * @param records the experiment's records
 * @returns the named figures
 */
export function zeroShotFigures(records: readonly ZeroShotRecord[]): NamedFigure[] {
  const groups = tableGroups(records);
  return groups.map((rows) => {
    const { model, limit, addBos } = rows[0].point;
    const suffix = groups.length > 1
      ? `-${slug(model)}-${limit ?? "all"}${addBos ? "" : "-nobos"}`
      : "";
    return { name: `zero-shot-accuracy${suffix}`, figure: accuracyFigure(rows) };
  });
}

/**
 * For records written before configs were recorded: a config whose points include theirs, from
 * their points and the files hashed in their provenance (the model folder is the one holding
 * its `.safetensors`; a task's file is the `<task>.jsonl` hashed, named by its task alone when it
 * is the shared tree's file).
 *
 * @param records records of one model, limit and BOS setting
 * @returns the config (input form), or undefined when it cannot be inferred
 */
export function zeroShotConfigFromRecords(records: readonly ZeroShotRecord[]): unknown {
  if (!records.length) return undefined;
  const model = recordedModelDir(records[0]);
  const models = distinctOf(records.map((r) => r.point.model));
  const limits = distinctOf(records.map((r) => r.point.limit));
  const addBos = distinctOf(records.map((r) => r.point.addBos));
  if (!model || models.length !== 1 || limits.length !== 1 || addBos.length !== 1) {
    return undefined;
  }
  const files = distinctOf(
    records.flatMap((r) => Object.keys((r.provenance as { files?: object }).files ?? {})),
  );
  const tasks = [];
  for (const name of distinctOf(records.map((r) => r.point.task))) {
    const recorded = files.filter((f) => basename(f) === `${name}.jsonl`);
    const path = recorded.length === 1 ? locateRecordedFile(recorded[0]) : null;
    if (!path) return undefined;
    tasks.push(path === taskPath(name) ? name : { name, path });
  }
  const configs = [];
  for (const name of distinctOf(records.map((r) => r.point.config))) {
    const settings = distinctOf(
      records.filter((r) => r.point.config === name).map((r) =>
        JSON.stringify([r.point.bits, r.point.groupSize, r.point.rank])
      ),
    );
    if (settings.length !== 1) return undefined;
    const { bits, groupSize, rank } = records.find((r) => r.point.config === name)!.point;
    configs.push(bits === 16 ? { name, bits } : { name, bits, groupSize: groupSize!, rank });
  }
  return {
    model: { name: models[0], path: model },
    tasks,
    ...(limits[0] === null ? {} : { limit: limits[0] }),
    addBos: addBos[0],
    configs,
  };
}

/** The `zero_shot` experiment's declaration. */
export const zeroShot: Experiment<ZeroShotConfig, ZeroShotPoint, ZeroShotMetrics> = {
  name: EXPERIMENT,
  summary: "zero-shot accuracy (lm-eval tasks and conventions) over quantization settings",
  schema: ZeroShotConfigSchema,
  points: zeroShotPoints,
  open: openZeroShot,
  describePoint: (p) => {
    const setting = settingLabel(p);
    return `${p.model} ${p.config}${setting === p.config ? "" : ` (${setting})`} on ${p.task}`;
  },
  tables: zeroShotTables,
  writeReport: writeZeroShotReport,
  figures: (records) => Promise.resolve(zeroShotFigures(records)),
  reproducibleMetrics: [
    "n",
    "acc",
    "acc_norm",
    "acc_bytes",
    "primaryMetric",
    "chance",
    "ppl",
    "requests",
    "tokens",
    "continuationTokens",
    "truncated",
  ],
  configFromRecords: zeroShotConfigFromRecords,
};
