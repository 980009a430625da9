/**
 * The Slurm executor of `deno task sweep`: a job array with one shard of the sweep's points per
 * array task. Each task runs `cli/sweep.ts … --shards N --shard-index $SLURM_ARRAY_TASK_ID`,
 * which appends to its own `results.shard-<k>.jsonl` and skips the points already there (or in
 * results.jsonl), so resubmitting the same command reruns only what is missing. After the job
 * (`sbatch --wait`), or with `--merge`, the shards are merged into results.jsonl, one record per
 * point.
 *
 * @module
 */

import { join, resolve } from "node:path";
import { REPO_ROOT } from "../datasets/mod.ts";
import {
  type AnyExperiment,
  listShardFiles,
  mergeShards,
  RESULTS_FILE,
} from "../experiments/experiment.ts";
import type { MergeSummary } from "../results/merge.ts";
import { pointKey, readRecords } from "../results/store.ts";
import { statusReporter } from "./progress.ts";

/** What the job script runs. */
export interface JobScriptOptions {
  /** The experiment's name. */
  experiment: string;
  /** The frozen config file the tasks read (absolute). */
  configPath: string;
  /** The result folder (absolute). */
  outDir: string;
  /** Array tasks. */
  shards: number;
  /** The deno executable (absolute). */
  deno: string;
  /** The repository (absolute). */
  repoRoot: string;
}

/** A word quoted for bash. */
export function shellQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/**
 * The job array script.
 *
 * @param o what it runs
 * @returns the script text
 */
export function jobScript(o: JobScriptOptions): string {
  const q = shellQuote;
  return `#!/bin/bash
# hcinfer sweep '${o.experiment}': one shard of points per array task (written by cli/slurm.ts).
#SBATCH --job-name=hcinfer-${o.experiment}
#SBATCH --array=0-${o.shards - 1}
#SBATCH --ntasks=1
#SBATCH --output=${join(o.outDir, "slurm", "%x-%A_%a.out")}
set -euo pipefail
cd ${q(o.repoRoot)}
exec ${q(o.deno)} run -A cli/sweep.ts ${q(o.experiment)} --config ${q(o.configPath)} \\
  --out ${q(o.outDir)} --shards ${o.shards} --shard-index "$SLURM_ARRAY_TASK_ID"
`;
}

/** Options of {@linkcode submitSweep}. */
export interface SubmitOptions {
  /** The experiment. */
  experiment: AnyExperiment;
  /** The config as read from its file (paths resolved), frozen for the tasks. */
  rawConfig: unknown;
  /** The parsed config. */
  config: unknown;
  /** The result folder. */
  outDir: string;
  /** Array tasks wanted (capped at the number of points). */
  shards: number;
  /** Wait for the job (`sbatch --wait`) and merge; default true. */
  wait?: boolean;
  /** Further sbatch arguments, e.g. `--partition=gpu`. */
  sbatchArgs?: string[];
  /** Seconds between progress polls while waiting; default 2. */
  pollSeconds?: number;
}

/** What a submission did. */
export interface SubmitResult {
  /** The array job's id. */
  jobId: string;
  /** The job script written. */
  script: string;
  /** Array tasks. */
  shards: number;
  /** Points in the sweep. */
  total: number;
  /** sbatch's exit code after waiting (the highest of the tasks'); null when not waited. */
  exitCode: number | null;
  /** The merge after waiting; null when not waited. */
  merge: MergeSummary | null;
  /** Points of the sweep with a record after the merge; null when not waited. */
  done: number | null;
}

/**
 * Writes the job script and the frozen config under `<outDir>/slurm/`, merges shards left by an
 * earlier job (so a changed shard count cannot run a point twice), and submits the array with
 * sbatch; when waiting, reports progress from the shard files and merges at the end.
 *
 * @param o the sweep and how to submit it
 * @returns the job and, when waited, the merge
 * @throws Error with sbatch's message when sbatch is missing or refuses the job
 */
