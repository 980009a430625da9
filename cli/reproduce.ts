/**
 * `deno task reproduce <results.jsonl> [--limit N]`: reruns the points of a result file with
 * the settings recorded in it (each record's point and the config recorded with it; for records
 * written before configs were recorded, the config the experiment infers from the records, or
 * `--config FILE`) and reports, per metric that must reproduce, the recorded and the new value
 * and their absolute and relative difference. Exits 1 when a difference is beyond tolerance
 * (`|new − recorded| > atol + rtol·|recorded|`).
 *
 * @module
 */

import { relative } from "node:path";
import { readConfigFile } from "../experiments/config_file.ts";
import {
  type AnyExperiment,
  localConfig,
  locateRecordedFile,
  type PointRunner,
} from "../experiments/experiment.ts";
import { experimentNames, findExperiment } from "../experiments/registry.ts";
import type { SweepRecord } from "../experiments/runner.ts";
import { parseConfig } from "../experiments/schema.ts";
import { hashFile } from "../results/provenance.ts";
import { canonicalJson, pointKey, readRecords } from "../results/store.ts";
import { toMarkdown } from "../results/table.ts";
import { intOption, parseCli, runMain, UsageError } from "./args.ts";

/** One compared metric of one point. */
export interface MetricDiff {
  /** The record's line in the file (1-based). */
  line: number;
  /** The point, as text. */
  point: string;
  /** The metric. */
  metric: string;
  /** As recorded. */
  recorded: number | string | boolean | null;
  /** As measured now. */
  rerun: number | string | boolean | null;
  /** |rerun − recorded| (numbers only). */
  absDiff: number | null;
  /** absDiff / |recorded| (numbers only; null when recorded is 0). */
  relDiff: number | null;
  /** Within tolerance. */
  ok: boolean;
}

/** What {@linkcode reproduce} found. */
export interface ReproduceReport {
  /** The result file. */
  file: string;
  /** Points rerun. */
  points: number;
  /** Every compared metric. */
  diffs: MetricDiff[];
  /** Problems that do not stop the rerun (changed input files, key mismatches). */
  warnings: string[];
  /** Tolerances used. */
  rtol: number;
  /** Tolerances used. */
  atol: number;
}

/** Options of {@linkcode reproduce}. */
export interface ReproduceOptions {
  /** Rerun only the first N records. */
  limit?: number;
  /** Relative tolerance; default 1e-4. */
  rtol?: number;
  /** Absolute tolerance; default 1e-9. */
  atol?: number;
  /** A config file to use instead of the recorded or inferred one. */
  configFile?: string;
  /** Called before each point with its index, the count and its description. */
  onPoint?: (index: number, total: number, text: string) => void;
}

type Rec = SweepRecord<unknown, Record<string, unknown>> & { line: number };

/**
 * Reruns the records of a result file and compares their metrics.
 *
 * @param file the result file
 * @param options limit, tolerances, config override, progress
 * @returns the comparison
 * @throws Error naming the file (and line, experiment or config key) when records cannot be
 *   rerun: no records, an unknown experiment, no config recorded and none inferable, an invalid
 *   config
 */
