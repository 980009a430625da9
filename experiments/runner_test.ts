import assert from "node:assert/strict";
import { join } from "node:path";
import { appendRecord, pointKey, readRecords } from "../results/store.ts";
import { expandGrid } from "./grid.ts";
import { runSweep, type SweepProgress, type SweepRecord } from "./runner.ts";

type Point = { bits: number; rank: number };
type Metrics = { ppl: number };

const points: Point[] = expandGrid({ bits: [2, 3, 4], rank: [0, 16] });
const fakePpl = (p: Point) => 100 / p.bits - p.rank / 100;

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function sweep(outPath: string, pts: Point[], ran: Point[], failOn?: (p: Point) => boolean) {
  return runSweep<Point, Metrics>({
    experiment: "demo",
    points: pts,
    outPath,
    runPoint: (p) => {
      ran.push(p);
      if (failOn?.(p)) return Promise.reject(new Error("CUDA out of memory"));
      return Promise.resolve({ ppl: fakePpl(p) });
    },
    provenance: () => Promise.resolve({ seed: 1 }),
  });
}

Deno.test("runSweep runs every point and appends one record each", async () => {
  await withTempDir(async (dir) => {
    const out = join(dir, "runs", "demo.jsonl");
    const ran: Point[] = [];
    const summary = await sweep(out, points, ran);
    assert.deepEqual(ran, points);
    assert.equal(summary.total, 6);
    assert.equal(summary.skipped, 0);
    const records = await readRecords<SweepRecord<Point, Metrics>>(out);
    assert.deepEqual(records, summary.records);
    assert.equal(records.length, 6);
    records.forEach((r, i) => {
      assert.equal(r.experiment, "demo");
      assert.equal(r.key, pointKey("demo", points[i]));
      assert.deepEqual(r.point, points[i]);
      assert.deepEqual(r.metrics, { ppl: fakePpl(points[i]) });
      assert.deepEqual(r.provenance, { seed: 1 });
      assert.equal(r.status, "ok");
      assert.ok(!Number.isNaN(Date.parse(r.started)));
      assert.ok(r.seconds >= 0);
    });
  });
});

Deno.test("runSweep resumes by skipping recorded points", async () => {
  await withTempDir(async (dir) => {
    const out = join(dir, "demo.jsonl");
    await sweep(out, points.slice(0, 4), []);
    // a record of another experiment with the same point does not count
    await appendRecord(out, {
      experiment: "other",
      key: pointKey("other", points[4]),
      status: "ok",
    });
    const ran: Point[] = [];
    const summary = await sweep(out, points, ran);
    assert.deepEqual(ran, points.slice(4));
    assert.equal(summary.skipped, 4);
    assert.equal(summary.records.length, 2);
    // a third run has nothing to do; key order inside a point does not matter
    const again: Point[] = [];
    const reordered = points.map((p) => ({ rank: p.rank, bits: p.bits }));
    assert.equal((await sweep(out, reordered, again)).skipped, 6);
    assert.deepEqual(again, []);
    assert.equal((await readRecords(out)).length, 7);
  });
});

Deno.test("a failing point is named, not recorded, and earlier records stay", async () => {
  await withTempDir(async (dir) => {
    const out = join(dir, "demo.jsonl");
    const ran: Point[] = [];
    await assert.rejects(
      sweep(out, points, ran, (p) => p.bits === 3 && p.rank === 16),
      (e: Error) => {
        assert.equal(
          e.message,
          'sweep demo: point 4/6 {"bits":3,"rank":16} failed: CUDA out of memory',
        );
        assert.equal((e.cause as Error).message, "CUDA out of memory");
        return true;
      },
    );
    assert.equal(ran.length, 4);
    const kept = await readRecords<SweepRecord<Point, Metrics>>(out);
    assert.deepEqual(kept.map((r) => r.point), points.slice(0, 3));
    // the rerun runs the failed point and the rest only
    const rerun: Point[] = [];
    await sweep(out, points, rerun);
    assert.deepEqual(rerun, points.slice(3));
    assert.equal((await readRecords(out)).length, 6);
  });
});

Deno.test("an interrupted write is tolerated on resume", async () => {
  await withTempDir(async (dir) => {
    const out = join(dir, "demo.jsonl");
    await sweep(out, points.slice(0, 2), []);
    await Deno.writeTextFile(out, '{"experiment":"demo","key":"ab', { append: true }); // crash
    const warnings: string[] = [];
    const ran: Point[] = [];
    await runSweep<Point, Metrics>({
      experiment: "demo",
      points,
      outPath: out,
      runPoint: (p) => (ran.push(p), Promise.resolve({ ppl: 1 })),
      provenance: () => Promise.resolve({}),
      onWarning: (m) => warnings.push(m),
    });
    assert.deepEqual(ran, points.slice(2));
    assert.ok(warnings.length >= 1);
    assert.equal((await readRecords(out)).length, 6);
  });
});

Deno.test("progress reports done, skipped, current point and ETA", async () => {
  await withTempDir(async (dir) => {
    const out = join(dir, "demo.jsonl");
    await sweep(out, points.slice(0, 2), []);
    const reports: SweepProgress<Point>[] = [];
    await runSweep<Point, Metrics>({
      experiment: "demo",
      points,
      outPath: out,
      runPoint: (p) => new Promise((ok) => setTimeout(() => ok({ ppl: fakePpl(p) }), 5)),
      provenance: () => Promise.resolve({}),
      onProgress: (p) => reports.push(p),
    });
    assert.deepEqual(
      reports.map((r) => [r.done, r.total, r.skipped, r.current]),
      [[2, 6, 2, points[2]], [3, 6, 2, points[3]], [4, 6, 2, points[4]], [5, 6, 2, points[5]], [
        6,
        6,
        2,
        null,
      ]],
    );
    assert.equal(reports[0].etaSeconds, null);
    assert.ok(reports[1].etaSeconds! > 0);
    assert.equal(reports[4].etaSeconds, 0);
    assert.ok(
      reports.every((r, i) => i === 0 || r.elapsedSeconds >= reports[i - 1].elapsedSeconds),
    );
  });
});

Deno.test("a shard runs only points i with i mod count = index; done files count as done", async () => {
  await withTempDir(async (dir) => {
    const merged = join(dir, "results.jsonl");
    const out = join(dir, "results.shard-1.jsonl");
    await sweep(merged, [points[1]], []); // already in the merged file
    const ran: Point[] = [];
    const summary = await runSweep<Point, Metrics>({
      experiment: "demo",
      points,
      outPath: out,
      shard: { index: 1, count: 2 },
      donePaths: [merged],
      config: { grid: "bits × rank" },
      runPoint: (p) => (ran.push(p), Promise.resolve({ ppl: fakePpl(p) })),
      provenance: () => Promise.resolve({}),
    });
    assert.deepEqual(ran, [points[3], points[5]]);
    assert.equal(summary.total, 3);
    assert.equal(summary.skipped, 1);
    const written = await readRecords<SweepRecord<Point, Metrics>>(out);
    assert.deepEqual(written.map((r) => r.config), [{ grid: "bits × rank" }, {
      grid: "bits × rank",
    }]);
    // without a config, records have no config field (as before)
    assert.equal("config" in (await readRecords(merged))[0], false);
    await assert.rejects(
      runSweep({
        ...{ experiment: "demo", points, outPath: out },
        shard: { index: 2, count: 2 },
        runPoint: () => Promise.resolve({}),
        provenance: () => Promise.resolve({}),
      }),
      /invalid shard 2 of 2/,
    );
  });
});
