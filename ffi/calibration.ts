/**
 * Calibration windows for `Model.calibrate`, drawn reproducibly from a tokenized corpus.
 *
 * The library takes the windows as given (concatenated, `seqLen` tokens each); choosing them is
 * the caller's job, done here with a seeded generator so that a run can be repeated exactly.
 *
 * ```ts
 * const text = await loadC4Jsonl(sharedDataPath("c4/calibration.jsonl"));
 * const ids = (await loadTokenizer(modelDir)).encode(text);
 * const windows = sampleCalibrationWindows(ids, { seqLen: 512, nWindows: 128, seed: 0 });
 * await model.calibrate(windows, { seqLen: 512 });
 * ```
 *
 * @module
 */

/** Options of {@linkcode sampleCalibrationWindows}. */
export interface WindowOptions {
  /** Tokens per window. */
  seqLen: number;
  /** Windows to draw. */
  nWindows: number;
  /** Seed of the generator (an integer); the same seed and tokens give the same windows. */
  seed?: number;
}

/**
 * A small seeded generator (mulberry32): uniform floats in [0, 1).
 *
 * @param seed any integer (taken modulo 2^32)
 */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Draws `nWindows` windows of `seqLen` consecutive tokens at uniformly random start positions in
 * [0, n − seqLen] (windows may overlap), as GPTQ's calibration loaders do on a tokenized corpus,
 * and concatenates them in draw order.
 *
 * @param tokens the tokenized corpus (e.g. C4's calibration documents joined with "\n\n")
 * @returns `nWindows * seqLen` tokens, window after window
 * @throws RangeError when the corpus is shorter than one window or an option is not a positive
 *   integer
 */
export function sampleCalibrationWindows(
  tokens: ArrayLike<number>,
  options: WindowOptions,
): Int32Array<ArrayBuffer> {
  const { seqLen, nWindows, seed = 0 } = options;
  for (const [name, v] of [["seqLen", seqLen], ["nWindows", nWindows]] as const) {
    if (!Number.isInteger(v) || v <= 0) {
      throw new RangeError(
        `sampleCalibrationWindows: ${name} must be a positive integer, got ${v}`,
      );
    }
  }
  if (!Number.isInteger(seed)) {
    throw new RangeError(`sampleCalibrationWindows: seed must be an integer, got ${seed}`);
  }
  if (tokens.length < seqLen) {
    throw new RangeError(
      `sampleCalibrationWindows: ${tokens.length} tokens are shorter than one window of ${seqLen}`,
    );
  }
  const random = seededRandom(seed);
  const starts = tokens.length - seqLen + 1;
  const out = new Int32Array(new ArrayBuffer(nWindows * seqLen * 4));
  for (let w = 0; w < nWindows; w++) {
    const start = Math.floor(random() * starts);
    for (let i = 0; i < seqLen; i++) out[w * seqLen + i] = tokens[start + i];
  }
  return out;
}
