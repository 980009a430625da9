import assert from "node:assert/strict";
import { sampleCalibrationWindows, seededRandom } from "./calibration.ts";

Deno.test("seededRandom: deterministic, in [0, 1)", () => {
  const a = seededRandom(42), b = seededRandom(42), c = seededRandom(43);
  const xs = Array.from({ length: 1000 }, () => a());
  assert.deepEqual(xs, Array.from({ length: 1000 }, () => b()));
  assert.notDeepEqual(xs.slice(0, 10), Array.from({ length: 10 }, () => c()));
  assert.ok(xs.every((x) => x >= 0 && x < 1));
  const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
  assert.ok(Math.abs(mean - 0.5) < 0.05, `mean ${mean}`);
});

Deno.test("sampleCalibrationWindows: windows are runs of the corpus, reproducible by seed", () => {
  const corpus = Int32Array.from({ length: 1000 }, (_, i) => i);
  const w = sampleCalibrationWindows(corpus, { seqLen: 64, nWindows: 20, seed: 7 });
  assert.equal(w.length, 64 * 20);
  const starts = new Set<number>();
  for (let k = 0; k < 20; k++) {
    const start = w[k * 64];
    starts.add(start);
    assert.ok(start >= 0 && start <= 1000 - 64);
    for (let i = 0; i < 64; i++) assert.equal(w[k * 64 + i], start + i);
  }
  assert.ok(starts.size > 10, "starts are spread out");
  assert.deepEqual(w, sampleCalibrationWindows(corpus, { seqLen: 64, nWindows: 20, seed: 7 }));
  assert.notDeepEqual(w, sampleCalibrationWindows(corpus, { seqLen: 64, nWindows: 20, seed: 8 }));
  // a corpus of exactly one window
  assert.deepEqual(
    Array.from(sampleCalibrationWindows(corpus.subarray(0, 8), { seqLen: 8, nWindows: 2 })),
    [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7],
  );
  assert.throws(() => sampleCalibrationWindows(corpus, { seqLen: 2000, nWindows: 1 }), RangeError);
  assert.throws(() => sampleCalibrationWindows(corpus, { seqLen: 0, nWindows: 1 }), RangeError);
  assert.throws(() => sampleCalibrationWindows(corpus, { seqLen: 8, nWindows: 1.5 }), RangeError);
  assert.throws(
    () => sampleCalibrationWindows(corpus, { seqLen: 8, nWindows: 1, seed: 0.5 }),
    RangeError,
  );
});
