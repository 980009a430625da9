/**
 * Experiment `cpu_lowrank`: throughput of the CPU compensation kernels (the CPU half of
 * HCInfer's heterogeneous path) on a decode step's compensation points at real model shapes,
 * against the host memory read bandwidth measured in the same run (the roofline: the kernel
 * reads each factor byte once per step, so bytes / bandwidth is its floor at small batch).
 *
 * @module
 */

import { join } from "node:path";
import { z } from "zod";
import { benchLowRank, libraryVersion, type LowRankBenchResult } from "../ffi/mod.ts";
import { collectProvenance } from "../results/provenance.ts";
import { pivot, toCsv, toMarkdown } from "../results/table.ts";
import type { Experiment } from "./experiment.ts";
import type { SweepRecord } from "./runner.ts";

/** Model shapes by name (hidden, MLP, k/v output size, blocks). */
export const SHAPES = {
  "llama-2-7b": { dModel: 4096, dFf: 11008, kvDim: 4096, nLayers: 32 },
  "llama-2-13b": { dModel: 5120, dFf: 13824, kvDim: 5120, nLayers: 40 },
  "llama-3-8b": { dModel: 4096, dFf: 14336, kvDim: 1024, nLayers: 32 },
  /** One block of Llama-2-7B: about 1 MB of factors per rank 8, for in-cache figures. */
  "llama-2-7b-1block": { dModel: 4096, dFf: 11008, kvDim: 4096, nLayers: 1 },
} as const;

/** The configuration. */
export const CpuLowRankConfigSchema = z.strictObject({
  shapes: z.array(z.enum(Object.keys(SHAPES) as [keyof typeof SHAPES])).min(1),
  ranks: z.array(z.int().positive()).min(1),
  batches: z.array(z.int().positive()).min(1),
  threads: z.array(z.int().positive()).min(1),
  factorTypes: z.array(z.enum(["f32", "bf16", "f16"])).default(["bf16"]),
  simd: z.enum(["best", "scalar", "avx2", "avx512"]).default("best"),
  /** Pin worker i to core firstCore + i (leave core 0 to the GPU feeder and driver). */
  firstCore: z.int().min(-1).default(-1),
  iters: z.int().positive().default(20),
});
/** Parsed config. */
export type CpuLowRankConfig = z.output<typeof CpuLowRankConfigSchema>;

/** One point. */
export interface CpuLowRankPoint {
  shape: keyof typeof SHAPES;
  rank: number;
  batch: number;
  threads: number;
  factorType: "f32" | "bf16" | "f16";
  simd: string;
  firstCore: number;
}

/** A point's metrics: the benchmark's result plus the roofline time. */
export type CpuLowRankMetrics = LowRankBenchResult & {
  /** bytes / host read bandwidth: the floor of a pass at this batch. */
  rooflineSeconds: number;
  /** Σ over points of 2 · batch · rank · (d_in + d_out) / secondsMedian. */
  gflops: number;
};

type Rec = SweepRecord<CpuLowRankPoint, CpuLowRankMetrics>;

function tables(records: Rec[]): string {
  const out: string[] = [];
  for (const shape of new Set(records.map((r) => r.point.shape))) {
    for (const type of new Set(records.map((r) => r.point.factorType))) {
      const rs = records.filter((r) => r.point.shape === shape && r.point.factorType === type);
      if (!rs.length) continue;
      const m = rs[0].metrics;
      // the probe is per thread count: list each (the cells' % use their own)
      const probes = [...new Map(rs.map((r) => [r.point.threads, r.metrics.hostReadGbps]))]
        .sort((a, b) => a[0] - b[0])
        .map(([t, g]) => `${g.toFixed(1)} GB/s with ${t}`)
        .join(", ");
      out.push(
        `### ${shape}, ${type} factors, ${m.simd}: GB/s of factors read (% of the host read ` +
          `bandwidth measured with as many threads: ${probes})\n`,
      );
      const t = pivot(rs, {
        row: (r) => `rank ${r.point.rank}, batch ${r.point.batch}`,
        col: (r) => `${r.point.threads} threads`,
        value: (r) =>
          `${r.metrics.gbps.toFixed(1)} (${(100 * r.metrics.fractionOfHostBandwidth).toFixed(0)}%)`,
        rowHeader: "rank, batch \\ threads",
      });
      out.push(toMarkdown(t.rows, t.columns));
    }
  }
  return out.join("\n");
}

/** The declaration. */
export const cpuLowRank: Experiment<CpuLowRankConfig, CpuLowRankPoint, CpuLowRankMetrics> = {
  name: "cpu_lowrank",
  summary: "CPU low-rank compensation kernels at real shapes vs host memory bandwidth",
  schema: CpuLowRankConfigSchema,
  points: (c) =>
    c.shapes.flatMap((shape) =>
      c.factorTypes.flatMap((factorType) =>
        c.ranks.flatMap((rank) =>
          c.batches.flatMap((batch) =>
            c.threads.map((threads) => ({
              shape,
              rank,
              batch,
              threads,
              factorType,
              simd: c.simd,
              firstCore: c.firstCore,
            }))
          )
        )
      )
    ),
  open: (c) =>
    Promise.resolve({
      provenance: () => collectProvenance({ library: libraryVersion() }),
      close: () => {},
      runPoint: async (p: CpuLowRankPoint) => {
        const s = SHAPES[p.shape];
        const r = await benchLowRank({
          ...s,
          rank: p.rank,
          batch: p.batch,
          nThreads: p.threads,
          factorType: p.factorType,
          simd: p.simd as "best",
          firstCore: p.firstCore,
          iters: c.iters,
        });
        const perBlock = s.dModel + s.dModel + 2 * (s.dModel + s.kvDim) + 2 * s.dModel +
          2 * (s.dModel + s.dFf) + (s.dFf + s.dModel);
        const flops = 2 * p.batch * p.rank * perBlock * s.nLayers;
        return {
          ...r,
          rooflineSeconds: r.bytes / (r.hostReadGbps * 1e9),
          gflops: flops / r.secondsMedian / 1e9,
        };
      },
    }),
  describePoint: (p) =>
    `${p.shape} rank ${p.rank} batch ${p.batch} ${p.threads} threads ${p.factorType}`,
  tables,
  writeReport: async (records, outDir) => {
    await Deno.writeTextFile(join(outDir, "table.md"), tables(records));
    await Deno.writeTextFile(
      join(outDir, "table.csv"),
      toCsv(records, [
        { key: "point.shape", header: "shape" },
        { key: "point.factorType", header: "factors" },
        { key: "point.rank", header: "rank" },
        { key: "point.batch", header: "batch" },
        { key: "point.threads", header: "threads" },
        { key: "metrics.simd", header: "simd" },
        { key: "metrics.bytes", header: "bytes_per_step" },
        { key: "metrics.secondsMedian", header: "seconds_median" },
        { key: "metrics.gbps", header: "gbps" },
        { key: "metrics.hostReadGbps", header: "host_read_gbps" },
        { key: "metrics.fractionOfHostBandwidth", header: "fraction_of_host_bw" },
        { key: "metrics.rooflineSeconds", header: "roofline_seconds" },
        { key: "metrics.gflops", header: "gflops" },
      ]),
    );
  },
  figures: () => Promise.resolve([]),
  reproducibleMetrics: ["bytes", "nPoints"],
};
