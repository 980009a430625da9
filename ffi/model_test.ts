import assert from "node:assert/strict";
import { logSoftmax, pseudoTokens, TINY_DIR, tinyConfig, tinyReference } from "./_test_utils.ts";
import { HciError, Status } from "./errors.ts";
import { library } from "./library.ts";
import { Model } from "./model.ts";
import { Session } from "./session.ts";
import { LinearKind } from "./structs.ts";

// Open once outside any test so that the resource sanitizer does not count the library handle.
try {
  library();
} catch { /* the tests below report it */ }

Deno.test("load: info matches config.json", async () => {
  const config = await tinyConfig();
  const reference = await tinyReference();
  using model = await Model.load(TINY_DIR, { nThreads: 2 });
  const info = model.info;
  assert.equal(info.nLayers, config.num_hidden_layers);
  assert.equal(info.dModel, config.hidden_size);
  assert.equal(info.nHeads, config.num_attention_heads);
  assert.equal(info.nKvHeads, config.num_key_value_heads);
  assert.equal(info.headDim, config.head_dim);
  assert.equal(info.dFf, config.intermediate_size);
  assert.equal(info.vocabSize, config.vocab_size);
  assert.equal(info.maxPositions, config.max_position_embeddings);
  assert.equal(info.tiedEmbeddings, config.tie_word_embeddings);
  assert.equal(info.nLinears, 2 * 7);
  assert.equal(info.nParams, reference.params);
  assert.equal(info.ropeTheta, 10000);
  assert.equal(info.rmsNormEps, 1e-5);
  assert.deepEqual(
    [info.nLayers, info.dModel, info.nHeads, info.nKvHeads, info.headDim, info.dFf],
    [2, 64, 4, 2, 16, 192],
  );
  assert.equal(model.info, info, "info is cached");
});

Deno.test("linears before quantization: shapes, full precision", async () => {
  using model = await Model.load(TINY_DIR);
  const linears = model.linears();
  assert.equal(linears.length, 14);
  const shapes: Record<number, [number, number]> = {
    [LinearKind.Q]: [64, 64],
    [LinearKind.K]: [32, 64],
    [LinearKind.V]: [32, 64],
    [LinearKind.O]: [64, 64],
    [LinearKind.Gate]: [192, 64],
    [LinearKind.Up]: [192, 64],
    [LinearKind.Down]: [64, 192],
  };
  linears.forEach((l, i) => {
    assert.equal(l.layer, Math.floor(i / 7));
    assert.equal(l.kind, i % 7);
    assert.deepEqual([l.dOut, l.dIn], shapes[l.kind], `linear ${i}`);
    assert.equal(l.bits, 0);
    assert.equal(l.rank, 0);
    assert.equal(l.maxRank, 0);
  });
  assert.equal(model.singularValues(0).length, 0);
});

