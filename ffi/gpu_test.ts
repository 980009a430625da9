import assert from "node:assert/strict";
import { pseudoTokens, TINY_DIR } from "./_test_utils.ts";
import {
  decodeGpuModelInfo,
  deviceInfo,
  encodeGpuParams,
  GPU_PARAMS_SIZE,
  GpuModel,
  gpuUnavailableReason,
  measureBandwidth,
} from "./gpu.ts";
import { library } from "./library.ts";
import { Model } from "./model.ts";
import { HciError } from "./errors.ts";

try {
  library();
} catch { /* reported by the tests below */ }

const reason = gpuUnavailableReason();
if (reason !== null) console.log(`GPU tests skipped: ${reason}`);
const noGpu = reason !== null;

/** The `small` checkpoint: $HCINFER_SMALL_MODEL, else the shared tree's copy (if present). */
function smallDir(): string | null {
  const candidates = [
    Deno.env.get("HCINFER_SMALL_MODEL"),
    new URL("../.device/gpu/models/small", import.meta.url).pathname,
    new URL("../../shared/models/small", import.meta.url).pathname,
  ];
  for (const c of candidates) {
    if (!c) continue;
    try {
      if (Deno.statSync(`${c}/config.json`).isFile) return c;
    } catch { /* next */ }
  }
  return null;
}

Deno.test("deviceInfo never throws and explains an unavailable GPU", () => {
  const info = deviceInfo();
  assert.equal(typeof info.available, "boolean");
  if (!info.available) assert.ok(info.reason.length > 0);
  else assert.ok(info.name.length > 0 && info.smCount > 0 && info.totalMemory > 0);
});

Deno.test("encodeGpuParams: defaults, options and validation", () => {
  const defaults = new Uint8Array(GPU_PARAMS_SIZE);
  const p = encodeGpuParams(defaults, {
    weights: "packed",
    dtype: "bf16",
    kvDtype: "fp32",
    maxBatch: 4,
    memoryBudget: 8 * 2 ** 30,
    gemm: "own",
    offload: false,
  });
  const v = new DataView(p.buffer);
  assert.equal(v.getInt32(4, true), 1);
  assert.equal(v.getInt32(8, true), 1);
  assert.equal(v.getInt32(12, true), 2);
  assert.equal(v.getInt32(16, true), 4);
  assert.equal(v.getInt32(28, true), 0);
  assert.equal(v.getInt32(36, true), 2);
  assert.equal(v.getBigInt64(40, true), BigInt(8 * 2 ** 30));
  // deno-lint-ignore no-explicit-any
  assert.throws(() => encodeGpuParams(defaults, { dtype: "fp8" as any }), /dtype: expected/);
  assert.throws(() => encodeGpuParams(defaults, { memoryBudget: -1 }), /memoryBudget/);
});

Deno.test("decodeGpuModelInfo reads the documented offsets", () => {
  const b = new Uint8Array(128);
  const v = new DataView(b.buffer);
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

const small = smallDir();
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
  },
});
