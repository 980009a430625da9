/**
 * The sweep runner: runs the points of an experiment one after another, appends one record per
 * finished point to a JSONL file at once, and on a rerun skips the points already recorded.
 *
 * @module
 */

import { appendRecord, canonicalJson, pointKey, readRecords } from "../results/store.ts";

/** The record written for a finished point. */
export interface SweepRecord<P = unknown, M = Record<string, unknown>> {
  /** The experiment's name. */
  experiment: string;
  /** {@linkcode pointKey} of (experiment, point). */
  key: string;
  /** The point's settings. */
  point: P;
  /** What `runPoint` returned. */
  metrics: M;
  /** What `provenance()` returned for this point. */
  provenance: object;
  /** Always "ok": failed points are not recorded. */
  status: "ok";
  /** When the point started, ISO 8601 UTC. */
  started: string;
  /** Wall-clock seconds of `runPoint`. */
  seconds: number;
  /**
   * The experiment's resolved configuration, when the caller gave one ({@linkcode
   * SweepOptions.config}): with the point, what `deno task reproduce` needs to rerun it. Absent
   * in records written before it was recorded.
   */
  config?: unknown;
}

/** A deterministic share of a sweep's points: those whose index `i` has `i % count === index`. */
export interface Shard {
  /** This shard, 0 ≤ index < count. */
  index: number;
  /** Number of shards. */
  count: number;
}

/** What `runPoint` gets besides the point. */
export interface PointContext {
  /** The experiment's name. */
  experiment: string;
  /** The point's key. */
  key: string;
  /** The point's index in `points`. */
  index: number;
  /** Number of points in the sweep. */
  total: number;
}

/** Progress of a sweep, reported before each point runs and once at the end. */
export interface SweepProgress<P = unknown> {
  /** Points finished, including the skipped ones. */
  done: number;
  /** Points in the sweep. */
  total: number;
  /** Points skipped because they were already recorded. */
  skipped: number;
  /** The point about to run; null in the final report. */
  current: P | null;
  /** Seconds since the sweep started. */
  elapsedSeconds: number;
  /** Estimated seconds left (mean time of the points run so far × points left); null before the first point has finished. */
  etaSeconds: number | null;
}

/** Options of {@linkcode runSweep}. */
export interface SweepOptions<P, M> {
  /** The experiment's name (part of every point's key). */
  experiment: string;
  /** The points, run in this order. */
  points: readonly P[];
  /** The JSONL result file. */
  outPath: string;
  /** Measures one point. */
  runPoint: (point: P, ctx: PointContext) => Promise<M>;
  /** Collects provenance; called before each point that runs. */
  provenance: () => Promise<object>;
  /** Receives progress reports. */
  onProgress?: (progress: SweepProgress<P>) => void;
  /** Receives warnings of the result store (a truncated final line); default console.warn. */
  onWarning?: (message: string) => void;
  /** Recorded as each record's `config` (the resolved configuration the points come from). */
  config?: unknown;
  /** Run only this shard's points (by index in `points`); default all. */
  shard?: Shard;
  /**
   * Further result files whose "ok" records of this experiment count as done (e.g. the merged
   * results.jsonl beside a shard's file); records are only ever appended to `outPath`.
   */
  donePaths?: readonly string[];
}

/** What a finished sweep did. */
export interface SweepSummary<P, M> {
  /** Points in the sweep (in this shard, when sharded). */
  total: number;
  /** Points skipped as already recorded (or repeated in `points`). */
  skipped: number;
  /** The records written by this call, in order. */
  records: SweepRecord<P, M>[];
  /** Wall-clock seconds of this call. */
  seconds: number;
}

/**
 * Runs a sweep, resuming where an earlier run stopped.
 *
 * Points whose key already has an "ok" record of this experiment in `outPath` are skipped; the
 * others run sequentially, and each one's record is appended (and fsynced) as soon as it
 * finishes. If a point throws, nothing is recorded for it and an Error naming the point is
 * thrown (its `cause` is the original error); the records already written stay.
 *
 * @param options the experiment, its points, the result file and the callbacks
 * @returns what was run and written
 */
export async function runSweep<P, M extends object = Record<string, unknown>>(
  options: SweepOptions<P, M>,
): Promise<SweepSummary<P, M>> {
  const { experiment, points, outPath, onProgress } = options;
  const t0 = performance.now();
  const elapsed = () => (performance.now() - t0) / 1000;
  const onWarning = options.onWarning ?? console.warn;

  const { shard } = options;
  if (
    shard && !(Number.isInteger(shard.count) && shard.count >= 1 &&
      Number.isInteger(shard.index) && shard.index >= 0 && shard.index < shard.count)
  ) {
    throw new RangeError(`runSweep: invalid shard ${shard.index} of ${shard.count}`);
  }
  const existing: Partial<SweepRecord>[] = [];
  for (const path of [outPath, ...options.donePaths ?? []]) {
    existing.push(...await readRecords<Partial<SweepRecord>>(path, { onWarning }));
  }
  const done = new Set(
    existing.filter((r) => r.experiment === experiment && r.status === "ok").map((r) => r.key),
  );
  const selected = [...points.entries()].filter(([i]) => !shard || i % shard.count === shard.index);
  const keys = points.map((p) => pointKey(experiment, p));
  const records: SweepRecord<P, M>[] = [];
  let finished = 0;
  let skipped = 0;
  let runSeconds = 0;
  const report = (current: P | null) => {
    if (!onProgress) return;
    const left = selected.length - finished;
    onProgress({
      done: finished,
      total: selected.length,
      skipped,
      current,
      elapsedSeconds: elapsed(),
      etaSeconds: records.length > 0 ? (runSeconds / records.length) * left : null,
    });
  };

  for (const [index, point] of selected) {
    const key = keys[index];
    if (done.has(key)) {
      finished++;
      skipped++;
      continue;
    }
    report(point);
    const started = new Date().toISOString();
    let metrics: M;
    let provenance: object;
    const p0 = performance.now();
    try {
      provenance = await options.provenance();
      metrics = await options.runPoint(point, { experiment, key, index, total: points.length });
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      throw new Error(
        `sweep ${experiment}: point ${index + 1}/${points.length} ${canonicalJson(point)} ` +
          `failed: ${message}`,
        { cause: error },
      );
    }
    const seconds = (performance.now() - p0) / 1000;
    const record: SweepRecord<P, M> = {
      experiment,
      key,
      point,
      metrics,
      provenance,
      status: "ok",
      started,
      seconds,
      ...(options.config === undefined ? {} : { config: options.config }),
    };
    await appendRecord(outPath, record as unknown as Record<string, unknown>, { onWarning });
    records.push(record);
    done.add(key);
    finished++;
    runSeconds += seconds;
  }
  report(null);
  return { total: selected.length, skipped, records, seconds: elapsed() };
}
