import assert from "node:assert/strict";
import { join } from "node:path";
import { REPO_ROOT, TASK_NAMES, TASK_SPECS, taskPath } from "../datasets/mod.ts";
import { pointKey, readRecords } from "../results/store.ts";
import { findExperiment } from "./registry.ts";
import { ConfigError, parseConfig } from "./schema.ts";
import {
  accuracyStderr,
  runZeroShot,
  zeroShot,
  ZeroShotConfigSchema,
  zeroShotPoints,
  type ZeroShotRecord,
} from "./zero_shot.ts";

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

Deno.test("zero_shot is declared; the committed records give their config and figure", async () => {
  assert.equal(findExperiment("zero_shot"), zeroShot);
  const records = await readRecords<ZeroShotRecord>(
    join(REPO_ROOT, "results/small-zero_shot/results.jsonl"),
  );
  assert.equal(records.length, 36);

  const figures = await zeroShot.figures(records);
  assert.deepEqual(figures.map((f) => f.name), ["zero-shot-accuracy"]);
  const { data, layout } = figures[0].figure;
  assert.deepEqual(data.map((t) => [t.type, t.name]), [
    ["bar", "fp32"],
    ["bar", "W4"],
    ["bar", "W3"],
    ["bar", "W3+r32"],
    ["scatter", "chance"],
  ]);
  assert.equal(layout.barmode, "group");
  assert.ok(layout.xaxis?.title?.text && layout.yaxis?.title?.text);
  // bars: the headline metric per task (arc_easy: acc_norm), error bar lm-eval's stderr
  const fp32 = records.find((r) => r.point.config === "fp32" && r.point.task === "arc_easy")!;
  assert.equal((data[0].y as number[])[0], fp32.metrics.acc_norm);
  const err = (data[0].error_y as { array: number[] }).array[0];
  assert.equal(err, accuracyStderr(fp32.metrics.acc_norm!, 200));
  assert.ok(Math.abs(err - Math.sqrt(0.235 * 0.765 / 199)) < 1e-15);
  // chance: one dashed segment per task (arc_easy 1/4, piqa 1/2)
  const chance = data[4];
  assert.equal((chance.line as { dash: string }).dash, "dash");
  assert.deepEqual((chance.y as Array<number | null>).slice(0, 3), [0.25, 0.25, null]);
  assert.deepEqual((chance.y as Array<number | null>).slice(9, 11), [0.5, 0.5]);

  if (!haveShared) return;
  const inferred = zeroShot.configFromRecords!(records);
  assert.ok(inferred, "a config is inferred from the records");
  const parsed = parseConfig(ZeroShotConfigSchema, inferred, "inferred");
  assert.equal(parsed.limit, 200);
  assert.deepEqual(parsed.tasks, [...TASK_NAMES]);
  assert.deepEqual(parsed.configs.map((c) => [c.name, c.bits, c.rank]), [
    ["fp32", 16, 0],
    ["W4", 4, 0],
    ["W3", 3, 0],
    ["W3+r32", 3, 32],
  ]);
  const keys = zeroShotPoints(parsed).map((p) => pointKey("zero_shot", p));
  assert.deepEqual(keys, records.map((r) => r.key));
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
      await Deno.stat(join(outDir, "figure.json"));
      assert.deepEqual(records[0].config, {
        ...config,
        model: { name: "tiny", path: "repo:models/tiny" },
      });

      let ran = -1;
      await runZeroShot(config, { outDir, onProgress: (p) => (ran = p.done - p.skipped) });
      assert.equal(ran, 0);
    } finally {
      await Deno.remove(outDir, { recursive: true });
    }
  },
});
