import assert from "node:assert/strict";
import { collectGpuProvenance, GPU_TUNING_VARIABLES, gpuProvenance } from "./gpu_provenance.ts";

Deno.test("gpuProvenance records the build, the source revision and every tuning switch", () => {
  Deno.env.set("HCINFER_SOURCE_REVISION", "abc1234");
  Deno.env.set("HCINFER_PDL", "1");
  Deno.env.delete("HCINFER_FUSE");
  try {
    const p = gpuProvenance("CUDA 13.0, archs sm 90");
    assert.equal(p.gpuBuild, "CUDA 13.0, archs sm 90");
    assert.equal(p.sourceRevision, "abc1234");
    assert.deepEqual(Object.keys(p.tuning), [...GPU_TUNING_VARIABLES]);
    assert.equal(p.tuning.HCINFER_PDL, "1");
    assert.equal(p.tuning.HCINFER_FUSE, null);
  } finally {
    Deno.env.delete("HCINFER_SOURCE_REVISION");
    Deno.env.delete("HCINFER_PDL");
  }
});

Deno.test("collectGpuProvenance: the generic provenance and the GPU fields in one record", async () => {
  const p = await collectGpuProvenance({ seed: 7 }, "CUDA 13.0, archs sm 90");
  assert.equal(p.gpuBuild, "CUDA 13.0, archs sm 90");
  assert.equal(p.seed, 7);
  assert.ok("git" in p && "deno" in p);
  assert.deepEqual(Object.keys(p.tuning), [...GPU_TUNING_VARIABLES]);
});
