import assert from "node:assert/strict";
import { join } from "node:path";
import { BOOKS_HELDOUT_HEAD, REPO_ROOT } from "../datasets/mod.ts";
import { PplVsRankConfigSchema, runPplVsRank } from "../experiments/ppl_vs_rank.ts";
import { parseConfig } from "../experiments/schema.ts";
import { readRecords } from "../results/store.ts";
import { formatReport, reproduce } from "./reproduce.ts";

async function cli(args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(REPO_ROOT, "cli/reproduce.ts"), ...args],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const d = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: d(out.stdout), stderr: d(out.stderr) };
}

Deno.test("reproduce reruns recorded ppl_vs_rank points and flags a changed metric", async () => {
  const dir = await Deno.makeTempDir({ prefix: "hcinfer-reproduce-" });
  try {
    const config = parseConfig(PplVsRankConfigSchema, {
      model: { name: "tiny", path: join(REPO_ROOT, "models/tiny") },
      datasets: [{ name: "books", path: BOOKS_HELDOUT_HEAD, maxWindows: 2 }],
      groupSize: 64,
      bits: [16, 3],
      ranks: [0, 8],
      threads: 1,
    }, "test");
    await runPplVsRank(config, { outDir: dir });
    const file = join(dir, "results.jsonl");
    const records = await readRecords<{ config: { model: { path: string } } }>(file);
    assert.equal(records.length, 3);
    // the resolved config is recorded, with paths portable across checkouts
    assert.equal(records[0].config.model.path, "repo:models/tiny");

    const report = await reproduce(file, { rtol: 1e-6 });
    assert.equal(report.points, 3);
    assert.equal(report.diffs.length, 3 * 7);
    assert.ok(report.diffs.every((d) => d.ok), formatReport(report, true));
    assert.deepEqual(report.warnings, []);

    // tamper with one recorded perplexity: the CLI reports it and exits 1
    const lines = (await Deno.readTextFile(file)).trim().split("\n");
    const rec = JSON.parse(lines[2]);
    rec.metrics.ppl *= 1.01;
    lines[2] = JSON.stringify(rec);
    await Deno.writeTextFile(file, lines.join("\n") + "\n");
    const r = await cli([file, "--failures"]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stdout, /\|\s+3 \| tiny W3 g64 rank 8 on books \| ppl .*\*\*NO\*\*/);
    assert.match(r.stdout, /3 point\(s\) rerun, 21 metric value\(s\) compared, 1 beyond tolerance/);
    assert.match(r.stderr, /1 metric value\(s\) differ beyond tolerance/);
    // --limit reruns only the first records
    const limited = await cli([file, "--limit", "2"]);
    assert.equal(limited.code, 0, limited.stderr);
    assert.match(limited.stdout, /2 point\(s\) rerun/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reproduce infers the config of records written before configs were recorded", async () => {
  const file = join(REPO_ROOT, "results/tiny-demo/results.jsonl");
  const report = await reproduce(file, { limit: 2 });
  assert.equal(report.points, 2);
  assert.ok(report.diffs.every((d) => d.ok), formatReport(report, true));
  assert.match(report.warnings.join("\n"), /config inferred|inferred from their points/);
});
