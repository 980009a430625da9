import assert from "node:assert/strict";
import { readBundledConfig } from "./config_file.ts";
import { ConfigError, parseConfig } from "./schema.ts";
import {
  budgetRows,
  controllerLabel,
  controllerRows,
  type HeteroConfig,
  HeteroConfigSchema,
  type HeteroMetrics,
  type HeteroPoint,
  heteroPoints,
  heteroRankFigure,
  heteroTables,
  heteroThroughput,
  placementRows,
  summarizeRanks,
} from "./hetero_throughput.ts";
import { findExperiment } from "./registry.ts";
import type { SweepRecord } from "./runner.ts";

const bundled = (name: string): Promise<HeteroConfig> =>
  readBundledConfig(HeteroConfigSchema, name);

Deno.test("the 16-SM config is the H100 config on an SM partition, recorded in every point", async () => {
  const full = heteroPoints(await bundled("hetero_throughput_h100.json"));
  const config = await bundled("hetero_throughput_h100_sm16.json");
  assert.equal(config.gpuSms, 16);
  const points = heteroPoints(config);
  assert.equal(points.length, full.length);
  assert.ok(points.every((p) => p.gpuSms === 16));
  assert.ok(full.every((p) => p.gpuSms === undefined), "every SM: no field (old records' keys)");
  assert.deepEqual(points.map(({ gpuSms: _, ...rest }) => rest), full);
});

Deno.test("hetero_throughput is registered", () => {
  assert.equal(findExperiment("hetero_throughput"), heteroThroughput);
});

Deno.test("the bundled H100 config is valid and its points are what it promises", async () => {
  const config = await bundled("hetero_throughput_h100.json");
  const points = heteroPoints(config);
  // 7B: none + 3 placements × 5 ranks (prefill compensation on the GPU), cpu-async r16 with the
  // CPU prefill; 8B: none + 3 at rank 32; 8 GiB: none + cpu-async r16/r128 + the fp16 offload
  // baseline; controller at r128: threads {default, 4, 2} × {off, on}, less the default/off
  // point the first run already has
  assert.equal(points.length, 16 + 1 + 4 + 4 + 5);
  const keys = new Set(points.map((p) => JSON.stringify(p)));
  assert.equal(keys.size, points.length, "no point twice");
  for (const p of points) {
    if (p.placement === "none") assert.equal(p.rank, 0);
    if (p.placement === "none" || p.placement === "gpu") {
      assert.equal(p.cpuThreads, null);
      assert.equal(p.factorDtype, null);
    } else {
      assert.equal(p.cpuFirstCore, 2);
      assert.equal(p.factorDtype, "bf16");
    }
    if (p.rankController) assert.equal(p.placement, "cpu-async");
    assert.equal(p.batch, 1);
    assert.equal(p.promptLen, 128);
  }
  const llama3 = points.filter((p) => p.model === "synthetic:llama-3-8b");
  assert.deepEqual([...new Set(llama3.map((p) => p.rank))].sort(), [0, 32]);
  const baseline = points.filter((p) => p.bits === 0);
  assert.deepEqual(baseline.map((p) => [p.placement, p.budgetGiB, p.newTokens, p.repeats]), [[
    "none",
    8,
    16,
    2,
  ]]);
  const budget = points.filter((p) => p.budgetGiB === 8 && p.bits === 4);
  assert.deepEqual(budget.map((p) => [p.placement, p.rank]), [["none", 0], ["cpu-async", 16], [
    "cpu-async",
    128,
  ]]);
  const prefillCpu = points.filter((p) => p.prefillComp === "cpu");
  assert.deepEqual(prefillCpu.map((p) => [p.placement, p.rank]), [["cpu-async", 16]]);
  const controller = points.filter((p) => p.rankController);
  assert.deepEqual(
    controller.map((p) => [p.cpuThreads, p.rank]),
    [[0, 128], [4, 128], [2, 128]],
  );
  // decode steps timed or warmed up, a bound on the run's length (under ~6 min on an H100)
  const steps = points.reduce((n, p) => n + p.newTokens * (p.repeats + config.warmup), 0);
  assert.ok(steps <= 8000, `${steps} decode steps`);
});

Deno.test("the bundled quick config is valid and uses the synthetic test model only", async () => {
  const config = await bundled("hetero_throughput_quick.json");
  const points = heteroPoints(config);
  assert.ok(points.length > 0 && points.length <= 16, `${points.length} points`);
  assert.ok(points.every((p) => p.model === "synthetic:test"));
  for (const placement of ["none", "gpu", "cpu-sync", "cpu-async"]) {
    assert.ok(points.some((p) => p.placement === placement), placement);
  }
  assert.ok(points.some((p) => p.rankController));
  assert.ok(points.some((p) => p.bits === 0 && p.budgetGiB !== null));
});

