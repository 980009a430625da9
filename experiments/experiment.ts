/**
 * What an experiment declares, so that every entry point (the sweep CLI with its local and Slurm
 * executors, `deno task figures`, `deno task reproduce`, the notebooks) can drive it the same
 * way: its config schema, its points, how to run one point, its tables and its figures.
 *
 * {@linkcode runExperiment} runs (or resumes) an experiment's sweep, whole or one shard of it,
 * and records the resolved config in every record (paths made portable as `repo:`/`shared:`).
 *
 * @module
 */

import { dirname, join, relative, resolve } from "node:path";
import type { z } from "zod";
import { REPO_ROOT, sharedRoot } from "../datasets/mod.ts";
import type { PlotlyFigure } from "../results/figure.ts";
import { mergeResultFiles, type MergeSummary, recordKey } from "../results/merge.ts";
import { pointKey, readRecords } from "../results/store.ts";
import { resolveConfigPath, resolvePaths } from "./config_file.ts";
import {
  type PointContext,
  runSweep,
  type Shard,
  type SweepProgress,
  type SweepRecord,
} from "./runner.ts";

/** A figure an experiment declares, named for file names (`<set>-<name>.svg`). */
export interface NamedFigure {
  /** File-name friendly name, e.g. `ppl-vs-rank`. */
  name: string;
  /** The figure (experiment style; paper style is applied by `deno task figures`). */
  figure: PlotlyFigure;
}

/** What running points needs (a loaded model, tokenizer, ...), opened once per sweep. */
export interface PointRunner<P, M> {
  /** Measures one point. */
  runPoint(point: P, ctx: PointContext): Promise<M>;
  /** The provenance of a point about to run (files hashed, library version, ...). */
  provenance(): Promise<object>;
  /** Releases what `open` acquired. */
  close(): void | Promise<void>;
}

/** An experiment's declaration. `C` is the parsed config, `P` a point, `M` its metrics. */
export interface Experiment<C, P, M extends object> {
  /** Name, recorded in every record's `experiment` field. */
  name: string;
  /** One line for `--help`. */
  summary: string;
  /** The config's zod schema (parsed with {@linkcode parseConfig}). */
  // deno-lint-ignore no-explicit-any
  schema: z.ZodType<C, any>;
  /** The config's points, in run order. */
  points(config: C): P[];
  /** Opens what running points needs. */
  open(config: C): Promise<PointRunner<P, M>>;
  /** Short text for a point in progress lines. */
  describePoint(point: P): string;
  /** The Markdown tables of a set of records. */
  tables(records: SweepRecord<P, M>[]): string;
  /** Writes the result folder's report (table.md, table.csv, figure.json/html). */
  writeReport(records: SweepRecord<P, M>[], outDir: string): Promise<void>;
  /** The figures of a set of records (what `deno task figures` renders). */
  figures(records: SweepRecord<P, M>[]): Promise<NamedFigure[]>;
  /** Metrics that must reproduce (timings and the like are left out). */
  reproducibleMetrics: readonly string[];
  /**
   * For records written before configs were recorded: a config (input form, paths absolute or
   * `repo:`/`shared:`) whose points include theirs; undefined when it cannot be inferred.
   */
  configFromRecords?(records: SweepRecord<P, M>[]): unknown;
}

/** An experiment of any types (for registries). */
// deno-lint-ignore no-explicit-any
export type AnyExperiment = Experiment<any, any, any>;

/** The result file of a folder. */
export const RESULTS_FILE = "results.jsonl";

/**
 * The result file of shard `index` of a folder: `results.shard-<index>.jsonl`.
 *
 * @param outDir the result folder
 * @param index the shard
 * @returns its path
 */
export function shardPath(outDir: string, index: number): string {
  return join(outDir, `results.shard-${index}.jsonl`);
}

