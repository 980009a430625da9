import assert from "node:assert/strict";
import { join } from "node:path";
import { REPO_ROOT, sharedRoot } from "../datasets/mod.ts";
import { readRecords } from "../results/store.ts";
import {
  listShardFiles,
  localConfig,
  locateRecordedFile,
  portableConfig,
  readExperimentRecords,
  recordedModelDir,
  runExperiment,
  shardPath,
} from "./experiment.ts";
import { DEMO_CONFIG } from "../cli/demo.ts";
import { type PplMetrics, type PplPoint, pplVsRank } from "./ppl_vs_rank.ts";
import { experimentNames, findExperiment } from "./registry.ts";
import type { SweepRecord } from "./runner.ts";
import { synthetic } from "./synthetic.ts";

Deno.test("configs are recorded with portable paths and resolved back", () => {
  const config = {
    model: { name: "tiny", path: join(REPO_ROOT, "models/tiny") },
    datasets: [{ name: "w", path: join(sharedRoot(), "data/w.txt") }, {
      name: "o",
      path: "/elsewhere/o.txt",
    }],
    seqLen: 512,
  };
  const portable = portableConfig(config);
  assert.deepEqual(portable, {
    model: { name: "tiny", path: "repo:models/tiny" },
    datasets: [{ name: "w", path: "shared:data/w.txt" }, { name: "o", path: "/elsewhere/o.txt" }],
    seqLen: 512,
  });
  assert.deepEqual(localConfig(portable), config);
});

Deno.test("recorded absolute paths of another checkout are found here", () => {
  const here = join(REPO_ROOT, "models/tiny/config.json");
  assert.equal(locateRecordedFile("/some/other/checkout/models/tiny/config.json"), here);
  assert.equal(locateRecordedFile("repo:models/tiny/config.json"), here);
  assert.equal(locateRecordedFile("/nowhere/at/all.bin"), null);
  assert.equal(
    recordedModelDir({ provenance: { files: { "/x/y/models/tiny/model.safetensors": "h" } } }),
    join(REPO_ROOT, "models/tiny"),
  );
});

Deno.test("the registry declares ppl_vs_rank and synthetic", () => {
  assert.ok(experimentNames().includes("ppl_vs_rank"));
  assert.equal(findExperiment("synthetic"), synthetic);
  assert.equal(findExperiment("toString"), undefined);
});

Deno.test("ppl_vs_rank infers the demo config from the committed tiny-demo records", async () => {
  const records = await readRecords<SweepRecord<PplPoint, PplMetrics>>(
    join(REPO_ROOT, "results/tiny-demo/results.jsonl"),
  );
  const inferred = pplVsRank.configFromRecords!(records) as typeof DEMO_CONFIG;
  assert.deepEqual(inferred.model, DEMO_CONFIG.model);
  assert.deepEqual(inferred.datasets, DEMO_CONFIG.datasets);
  assert.deepEqual(
    [inferred.seqLen, inferred.groupSize, inferred.bits, inferred.ranks],
    [DEMO_CONFIG.seqLen, DEMO_CONFIG.groupSize, DEMO_CONFIG.bits, DEMO_CONFIG.ranks],
  );
  // its figures: per dataset, perplexity against rank and against bits per weight
  const figures = await pplVsRank.figures(records);
  assert.deepEqual(figures.map((f) => [f.name, f.figure.data.length]), [
    ["ppl-vs-rank-wikitext2", 5],
    ["ppl-vs-bpw-wikitext2", 5],
    ["ppl-vs-rank-books-heldout", 5],
    ["ppl-vs-bpw-books-heldout", 5],
  ]);
  const bpw = figures[3].figure.data[1]; // W3 g64: 3 + 32/64 bits at rank 0
  assert.equal((bpw.x as number[])[0], 3.5);
  for (const { figure } of figures) {
    assert.ok(figure.layout.xaxis?.title?.text && figure.layout.yaxis?.title?.text);
  }
});

Deno.test("runExperiment: a shard writes its own file; records carry the config", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const config = { xs: [1, 2, 3], repeats: 2, delayMs: 0 };
    const shard = await runExperiment(synthetic, config, {
      outDir: dir,
      shard: { index: 1, count: 4 },
    });
    assert.deepEqual(shard.map((r) => r.point), [{ x: 1, seed: 1 }, { x: 3, seed: 1 }]);
    assert.deepEqual(await listShardFiles(dir), [shardPath(dir, 1)]);
    assert.deepEqual(await readExperimentRecords(synthetic, dir), [], "no results.jsonl yet");
    const all = await runExperiment(synthetic, config, { outDir: dir });
    assert.equal(all.length, 6);
    assert.deepEqual(all[0].config, config);
    await Deno.stat(join(dir, "table.md"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
