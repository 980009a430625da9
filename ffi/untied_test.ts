// The untied-embedding path (a separate lm_head.weight) against the tied one: a copy of the tiny
// checkpoint whose output head is stored explicitly must score exactly as the original.
import assert from "node:assert/strict";
import { join } from "node:path";
import { Model } from "./mod.ts";

const TINY = new URL("../models/tiny", import.meta.url).pathname;

/** Rewrites a safetensors file with one more tensor, a copy of `from` named `to`. */
function withCopiedTensor(bytes: Uint8Array, from: string, to: string): Uint8Array {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  const data = bytes.subarray(8 + n);
  const [b, e] = header[from].data_offsets as [number, number];
  header[to] = { ...header[from], data_offsets: [data.length, data.length + (e - b)] };
  const h = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + data.length + (e - b));
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  out.set(data.subarray(b, e), 8 + h.length + data.length);
  return out;
}

Deno.test("untied lm_head.weight gives the same scores as the tied checkpoint", async () => {
  const dir = await Deno.makeTempDir({ prefix: "hci_untied_" });
  try {
    const st = await Deno.readFile(join(TINY, "model.safetensors"));
    await Deno.writeFile(
      join(dir, "model.safetensors"),
      withCopiedTensor(st, "model.embed_tokens.weight", "lm_head.weight"),
    );
    const config = JSON.parse(await Deno.readTextFile(join(TINY, "config.json")));
    config.tie_word_embeddings = false;
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(config));
    using tied = await Model.load(TINY);
    using untied = await Model.load(dir);
    assert.equal(untied.info.tiedEmbeddings, false);
    assert.equal(untied.info.nParams, tied.info.nParams + 8192 * 64);
    const tokens = Int32Array.from({ length: 256 }, (_, i) => (i * 7919 + 3) % 8192);
    const a = await tied.evalNll(tokens, { seqLen: 128 });
    const b = await untied.evalNll(tokens, { seqLen: 128 });
    assert.equal(b.nllSum, a.nllSum);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