/** Options of {@linkcode runExperiment}. */
export interface RunExperimentOptions<P> {
  /** The result folder. */
  outDir: string;
  /**
   * Run only this shard's points, appending to `results.shard-<index>.jsonl` (points already in
   * that file or in `results.jsonl` are skipped); no report is written.
   */
  shard?: Shard;
  /** Sweep progress. */
  onProgress?: (p: SweepProgress<P>) => void;
  /** Store warnings (default console.warn). */
  onWarning?: (message: string) => void;
}

/**
 * Runs (or resumes) an experiment's sweep. Without a shard, appends to `results.jsonl` and then
 * rewrites the report from all records in it.
 *
 * @param exp the experiment
 * @param config the parsed config
 * @param options result folder, shard, callbacks
 * @returns the records of the file written (`results.jsonl`, or the shard's file)
 */
export async function runExperiment<C, P, M extends object>(
  exp: Experiment<C, P, M>,
  config: C,
  options: RunExperimentOptions<P>,
): Promise<SweepRecord<P, M>[]> {
  await Deno.mkdir(options.outDir, { recursive: true });
  const results = join(options.outDir, RESULTS_FILE);
  const outPath = options.shard ? shardPath(options.outDir, options.shard.index) : results;
  const points = exp.points(config);
  let runner: PointRunner<P, M> | null = null;
  try {
    await runSweep<P, M>({
      experiment: exp.name,
      points,
      outPath,
      shard: options.shard,
      donePaths: options.shard ? [results] : [],
      config: portableConfig(config),
      onProgress: options.onProgress,
      onWarning: options.onWarning,
      provenance: async () => {
        runner ??= await exp.open(config);
        return withExecutor(await runner.provenance());
      },
      runPoint: async (point, ctx) => {
        runner ??= await exp.open(config);
        return await runner.runPoint(point, ctx);
      },
    });
  } finally {
    await (runner as PointRunner<P, M> | null)?.close();
  }
  const records = await readRecords<SweepRecord<P, M>>(outPath, { onWarning: options.onWarning });
  if (!options.shard) await exp.writeReport(records, options.outDir);
  return records;
}

/** Adds the Slurm job (when running under Slurm) to a point's provenance. */
function withExecutor(provenance: object): object {
  const env = (name: string) => {
    const state = Deno.permissions.querySync({ name: "env", variable: name }).state;
    return state === "granted" ? Deno.env.get(name) ?? null : null;
  };
  const jobId = env("SLURM_JOB_ID");
  if (jobId === null) return provenance;
  return {
    ...provenance,
    slurm: {
      jobId,
      arrayJobId: env("SLURM_ARRAY_JOB_ID"),
      arrayTaskId: env("SLURM_ARRAY_TASK_ID"),
      cluster: env("SLURM_CLUSTER_NAME"),
      node: env("SLURMD_NODENAME"),
    },
  };
}

/**
 * A config with every `path` field under this repository written as `repo:<relative>` and under
 * the shared tree as `shared:<relative>`, so a recorded config reruns on another checkout.
 *
 * @param config a parsed config (absolute paths)
 * @returns the same structure with portable paths
 */
export function portableConfig(config: unknown): unknown {
  const shared = sharedRoot();
  const portable = (path: string) => {
    const abs = resolve(path);
    for (const [prefix, root] of [["repo:", REPO_ROOT], ["shared:", shared]] as const) {
      const rel = relative(root, abs);
      if (rel !== "" && !rel.startsWith("..") && !rel.startsWith("/")) return prefix + rel;
    }
    return abs;
  };
  const walk = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(walk);
    if (value && typeof value === "object") {
      return Object.fromEntries(
        Object.entries(value).map((
          [k, v],
        ) => [
          k,
          k === "path" && typeof v === "string" && !/^(repo|shared):/.test(v)
            ? portable(v)
            : walk(v),
        ]),
      );
    }
    return value;
  };
  return walk(config);
}

/**
 * The inverse of {@linkcode portableConfig}: `repo:`/`shared:` paths made absolute.
 *
 * @param config a recorded config
 * @returns the config with absolute paths
 */
