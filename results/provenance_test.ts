import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { collectProvenance, hashFile } from "./provenance.ts";

Deno.test("collectProvenance records software, machine, files, seed and time", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = join(dir, "model.bin");
    const bytes = new Uint8Array(3 * 1024 * 1024 + 7).map((_, i) => (i * 31) & 0xff);
    await Deno.writeFile(file, bytes);
    await Deno.mkdir(join(dir, "sub"));
    await Deno.writeTextFile(join(dir, "sub", "b.txt"), "b");
    await Deno.writeTextFile(join(dir, "sub", "a.txt"), "a");
    const p = await collectProvenance({
      files: [file, join(dir, "sub")],
      seed: 7,
      library: "hcinfer 0.0.0 (test)",
      cwd: dir, // not a git repository
    });
    assert.deepEqual(p.files, {
      [file]: createHash("sha256").update(bytes).digest("hex"),
      [join(dir, "sub", "a.txt")]: createHash("sha256").update("a").digest("hex"),
      [join(dir, "sub", "b.txt")]: createHash("sha256").update("b").digest("hex"),
    });
    assert.deepEqual(p.git, { commit: null, dirty: null });
    assert.equal(p.seed, 7);
    assert.equal(p.library, "hcinfer 0.0.0 (test)");
    assert.equal(p.deno, Deno.version.deno);
    assert.equal(p.typescript, Deno.version.typescript);
    assert.ok(p.os.startsWith(Deno.build.os));
    assert.equal(p.arch, Deno.build.arch);
    assert.ok(p.cores === null || p.cores > 0);
    assert.ok(p.memory === null || p.memory > 0);
    assert.ok(p.gpu === null || (Array.isArray(p.gpu) && p.gpu.every((g) => g.name)));
    if (Deno.build.os === "linux") assert.equal(typeof p.cpu, "string");
    assert.ok(Math.abs(Date.parse(p.time) - Date.now()) < 60_000);
    JSON.stringify(p); // serialisable
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("collectProvenance in this repository records git state without throwing", async () => {
  const p = await collectProvenance();
  assert.ok(p.git.commit === null || /^[0-9a-f]{40}$/.test(p.git.commit));
  assert.ok(p.git.dirty === null || typeof p.git.dirty === "boolean");
  assert.deepEqual(p.files, {});
  assert.equal(p.seed, null);
  assert.equal(p.library, null);
});

Deno.test("hashFile caches per (path, size, mtime) and notices a changed file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = join(dir, "f.txt");
    await Deno.writeTextFile(file, "one");
    const h1 = await hashFile(file);
    assert.equal(h1, createHash("sha256").update("one").digest("hex"));
    assert.equal(await hashFile(file), h1);
    await Deno.writeTextFile(file, "two!");
    assert.equal(await hashFile(file), createHash("sha256").update("two!").digest("hex"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a missing file gives an error naming it", async () => {
  await assert.rejects(
    hashFile("/nonexistent/model.safetensors"),
    /\/nonexistent\/model\.safetensors.*does not exist/,
  );
  await assert.rejects(
    collectProvenance({ files: ["/nonexistent/data.txt"] }),
    /\/nonexistent\/data\.txt.*does not exist/,
  );
});
