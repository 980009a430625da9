/**
 * Rank allocation across layers under a global budget of extra parameters.
 *
 * Each compensated layer i has ordered factors; adding its (r+1)-th rank-one term costs
 * `d_in + d_out` parameters and removes `σ_{i,r}²` of (scaled) residual energy — the Eckart–Young
 * gain of that term. Strategies:
 *
 * - `uniform`: the largest equal rank that fits the budget.
 * - `energy`: greedy on gain per parameter, `σ² / (d_in + d_out)`; since each layer's gains are
 *   non-increasing in r, the greedy choice is optimal for the total energy removed (it solves the
 *   fractional knapsack over the concave per-layer curves exactly up to the last term).
 * - `sensitivity`: the same greedy with each layer's gains weighted by its measured sensitivity
 *   `s_i` (loss increase per unit of residual energy), so the objective is the first-order
 *   estimate of the loss removed, `Σ s_i σ_{i,r}²`.
 *
 * @module
 */

/** One layer as seen by the allocator. */
export interface AllocLayer {
  /** Rows of W. */
  dOut: number;
  /** Columns of W. */
  dIn: number;
  /** Squared singular values of the (scaled) residual, descending; its length caps the rank. */
  gains: ArrayLike<number>;
  /** Loss increase per unit of residual energy (1 for `energy`). */
  sensitivity?: number;
}

/** Allocation strategy. */
export type Allocation = "uniform" | "energy" | "sensitivity";

/** A budget: extra parameters, absolute or as a fraction of the layers' weight parameters. */
export type Budget = { params: number } | { fraction: number };

/**
 * Parameters the budget allows.
 *
 * @param layers the layers (their `dOut × dIn` weights are the base of a fraction)
 * @param budget the budget
 * @returns a parameter count (floor)
 */
export function budgetParams(layers: readonly AllocLayer[], budget: Budget): number {
  if ("params" in budget) return Math.floor(budget.params);
  const base = layers.reduce((s, l) => s + l.dOut * l.dIn, 0);
  return Math.floor(budget.fraction * base);
}

/** Parameters of a rank assignment: Σ r_i (d_in + d_out). */
export function rankCost(layers: readonly AllocLayer[], ranks: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < layers.length; i++) s += ranks[i] * (layers[i].dIn + layers[i].dOut);
  return s;
}

/**
 * Chooses per-layer ranks within the budget.
 *
 * @param layers the compensated layers
 * @param budget extra-parameter budget
 * @param strategy uniform, energy or sensitivity
 * @returns ranks (each ≤ that layer's number of gains) whose cost is within the budget
 */
export function allocateRanks(
  layers: readonly AllocLayer[],
  budget: Budget,
  strategy: Allocation,
): Int32Array {
  const limit = budgetParams(layers, budget);
  const ranks = new Int32Array(layers.length);
  if (strategy === "uniform") {
    const maxR = Math.max(0, ...layers.map((l) => l.gains.length));
    for (let r = 1; r <= maxR; r++) {
      const trial = layers.map((l) => Math.min(r, l.gains.length));
      if (rankCost(layers, trial) > limit) break;
      trial.forEach((v, i) => (ranks[i] = v));
    }
    return ranks;
  }
  const weight = (l: AllocLayer) => strategy === "sensitivity" ? (l.sensitivity ?? 1) : 1;
  // Max-heap on gain per parameter of each layer's next term.
  const value = (i: number) =>
    weight(layers[i]) * layers[i].gains[ranks[i]] / (layers[i].dIn + layers[i].dOut);
  const heap: number[] = [];
  const less = (a: number, b: number) => value(a) < value(b);
  const push = (i: number) => {
    heap.push(i);
    let c = heap.length - 1;
    while (c > 0) {
      const p = (c - 1) >> 1;
      if (!less(heap[p], heap[c])) break;
      [heap[p], heap[c]] = [heap[c], heap[p]];
      c = p;
    }
  };
  const pop = (): number => {
    const top = heap[0];
    const last = heap.pop()!;
    if (heap.length) {
      heap[0] = last;
      let p = 0;
      for (;;) {
        const l = 2 * p + 1, r = l + 1;
        let m = p;
        if (l < heap.length && less(heap[m], heap[l])) m = l;
        if (r < heap.length && less(heap[m], heap[r])) m = r;
        if (m === p) break;
        [heap[p], heap[m]] = [heap[m], heap[p]];
        p = m;
      }
    }
    return top;
  };
  layers.forEach((l, i) => l.gains.length > 0 && push(i));
  let spent = 0;
  while (heap.length) {
    const i = pop();
    const cost = layers[i].dIn + layers[i].dOut;
    if (spent + cost > limit) continue; // a cheaper layer may still fit
    spent += cost;
    ranks[i]++;
    if (ranks[i] < layers[i].gains.length) push(i);
  }
  return ranks;
}
