import assert from "node:assert/strict";
import { benchLowRank, HciError } from "./mod.ts";

Deno.test("benchLowRank runs a small configuration and reports consistent figures", async () => {
  // 2 blocks of a small model: points q/k/v, o, gate/up, down at rank 8, bf16 factors
  const r = await benchLowRank({
    dModel: 256,
    dFf: 768,
    kvDim: 128,
    nLayers: 2,
    rank: 8,
    batch: 2,
    nThreads: 1,
    iters: 3,
    warmup: 1,
  });
  assert.equal(r.nPoints, 8);
  // bytes per block: rank · (d_in + d_out) · 2 bytes, summed over the 7 branches
  const perBlock = 8 * 2 * ((256 + 256) + 2 * (256 + 128) + (256 + 256) + 2 * (256 + 768) +
    (768 + 256));
  assert.equal(r.bytes, 2 * perBlock);
  assert.ok(r.secondsMedian > 0 && r.secondsMin <= r.secondsMedian);
  assert.ok(r.hostReadGbps > 0.1, `host bandwidth ${r.hostReadGbps}`);
  assert.ok(["scalar", "avx2", "avx512"].includes(r.simd));
});

Deno.test("benchLowRank rejects bad parameters clearly", async () => {
  await assert.rejects(benchLowRank({ rank: 0, nLayers: 1, iters: 1 }), (e: unknown) => {
    assert.ok(e instanceof HciError);
    assert.match(e.message, /must be positive/);
    return true;
  });
});
