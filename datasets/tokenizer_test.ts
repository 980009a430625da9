import assert from "node:assert/strict";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { loadTokenizer } from "./tokenizer.ts";
import { loadC4Jsonl, loadPlainText } from "./text.ts";
import { REPO_ROOT, sharedDataPath } from "./bundled.ts";

const TINY = join(REPO_ROOT, "models", "tiny");
const tok = await loadTokenizer(TINY);

Deno.test("loadTokenizer reads ids of special tokens and the vocabulary size", () => {
  assert.equal(tok.bosId, 0);
  assert.equal(tok.eosId, 1);
  assert.equal(tok.vocabSize, 8192);
  assert.equal(tok.modelDir, TINY);
});

Deno.test("encode puts <s> first and matches reference.json's prompt ids", () => {
  const ids = tok.encode("The meaning of life is");
  assert.ok(ids instanceof Int32Array);
  assert.deepEqual(Array.from(ids), [0, 496, 3378, 286, 855, 365]);
});

Deno.test("encode with addBos=true equals the library's own template output", async () => {
  const json = JSON.parse(await Deno.readTextFile(join(TINY, "tokenizer.json")));
  const config = JSON.parse(await Deno.readTextFile(join(TINY, "tokenizer_config.json")));
  const lib = new Tokenizer(json, config);
  for (const text of ["", "Hello world", " = Robert Boulter = \n\n It was", "a <s> b </s>"]) {
    assert.deepEqual(Array.from(tok.encode(text)), lib.encode(text).ids, JSON.stringify(text));
  }
});

Deno.test("encode with addBos=false drops exactly the leading <s>", () => {
  for (const text of ["The meaning of life is", "", "\n\n x", "<s> literal"]) {
    const withBos = Array.from(tok.encode(text));
    const without = Array.from(tok.encode(text, { addBos: false }));
    assert.equal(withBos[0], 0);
    assert.deepEqual(without, withBos.slice(1), JSON.stringify(text));
  }
  assert.deepEqual(Array.from(tok.encode("", { addBos: false })), []);
});

Deno.test("decode round-trips text exactly, and shows or skips special tokens", () => {
  const text = " = Robert Boulter = \n\n It's a test , isn't it ? Naïve café — “quoted” .";
  const ids = tok.encode(text);
  assert.equal(tok.decode(ids, { skipSpecialTokens: true }), text);
  assert.equal(tok.decode(ids), "<s>" + text);
  assert.equal(tok.decode(tok.encode(text, { addBos: false })), text);
  // the library's optional clean-up changes " ," to "," and so on
  assert.equal(tok.decode(tok.encode("a , b ."), { skipSpecialTokens: true }), "a , b .");
  assert.equal(
    tok.decode(tok.encode("a , b ."), { skipSpecialTokens: true, cleanUpSpaces: true }),
    "a, b.",
  );
  assert.equal(tok.decode([]), "");
  assert.equal(tok.decode(new Int32Array([0]), { skipSpecialTokens: true }), "");
});

Deno.test("decode rejects ids outside the vocabulary", () => {
  assert.throws(() => tok.decode([5, 8192]), { name: "RangeError", message: /8192/ });
  assert.throws(() => tok.decode([-1]), RangeError);
});

Deno.test("loadTokenizer names the file when tokenizer.json is missing or broken", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "tokenizer.json");
    await assert.rejects(loadTokenizer(dir), (e: Error) => {
      assert.match(e.message, /tokenizer file .*tokenizer\.json does not exist/);
      assert.ok(e.message.includes(path));
      return true;
    });
    await Deno.writeTextFile(path, "{ not json");
    await assert.rejects(loadTokenizer(dir), (e: Error) => {
      assert.ok(e.message.includes(path));
      assert.match(e.message, /is not valid JSON/);
      return true;
    });
    await Deno.copyFile(join(TINY, "tokenizer.json"), path);
    await Deno.writeTextFile(join(dir, "tokenizer_config.json"), "{");
    await assert.rejects(loadTokenizer(dir), /tokenizer_config\.json is not valid JSON/);
    // without tokenizer_config.json the BOS still comes from the post-processor's template
    await Deno.remove(join(dir, "tokenizer_config.json"));
    const bare = await loadTokenizer(dir);
    assert.equal(bare.bosId, 0);
    assert.equal(bare.eosId, null);
    assert.deepEqual(Array.from(bare.encode("The meaning of life is")), [
      0,
      496,
      3378,
      286,
      855,
      365,
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// Token counts of the full evaluation texts must equal reference.json's "tokens".
const reference = JSON.parse(await Deno.readTextFile(join(TINY, "reference.json")));
const cases: Array<[string, string, () => Promise<string>, number]> = [
  [
    "WikiText-2 test",
    "wikitext2_seq512",
    () => loadPlainText(sharedDataPath("wikitext-2/wiki.test.raw")),
    416497,
  ],
  ["C4 eval (joined)", "c4eval_seq512", () => loadC4Jsonl(sharedDataPath("c4/eval.jsonl")), 613754],
  [
    "books heldout",
    "books_heldout_seq512",
    () => loadPlainText(sharedDataPath("books/heldout.txt")),
    147045,
  ],
  [
    "tinystories heldout",
    "tinystories_heldout_seq512",
    () => loadPlainText(sharedDataPath("tinystories/heldout.txt")),
    20344,
  ],
];
for (const [name, key, load, expected] of cases) {
  Deno.test({
    name: `token count of ${name} equals reference.json (${expected})`,
    fn: async () => {
      const ids = tok.encode(await load());
      assert.equal(ids.length, expected);
      assert.equal(ids.length, reference[key].tokens);
      assert.equal(ids[0], 0);
    },
  });
}
