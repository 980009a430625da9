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

import { join } from "node:path";
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
import { collectProvenance, type Column, readRecords, toCsv, toMarkdown } from "../results/mod.ts";
import { QuantState } from "./quant_state.ts";
import { runSweep, type SweepProgress, type SweepRecord } from "./runner.ts";
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
  /** Folder for results.jsonl, table.md and table.csv. */
  outDir: string;
  /** Sweep progress. */
  onProgress?: (p: SweepProgress<ZeroShotPoint>) => void;
}

/**
 * Runs (or resumes) the experiment and rewrites its tables from all records in the folder.
 *
 * @param config the parsed config
 * @param options the result folder and a progress callback
 * @returns the records of the result file
 */
export async function runZeroShot(
  config: ZeroShotConfig,
  options: RunOptions,
): Promise<ZeroShotRecord[]> {
  await Deno.mkdir(options.outDir, { recursive: true });
  const outPath = join(options.outDir, "results.jsonl");
  const paths = new Map<TaskName, string>(
    config.tasks.map((t) => typeof t === "string" ? [t, taskPath(t)] : [t.name, t.path]),
  );
  const maxRank = Math.max(0, ...config.configs.filter((s) => s.bits !== 16).map((s) => s.rank));
  const tokenizer = await loadTokenizer(config.model.path);
  const tasks = new Map<TaskName, TaskData>();
  let model: Model | null = null;
  let state: QuantState | null = null;
  try {
    await runSweep<ZeroShotPoint, ZeroShotMetrics>({
      experiment: EXPERIMENT,
      points: zeroShotPoints(config),
      outPath,
      onProgress: options.onProgress,
      provenance: () =>
        collectProvenance({
          files: [config.model.path, ...paths.values()],
          library: libraryVersion(),
        }),
      runPoint: async (p) => {
        model ??= await Model.load(config.model.path, { nThreads: config.threads });
        state ??= new QuantState(model, maxRank);
        let task = tasks.get(p.task);
        if (!task) {
          task = await loadTask(p.task, { path: paths.get(p.task), limit: p.limit ?? undefined });
          tasks.set(p.task, task);
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
    });
  } finally {
    (model as Model | null)?.close();
  }
  const records = await readRecords<ZeroShotRecord>(outPath);
  await writeZeroShotReport(records, options.outDir);
  return records;
}

const fmt = (v: unknown, digits = 4) =>
  typeof v === "number" && Number.isFinite(v) ? v.toFixed(digits) : "";

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
  const groups = new Map<string, ZeroShotRecord[]>();
  for (const r of records) {
    const key = JSON.stringify([r.point.model, r.point.limit, r.point.addBos]);
    groups.set(key, [...groups.get(key) ?? [], r]);
  }
  for (const rows of groups.values()) {
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
 * Writes table.md ({@linkcode zeroShotTables}) and table.csv (one line per record, every metric)
 * into `outDir`.
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
}
