import assert from "node:assert/strict";
import { join } from "node:path";
import { BOOKS_HELDOUT_HEAD, REPO_ROOT, sharedDataPath } from "../datasets/mod.ts";
import { accuracyVsRank, AccuracyVsRankConfigSchema } from "./accuracy_vs_rank.ts";
import { runExperiment } from "./experiment.ts";
import { parseConfig } from "./schema.ts";

const config = parseConfig(AccuracyVsRankConfigSchema, {
  model: { name: "tiny", path: join(REPO_ROOT, "models/tiny") },
  datasets: [{ name: "books", path: BOOKS_HELDOUT_HEAD, maxWindows: 6 }],
  groupSize: 64,
  bits: [2],
  quantizers: ["rtn"],
  scalings: ["act-full"],
  allocations: ["uniform", "energy", "sensitivity"],
  budgets: [0, 0.1],
  maxRank: 24,
  calibration: {
    path: sharedDataPath("c4/calibration.jsonl"),
    windows: 8,
    seqLen: 256,
    sensitivityWindows: 2,
  },
}, "test");

Deno.test("accuracy_vs_rank on tiny: allocations respect the budget and compensation helps", async () => {
  const outDir = await Deno.makeTempDir();
  try {
    const records = await runExperiment(accuracyVsRank, config, { outDir });
    assert.equal(records.length, 1 + 3);
    const base = records.find((r) => r.point.budget === 0)!;
    assert.ok(base.metrics.ranks.every((r) => r === 0));
    for (const r of records.filter((r) => r.point.budget > 0)) {
      const m = r.metrics;
      assert.ok(m.usedParams <= m.budgetParams, `${r.point.allocation}: ${m.usedParams}`);
      // the budget is 10% of the 14 linears' 98,304 weights
      assert.equal(m.budgetParams, Math.floor(0.1 * 98304));
      assert.ok(m.usedParams > 0.8 * m.budgetParams, `${r.point.allocation} spends the budget`);
      assert.ok(m.ppl < base.metrics.ppl, `${r.point.allocation}: ${m.ppl} < ${base.metrics.ppl}`);
      assert.equal(m.ranks.length, 14);
    }
    const uniform = records.find((r) => r.point.allocation === "uniform" && r.point.budget > 0)!;
    assert.equal(new Set(uniform.metrics.ranks).size, 1);
    const energy = records.find((r) => r.point.allocation === "energy")!;
    const sens = records.find((r) => r.point.allocation === "sensitivity")!;
    assert.notDeepEqual(energy.metrics.ranks, uniform.metrics.ranks);
    assert.notDeepEqual(sens.metrics.ranks, energy.metrics.ranks);
    const md = await Deno.readTextFile(join(outDir, "table.md"));
    assert.match(md, /RTN act-full · sensitivity/);
  } finally {
    await Deno.remove(outDir, { recursive: true });
  }
});
