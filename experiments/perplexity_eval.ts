/**
 * Perplexity of a loaded model on tokenized text (the GPTQ protocol), with the text tokenized once
 * per (tokenizer, corpus) and cached for the process.
 *
 * @module
 */

import { loadCorpus, type PerplexityResult, perplexityResult } from "../datasets/mod.ts";
import type { CorpusSpec, TextTokenizer } from "../datasets/mod.ts";
import type { Model } from "../ffi/mod.ts";

const tokenCache = new Map<string, Promise<Int32Array>>();

/**
 * Loads and tokenizes a corpus (BOS first), cached by tokenizer folder, path and format.
 *
 * @param tokenizer the model's tokenizer
 * @param corpus the text file and its format
 * @returns the token ids
 */
export function tokenizeCorpus(tokenizer: TextTokenizer, corpus: CorpusSpec): Promise<Int32Array> {
  const key = JSON.stringify([
    tokenizer.modelDir,
    corpus.path,
    corpus.format ?? "",
    corpus.maxDocs,
  ]);
  let hit = tokenCache.get(key);
  if (!hit) {
    hit = loadCorpus(corpus).then((text) => tokenizer.encode(text));
    tokenCache.set(key, hit);
    hit.catch(() => tokenCache.delete(key));
  }
  return hit;
}

/** Options of {@linkcode measurePerplexity}. */
export interface PerplexityOptions {
  /** Window length in tokens. */
  seqLen: number;
  /** Score only the first N windows (absent: all). */
  maxWindows?: number;
  /** Worker threads (absent: the model's). */
  nThreads?: number;
  /** Called with the number of windows finished. */
  onProgress?: (done: number) => void;
}

/**
 * Perplexity of `model` on `tokens`, as in reference.json: `tokens` is the whole text's length.
 *
 * @returns the measurement and the wall time of the native call
 */
export async function measurePerplexity(
  model: Model,
  tokens: Int32Array,
  options: PerplexityOptions,
): Promise<PerplexityResult & { seconds: number }> {
  const r = await model.evalNll(tokens, {
    seqLen: options.seqLen,
    maxWindows: options.maxWindows ?? 0,
    nThreads: options.nThreads ?? 0,
  }, { onProgress: options.onProgress });
  return {
    ...perplexityResult({
      nllSum: r.nllSum,
      tokens: tokens.length,
      windows: Number(r.nWindows),
      seq: options.seqLen,
    }),
    seconds: r.seconds,
  };
}
