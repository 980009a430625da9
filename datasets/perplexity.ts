/**
 * The GPTQ perplexity protocol, TypeScript side: the text is tokenized once (BOS first),
 * cut into `floor(n / seq)` non-overlapping windows of `seq` tokens, each window is scored on
 * its own, and the perplexity is `exp` of the mean NLL over the `seq - 1` predicted tokens of
 * every window (the first token of a window has no context and is not predicted).
 *
 * @module
 */

/** A perplexity measurement, in the shape of the models' reference.json entries. */
export interface PerplexityResult {
  /** exp(nll). */
  ppl: number;
  /** Mean negative log-likelihood per predicted token, in nats. */
  nll: number;
  /** Tokens of the whole tokenized text (BOS included), as reference.json's "tokens". */
  tokens: number;
  /** Windows scored. */
  windows: number;
  /** Window length in tokens. */
  seq: number;
  /** Tokens predicted: windows × (seq − 1). */
  predicted: number;
}

/**
 * Number of windows scored: `min(floor(nTokens / seqLen), maxWindows)`.
 *
 * @param nTokens tokens in the text
 * @param seqLen window length (integer ≥ 2)
 * @param maxWindows optional cap (positive integer)
 * @returns the window count
 */
export function windowCount(nTokens: number, seqLen: number, maxWindows?: number): number {
  if (!Number.isInteger(nTokens) || nTokens < 0) {
    throw new RangeError(`windowCount: nTokens must be an integer ≥ 0, got ${nTokens}`);
  }
  if (!Number.isInteger(seqLen) || seqLen < 2) {
    throw new RangeError(`windowCount: seqLen must be an integer ≥ 2, got ${seqLen}`);
  }
  if (maxWindows !== undefined && !(Number.isInteger(maxWindows) && maxWindows > 0)) {
    throw new RangeError(`windowCount: maxWindows must be a positive integer, got ${maxWindows}`);
  }
  const n = Math.floor(nTokens / seqLen);
  return maxWindows === undefined ? n : Math.min(n, maxWindows);
}

/**
 * Perplexity from a summed NLL: `exp(nllSum / nPredicted)`.
 *
 * @param nllSum sum of the negative log-likelihoods (nats) of the predicted tokens
 * @param nPredicted number of predicted tokens (> 0)
 * @returns the perplexity
 */
export function pplFromNll(nllSum: number, nPredicted: number): number {
  if (!(nPredicted > 0)) {
    throw new RangeError(`pplFromNll: nPredicted must be > 0, got ${nPredicted}`);
  }
  return Math.exp(nllSum / nPredicted);
}

/**
 * Builds a {@linkcode PerplexityResult} from the summed NLL of `windows` windows of `seq` tokens.
 *
 * @param args the summed NLL, the text's token count, the windows scored and their length
 * @returns the result with `predicted = windows × (seq − 1)`, `nll` the mean and `ppl = exp(nll)`
 */
export function perplexityResult(
  args: { nllSum: number; tokens: number; windows: number; seq: number },
): PerplexityResult {
  const { nllSum, tokens, windows, seq } = args;
  const predicted = windows * (seq - 1);
  const nll = nllSum / predicted;
  return { ppl: pplFromNll(nllSum, predicted), nll, tokens, windows, seq, predicted };
}
