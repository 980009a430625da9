import assert from "node:assert/strict";
import { expandGrid } from "./grid.ts";

Deno.test("expandGrid is the cartesian product, first key outermost", () => {
  assert.deepEqual(expandGrid({ bits: [2, 3], rank: [0, 16, 64] }), [
    { bits: 2, rank: 0 },
    { bits: 2, rank: 16 },
    { bits: 2, rank: 64 },
    { bits: 3, rank: 0 },
    { bits: 3, rank: 16 },
    { bits: 3, rank: 64 },
  ]);
  const points = expandGrid({ a: [1], b: ["x", "y"], c: [true, false] });
  assert.equal(points.length, 4);
  assert.deepEqual(points.map((p) => Object.keys(p)), Array(4).fill(["a", "b", "c"]));
  assert.deepEqual(points[1], { a: 1, b: "x", c: false });
});

Deno.test("expandGrid edge cases", () => {
  assert.deepEqual(expandGrid({}), [{}]);
  assert.deepEqual(expandGrid({ a: [1, 2], b: [] }), []);
  // deno-lint-ignore no-explicit-any
  assert.throws(() => expandGrid({ a: 3 as any }), /axis "a" must be an array/);
});