Deno.test("a bad config is rejected naming every problem", () => {
  const bad = {
    models: ["synthetic:llama-2-7b", "models/small"],
    runs: [
      { bits: 5, placements: ["cpu"], ranks: [0], batches: [32] },
      { bits: 0, placements: ["none", "cpu-async"] },
      { bits: 4, placements: ["gpu"], rank: [16] },
    ],
  };
  try {
    parseConfig(HeteroConfigSchema, bad, "hetero.json");
    assert.fail("expected a ConfigError");
  } catch (e) {
    assert.ok(e instanceof ConfigError);
    assert.ok(e.message.startsWith("invalid experiment config in hetero.json: "));
    assert.deepEqual(
      e.issues.toSorted(),
      [
        'models[1]: expected one of "synthetic:llama-2-7b","synthetic:llama-2-13b","synthetic:llama-3-8b","synthetic:test", got "models/small"',
        'runs[0].placements[0]: expected one of "none","gpu","cpu-sync","cpu-async", got "cpu"',
        "runs[0].batches[0]: value must be <= 16, got 32",
        "runs[0].bits: expected one of 0,2,3,4,8, got 5",
        "runs[0].ranks[0]: value must be >= 1, got 0",
        'runs[1].placements: float weights (bits 0) have no quantization error to compensate: use ["none"], got ["none","cpu-async"]',
        "runs[2].rank: unknown key",
      ].toSorted(),
    );
  }
});

Deno.test("points: settings collapse where they do not apply, shared points run once", () => {
  const config = HeteroConfigSchema.parse({
    models: ["synthetic:test"],
    runs: [
      {
        bits: 4,
        placements: ["none", "gpu", "cpu-sync", "cpu-async"],
        ranks: [8, 16],
        cpuThreads: [0, 2],
        rankController: [false, true],
      },
      { bits: 4, placements: ["none"], ranks: [99] },
    ],
  });
  const points = heteroPoints(config);
  const count = (placement: string) => points.filter((p) => p.placement === placement).length;
  assert.equal(count("none"), 1, "one none point (ranks, threads, controller collapse)");
  assert.equal(count("gpu"), 2, "gpu: ranks only");
  assert.equal(count("cpu-sync"), 4, "cpu-sync: ranks × threads, no controller");
  assert.equal(count("cpu-async"), 8, "cpu-async: ranks × threads × controller");
  assert.ok(points.filter((p) => p.placement !== "cpu-async").every((p) => !p.rankController));
  assert.ok(points.every((p) => p.controllerSlowdownPct === undefined), "default budget: no field");
});

Deno.test("points: a controller budget is recorded on the controller's points only", () => {
  const config = HeteroConfigSchema.parse({
    models: ["synthetic:test"],
    runs: [{
      bits: 4,
      placements: ["cpu-sync", "cpu-async"],
      rankController: [false, true],
      controllerSlowdownPct: 8,
    }],
  });
  const points = heteroPoints(config);
  assert.deepEqual(
    points.map((p) => [p.placement, p.rankController, p.controllerSlowdownPct]),
    [["cpu-sync", false, undefined], ["cpu-async", false, undefined], ["cpu-async", true, 8]],
  );
  assert.equal(controllerLabel(points[2]), "on, 8%");
  assert.equal(controllerLabel({ ...points[2], controllerSlowdownPct: -1 }), "on, ranks only");
  assert.throws(() =>
    HeteroConfigSchema.parse({
      models: ["synthetic:test"],
      runs: [{ bits: 4, placements: ["cpu-async"], controllerSlowdownPct: -2 }],
    })
  );
});

// ---------------------------------------------------------------------------------------------
// Tables on hand-made records

type Rec = SweepRecord<HeteroPoint, HeteroMetrics>;

function point(o: Partial<HeteroPoint>): HeteroPoint {
  const cpu = o.placement === "cpu-sync" || o.placement === "cpu-async";
  return {
    model: "synthetic:llama-2-7b",
    bits: 4,
    groupSize: 128,
    placement: "none",
    rank: 0,
    batch: 1,
    budgetGiB: null,
    offload: true,
    cpuThreads: cpu ? 0 : null,
    cpuFirstCore: cpu ? 2 : null,
    factorDtype: cpu ? "bf16" : null,
    prefillComp: cpu ? "cpu" : null,
    rankController: false,
    promptLen: 128,
    newTokens: 64,
    repeats: 3,
    useGraph: true,
    ...o,
  };
}

