/**
 * Zero-shot scoring with lm-evaluation-harness (lm-eval) conventions: the tokenization of
 * `(context, continuation)` pairs, the log-likelihood of a continuation, greedy matching
 * (`is_greedy`), and the metrics `acc`, `acc_norm`, `acc_bytes` (multiple choice) and LAMBADA's
 * accuracy and perplexity.
 *
 * - Tokenization (lm-eval `_encode_pair`): trailing whitespace of the context moves to the front
 *   of the continuation; `whole = encode(context + continuation)`,
 *   `contextEnc = encode(context)`, continuation tokens = `whole[contextEnc.length:]`. Both
 *   encodings get the BOS when `addBos` (default true, as lm-eval v0.3 and HF Llama tokenizers
 *   do; lm-eval v0.4's HFLM adds it only with `add_bos_token=True`). The scored sequence is
 *   `contextEnc ++ continuationTokens`, as in lm-eval (it equals `whole` unless the context's own
 *   encoding is not a prefix of `whole`'s). An empty context is replaced by the BOS alone
 *   (lm-eval: the prefix token), with the continuation encoded on its own.
 * - Truncation: a sequence longer than the model's `maxPositions` keeps its last `maxPositions`
 *   tokens (lm-eval keeps `max_length + 1` and drops the last from the input; the engine's
 *   scoring call includes the last token, so one context token fewer is kept here).
 * - Log-likelihood: the sum (float64) of the continuation tokens' log-probabilities from one
 *   `model.scoreTokens` call on the sequence.
 * - `is_greedy` (LAMBADA): every continuation token is the argmax of its position's logits. The
 *   C API's `hci_score_tokens` returns only the log-probability of the given token, so greedy
 *   requests go through a {@linkcode Session}: prefill the context (logits of its last token),
 *   then decode the continuation one token at a time; the log-likelihood is taken from the same
 *   logits (log-softmax in float64), so each request is one forward pass.
 * - Metrics per example (lm-eval `process_results`): `acc` = argmax of the log-likelihoods is
 *   the gold; `acc_norm` = argmax of loglik / character length (Unicode code points, Python's
 *   `len`) of the choice string; `acc_bytes` = the same over UTF-8 byte lengths. Ties go to the
 *   first choice (numpy `argmax`). LAMBADA: `acc` = mean `is_greedy`, `ppl` =
 *   `exp(-mean(loglik))` (lm-eval's `perplexity` aggregation, per example, not per token).
 * - Reuse within an example (the choices of one question): the context is encoded once; when
 *   every choice is one token after the same context (BoolQ), one session prefill scores them
 *   all; otherwise the choices' `scoreTokens` calls run concurrently (the engine runs calls on
 *   one model in parallel). Sharing the context's forward pass between multi-token choices
 *   needs a C API addition (a session that can be cut back to a length, or a scoring call for
 *   several continuations of one context).
 *
 * @module
 */

import type { TaskData, TaskName, TextTokenizer } from "../datasets/mod.ts";
import { type Model, Session } from "../ffi/mod.ts";

/** Options of {@linkcode encodePair}. */
export interface EncodePairOptions {
  /** Put the BOS first in both encodings (default true). */
  addBos?: boolean;
  /**
   * Reuses context encodings across calls (keyed by the context after moving its trailing
   * whitespace): the choices of one example share their context. Use one cache per tokenizer and
   * `addBos`; the caller bounds its size.
   */
  contextCache?: Map<string, Int32Array>;
}

/** A tokenized request. */
export interface EncodedPair {
  /** The context's tokens (BOS first when asked). */
  context: Int32Array;
  /** The continuation's tokens. */
  continuation: Int32Array;
}

/**
 * Moves the context's trailing whitespace to the front of the continuation (lm-eval's
 * `_encode_pair`).
 *
 * @param context the context
 * @param continuation the continuation
 * @returns the adjusted `[context, continuation]`
 */
export function moveTrailingSpace(context: string, continuation: string): [string, string] {
  const trimmed = context.trimEnd();
  return [trimmed, context.slice(trimmed.length) + continuation];
}

/**
 * Tokenizes a request as lm-eval does (see the module documentation).
 *
 * @param tokenizer the model's tokenizer
 * @param context the context
 * @param continuation the continuation
 * @param options whether to put the BOS first
 * @returns the context's tokens and the continuation's tokens
 * @throws Error for an empty context when there is no BOS to stand for it
 */
