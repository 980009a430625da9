import assert from "node:assert/strict";
import { pseudoTokens, smallModelDir, TINY_DIR } from "./_test_utils.ts";
import {
  decodeCompStats,
  decodeGpuModelInfo,
  decodeGpuParams,
  decodeSynthParams,
  defaultGpuParams,
  defaultSynthParams,
  deviceInfo,
  encodeGpuParams,
  encodeSynthParams,
  GPU_COMP_STATS_SIZE,
  GPU_MODEL_INFO_SIZE,
  GPU_PARAMS_SIZE,
  GPU_PLACEMENTS,
  GPU_SYNTH_PARAMS_SIZE,
  GpuModel,
  type GpuParams,
  type GpuPlacement,
  gpuUnavailableReason,
  measureBandwidth,
} from "./gpu.ts";
import { BENCH_PARAMS, GPU_PARAMS, SYNTH_PARAMS } from "./gpu_symbols.ts";
import { library } from "./library.ts";
import { Model } from "./model.ts";
import { HciError } from "./errors.ts";

try {
  library();
} catch { /* reported by the tests below */ }

const reason = gpuUnavailableReason();
if (reason !== null) console.log(`GPU tests skipped: ${reason}`);
const noGpu = reason !== null;

Deno.test("deviceInfo never throws and explains an unavailable GPU", () => {
  const info = deviceInfo();
  assert.equal(typeof info.available, "boolean");
  if (!info.available) assert.ok(info.reason.length > 0);
  else assert.ok(info.name.length > 0 && info.smCount > 0 && info.totalMemory > 0);
});

/**
 * Byte size and field offsets of a `Deno.dlopen` struct type under the C layout rules (each field
 * aligned to its size, the total padded to the largest alignment).
 */
function cLayout(fields: readonly string[]): { size: number; offsets: number[] } {
  const sizes: Record<string, number> = { i32: 4, u32: 4, i64: 8, u64: 8, f64: 8, f32: 4 };
  let off = 0;
  let align = 1;
  const offsets = fields.map((f) => {
    const n = sizes[f];
    align = Math.max(align, n);
    off = Math.ceil(off / n) * n;
    const at = off;
    off += n;
    return at;
  });
  return { size: Math.ceil(off / align) * align, offsets };
}

Deno.test("the symbol table's by-value structs have the sizes the encoders write (ABI 2)", () => {
  const params = cLayout(GPU_PARAMS.struct);
  assert.equal(params.size, GPU_PARAMS_SIZE);
  assert.equal(GPU_PARAMS_SIZE, 80);
  // memory_budget, prefill_chunk, cpu_threads, ..., controller_slowdown_pct, sm_limit
  assert.deepEqual(params.offsets.slice(10), [40, 48, 52, 56, 60, 64, 68, 72, 76]);
  const synth = cLayout(SYNTH_PARAMS.struct);
  assert.equal(synth.size, GPU_SYNTH_PARAMS_SIZE);
  assert.equal(GPU_SYNTH_PARAMS_SIZE, 24);
  assert.deepEqual(synth.offsets, [0, 8, 12, 16, 20]);
  assert.equal(cLayout(BENCH_PARAMS.struct).size, 32);
});