export async function reproduce(
  file: string,
  options: ReproduceOptions = {},
): Promise<ReproduceReport> {
  const rtol = options.rtol ?? 1e-4;
  const atol = options.atol ?? 1e-9;
  const all = (await readRecords<SweepRecord<unknown, Record<string, unknown>>>(file))
    .map((r, i) => ({ ...r, line: i + 1 }) as Rec);
  if (all.length === 0) throw new Error(`${file}: no records (missing or empty file)`);
  const selected = all.filter((r) => r.status === "ok").slice(0, options.limit ?? Infinity);
  const warnings: string[] = [];
  const override = options.configFile ? await readConfigFile(options.configFile) : undefined;

  // group the selected records by (experiment, config)
  const groups = new Map<string, { exp: AnyExperiment; config: unknown; records: Rec[] }>();
  const inferred = new Map<string, unknown>();
  for (const r of selected) {
    const exp = findExperiment(String(r.experiment));
    if (!exp) {
      throw new Error(
        `${file}:${r.line}: experiment '${r.experiment}' is not declared ` +
          `(known: ${experimentNames().join(", ")})`,
      );
    }
    let config: unknown;
    if (override !== undefined) {
      config = parseConfig(exp.schema, override, options.configFile!);
    } else if (r.config !== undefined) {
      config = parseConfig(
        exp.schema,
        localConfig(r.config),
        `${file}:${r.line} (the recorded config)`,
      );
    } else {
      if (!inferred.has(exp.name)) {
        const raw = exp.configFromRecords?.(all.filter((x) => x.experiment === exp.name));
        if (raw === undefined) {
          throw new Error(
            `${file}:${r.line}: the record carries no config and experiment '${exp.name}' ` +
              `cannot infer one; pass --config FILE`,
          );
        }
        inferred.set(
          exp.name,
          parseConfig(exp.schema, raw, `${file} (config inferred from the records)`),
        );
        warnings.push(
          `${file}: records without a recorded config; using the config inferred from their ` +
            `points and provenance`,
        );
      }
      config = inferred.get(exp.name);
    }
    const id = `${exp.name}\0${canonicalJson(config)}`;
    if (!groups.has(id)) groups.set(id, { exp, config, records: [] });
    groups.get(id)!.records.push(r);
  }

  const diffs: MetricDiff[] = [];
  let done = 0;
  const checkedFiles = new Map<string, string | null>();
  for (const { exp, config, records } of groups.values()) {
    let runner: PointRunner<unknown, Record<string, unknown>> | null = null;
    try {
      for (const r of records) {
        const text = exp.describePoint(r.point);
        options.onPoint?.(done, selected.length, text);
        if (pointKey(exp.name, r.point) !== r.key) {
          warnings.push(`${file}:${r.line}: key does not match the point (edited record?)`);
        }
        await checkFiles(r, file, checkedFiles, warnings);
        runner ??= await exp.open(config);
        const metrics = await runner.runPoint(r.point, {
          experiment: exp.name,
          key: r.key,
          index: done,
          total: selected.length,
        });
        for (const metric of exp.reproducibleMetrics) {
          diffs.push(compare(r, text, metric, r.metrics?.[metric], metrics[metric], rtol, atol));
        }
        done++;
      }
    } finally {
      await (runner as PointRunner<unknown, unknown> | null)?.close();
    }
  }
  return { file, points: done, diffs, warnings, rtol, atol };
}

/** Warns when an input file hashed in the record's provenance is missing or changed. */
async function checkFiles(
  r: Rec,
  file: string,
  cache: Map<string, string | null>,
  warnings: string[],
) {
  const files = (r.provenance as { files?: Record<string, string> } | undefined)?.files ?? {};
  for (const [path, sha] of Object.entries(files)) {
    if (!cache.has(path)) {
      const local = locateRecordedFile(path);
      cache.set(path, local ? await hashFile(local).catch(() => null) : null);
      if (cache.get(path) === null) warnings.push(`${file}: input ${path} not found here`);
    }
    const now = cache.get(path);
    if (now && now !== sha) {
      warnings.push(
        `${file}:${r.line}: input ${path} changed (recorded sha256 ${sha.slice(0, 12)}…, now ${
          now.slice(0, 12)
        }…)`,
      );
    }
  }
}

function compare(
  r: Rec,
  point: string,
  metric: string,
  recorded: unknown,
  rerun: unknown,
  rtol: number,
  atol: number,
): MetricDiff {
  const scalar = (v: unknown) =>
    v === undefined ? null : (typeof v === "object" && v !== null ? JSON.stringify(v) : v) as
      | number
      | string
      | boolean
      | null;
  const a = scalar(recorded);
  const b = scalar(rerun);
  if (typeof a === "number" && typeof b === "number") {
    const absDiff = Math.abs(b - a);
    return {
      line: r.line,
      point,
      metric,
      recorded: a,
      rerun: b,
      absDiff,
      relDiff: a === 0 ? (absDiff === 0 ? 0 : null) : absDiff / Math.abs(a),
      ok: absDiff <= atol + rtol * Math.abs(a),
    };
  }
  return {
    line: r.line,
    point,
    metric,
    recorded: a,
    rerun: b,
    absDiff: null,
    relDiff: null,
    ok: a === b,
  };
}

