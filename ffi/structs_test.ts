import assert from "node:assert/strict";
import {
  CALIB_INFO_SIZE,
  CALIB_PARAMS_SIZE,
  decodeCalibInfo,
  decodeCalibParams,
  decodeEvalParams,
  decodeEvalResult,
  decodeLinearInfo,
  decodeModelInfo,
  decodeModelParams,
  decodeQuantExParams,
  decodeQuantParams,
  decodeSessionParams,
  encodeCalibInfo,
  encodeCalibParams,
  encodeEvalParams,
  encodeEvalResult,
  encodeLinearInfo,
  encodeModelInfo,
  encodeModelParams,
  encodeQuantExParams,
  encodeQuantParams,
  encodeSessionParams,
  EVAL_PARAMS_SIZE,
  EVAL_RESULT_SIZE,
  LINEAR_INFO_SIZE,
  type LinearInfo,
  MODEL_INFO_SIZE,
  MODEL_PARAMS_SIZE,
  type ModelInfo,
  QUANT_EX_PARAMS_SIZE,
  QUANT_PARAMS_SIZE,
  QuantMethod,
  Scaling,
  SESSION_PARAMS_SIZE,
} from "./structs.ts";

Deno.test("struct sizes match the C layout on x86-64", () => {
  assert.equal(MODEL_PARAMS_SIZE, 8);
  assert.equal(MODEL_INFO_SIZE, 64);
  assert.equal(QUANT_PARAMS_SIZE, 24);
  assert.equal(LINEAR_INFO_SIZE, 48);
  assert.equal(EVAL_PARAMS_SIZE, 16);
  assert.equal(EVAL_RESULT_SIZE, 32);
  assert.equal(SESSION_PARAMS_SIZE, 8);
  assert.equal(QUANT_EX_PARAMS_SIZE, 56);
  assert.equal(CALIB_PARAMS_SIZE, 16);
  assert.equal(CALIB_INFO_SIZE, 32);
});

Deno.test("hci_quant_ex_params: fields at their C offsets, round trip", () => {
  const p = {
    bits: 3,
    groupSize: 32,
    maxRank: 8,
    kindMask: 0x7f,
    layerBegin: 1,
    layerEnd: -1,
    method: QuantMethod.Gptq,
    actOrder: true,
    dampPercent: 0.025,
    scaling: Scaling.ActFull,
    groupsFromBlockStart: true,
    eigFloor: 1e-7,
  };
  const bytes = encodeQuantExParams(p);
  assert.equal(bytes.byteLength, 56);
  const dv = new DataView(bytes.buffer);
  assert.equal(dv.getInt32(0, true), 3);
  assert.equal(dv.getUint32(12, true), 0x7f);
  assert.equal(dv.getInt32(20, true), -1);
  assert.equal(dv.getInt32(24, true), 1);
  assert.equal(dv.getInt32(28, true), 1);
  assert.equal(dv.getFloat64(32, true), 0.025);
  assert.equal(dv.getInt32(40, true), 2);
  assert.equal(dv.getInt32(44, true), 1);
  assert.equal(dv.getFloat64(48, true), 1e-7);
  assert.deepEqual(decodeQuantExParams(bytes), p);
  assert.throws(() => encodeQuantExParams({ ...p, method: 0.5 as QuantMethod }), RangeError);
  // deno-lint-ignore no-explicit-any
  assert.throws(() => encodeQuantExParams({ ...p, actOrder: 1 as any }), TypeError);
});

Deno.test("hci_calib_params and hci_calib_info: round trip", () => {
  const p = { seqLen: 512, nWindows: 128, fullCovariance: false, nThreads: 2 };
  const pb = encodeCalibParams(p);
  assert.equal(new DataView(pb.buffer).getInt32(8, true), 0);
  assert.deepEqual(decodeCalibParams(pb), p);
  const info = {
    calibrated: true,
    seqLen: 512,
    nWindows: 128,
    fullCovariance: true,
    nTokens: 65536,
    seconds: 1.5,
  };
  const ib = encodeCalibInfo(info);
  const dv = new DataView(ib.buffer);
  assert.equal(dv.getBigInt64(16, true), 65536n);
  assert.equal(dv.getFloat64(24, true), 1.5);
  assert.deepEqual(decodeCalibInfo(ib), info);
});