export function encodePair(
  tokenizer: TextTokenizer,
  context: string,
  continuation: string,
  options: EncodePairOptions = {},
): EncodedPair {
  const addBos = options.addBos ?? true;
  if (context === "") {
    if (tokenizer.bosId === null) throw new Error("encodePair: empty context and no BOS token");
    return {
      context: Int32Array.of(tokenizer.bosId),
      continuation: tokenizer.encode(continuation, { addBos: false }),
    };
  }
  const [ctx, cont] = moveTrailingSpace(context, continuation);
  const whole = tokenizer.encode(ctx + cont, { addBos });
  let contextEnc = options.contextCache?.get(ctx);
  if (!contextEnc) {
    contextEnc = tokenizer.encode(ctx, { addBos });
    options.contextCache?.set(ctx, contextEnc);
  }
  return { context: contextEnc, continuation: whole.slice(contextEnc.length) };
}

/** The tokens actually scored for a request. */
export interface ScoringWindow {
  /** Context then continuation, cut from the left to at most `maxPositions` tokens. */
  tokens: Int32Array;
  /** Index in `tokens` of the first continuation token (at least 1). */
  start: number;
  /** Context tokens dropped by the cut. */
  dropped: number;
}

/**
 * The sequence to score for a request, truncated from the left to the model's positions.
 *
 * @param pair the tokenized request
 * @param maxPositions the model's `max_position_embeddings`
 * @returns the window and where its continuation starts
 * @throws RangeError when the continuation is empty or does not fit after one context token
 */
export function scoringWindow(pair: EncodedPair, maxPositions: number): ScoringWindow {
  const { context, continuation } = pair;
  if (continuation.length === 0) throw new RangeError("the continuation has no tokens");
  if (continuation.length + 1 > maxPositions) {
    throw new RangeError(
      `the continuation's ${continuation.length} tokens do not fit in ${maxPositions} positions`,
    );
  }
  const n = context.length + continuation.length;
  const dropped = Math.max(0, n - maxPositions);
  const tokens = new Int32Array(n - dropped);
  tokens.set(context.subarray(dropped), 0);
  tokens.set(continuation, context.length - dropped);
  return { tokens, start: context.length - dropped, dropped };
}

/**
 * Log-likelihood of a request's continuation: one `model.scoreTokens` call on its window.
 *
 * @param model the model
 * @param window the request's window (from {@linkcode scoringWindow})
 * @returns the sum of the continuation tokens' log-probabilities
 */
export async function continuationLoglik(model: Model, window: ScoringWindow): Promise<number> {
  const lp = await model.scoreTokens(window.tokens);
  let sum = 0;
  for (let i = window.start - 1; i < lp.length; i++) sum += lp[i];
  return sum;
}

/**
 * The common context of an example's windows when they all share it and every continuation is
 * one token; null otherwise.
 *
 * @param windows the windows of one example's requests
 * @returns the shared context tokens, or null
 */
export function sharedSingleTokenContext(windows: readonly ScoringWindow[]): Int32Array | null {
  if (windows.length < 2) return null;
  const first = windows[0];
  const context = first.tokens.subarray(0, first.start);
  for (const w of windows) {
    if (w.start !== first.start || w.tokens.length !== w.start + 1) return null;
    for (let i = 0; i < w.start; i++) if (w.tokens[i] !== context[i]) return null;
  }
  return context;
}

/**
 * Log-likelihoods of one-token continuations after a shared context: one prefill in `session`
 * (reset first), then each continuation token's log-softmax from the context's last logits.
 *
 * @param session a session on the model
 * @param context the shared context (from {@linkcode sharedSingleTokenContext})
 * @param windows the requests' windows
 * @returns one log-likelihood per window
 */
export async function sharedContextLogliks(
  session: Session,
  context: Int32Array,
  windows: readonly ScoringWindow[],
): Promise<number[]> {
  session.reset();
  const logits = await session.decode(context);
  return windows.map((w) => logProbAndArgmax(logits, w.tokens[w.start]).logProb);
}

/** A greedily checked request's score. */
export interface GreedyScore {
  /** Sum of the continuation tokens' log-probabilities. */
  loglik: number;
  /** Whether every continuation token is the argmax at its position. */
  isGreedy: boolean;
}

/**
 * Log-likelihood and `is_greedy` of a request through a session: resets it, prefills the
 * context, then decodes the continuation one token at a time.
 *
 * @param session a session on the model, with room for the window
 * @param window the request's window
 * @returns the log-likelihood and whether the continuation is the greedy one
 */