Deno.test("encodeGpuParams: defaults kept, every option at its ABI-2 offset, validation", () => {
  // distinct defaults in every int32 slot, so a field written at the wrong offset shows
  const defaults = new Uint8Array(GPU_PARAMS_SIZE);
  const dvd = new DataView(defaults.buffer);
  for (let o = 0; o < GPU_PARAMS_SIZE; o += 4) dvd.setInt32(o, 1000 + o, true);
  assert.deepEqual(encodeGpuParams(defaults, {}), defaults);

  const p = encodeGpuParams(defaults, {
    device: 1,
    weights: "packed",
    dtype: "bf16",
    kvDtype: "fp32",
    maxBatch: 4,
    nCtx: 640,
    placement: "cpu-async",
    offload: false,
    useGraphs: false,
    gemm: "own",
    memoryBudget: 8 * 2 ** 30,
    prefillChunk: 256,
    cpuThreads: 6,
    cpuFirstCore: -1,
    factorDtype: "fp16",
    prefillComp: "gpu",
    rankController: true,
  });
  assert.equal(p.byteLength, 80);
  const v = new DataView(p.buffer);
  const ints = [0, 4, 8, 12, 16, 20, 24, 28, 32, 36].map((o) => v.getInt32(o, true));
  assert.deepEqual(ints, [1, 1, 1, 2, 4, 640, 3, 0, 0, 2]);
  assert.equal(v.getBigInt64(40, true), BigInt(8 * 2 ** 30));
  const tail = [48, 52, 56, 60, 64, 68].map((o) => v.getInt32(o, true));
  assert.deepEqual(tail, [256, 6, -1, 2, 1, 1]);
  assert.equal(v.getInt32(72, true), 1072, "controllerSlowdownPct keeps the library's value");
  assert.equal(v.getInt32(76, true), 1076, "smLimit keeps the library's value");
  const slow = new DataView(encodeGpuParams(defaults, { controllerSlowdownPct: 8 }).buffer);
  assert.equal(slow.getInt32(72, true), 8);

  const zeros = new Uint8Array(GPU_PARAMS_SIZE);
  const placementAt = (placement: GpuPlacement) =>
    new DataView(encodeGpuParams(zeros, { placement }).buffer).getInt32(24, true);
  assert.deepEqual(GPU_PLACEMENTS.map(placementAt), [0, 1, 2, 3]);
  const factorAt = (factorDtype: "fp32" | "bf16" | "fp16") =>
    new DataView(encodeGpuParams(zeros, { factorDtype }).buffer).getInt32(60, true);
  assert.deepEqual([factorAt("fp32"), factorAt("bf16"), factorAt("fp16")], [0, 1, 2]);

  // deno-lint-ignore no-explicit-any
  const bad = (o: any) => () => encodeGpuParams(defaults, o);
  assert.throws(bad({ dtype: "fp8" }), /dtype: expected/);
  assert.throws(bad({ memoryBudget: -1 }), /memoryBudget/);
  assert.throws(
    bad({ placement: "cpu" }),
    /placement: expected one of none, gpu, cpu-sync, cpu-async, got cpu/,
  );
  assert.throws(bad({ factorDtype: "int8" }), /factorDtype: expected one of fp32, bf16, fp16/);
  assert.throws(bad({ prefillComp: "both" }), /prefillComp: expected one of cpu, gpu/);
  assert.throws(bad({ cpuThreads: 1.5 }), /cpuThreads must be an integer/);
  assert.throws(bad({ smLimit: -8 }), /smLimit must be a non-negative integer/);
  assert.equal(
    new DataView(encodeGpuParams(defaults, { smLimit: 16 }).buffer).getInt32(76, true),
    16,
  );
  // the old boolean is gone: the type system refuses it, and it has no effect on the bytes
  assert.deepEqual(bad({ compensation: true })(), defaults);
});

Deno.test("decodeGpuParams inverts encodeGpuParams", () => {
  const all: GpuParams = {
    device: 0,
    weights: "original",
    dtype: "fp16",
    kvDtype: "fp16",
    maxBatch: 16,
    nCtx: 0,
    placement: "cpu-sync",
    offload: true,
    useGraphs: true,
    gemm: "cublas",
    memoryBudget: 3 * 2 ** 30 + 7,
    prefillChunk: 512,
    cpuThreads: 0,
    cpuFirstCore: 2,
    factorDtype: "bf16",
    prefillComp: "cpu",
    rankController: false,
    controllerSlowdownPct: 7,
    smLimit: 16,
  };
  assert.deepEqual(decodeGpuParams(encodeGpuParams(new Uint8Array(GPU_PARAMS_SIZE), all)), all);
  const odd = encodeGpuParams(new Uint8Array(GPU_PARAMS_SIZE), all);
  new DataView(odd.buffer).setInt32(24, 9, true);
  assert.throws(() => decodeGpuParams(odd), /placement 9 is unknown/);
});

Deno.test("encodeSynthParams / decodeSynthParams: the 24-byte ABI-2 layout", () => {
  const defaults = new Uint8Array(GPU_SYNTH_PARAMS_SIZE);
  const dvd = new DataView(defaults.buffer);
  dvd.setInt32(12, 128, true);
  dvd.setInt32(20, 77, true); // reserved: kept as the library gave it
  const b = encodeSynthParams(defaults, { seed: 2 ** 40 + 5, bits: 3, rank: 64 });
  assert.equal(b.byteLength, 24);
  const v = new DataView(b.buffer);
  assert.equal(v.getBigUint64(0, true), BigInt(2 ** 40 + 5));
  assert.equal(v.getInt32(8, true), 3);
  assert.equal(v.getInt32(12, true), 128);
  assert.equal(v.getInt32(16, true), 64);
  assert.equal(v.getInt32(20, true), 77);
  assert.deepEqual(decodeSynthParams(b), { seed: 2 ** 40 + 5, bits: 3, groupSize: 128, rank: 64 });
  assert.throws(() => encodeSynthParams(defaults, { rank: 0.5 }), /rank must be an integer/);
  assert.throws(() => encodeSynthParams(defaults, { seed: -1 }), /seed must be/);
});

