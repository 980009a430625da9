import assert from "node:assert/strict";
import { join } from "node:path";
import { BOOKS_HELDOUT_HEAD, REPO_ROOT } from "../datasets/mod.ts";
import { readRecords } from "../results/mod.ts";
import { ConfigError, parseConfig } from "./schema.ts";
import {
  type PplMetrics,
  type PplPoint,
  PplVsRankConfigSchema,
  runPplVsRank,
} from "./ppl_vs_rank.ts";
import type { SweepRecord } from "./runner.ts";

const config = parseConfig(PplVsRankConfigSchema, {
  model: { name: "tiny", path: join(REPO_ROOT, "models/tiny") },
  datasets: [{ name: "books", path: BOOKS_HELDOUT_HEAD }],
  seqLen: 512,
  groupSize: 64,
  bits: [16, 2, 3, 4],
  ranks: [0, 8, 16],
}, "test");

Deno.test("ppl_vs_rank on tiny: compensation lowers perplexity as rank grows, at every bit width", async () => {
  const outDir = await Deno.makeTempDir();
  try {
    const records = await runPplVsRank(config, { outDir });
    assert.equal(records.length, 1 + 3 * 3);
    const fp = records.find((r) => r.point.bits === 16)!.metrics.ppl;
    for (const bits of [2, 3, 4]) {
      const ppl = [0, 8, 16].map((rank) =>
        records.find((r) => r.point.bits === bits && r.point.rank === rank)!.metrics.ppl
      );
      // At 4 bits the residual is small and plain SVD moves perplexity by tenths: only the
      // end points are compared there; at 2 and 3 bits every step must help.
      if (bits < 4) assert.ok(ppl[0] > ppl[1] && ppl[1] > ppl[2], `W${bits}: ${ppl.join(" > ")}`);
      assert.ok(ppl[0] > ppl[2], `W${bits}: rank 0 ${ppl[0]} > rank 16 ${ppl[2]} expected`);
      assert.ok(ppl[2] > fp * 0.99, `W${bits} rank 16 ${ppl[2]} vs fp ${fp}`);
      const errs = [0, 8, 16].map((rank) =>
        records.find((r) => r.point.bits === bits && r.point.rank === rank)!.metrics.relErrActive!
      );
      assert.ok(errs[0] > errs[1] && errs[1] > errs[2], `weight error falls with rank: ${errs}`);
    }
    // fewer bits, more error
    const rank0 = (b: number) =>
      records.find((r) => r.point.bits === b && r.point.rank === 0)!.metrics.ppl;
    assert.ok(rank0(2) > rank0(3) && rank0(3) > rank0(4));
    // outputs, and provenance on every record
    const md = await Deno.readTextFile(join(outDir, "table.md"));
    assert.match(md, /\| W3 +\|/);
    const csv = await Deno.readTextFile(join(outDir, "table.csv"));
    assert.equal(csv.trim().split("\n").length, 1 + records.length);
    const fig = JSON.parse(await Deno.readTextFile(join(outDir, "figure.json")));
    assert.equal(fig.data.length, 4);
    for (const r of records) {
      const prov = r.provenance as { files: Record<string, string>; library: string };
      assert.match(prov.library, /^hcinfer /);
      assert.ok(Object.keys(prov.files).some((f) => f.endsWith("model.safetensors")));
    }

    // a rerun skips every finished point and appends nothing
    const before = (await Deno.readTextFile(join(outDir, "results.jsonl"))).length;
    let ran = -1;
    await runPplVsRank(config, { outDir, onProgress: (p) => (ran = p.done - p.skipped) });
    assert.equal(ran, 0);
    assert.equal((await Deno.readTextFile(join(outDir, "results.jsonl"))).length, before);
    const again = await readRecords<SweepRecord<PplPoint, PplMetrics>>(
      join(outDir, "results.jsonl"),
    );
    assert.equal(again.length, records.length);
  } finally {
    await Deno.remove(outDir, { recursive: true });
  }
});

Deno.test("ppl_vs_rank config errors name the key", () => {
  assert.throws(
    () => parseConfig(PplVsRankConfigSchema, { ...config, bits: [2, 5] }, "my_config.json"),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.match(e.message, /^invalid experiment config in my_config\.json: bits\[1\]/);
      return true;
    },
  );
  assert.throws(
    () => parseConfig(PplVsRankConfigSchema, { ...config, ranks: [-1] }, "x"),
    /ranks\[0\]/,
  );
  assert.throws(
    () => parseConfig(PplVsRankConfigSchema, { ...config, datsets: [] }, "x"),
    /datsets/,
  );
});
