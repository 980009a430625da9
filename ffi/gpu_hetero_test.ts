/**
 * GPU tests of heterogeneous compensation (GPU ABI 2): the CPU placements against the GPU
 * placement on the `small` checkpoint, the compensation statistics and ranks, and the rank
 * controller on a synthetic model. Ignored without a usable GPU (and, for `small`, without the
 * checkpoint: $HCINFER_SMALL_MODEL or the shared tree's copy).
 */

import assert from "node:assert/strict";
import { pseudoTokens, smallModelDir } from "./_test_utils.ts";
import { HciError } from "./errors.ts";
import {
  type CompRanks,
  type CompStats,
  GpuModel,
  type GpuModelInfo,
  type GpuPlacement,
  gpuUnavailableReason,
} from "./gpu.ts";
import { library } from "./library.ts";
import { Model } from "./model.ts";

try {
  library();
} catch { /* reported by library_test.ts */ }

const reason = gpuUnavailableReason();
if (reason !== null) console.log(`GPU heterogeneous-compensation tests skipped: ${reason}`);
const noGpu = reason !== null;
const small = smallModelDir();

/**
 * Logit tolerance between two computations of the same compensated forward:
 * max |Δ| ≤ LOGIT_TOL × max |logit|. The CPU placements hold the factors in bf16 (relative
 * rounding 2^-9 ≈ 2e-3) where the GPU placement holds them in fp16 (2^-11), sum the rank products
 * in another order and add the correction to the point's output at another moment; the backbone
 * products are the same fp16 GEMVs. Those differences are a small fraction of the correction,
 * itself a small fraction of each output, and stay far below 1% of the largest logit after the
 * blocks' residual stream; 2e-2 (the bf16-level tolerance the design asks for) leaves margin for
 * that. Because a missing or doubled correction can also stay under 2e-2 on a W4 model, each
 * test also checks that the compensated logits are much closer to each other than to the
 * uncompensated ones (DISCRIMINATION).
 */
const LOGIT_TOL = 2e-2;
/** Δ(CPU placement, GPU placement) must be under this fraction of Δ(none, GPU placement). */
const DISCRIMINATION = 0.5;

