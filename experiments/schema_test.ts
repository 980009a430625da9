import assert from "node:assert/strict";
import { z } from "zod";
import {
  ConfigError,
  DatasetSpecSchema,
  formatPath,
  parseConfig,
  QuantGridSchema,
  QuantSettingSchema,
  SeqLenSchema,
} from "./schema.ts";

const ConfigSchema = z.strictObject({
  grid: QuantGridSchema,
  dataset: DatasetSpecSchema,
  seqLen: SeqLenSchema,
});

const valid = {
  grid: { bits: [2, 3, 4, 16], groupSize: [128, -1], rank: [0, 16] },
  dataset: { name: "wikitext2", path: "../shared/data/wikitext-2/wiki.test.raw", maxWindows: 8 },
  seqLen: 512,
};

Deno.test("parseConfig returns the typed value of a valid config", () => {
  const config = parseConfig(ConfigSchema, valid, "experiments/demo.ts");
  assert.deepEqual(config, valid);
  assert.deepEqual(parseConfig(QuantSettingSchema, { bits: 16, groupSize: -1, rank: 0 }, "x"), {
    bits: 16,
    groupSize: -1,
    rank: 0,
  });
});

Deno.test("parseConfig names the source and the failing key path", () => {
  const bad = { ...valid, grid: { ...valid.grid, bits: [2, 3, 5] } };
  assert.throws(() => parseConfig(ConfigSchema, bad, "experiments/demo.ts"), {
    name: "ConfigError",
    message:
      "invalid experiment config in experiments/demo.ts: grid.bits[2]: expected one of 2,3,4,8,16, got 5",
  });
});

Deno.test("parseConfig lists every failing key path", () => {
  const bad = {
    grid: { bits: [], groupSize: [100], rank: [-1, 2.5], ranks: [1] },
    dataset: { name: "", path: "x.txt", format: "csv", maxWindows: 0 },
  };
  try {
    parseConfig(ConfigSchema, bad, "command line");
    assert.fail("expected a ConfigError");
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    assert.ok(error.message.startsWith("invalid experiment config in command line: "));
    assert.deepEqual(error.issues.toSorted(), [
      'dataset.format: expected one of "text","c4-jsonl", got "csv"',
      "dataset.maxWindows: value must be > 0, got 0",
      "dataset.name: string length must be >= 1, got 0",
      "grid.bits: length must be >= 1, got 0",
      "grid.groupSize[0]: expected one of 32,64,128,-1, got 100",
      "grid.rank[0]: value must be >= 0, got -1",
      "grid.rank[1]: expected int, got 2.5",
      "grid.ranks: unknown key",
      "seqLen: missing (expected number)",
    ]);
  }
});

Deno.test("formatPath writes paths as in code", () => {
  assert.equal(formatPath(["grid", "bits", 2]), "grid.bits[2]");
  assert.equal(formatPath([]), "(config)");
  assert.equal(formatPath(["a-b", 0, "c"]), '["a-b"][0].c');
});