export function localConfig(config: unknown): unknown {
  return resolvePaths(config, REPO_ROOT);
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * A file or folder named in a record (its provenance or config), found on this machine: a
 * `repo:`/`shared:` path resolved; an absolute path (records keep those of the machine that
 * wrote them) mapped to the longest tail of it (two parts at least) that exists under this
 * repository or the shared tree, and only failing that the path itself, so that a record of
 * another checkout resolves to this one's files.
 *
 * @param path the recorded path (absolute, or `repo:`/`shared:`)
 * @returns an existing path, or null
 */
export function locateRecordedFile(path: string): string | null {
  const abs = resolveConfigPath(path, REPO_ROOT);
  if (path.startsWith("repo:") || path.startsWith("shared:")) return exists(abs) ? abs : null;
  const parts = abs.split("/").filter(Boolean);
  const roots = [REPO_ROOT, sharedRoot()];
  for (let i = 1; i <= parts.length - 2; i++) {
    for (const root of roots) {
      const candidate = join(root, ...parts.slice(i));
      if (exists(candidate)) return candidate;
    }
  }
  return exists(abs) ? abs : null;
}

/**
 * The checkpoint folder a record was measured on, found on this machine: its config's
 * `model.path`, else the folder of the `.safetensors` file hashed in its provenance.
 *
 * @param record a record
 * @returns the folder, or null when the record names none or it is not found
 */
export function recordedModelDir(
  record: { config?: unknown; provenance?: unknown },
): string | null {
  const path = (record.config as { model?: { path?: unknown } } | undefined)?.model?.path;
  if (typeof path === "string") return locateRecordedFile(path);
  const files = Object.keys((record.provenance as { files?: object } | undefined)?.files ?? {});
  const weights = files.find((f) => f.endsWith(".safetensors"));
  return weights ? locateRecordedFile(dirname(weights)) : null;
}

/**
 * The shard files of a result folder, by shard index.
 *
 * @param outDir the result folder
 * @returns paths of `results.shard-<k>.jsonl`, ascending k
 */
export async function listShardFiles(outDir: string): Promise<string[]> {
  const found: Array<[number, string]> = [];
  try {
    for await (const entry of Deno.readDir(outDir)) {
      const m = entry.isFile ? /^results\.shard-(\d+)\.jsonl$/.exec(entry.name) : null;
      if (m) found.push([Number(m[1]), join(outDir, entry.name)]);
    }
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
  return found.sort((a, b) => a[0] - b[0]).map(([, path]) => path);
}

/**
 * Merges a folder's shard files into its results.jsonl, one record per point (the first one
 * found: results.jsonl, then shard 0, 1, ...), sorted in the config's point order (records of
 * other points last), and removes the shard files.
 *
 * @param exp the experiment
 * @param config its parsed config (for the point order)
 * @param outDir the result folder
 * @param onWarning store warnings
 * @returns what was merged
 */
export async function mergeShards<C, P, M extends object>(
  exp: Experiment<C, P, M>,
  config: C,
  outDir: string,
  onWarning?: (message: string) => void,
): Promise<MergeSummary> {
  const index = new Map(exp.points(config).map((p, i) => [pointKey(exp.name, p), i]));
  return await mergeResultFiles(join(outDir, RESULTS_FILE), await listShardFiles(outDir), {
    order: (r) => index.get(recordKey(r) ?? "") ?? index.size,
    onWarning,
  });
}

/**
 * The records of an experiment in a result folder's results.jsonl.
 *
 * @param exp the experiment
 * @param outDir the result folder
 * @returns its records, in file order
 */
export async function readExperimentRecords<C, P, M extends object>(
  exp: Experiment<C, P, M>,
  outDir: string,
): Promise<SweepRecord<P, M>[]> {
  const records = await readRecords<SweepRecord<P, M>>(join(outDir, RESULTS_FILE));
  return records.filter((r) => r.experiment === exp.name);
}
