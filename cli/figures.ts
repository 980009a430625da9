/**
 * `deno task figures`: rebuilds every declared figure of the committed result sets
 * (`results/<set>/results.jsonl`; the experiment of each record is its `experiment` field) into
 * one paper-ready folder: `<out>/<set>-<figure>.{json,svg,pdf}` (and `.html` with --html),
 * in the paper style (results/style.ts), SVG and PDF rendered by headless Chromium in one browser
 * session, plus `<out>/index.json` listing what was written.
 *
 * @module
 */

import { basename, join, relative } from "node:path";
import { REPO_ROOT } from "../datasets/mod.ts";
import { RESULTS_FILE } from "../experiments/experiment.ts";
import { experimentNames, findExperiment } from "../experiments/registry.ts";
import type { SweepRecord } from "../experiments/runner.ts";
import { figureHtml, type PlotlyFigure } from "../results/figure.ts";
import { renderFigures } from "../results/render.ts";
import { readRecords } from "../results/store.ts";
import { paperStyle } from "../results/style.ts";
import { parseCli, runMain, UsageError } from "./args.ts";

/** One figure written by {@linkcode buildFigures}. */
export interface FigureEntry {
  /** The result set (folder name under the results folder). */
  set: string;
  /** The experiment that declared it. */
  experiment: string;
  /** The figure's name. */
  name: string;
  /** Its title. */
  title: string;
  /** Number of traces. */
  traces: number;
  /** Files written, relative to the output folder. */
  files: { json: string; svg?: string; pdf?: string; html?: string };
}

/** Options of {@linkcode buildFigures}. */
export interface BuildOptions {
  /** The folder of result sets; default results/. */
  resultsDir?: string;
  /** The output folder; default `<resultsDir>/figures`. */
  outDir?: string;
  /** Only these sets; default every folder with a results.jsonl (except runs/ and the output). */
  sets?: string[];
  /** Render SVG and PDF (Chromium); default true. */
  render?: boolean;
  /** Write the interactive HTML pages (plotly.js inlined, ~5 MB each); default false. */
  html?: boolean;
  /** Progress and warnings, one line each; default console.error. */
  log?: (line: string) => void;
}

/**
 * The result sets of a results folder: subfolders with a results.jsonl, sorted, leaving out
 * `runs` (local, uncommitted runs) and `figures`.
 *
 * @param resultsDir the results folder
 * @returns set names
 */
export async function listResultSets(resultsDir: string): Promise<string[]> {
  const sets: string[] = [];
  for await (const entry of Deno.readDir(resultsDir)) {
    if (!entry.isDirectory || entry.name === "runs" || entry.name === "figures") continue;
    try {
      await Deno.stat(join(resultsDir, entry.name, RESULTS_FILE));
      sets.push(entry.name);
    } catch { /* not a result set */ }
  }
  return sets.sort();
}

/**
 * Builds the figures of result sets.
 *
 * @param options where to read and write, what to render
 * @returns the figures written
 * @throws Error naming the set when one does not exist
 */
