/**
 * The experiments the command line, `deno task figures`, `deno task reproduce` and the notebooks
 * know by name. An experiment joins by exporting an {@linkcode Experiment} declaration and being
 * listed here.
 *
 * @module
 */

import { accuracyVsRank } from "./accuracy_vs_rank.ts";
import { cpuLowRank } from "./cpu_lowrank.ts";
import type { AnyExperiment } from "./experiment.ts";
import { heteroThroughput } from "./hetero_throughput.ts";
import { pplVsRank } from "./ppl_vs_rank.ts";
import { synthetic } from "./synthetic.ts";
import { throughput } from "./throughput.ts";
import { zeroShot } from "./zero_shot.ts";

/** Every declared experiment, by name. */
export const EXPERIMENTS: Readonly<Record<string, AnyExperiment>> = {
  [pplVsRank.name]: pplVsRank,
  [accuracyVsRank.name]: accuracyVsRank,
  [cpuLowRank.name]: cpuLowRank,
  [synthetic.name]: synthetic,
  [throughput.name]: throughput,
  [heteroThroughput.name]: heteroThroughput,
  [zeroShot.name]: zeroShot,
};

/**
 * The experiment of a name.
 *
 * @param name as recorded in records' `experiment` field or typed on the command line
 * @returns the declaration, or undefined for an unknown name
 */
export function findExperiment(name: string): AnyExperiment | undefined {
  return Object.hasOwn(EXPERIMENTS, name) ? EXPERIMENTS[name] : undefined;
}

/** The known names, for messages. */
export function experimentNames(): string[] {
  return Object.keys(EXPERIMENTS);
}
