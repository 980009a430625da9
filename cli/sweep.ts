/**
 * `deno task sweep <experiment> --config FILE [--out DIR] [--executor local|slurm]`: runs (or
 * resumes) an experiment's sweep from a JSON config and writes its result file, tables and
 * figure; in-process (`local`, the default) or as a Slurm job array (`slurm`, see cli/slurm.ts).
 *
 * @module
 */

import { basename, join } from "node:path";
import { REPO_ROOT } from "../datasets/mod.ts";
import { readConfigFile } from "../experiments/config_file.ts";
import {
  listShardFiles,
  mergeShards,
  readExperimentRecords,
  runExperiment,
} from "../experiments/experiment.ts";
import { experimentNames, findExperiment } from "../experiments/registry.ts";
import { parseConfig } from "../experiments/schema.ts";
import { intOption, parseCli, runMain, UsageError } from "./args.ts";
import { progressReporter } from "./progress.ts";
import { submitSweep } from "./slurm.ts";

const names = () => experimentNames().join(", ");

const USAGE = () =>
  `deno task sweep <experiment> --config FILE [--out DIR] [--executor local|slurm] [options]

Runs an experiment's sweep point by point; each finished point is appended to
DIR/results.jsonl at once, and a rerun skips finished points. Tables and figures are rewritten
from all records at the end.

  experiment          one of: ${names()}
  --config FILE       JSON config (paths: "shared:..." under the shared tree, "repo:..." under
                      this repository, or relative to the config file); see experiments/configs/
  --out DIR           result folder (default results/runs/<experiment>-<config name>)
  --executor local    run in this process (default)
  --executor slurm    submit a Slurm job array (sbatch): one shard of points per array task,
                      each appending to DIR/results.shard-<k>.jsonl; waits for the job, then
                      merges the shards into DIR/results.jsonl (one record per point). Rerun the
                      same command to run what a failed or cancelled task left undone.
  --shards N          array tasks for --executor slurm (default 4; at most one per point);
                      point i goes to shard i mod N
  --no-wait           with --executor slurm: submit and return; merge later with --merge
  --sbatch-arg ARG    extra sbatch argument, repeatable (e.g. --sbatch-arg=--partition=gpu)
  --merge             only merge DIR/results.shard-*.jsonl into DIR/results.jsonl and rewrite
                      the tables and figure
  --shard-index K     run only shard K of --shards N, appending to DIR/results.shard-K.jsonl
                      (what each array task runs)`;

await runMain(async () => {
  const { values, positionals } = parseCli(Deno.args, {
    config: { type: "string" },
    out: { type: "string" },
    executor: { type: "string" },
    shards: { type: "string" },
    "shard-index": { type: "string" },
    merge: { type: "boolean" },
    "no-wait": { type: "boolean" },
    "sbatch-arg": { type: "string", multiple: true },
  }, USAGE());
  const [name] = positionals;
  if (!name) throw new UsageError(`name an experiment\n\n${USAGE()}`);
  const exp = findExperiment(name);
  if (!exp) throw new UsageError(`unknown experiment '${name}' (known: ${names()})`);
  if (!values.config) throw new UsageError(`--config is required\n\n${USAGE()}`);
  const executor = values.executor ?? "local";
  if (executor !== "local" && executor !== "slurm") {
    throw new UsageError(`--executor: expected 'local' or 'slurm', got '${executor}'`);
  }
  const outDir = values.out ??
    join(REPO_ROOT, "results/runs", `${name}-${basename(values.config).replace(/\.json$/, "")}`);
  const raw = await readConfigFile(values.config);
  const config = parseConfig(exp.schema, raw, values.config);
  const shards = intOption(values.shards, "shards", 4, 1);

  if (values.merge) {
    const m = await mergeShards(exp, config, outDir);
    const records = await readExperimentRecords(exp, outDir);
    await exp.writeReport(records, outDir);
    console.log(exp.tables(records));
    console.log(
      `merged ${m.sources.length} shard file(s): ${m.added} new record(s), ` +
        `${m.duplicates} duplicate(s) dropped, ${m.records} in ${join(outDir, "results.jsonl")}`,
    );
    return;
  }

  if (executor === "slurm") {
    const r = await submitSweep({
      experiment: exp,
      rawConfig: raw,
      config,
      outDir,
      shards,
      wait: !values["no-wait"],
      sbatchArgs: values["sbatch-arg"] ?? [],
    });
    if (r.exitCode === null) {
      console.log(
        `submitted job ${r.jobId} (${r.shards} array tasks, ${r.total} points; ${r.script})\n` +
          `when it is done: deno task sweep ${name} --config ${values.config} --out ${outDir} ` +
          `--merge`,
      );
      return;
    }
    const records = await readExperimentRecords(exp, outDir);
    await exp.writeReport(records, outDir);
    console.log(exp.tables(records));
    console.log(`results: ${outDir} (slurm job ${r.jobId}, task logs in ${outDir}/slurm/)`);
    if (r.exitCode !== 0 || r.done !== r.total) {
      throw new Error(
        `slurm job ${r.jobId}: ${r.total - r.done!} of ${r.total} points missing ` +
          `(sbatch exit ${r.exitCode}; see ${outDir}/slurm/*.out); ` +
          `rerun the same command to run them`,
      );
    }
    return;
  }

  const shardIndex = values["shard-index"];
  if (shardIndex !== undefined && values.shards === undefined) {
    throw new UsageError("--shard-index needs --shards N (the number of shards)");
  }
  const shard = shardIndex === undefined
    ? undefined
    : { index: intOption(shardIndex, "shard-index", 0, 0, shards - 1), count: shards };
  // shards left by a Slurm run count as done: merge them first
  if (!shard && (await listShardFiles(outDir)).length) await mergeShards(exp, config, outDir);
  const records = await runExperiment(exp, config, {
    outDir,
    shard,
    onProgress: progressReporter(exp.describePoint),
  });
  if (shard) {
    console.log(`shard ${shard.index} of ${shard.count}: ${records.length} record(s)`);
    return;
  }
  console.log(exp.tables(records));
  console.log(`results: ${outDir}`);
});