function maxAbs(a: Float32Array): number {
  let m = 0;
  for (const x of a) m = Math.max(m, Math.abs(x));
  return m;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Prefills `prompt` on sequence 0 (reset first), then decodes `next` one token at a time. */
async function forward(
  g: GpuModel,
  prompt: Int32Array,
  next: Int32Array,
): Promise<Float32Array[]> {
  g.reset();
  const out = [await g.prefill(0, prompt)];
  for (const t of next) out.push(await g.decode([t]));
  return out;
}

/** Compares two runs of `forward` step by step: the largest Δ and the bound it must respect. */
function compare(a: Float32Array[], b: Float32Array[]): { diff: number; bound: number } {
  let diff = 0;
  let bound = Infinity;
  a.forEach((x, k) => {
    diff = Math.max(diff, maxAbsDiff(x, b[k]));
    bound = Math.min(bound, LOGIT_TOL * maxAbs(b[k]));
  });
  return { diff, bound };
}

/** Factor bytes of rank `rank` on every linear at `bytesPerElement`: Σ rank · (d_in + d_out). */
function factorBytes(info: GpuModelInfo, rank: number, bytesPerElement: number): number {
  const q = info.nHeads * info.headDim;
  const kv = info.nKvHeads * info.headDim;
  const d = info.dModel;
  const shapes = [[d, q], [d, kv], [d, kv], [q, d], [d, info.dFf], [d, info.dFf], [info.dFf, d]];
  let elements = 0;
  for (const [din, dout] of shapes) elements += Math.min(rank, din, dout) * (din + dout);
  return info.nLayers * elements * bytesPerElement;
}

const ALL: GpuPlacement[] = ["none", "gpu", "cpu-sync", "cpu-async"];

Deno.test({
  name: "small W4 g128 rank 16: CPU placements match the GPU placement; stats and ranks",
  ignore: noGpu || small === null,
  fn: async () => {
    const RANK = 16;
    using model = await Model.load(small!);
    await model.quantize({ bits: 4, groupSize: 128, maxRank: RANK });
    const vocab = model.info.vocabSize;
    const tokens = pseudoTokens(4 * 256, vocab, 7);
    const prompt = pseudoTokens(48, vocab, 3); // > 16 rows: the prefill path
    const next = pseudoTokens(6, vocab, 5);
    const runs = {} as Record<
      GpuPlacement,
      { ppl: number; logits: Float32Array[]; stats: CompStats; ranks: CompRanks | null }
    >;
    let info: GpuModelInfo | null = null;
    for (const placement of ALL) {
      using g = await GpuModel.fromModel(model, { weights: "packed", placement, nCtx: 256 });
      info = g.info;
      const r = await g.evalNll(tokens, { seqLen: 256 });
      g.resetCompStats();
      const logits = await forward(g, prompt, next);
      runs[placement] = {
        ppl: Math.exp(r.nllSum / r.nPredicted),
        logits,
        stats: g.compStats(),
        ranks: placement === "none" ? null : g.compRanks(),
      };
    }
    const n = info!.nLayers * 7;
    const gpu = runs.gpu;
    const none = compare(runs.none.logits, gpu.logits);
    assert.ok(none.diff > 0, "rank-16 compensation changes the logits");

    // the GPU placement: no CPU statistics, the device ranks
    assert.equal(gpu.stats.placement, "gpu");
    assert.equal(gpu.stats.steps, 0);
    assert.equal(gpu.stats.nPoints, 0);
    assert.equal(gpu.stats.bytesToHost, 0);
    assert.deepEqual([...gpu.ranks!.full], new Array(n).fill(RANK));

    const perStep = factorBytes(info!, RANK, 2); // bf16 host factors (the default)
    for (const placement of ["cpu-sync", "cpu-async"] as const) {
      const run = runs[placement];
      const rel = Math.abs(run.ppl / gpu.ppl - 1);
      assert.ok(rel < 1e-3, `${placement}: ppl ${run.ppl} vs gpu ${gpu.ppl} (rel ${rel})`);
      const c = compare(run.logits, gpu.logits);
      assert.ok(c.diff <= c.bound, `${placement}: max |Δlogit| ${c.diff} > ${c.bound}`);
      assert.ok(
        c.diff <= DISCRIMINATION * none.diff,
        `${placement}: Δ vs gpu ${c.diff} is not well below Δ(none, gpu) ${none.diff}`,
      );

      const s = run.stats;
      assert.equal(s.placement, placement);
      assert.equal(s.nPoints, info!.nLayers * 4, "q/k/v, o, gate/up, down of every block");
      assert.equal(s.rankController, false);
      assert.ok(s.cpuThreads >= 1);
      assert.equal(s.steps, next.length, "decode steps since the reset");
      assert.ok(s.bytesToHost > 0 && s.bytesToDevice > 0);
      assert.ok(s.cpuBusyMs > 0 && s.gpuWaitMs >= 0);
      assert.equal(s.factorBytesRead, s.steps * perStep, "full rank-16 factors every step");
      assert.ok(s.factorBytesHost >= perStep);
      assert.ok(Math.abs(s.rankFraction - 1) < 1e-12, `rank fraction ${s.rankFraction}`);
      assert.equal(s.prefillRows, prompt.length);
      const ranks = run.ranks!;
      assert.deepEqual([...ranks.full], new Array(n).fill(RANK));
      assert.deepEqual([...ranks.last], new Array(n).fill(RANK));
      assert.deepEqual([...ranks.mean], new Array(n).fill(RANK));
    }

    // ranks fixed at 0 on the CPU: the uncompensated forward
    {
      using g = await GpuModel.fromModel(model, {
        weights: "packed",
        placement: "cpu-async",
        nCtx: 256,
      });
      assert.throws(() => g.setCompRanks(new Int32Array(n - 1)), RangeError);
      const tooBig = new Int32Array(n).fill(RANK);
      tooBig[3] = RANK + 1;
      assert.throws(() => g.setCompRanks(tooBig), HciError);
      g.setCompRanks(new Int32Array(n));
      g.resetCompStats();
      const logits = await forward(g, prompt, next);
      const zero = compare(logits, runs.none.logits);
      assert.ok(zero.diff <= zero.bound, `ranks 0 vs none: max |Δlogit| ${zero.diff}`);
      assert.ok(
        zero.diff <= DISCRIMINATION * none.diff,
        `ranks 0: Δ vs none ${zero.diff} is not well below Δ(none, gpu) ${none.diff}`,
      );
      const s = g.compStats();
      assert.equal(s.steps, next.length);
      assert.equal(s.rankFraction, 0);
      assert.equal(s.factorBytesRead, 0);
      const ranks = g.compRanks();
      assert.deepEqual([...ranks.full], new Array(n).fill(RANK));
      assert.deepEqual([...ranks.last], new Array(n).fill(0));
    }
    {
      using g = await GpuModel.fromModel(model, { weights: "packed", placement: "gpu", nCtx: 64 });
      assert.throws(() => g.setCompRanks(new Int32Array(n)), HciError, "CPU placements only");
    }
  },
});

Deno.test({
  name: "rank controller on synthetic:test rank 32: runs and reports consistent ranks",
  ignore: noGpu,
  fn: async () => {
    const RANK = 32;
    using g = await GpuModel.synthetic("synthetic:test", {
      seed: 3,
      bits: 4,
      groupSize: 128,
      rank: RANK,
      placement: "cpu-async",
      rankController: true,
      controllerSlowdownPct: -1, // ranks only (test_gpu_model checks the point set)
      nCtx: 128,
    });
    const r = await g.benchDecode({ promptLen: 32, newTokens: 16, repeats: 2 });
    assert.ok(r.decodeTokensPerS > 0);
    const s = g.compStats();
    assert.equal(s.placement, "cpu-async");
    assert.equal(s.rankController, true);
    assert.equal(s.nPoints, g.info.nLayers * 4);
    assert.equal(s.steps, 2 * 16, "the timed repeats' decode steps (reset after the warm-up)");
    assert.ok(s.rankFraction >= 0 && s.rankFraction <= 1, `rank fraction ${s.rankFraction}`);
    assert.ok(s.factorBytesRead <= s.steps * factorBytes(g.info, RANK, 2));
    const { full, last, mean } = g.compRanks();
    assert.deepEqual([...full], new Array(g.info.nLayers * 7).fill(RANK));
    let sumMean = 0;
    let sumFull = 0;
    full.forEach((f, i) => {
      assert.ok(last[i] >= 0 && last[i] <= f, `last rank ${last[i]} of linear ${i}`);
      assert.ok(mean[i] >= 0 && mean[i] <= f, `mean rank ${mean[i]} of linear ${i}`);
      sumMean += mean[i];
      sumFull += f;
    });
    // mean over steps of Σ used / Σ full = Σ (mean over steps of used) / Σ full
    assert.ok(
      Math.abs(sumMean / sumFull - s.rankFraction) < 1e-6,
      `ranks' mean ${sumMean / sumFull} vs rank fraction ${s.rankFraction}`,
    );
  },
});
