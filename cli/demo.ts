/**
 * `deno task demo`: the main job. Perplexity of the bundled tiny checkpoint, RTN at 2/3/4/8 bits
 * with uniform compensation ranks 0/4/8/16, on bundled WikiText-2 and held-out book excerpts.
 * Writes results.jsonl, table.md, table.csv and figure.{json,html} and prints the tables.
 *
 * @module
 */

import { join } from "node:path";
import { BOOKS_HELDOUT_HEAD, REPO_ROOT, WIKITEXT2_TEST_HEAD } from "../datasets/mod.ts";
import { parseConfig } from "../experiments/schema.ts";
import {
  type PplPoint,
  pplTables,
  PplVsRankConfigSchema,
  runPplVsRank,
} from "../experiments/ppl_vs_rank.ts";
import { intOption, parseCli, runMain } from "./args.ts";
import { progressReporter } from "./progress.ts";

const USAGE = `deno task demo [--out DIR] [--threads N]

The default sweep on the bundled tiny checkpoint (models/tiny): RTN g64 at 2, 3, 4, 8 bits
× uniform rank 0, 4, 8, 16, plus the fp32 model, on the bundled WikiText-2 excerpt (first 16
windows of 512 tokens) and held-out book excerpt. A rerun resumes: finished points are skipped.

  --out DIR      result folder (default results/runs/demo)
  --threads N    worker threads (default: all cores)`;

/** The demo's sweep configuration. */
export const DEMO_CONFIG = {
  model: { name: "tiny", path: join(REPO_ROOT, "models/tiny") },
  datasets: [
    { name: "wikitext2", path: WIKITEXT2_TEST_HEAD, maxWindows: 16 },
    { name: "books-heldout", path: BOOKS_HELDOUT_HEAD },
  ],
  seqLen: 512,
  groupSize: 64,
  bits: [16, 2, 3, 4, 8],
  ranks: [0, 4, 8, 16],
};

/** Short text for a point in progress lines. */
export function describePoint(p: PplPoint): string {
  const q = p.bits === 16 ? "fp32" : `W${p.bits} g${p.groupSize} rank ${p.rank}`;
  return `${p.model} ${q} on ${p.dataset}`;
}

if (import.meta.main) {
  await runMain(async () => {
    const { values } = parseCli(Deno.args, {
      out: { type: "string" },
      threads: { type: "string" },
    }, USAGE);
    const outDir = values.out ?? join(REPO_ROOT, "results/runs/demo");
    const config = parseConfig(
      PplVsRankConfigSchema,
      { ...DEMO_CONFIG, threads: intOption(values.threads, "threads", 0, 0) },
      "cli/demo.ts",
    );
    const records = await runPplVsRank(config, {
      outDir,
      onProgress: progressReporter(describePoint),
    });
    console.log(pplTables(records));
    console.log(`results: ${outDir}/{results.jsonl,table.md,table.csv,figure.json,figure.html}`);
  });
}
