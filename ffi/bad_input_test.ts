// Bad checkpoints and data through the whole stack: each gives one clear error naming the file
// and the problem, as an HciError (never a crash across FFI), and the CLI prints it as one line.
import assert from "node:assert/strict";
import { join } from "node:path";
import { HciError, Model, Status } from "./mod.ts";

const TINY = new URL("../models/tiny", import.meta.url).pathname;

async function tinyCopy(edit?: (config: string) => string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "hci_bad_" });
  for (const f of ["model.safetensors", "tokenizer.json", "tokenizer_config.json"]) {
    await Deno.copyFile(join(TINY, f), join(dir, f));
  }
  const config = await Deno.readTextFile(join(TINY, "config.json"));
  await Deno.writeTextFile(join(dir, "config.json"), edit ? edit(config) : config);
  return dir;
}

function safetensors(header: object, data: Uint8Array): Uint8Array {
  const h = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

async function loadFails(dir: string, status: Status, ...needles: RegExp[]) {
  await assert.rejects(Model.load(dir), (e: unknown) => {
    assert.ok(e instanceof HciError, `expected HciError, got ${e}`);
    assert.equal(e.status, status, e.message);
    for (const n of needles) assert.match(e.message, n);
    return true;
  });
}

Deno.test("truncated safetensors file", async () => {
  const dir = await tinyCopy();
  const path = join(dir, "model.safetensors");
  const bytes = await Deno.readFile(path);
  await Deno.writeFile(path, bytes.subarray(0, bytes.length - 1000));
  await loadFails(
    dir,
    Status.Format,
    /model\.safetensors: tensor '.*': data_offsets .* out of range/,
  );
  await Deno.writeFile(path, bytes.subarray(0, 100));
  await loadFails(dir, Status.Format, /model\.safetensors: truncated safetensors file/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("header with out-of-range offsets", async () => {
  const dir = await tinyCopy();
  await Deno.writeFile(
    join(dir, "model.safetensors"),
    safetensors(
      { "model.norm.weight": { dtype: "F32", shape: [64], data_offsets: [0, 1 << 30] } },
      new Uint8Array(256),
    ),
  );
  await loadFails(
    dir,
    Status.Format,
    /tensor 'model\.norm\.weight': data_offsets \[0, 1073741824\] out of range/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("missing shard", async () => {
  const dir = await tinyCopy();
  await Deno.rename(join(dir, "model.safetensors"), join(dir, "model-00001-of-00002.safetensors"));
  const weightMap: Record<string, string> = {
    "lm_head.weight": "model-00002-of-00002.safetensors",
  };
  await Deno.writeTextFile(
    join(dir, "model.safetensors.index.json"),
    JSON.stringify({ metadata: {}, weight_map: weightMap }),
  );
  await loadFails(
    dir,
    Status.Io,
    /model-00002-of-00002\.safetensors: shard listed in .*index\.json is missing/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("unknown model_type", async () => {
  const dir = await tinyCopy((c) => c.replace('"llama"', '"rwkv"'));
  await loadFails(dir, Status.Unsupported, /config\.json: model_type 'rwkv' is not supported/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("config / weight shape mismatch", async () => {
  const dir = await tinyCopy((c) =>
    c.replace('"num_key_value_heads": 2', '"num_key_value_heads": 4')
  );
  await loadFails(
    dir,
    Status.Format,
    /model\.safetensors: tensor 'model\.layers\.0\.self_attn\.k_proj\.weight' has shape \[32, 64\] but config\.json implies \[64, 64\]/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("corrupt config.json", async () => {
  const dir = await tinyCopy((c) => c.slice(0, 40));
  await loadFails(dir, Status.Format, /config\.json: invalid JSON at byte/);
  await Deno.remove(dir, { recursive: true });
});

async function cli(script: string, args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(`../cli/${script}`, import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test("CLI reports bad input as one line naming the file", async () => {
  const dir = await tinyCopy((c) => c.replace('"llama"', '"rwkv"'));
  const text = join(dir, "text.txt");
  await Deno.writeTextFile(text, "Some text. ".repeat(200));
  let r = await cli("eval.ts", ["--model", dir, "--data", text, "--seq", "64"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^error: .*config\.json: model_type 'rwkv' is not supported/);
  assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  r = await cli("eval.ts", ["--model", TINY, "--data", join(dir, "missing.txt")]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /missing\.txt does not exist/);
  r = await cli("eval.ts", ["--model", TINY, "--data", text, "--bits", "5"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--bits/);
  await Deno.remove(dir, { recursive: true });
});
