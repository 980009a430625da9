import assert from "node:assert/strict";
import { denoEval } from "./_test_utils.ts";
import { statusName } from "./errors.ts";
import { ABI_VERSION, library, libraryPath, libraryStatusName, libraryVersion } from "./library.ts";
import {
  decodeCalibParams,
  decodeEvalParams,
  decodeModelParams,
  decodeQuantExParams,
  decodeQuantParams,
  decodeSessionParams,
  LINEAR_ALL,
  QuantMethod,
  Scaling,
} from "./structs.ts";

// Open once outside any test so that the resource sanitizer does not count the library handle.
try {
  library();
} catch { /* the tests below report it */ }

const LIBRARY_URL = new URL("./library.ts", import.meta.url).href;

Deno.test("library opens and reports its version", () => {
  assert.equal(library(), library());
  assert.equal(library().path, libraryPath());
  assert.equal(library().symbols.hci_abi_version(), ABI_VERSION);
  const version = libraryVersion();
  assert.ok(version.length > 0, "hci_version() is empty");
});

Deno.test("hci_status_name agrees with the binding's table", () => {
  for (let s = 0; s <= 8; s++) assert.equal(libraryStatusName(s), statusName(s));
});

Deno.test("default params come back by value with the C sizes and documented defaults", () => {
  const s = library().symbols;
  const model = s.hci_model_default_params();
  assert.equal(model.byteLength, 8);
  assert.deepEqual(decodeModelParams(model), { nThreads: 0, reserved: 0 });
  const quant = s.hci_quant_default_params();
  assert.equal(quant.byteLength, 24);
  const q = decodeQuantParams(quant);
  assert.equal(q.kindMask, LINEAR_ALL);
  assert.equal(q.layerBegin, 0);
  assert.equal(q.layerEnd, -1);
  const evalParams = s.hci_eval_default_params();
  assert.equal(evalParams.byteLength, 16);
  assert.equal(decodeEvalParams(evalParams).reserved, 0);
  const session = s.hci_session_default_params();
  assert.equal(session.byteLength, 8);
  assert.deepEqual(decodeSessionParams(session), { nCtx: 0, nThreads: 0 });
  const quantEx = s.hci_quant_ex_default_params();
  assert.equal(quantEx.byteLength, 56);
  assert.deepEqual(decodeQuantExParams(quantEx), {
    bits: 4,
    groupSize: 128,
    maxRank: 0,
    kindMask: LINEAR_ALL,
    layerBegin: 0,
    layerEnd: -1,
    method: QuantMethod.Rtn,
    actOrder: false,
    dampPercent: 0.01,
    scaling: Scaling.Plain,
    groupsFromBlockStart: false,
    eigFloor: 1e-6,
  });
  const calib = s.hci_calib_default_params();
  assert.equal(calib.byteLength, 16);
  assert.deepEqual(decodeCalibParams(calib), {
    seqLen: 512,
    nWindows: 0,
    fullCovariance: true,
    nThreads: 0,
  });
});

Deno.test("HCINFER_LIB pointing at a missing file says where and how to build", async () => {
  const missing = "/nonexistent/dir/libhcinfer.so";
  const r = await denoEval(
    `import { library } from ${JSON.stringify(LIBRARY_URL)};
     try { library(); console.log("opened"); } catch (e) { console.log(e.message); }`,
    { HCINFER_LIB: missing },
    ["-A"],
  );
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /library not found at \/nonexistent\/dir\/libhcinfer\.so/);
  assert.match(r.stdout, /from HCINFER_LIB/);
  assert.match(r.stdout, /bash scripts\/setup\.sh/);
  assert.match(r.stdout, /set HCINFER_LIB/);
});

async function hasCompiler(): Promise<boolean> {
  try {
    return (await new Deno.Command("cc", { args: ["--version"], stdout: "null", stderr: "null" })
      .output()).success;
  } catch {
    return false;
  }
}

Deno.test({
  name: "a library with another ABI version is refused clearly",
  ignore: !(await hasCompiler()),
  fn: async () => {
    const dir = await Deno.makeTempDir();
    try {
      await Deno.writeTextFile(`${dir}/fake.c`, "int hci_abi_version(void) { return 99; }\n");
      const cc = await new Deno.Command("cc", {
        args: ["-shared", "-fPIC", "-o", `${dir}/libfake.so`, `${dir}/fake.c`],
      }).output();
      assert.ok(cc.success, new TextDecoder().decode(cc.stderr));
      const r = await denoEval(
        `import { library } from ${JSON.stringify(LIBRARY_URL)};
         try { library(); console.log("opened"); } catch (e) { console.log(e.message); }`,
        { HCINFER_LIB: `${dir}/libfake.so` },
        ["-A"],
      );
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /has ABI version 99, but these bindings need 1/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
