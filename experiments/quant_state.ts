/**
 * Applying a quantization setting to a loaded model, re-quantizing only when it must: the SVD
 * factors are ordered, so every rank up to the factors kept is a prefix of the same
 * factorization, and a sweep over ranks quantizes once per (bits, group size).
 *
 * @module
 */

import type { Model } from "../ffi/mod.ts";

/** One quantization setting. `bits` 16 means the unquantized float32 model. */
export interface QuantSetting {
  /** 2, 3, 4 or 8 (integer weights), or 16 for full precision. */
  bits: number;
  /** Input columns per quantization group, or -1 for one group per output row. */
  groupSize: number;
  /** Active compensation rank per quantized layer (uniform allocation). */
  rank: number;
}

/** Tracks what quantization a model currently holds. */
export class QuantState {
  #current: { bits: number; groupSize: number; maxRank: number } | null = null;

  /**
   * @param model the model to quantize
   * @param maxRank factors kept per layer when quantizing (the largest rank that will be asked)
   */
  constructor(readonly model: Model, readonly maxRank: number) {}

  /**
   * Puts the model into `setting`: quantizes from the original weights when bits or group size
   * differ from the current state, then selects the rank prefix.
   *
   * @param setting the setting to apply
   * @param onProgress called with the number of layers quantized
   * @returns seconds spent quantizing (0 when the current quantization was reused)
   * @throws RangeError when `setting.rank` exceeds the factors kept
   */
  async apply(setting: QuantSetting, onProgress?: (done: number) => void): Promise<number> {
    if (setting.rank > this.maxRank) {
      throw new RangeError(
        `rank ${setting.rank} exceeds the ${this.maxRank} factors kept per layer (maxRank)`,
      );
    }
    const bits = setting.bits === 16 ? 0 : setting.bits;
    const want = {
      bits,
      groupSize: bits ? setting.groupSize : 0,
      maxRank: bits ? this.maxRank : 0,
    };
    let seconds = 0;
    const cur = this.#current;
    if (
      !cur || cur.bits !== want.bits || cur.groupSize !== want.groupSize ||
      cur.maxRank !== want.maxRank
    ) {
      const t0 = performance.now();
      this.#current = null; // unknown while quantizing (a failure leaves full precision)
      await this.model.quantize(
        { bits: want.bits, groupSize: want.groupSize || 128, maxRank: want.maxRank },
        { onProgress },
      );
      this.#current = want;
      seconds = (performance.now() - t0) / 1000;
    }
    if (bits) this.model.setUniformRank(setting.rank);
    return seconds;
  }
}
