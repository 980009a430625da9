import assert from "node:assert/strict";
import { join } from "node:path";
import { REPO_ROOT, TASK_NAMES, TASK_SPECS, taskPath } from "../datasets/mod.ts";
import { ConfigError, parseConfig } from "./schema.ts";
import { runZeroShot, ZeroShotConfigSchema, zeroShotPoints } from "./zero_shot.ts";

const haveShared = await Deno.stat(taskPath("copa")).then(() => true, () => false);

const config = parseConfig(ZeroShotConfigSchema, {
  model: { name: "tiny", path: join(REPO_ROOT, "models/tiny") },
  tasks: [...TASK_NAMES],
  limit: 5,
  configs: [
    { name: "fp32", bits: 16 },
    { name: "W3 r8", bits: 3, groupSize: 64, rank: 8 },
  ],
}, "test");

Deno.test("zero_shot points: settings outermost, unquantized without group and rank", () => {
  const points = zeroShotPoints(config);
  assert.equal(points.length, 18);
  assert.deepEqual(points[0], {
    model: "tiny",
    config: "fp32",
    bits: 16,
    groupSize: null,
    rank: 0,
    task: "arc_easy",
    limit: 5,
    addBos: true,
  });
  assert.equal(points[9].config, "W3 r8");
  assert.equal(points[9].groupSize, 64);
  assert.equal(points[9].rank, 8);
});

Deno.test("zero_shot config errors name the key", () => {
  const bad = (value: unknown, pattern: RegExp) =>
    assert.throws(() => parseConfig(ZeroShotConfigSchema, value, "c.json"), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.match(e.message, pattern);
      return true;
    });
  bad({ ...config, tasks: ["arc_easy", "mmlu"] }, /tasks\[1\]/);
  bad(
    { ...config, configs: [{ name: "a", bits: 4 }, { name: "a", bits: 3 }] },
    /configs\[1\]: duplicate/,
  );
  bad({ ...config, limit: 0 }, /limit: value must be > 0/);
  bad({ ...config, configs: [{ name: "a", bits: 5 }] }, /configs\[0\]\.bits/);
});

Deno.test({
  name: "zero_shot on tiny: 9 tasks × 2 settings with limit 5, tables, resume",
  ignore: !haveShared,
  fn: async () => {
    const outDir = await Deno.makeTempDir();
    try {
      const records = await runZeroShot(config, { outDir });
      assert.equal(records.length, 18);
      for (const r of records) {
        const m = r.metrics;
        const spec = TASK_SPECS[r.point.task];
        assert.equal(m.n, 5);
        assert.equal(m.chance, spec.chance);
        assert.ok(m.acc >= 0 && m.acc <= 1, `${r.point.task}: acc ${m.acc}`);
        if (spec.kind === "greedy") {
          assert.equal(m.acc_norm, null);
          assert.ok(m.ppl! > 1 && Number.isFinite(m.ppl!));
        } else {
          assert.ok(m.acc_norm! >= 0 && m.acc_norm! <= 1);
          assert.equal(m.ppl, null);
        }
        assert.equal(m.requests, 5 * spec.numChoices);
        assert.ok(m.examplesPerSecond > 0);
        const prov = r.provenance as { files: Record<string, string> };
        assert.ok(Object.keys(prov.files).some((f) => f.endsWith(`${r.point.task}.jsonl`)));
      }
      // quantized once, before the first W3 point
      const w3 = records.filter((r) => r.point.bits === 3);
      assert.ok(w3[0].metrics.quantSeconds > 0);
      assert.ok(w3.slice(1).every((r) => r.metrics.quantSeconds === 0));

      const md = await Deno.readTextFile(join(outDir, "table.md"));
      assert.match(md, /\| chance +\| +\| +0\.2500 \|/);
      assert.match(md, /\| fp32 +\| fp32 +\|/);
      assert.match(md, /\| W3 r8 +\| W3 g64 r8 +\|/);
      assert.match(md, /hellaswag acc_norm \(n=5\)/);
      assert.match(md, /lambada_openai ppl/);
      const csv = await Deno.readTextFile(join(outDir, "table.csv"));
      assert.equal(csv.trim().split("\n").length, 19);

      let ran = -1;
      await runZeroShot(config, { outDir, onProgress: (p) => (ran = p.done - p.skipped) });
      assert.equal(ran, 0);
    } finally {
      await Deno.remove(outDir, { recursive: true });
    }
  },
});