export async function greedyScore(session: Session, window: ScoringWindow): Promise<GreedyScore> {
  session.reset();
  let logits = await session.decode(window.tokens.subarray(0, window.start));
  let loglik = 0;
  let isGreedy = true;
  for (let i = window.start; i < window.tokens.length; i++) {
    const token = window.tokens[i];
    const { logProb, argmax } = logProbAndArgmax(logits, token);
    loglik += logProb;
    if (argmax !== token) isGreedy = false;
    if (i + 1 < window.tokens.length) {
      logits = await session.decode(window.tokens.subarray(i, i + 1));
    }
  }
  return { loglik, isGreedy };
}

/**
 * The log-softmax of one token and the argmax (first of equal maxima) of a logit row.
 *
 * @param logits one position's logits
 * @param token the token whose log-probability is wanted
 * @returns its log-probability (float64) and the argmax
 */
export function logProbAndArgmax(
  logits: ArrayLike<number>,
  token: number,
): { logProb: number; argmax: number } {
  let argmax = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[argmax]) argmax = i;
  const max = logits[argmax];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  return { logProb: logits[token] - max - Math.log(sum), argmax };
}

/** What one multiple-choice example scores. */
export interface ChoiceMetrics {
  /** Argmax of the log-likelihoods. */
  pred: number;
  /** Argmax of loglik / character length. */
  predNorm: number;
  /** Argmax of loglik / UTF-8 byte length. */
  predBytes: number;
  /** 1 when `pred` is the gold, else 0. */
  acc: number;
  /** 1 when `predNorm` is the gold, else 0. */
  acc_norm: number;
  /** 1 when `predBytes` is the gold, else 0. */
  acc_bytes: number;
}

/**
 * lm-eval's multiple-choice metrics of one example.
 *
 * @param logliks the log-likelihood of each choice's continuation
 * @param choices the choice strings whose lengths normalize (`TaskExample.choices`)
 * @param gold the correct index
 * @returns predictions and 0/1 accuracies
 */
export function choiceMetrics(
  logliks: readonly number[],
  choices: readonly string[],
  gold: number,
): ChoiceMetrics {
  const utf8 = new TextEncoder();
  const pred = argmaxOf(logliks);
  const predNorm = argmaxOf(logliks.map((l, i) => l / [...choices[i]].length));
  const predBytes = argmaxOf(logliks.map((l, i) => l / utf8.encode(choices[i]).length));
  return {
    pred,
    predNorm,
    predBytes,
    acc: Number(pred === gold),
    acc_norm: Number(predNorm === gold),
    acc_bytes: Number(predBytes === gold),
  };
}

function argmaxOf(values: readonly number[]): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/** One example's scores, for {@linkcode EvaluateOptions.onExample}. */
export interface ExampleScore {
  /** The example's index in its file. */
  index: number;
  /** Log-likelihood per request. */
  logliks: number[];
  /** Continuation tokens per request. */
  continuationTokens: number[];
  /** LAMBADA: whether the continuation is the greedy one; null for multiple choice. */
  isGreedy: boolean | null;
  /** The gold index. */
  gold: number;
  /** Multiple choice: the metrics; null for LAMBADA. */
  metrics: ChoiceMetrics | null;
}

/** A task's result. */
export interface TaskResult {
  /** The task. */
  task: TaskName;
  /** Examples scored. */
  n: number;
  /** Accuracy: argmax log-likelihood (multiple choice) or greedy match (LAMBADA). */
  acc: number;
  /** Length-normalized accuracy (characters); null for LAMBADA. */
  acc_norm: number | null;
  /** Byte-length-normalized accuracy; null for LAMBADA. */
  acc_bytes: number | null;
  /** The metric lm-eval reports as the headline ("acc" or "acc_norm"). */
  primaryMetric: "acc" | "acc_norm";
  /** Accuracy of guessing (1 / choices; 0 for LAMBADA). */
  chance: number;
  /** LAMBADA: exp(-mean log-likelihood per example); null for multiple choice. */
  ppl: number | null;
  /** Requests scored (examples × choices). */
  requests: number;
  /** Tokens passed through the model (sum of window lengths). */
  tokens: number;
  /** Continuation tokens scored. */
  continuationTokens: number;
  /** Requests whose context was cut to fit the model's positions. */
  truncated: number;
  /** Examples scored with one shared context prefill ({@linkcode EvaluateOptions.sharePrefill}). */
  sharedPrefills: number;
  /** Wall-clock seconds (tokenization included). */
  seconds: number;
  /** Examples per second. */
  examplesPerSecond: number;
}

