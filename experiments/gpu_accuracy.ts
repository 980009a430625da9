/**
 * GPU accuracy checks (issue #4): the GPU forward against the CPU float32 reference on a real
 * checkpoint and text.
 *
 * - `ppl` points: perplexity (GPTQ protocol) on the CPU and on the GPU for one weight format:
 *   `fp16` / `bf16` (CPU float32 unquantized vs GPU float weights), `w<b>g<g>` (CPU RTN backbone
 *   vs GPU packed codes), `w<b>g<g>-r<r>` (CPU backbone + rank-r compensation vs GPU packed +
 *   GPU compensation). Passes when |ppl_gpu / ppl_cpu − 1| < 1e-3.
 * - `greedy` points: greedy continuations of the checkpoint's reference prompts
 *   (reference.json, computed by transformers in float32) on the GPU (fp16), compared with the
 *   reference and with the CPU; where they differ, the CPU logit margin at the first difference
 *   says whether the fp16 rounding could flip it.
 *
 * @module
 */

import { join } from "node:path";
import { loadTokenizer } from "../datasets/mod.ts";
import { deviceInfo, GpuModel } from "../ffi/gpu.ts";
import { libraryVersion, Model, Session } from "../ffi/mod.ts";
import { collectGpuProvenance } from "./gpu_provenance.ts";
import { readRecords } from "../results/store.ts";
import { type Column, toMarkdown } from "../results/table.ts";
import { tokenizeCorpus } from "./perplexity_eval.ts";
import { runSweep, type SweepRecord } from "./runner.ts";

/** Experiment name of the records. */
export const EXPERIMENT = "gpu_accuracy";

/** Options of {@linkcode runGpuAccuracy}. */
export interface GpuAccuracyOptions {
  /** Checkpoint folder (with reference.json for the greedy check). */
  model: string;
  /** Text for perplexity. */
  data: string;
  /** Window length (default 512). */
  seqLen?: number;
  /** Windows scored (default 64; 0 = all). */
  maxWindows?: number;
  /** Formats (default fp16, bf16, w4g128, w4g128-r16, w3g128, w8g128). */
  formats?: string[];
  /** Result folder (results.jsonl, table.md). */
  outDir: string;
}

/** One point. */
export interface AccuracyPoint {
  check: "ppl" | "greedy";
  model: string;
  data: string | null;
  format: string;
  seqLen: number | null;
  maxWindows: number | null;
  prompt: number | null;
}

/** What a point measures. */
export interface AccuracyMetrics {
  pass: boolean;
  cpuPpl?: number;
  gpuPpl?: number;
  relDiff?: number;
  windows?: number;
  cpuSeconds?: number;
  gpuSeconds?: number;
  reference?: number[];
  cpu?: number[];
  gpu?: number[];
  matchesReference?: number;
  matchesCpu?: number;
  /** CPU logit margin (top-1 minus the GPU's choice) at the first GPU/CPU difference. */
  marginAtFirstDiff?: number | null;
  device: string;
}

function parse(
  format: string,
): { bits: number; group: number; rank: number; dtype: "fp16" | "bf16" } {
  if (format === "fp16" || format === "bf16") return { bits: 0, group: 0, rank: 0, dtype: format };
  const m = /^w(\d)g(-?\d+)(?:-r(\d+))?$/.exec(format);
  if (!m) throw new Error(`gpu_accuracy: bad format '${format}'`);
  return { bits: Number(m[1]), group: Number(m[2]), rank: Number(m[3] ?? 0), dtype: "fp16" };
}

