/**
 * `deno task bench:cpu --config FILE [--out DIR]`: the `cpu_lowrank` experiment alone, with an
 * import graph free of the figure renderer, so that it can be carried to a machine without a
 * package registry (the GPU machine) in a small offline bundle. Same records as
 * `deno task sweep cpu_lowrank`.
 *
 * @module
 */

import { join } from "node:path";
import { REPO_ROOT } from "../datasets/bundled.ts";
import { readConfigFile } from "../experiments/config_file.ts";
import { cpuLowRank } from "../experiments/cpu_lowrank.ts";
import { runExperiment } from "../experiments/experiment.ts";
import { parseConfig } from "../experiments/schema.ts";
import { parseCli, runMain, UsageError } from "./args.ts";
import { progressReporter } from "./progress.ts";

const USAGE = `deno task bench:cpu --config FILE [--out DIR]

Times the CPU low-rank compensation kernels at real model shapes against the host memory read
bandwidth (experiment cpu_lowrank; see experiments/configs/cpu_lowrank_device.json).

  --config FILE  JSON config
  --out DIR      result folder (default results/runs/cpu_lowrank)`;

await runMain(async () => {
  const { values } = parseCli(Deno.args, {
    config: { type: "string" },
    out: { type: "string" },
  }, USAGE);
  if (!values.config) throw new UsageError(`--config is required\n\n${USAGE}`);
  const config = parseConfig(cpuLowRank.schema, await readConfigFile(values.config), values.config);
  const outDir = values.out ?? join(REPO_ROOT, "results/runs/cpu_lowrank");
  const records = await runExperiment(cpuLowRank, config, {
    outDir,
    onProgress: progressReporter(cpuLowRank.describePoint),
  });
  console.log(cpuLowRank.tables(records));
});
