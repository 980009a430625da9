import assert from "node:assert/strict";
import { join } from "node:path";
import { loadTask, loadTokenizer, REPO_ROOT } from "../datasets/mod.ts";
import { Model, Session } from "../ffi/mod.ts";
import {
  choiceMetrics,
  encodePair,
  evaluateTask,
  type ExampleScore,
  logProbAndArgmax,
  moveTrailingSpace,
  scoringWindow,
} from "./zero_shot_eval.ts";

const TINY = join(REPO_ROOT, "models/tiny");

/** Independent log-likelihood: encode whole and context, one scoreTokens call on whole. */
async function referenceLoglik(
  model: Model,
  tokenizer: Awaited<ReturnType<typeof loadTokenizer>>,
  context: string,
  continuation: string,
): Promise<number> {
  const whole = tokenizer.encode(context + continuation);
  const n = tokenizer.encode(context).length;
  const lp = await model.scoreTokens(whole);
  let sum = 0;
  for (let i = n - 1; i < lp.length; i++) sum += lp[i];
  return sum;
}

Deno.test("encodePair moves the context's trailing whitespace to the continuation", async () => {
  const tok = await loadTokenizer(TINY);
  assert.deepEqual(moveTrailingSpace("Answer: ", "yes"), ["Answer:", " yes"]);
  assert.deepEqual(moveTrailingSpace("Answer:\n \n", "yes"), ["Answer:", "\n \nyes"]);
  assert.deepEqual(moveTrailingSpace("Answer:", " yes"), ["Answer:", " yes"]);

  // "Answer: " + "yes" tokenizes like "Answer:" + " yes": the space stays with the word.
  const a = encodePair(tok, "Question: Who?\nAnswer: ", "yes");
  const b = encodePair(tok, "Question: Who?\nAnswer:", " yes");
  assert.deepEqual(a, b);
  assert.equal(a.context[0], tok.bosId);
  assert.deepEqual(a.context, tok.encode("Question: Who?\nAnswer:"));
  assert.deepEqual(a.continuation, tok.encode(" yes", { addBos: false }));
  assert.deepEqual(
    [...a.context, ...a.continuation],
    [...tok.encode("Question: Who?\nAnswer: yes")],
  );
  // without moving, the continuation would be "yes" after a context ending in a space token
  const naive = tok.encode("Question: Who?\nAnswer: ");
  assert.notDeepEqual(naive, a.context);

  const noBos = encodePair(tok, "Answer:", " yes", { addBos: false });
  assert.deepEqual(noBos.context, tok.encode("Answer:", { addBos: false }));
  assert.deepEqual(noBos.continuation, a.continuation);
  // an empty context becomes the BOS alone
  const empty = encodePair(tok, "", " yes");
  assert.deepEqual([...empty.context], [tok.bosId]);
  assert.deepEqual(empty.continuation, a.continuation);
  // a context cache returns the same tokens
  const cache = new Map<string, Int32Array>();
  encodePair(tok, "Question: Who?\nAnswer: ", "no", { contextCache: cache });
  assert.deepEqual(encodePair(tok, "Question: Who?\nAnswer: ", "yes", { contextCache: cache }), a);
  assert.equal(cache.size, 1);
});

Deno.test("scoringWindow cuts the context from the left to the model's positions", () => {
  const pair = { context: Int32Array.of(0, 1, 2, 3, 4), continuation: Int32Array.of(5, 6) };
  assert.deepEqual(scoringWindow(pair, 100), {
    tokens: Int32Array.of(0, 1, 2, 3, 4, 5, 6),
    start: 5,
    dropped: 0,
  });
  assert.deepEqual(scoringWindow(pair, 4), {
    tokens: Int32Array.of(3, 4, 5, 6),
    start: 2,
    dropped: 3,
  });
  assert.equal(scoringWindow(pair, 3).start, 1);
  assert.throws(() => scoringWindow(pair, 2), RangeError);
  assert.throws(() => scoringWindow({ ...pair, continuation: new Int32Array() }, 9), RangeError);
});