function record(p: Partial<HeteroPoint>, m: Partial<HeteroMetrics>): Rec {
  const metrics = {
    status: "ok",
    error: null,
    createSeconds: 1,
    decodeTokensPerS: null,
    decodeMsPerStep: null,
    decodeMsPerStepMin: null,
    decodeMsPerStepMax: null,
    prefillTokensPerS: null,
    weightBytesPerStep: null,
    streamedBytesPerStep: null,
    pcieMsPerStep: null,
    peakDeviceBytes: null,
    deviceBytesNeeded: null,
    residentLayers: null,
    offloadedLayers: null,
    graphUsed: null,
    hbmGbps: 3000,
    h2dGbps: 50,
    hostReadGbps: null,
    hostReadThreads: null,
    rooflineTokensPerS: null,
    pctRoofline: null,
    rooflineMsPerStep: null,
    cpuRooflineMs: null,
    nPoints: null,
    cpuThreadsUsed: null,
    compSteps: null,
    cpuBusyMsPerStep: null,
    gpuWaitMsPerStep: null,
    gpuBusyMsPerStep: null,
    bytesToHostPerStep: null,
    bytesToDevicePerStep: null,
    factorBytesPerStep: null,
    factorBytesHost: null,
    rankFraction: null,
    prefillRows: null,
    prefillCpuMs: null,
    cpuPreemptionsPerStep: null,
    chosenRanks: null,
    device: "NVIDIA H100 80GB HBM3",
    ...m,
  } satisfies HeteroMetrics;
  return {
    experiment: "hetero_throughput",
    key: "k",
    point: point(p),
    metrics,
    provenance: {},
    status: "ok",
    started: "2025-01-01T00:00:00Z",
    seconds: 1,
  };
}

const tps = (decodeTokensPerS: number, extra: Partial<HeteroMetrics> = {}) => ({
  decodeTokensPerS,
  decodeMsPerStep: 1e3 / decodeTokensPerS,
  ...extra,
});

const RECORDS: Rec[] = [
  record({ placement: "none" }, tps(200)),
  record({ placement: "gpu", rank: 64 }, tps(150)),
  record({ placement: "cpu-sync", rank: 64 }, tps(50)),
  record({ placement: "cpu-async", rank: 64 }, tps(180, { hostReadGbps: 80, hostReadThreads: 14 })),
  record({ placement: "gpu", rank: 128 }, tps(120)),
  record({ placement: "cpu-async", rank: 128 }, tps(100)),
  // controller runs at rank 128, 4 threads
  record(
    { placement: "cpu-async", rank: 128, cpuThreads: 4 },
    tps(60, { rankFraction: 1, gpuWaitMsPerStep: 9, cpuBusyMsPerStep: 14 }),
  ),
  record(
    { placement: "cpu-async", rank: 128, cpuThreads: 4, rankController: true },
    tps(190, {
      rankFraction: 0.25,
      gpuWaitMsPerStep: 0.1,
      cpuBusyMsPerStep: 4,
      chosenRanks: { mean: 32, min: 8, max: 64, byKind: { q: 32 } },
    }),
  ),
  // under 8 GiB: the fp16 offload baseline, a compensated model, and one that does not fit
  record(
    { bits: 0, groupSize: null, placement: "none", budgetGiB: 8 },
    tps(4, {
      offloadedLayers: 14,
    }),
  ),
  record({ placement: "cpu-async", rank: 64, budgetGiB: 8 }, tps(170, { offloadedLayers: 0 })),
  record({ placement: "gpu", rank: 128, budgetGiB: 8, offload: false }, {
    status: "failed",
    error: "HCI_ERR_OUT_OF_MEMORY: needs 8.9 GiB, the cap is 8 GiB",
  }),
];

Deno.test("placementRows: one row per rank and CPU setting, none and gpu joined, ratio", () => {
  const rows = placementRows(RECORDS);
  assert.deepEqual(
    rows.map((r) => [r.rank, r.cpu, r.none, r.gpu, r.cpuSync, r.cpuAsync]),
    [
      [64, "default threads", 200, 150, 50, 180],
      [128, "default threads", 200, 120, null, 100],
      [128, "4 threads", 200, 120, null, 60],
    ],
  );
  assert.equal(rows[0].asyncOverNone, 0.9);
  assert.equal(rows[2].asyncOverNone, 0.3);
  assert.ok(rows.every((r) => r.model === "synthetic:llama-2-7b" && r.weights === "W4 g128"));
});

