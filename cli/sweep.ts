/**
 * `deno task sweep <experiment> --config FILE [--out DIR]`: runs (or resumes) an experiment's
 * sweep from a JSON config and writes its result file, tables and figure.
 *
 * @module
 */

import { basename, join } from "node:path";
import { REPO_ROOT } from "../datasets/mod.ts";
import { readConfigFile } from "../experiments/config_file.ts";
import { parseConfig } from "../experiments/schema.ts";
import { pplTables, PplVsRankConfigSchema, runPplVsRank } from "../experiments/ppl_vs_rank.ts";
import { runZeroShot, ZeroShotConfigSchema, zeroShotTables } from "../experiments/zero_shot.ts";
import { parseCli, runMain, UsageError } from "./args.ts";
import { describePoint } from "./demo.ts";
import { progressReporter } from "./progress.ts";

/** Experiments runnable from the command line. */
const EXPERIMENTS: Record<
  string,
  (config: unknown, source: string, outDir: string) => Promise<string>
> = {
  ppl_vs_rank: async (raw, source, outDir) => {
    const config = parseConfig(PplVsRankConfigSchema, raw, source);
    const records = await runPplVsRank(config, {
      outDir,
      onProgress: progressReporter(describePoint),
    });
    return pplTables(records);
  },
  zero_shot: async (raw, source, outDir) => {
    const config = parseConfig(ZeroShotConfigSchema, raw, source);
    const records = await runZeroShot(config, {
      outDir,
      onProgress: progressReporter((p) => `${p.config} on ${p.task}`),
    });
    return zeroShotTables(records);
  },
};

const USAGE = `deno task sweep <experiment> --config FILE [--out DIR]

Runs an experiment's sweep point by point; each finished point is appended to
DIR/results.jsonl at once, and a rerun skips finished points. Tables and figures are rewritten
from all records at the end.

  experiment     one of: ${Object.keys(EXPERIMENTS).join(", ")}
  --config FILE  JSON config (paths: "shared:..." under the shared tree, "repo:..." under this
                 repository, or relative to the config file); see experiments/configs/
  --out DIR      result folder (default results/runs/<experiment>-<config name>)`;

await runMain(async () => {
  const { values, positionals } = parseCli(Deno.args, {
    config: { type: "string" },
    out: { type: "string" },
  }, USAGE);
  const [name] = positionals;
  if (!name) throw new UsageError(`name an experiment\n\n${USAGE}`);
  const run = EXPERIMENTS[name];
  if (!run) {
    throw new UsageError(
      `unknown experiment '${name}' (known: ${Object.keys(EXPERIMENTS).join(", ")})`,
    );
  }
  if (!values.config) throw new UsageError(`--config is required\n\n${USAGE}`);
  const outDir = values.out ??
    join(REPO_ROOT, "results/runs", `${name}-${basename(values.config).replace(/\.json$/, "")}`);
  const tables = await run(await readConfigFile(values.config), values.config, outDir);
  console.log(tables);
  console.log(`results: ${outDir}`);
});
