// End-to-end accuracy against Hugging Face transformers (the checkpoints' reference.json):
// tokenizer + float32 engine + GPTQ perplexity protocol, and greedy decoding with the KV cache.
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadTokenizer, REPO_ROOT, sharedDataPath, sharedModelPath } from "../datasets/mod.ts";
import { Model, Session } from "../ffi/mod.ts";
import { measurePerplexity, tokenizeCorpus } from "./perplexity_eval.ts";

const TINY = join(REPO_ROOT, "models/tiny");
const SMALL = sharedModelPath("small");

interface RefPpl {
  tokens: number;
  windows: number;
  ppl: number;
  nll: number;
}

const TEXTS: Array<[key: string, path: string]> = [
  ["wikitext2_seq512", sharedDataPath("wikitext-2/wiki.test.raw")],
  ["c4eval_seq512", sharedDataPath("c4/eval.jsonl")],
  ["books_heldout_seq512", sharedDataPath("books/heldout.txt")],
  ["tinystories_heldout_seq512", sharedDataPath("tinystories/heldout.txt")],
];

async function checkPerplexity(modelDir: string, key: string, path: string) {
  const ref = JSON.parse(await Deno.readTextFile(join(modelDir, "reference.json")))[key] as RefPpl;
  const tokenizer = await loadTokenizer(modelDir);
  using model = await Model.load(modelDir);
  const tokens = await tokenizeCorpus(tokenizer, { path });
  const r = await measurePerplexity(model, tokens, { seqLen: 512 });
  assert.equal(r.tokens, ref.tokens);
  assert.equal(r.windows, ref.windows);
  const rel = Math.abs(r.ppl - ref.ppl) / ref.ppl;
  assert.ok(rel < 1e-4, `${key}: ppl ${r.ppl} vs reference ${ref.ppl} (relative ${rel})`);
}

for (const [key, path] of TEXTS) {
  Deno.test(`tiny fp32 perplexity matches transformers: ${key}`, () =>
    checkPerplexity(TINY, key, path));
}
// One full text for `small` keeps CI time sane (about 40 s on 2 cores).
Deno.test("small fp32 perplexity matches transformers: books_heldout_seq512", () =>
  checkPerplexity(SMALL, "books_heldout_seq512", sharedDataPath("books/heldout.txt")));

for (const [name, dir] of [["tiny", TINY], ["small", SMALL]]) {
  Deno.test(`${name} greedy continuations reproduce transformers' token ids`, async () => {
    const ref = JSON.parse(await Deno.readTextFile(join(dir, "reference.json")));
    const tokenizer = await loadTokenizer(dir);
    using model = await Model.load(dir);
    for (const p of ref.prompts as Array<{ prompt: string; ids: number[]; greedy_ids: number[] }>) {
      const ids = tokenizer.encode(p.prompt);
      assert.deepEqual(Array.from(ids), p.ids, `tokenization of ${JSON.stringify(p.prompt)}`);
      using session = Session.create(model, { nCtx: p.greedy_ids.length });
      const out = await session.generateGreedy(ids, p.greedy_ids.length - ids.length);
      assert.deepEqual([...ids, ...out], p.greedy_ids, `greedy ids of ${JSON.stringify(p.prompt)}`);
    }
  });
}
