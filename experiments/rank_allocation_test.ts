import assert from "node:assert/strict";
import { allocateRanks, type AllocLayer, budgetParams, rankCost } from "./rank_allocation.ts";

function randomLayers(seed: number, n: number, maxRank: number): AllocLayer[] {
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
  return Array.from({ length: n }, () => {
    const dOut = 2 + Math.floor(rnd() * 6), dIn = 2 + Math.floor(rnd() * 6);
    const g = Array.from({ length: maxRank }, () => rnd() * 10).sort((a, b) => b - a);
    return { dOut, dIn, gains: g, sensitivity: 0.1 + rnd() * 5 };
  });
}

function objective(layers: AllocLayer[], ranks: ArrayLike<number>, weighted: boolean) {
  let s = 0;
  layers.forEach((l, i) => {
    for (let r = 0; r < ranks[i]; r++) s += (weighted ? l.sensitivity! : 1) * l.gains[r];
  });
  return s;
}

// Exhaustive search over all rank vectors (small cases only).
function bruteForce(layers: AllocLayer[], limit: number, weighted: boolean): number {
  let best = 0;
  const ranks = new Array(layers.length).fill(0);
  const rec = (i: number) => {
    if (i === layers.length) {
      if (rankCost(layers, ranks) <= limit) {
        best = Math.max(best, objective(layers, ranks, weighted));
      }
      return;
    }
    for (let r = 0; r <= layers[i].gains.length; r++) {
      ranks[i] = r;
      rec(i + 1);
    }
  };
  rec(0);
  return best;
}

Deno.test("greedy allocation stays within budget and is near the exhaustive optimum", () => {
  for (let seed = 1; seed <= 20; seed++) {
    const layers = randomLayers(seed, 3, 4);
    const limit = 30 + seed;
    for (const strategy of ["energy", "sensitivity"] as const) {
      const ranks = allocateRanks(layers, { params: limit }, strategy);
      assert.ok(rankCost(layers, ranks) <= limit);
      const got = objective(layers, ranks, strategy === "sensitivity");
      const best = bruteForce(layers, limit, strategy === "sensitivity");
      // Greedy on concave curves is optimal up to the leftover budget: at worst one term short.
      const maxTerm = Math.max(
        ...layers.map((l) => (strategy === "sensitivity" ? l.sensitivity! : 1) * l.gains[0]),
      );
      assert.ok(
        got >= best - maxTerm - 1e-9,
        `seed ${seed} ${strategy}: ${got} vs optimum ${best}`,
      );
    }
  }
});

Deno.test("equal costs and gains: greedy picks the best terms exactly", () => {
  const layers: AllocLayer[] = [
    { dOut: 4, dIn: 4, gains: [9, 1, 0.6] },
    { dOut: 4, dIn: 4, gains: [5, 4, 3] },
  ];
  // budget for 3 terms: 9, 5, 4
  assert.deepEqual(Array.from(allocateRanks(layers, { params: 24 }, "energy")), [1, 2]);
  // sensitivity reweights: layer 0 ×10 → 90, 10, 6 beat 5
  layers[0].sensitivity = 10;
  layers[1].sensitivity = 1;
  assert.deepEqual(Array.from(allocateRanks(layers, { params: 24 }, "sensitivity")), [3, 0]);
});

Deno.test("uniform takes the largest equal rank that fits, capped per layer", () => {
  const layers: AllocLayer[] = [
    { dOut: 10, dIn: 10, gains: [1, 1, 1, 1] },
    { dOut: 10, dIn: 30, gains: [1, 1] },
  ];
  assert.equal(budgetParams(layers, { fraction: 0.5 }), 200);
  // r = 2: 2·20 + 2·40 = 120; r = 3: 3·20 + 2·40 = 140; r = 4: 160; all fit 200
  assert.deepEqual(Array.from(allocateRanks(layers, { fraction: 0.5 }, "uniform")), [4, 2]);
  assert.deepEqual(Array.from(allocateRanks(layers, { params: 130 }, "uniform")), [2, 2]);
  assert.deepEqual(Array.from(allocateRanks(layers, { params: 10 }, "uniform")), [0, 0]);
});
