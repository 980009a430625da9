/**
 * Measured per-layer sensitivity for rank allocation.
 *
 * The estimator, per compensated linear i (every other layer at full precision):
 *
 *   L0_i = loss on the sensitivity windows with only layer i quantized, rank 0
 *   LR_i = the same with layer i compensated at its full stored rank R_i
 *   G_i  = Σ_{r < R_i} σ_{i,r}²   (the scaled residual energy those R_i terms remove)
 *   s_i  = max(L0_i − LR_i, 0) / G_i
 *
 * so s_i is the loss removed per unit of the energy the allocator counts, measured with the
 * layer's own quantization error and compensation (a finite difference in the allocator's units,
 * not a gradient). The windows should be calibration text, not the evaluation text. Cost: one
 * single-layer quantization and two evaluations per linear.
 *
 * @module
 */

import { type Model, type QuantizeOptions } from "../ffi/mod.ts";

/** Options of {@linkcode measureSensitivity}. */
export interface SensitivityOptions {
  /** Quantization of the layers (bits, group size, method, scaling, maxRank). */
  quant: QuantizeOptions;
  /** Token windows the loss is measured on (a multiple of seqLen). */
  tokens: Int32Array;
  /** Window length. */
  seqLen: number;
  /** Linear indices to measure (default: all quantizable ones). */
  linears?: number[];
  /** Called after each linear with (done, total). */
  onProgress?: (done: number, total: number) => void;
}

/** One linear's measurement. */
export interface LayerSensitivity {
  /** Linear index (layer · 7 + kind). */
  index: number;
  /** Mean NLL with the layer quantized, rank 0, and compensated at its full rank. */
  loss0: number;
  lossR: number;
  /** Residual energy removed by the stored factors (Σ σ²). */
  gain: number;
  /** max(loss0 − lossR, 0) / gain. */
  sensitivity: number;
}

/**
 * Measures every selected linear's sensitivity. Leaves the model at full precision.
 *
 * @returns one entry per linear, in index order
 */
export async function measureSensitivity(
  model: Model,
  options: SensitivityOptions,
): Promise<LayerSensitivity[]> {
  const n = model.info.nLinears;
  const linears = options.linears ?? Array.from({ length: n }, (_, i) => i);
  const loss = async () => {
    const r = await model.evalNll(options.tokens, { seqLen: options.seqLen });
    return r.nllSum / r.nPredicted;
  };
  const out: LayerSensitivity[] = [];
  for (const [k, index] of linears.entries()) {
    const layer = Math.floor(index / 7), kind = index % 7;
    await model.quantize({
      ...options.quant,
      kindMask: 1 << kind,
      layerBegin: layer,
      layerEnd: layer + 1,
    });
    const sv = model.singularValues(index);
    const gain = sv.reduce((s, v) => s + v * v, 0);
    const ranks = new Int32Array(n);
    model.setRanks(ranks);
    const loss0 = await loss();
    ranks[index] = model.linear(index).maxRank;
    model.setRanks(ranks);
    const lossR = await loss();
    out.push({
      index,
      loss0,
      lossR,
      gain,
      sensitivity: gain > 0 ? Math.max(loss0 - lossR, 0) / gain : 0,
    });
    options.onProgress?.(k + 1, linears.length);
  }
  await model.quantize({ bits: 0, groupSize: 128, maxRank: 0 });
  return out;
}
