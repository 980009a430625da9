import assert from "node:assert/strict";
import { smallModelDir } from "../ffi/_test_utils.ts";
import { gpuUnavailableReason } from "../ffi/gpu.ts";
import {
  type ControllerMetrics,
  type ControllerPoint,
  controllerPoints,
  controllerTables,
  ranksToEvaluate,
  runControllerAccuracy,
} from "./controller_accuracy.ts";
import type { SweepRecord } from "./runner.ts";

Deno.test("controllerPoints: none, fixed, then threads × budgets", () => {
  const points = controllerPoints({
    model: "m",
    data: "d.txt",
    rank: 16,
    cpuThreads: [0, 2],
    slowdownPcts: [3, -1],
    outDir: "x",
  });
  assert.deepEqual(points.map((p) => [p.run, p.cpuThreads, p.slowdownPct]), [
    ["none", null, null],
    ["fixed", 0, null],
    ["controller", 0, 3],
    ["controller", 0, -1],
    ["controller", 2, 3],
    ["controller", 2, -1],
  ]);
  assert.equal(points[0].format, "w4g128-r16");
  assert.throws(
    () => controllerPoints({ model: "m", data: "d", rank: 0, outDir: "x" }),
    RangeError,
  );
});

Deno.test("ranksToEvaluate rounds each mean and keeps it within [0, full]", () => {
  assert.deepEqual(ranksToEvaluate([0, 2.4, 2.6, 40, -1, 7.5], [0, 32, 32, 32, 8, 8]), [
    0,
    2,
    3,
    32,
    0,
    8,
  ]);
  assert.throws(() => ranksToEvaluate([1], [1, 2]), RangeError);
});

Deno.test("controllerTables: speed against none, budgets named, the perplexity range", () => {
  const point = (run: ControllerPoint["run"], t: number | null, s: number | null) => ({
    ...controllerPoints({ model: "/x/small", data: "/d/heldout.txt", rank: 32, outDir: "o" })[0],
    run,
    cpuThreads: t,
    slowdownPct: s,
  });
  const rec = (p: ControllerPoint, tps: number, frac: number, ppl: number) =>
    ({
      point: p,
      metrics: {
        decodeTokensPerS: tps,
        decodeMsPerStep: 1e3 / tps,
        gpuWaitMsPerStep: p.run === "none" ? null : 0.1,
        cpuBusyMsPerStep: p.run === "none" ? null : 0.5,
        rankFraction: frac,
        ranks: [],
        meanRank: 32 * frac,
        ppl,
        windows: 32,
        cpuThreadsUsed: p.run === "none" ? null : 12,
        device: "NVIDIA H100 80GB HBM3",
      },
    }) as unknown as SweepRecord<ControllerPoint, ControllerMetrics>;
  const md = controllerTables([
    rec(point("none", null, null), 1000, 0, 40),
    rec(point("fixed", 0, null), 500, 1, 38),
    rec(point("controller", 2, -1), 900, 0.25, 39),
  ]);
  assert.match(md, /small w4g128-r32/);
  assert.match(md, /\|\s+0\.90x \|/);
  assert.match(md, /ranks only/);
  assert.match(md, /default \(12\)/);
  assert.match(md, /backbone 40\.000, full rank 38\.000/);
  assert.equal(controllerTables([]), "");
});

const small = smallModelDir();
const data = small === null ? null : `${small}/../../data/books_heldout.txt`;
function exists(p: string | null): boolean {
  if (p === null) return false;
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
}
const heldout = [data, new URL("../../shared/data/books/heldout.txt", import.meta.url).pathname]
  .find(exists) ?? null;

Deno.test({
  name: "small W4 rank 8 on the GPU: the controller's ranks and the perplexity at them",
  ignore: gpuUnavailableReason() !== null || small === null || heldout === null,
  fn: async () => {
    const outDir = await Deno.makeTempDir();
    try {
      const records = await runControllerAccuracy({
        model: small!,
        data: heldout!,
        rank: 8,
        seqLen: 128,
        maxWindows: 4,
        promptLen: 16,
        newTokens: 32,
        repeats: 1,
        cpuThreads: [2],
        slowdownPcts: [-1],
        outDir,
      });
      assert.deepEqual(records.map((r) => r.point.run), ["none", "fixed", "controller"]);
      const [none, fixed, ctl] = records.map((r) => r.metrics);
      // compensation lowers the perplexity; the controller's ranks land between
      assert.ok(fixed.ppl < none.ppl, `full rank ${fixed.ppl} vs backbone ${none.ppl}`);
      assert.ok(ctl.ppl <= none.ppl * (1 + 1e-3) && ctl.ppl >= fixed.ppl * (1 - 1e-3));
      assert.ok(fixed.ranks.every((r) => r === 0 || r === 8));
      assert.ok(ctl.ranks.every((r, i) => r >= 0 && r <= fixed.ranks[i]));
      assert.ok(ctl.rankFraction >= 0 && ctl.rankFraction <= 1);
      assert.ok(none.ranks.every((r) => r === 0));
      assert.match(await Deno.readTextFile(`${outDir}/table.md`), /ppl at those ranks/);
    } finally {
      await Deno.remove(outDir, { recursive: true });
    }
  },
});
