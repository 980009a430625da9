import assert from "node:assert/strict";
import { join } from "node:path";
import { mergeResultFiles, recordKey } from "./merge.ts";
import { appendRecord, pointKey, readRecords } from "./store.ts";

const rec = (x: number, tag = "") => ({
  experiment: "e",
  key: pointKey("e", { x }),
  point: { x },
  metrics: { tag },
});

Deno.test("mergeResultFiles keeps one record per point, sorts, and removes the sources", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const target = join(dir, "results.jsonl");
    const a = join(dir, "results.shard-0.jsonl");
    const b = join(dir, "results.shard-1.jsonl");
    await appendRecord(target, rec(3, "target"));
    for (const x of [0, 2, 4]) await appendRecord(a, rec(x, "a"));
    for (const x of [1, 3]) await appendRecord(b, rec(x, "b")); // 3 is already in the target
    await appendRecord(b, rec(2, "b")); // and 2 in shard 0
    const summary = await mergeResultFiles(target, [a, b, join(dir, "missing.jsonl")], {
      order: (r) => (r.point as { x: number }).x,
    });
    assert.deepEqual(summary, { records: 5, added: 4, duplicates: 2, sources: [a, b] });
    const merged = await readRecords<ReturnType<typeof rec>>(target);
    assert.deepEqual(merged.map((r) => [r.point.x, r.metrics.tag]), [
      [0, "a"],
      [1, "b"],
      [2, "a"],
      [3, "target"],
      [4, "a"],
    ]);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["results.jsonl"]);
    // merging again is a no-op
    assert.equal((await mergeResultFiles(target, [a, b])).records, 5);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("recordKey falls back to the point's key, and null for foreign records", () => {
  assert.equal(recordKey({ experiment: "e", point: { x: 1 } }), pointKey("e", { x: 1 }));
  assert.equal(recordKey({ key: "k" }), "k");
  assert.equal(recordKey({ note: "hand-written" }), null);
});
