/**
 * Merging result files (the shards of a sweep) into one, one record per point.
 *
 * @module
 */

import { basename, dirname, join } from "node:path";
import { pointKey, readRecords, type StoreOptions } from "./store.ts";

/** What {@linkcode mergeResultFiles} did. */
export interface MergeSummary {
  /** Records in the merged file. */
  records: number;
  /** Records taken from the sources (new points). */
  added: number;
  /** Records dropped because their point was already in the target or an earlier source. */
  duplicates: number;
  /** The sources read (and removed, when `removeSources`). */
  sources: string[];
}

/** Options of {@linkcode mergeResultFiles}. */
export interface MergeOptions extends StoreOptions {
  /**
   * Sort key of a record (e.g. its point's index in the sweep): the merged file is sorted by it,
   * keeping file order (target first, then the sources) among equal keys. Default: no sorting.
   */
  order?: (record: Record<string, unknown>) => number;
  /** Remove the source files once the merged file is in place; default true. */
  removeSources?: boolean;
}

/**
 * The key of a record: its `key` field, else {@linkcode pointKey} of its experiment and point,
 * else null (a record that is not a sweep record; it is kept as it is).
 *
 * @param record a record
 * @returns its key, or null
 */
export function recordKey(record: Record<string, unknown>): string | null {
  if (typeof record.key === "string") return record.key;
  if (typeof record.experiment === "string" && "point" in record) {
    return pointKey(record.experiment, record.point);
  }
  return null;
}

/**
 * Merges result files into `target`: the target's records, then the sources' records of points
 * not yet present (the first record of a point wins), sorted by `options.order` if given. The
 * merged file is written beside the target and renamed over it (a crash leaves either the old or
 * the new file, and the sources are only removed afterwards, so a merge can always be rerun).
 *
 * @param target the merged result file (may not exist yet)
 * @param sources the files to merge into it (missing ones are skipped)
 * @param options order, removal of the sources, warnings
 * @returns counts
 */
export async function mergeResultFiles(
  target: string,
  sources: readonly string[],
  options: MergeOptions = {},
): Promise<MergeSummary> {
  const seen = new Set<string>();
  const merged: Record<string, unknown>[] = [];
  let duplicates = 0;
  const take = (record: Record<string, unknown>): boolean => {
    const key = recordKey(record);
    if (key !== null) {
      if (seen.has(key)) {
        duplicates++;
        return false;
      }
      seen.add(key);
    }
    return true;
  };
  for (const record of await readRecords(target, options)) {
    if (take(record)) merged.push(record);
  }
  const added: Record<string, unknown>[] = [];
  const read: string[] = [];
  for (const source of sources) {
    let records;
    try {
      await Deno.stat(source);
      records = await readRecords(source, options);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) continue;
      throw error;
    }
    read.push(source);
    for (const record of records) if (take(record)) added.push(record);
  }
  merged.push(...added);
  if (options.order) {
    const order = options.order;
    const keyed = merged.map((r, i) => ({ r, i, k: order(r) }));
    keyed.sort((a, b) => a.k - b.k || a.i - b.i);
    merged.splice(0, merged.length, ...keyed.map((x) => x.r));
  }
  await Deno.mkdir(dirname(target), { recursive: true });
  const tmp = join(dirname(target), `.${basename(target)}.merge-${Deno.pid}`);
  const bytes = new TextEncoder().encode(merged.map((r) => JSON.stringify(r) + "\n").join(""));
  const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
  try {
    for (let written = 0; written < bytes.length;) {
      written += await file.write(bytes.subarray(written));
    }
    await file.sync();
  } finally {
    file.close();
  }
  await Deno.rename(tmp, target);
  if (options.removeSources ?? true) {
    for (const source of read) await Deno.remove(source).catch(() => {});
  }
  return { records: merged.length, added: added.length, duplicates, sources: read };
}