/** Options of {@linkcode evaluateTask}. */
export interface EvaluateOptions {
  /** Score only the first `limit` examples (default all that `task` holds). */
  limit?: number;
  /** Put the BOS first (default true). */
  addBos?: boolean;
  /**
   * Score the requests of one example (the choices sharing its context) concurrently (default
   * true): the engine runs calls on one model in parallel, and tokenization overlaps them.
   */
  concurrent?: boolean;
  /**
   * When every choice of an example has the same context tokens and a one-token continuation
   * (BoolQ's " no" / " yes"), prefill the context once in a session and read every choice's
   * log-probability from its last logits (default true), instead of one `scoreTokens` call per
   * choice. The numbers agree with `scoreTokens` to float32 rounding (about 1e-5).
   */
  sharePrefill?: boolean;
  /** Called after each example with the number done and the total. */
  onProgress?: (done: number, total: number) => void;
  /** Called with each example's scores. */
  onExample?: (score: ExampleScore) => void;
}

/**
 * Scores a task on a model with lm-eval's conventions (see the module documentation).
 *
 * @param model the model, in the quantization state to evaluate
 * @param tokenizer the model's tokenizer
 * @param task the loaded task
 * @param options limit, BOS, concurrency and callbacks
 * @returns the task's metrics and throughput
 */
export async function evaluateTask(
  model: Model,
  tokenizer: TextTokenizer,
  task: TaskData,
  options: EvaluateOptions = {},
): Promise<TaskResult> {
  const t0 = performance.now();
  const { spec } = task;
  const examples = task.examples.slice(0, options.limit ?? task.examples.length);
  const maxPositions = model.info.maxPositions;
  const addBos = options.addBos ?? true;
  const concurrent = options.concurrent ?? true;
  const sharePrefill = options.sharePrefill ?? true;
  let sharedPrefills = 0;
  let session: Session | null = null;
  let requests = 0, tokens = 0, continuationTokens = 0, truncated = 0;
  let acc = 0, accNorm = 0, accBytes = 0, loglikSum = 0;
  try {
    for (const [done, ex] of examples.entries()) {
      const contextCache = new Map<string, Int32Array>();
      const windows = ex.requests.map((r) => {
        const w = scoringWindow(
          encodePair(tokenizer, r.context, r.continuation, { addBos, contextCache }),
          maxPositions,
        );
        requests++;
        tokens += w.tokens.length;
        continuationTokens += w.tokens.length - w.start;
        if (w.dropped > 0) truncated++;
        return w;
      });
      let score: ExampleScore;
      if (spec.kind === "greedy") {
        session ??= Session.create(model, { nCtx: maxPositions });
        const g = await greedyScore(session, windows[0]);
        acc += Number(g.isGreedy);
        loglikSum += g.loglik;
        score = {
          index: ex.index,
          logliks: [g.loglik],
          continuationTokens: [windows[0].tokens.length - windows[0].start],
          isGreedy: g.isGreedy,
          gold: ex.gold,
          metrics: null,
        };
      } else {
        let logliks: number[] = [];
        const shared = sharePrefill ? sharedSingleTokenContext(windows) : null;
        if (shared) {
          session ??= Session.create(model, { nCtx: maxPositions });
          logliks = await sharedContextLogliks(session, shared, windows);
          tokens -= windows.reduce((s, w) => s + w.tokens.length, 0) - shared.length;
          sharedPrefills++;
        } else if (concurrent) {
          logliks.push(...await Promise.all(windows.map((w) => continuationLoglik(model, w))));
        } else {
          for (const w of windows) logliks.push(await continuationLoglik(model, w));
        }
        const m = choiceMetrics(logliks, ex.choices, ex.gold);
        acc += m.acc;
        accNorm += m.acc_norm;
        accBytes += m.acc_bytes;
        score = {
          index: ex.index,
          logliks,
          continuationTokens: windows.map((w) => w.tokens.length - w.start),
          isGreedy: null,
          gold: ex.gold,
          metrics: m,
        };
      }
      options.onExample?.(score);
      options.onProgress?.(done + 1, examples.length);
    }
  } finally {
    (session as Session | null)?.close();
  }
  const n = examples.length;
  const seconds = (performance.now() - t0) / 1000;
  const greedy = spec.kind === "greedy";
  return {
    task: spec.name,
    n,
    acc: n ? acc / n : NaN,
    acc_norm: greedy ? null : n ? accNorm / n : NaN,
    acc_bytes: greedy ? null : n ? accBytes / n : NaN,
    primaryMetric: spec.primaryMetric,
    chance: spec.chance,
    ppl: greedy ? (n ? Math.exp(-loglikSum / n) : NaN) : null,
    requests,
    tokens,
    continuationTokens,
    truncated,
    sharedPrefills,
    seconds,
    examplesPerSecond: seconds > 0 ? n / seconds : 0,
  };
}