export async function buildFigures(options: BuildOptions = {}): Promise<FigureEntry[]> {
  const resultsDir = options.resultsDir ?? join(REPO_ROOT, "results");
  const outDir = options.outDir ?? join(resultsDir, "figures");
  const log = options.log ?? ((line: string) => console.error(line));
  const sets = options.sets ?? await listResultSets(resultsDir);
  const entries: FigureEntry[] = [];
  const figures: PlotlyFigure[] = [];
  for (const set of sets) {
    const file = join(resultsDir, set, RESULTS_FILE);
    try {
      await Deno.stat(file);
    } catch {
      throw new Error(`result set '${set}': ${file} does not exist`);
    }
    const records = await readRecords<SweepRecord>(file);
    const byExperiment = Map.groupBy(records, (r) => String(r.experiment));
    for (const [name, recs] of byExperiment) {
      const exp = findExperiment(name);
      if (!exp) {
        log(
          `warning: ${file}: no declaration for experiment '${name}' ` +
            `(known: ${experimentNames().join(", ")}); its ${recs.length} records are skipped`,
        );
        continue;
      }
      for (const { name: figName, figure } of await exp.figures(recs)) {
        const styled = paperStyle(figure);
        const base = `${set}-${figName}`;
        entries.push({
          set,
          experiment: name,
          name: figName,
          title: figure.layout.title?.text ?? figName,
          traces: styled.data.length,
          files: {
            json: `${base}.json`,
            ...(options.render ?? true ? { svg: `${base}.svg`, pdf: `${base}.pdf` } : {}),
            ...(options.html ? { html: `${base}.html` } : {}),
          },
        });
        figures.push(styled);
      }
    }
  }
  await Deno.mkdir(outDir, { recursive: true });
  await removeStale(outDir, sets, entries);
  for (const [i, e] of entries.entries()) {
    await Deno.writeTextFile(
      join(outDir, e.files.json),
      JSON.stringify(figures[i], null, 1) + "\n",
    );
    if (e.files.html) {
      await Deno.writeTextFile(join(outDir, e.files.html), await figureHtml(figures[i]));
    }
  }
  if (options.render ?? true) {
    const { launchSeconds, seconds } = await renderFigures(
      entries.map((e, i) => ({
        figure: figures[i],
        svgPath: join(outDir, e.files.svg!),
        pdfPath: join(outDir, e.files.pdf!),
      })),
      (i, s) => log(`rendered ${entries[i].files.svg} and .pdf (${s.toFixed(2)} s)`),
    );
    log(
      `rendered ${entries.length} figure(s) in ${seconds.toFixed(1)} s ` +
        `(Chromium start ${launchSeconds.toFixed(1)} s)`,
    );
  }
  const index = await readIndex(outDir);
  const kept = index.filter((e) => !sets.includes(e.set));
  await Deno.writeTextFile(
    join(outDir, "index.json"),
    JSON.stringify([...kept, ...entries], null, 1) + "\n",
  );
  return entries;
}

async function readIndex(outDir: string): Promise<FigureEntry[]> {
  try {
    return JSON.parse(await Deno.readTextFile(join(outDir, "index.json")));
  } catch {
    return [];
  }
}

/** Removes files of the rebuilt sets that the previous build wrote and this one does not. */
async function removeStale(outDir: string, sets: string[], entries: FigureEntry[]) {
  const now = new Set(entries.flatMap((e) => Object.values(e.files)));
  for (const old of await readIndex(outDir)) {
    if (!sets.includes(old.set)) continue;
    for (const f of Object.values(old.files ?? {})) {
      if (typeof f === "string" && !now.has(f) && basename(f) === f) {
        await Deno.remove(join(outDir, f)).catch(() => {});
      }
    }
  }
}

const USAGE = `deno task figures [--out DIR] [--results DIR] [--set NAME ...] [--html] [--no-render]

Rebuilds every figure of the committed result sets (results/<set>/results.jsonl) from the
figures their experiments declare, in one paper style (DejaVu Sans, fixed size, axis titles
with units, error bars where points were repeated), into one folder:
<out>/<set>-<figure>.json (Plotly JSON), .svg and .pdf (headless Chromium), with --html also
.html (interactive, self-contained), and <out>/index.json.

  --out DIR       output folder (default results/figures)
  --results DIR   folder of result sets (default results/)
  --set NAME      only this set (repeatable; default every set except runs/)
  --html          also write the interactive HTML pages (about 5 MB each; not committed)
  --no-render     skip SVG and PDF (no Chromium needed)

Chromium: $HCINFER_CHROMIUM, else /usr/bin/chromium (Debian's 'chromium', installed by
scripts/setup.sh).`;

if (import.meta.main) {
  await runMain(async () => {
    const { values, positionals } = parseCli(Deno.args, {
      out: { type: "string" },
      results: { type: "string" },
      set: { type: "string", multiple: true },
      html: { type: "boolean" },
      "no-render": { type: "boolean" },
    }, USAGE);
    if (positionals.length) {
      throw new UsageError(`unexpected argument '${positionals[0]}'\n\n${USAGE}`);
    }
    const outDir = values.out ?? join(values.results ?? join(REPO_ROOT, "results"), "figures");
    const entries = await buildFigures({
      resultsDir: values.results,
      outDir,
      sets: values.set,
      html: values.html,
      render: !values["no-render"],
    });
    for (const e of entries) {
      console.log(
        `${relative(Deno.cwd(), join(outDir, e.files.json)).replace(/\.json$/, "")}` +
          `.{${Object.keys(e.files).join(",")}}  ${e.traces} traces  ${e.title}`,
      );
    }
  });
}
