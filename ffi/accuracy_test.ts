/**
 * Accuracy methods end to end on the tiny checkpoint: calibration statistics, sequential GPTQ
 * against RTN, and activation-aware compensation against plain, by perplexity on the bundled
 * books excerpt. Calibration windows come from ../shared's C4 calibration documents (the
 * bundled WikiText-2 excerpt when ../shared is absent).
 */
import assert from "node:assert/strict";
import {
  BOOKS_HELDOUT_HEAD,
  loadC4Jsonl,
  loadPlainText,
  loadTokenizer,
  sharedDataPath,
  WIKITEXT2_TEST_HEAD,
} from "../datasets/mod.ts";
import { TINY_DIR } from "./_test_utils.ts";
import { sampleCalibrationWindows } from "./calibration.ts";
import { HciError, Status } from "./errors.ts";
import { library } from "./library.ts";
import { Model } from "./model.ts";
import { LinearKind } from "./structs.ts";

try {
  library();
} catch { /* the tests below report it */ }

const SEQ = 512;

async function fixtures(): Promise<{ evalIds: Int32Array; calib: Int32Array }> {
  const tok = await loadTokenizer(TINY_DIR);
  const evalIds = tok.encode(await loadPlainText(BOOKS_HELDOUT_HEAD));
  const c4 = sharedDataPath("c4/calibration.jsonl");
  let text: string;
  try {
    text = await loadC4Jsonl(c4, { maxDocs: 200 });
  } catch {
    console.log(`  (${c4} not readable: calibrating on the bundled WikiText-2 excerpt)`);
    text = await loadPlainText(WIKITEXT2_TEST_HEAD);
  }
  const calib = sampleCalibrationWindows(tok.encode(text), { seqLen: SEQ, nWindows: 16, seed: 0 });
  return { evalIds, calib };
}

async function ppl(model: Model, ids: Int32Array): Promise<number> {
  const r = await model.evalNll(ids, { seqLen: SEQ });
  return Math.exp(r.nllSum / r.nPredicted);
}

Deno.test("calibrate: info, statistics, errors before and after", async () => {
  const { calib } = await fixtures();
  using model = await Model.load(TINY_DIR);
  assert.equal(model.calibration(), null);
  assert.throws(() => model.actSecondMoments(0), /call hci_model_calibrate first/);
  await assert.rejects(
    model.quantize({ bits: 3, groupSize: 32, maxRank: 0, method: "gptq" }),
    (e) => {
      assert.ok(e instanceof HciError);
      assert.equal(e.status, Status.InvalidArgument);
      assert.match(e.message, /call hci_model_calibrate first/);
      return true;
    },
  );
  await assert.rejects(
    model.quantize({ bits: 3, groupSize: 32, maxRank: 4, scaling: "act-diag" }),
    /call hci_model_calibrate first/,
  );
  // deno-lint-ignore no-explicit-any
  assert.throws(() => model.quantize({ bits: 3, groupSize: 32, maxRank: 0, method: "x" as any }));

  const seen: number[] = [];
  await model.calibrate(calib, { seqLen: SEQ }, { onProgress: (d) => seen.push(d) });
  assert.equal(seen.at(-1), 16);
  const info = model.calibration();
  assert.ok(info);
  assert.deepEqual({ ...info, seconds: 0 }, {
    calibrated: true,
    seqLen: SEQ,
    nWindows: 16,
    fullCovariance: true,
    nTokens: 16 * SEQ,
    seconds: 0,
  });
  const d = model.info.dModel;
  const sq = model.actSecondMoments(LinearKind.K);
  const H = model.actCovariance(LinearKind.K);
  assert.equal(sq.length, d);
  assert.equal(H.length, d * d);
  for (let j = 0; j < d; j++) {
    assert.equal(sq[j], H[j * d + j]);
    assert.ok(sq[j] > 0);
  }
  assert.deepEqual(model.actSecondMoments(LinearKind.Q), sq, "q, k, v share one input");
  assert.equal(model.actSecondMoments(LinearKind.Down).length, model.info.dFf);

  await model.calibrate(calib, { seqLen: SEQ, nWindows: 4, fullCovariance: false });
  assert.equal(model.calibration()?.nWindows, 4);
  assert.throws(() => model.actCovariance(0), /without full_covariance/);
  await assert.rejects(
    model.quantize({ bits: 3, groupSize: 32, maxRank: 4, scaling: "act-full" }),
    /full_covariance = 0/,
  );
  await assert.rejects(model.calibrate(calib.subarray(0, 100), { seqLen: SEQ }), HciError);
  assert.equal(model.calibration(), null, "a failed calibration leaves none");
  const reason = new Error("stop");
  await assert.rejects(
    model.calibrate(calib, { seqLen: SEQ }, { signal: AbortSignal.abort(reason) }),
    (e) => e === reason,
  );
  await model.calibrate(calib, { seqLen: 64, nWindows: 2 });
  model.clearCalibration();
  assert.equal(model.calibration(), null);
});

