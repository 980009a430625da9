/**
 * The JSONL result store: one JSON object per line, appended and flushed to disk as soon as a
 * sweep point finishes, so a crash loses nothing already written.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { dirname } from "node:path";

/** Receives a message about something tolerated (e.g. a truncated final line). */
export type WarningHandler = (message: string) => void;

/** Options of {@linkcode appendRecord} and {@linkcode readRecords}. */
export interface StoreOptions {
  /** Called for tolerated problems; default `console.warn`. */
  onWarning?: WarningHandler;
}

const NEWLINE = 0x0a;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Appends one record as one line: the file is opened for appending, the whole line is written
 * in one write, and the file is fsynced before this resolves. Parent folders are created.
 *
 * If the file ends in an unterminated line (a write cut short by a crash), that partial line is
 * first cut off (with a warning) so that the new record starts on a line of its own; a final line
 * that is complete JSON but only lacks its newline is kept and terminated.
 *
 * @param path the JSONL file
 * @param record a JSON-serialisable object (non-finite numbers become null, as in JSON)
 * @param options `onWarning` for the repair of a truncated final line
 */
export async function appendRecord(
  path: string,
  record: Record<string, unknown>,
  options: StoreOptions = {},
): Promise<void> {
  const json = JSON.stringify(record);
  if (typeof json !== "string" || !json.startsWith("{")) {
    throw new TypeError(`appendRecord: a record must be a JSON object, got ${json}`);
  }
  await Deno.mkdir(dirname(path), { recursive: true });
  const file = await Deno.open(path, { read: true, append: true, create: true });
  try {
    const prefix = await repairTail(file, path, options.onWarning ?? console.warn);
    const bytes = encoder.encode(prefix + json + "\n");
    let written = 0;
    while (written < bytes.length) written += await file.write(bytes.subarray(written));
    await file.sync();
  } finally {
    file.close();
  }
}

/**
 * Makes sure the file ends with a newline before an append. Returns "\n" when a complete
 * final record lacks only its newline; cuts off an incomplete final line.
 */
async function repairTail(file: Deno.FsFile, path: string, warn: WarningHandler): Promise<string> {
  const size = (await file.stat()).size;
  if (size === 0) return "";
  const last = new Uint8Array(1);
  await file.seek(size - 1, Deno.SeekMode.Start);
  await readFull(file, last);
  if (last[0] === NEWLINE) return "";
  // find the start of the unterminated line, reading backwards in chunks
  let start = 0;
  const chunk = new Uint8Array(64 * 1024);
  for (let end = size; end > 0 && start === 0;) {
    const from = Math.max(0, end - chunk.length);
    const view = chunk.subarray(0, end - from);
    await file.seek(from, Deno.SeekMode.Start);
    await readFull(file, view);
    const nl = view.lastIndexOf(NEWLINE);
    if (nl >= 0) start = from + nl + 1;
    end = from;
  }
  const tail = new Uint8Array(size - start);
  await file.seek(start, Deno.SeekMode.Start);
  await readFull(file, tail);
  if (parseObject(decoder.decode(tail)) !== undefined) return "\n";
  warn(`${path}: cutting off a truncated final line (${tail.length} bytes) before appending`);
  await file.truncate(start);
  return "";
}

async function readFull(file: Deno.FsFile, buf: Uint8Array): Promise<void> {
  for (let got = 0; got < buf.length;) {
    const n = await file.read(buf.subarray(got));
    if (n === null) throw new Error("unexpected end of file");
    got += n;
  }
}

/** Parses a JSON object; undefined when the text is not JSON or not an object. */
function parseObject(text: string): Record<string, unknown> | undefined {
  try {
    const value = JSON.parse(text);
    return value !== null && typeof value === "object" && !Array.isArray(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Reads all records of a JSONL file. A missing file has no records. Blank lines are skipped.
 * An unterminated final line that is not a complete JSON object (a crash mid-write) is ignored
 * with a warning.
 *
 * @param path the JSONL file
 * @param options `onWarning` for the ignored final line
 * @returns the records, in file order
 * @throws Error naming the file and line for a line that is not a JSON object (other than an
 *   unterminated final line)
 */
export async function readRecords<T = Record<string, unknown>>(
  path: string,
  options: StoreOptions = {},
): Promise<T[]> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw new Error(`cannot read result file ${path}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  const lines = decoder.decode(bytes).split("\n");
  const unterminated = lines.pop() ?? ""; // "" when the file ends with a newline
  const records: T[] = [];
  lines.forEach((line, i) => {
    if (line.trim() === "") return;
    const record = parseObject(line);
    if (record === undefined) {
      throw new Error(`${path}:${i + 1}: corrupt record (not a JSON object): ${preview(line)}`);
    }
    records.push(record as T);
  });
  if (unterminated.trim() !== "") {
    const record = parseObject(unterminated);
    if (record !== undefined) {
      records.push(record as T);
    } else {
      (options.onWarning ?? console.warn)(
        `${path}:${lines.length + 1}: ignoring a truncated final line ` +
          `(${unterminated.length} characters, probably an interrupted write)`,
      );
    }
  }
  return records;
}

function preview(line: string): string {
  return line.length > 80 ? `${line.slice(0, 80)}…` : line;
}

/**
 * Canonical JSON: like `JSON.stringify` without spaces, but with the keys of every object
 * sorted (by UTF-16 code units), recursively. Undefined object members are left out, as in
 * JSON; non-finite numbers are rejected, so that no two different values share a text.
 *
 * @param value a JSON-like value
 * @returns its canonical text
 */
export function canonicalJson(value: unknown): string {
  if (value !== null && typeof (value as { toJSON?: unknown }).toJSON === "function") {
    value = (value as { toJSON: () => unknown }).toJSON();
  }
  if (typeof value === "number" && !Number.isFinite(value)) {
    throw new TypeError(`canonicalJson: cannot represent ${value}`);
  }
  if (value === null || typeof value !== "object") {
    const text = JSON.stringify(value);
    if (text === undefined) throw new TypeError(`canonicalJson: cannot represent ${String(value)}`);
    return text;
  }
  if (Array.isArray(value)) {
    return `[${value.map((v) => (v === undefined ? "null" : canonicalJson(v))).join(",")}]`;
  }
  const object = value as Record<string, unknown>;
  const members = Object.keys(object).sort()
    .filter((k) => object[k] !== undefined && typeof object[k] !== "function")
    .map((k) => `${JSON.stringify(k)}:${canonicalJson(object[k])}`);
  return `{${members.join(",")}}`;
}

/**
 * The key of a sweep point: sha256 (hex) of the canonical JSON of `{experiment, point}`, so it
 * does not depend on the order in which the point's keys were written.
 *
 * @param experiment the experiment's name
 * @param point the point's settings
 * @returns 64 hex digits
 */
export function pointKey(experiment: string, point: unknown): string {
  return createHash("sha256").update(canonicalJson({ experiment, point })).digest("hex");
}
