import assert from "node:assert/strict";
import { join } from "node:path";
import { REPO_ROOT } from "../datasets/mod.ts";
import { pointKey, readRecords } from "../results/store.ts";

type Rec = {
  key: string;
  point: { x: number; seed: number };
  metrics: { value: number; pid: number };
  config?: unknown;
};

const decode = (b: Uint8Array) => new TextDecoder().decode(b);
const sleep = (ms: number) => new Promise((ok) => setTimeout(ok, ms));

async function task(script: string, args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(REPO_ROOT, "cli", script), ...args],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

async function withDir(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "hcinfer-sweep-test-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const keyOf = (x: number, seed = 0) => pointKey("synthetic", { x, seed });

Deno.test("a sweep killed with SIGKILL mid-run resumes with nothing lost or duplicated", async () => {
  await withDir(async (dir) => {
    const config = join(dir, "c.json");
    const xs = [1, 2, 3, 4, 5, 6, 7, 8];
    await Deno.writeTextFile(config, JSON.stringify({ xs, delayMs: 250 }));
    const out = join(dir, "out");
    const results = join(out, "results.jsonl");
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        join(REPO_ROOT, "cli/sweep.ts"),
        "synthetic",
        "--config",
        config,
        "--out",
        out,
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    let before: Rec[] = [];
    try {
      const deadline = performance.now() + 60_000;
      while ((before = await readRecords<Rec>(results, { onWarning: () => {} })).length < 2) {
        assert.ok(performance.now() < deadline, "no records appeared");
        await sleep(20);
      }
    } finally {
      child.kill("SIGKILL");
    }
    const status = await child.status;
    assert.equal(status.signal, "SIGKILL");
    // what was on disk when it died (a line cut short by the kill is not a record)
    before = await readRecords<Rec>(results, { onWarning: () => {} });
    assert.ok(before.length >= 2 && before.length < xs.length, `${before.length} records`);
    const killedPid = before[0].metrics.pid;

    const r = await task("sweep.ts", ["synthetic", "--config", config, "--out", out]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`${before.length} already done`));
    const after = await readRecords<Rec>(results);
    assert.deepEqual(after.map((x) => x.key), xs.map((x) => keyOf(x)), "each point once, in order");
    assert.deepEqual(after.slice(0, before.length), before, "nothing recorded before is lost");
    assert.ok(before.every((x) => x.metrics.pid === killedPid));
    for (const x of after.slice(before.length)) assert.notEqual(x.metrics.pid, killedPid);
    const md = await Deno.readTextFile(join(out, "table.md"));
    assert.equal(md.trim().split("\n").filter((l) => /^\| \d/.test(l)).length, xs.length);
  });
});

Deno.test("shards: each runs only its points (index mod N) into its own file; --merge combines them", async () => {
  await withDir(async (dir) => {
    const config = join(dir, "c.json");
    await Deno.writeTextFile(config, JSON.stringify({ xs: [1, 2, 3, 4, 5], repeats: 1 }));
    const out = join(dir, "out");
    const base = ["synthetic", "--config", config, "--out", out, "--shards", "2"];
    for (const k of [1, 0]) {
      const r = await task("sweep.ts", [...base, "--shard-index", String(k)]);
      assert.equal(r.code, 0, r.stderr);
    }
    const shard = async (k: number) =>
      (await readRecords<Rec>(join(out, `results.shard-${k}.jsonl`))).map((x) => x.point.x);
    assert.deepEqual(await shard(0), [1, 3, 5]);
    assert.deepEqual(await shard(1), [2, 4]);
    // a rerun of a shard skips its recorded points; a duplicate (as after changing N) is dropped
    assert.equal((await task("sweep.ts", [...base, "--shard-index", "0"])).code, 0);
    assert.deepEqual(await shard(0), [1, 3, 5]);
    const dup = (await readRecords(join(out, "results.shard-0.jsonl")))[1];
    await Deno.writeTextFile(join(out, "results.shard-7.jsonl"), JSON.stringify(dup) + "\n");
    const m = await task("sweep.ts", [...base, "--merge"]);
    assert.equal(m.code, 0, m.stderr);
    assert.match(m.stdout, /merged 3 shard file\(s\): 5 new record\(s\), 1 duplicate\(s\) dropped/);
    const merged = await readRecords<Rec>(join(out, "results.jsonl"));
    assert.deepEqual(merged.map((x) => x.point.x), [1, 2, 3, 4, 5]);
    assert.deepEqual(
      [...Deno.readDirSync(out)].map((e) => e.name).filter((n) => n.includes("shard")),
      [],
    );
    // every record carries the resolved config it was run with
    assert.deepEqual(merged[0].config, { xs: [1, 2, 3, 4, 5], repeats: 1, delayMs: 0 });
    // a shard run after the merge finds its points done in results.jsonl
    const again = await task("sweep.ts", [...base, "--shard-index", "1"]);
    assert.match(again.stdout, /shard 1 of 2: 0 record\(s\)/);
  });
});

Deno.test("--help works on every task and errors name the option, config key or file", async () => {
  const tasks = JSON.parse(await Deno.readTextFile(join(REPO_ROOT, "deno.json"))).tasks;
  const cliTasks = Object.entries(tasks as Record<string, string>)
    .filter(([, cmd]) => /^deno run -A cli\/\w+\.ts$/.test(cmd));
  assert.ok(cliTasks.length >= 7, JSON.stringify(cliTasks));
  for (const [name, cmd] of cliTasks) {
    const r = await task(cmd.split("/").pop()!, ["--help"]);
    assert.equal(r.code, 0, `${name}: ${r.stderr}`);
    assert.match(r.stdout, new RegExp(`^deno task ${name}\\b`), `${name} --help`);
  }
  const setup = await new Deno.Command("bash", {
    args: [join(REPO_ROOT, "scripts/setup.sh"), "--help"],
    stdout: "piped",
  }).output();
  assert.equal(setup.code, 0);
  assert.match(decode(setup.stdout), /Usage: bash scripts\/setup\.sh/);

  await withDir(async (dir) => {
    const bad = join(dir, "bad.json");
    await Deno.writeTextFile(bad, JSON.stringify({ xs: [1, "two"], repats: 2 }));
    let r = await task("sweep.ts", ["synthetic", "--config", bad, "--out", dir]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /bad\.json: xs\[1\]: expected number/);
    assert.match(r.stderr, /repats: unknown key/);
    r = await task("sweep.ts", ["synthetic", "--config", join(dir, "nope.json")]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /nope\.json/);
    r = await task("sweep.ts", ["synthetic", "--config", bad, "--executor", "cloud"]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--executor: expected 'local' or 'slurm', got 'cloud'/);
    r = await task("sweep.ts", ["nonesuch", "--config", bad]);
    assert.match(r.stderr, /unknown experiment 'nonesuch' \(known: .*synthetic/);
    r = await task("reproduce.ts", [join(dir, "missing.jsonl")]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /missing\.jsonl: no such result file/);
    r = await task("figures.ts", ["--set", "nonesuch", "--no-render", "--out", dir]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /result set 'nonesuch': .*nonesuch\/results\.jsonl does not exist/);
  });
});