Deno.test("GPTQ 3-bit g32 beats RTN 3-bit g32 on held-out text", async () => {
  const { evalIds, calib } = await fixtures();
  using model = await Model.load(TINY_DIR);
  await model.calibrate(calib, { seqLen: SEQ });
  const fp = await ppl(model, evalIds);
  await model.quantize({ bits: 3, groupSize: 32, maxRank: 0 });
  const rtn = await ppl(model, evalIds);
  const seen: number[] = [];
  await model.quantize({ bits: 3, groupSize: 32, maxRank: 0, method: "gptq" }, {
    onProgress: (d) => seen.push(d),
  });
  assert.equal(seen.at(-1), model.info.nLinears);
  assert.ok(model.linears().every((l) => l.bits === 3 && l.groupSize === 32 && l.maxRank === 0));
  const gptq = await ppl(model, evalIds);
  await model.quantize({ bits: 3, groupSize: 32, maxRank: 0, method: "gptq", actOrder: true });
  const gptqAct = await ppl(model, evalIds);
  console.log(
    `  ppl: fp32 ${fp.toFixed(3)}, RTN ${rtn.toFixed(3)}, GPTQ ${gptq.toFixed(3)}, ` +
      `GPTQ act-order ${gptqAct.toFixed(3)}`,
  );
  assert.ok(gptq < rtn, `GPTQ ${gptq} >= RTN ${rtn}`);
  assert.ok(gptqAct < rtn, `GPTQ act-order ${gptqAct} >= RTN ${rtn}`);
  assert.ok(fp < gptq);

  // cancelling leaves the model at full precision
  const controller = new AbortController();
  const pending = model.quantize({ bits: 3, groupSize: 32, maxRank: 0, method: "gptq" }, {
    signal: controller.signal,
  });
  controller.abort();
  await assert.rejects(pending, (e) => e instanceof DOMException && e.name === "AbortError");
  assert.ok(model.linears().every((l) => l.bits === 0));
});

// Measured on tiny (16 C4 windows of 512, 21 eval windows, RTN 3-bit g32, rank 8): plain 70.52,
// act-diag 70.73, act-full 69.40 (fp32 65.35, no factors 75.19). act-full beats both, but act-diag does not beat plain here:
// tiny's linear inputs are nearly isotropic per channel (E[x²] spans about 2x on the RMSNorm
// outputs), so the diagonal scaling gains little in output error per layer (a few percent; see
// runtime/tests/test_scaling.cpp for the guarantee it does give) and nothing in perplexity.
// That comparison is printed, not asserted.
Deno.test("act-full compensation beats act-diag and plain at rank 8 (RTN 3-bit g32)", async () => {
  const { evalIds, calib } = await fixtures();
  using model = await Model.load(TINY_DIR);
  await model.calibrate(calib, { seqLen: SEQ });
  const out: Record<string, number> = {};
  for (const scaling of ["plain", "act-diag", "act-full"] as const) {
    await model.quantize({ bits: 3, groupSize: 32, maxRank: 8, scaling });
    out[scaling] = await ppl(model, evalIds);
    // singular values of E·S order the factors; relErrActive is the weight-space error of the
    // active prefix (scaled factors need not lower it: they lower the output-space error)
    const sv = model.singularValues(LinearKind.Down);
    assert.equal(sv.length, 8);
    for (let k = 1; k < sv.length; k++) assert.ok(sv[k] <= sv[k - 1]);
    const l = model.linear(LinearKind.Down);
    assert.ok(Number.isFinite(l.relErrActive) && l.relErrActive > 0);
    model.setUniformRank(0);
    assert.equal(model.linear(LinearKind.Down).relErrActive, l.relErrQuant);
    model.setUniformRank(8);
  }
  console.log(
    `  rank-8 ppl: plain ${out.plain.toFixed(3)}, act-diag ${out["act-diag"].toFixed(3)}, ` +
      `act-full ${out["act-full"].toFixed(3)}` +
      (out["act-diag"] <= out.plain ? "" : " (act-diag above plain on tiny, see the comment)"),
  );
  assert.ok(out["act-full"] <= out["act-diag"], JSON.stringify(out));
  assert.ok(out["act-full"] <= out.plain, JSON.stringify(out));
});
