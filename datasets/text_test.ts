import assert from "node:assert/strict";
import { join } from "node:path";
import { corpusFormatOf, loadC4Jsonl, loadCorpus, loadPlainText } from "./text.ts";

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("loadPlainText keeps the text as is", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "a.txt");
    const text = "\uFEFF\n\n = Title = \r\n  body  \n\n\n";
    await Deno.writeTextFile(path, text);
    assert.equal(await loadPlainText(path), text);
  });
});

Deno.test("loadC4Jsonl joins texts with a blank line and honours maxDocs", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "c4.jsonl");
    const docs = [{ text: "first\ndoc", url: "u" }, { text: "second" }, { text: "third " }];
    await Deno.writeTextFile(path, docs.map((d) => JSON.stringify(d)).join("\n") + "\n");
    assert.equal(await loadC4Jsonl(path), "first\ndoc\n\nsecond\n\nthird ");
    assert.equal(await loadC4Jsonl(path, { maxDocs: 2 }), "first\ndoc\n\nsecond");
    await assert.rejects(loadC4Jsonl(path, { maxDocs: 0 }), RangeError);
  });
});

Deno.test("loadC4Jsonl names the file and line of a malformed line", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "bad.jsonl");
    await Deno.writeTextFile(path, '{"text":"a"}\n\n{"text": oops}\n{"text":"c"}\n');
    await assert.rejects(loadC4Jsonl(path), (e: Error) => {
      assert.ok(e.message.startsWith(`${path}:3: malformed JSON line`), e.message);
      return true;
    });
    await Deno.writeTextFile(path, '{"text":"a"}\n{"body":"b"}\n');
    await assert.rejects(loadC4Jsonl(path), new RegExp(`${path}:2: .*string field "text"`));
  });
});

Deno.test("a missing file gives an error naming it, not a NotFound stack", async () => {
  const path = "/nonexistent/dir/wiki.test.raw";
  for (const load of [loadPlainText, loadC4Jsonl]) {
    await assert.rejects(load(path), (e: Error) => {
      assert.ok(!(e instanceof Deno.errors.NotFound));
      assert.match(e.message, /\/nonexistent\/dir\/wiki\.test\.raw does not exist/);
      return true;
    });
  }
});

Deno.test("loadCorpus chooses the format by extension unless it is given", async () => {
  await withTempDir(async (dir) => {
    const jsonl = join(dir, "docs.jsonl");
    await Deno.writeTextFile(jsonl, '{"text":"a"}\n{"text":"b"}\n');
    assert.equal(await loadCorpus({ path: jsonl }), "a\n\nb");
    assert.equal(await loadCorpus({ path: jsonl, maxDocs: 1 }), "a");
    assert.equal(await loadCorpus({ path: jsonl, format: "text" }), '{"text":"a"}\n{"text":"b"}\n');
    const raw = join(dir, "wiki.test.raw");
    await Deno.writeTextFile(raw, "x\n");
    assert.equal(await loadCorpus({ path: raw }), "x\n");
  });
  assert.equal(corpusFormatOf("a/b.JSONL"), "c4-jsonl");
  assert.equal(corpusFormatOf("a/b.ndjson"), "c4-jsonl");
  assert.equal(corpusFormatOf("a/b.txt"), "text");
  assert.equal(corpusFormatOf("a/b"), "text");
});