Deno.test("quantize 4-bit g64 r16: errors, ranks, singular values, progress", async () => {
  using model = await Model.load(TINY_DIR);
  const n = model.info.nLinears;
  const seen: number[] = [];
  await model.quantize({ bits: 4, groupSize: 64, maxRank: 16 }, {
    onProgress: (done) => seen.push(done),
  });
  assert.ok(seen.length > 0, "onProgress never called");
  assert.equal(seen.at(-1), n, `progress ended at ${seen.at(-1)}, not n_linears = ${n}`);
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i] > seen[i - 1], `${seen}`);

  const full = model.linears();
  for (const [i, l] of full.entries()) {
    assert.equal(l.bits, 4, `linear ${i}`);
    assert.equal(l.groupSize, 64, `linear ${i}`);
    assert.equal(l.maxRank, 16, `linear ${i}`);
    assert.equal(l.rank, 16, `linear ${i}`);
    assert.ok(l.relErrQuant > 0, `linear ${i}: relErrQuant ${l.relErrQuant}`);
    assert.ok(
      l.relErrActive < l.relErrQuant,
      `linear ${i}: relErrActive ${l.relErrActive} >= relErrQuant ${l.relErrQuant}`,
    );
    const sv = model.singularValues(i);
    assert.equal(sv.length, 16, `linear ${i}`);
    for (let k = 1; k < sv.length; k++) assert.ok(sv[k] <= sv[k - 1], `linear ${i}: ${sv}`);
    assert.ok(sv[15] > 0, `linear ${i}: ${sv}`);
  }

  // Truncated SVD of E: ||E - E_r||^2 = ||E||^2 - sum_{k<r} s_k^2, so with w = ||W||_F,
  // q^2 - a_r^2 = sum_{k<r} s_k^2 / w^2 for every r: w^2 must agree between ranks 8 and 16.
  model.setUniformRank(8);
  const half = model.linears();
  for (let i = 0; i < n; i++) {
    assert.equal(half[i].rank, 8);
    assert.ok(half[i].relErrActive > full[i].relErrActive, `linear ${i}`);
    assert.ok(half[i].relErrActive < full[i].relErrQuant, `linear ${i}`);
    const sv = model.singularValues(i);
    const e8 = sv.slice(0, 8).reduce((a, s) => a + s * s, 0);
    const e16 = sv.reduce((a, s) => a + s * s, 0);
    const q2 = full[i].relErrQuant ** 2;
    const w2at8 = e8 / (q2 - half[i].relErrActive ** 2);
    const w2at16 = e16 / (q2 - full[i].relErrActive ** 2);
    assert.ok(
      Math.abs(w2at8 / w2at16 - 1) < 1e-3,
      `linear ${i}: ||W||^2 from rank 8 = ${w2at8}, from rank 16 = ${w2at16}`,
    );
  }

  model.setUniformRank(0);
  for (const [i, l] of model.linears().entries()) {
    assert.equal(l.rank, 0);
    assert.ok(
      Math.abs(l.relErrActive - l.relErrQuant) <= 1e-12 * l.relErrQuant,
      `linear ${i}: relErrActive ${l.relErrActive} != relErrQuant ${l.relErrQuant}`,
    );
  }

  model.setUniformRank(1000); // clamped to each layer's max rank
  assert.ok(model.linears().every((l) => l.rank === 16));

  const ranks = Int32Array.from({ length: n }, (_, i) => i % 17);
  model.setRanks(ranks);
  assert.deepEqual(model.linears().map((l) => l.rank), Array.from(ranks));

  assert.throws(() => model.setRanks(new Int32Array(n - 1)), (e) => {
    assert.ok(e instanceof HciError);
    assert.equal(e.status, Status.InvalidArgument);
    return true;
  });
  assert.throws(() => model.setRanks(new Int32Array(n).fill(17)), HciError);
  assert.throws(() => model.linear(n), HciError);
  assert.throws(() => model.linear(-1), HciError);

  await model.quantize({ bits: 0, groupSize: 64, maxRank: 0 });
  assert.ok(model.linears().every((l) => l.bits === 0 && l.rank === 0 && l.maxRank === 0));
});

Deno.test("quantize: kind mask and layer range select linears", async () => {
  using model = await Model.load(TINY_DIR);
  await model.quantize({
    bits: 8,
    groupSize: -1,
    maxRank: 4,
    kindMask: (1 << LinearKind.Gate) | (1 << LinearKind.Down),
    layerBegin: 1,
    layerEnd: 2,
  });
  for (const l of model.linears()) {
    const on = l.layer === 1 && (l.kind === LinearKind.Gate || l.kind === LinearKind.Down);
    assert.equal(l.bits, on ? 8 : 0, `layer ${l.layer} kind ${l.kind}`);
    assert.equal(l.rank, on ? 4 : 0, `layer ${l.layer} kind ${l.kind}`);
    if (on) assert.equal(l.groupSize, l.dIn); // per row: one group as wide as the row
  }
});

Deno.test("quantize: invalid parameters and an aborted signal", async () => {
  using model = await Model.load(TINY_DIR);
  await assert.rejects(model.quantize({ bits: 5, groupSize: 64, maxRank: 0 }), (e) => {
    assert.ok(e instanceof HciError);
    assert.equal(e.status, Status.InvalidArgument);
    assert.ok(e.message.length > 0);
    return true;
  });
  await assert.rejects(model.quantize({ bits: 4, groupSize: 48, maxRank: 0 }), HciError);
  const reason = new Error("stop");
  await assert.rejects(
    model.quantize({ bits: 4, groupSize: 64, maxRank: 8 }, { signal: AbortSignal.abort(reason) }),
    (e) => e === reason,
  );
  // A callback that throws cancels the call and its error comes back.
  const boom = new Error("boom");
  await assert.rejects(
    model.quantize({ bits: 4, groupSize: 64, maxRank: 8 }, {
      onProgress: () => {
        throw boom;
      },
    }),
    (e) => e === boom,
  );
});

