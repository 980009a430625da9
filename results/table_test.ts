import assert from "node:assert/strict";
import { type Column, pivot, toCsv, toMarkdown, valueAt } from "./table.ts";

const rows = [
  { name: "rtn", bits: 4, ppl: 12.3456, note: 'say "hi", twice' },
  { name: "gptq|x", bits: 3, ppl: 15, note: "two\nlines" },
  { name: "fp16", bits: 16, ppl: null, note: " padded" },
];
const columns: Column<(typeof rows)[number]>[] = [
  { key: "name", header: "method" },
  { key: "bits", align: "right" },
  {
    key: "ppl",
    header: "PPL",
    align: "right",
    format: (v) => (typeof v === "number" ? v.toFixed(2) : "–"),
  },
  { key: "note" },
];

Deno.test("toMarkdown pads columns, aligns and escapes", () => {
  assert.equal(
    toMarkdown(rows, columns),
    [
      "| method  | bits |   PPL | note            |",
      "| ------- | ---: | ----: | --------------- |",
      '| rtn     |    4 | 12.35 | say "hi", twice |',
      "| gptq\\|x |    3 | 15.00 | two<br>lines    |",
      "| fp16    |   16 |     – |  padded         |",
      "",
    ].join("\n"),
  );
});

Deno.test("toCsv quotes fields that need it", () => {
  assert.equal(
    toCsv(rows, columns),
    [
      "method,bits,PPL,note",
      'rtn,4,12.35,"say ""hi"", twice"',
      'gptq|x,3,15.00,"two\nlines"',
      'fp16,16,–," padded"',
      "",
    ].join("\n"),
  );
  assert.equal(
    toCsv([{ a: null, b: { x: 1 } }], [{ key: "a" }, { key: "b" }]),
    'a,b\n,"{""x"":1}"\n',
  );
});

Deno.test("valueAt follows dotted paths, preferring a literal key", () => {
  assert.equal(valueAt({ metrics: { ppl: 5 } }, "metrics.ppl"), 5);
  assert.equal(valueAt({ "metrics.ppl": 1, metrics: { ppl: 5 } }, "metrics.ppl"), 1);
  assert.equal(valueAt({ metrics: null }, "metrics.ppl"), undefined);
});

Deno.test("pivot builds bits × rank tables of perplexity", () => {
  const records = [
    { point: { bits: 4, rank: 0 }, metrics: { ppl: 10.5 } },
    { point: { bits: 4, rank: 64 }, metrics: { ppl: 9.25 } },
    { point: { bits: 2, rank: 64 }, metrics: { ppl: 20 } },
    { point: { bits: 2, rank: 0 }, metrics: { ppl: 40 } },
    { point: { bits: 3, rank: 16 }, metrics: { ppl: 15 } },
  ];
  const table = pivot(records, {
    row: "point.bits",
    col: "point.rank",
    value: "metrics.ppl",
    colHeader: (r) => `r=${r}`,
    format: (v) => (v as number).toFixed(1),
  });
  assert.deepEqual(table.rowValues, [2, 3, 4]);
  assert.deepEqual(table.colValues, [0, 16, 64]);
  assert.equal(
    toMarkdown(table.rows, table.columns),
    [
      "| bits |  r=0 | r=16 | r=64 |",
      "| ---- | ---: | ---: | ---: |",
      "| 2    | 40.0 |      | 20.0 |",
      "| 3    |      | 15.0 |      |",
      "| 4    | 10.5 |      |  9.3 |",
      "",
    ].join("\n"),
  );
  // CSV of the raw values: format applies too, empty cells stay empty
  assert.equal(toCsv(table.rows, table.columns).split("\n")[1], "2,40.0,,20.0");
});

Deno.test("pivot keeps first-seen order for strings, and needs reduce for duplicates", () => {
  const records = [
    { m: "gptq", d: "wt2", v: 1 },
    { m: "rtn", d: "c4", v: 2 },
    { m: "gptq", d: "c4", v: 3 },
    { m: "gptq", d: "c4", v: 5 },
  ];
  assert.throws(
    () => pivot(records, { row: "m", col: "d", value: "v" }),
    /2 records for row gptq, column c4/,
  );
  const t = pivot(records, {
    row: (r) => r.m,
    col: "d",
    value: "v",
    reduce: (vs) => (vs as number[]).reduce((a, b) => a + b) / vs.length,
  });
  assert.deepEqual(t.rowValues, ["gptq", "rtn"]);
  assert.deepEqual(t.colValues, ["wt2", "c4"]);
  assert.deepEqual(t.rows, [{ row: "gptq", c0: 1, c1: 4 }, { row: "rtn", c1: 2 }]);
  assert.equal(t.columns[0].header, "row");
});
