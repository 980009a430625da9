import assert from "node:assert/strict";
import { denoEval, TINY_DIR, tinyReference, topK } from "./_test_utils.ts";
import { library } from "./library.ts";
import { Model } from "./model.ts";
import { Session } from "./session.ts";

// Open once outside any test so that the resource sanitizer does not count the library handle.
try {
  library();
} catch { /* the tests below report it */ }

const { prompts } = await tinyReference();

Deno.test("generateGreedy reproduces the reference continuations", async () => {
  using model = await Model.load(TINY_DIR);
  using session = Session.create(model, { nCtx: 128 });
  for (const [i, p] of prompts.entries()) {
    const nNew = p.greedy_ids.length - p.ids.length;
    const out = await session.generateGreedy(Int32Array.from(p.ids), nNew);
    assert.deepEqual([...p.ids, ...out], p.greedy_ids, `prompt ${i}: ${JSON.stringify(p.prompt)}`);
    assert.equal(session.nPast >= p.ids.length + nNew - 1, true, `nPast ${session.nPast}`);
  }
});

Deno.test("generateGreedy stops at eos (included)", async () => {
  using model = await Model.load(TINY_DIR);
  using session = Session.create(model, { nCtx: 128 });
  const p = prompts[0];
  const cont = p.greedy_ids.slice(p.ids.length);
  const eos = cont[3];
  const stop = cont.indexOf(eos);
  const out = await session.generateGreedy(p.ids, cont.length, eos);
  assert.deepEqual([...out], cont.slice(0, stop + 1));
});

Deno.test("prefill logits: top-5 and values match the reference", async () => {
  using model = await Model.load(TINY_DIR);
  for (const [i, p] of prompts.entries()) {
    using session = Session.create(model, { nCtx: 64 });
    const logits = await session.decode(Int32Array.from(p.ids));
    assert.equal(logits.length, model.info.vocabSize);
    assert.equal(session.nPast, p.ids.length);
    assert.deepEqual(topK(logits, 5), p.last_logits_top5, `prompt ${i}`);
    p.last_logits_top5.forEach((id, k) => {
      const want = p.last_logits_top5_values[k];
      assert.ok(
        Math.abs(logits[id] - want) < 1e-3,
        `prompt ${i}, token ${id}: logit ${logits[id]}, reference ${want}`,
      );
    });
  }
});

Deno.test("token-by-token decode: sum |logits| per position matches the reference", async () => {
  using model = await Model.load(TINY_DIR);
  using session = Session.create(model, { nCtx: 64 });
  for (const [i, p] of prompts.entries()) {
    session.reset();
    assert.equal(session.nPast, 0);
    for (const [pos, id] of p.ids.entries()) {
      const logits = await session.decode([id]);
      const sum = logits.reduce((a, x) => a + Math.abs(x), 0);
      const want = p.logits_sum_abs[pos];
      assert.ok(
        Math.abs(sum - want) < 1e-4 * want,
        `prompt ${i} position ${pos}: sum |logits| ${sum}, reference ${want}`,
      );
    }
    assert.equal(session.nPast, p.ids.length);
  }
});

Deno.test("session: one call at a time, context limit, close", async () => {
  using model = await Model.load(TINY_DIR);
  const session = Session.create(model, { nCtx: 8 });
  assert.deepEqual(session.params, { nCtx: 8, nThreads: 0 });
  assert.equal(session.model, model);
  // Both checks are made before yielding to the event loop: the first call may finish at once.
  const first = session.decode([0, 496, 3378]);
  const second = session.decode([286]);
  assert.throws(() => session.reset(), /still running/);
  await assert.rejects(second, /still running/);
  await first;
  assert.equal(session.nPast, 3);
  await assert.rejects(session.decode([1, 2, 3, 4, 5, 6]), /./, "n_ctx 8 exceeded");
  session.close();
  session.close();
  assert.equal(session.closed, true);
  assert.equal(model.closed, false);
  await assert.rejects(session.decode([0]), /session on .* is closed$/);
  assert.throws(() => session.nPast, /is closed/);
});

Deno.test("handles never closed are freed by the finalizers", async () => {
  const mod = new URL("./model.ts", import.meta.url).href;
  const ses = new URL("./session.ts", import.meta.url).href;
  const handles = new URL("./handles.ts", import.meta.url).href;
  const r = await denoEval(
    `import { Model } from ${JSON.stringify(mod)};
     import { Session } from ${JSON.stringify(ses)};
     import { liveNativeHandles } from ${JSON.stringify(handles)};
     async function make() {
       const m = await Model.load(${JSON.stringify(TINY_DIR)});
       const s = Session.create(m, { nCtx: 16 });
       await s.decode([0, 1, 2]);
       const kept = await Model.load(${JSON.stringify(TINY_DIR)});
       Session.create(kept, { nCtx: 16 }); // dropped while its model lives
       return kept;
     }
     const kept = await make();
     console.log(JSON.stringify(liveNativeHandles()));
     for (let i = 0; i < 20 && liveNativeHandles().sessions + liveNativeHandles().models > 1; i++) {
       globalThis.gc();
       await new Promise((r) => setTimeout(r, 10));
     }
     console.log(JSON.stringify(liveNativeHandles()));
     kept.close();
     console.log(JSON.stringify(liveNativeHandles()));`,
    {},
    ["-A", "--v8-flags=--expose-gc"],
  );
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.stdout.trim().split("\n").map((l) => JSON.parse(l)), [
    { models: 2, sessions: 2 },
    { models: 1, sessions: 0 },
    { models: 0, sessions: 0 },
  ]);
});
