import assert from "node:assert/strict";
import { readBundledConfig } from "./config_file.ts";
import { ConfigError, parseConfig } from "./schema.ts";
import {
  contextFor,
  parseFormat,
  type ThroughputConfig,
  ThroughputConfigSchema,
  throughputFigures,
  type ThroughputMetrics,
  type ThroughputPoint,
  throughputPoints,
  throughputSummary,
  throughputTables,
  withKvRoofline,
} from "./throughput.ts";
import type { SweepRecord } from "./runner.ts";

const bundled = (name: string): Promise<ThroughputConfig> =>
  readBundledConfig(ThroughputConfigSchema, name);

Deno.test("the bundled throughput configs parse; the H100 one has the issue's points", async () => {
  for (
    const name of [
      "throughput_h100.json",
      "throughput_quick.json",
      "throughput_packed.json",
      "throughput_context.json",
    ]
  ) {
    assert.ok(throughputPoints(await bundled(name)).length > 0, name);
  }
  const points = throughputPoints(await bundled("throughput_h100.json"));
  const key = (p: ThroughputPoint) => `${p.engine} ${p.format} b${p.batch} ${p.budgetGiB}`;
  const keys = points.map(key);
  for (const k of ["hcinfer fp16 b1 null", "hcinfer w4g128 b1 null", "hf fp16 b1 null"]) {
    assert.ok(keys.includes(k), k);
  }
  assert.ok(points.some((p) => p.format === "fp16" && p.budgetGiB === 8 && p.offload));
  assert.ok(points.every((p) => p.gpuSms === undefined), "every SM: no field (old records' keys)");
});

Deno.test("gpuSms: every point records the partition; transformers runs are refused with it", () => {
  const config = ThroughputConfigSchema.parse({
    models: ["synthetic:llama-2-7b"],
    runs: [{ format: "w4g128", batches: [1, 4] }, { format: "fp16", budgetGiB: 8 }],
    gpuSms: 16,
  });
  const points = throughputPoints(config);
  assert.deepEqual(points.map((p) => [p.format, p.batch, p.gpuSms]), [
    ["w4g128", 1, 16],
    ["w4g128", 4, 16],
    ["fp16", 1, 16],
  ]);
  assert.throws(
    () =>
      parseConfig(ThroughputConfigSchema, {
        models: ["synthetic:llama-2-7b"],
        runs: [{ engine: "hf" }],
        gpuSms: 16,
      }, "inline.json"),
    (e) => e instanceof ConfigError && /engine hf\) runs on every SM/.test(e.message),
  );
  assert.throws(() => ThroughputConfigSchema.parse({ models: ["m"], runs: [{}], gpuSms: -8 }));
});

Deno.test("parseFormat: bits, group and dtype", () => {
  assert.deepEqual(parseFormat("fp16"), { bits: 0, groupSize: 128, dtype: "fp16" });
  assert.deepEqual(parseFormat("w4g128"), { bits: 4, groupSize: 128, dtype: "fp16" });
  assert.deepEqual(parseFormat("w2g-1"), { bits: 2, groupSize: -1, dtype: "fp16" });
  assert.throws(() => parseFormat("q4_0"), /bad format/);
});

Deno.test("throughputSummary names the SM partition the bandwidth was measured on", () => {
  const metrics = {
    status: "ok",
    hbmGbps: 1155,
    hbmReadGbps: 1190,
    h2dGbps: 54.1,
    gpuSmCount: 16,
    device: "NVIDIA H100 80GB HBM3",
  } as unknown as ThroughputMetrics;
  const point = { model: "synthetic:llama-2-7b", format: "w4g128", gpuSms: 16 } as ThroughputPoint;
  const rec = { point, metrics } as SweepRecord<ThroughputPoint, ThroughputMetrics>;
  const last = throughputSummary([rec]).at(-1)!;
  assert.match(last, /restricted to 16 SMs \(a green-context partition of at least 16/);
  assert.match(last, /HBM 1155 GB\/s/);
  const whole = throughputSummary([{ ...rec, point: { ...point, gpuSms: undefined } }]).at(-1)!;
  assert.doesNotMatch(whole, /restricted/);
});

Deno.test("promptLens: points per prompt length, a KV cache sized for each, a figure against it", async () => {
  const config = ThroughputConfigSchema.parse({
    models: ["synthetic:llama-2-7b"],
    runs: [
      { format: "w4g128", batches: [1, 4], promptLens: [128, 3000] },
      { format: "fp16", newTokens: 16 },
    ],
    newTokens: 64,
  });
  const points = throughputPoints(config);
  assert.deepEqual(points.map((p) => [p.format, p.promptLen, p.batch]), [
    ["w4g128", 128, 1],
    ["w4g128", 128, 4],
    ["w4g128", 3000, 1],
    ["w4g128", 3000, 4],
    ["fp16", 128, 1],
  ]);
  // the cache holds the prompt and the most new tokens of any run, in steps of 64
  assert.deepEqual(points.map((p) => contextFor(config, p)), [192, 192, 3072, 3072, 192]);
  assert.throws(() => ThroughputConfigSchema.parse({ models: ["m"], runs: [{ promptLens: [] }] }));
  const rec = (p: ThroughputPoint, tps: number) =>
    ({
      point: p,
      metrics: {
        status: "ok",
        decodeTokensPerS: tps,
        rooflineTokensPerS: 800,
        // weights 3.7 GB; the fp16 cache of a 7B model, 0.53 MB per position
        rooflineKvTokensPerS: 3019e9 / (3.7e9 + 0.53e6 * p.promptLen),
        pctRooflineKv: 100 * tps / (3019e9 / (3.7e9 + 0.53e6 * p.promptLen)),
        hbmGbps: 3019,
        hbmReadGbps: 3058,
        h2dGbps: 54.9,
        device: "NVIDIA H100 80GB HBM3",
      },
    }) as unknown as SweepRecord<ThroughputPoint, ThroughputMetrics>;
  const records = [
    rec(points[0], 545),
    rec(points[1], 1500),
    rec(points[2], 362),
    rec(points[4], 199),
  ];
  assert.match(throughputTables(records), /prompt per row/);
  assert.match(throughputTables(records.slice(0, 2)), /\(prompt 128,/);
  const figures = await throughputFigures(records);
  assert.deepEqual(figures.map((f) => f.name), ["throughput", "throughput-context"]);
  const ctx = JSON.stringify(figures[1].figure);
  assert.match(ctx, /synthetic:llama-2-7b hcinfer w4g128/);
  assert.match(ctx, /roofline \(weights \+ KV\)/);
  assert.match(throughputTables(records), /% roofline w\+KV/);
  assert.doesNotMatch(ctx, /fp16/, "one prompt length: no line against context");
  // a record from before the KV roofline existed gets it from its measured bytes
  const old = {
    point: points[2],
    metrics: {
      status: "ok",
      decodeTokensPerS: 364.3,
      weightBytesPerStep: 3.70e9,
      kvBytesPerStep: 1.59e9,
      hbmGbps: 3007,
    },
  } as unknown as SweepRecord<ThroughputPoint, ThroughputMetrics>;
  const [filled] = withKvRoofline([old]);
  assert.ok(Math.abs(filled.metrics.rooflineKvTokensPerS! - 3007e9 / 5.29e9) < 1e-6);
  assert.ok(Math.abs(filled.metrics.pctRooflineKv! - 64.09) < 0.01); // 364.3 of 568.4 tok/s
  assert.deepEqual((await throughputFigures(records.slice(0, 2))).map((f) => f.name), [
    "throughput",
  ]);
});