Deno.test("scoreTokens agrees with session logits (log-softmax) and evalNll", async () => {
  const { prompts } = await tinyReference();
  using model = await Model.load(TINY_DIR);
  const tokens = Int32Array.from(prompts[1].greedy_ids);
  const scores = await model.scoreTokens(tokens);
  assert.equal(scores.length, tokens.length - 1);

  using session = Session.create(model, { nCtx: 64 });
  for (let i = 0; i < tokens.length - 1; i++) {
    const logits = await session.decode(tokens.subarray(i, i + 1));
    const expected = logSoftmax(logits)[tokens[i + 1]];
    assert.ok(
      Math.abs(scores[i] - expected) < 1e-4,
      `position ${i}: scoreTokens ${scores[i]}, log-softmax of decode ${expected}`,
    );
  }

  const one = await model.evalNll(tokens, { seqLen: tokens.length });
  assert.equal(one.nWindows, 1);
  assert.equal(one.nPredicted, tokens.length - 1);
  const nll = -scores.reduce((a, s) => a + s, 0);
  assert.ok(Math.abs(one.nllSum - nll) < 1e-3, `evalNll ${one.nllSum}, -sum(scoreTokens) ${nll}`);
  assert.ok(one.seconds >= 0);
});

Deno.test("evalNll: windows, maxWindows, progress, cancel", async () => {
  using model = await Model.load(TINY_DIR);
  const tokens = pseudoTokens(64 * 10 + 5, model.info.vocabSize);
  const seen: number[] = [];
  const all = await model.evalNll(tokens, { seqLen: 64 }, { onProgress: (d) => seen.push(d) });
  assert.equal(all.nWindows, 10);
  assert.equal(all.nPredicted, 10 * 63);
  assert.equal(seen.at(-1), 10);
  const ppl = Math.exp(all.nllSum / all.nPredicted);
  assert.ok(ppl > 1 && Number.isFinite(ppl), `ppl ${ppl}`);

  const three = await model.evalNll(tokens, { seqLen: 64, maxWindows: 3, nThreads: 1 });
  assert.equal(three.nWindows, 3);
  assert.equal(three.nPredicted, 3 * 63);
  // Windows are independent: the first three windows score the same alone.
  const first = await model.evalNll(tokens.subarray(0, 3 * 64), { seqLen: 64 });
  assert.ok(Math.abs(first.nllSum - three.nllSum) < 1e-6 * first.nllSum);

  const big = pseudoTokens(64 * 2000, model.info.vocabSize, 7);
  // Long enough for the 100 ms poll to see intermediate counts.
  const polled: number[] = [];
  const long = await model.evalNll(big, { seqLen: 64, maxWindows: 300 }, {
    onProgress: (d) => polled.push(d),
  });
  assert.equal(polled.at(-1), 300);
  for (let i = 1; i < polled.length; i++) assert.ok(polled[i] > polled[i - 1], `${polled}`);
  if (long.seconds > 0.3) assert.ok(polled.length >= 2, `${long.seconds} s, polled ${polled}`);

  const controller = new AbortController();
  const pending = model.evalNll(big, { seqLen: 64 }, { signal: controller.signal });
  controller.abort();
  await assert.rejects(pending, (e) => e instanceof DOMException && e.name === "AbortError");

  await assert.rejects(model.evalNll(tokens, { seqLen: 0 }), HciError);
  await assert.rejects(model.evalNll(tokens, { seqLen: 64, maxWindows: -1 }), HciError);
});

Deno.test("load: a missing directory throws HciError naming it", async () => {
  const dir = `${TINY_DIR}/does-not-exist`;
  await assert.rejects(Model.load(dir), (e) => {
    assert.ok(e instanceof HciError, String(e));
    assert.equal(e.status, Status.Io, `${e.statusName}: ${e.message}`);
    assert.ok(e.message.includes(dir), `message does not name ${dir}: ${e.message}`);
    return true;
  });
});

Deno.test("use after close throws; close is idempotent and closes sessions", async () => {
  const model = await Model.load(TINY_DIR);
  const session = Session.create(model);
  assert.equal(model.closed, false);
  model.close();
  model.close();
  assert.equal(model.closed, true);
  assert.equal(session.closed, true);
  assert.throws(() => model.linear(0), /model .*tiny is closed/);
  assert.throws(() => model.setUniformRank(0), /is closed/);
  await assert.rejects(model.scoreTokens([0, 1, 2]), /is closed/);
  await assert.rejects(model.quantize({ bits: 4, groupSize: 64, maxRank: 0 }), /is closed/);
  await assert.rejects(model.evalNll([0, 1, 2, 3], { seqLen: 2 }), /is closed/);
  assert.throws(() => Session.create(model), /is closed/);
  await assert.rejects(session.decode([0]), /session on .* is closed \(its model was closed\)/);
  session.close();
  assert.equal(model.info.nLayers, 2, "info stays readable");
});

Deno.test("close while a long call runs: freed when it settles", async () => {
  const model = await Model.load(TINY_DIR);
  const running = model.evalNll(pseudoTokens(64 * 20, model.info.vocabSize), { seqLen: 64 });
  model.close();
  const r = await running;
  assert.equal(r.nWindows, 20);
});