export async function submitSweep(o: SubmitOptions): Promise<SubmitResult> {
  const exp = o.experiment;
  const outDir = resolve(o.outDir);
  const slurmDir = join(outDir, "slurm");
  await Deno.mkdir(slurmDir, { recursive: true });
  const points = exp.points(o.config);
  const keys = new Set(points.map((p: unknown) => pointKey(exp.name, p)));
  const shards = Math.max(1, Math.min(o.shards, points.length));
  if ((await listShardFiles(outDir)).length) await mergeShards(exp, o.config, outDir);
  const configPath = join(slurmDir, "config.json");
  await Deno.writeTextFile(configPath, JSON.stringify(o.rawConfig, null, 2) + "\n");
  const script = join(slurmDir, `${exp.name}.sbatch`);
  await Deno.writeTextFile(
    script,
    jobScript({
      experiment: exp.name,
      configPath,
      outDir,
      shards,
      deno: Deno.execPath(),
      repoRoot: REPO_ROOT,
    }),
  );
  const wait = o.wait ?? true;
  const submitted = await new Deno.Command("sbatch", {
    args: ["--parsable", ...(o.sbatchArgs ?? []), script],
    stdout: "piped",
    stderr: "piped",
  }).output().catch((error: Error) => {
    throw new Error(
      `cannot run sbatch (${error.message}): is Slurm's client installed and on PATH?`,
      { cause: error },
    );
  });
  const text = (b: Uint8Array) => new TextDecoder().decode(b).trim();
  const jobId = text(submitted.stdout).split("\n")[0].split(";")[0].trim();
  if (!submitted.success || !/^\d+$/.test(jobId)) {
    throw new Error(
      `sbatch ${script} failed (exit ${submitted.code}): ` +
        (text(submitted.stderr) || text(submitted.stdout)),
    );
  }
  const result = { jobId, script, shards, total: points.length };
  if (!wait) return { ...result, exitCode: null, merge: null, done: null };

  const countDone = async () => {
    const seen = new Set<string>();
    for (const path of [join(outDir, RESULTS_FILE), ...await listShardFiles(outDir)]) {
      for (const r of await readRecords<{ key?: string }>(path, { onWarning: () => {} })) {
        if (r.key && keys.has(r.key)) seen.add(r.key);
      }
    }
    return seen.size;
  };
  const report = statusReporter();
  const doneAtStart = await countDone();
  const t0 = performance.now();
  const pollMs = (o.pollSeconds ?? 2) * 1000;
  let states: Map<string, number> | null;
  for (let unknown = 0;;) {
    await new Promise((ok) => setTimeout(ok, pollMs));
    states = await taskStates(jobId);
    if (states !== null && ![...states.keys()].some((s) => ACTIVE.has(s))) break;
    unknown = states === null ? unknown + 1 : 0;
    if (unknown >= 30) {
      throw new Error(
        `squeue does not answer about job ${jobId}; when the job is over, merge its shards ` +
          `with --merge`,
      );
    }
    const done = await countDone();
    const elapsed = (performance.now() - t0) / 1000;
    const rate = (done - doneAtStart) / elapsed;
    report({
      done,
      total: points.length,
      text: `slurm job ${jobId} (${shards} tasks: ${describeStates(states)})`,
      elapsedSeconds: elapsed,
      etaSeconds: rate > 0 ? (points.length - done) / rate : null,
    });
  }
  const failed = [...states!].filter(([s]) => s !== "COMPLETED").reduce((n, [, k]) => n + k, 0);
  const merge = await mergeShards(exp, o.config, outDir);
  const done = await countDone();
  report({
    done,
    total: points.length,
    text: `slurm job ${jobId} ended (${describeStates(states!)})`,
    elapsedSeconds: (performance.now() - t0) / 1000,
    etaSeconds: null,
    final: true,
  });
  return { ...result, exitCode: failed ? 1 : 0, merge, done };
}

/** Job states of array tasks that are not over yet. */
const ACTIVE = new Set([
  "PENDING",
  "RUNNING",
  "CONFIGURING",
  "COMPLETING",
  "SUSPENDED",
  "REQUEUED",
  "REQUEUE_FED",
  "REQUEUE_HOLD",
  "RESIZING",
  "SIGNALING",
  "STAGE_OUT",
  "STOPPED",
  "RESV_DEL_HOLD",
]);

function describeStates(states: Map<string, number> | null): string {
  if (states === null) return "state unknown";
  if (states.size === 0) return "none left in the queue";
  return [...states].map(([s, n]) => `${n} ${s.toLowerCase()}`).join(", ");
}

/**
 * The states of a job's array tasks (squeue, all states), counted; an empty map once Slurm has
 * forgotten the job; null when squeue cannot be asked.
 */
async function taskStates(jobId: string): Promise<Map<string, number> | null> {
  try {
    const out = await new Deno.Command("squeue", {
      args: ["-h", "-r", "-t", "all", "-j", jobId, "-o", "%T"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(out.stderr);
    if (!out.success) return /invalid job id/i.test(err) ? new Map() : null;
    const counts = new Map<string, number>();
    for (const s of new TextDecoder().decode(out.stdout).split("\n").filter(Boolean)) {
      counts.set(s.trim(), (counts.get(s.trim()) ?? 0) + 1);
    }
    return counts;
  } catch {
    return null;
  }
}