Deno.test("hci_model_info: fields at their C offsets, round trip", () => {
  const info: ModelInfo = {
    nLayers: 1,
    dModel: 2,
    nHeads: 3,
    nKvHeads: 4,
    headDim: 5,
    dFf: 6,
    vocabSize: 7,
    maxPositions: 8,
    tiedEmbeddings: true,
    nLinears: 10,
    nParams: 2 ** 40 + 3,
    ropeTheta: 10000.5,
    rmsNormEps: 1e-6,
  };
  const bytes = encodeModelInfo(info);
  assert.equal(bytes.byteLength, 64);
  const dv = new DataView(bytes.buffer);
  for (let i = 0; i < 10; i++) assert.equal(dv.getInt32(4 * i, true), i === 8 ? 1 : i + 1);
  assert.equal(dv.getBigInt64(40, true), 2n ** 40n + 3n);
  assert.equal(dv.getFloat64(48, true), 10000.5);
  assert.equal(dv.getFloat64(56, true), 1e-6);
  assert.deepEqual(decodeModelInfo(bytes), info);
});

Deno.test("hci_linear_info: 8 int32 then 2 doubles, round trip", () => {
  const l: LinearInfo = {
    layer: 1,
    kind: 6,
    dOut: 64,
    dIn: 192,
    bits: 4,
    groupSize: -1,
    maxRank: 16,
    rank: 8,
    relErrQuant: 0.25,
    relErrActive: 0.125,
  };
  const bytes = encodeLinearInfo(l);
  const dv = new DataView(bytes.buffer);
  assert.equal(dv.getInt32(20, true), -1);
  assert.equal(dv.getInt32(28, true), 8);
  assert.equal(dv.getFloat64(32, true), 0.25);
  assert.equal(dv.getFloat64(40, true), 0.125);
  assert.deepEqual(decodeLinearInfo(bytes), l);
});

Deno.test("hci_quant_params: kind_mask is unsigned, round trip", () => {
  const p = {
    bits: 4,
    groupSize: 64,
    maxRank: 16,
    kindMask: 0xffff_ffff,
    layerBegin: 0,
    layerEnd: -1,
  };
  const bytes = encodeQuantParams(p);
  const dv = new DataView(bytes.buffer);
  assert.equal(dv.getUint32(12, true), 0xffff_ffff);
  assert.equal(dv.getInt32(20, true), -1);
  assert.deepEqual(decodeQuantParams(bytes), p);
  assert.throws(() => encodeQuantParams({ ...p, kindMask: -1 }), RangeError);
  assert.throws(() => encodeQuantParams({ ...p, bits: 1.5 }), RangeError);
});

Deno.test("hci_eval_result: double, int64, int64, double, round trip", () => {
  const r = { nllSum: 1234.5, nPredicted: 511 * 813, nWindows: 813, seconds: 0.25 };
  const bytes = encodeEvalResult(r);
  const dv = new DataView(bytes.buffer);
  assert.equal(dv.getBigInt64(8, true), BigInt(511 * 813));
  assert.equal(dv.getBigInt64(16, true), 813n);
  assert.equal(dv.getFloat64(24, true), 0.25);
  assert.deepEqual(decodeEvalResult(bytes), r);
});

Deno.test("small params structs round trip", () => {
  const m = { nThreads: 4, reserved: 0 };
  assert.deepEqual(decodeModelParams(encodeModelParams(m)), m);
  const e = { seqLen: 512, maxWindows: 3, nThreads: 2, reserved: 0 };
  assert.deepEqual(decodeEvalParams(encodeEvalParams(e)), e);
  const s = { nCtx: 256, nThreads: 1 };
  assert.deepEqual(decodeSessionParams(encodeSessionParams(s)), s);
});

Deno.test("decoders reject short buffers", () => {
  assert.throws(() => decodeModelInfo(new Uint8Array(63)), /hci_model_info: expected 64 bytes/);
});