/**
 * The report as Markdown: one row per compared metric, then a summary line.
 *
 * @param report the comparison
 * @param onlyFailures list only the metrics beyond tolerance
 * @returns the text
 */
export function formatReport(report: ReproduceReport, onlyFailures = false): string {
  const num = (v: unknown) =>
    typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toPrecision(10)) : String(v);
  const sci = (v: number | null) => v === null ? "" : v === 0 ? "0" : v.toExponential(2);
  const rows = report.diffs.filter((d) => !onlyFailures || !d.ok);
  const failures = report.diffs.filter((d) => !d.ok).length;
  const table = toMarkdown(rows, [
    { key: "line", header: "line", align: "right" },
    { key: "point", header: "point" },
    { key: "metric", header: "metric" },
    { key: "recorded", header: "recorded", align: "right", format: num },
    { key: "rerun", header: "rerun", align: "right", format: num },
    { key: "absDiff", header: "abs diff", align: "right", format: (v) => sci(v as number | null) },
    { key: "relDiff", header: "rel diff", align: "right", format: (v) => sci(v as number | null) },
    { key: "ok", header: "ok", format: (v) => (v ? "yes" : "**NO**") },
  ]);
  const maxRel = Math.max(0, ...report.diffs.map((d) => d.relDiff ?? 0));
  return `${rows.length ? table : ""}\n${report.points} point(s) rerun, ` +
    `${report.diffs.length} metric value(s) compared, ${failures} beyond tolerance ` +
    `(rtol ${report.rtol}, atol ${report.atol}); largest relative difference ${sci(maxRel)}\n` +
    report.warnings.map((w) => `warning: ${w}\n`).join("");
}

const USAGE = `deno task reproduce <results.jsonl> [--limit N] [--rtol X] [--atol X] [--config FILE]

Reruns the points of a result file with the recorded settings (each record's point and the
config recorded with it; records written before configs were recorded use the config the
experiment infers from their points and provenance, or --config FILE) and compares every metric
that must reproduce (timings are not compared). Prints one row per metric with the recorded
and the new value and their absolute and relative difference; exits 1 when a difference is
beyond tolerance, |new - recorded| > atol + rtol * |recorded|.

  --limit N       rerun only the first N records
  --rtol X        relative tolerance (default 1e-4)
  --atol X        absolute tolerance (default 1e-9)
  --config FILE   use this config instead of the recorded one
  --failures      list only the metrics beyond tolerance
  --json          print the report as JSON`;

function numberOption(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) {
    throw new UsageError(`--${name}: expected a number >= 0, got '${value}'`);
  }
  return n;
}

if (import.meta.main) {
  await runMain(async () => {
    const { values, positionals } = parseCli(Deno.args, {
      limit: { type: "string" },
      rtol: { type: "string" },
      atol: { type: "string" },
      config: { type: "string" },
      failures: { type: "boolean" },
      json: { type: "boolean" },
    }, USAGE);
    const [file, ...rest] = positionals;
    if (!file) throw new UsageError(`name a result file\n\n${USAGE}`);
    if (rest.length) throw new UsageError(`unexpected argument '${rest[0]}'\n\n${USAGE}`);
    try {
      await Deno.stat(file);
    } catch {
      throw new UsageError(`${file}: no such result file`);
    }
    const tty = Deno.stderr.isTerminal();
    const report = await reproduce(file, {
      limit: values.limit === undefined ? undefined : intOption(values.limit, "limit", 0, 1),
      rtol: numberOption(values.rtol, "rtol", 1e-4),
      atol: numberOption(values.atol, "atol", 1e-9),
      configFile: values.config,
      onPoint: (i, n, text) => {
        const line = `[${i + 1}/${n}] rerunning ${text}`;
        if (tty) Deno.stderr.writeSync(new TextEncoder().encode(`\r\x1b[2K${line}`));
        else console.error(line);
      },
    });
    if (tty) Deno.stderr.writeSync(new TextEncoder().encode(`\r\x1b[2K`));
    console.log(
      values.json ? JSON.stringify(report, null, 1) : formatReport(report, values.failures),
    );
    const failures = report.diffs.filter((d) => !d.ok).length;
    if (failures) {
      throw new Error(
        `${relative(Deno.cwd(), file)}: ${failures} metric value(s) differ beyond tolerance`,
      );
    }
  });
}
