import assert from "node:assert/strict";
import { join } from "node:path";
import { bitsPerWeight, llamaLinearShapes, readModelShapes } from "./memory.ts";

Deno.test("bits per weight counts weights, fp16 scale + zero per group and rank-r factors", () => {
  const shapes = [{ dIn: 4096, dOut: 4096 }];
  assert.equal(bitsPerWeight({ bits: 4, groupSize: 128, rank: 0 }, shapes), 4.25);
  assert.equal(bitsPerWeight({ bits: 3, groupSize: -1, rank: 0 }, shapes), 3 + 32 / 4096);
  assert.equal(bitsPerWeight({ bits: 3, groupSize: null, rank: 0 }, shapes), 3 + 32 / 4096);
  // rank 64: 64 · (4096 + 4096) · 16 bits over 4096² weights = 0.5 bits
  assert.equal(bitsPerWeight({ bits: 2, groupSize: 64, rank: 64 }, shapes), 2 + 0.5 + 0.5);
  assert.equal(bitsPerWeight({ bits: 16, groupSize: null, rank: 0 }, shapes), 16);
  // weighted by layer size
  const two = [{ dIn: 64, dOut: 64 }, { dIn: 64, dOut: 192 }];
  const expected = (64 * 64 * (3 + 0.5) + 64 * 192 * (3 + 0.5) + 8 * 128 * 16 + 8 * 256 * 16) /
    (64 * 64 + 64 * 192);
  assert.equal(bitsPerWeight({ bits: 3, groupSize: 64, rank: 8 }, two), expected);
});

Deno.test("linear shapes of a LLaMA config (grouped-query attention), and of models/tiny", async () => {
  const shapes = llamaLinearShapes({
    hidden_size: 64,
    intermediate_size: 192,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
  });
  assert.equal(shapes.length, 14);
  assert.deepEqual(shapes.slice(0, 7).map((s) => [s.dOut, s.dIn]), [
    [64, 64],
    [32, 64],
    [32, 64],
    [64, 64],
    [192, 64],
    [192, 64],
    [64, 192],
  ]);
  const tiny = await readModelShapes(join(import.meta.dirname!, "../models/tiny"));
  assert.deepEqual(tiny, shapes);
  assert.throws(
    () => llamaLinearShapes({ hidden_size: 8 } as never),
    /config\.json: intermediate_size missing/,
  );
});