Deno.test("budgetRows: compensated points against the fp16 offload baseline, failures kept", () => {
  const rows = budgetRows(RECORDS);
  assert.equal(rows.length, 2);
  assert.deepEqual(
    [rows[0].placement, rows[0].rank, rows[0].tokensPerS, rows[0].baselineTokensPerS],
    ["cpu-async", 64, 170, 4],
  );
  assert.equal(rows[0].overBaseline, 42.5);
  assert.equal(rows[1].tokensPerS, null);
  assert.match(rows[1].error!, /OUT_OF_MEMORY: needs 8.9 GiB/);
  assert.equal(rows[1].overBaseline, null);
});

Deno.test("controllerRows: threads × controller where the controller ran, ÷ none", () => {
  const rows = controllerRows(RECORDS);
  assert.deepEqual(
    rows.map((r) => [r.cpuThreads, r.controller, r.tokensPerS, r.rankFraction, r.meanRank]),
    // the default-threads point of the same (model, weights, rank) first, for comparison
    [["default", "off", 100, null, null], ["4", "off", 60, 1, null], [
      "4",
      "on",
      190,
      0.25,
      32,
    ]],
  );
  assert.equal(rows[2].overNone, 0.95);
  assert.equal(rows[2].gpuWaitMsPerStep, 0.1);
  assert.equal(controllerRows(RECORDS.filter((r) => !r.point.rankController)).length, 0);
});

Deno.test("heteroTables: the three tables, every point, bandwidths and failures", () => {
  const md = heteroTables(RECORDS);
  assert.match(md, /### Batch-1 decode tokens\/s by placement/);
  assert.match(
    md,
    /\| synthetic:llama-2-7b \| W4 g128 \| +64 \| default threads \| +200\.0 \| +150\.0 \| +50\.0 \| +180\.0 \| +0\.90x \|/,
  );
  assert.match(md, /### Under a GPU memory budget/);
  assert.match(md, /170\.0 \|[^\n]*\| +4\.0 \| +42\.50x \|/);
  assert.match(md, /failed: HCI_ERR_OUT_OF_MEMORY/);
  assert.match(md, /### Run-time rank controller/);
  assert.match(
    md,
    /\| +4 \| on +\| +190\.0 \| +0\.95x \| +0\.250 \| +32\.0 \| +0\.100 \| +4\.000 \|/,
  );
  assert.match(md, /### Every point/);
  assert.match(md, /Host read bandwidth [^\n]*14 threads 80\.0 GB\/s/);
  assert.match(md, /Measured on NVIDIA H100 80GB HBM3: HBM 3000 GB\/s/);
  assert.match(md, /gpu rank 128 under 8 GiB: failed after 1000 ms/);
  const empty = heteroTables([]);
  assert.ok(empty.startsWith("### Every point\n") && !empty.includes("Batch-1"), empty);
});

Deno.test("heteroRankFigure: a line per placement (and controller) over the ranks, none dashed", () => {
  const { name, figure } = heteroRankFigure(RECORDS);
  assert.equal(name, "tokens-vs-rank");
  const byName = Object.fromEntries(figure.data.map((t) => [t.name, t]));
  assert.deepEqual(byName["llama-2-7b gpu"].x, [64, 128]);
  assert.deepEqual(byName["llama-2-7b gpu"].y, [150, 120]);
  assert.deepEqual(byName["llama-2-7b cpu-async"].y, [180, 100]);
  assert.deepEqual(byName["llama-2-7b cpu-async (4 threads)"].x, [128]);
  // the controller's points are a line of their own (at the rank of the factors held)
  assert.deepEqual(byName["llama-2-7b cpu-async + controller (4 threads)"].y, [
    190,
  ]);
  assert.equal(figure.data.length, 6);
  assert.deepEqual(byName["llama-2-7b none"].y, [200, 200]);
  assert.deepEqual(byName["llama-2-7b none"].x, [64, 128]);
});

Deno.test("summarizeRanks: over the linears holding factors, per kind", () => {
  // 2 layers × 7 kinds; layer 1's down has no factors
  const full = [64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 0];
  const mean = [32, 16, 16, 48, 8, 8, 64, 32, 16, 16, 48, 8, 8, 0];
  const s = summarizeRanks(full, mean)!;
  assert.equal(s.min, 8);
  assert.equal(s.max, 64);
  assert.equal(s.mean, (32 + 16 + 16 + 48 + 8 + 8 + 64 + 32 + 16 + 16 + 48 + 8 + 8) / 13);
  assert.deepEqual(s.byKind, { q: 32, k: 16, v: 16, o: 48, gate: 8, up: 8, down: 64 });
  assert.equal(summarizeRanks([0, 0], [0, 0]), null);
});
