/**
 * Experiment `synthetic`: no model, just a deterministic function of the point, with an optional
 * delay per point. It exercises the harness end to end in seconds (sweeps, shards, Slurm,
 * resume after a kill, figures with error bars, reproduce) and is what the harness tests run.
 *
 * Each point is (x, seed); its metric `value = x² / 10 + noise(x, seed)` with a deterministic
 * pseudo-random noise in [-0.5, 0.5), so repeats over seeds give error bars.
 *
 * @module
 */

import { join } from "node:path";
import { z } from "zod";
import {
  collectProvenance,
  lineFigure,
  meanWithError,
  pivot,
  toCsv,
  toMarkdown,
  writeFigure,
} from "../results/mod.ts";
import type { Experiment } from "./experiment.ts";
import type { SweepRecord } from "./runner.ts";

/** Experiment name, as recorded in every record. */
export const EXPERIMENT = "synthetic";

/** The configuration. */
export const SyntheticConfigSchema = z.strictObject({
  /** The x values. */
  xs: z.array(z.number()).min(1),
  /** Seeds per x (repeats). */
  repeats: z.int().min(1).default(1),
  /** Milliseconds each point takes. */
  delayMs: z.int().min(0).default(0),
});
/** The configuration (parsed). */
export type SyntheticConfig = z.output<typeof SyntheticConfigSchema>;

/** One point. */
export interface SyntheticPoint {
  x: number;
  seed: number;
}

/** What a point measures. */
export interface SyntheticMetrics {
  /** The deterministic value. */
  value: number;
  /** The process that measured it (not reproducible: left out of comparisons). */
  pid: number;
}

/** A record of this experiment. */
export type SyntheticRecord = SweepRecord<SyntheticPoint, SyntheticMetrics>;

/**
 * The value of a point: `x² / 10` plus a deterministic noise in [-0.5, 0.5) from (x, seed).
 *
 * @param p the point
 * @returns the value
 */
export function syntheticValue(p: SyntheticPoint): number {
  let h = 2166136261 >>> 0; // FNV-1a over the text of the point
  for (const ch of `${p.x}:${p.seed}`) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0; // murmur3's finalizer mixes all bits
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  h = (h ^ (h >>> 16)) >>> 0;
  return (p.x * p.x) / 10 + h / 2 ** 32 - 0.5;
}

function tables(records: SyntheticRecord[]): string {
  if (!records.length) return "";
  const t = pivot(records, {
    row: "point.x",
    col: "point.seed",
    value: "metrics.value",
    rowHeader: "x \\ seed",
    format: (v) => (v as number).toFixed(4),
  });
  return `### synthetic: value (x × seed)\n\n${toMarkdown(t.rows, t.columns)}`;
}

function valueFigure(records: SyntheticRecord[]) {
  const m = meanWithError(records.map((r) => ({ x: r.point.x, y: r.metrics.value })));
  return lineFigure({
    title: "synthetic: value vs x (mean ± sd over seeds)",
    xTitle: "x (arbitrary units)",
    yTitle: "value (arbitrary units)",
    series: [{ name: "value", x: m.x, y: m.y, error: m.error }],
  });
}

/** The `synthetic` experiment's declaration. */
export const synthetic: Experiment<SyntheticConfig, SyntheticPoint, SyntheticMetrics> = {
  name: EXPERIMENT,
  summary: "model-free test experiment: value = f(x, seed), optional delay per point",
  schema: SyntheticConfigSchema,
  points: (config) =>
    config.xs.flatMap((x) => Array.from({ length: config.repeats }, (_, seed) => ({ x, seed }))),
  open: (config) =>
    Promise.resolve({
      provenance: () => collectProvenance({ seed: 0 }),
      runPoint: async (p: SyntheticPoint) => {
        if (config.delayMs > 0) await new Promise((ok) => setTimeout(ok, config.delayMs));
        return { value: syntheticValue(p), pid: Deno.pid };
      },
      close: () => {},
    }),
  describePoint: (p) => `x=${p.x} seed=${p.seed}`,
  tables,
  writeReport: async (records, outDir) => {
    await Deno.writeTextFile(join(outDir, "table.md"), tables(records));
    await Deno.writeTextFile(
      join(outDir, "table.csv"),
      toCsv(records, [
        { key: "point.x", header: "x" },
        { key: "point.seed", header: "seed" },
        { key: "metrics.value", header: "value" },
      ]),
    );
    await writeFigure(valueFigure(records), join(outDir, "figure"));
  },
  figures: (records) => Promise.resolve([{ name: "value-vs-x", figure: valueFigure(records) }]),
  reproducibleMetrics: ["value"],
};