Deno.test("choiceMetrics: argmax, first of ties, normalization by characters and bytes", () => {
  assert.deepEqual(choiceMetrics([-3, -1, -1], ["a", "b", "c"], 1), {
    pred: 1,
    predNorm: 1,
    predBytes: 1,
    acc: 1,
    acc_norm: 1,
    acc_bytes: 1,
  });
  // longer choice wins once normalized: -4/8 > -2/2
  const m = choiceMetrics([-2, -4], ["ab", "abcdefgh"], 1);
  assert.equal(m.acc, 0);
  assert.equal(m.acc_norm, 1);
  // "éé" is 2 characters but 4 bytes
  const u = choiceMetrics([-2, -3], ["x", "éé"], 1);
  assert.equal(u.predNorm, 1); // -1.5 > -2
  assert.equal(u.predBytes, 1); // -0.75 > -2
  const v = choiceMetrics([-1.1, -3], ["x", "éé"], 0);
  assert.equal(v.predNorm, 0); // -1.1 > -1.5
  assert.equal(v.predBytes, 1); // -0.75 > -1.1
});

Deno.test("logProbAndArgmax is a float64 log-softmax", () => {
  const { logProb, argmax } = logProbAndArgmax([1, 3, 2], 2);
  assert.equal(argmax, 1);
  const z = Math.exp(1) + Math.exp(3) + Math.exp(2);
  assert.ok(Math.abs(logProb - (2 - Math.log(z))) < 1e-12);
});

/** Three ARC-format questions whose right answer is the tiny model's own greedy continuation. */
const ARC_ITEMS = [
  {
    choices: [
      "qzx vbn wqk jjx",
      "he was a man who had been a man who",
      "#@! 42 )(* zz",
      "Xq Xq Xq",
    ],
    query: "Question: Who was happy?",
    gold: 1,
  },
  {
    choices: [
      "he was a man who had been a little girl",
      "zzv kqp xxj",
      "}}{{ ]] [[",
      "Qwv Zxk Jpl Vbq",
    ],
    query: "Question: What did the little dog do?",
    gold: 0,
  },
  {
    choices: ["pzq mmk", "vvx ttq yyk", "&&& ^^^ %%%", "she was a little girl named Lily. She was"],
    query: "Question: Once upon a time there was a little girl named Lily. What did she like?",
    gold: 3,
  },
];