Deno.test("decodeCompStats reads the documented offsets (104 bytes)", () => {
  assert.equal(GPU_COMP_STATS_SIZE, 104);
  const b = new Uint8Array(GPU_COMP_STATS_SIZE);
  const v = new DataView(b.buffer);
  v.setInt32(0, 3, true);
  v.setInt32(4, 128, true);
  v.setInt32(8, 14, true);
  v.setInt32(12, 1, true);
  v.setBigInt64(16, 192n, true);
  v.setFloat64(24, 812.5, true);
  v.setFloat64(32, 13.25, true);
  v.setBigInt64(40, 5_000_000_001n, true);
  v.setBigInt64(48, 6_000_000_002n, true);
  v.setBigInt64(56, 123_456_789_012n, true);
  v.setBigInt64(64, 640_000_000n, true);
  v.setFloat64(72, 0.625, true);
  v.setBigInt64(80, 384n, true);
  v.setFloat64(88, 41.5, true);
  v.setBigInt64(96, 17n, true);
  assert.deepEqual(decodeCompStats(b), {
    placement: "cpu-async",
    nPoints: 128,
    cpuThreads: 14,
    rankController: true,
    steps: 192,
    cpuBusyMs: 812.5,
    gpuWaitMs: 13.25,
    bytesToHost: 5_000_000_001,
    bytesToDevice: 6_000_000_002,
    factorBytesRead: 123_456_789_012,
    factorBytesHost: 640_000_000,
    rankFraction: 0.625,
    prefillRows: 384,
    prefillCpuMs: 41.5,
    cpuPreemptions: 17,
  });
  v.setInt32(0, 1, true);
  assert.equal(decodeCompStats(b).placement, "gpu");
  v.setInt32(0, 7, true);
  assert.equal(decodeCompStats(b).placement, "placement 7");
});

Deno.test("the library's GPU defaults are those hcinfer_gpu.h documents (also without CUDA)", () => {
  // needs a libhcinfer with the ABI-2 GPU entry points (a build without CUDA exports them too)
  const p = defaultGpuParams();
  assert.equal(p.placement, "none");
  assert.equal(p.weights, "current");
  assert.equal(p.dtype, "fp16");
  assert.equal(p.kvDtype, "fp16");
  assert.equal(p.maxBatch, 1);
  assert.equal(p.offload, true);
  assert.equal(p.useGraphs, true);
  assert.equal(p.memoryBudget, 0);
  assert.equal(p.cpuThreads, 0);
  assert.equal(p.cpuFirstCore, 2);
  assert.equal(p.factorDtype, "bf16");
  assert.equal(p.prefillComp, "cpu");
  assert.equal(p.rankController, false);
  assert.equal(p.controllerSlowdownPct, 0);
  assert.equal(p.smLimit, 0, "every SM");
  assert.deepEqual(defaultSynthParams(), { seed: 0, bits: 0, groupSize: 128, rank: 0 });
});

Deno.test("decodeGpuModelInfo reads the documented offsets", () => {
  const b = new Uint8Array(GPU_MODEL_INFO_SIZE);
  assert.equal(GPU_MODEL_INFO_SIZE, 136);
  const v = new DataView(b.buffer);
  v.setInt32(128, 16, true);
  v.setInt32(0, 32, true);
  v.setInt32(36, 4, true);
  v.setInt32(44, 0, true);
  v.setInt32(60, 1, true);
  v.setBigInt64(72, 3_600_000_000n, true);
  const i = decodeGpuModelInfo(b);
  assert.equal(i.nLayers, 32);
  assert.equal(i.bits, 4);
  assert.equal(i.dtype, "fp16");
  assert.equal(i.gemm, "cublas");
  assert.equal(i.weightBytesPerToken, 3_600_000_000);
  assert.equal(i.smCount, 16);
});

Deno.test({
  name: "GPU calls fail clearly without a GPU",
  ignore: !noGpu,
  fn: async () => {
    await assert.rejects(
      GpuModel.synthetic("synthetic:test"),
      (e) => e instanceof Error && /CUDA|GPU|device|entry points/.test(e.message),
    );
  },
});

