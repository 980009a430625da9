/**
 * What a GPU measurement records beside the generic provenance: the library's CUDA build, the
 * source revision the device ran (its copy of the checkout has no usable git metadata, so the
 * device scripts pass `HCINFER_SOURCE_REVISION`), and the engine's tuning switches in force.
 *
 * @module
 */

import { collectProvenance, type ProvenanceOptions } from "../results/provenance.ts";

/** The engine's tuning switches (environment variables; unset = the library's defaults). */
export const GPU_TUNING_VARIABLES = [
  "HCINFER_PDL",
  "HCINFER_FUSE",
  "HCINFER_FUSE_NORM",
  "HCINFER_FUSE_SILU",
  "HCINFER_FUSE_COMP",
  "HCINFER_QGEMV_SIMT",
  "HCINFER_NORM_IN",
  "HCINFER_Q4_EARLY",
  "HCINFER_Q4_KSPLIT",
  "HCINFER_ATTN_SPLIT",
  "HCINFER_ATTN_KV_EARLY",
  "HCINFER_ISOLATE_WORKERS",
  "HCINFER_DECODE_POOL",
  "HCINFER_PREFETCH",
  // diagnostics (a few extra stores and prints per step)
  "HCINFER_HANDOFF_TRACE",
  "HCINFER_CONTROLLER_LOG",
  "HCINFER_KERNEL_STAMPS",
  "HCINFER_SERVE_TRACE",
] as const;

/** GPU provenance fields for a record, given the library's build string (`deviceInfo().build`). */
export function gpuProvenance(build: string): {
  gpuBuild: string;
  sourceRevision: string | null;
  tuning: Record<string, string | null>;
} {
  return {
    gpuBuild: build,
    sourceRevision: Deno.env.get("HCINFER_SOURCE_REVISION") ?? null,
    tuning: Object.fromEntries(GPU_TUNING_VARIABLES.map((k) => [k, Deno.env.get(k) ?? null])),
  };
}

/**
 * A GPU record's whole provenance: {@linkcode collectProvenance} (commit, machine, versions, file
 * hashes) with {@linkcode gpuProvenance} beside it.
 */
export async function collectGpuProvenance(options: ProvenanceOptions, build: string) {
  return { ...(await collectProvenance(options)), ...gpuProvenance(build) };
}
