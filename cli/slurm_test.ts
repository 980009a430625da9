import assert from "node:assert/strict";
import { join } from "node:path";
import { BOOKS_HELDOUT_HEAD, REPO_ROOT } from "../datasets/mod.ts";
import { pointKey, readRecords } from "../results/store.ts";
import { jobScript } from "./slurm.ts";
import { startSlurmCluster } from "./slurm_local_cluster.ts";

type Rec = {
  experiment: string;
  key: string;
  point: Record<string, unknown>;
  provenance: { slurm?: { arrayJobId: string; arrayTaskId: string } };
};

const sleep = (ms: number) => new Promise((ok) => setTimeout(ok, ms));

function sweep(args: string[], env: Record<string, string>) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(REPO_ROOT, "cli/sweep.ts"), ...args],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output().then((o) => ({
    code: o.code,
    stdout: new TextDecoder().decode(o.stdout),
    stderr: new TextDecoder().decode(o.stderr),
  }));
}

async function squeueStates(jobId: string, env: Record<string, string>): Promise<string[]> {
  const out = await new Deno.Command("squeue", {
    args: ["-h", "-r", "-t", "all", "-j", jobId, "-o", "%i %T"],
    env,
    stdout: "piped",
    stderr: "null",
  }).output();
  return new TextDecoder().decode(out.stdout).split("\n").filter(Boolean);
}

Deno.test("the job script runs one shard per array task, from the repository", () => {
  const script = jobScript({
    experiment: "ppl_vs_rank",
    configPath: "/r/out dir/slurm/config.json",
    outDir: "/r/out dir",
    shards: 3,
    deno: "/opt/deno",
    repoRoot: "/repo",
  });
  assert.match(script, /^#!\/bin\/bash\n/);
  assert.match(script, /^#SBATCH --array=0-2$/m);
  assert.match(script, /^cd \/repo$/m);
  assert.match(script, /--config '\/r\/out dir\/slurm\/config\.json'/);
  assert.match(script, /--shards 3 --shard-index "\$SLURM_ARRAY_TASK_ID"/);
});

Deno.test({
  name: "sweeps through a real single-node Slurm (slurmctld + slurmd + munge)",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async (t) => {
    const cluster = await startSlurmCluster();
    const env = cluster.env;
    const work = await Deno.makeTempDir({ prefix: "hcinfer-slurm-test-" });
    try {
      await t.step("ppl_vs_rank on models/tiny: 4 points in 2 array tasks, merged", async () => {
        const config = join(work, "tiny.json");
        await Deno.writeTextFile(
          config,
          JSON.stringify({
            model: { name: "tiny", path: join(REPO_ROOT, "models/tiny") },
            datasets: [{ name: "books", path: BOOKS_HELDOUT_HEAD, maxWindows: 2 }],
            seqLen: 512,
            groupSize: 64,
            bits: [16, 3],
            ranks: [0, 4, 8],
            threads: 1,
          }),
        );
        const out = join(work, "tiny");
        const r = await sweep(
          ["ppl_vs_rank", "--config", config, "--out", out, "--executor", "slurm", "--shards", "2"],
          env,
        );
        assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}\n${await cluster.logs()}`);
        const records = await readRecords<Rec>(join(out, "results.jsonl"));
        assert.equal(records.length, 4);
        assert.equal(new Set(records.map((x) => x.key)).size, 4);
        // the merge puts records in the config's point order; point i ran in array task i mod 2
        assert.deepEqual(records.map((x) => [x.point.bits, x.point.rank]), [
          [16, 0],
          [3, 0],
          [3, 4],
          [3, 8],
        ]);
        records.forEach((x, i) => assert.equal(x.provenance.slurm?.arrayTaskId, String(i % 2)));
        assert.equal(new Set(records.map((x) => x.provenance.slurm?.arrayJobId)).size, 1);
        assert.match(await Deno.readTextFile(join(out, "table.md")), /\| W3 +\|/);
        const left = [...Deno.readDirSync(out)].map((e) => e.name).filter((n) =>
          n.includes("shard")
        );
        assert.deepEqual(left, [], "shard files are removed after the merge");
      });

      await t.step(
        "a cancelled array task's points rerun on resubmission, none twice",
        async () => {
          const config = join(work, "synthetic.json");
          await Deno.writeTextFile(
            config,
            JSON.stringify({ xs: [1, 2, 3, 4, 5, 6], delayMs: 1500 }),
          );
          const out = join(work, "synthetic");
          const args = ["synthetic", "--config", config, "--out", out, "--executor", "slurm"];
          const submitted = await sweep([...args, "--shards", "2", "--no-wait"], env);
          assert.equal(submitted.code, 0, submitted.stderr);
          const jobId = /submitted job (\d+)/.exec(submitted.stdout)?.[1];
          assert.ok(jobId, submitted.stdout);
          // cancel array task 1 once its first point is recorded
          const shard1 = join(out, "results.shard-1.jsonl");
          const deadline = performance.now() + 60_000;
          while ((await readRecords(shard1, { onWarning: () => {} })).length < 1) {
            assert.ok(
              performance.now() < deadline,
              `no record in ${shard1}\n${await cluster.logs()}`,
            );
            await sleep(100);
          }
          const cancel = await new Deno.Command("scancel", { args: [`${jobId}_1`], env }).output();
          assert.ok(cancel.success);
          while (
            (await squeueStates(jobId!, env)).some((l) => /PENDING|RUNNING|COMPLETING/.test(l))
          ) {
            assert.ok(performance.now() < deadline, "the job did not end");
            await sleep(200);
          }
          const states = await squeueStates(jobId!, env);
          assert.ok(states.includes(`${jobId}_1 CANCELLED`), states.join("; "));
          assert.ok(states.includes(`${jobId}_0 COMPLETED`), states.join("; "));
          const before = await readRecords<Rec>(shard1, { onWarning: () => {} });
          assert.ok(before.length >= 1 && before.length < 3, `${before.length} records before`);

          // resubmit the same sweep: waits, merges, and runs only what is missing
          const again = await sweep([...args, "--shards", "2"], env);
          assert.equal(again.code, 0, `${again.stdout}\n${again.stderr}`);
          const records = await readRecords<Rec>(join(out, "results.jsonl"));
          const keys = [1, 2, 3, 4, 5, 6].map((x) => pointKey("synthetic", { x, seed: 0 }));
          assert.deepEqual(records.map((x) => x.key), keys, "each point exactly once, in order");
          const jobOf = (x: Rec) => x.provenance.slurm!.arrayJobId;
          const kept = new Set(before.map((x) => x.key));
          for (const [i, x] of records.entries()) {
            assert.equal(x.provenance.slurm!.arrayTaskId, String(i % 2));
            // shard 0 and the points recorded before the cancel come from the first job
            const fromFirst = i % 2 === 0 || kept.has(x.key);
            assert.equal(jobOf(x) === jobId, fromFirst, `point ${i}: job ${jobOf(x)}`);
          }
        },
      );
    } finally {
      await cluster.stop();
      await Deno.remove(work, { recursive: true }).catch(() => {});
      await Deno.remove(cluster.dir, { recursive: true }).catch(() => {});
    }
  },
});