Deno.test({
  name: "synthetic test model: prefill, batched decode, greedy, bench",
  ignore: noGpu,
  fn: async () => {
    using g = await GpuModel.synthetic("synthetic:test", { seed: 1, maxBatch: 2, nCtx: 128 });
    assert.equal(g.info.nLayers, 2);
    assert.equal(g.info.dModel, 512);
    const logits = await g.prefill(0, pseudoTokens(10, 1000));
    assert.equal(logits.length, 1000);
    assert.ok(logits.every(Number.isFinite));
    await g.prefill(1, pseudoTokens(4, 1000, 3));
    const both = await g.decode([5, 6]);
    assert.equal(both.length, 2000);
    assert.equal(g.nPast(0), 11);
    assert.equal(g.nPast(1), 5);
    const gen = await g.generateGreedy([1, 2, 3], 8);
    assert.equal(gen.length, 8);
    const r = await g.benchDecode({ promptLen: 16, newTokens: 8, repeats: 2 });
    assert.ok(r.decodeTokensPerS > 0 && r.graphUsed);
    assert.ok(g.memory().deviceBytesPeak > 0);
  },
});

Deno.test({
  name: "memory budget too small fails before any work, naming need and cap",
  ignore: noGpu,
  fn: async () => {
    await assert.rejects(
      GpuModel.synthetic("synthetic:test", { memoryBudget: 1 << 20, offload: false }),
      (e) => e instanceof HciError && /needs .* the cap is/.test(e.message),
    );
  },
});

Deno.test({
  name: "tiny checkpoint (head_dim 16) is refused with a reason",
  ignore: noGpu,
  fn: async () => {
    using model = await Model.load(TINY_DIR);
    await assert.rejects(GpuModel.fromModel(model), /head_dim/);
  },
});

const small = smallModelDir();
Deno.test({
  name: "small: GPU fp16 perplexity equals the CPU figure within 1e-3",
  ignore: noGpu || small === null,
  fn: async () => {
    using model = await Model.load(small!);
    using g = await GpuModel.fromModel(model, { nCtx: 512 });
    const tokens = pseudoTokens(4 * 256, model.info.vocabSize, 7);
    const cpu = await model.evalNll(tokens, { seqLen: 256 });
    const gpu = await g.evalNll(tokens, { seqLen: 256 });
    const rel = Math.abs(Math.exp((gpu.nllSum - cpu.nllSum) / cpu.nPredicted) - 1);
    assert.ok(rel < 1e-3, `ppl relative difference ${rel}`);
  },
});

Deno.test({
  name: "measureBandwidth reports positive figures",
  ignore: noGpu,
  fn: async () => {
    const bw = await measureBandwidth({ bytes: 64 << 20, repeats: 3 });
    assert.ok(bw.hbmGbps > 0 && bw.h2dPinnedGbps > 0 && bw.hbmReadGbps > 0);
    assert.equal(bw.smCount, deviceInfo().smCount);
    const part = await measureBandwidth({ bytes: 64 << 20, repeats: 3, smLimit: 16 });
    assert.ok(part.smCount >= 16 && part.smCount < bw.smCount, `partition of ${part.smCount} SMs`);
    assert.ok(part.hbmReadGbps > 0);
  },
});

Deno.test({
  name: "smLimit: a model on an SM partition reports its SMs and the same perplexity",
  ignore: noGpu,
  fn: async () => {
    using model = await Model.load(small!);
    using all = await GpuModel.fromModel(model, { nCtx: 256 });
    using part = await GpuModel.fromModel(model, { nCtx: 256, smLimit: 16 });
    assert.equal(all.info.smCount, deviceInfo().smCount);
    assert.ok(part.info.smCount >= 16 && part.info.smCount < all.info.smCount);
    // the same kernels on fewer SMs: grids of persistent kernels differ, so sums may be added in
    // another order; the perplexity agrees far inside the GPU-vs-CPU tolerance
    const tokens = pseudoTokens(2 * 128, model.info.vocabSize, 3);
    const a = await all.evalNll(tokens, { seqLen: 128 });
    const b = await part.evalNll(tokens, { seqLen: 128 });
    const rel = Math.abs(Math.exp((b.nllSum - a.nllSum) / a.nPredicted) - 1);
    assert.ok(rel < 1e-4, `ppl relative difference ${rel}`);
    await assert.rejects(
      GpuModel.fromModel(model, { nCtx: 256, smLimit: 100000 }),
      /sm_limit must be 1\.\.\d+ on device 0/,
    );
  },
});
