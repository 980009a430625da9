import assert from "node:assert/strict";
import { perplexityResult, pplFromNll, windowCount } from "./perplexity.ts";

Deno.test("windowCount is floor(n / seq), capped", () => {
  assert.equal(windowCount(416497, 512), 813);
  assert.equal(windowCount(613754, 512), 1198);
  assert.equal(windowCount(20344, 512), 39);
  assert.equal(windowCount(416497, 512, 40), 40);
  assert.equal(windowCount(511, 512), 0);
  assert.equal(windowCount(1024, 512, 5), 2);
  assert.throws(() => windowCount(100, 1), RangeError);
  assert.throws(() => windowCount(100, 512, 0), RangeError);
  assert.throws(() => windowCount(-1, 512), RangeError);
});

Deno.test("pplFromNll is exp of the mean NLL", () => {
  assert.equal(pplFromNll(0, 10), 1);
  assert.ok(Math.abs(pplFromNll(2 * Math.log(5), 2) - 5) < 1e-12);
  assert.throws(() => pplFromNll(1, 0), RangeError);
});

Deno.test("perplexityResult reproduces reference.json's shape and numbers", () => {
  // tiny, wikitext2_seq512: nll 7.335029774558572, ppl 1533.073425846177
  const predicted = 813 * 511;
  const r = perplexityResult({
    nllSum: 7.335029774558572 * predicted,
    tokens: 416497,
    windows: 813,
    seq: 512,
  });
  assert.equal(r.predicted, predicted);
  assert.equal(r.tokens, 416497);
  assert.ok(Math.abs(r.nll - 7.335029774558572) < 1e-12);
  assert.ok(Math.abs(r.ppl / 1533.073425846177 - 1) < 1e-12);
});