/** Runs (or resumes) the checks and writes table.md; returns the records. */
export async function runGpuAccuracy(
  o: GpuAccuracyOptions,
): Promise<SweepRecord<AccuracyPoint, AccuracyMetrics>[]> {
  const seqLen = o.seqLen ?? 512;
  const maxWindows = o.maxWindows ?? 64;
  const formats = o.formats ?? ["fp16", "bf16", "w4g128", "w4g128-r16", "w3g128", "w8g128"];
  const points: AccuracyPoint[] = formats.map((format) => ({
    check: "ppl",
    model: o.model,
    data: o.data,
    format,
    seqLen,
    maxWindows,
    prompt: null,
  }));
  let prompts: { ids: number[]; greedy_ids: number[] }[] = [];
  try {
    prompts = JSON.parse(await Deno.readTextFile(join(o.model, "reference.json"))).prompts ?? [];
  } catch { /* no reference prompts */ }
  prompts.forEach((_, i) =>
    points.push({
      check: "greedy",
      model: o.model,
      data: null,
      format: "fp16",
      seqLen: null,
      maxWindows: null,
      prompt: i,
    })
  );
  const dev = deviceInfo();
  if (!dev.available) throw new Error(`gpu_accuracy needs a GPU: ${dev.reason}`);
  await Deno.mkdir(o.outDir, { recursive: true });
  const outPath = join(o.outDir, "results.jsonl");
  const tokenizer = await loadTokenizer(o.model);
  let model: Model | null = null;
  let quant = "";
  try {
    await runSweep<AccuracyPoint, AccuracyMetrics>({
      experiment: EXPERIMENT,
      points,
      outPath,
      provenance: () =>
        collectGpuProvenance({ files: [o.model, o.data], library: libraryVersion() }, dev.build),
      runPoint: async (p) => {
        model ??= await Model.load(o.model);
        const m = model;
        if (p.check === "ppl") {
          const f = parse(p.format);
          const want = f.bits ? `${f.bits}/${f.group}/${f.rank}` : "fp";
          if (quant !== want) {
            await m.quantize({ bits: f.bits, groupSize: f.bits ? f.group : -1, maxRank: f.rank });
            quant = want;
          }
          const tokens = await tokenizeCorpus(tokenizer, { path: o.data });
          const t0 = performance.now();
          const cpu = await m.evalNll(tokens, { seqLen, maxWindows });
          const t1 = performance.now();
          using g = await GpuModel.fromModel(m, {
            dtype: f.dtype,
            weights: f.bits ? "packed" : "current",
            placement: f.rank > 0 ? "gpu" : "none",
            nCtx: seqLen,
          });
          const t2 = performance.now();
          const gpu = await g.evalNll(tokens, { seqLen, maxWindows });
          const t3 = performance.now();
          const cpuPpl = Math.exp(cpu.nllSum / cpu.nPredicted);
          const gpuPpl = Math.exp(gpu.nllSum / gpu.nPredicted);
          const relDiff = Math.abs(gpuPpl / cpuPpl - 1);
          return {
            pass: relDiff < 1e-3,
            cpuPpl,
            gpuPpl,
            relDiff,
            windows: cpu.nWindows,
            cpuSeconds: (t1 - t0) / 1e3,
            gpuSeconds: (t3 - t2) / 1e3,
            device: dev.name,
          };
        }
        if (quant !== "fp") {
          await m.quantize({ bits: 0, groupSize: -1, maxRank: 0 });
          quant = "fp";
        }
        const pr = prompts[p.prompt!];
        const nNew = pr.greedy_ids.length - pr.ids.length;
        const reference = pr.greedy_ids.slice(pr.ids.length);
        using session = Session.create(m, { nCtx: pr.greedy_ids.length + 8 });
        const cpu = [...await session.generateGreedy(pr.ids, nNew)];
        using g = await GpuModel.fromModel(m, { nCtx: pr.greedy_ids.length + 8 });
        const gpu = [...await g.generateGreedy(pr.ids, nNew)];
        const firstDiff = (a: number[], b: number[]) => {
          let i = 0;
          while (i < a.length && a[i] === b[i]) i++;
          return i;
        };
        const dc = firstDiff(gpu, cpu);
        let margin: number | null = null;
        if (dc < cpu.length) {
          session.reset();
          const logits = await session.decode([...pr.ids, ...cpu.slice(0, dc)]);
          margin = logits[cpu[dc]] - logits[gpu[dc]];
        }
        return {
          pass: dc === cpu.length || (margin !== null && margin < 1e-2),
          reference,
          cpu,
          gpu,
          matchesReference: firstDiff(gpu, reference),
          matchesCpu: dc,
          marginAtFirstDiff: margin,
          device: dev.name,
        };
      },
    });
  } finally {
    (model as Model | null)?.close();
  }
  const records = await readRecords<SweepRecord<AccuracyPoint, AccuracyMetrics>>(outPath);
  await Deno.writeTextFile(join(o.outDir, "table.md"), accuracyTables(records));
  return records;
}

const fx = (d: number) => (v: unknown) => typeof v === "number" ? v.toFixed(d) : "";

/** Markdown: the perplexity table and the greedy table. */
export function accuracyTables(records: SweepRecord<AccuracyPoint, AccuracyMetrics>[]): string {
  type R = SweepRecord<AccuracyPoint, AccuracyMetrics>;
  const ppl = records.filter((r) => r.point.check === "ppl");
  const greedy = records.filter((r) => r.point.check === "greedy");
  const pplCols: Column<R>[] = [
    { key: "point.format", header: "format" },
    { key: "metrics.windows", header: "windows", align: "right" },
    { key: "metrics.cpuPpl", header: "CPU ppl (fp32)", format: fx(5), align: "right" },
    { key: "metrics.gpuPpl", header: "GPU ppl", format: fx(5), align: "right" },
    {
      key: "metrics.relDiff",
      header: "|GPU/CPU - 1|",
      format: (v) => typeof v === "number" ? v.toExponential(2) : "",
      align: "right",
    },
    { key: "metrics.pass", header: "< 1e-3", format: (v) => (v ? "yes" : "NO") },
    { key: "metrics.cpuSeconds", header: "CPU s", format: fx(2), align: "right" },
    { key: "metrics.gpuSeconds", header: "GPU s", format: fx(2), align: "right" },
  ];
  const gCols: Column<R>[] = [
    { key: "point.prompt", header: "prompt" },
    { key: "metrics.matchesReference", header: "GPU = HF fp32 reference (tokens)", align: "right" },
    { key: "metrics.matchesCpu", header: "GPU = CPU (tokens)", align: "right" },
    {
      key: "metrics.reference",
      header: "of",
      format: (v) => String((v as number[])?.length ?? ""),
    },
    { key: "metrics.marginAtFirstDiff", header: "CPU margin at first diff", format: fx(4) },
    { key: "metrics.pass", header: "pass", format: (v) => (v ? "yes" : "NO") },
  ];
  const first = ppl[0]?.point;
  return (first
    ? `### GPU vs CPU perplexity: ${first.model} on ${first.data} (seq ${first.seqLen}, ` +
      `${ppl[0].metrics.windows} windows)\n\n` + toMarkdown(ppl, pplCols) + "\n"
    : "") +
    (greedy.length
      ? `### Greedy continuations of the reference prompts (GPU fp16)\n\n` +
        toMarkdown(greedy, gCols) + "\n"
      : "");
}
