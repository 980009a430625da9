import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { appendRecord, canonicalJson, pointKey, readRecords } from "./store.ts";

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function collect(): { warnings: string[]; onWarning: (m: string) => void } {
  const warnings: string[] = [];
  return { warnings, onWarning: (m) => warnings.push(m) };
}

Deno.test("appendRecord creates folders and appends one line per record", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "a", "b", "runs.jsonl");
    assert.deepEqual(await readRecords(path), []);
    await appendRecord(path, { n: 1, text: "line\nbreak" });
    await appendRecord(path, { n: 2, nested: { x: [1, 2] } });
    assert.equal(
      await Deno.readTextFile(path),
      '{"n":1,"text":"line\\nbreak"}\n{"n":2,"nested":{"x":[1,2]}}\n',
    );
    assert.deepEqual(await readRecords(path), [
      { n: 1, text: "line\nbreak" },
      { n: 2, nested: { x: [1, 2] } },
    ]);
  });
});

Deno.test("appendRecord rejects values that are not objects", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "r.jsonl");
    // deno-lint-ignore no-explicit-any
    await assert.rejects(appendRecord(path, [1, 2] as any), TypeError);
  });
});

Deno.test("readRecords ignores a truncated final line with a warning", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "r.jsonl");
    await Deno.writeTextFile(path, '{"n":1}\n{"n":2}\n{"n":3,"metr');
    const { warnings, onWarning } = collect();
    assert.deepEqual(await readRecords(path, { onWarning }), [{ n: 1 }, { n: 2 }]);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /r\.jsonl:3: ignoring a truncated final line/);
  });
});

Deno.test("readRecords keeps a complete final record that lacks its newline", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "r.jsonl");
    await Deno.writeTextFile(path, '{"n":1}\n{"n":2}');
    const { warnings, onWarning } = collect();
    assert.deepEqual(await readRecords(path, { onWarning }), [{ n: 1 }, { n: 2 }]);
    assert.deepEqual(warnings, []);
    await appendRecord(path, { n: 3 }, { onWarning });
    assert.equal(await Deno.readTextFile(path), '{"n":1}\n{"n":2}\n{"n":3}\n');
  });
});

Deno.test("appendRecord after a crash cuts off the partial line first", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "r.jsonl");
    await Deno.writeTextFile(path, '{"n":1}\n{"n":2,"x":"ab');
    const { warnings, onWarning } = collect();
    await appendRecord(path, { n: 3 }, { onWarning });
    assert.equal(await Deno.readTextFile(path), '{"n":1}\n{"n":3}\n');
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /cutting off a truncated final line/);
    assert.deepEqual(await readRecords(path, { onWarning }), [{ n: 1 }, { n: 3 }]);
  });
});

Deno.test("appendRecord repairs a partial line longer than one read chunk", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "r.jsonl");
    await Deno.writeTextFile(path, '{"n":1}\n{"big":"' + "x".repeat(200_000));
    await appendRecord(path, { n: 2 }, { onWarning: () => {} });
    assert.equal(await Deno.readTextFile(path), '{"n":1}\n{"n":2}\n');
    await Deno.writeTextFile(path, '{"big":"' + "y".repeat(100_000));
    await appendRecord(path, { n: 3 }, { onWarning: () => {} });
    assert.equal(await Deno.readTextFile(path), '{"n":3}\n');
  });
});

Deno.test("readRecords throws naming file and line for a corrupt line in the middle", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "r.jsonl");
    await Deno.writeTextFile(path, '{"n":1}\n{"n":2\n{"n":3}\n');
    await assert.rejects(readRecords(path), (e: Error) => {
      assert.ok(e.message.startsWith(`${path}:2: corrupt record`), e.message);
      return true;
    });
    await Deno.writeTextFile(path, '{"n":1}\n[1,2]\n{"n":3}\n');
    await assert.rejects(readRecords(path), new RegExp(`${path}:2: corrupt record`));
  });
});

Deno.test("canonicalJson sorts keys recursively and keeps array order", () => {
  assert.equal(
    canonicalJson({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: "x" }, u: undefined, "10": 0, "2": 0 }),
    '{"10":0,"2":0,"a":{"c":"x","d":[3,{"y":2,"z":1}]},"b":1}',
  );
  assert.equal(canonicalJson([undefined, null]), "[null,null]");
  assert.throws(() => canonicalJson({ x: NaN }), TypeError);
  assert.throws(() => canonicalJson({ x: Infinity }), TypeError);
});

Deno.test("pointKey is stable under key reordering and pinned to sha256 of canonical JSON", () => {
  const a = pointKey("quant", { bits: 4, rank: 16, dataset: { name: "wt2", maxWindows: 8 } });
  const b = pointKey("quant", { dataset: { maxWindows: 8, name: "wt2" }, rank: 16, bits: 4 });
  assert.equal(a, b);
  assert.match(a, /^[0-9a-f]{64}$/);
  assert.notEqual(
    a,
    pointKey("quant", { bits: 3, rank: 16, dataset: { name: "wt2", maxWindows: 8 } }),
  );
  assert.notEqual(
    a,
    pointKey("other", { bits: 4, rank: 16, dataset: { name: "wt2", maxWindows: 8 } }),
  );
  const expected = createHash("sha256")
    .update('{"experiment":"e","point":{"a":1,"b":[2,"x"]}}').digest("hex");
  assert.equal(pointKey("e", { b: [2, "x"], a: 1 }), expected);
});