Deno.test("evaluateTask on a hand-made ARC file: acc 1, logliks as scoreTokens gives them", async () => {
  const dir = await Deno.makeTempDir();
  using model = await Model.load(TINY);
  const tok = await loadTokenizer(TINY);
  try {
    const path = join(dir, "arc_easy.jsonl");
    await Deno.writeTextFile(path, ARC_ITEMS.map((r) => JSON.stringify(r)).join("\n") + "\n");
    const task = await loadTask("arc_easy", { path });
    const scores: ExampleScore[] = [];
    const progress: number[] = [];
    const r = await evaluateTask(model, tok, task, {
      onExample: (s) => scores.push(s),
      onProgress: (done, total) => progress.push(done / total),
    });
    assert.equal(r.n, 3);
    assert.equal(r.acc, 1);
    assert.equal(r.acc_norm, 1);
    assert.equal(r.chance, 0.25);
    assert.equal(r.ppl, null);
    assert.equal(r.requests, 12);
    assert.equal(r.truncated, 0);
    assert.deepEqual(progress, [1 / 3, 2 / 3, 1]);
    for (const [i, s] of scores.entries()) {
      for (const [j, choice] of ARC_ITEMS[i].choices.entries()) {
        const want = await referenceLoglik(
          model,
          tok,
          `${ARC_ITEMS[i].query}\nAnswer:`,
          ` ${choice}`,
        );
        assert.ok(Math.abs(s.logliks[j] - want) < 1e-9, `item ${i} choice ${j}`);
      }
      // the model prefers the right answer by a wide margin
      const others = s.logliks.filter((_, j) => j !== s.gold);
      assert.ok(s.logliks[s.gold] > Math.max(...others) + 5, `item ${i}: ${s.logliks}`);
    }
    // sequential scoring gives the same numbers; limit takes the first examples
    const seq = await evaluateTask(model, tok, task, { concurrent: false, limit: 2 });
    assert.equal(seq.n, 2);
    assert.equal(seq.acc, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("evaluateTask on a hand-made LAMBADA file: greedy match, loglik, perplexity", async () => {
  const dir = await Deno.makeTempDir();
  using model = await Model.load(TINY);
  const tok = await loadTokenizer(TINY);
  try {
    const context = "Question: Who was happy?\nAnswer: he was a man who had been a";
    // the greedy next word, found with the session's own greedy generation
    using session = Session.create(model);
    const next = tok.decode(await session.generateGreedy(tok.encode(context), 1));
    assert.match(next, /^ [a-z]+$/);
    const items = [
      { context, continuation: next.slice(1) },
      { context, continuation: "zebra" },
    ];
    const path = join(dir, "lambada_openai.jsonl");
    await Deno.writeTextFile(path, items.map((r) => JSON.stringify(r)).join("\n") + "\n");
    const task = await loadTask("lambada_openai", { path });
    const scores: ExampleScore[] = [];
    const r = await evaluateTask(model, tok, task, { onExample: (s) => scores.push(s) });
    assert.deepEqual(scores.map((s) => s.isGreedy), [true, false]);
    assert.equal(r.acc, 0.5);
    assert.equal(r.acc_norm, null);
    assert.equal(r.chance, 0);
    for (const [i, s] of scores.entries()) {
      const want = await referenceLoglik(model, tok, context, ` ${items[i].continuation}`);
      assert.ok(Math.abs(s.logliks[0] - want) < 1e-3, `${s.logliks[0]} vs ${want}`);
    }
    const mean = (scores[0].logliks[0] + scores[1].logliks[0]) / 2;
    assert.ok(Math.abs(r.ppl! - Math.exp(-mean)) < 1e-9 * r.ppl!);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("one-token choices after a shared context: one prefill, logliks as scoreTokens", async () => {
  const dir = await Deno.makeTempDir();
  using model = await Model.load(TINY);
  const tok = await loadTokenizer(TINY);
  try {
    const items = [
      { query: "Passage: Lily had a red ball.\nQuestion: did lily have a ball?", gold: 1 },
      { query: "Passage: The dog was sad.\nQuestion: was the dog happy?", gold: 0 },
    ].map((r) => ({ ...r, choices: ["no", "yes"] }));
    const path = join(dir, "boolq.jsonl");
    await Deno.writeTextFile(path, items.map((r) => JSON.stringify(r)).join("\n") + "\n");
    const task = await loadTask("boolq", { path });
    const run = async (sharePrefill: boolean) => {
      const scores: ExampleScore[] = [];
      const r = await evaluateTask(model, tok, task, {
        sharePrefill,
        onExample: (s) => scores.push(s),
      });
      return { r, scores };
    };
    const shared = await run(true);
    const separate = await run(false);
    assert.equal(shared.r.sharedPrefills, 2);
    assert.equal(separate.r.sharedPrefills, 0);
    assert.ok(shared.r.tokens < separate.r.tokens);
    for (const [i, s] of shared.scores.entries()) {
      assert.deepEqual(s.continuationTokens, [1, 1]);
      for (const [j, choice] of ["no", "yes"].entries()) {
        const context = task.examples[i].requests[j].context;
        const want = await referenceLoglik(model, tok, context, ` ${choice}`);
        assert.equal(separate.scores[i].logliks[j], want);
        assert.ok(Math.abs(s.logliks[j] - want) < 1e-4, `${s.logliks[j]} vs ${want}`);
      }
    }
    assert.equal(shared.r.acc, separate.r.acc);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
