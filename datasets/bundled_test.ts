import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import {
  BOOKS_HELDOUT_HEAD,
  BUNDLED_DATA_DIR,
  REPO_ROOT,
  sharedDataPath,
  sharedModelPath,
  sharedRoot,
  WIKITEXT2_TEST_HEAD,
} from "./bundled.ts";

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

Deno.test("bundled paths point into datasets/data and the files exist", async () => {
  assert.equal(BUNDLED_DATA_DIR, join(REPO_ROOT, "datasets", "data"));
  for (const path of [WIKITEXT2_TEST_HEAD, BOOKS_HELDOUT_HEAD]) {
    assert.ok((await Deno.stat(path)).isFile, path);
  }
});

Deno.test("the bundled README states the excerpts' sha256", async () => {
  const readme = await Deno.readTextFile(join(BUNDLED_DATA_DIR, "README.md"));
  for (const path of [WIKITEXT2_TEST_HEAD, BOOKS_HELDOUT_HEAD]) {
    assert.ok(readme.includes(sha256(await Deno.readFile(path))), path);
  }
});

Deno.test("excerpts are prefixes of the shared files, cut at a boundary", async (t) => {
  const pairs: Array<[string, string]> = [
    [WIKITEXT2_TEST_HEAD, sharedDataPath("wikitext-2/wiki.test.raw")],
    [BOOKS_HELDOUT_HEAD, sharedDataPath("books/heldout.txt")],
  ];
  for (const [excerptPath, sourcePath] of pairs) {
    const source = await Deno.readFile(sourcePath);
    await t.step({
      name: excerptPath.split("/").pop()!,
      fn: async () => {
        const excerpt = await Deno.readFile(excerptPath);
        assert.deepEqual(source.subarray(0, excerpt.length), excerpt);
        // the source continues with the blank-line separator
        assert.equal(
          new TextDecoder().decode(source.subarray(excerpt.length, excerpt.length + 1)),
          "\n",
        );
        assert.equal(excerpt[excerpt.length - 1], 0x0a);
      },
    });
  }
});

Deno.test("sharedDataPath resolves ../shared/data, or $HCINFER_SHARED/data", async () => {
  // run in a subprocess so that setting the variable cannot affect tests running in parallel
  const probe = async (env: Record<string, string>) => {
    const code = `import * as b from ${
      JSON.stringify(new URL("./bundled.ts", import.meta.url).href)
    };
      console.log(JSON.stringify([b.sharedRoot(), b.sharedDataPath("c4/eval.jsonl"), b.sharedModelPath("small")]));`;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-config", code],
      env,
      clearEnv: true,
      stderr: "inherit",
    }).output();
    assert.ok(out.success);
    return JSON.parse(new TextDecoder().decode(out.stdout));
  };
  const { HCINFER_SHARED: _, ...base } = Deno.env.toObject();
  const shared = join(REPO_ROOT, "..", "shared");
  assert.deepEqual(await probe(base), [
    shared,
    join(shared, "data", "c4", "eval.jsonl"),
    join(shared, "models", "small"),
  ]);
  assert.deepEqual(await probe({ ...base, HCINFER_SHARED: "/elsewhere/shared" }), [
    "/elsewhere/shared",
    "/elsewhere/shared/data/c4/eval.jsonl",
    "/elsewhere/shared/models/small",
  ]);
  assert.equal(sharedDataPath("x"), join(sharedRoot(), "data", "x"));
  assert.equal(sharedModelPath("x"), join(sharedRoot(), "models", "x"));
});
