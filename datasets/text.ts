/**
 * Evaluation text loaders: plain text files and C4-style JSONL.
 *
 * @module
 */

import { extname } from "node:path";
import { readText } from "./files.ts";

/** Formats understood by {@linkcode loadCorpus}. */
export type CorpusFormat = "text" | "c4-jsonl";

/** Options of {@linkcode loadC4Jsonl}. */
export interface C4Options {
  /** Use only the first `maxDocs` documents (a positive integer). Default: all. */
  maxDocs?: number;
}

/** What {@linkcode loadCorpus} loads. */
export interface CorpusSpec extends C4Options {
  /** The file. */
  path: string;
  /**
   * `"c4-jsonl"` or `"text"`. When absent: `"c4-jsonl"` for `.jsonl` / `.ndjson` files,
   * `"text"` for anything else (`.txt`, `.raw`, ...).
   */
  format?: CorpusFormat;
}

/**
 * Reads a text file as it is: no stripping, no newline normalisation (the GPTQ WikiText-2
 * convention: the file is the HF rows joined with "\n\n").
 *
 * @param path the file
 * @returns its whole text
 * @throws Error naming the path when it does not exist or cannot be read
 */
export function loadPlainText(path: string): Promise<string> {
  return readText(path, "text file");
}

/**
 * Reads a JSONL file of documents with a string field `text` and joins their texts with "\n\n"
 * (the protocol of the checkpoints' reference.json for C4 evaluation). Blank lines are skipped.
 *
 * @param path the file
 * @param options `maxDocs` keeps only the first documents
 * @returns the joined text
 * @throws Error naming the file and the line for a line that is not JSON or has no string `text`
 */
export async function loadC4Jsonl(path: string, options: C4Options = {}): Promise<string> {
  const { maxDocs } = options;
  if (maxDocs !== undefined && !(Number.isInteger(maxDocs) && maxDocs > 0)) {
    throw new RangeError(`loadC4Jsonl: maxDocs must be a positive integer, got ${maxDocs}`);
  }
  const lines = (await readText(path, "JSONL file")).split("\n");
  const texts: string[] = [];
  for (let i = 0; i < lines.length && (maxDocs === undefined || texts.length < maxDocs); i++) {
    const line = lines[i];
    if (line.trim() === "") continue;
    let doc: unknown;
    try {
      doc = JSON.parse(line);
    } catch (error) {
      throw new Error(`${path}:${i + 1}: malformed JSON line: ${(error as Error).message}`, {
        cause: error,
      });
    }
    const text = (doc as { text?: unknown } | null)?.text;
    if (typeof text !== "string") {
      throw new Error(`${path}:${i + 1}: expected an object with a string field "text"`);
    }
    texts.push(text);
  }
  return texts.join("\n\n");
}

/**
 * Loads an evaluation text in the given format, or in the one its extension suggests.
 *
 * @param spec the file, its format and options
 * @returns the text to tokenize
 */
export function loadCorpus(spec: CorpusSpec): Promise<string> {
  const format = spec.format ?? corpusFormatOf(spec.path);
  switch (format) {
    case "c4-jsonl":
      return loadC4Jsonl(spec.path, { maxDocs: spec.maxDocs });
    case "text":
      return loadPlainText(spec.path);
    default:
      throw new Error(`unknown corpus format "${format}" for ${spec.path}`);
  }
}

/**
 * The format {@linkcode loadCorpus} assumes for a path without an explicit format.
 *
 * @param path a file name
 * @returns `"c4-jsonl"` for `.jsonl` / `.ndjson`, otherwise `"text"`
 */
export function corpusFormatOf(path: string): CorpusFormat {
  const ext = extname(path).toLowerCase();
  return ext === ".jsonl" || ext === ".ndjson" ? "c4-jsonl" : "text";
}
