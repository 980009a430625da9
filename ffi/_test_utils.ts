/**
 * Fixtures shared by the ffi tests: the bundled tiny checkpoint and its reference figures.
 *
 * @module
 */

/** The bundled tiny checkpoint (2 layers, hidden 64, vocab 8192). */
export const TINY_DIR: string = decodeURIComponent(
  new URL("../models/tiny", import.meta.url).pathname,
);

/**
 * The `small` checkpoint (8.4 M parameters, head_dim 64, so the GPU can run it):
 * $HCINFER_SMALL_MODEL, else the device copy or the shared tree's copy, or null when absent.
 */
export function smallModelDir(): string | null {
  const candidates = [
    Deno.env.get("HCINFER_SMALL_MODEL"),
    decodeURIComponent(new URL("../.device/gpu/models/small", import.meta.url).pathname),
    decodeURIComponent(new URL("../../shared/models/small", import.meta.url).pathname),
  ];
  for (const c of candidates) {
    if (!c) continue;
    try {
      if (Deno.statSync(`${c}/config.json`).isFile) return c;
    } catch { /* next */ }
  }
  return null;
}

/** One prompt of models/tiny/reference.json (HF transformers, float32). */
export interface ReferencePrompt {
  /** The prompt text. */
  prompt: string;
  /** Its token ids, `<s>` first. */
  ids: number[];
  /** Top-5 token ids of the last position's logits. */
  last_logits_top5: number[];
  /** Their logits. */
  last_logits_top5_values: number[];
  /** Sum of |logits| at each prompt position. */
  logits_sum_abs: number[];
  /** Prompt plus greedy continuation. */
  greedy_ids: number[];
}

/** Reads models/tiny/reference.json. */
export async function tinyReference(): Promise<{ params: number; prompts: ReferencePrompt[] }> {
  return JSON.parse(await Deno.readTextFile(`${TINY_DIR}/reference.json`));
}

/** Reads models/tiny/config.json. */
export async function tinyConfig(): Promise<Record<string, unknown>> {
  return JSON.parse(await Deno.readTextFile(`${TINY_DIR}/config.json`));
}

/** Numerically stable log-softmax of `logits`, in float64. */
export function logSoftmax(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i] - lse;
  return out;
}

/** Indices of the `k` largest values, largest first (ties by lower index). */
export function topK(values: ArrayLike<number>, k: number): number[] {
  return Array.from({ length: values.length }, (_, i) => i)
    .sort((a, b) => values[b] - values[a] || a - b)
    .slice(0, k);
}

/** A deterministic pseudo-random token sequence in [2, vocab) (xorshift32). */
export function pseudoTokens(n: number, vocab: number, seed = 1): Int32Array {
  const out = new Int32Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = 2 + (x % (vocab - 2));
  }
  return out;
}

/** Runs `deno eval` on `code` in a subprocess and returns its exit code and output. */
export async function denoEval(
  code: string,
  env: Record<string, string> = {},
  flags: string[] = [],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "-q", ...flags, code],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}
