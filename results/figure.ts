/**
 * Figures as Plotly specs built in TypeScript, written as Plotly JSON and as a self-contained
 * interactive HTML page (plotly.js inlined from the npm package plotly.js-dist-min, so the page
 * needs no network).
 *
 * @module
 */

import { dirname } from "node:path";

/** A Plotly axis (only the fields used here are typed; any other Plotly field is allowed). */
export interface PlotlyAxis {
  /** Axis title. */
  title?: { text: string; [key: string]: unknown };
  /** Axis type. */
  type?: "linear" | "log" | "category" | "date";
  /** Any other Plotly field. */
  [key: string]: unknown;
}

/** A Plotly trace, e.g. `{type: "scatter", mode: "lines+markers", x, y, name}`. */
export interface PlotlyTrace {
  /** Trace type: "scatter", "bar", "heatmap", ... */
  type?: string;
  /** Legend name. */
  name?: string;
  /** x values. */
  x?: unknown[];
  /** y values. */
  y?: unknown[];
  /** z values (heatmaps): z[i][j] at (x[j], y[i]). */
  z?: unknown[][];
  /** Any other Plotly field. */
  [key: string]: unknown;
}

/** A Plotly layout. (plotly.js 3 takes titles only as `{text}` objects.) */
export interface PlotlyLayout {
  /** Figure title. */
  title?: { text: string; [key: string]: unknown };
  /** x axis. */
  xaxis?: PlotlyAxis;
  /** y axis. */
  yaxis?: PlotlyAxis;
  /** Any other Plotly field. */
  [key: string]: unknown;
}

/** A Plotly figure, in the shape of Plotly's JSON format. */
export interface PlotlyFigure {
  /** The traces. */
  data: PlotlyTrace[];
  /** The layout. */
  layout: PlotlyLayout;
}

/** One line of a {@linkcode lineFigure}. */
export interface Series {
  /** Legend name. */
  name: string;
  /** x values. */
  x: Array<number | string>;
  /** y values; null leaves a gap. */
  y: Array<number | null>;
  /** Symmetric error bar of each y (e.g. the standard deviation over repeats); null: none. */
  error?: Array<number | null>;
  /** Further Plotly trace fields (e.g. `{mode: "lines", line: {dash: "dash"}}`). */
  style?: Record<string, unknown>;
}

/** One measured value at an x, e.g. one repeat of a point. */
export interface Sample {
  /** Where it goes on the x axis. */
  x: number | string;
  /** The value; null or non-finite values are left out. */
  y: number | null;
}

/**
 * Mean and error bar per x: samples with the same x (repeats, e.g. seeds) are averaged, and the
 * error is their sample standard deviation (null where there is only one sample). Numeric x are
 * sorted ascending, others kept in order of first appearance.
 *
 * @param samples the measured values
 * @returns x, mean y, the error bars, and how many samples each x had
 */
export function meanWithError(
  samples: readonly Sample[],
): {
  x: Array<number | string>;
  y: Array<number | null>;
  error: Array<number | null>;
  n: number[];
} {
  const groups = new Map<number | string, number[]>();
  for (const { x, y } of samples) {
    if (!groups.has(x)) groups.set(x, []);
    if (y !== null && Number.isFinite(y)) groups.get(x)!.push(y);
  }
  let xs = [...groups.keys()];
  if (xs.every((v) => typeof v === "number")) xs = (xs as number[]).sort((a, b) => a - b);
  const out = {
    x: xs,
    y: [] as Array<number | null>,
    error: [] as Array<number | null>,
    n: [] as number[],
  };
  for (const x of xs) {
    const ys = groups.get(x)!;
    const mean = ys.length ? ys.reduce((a, b) => a + b, 0) / ys.length : null;
    out.y.push(mean);
    out.n.push(ys.length);
    out.error.push(
      ys.length > 1
        ? Math.sqrt(ys.reduce((a, b) => a + (b - mean!) ** 2, 0) / (ys.length - 1))
        : null,
    );
  }
  return out;
}

/** Titles and axis scales shared by the figure builders. */
export interface FigureTitles {
  /** Figure title. */
  title?: string;
  /** x-axis title. */
  xTitle?: string;
  /** y-axis title. */
  yTitle?: string;
}

/**
 * A line chart with markers, one trace per series.
 *
 * @param options titles, log axes and the series
 * @returns the figure
 */
export function lineFigure(
  options: FigureTitles & { series: Series[]; logX?: boolean; logY?: boolean },
): PlotlyFigure {
  return {
    data: options.series.map((s) => ({
      type: "scatter",
      mode: "lines+markers",
      name: s.name,
      x: s.x,
      y: s.y,
      ...(s.error?.some((e) => e !== null)
        ? { error_y: { type: "data", array: s.error.map((e) => e ?? 0), visible: true } }
        : {}),
      ...(s.style ?? {}),
    })),
    layout: {
      ...(options.title ? { title: { text: options.title } } : {}),
      xaxis: axis(options.xTitle, options.logX),
      yaxis: axis(options.yTitle, options.logY),
      template: "plotly_white",
    },
  };
}

/**
 * A heatmap with the value written in each cell, e.g. perplexity over bits × rank.
 *
 * @param options titles, the x and y categories and `z[i][j]` at (x[j], y[i])
 * @returns the figure
 */
export function heatmapFigure(
  options: FigureTitles & {
    x: Array<number | string>;
    y: Array<number | string>;
    z: Array<Array<number | null>>;
    colorbarTitle?: string;
  },
): PlotlyFigure {
  return {
    data: [{
      type: "heatmap",
      x: options.x.map(String),
      y: options.y.map(String),
      z: options.z,
      texttemplate: "%{z:.4g}",
      colorscale: "Viridis",
      ...(options.colorbarTitle ? { colorbar: { title: { text: options.colorbarTitle } } } : {}),
    }],
    layout: {
      ...(options.title ? { title: { text: options.title } } : {}),
      xaxis: { ...axis(options.xTitle), type: "category" },
      yaxis: { ...axis(options.yTitle), type: "category" },
    },
  };
}

function axis(title?: string, log?: boolean): PlotlyAxis {
  return { ...(title ? { title: { text: title } } : {}), ...(log ? { type: "log" } : {}) };
}

let bundle: Promise<string> | undefined;

/**
 * The minified plotly.js bundle (from npm plotly.js-dist-min, see deno.json), loaded once.
 *
 * @returns the script text
 */
export function plotlyBundle(): Promise<string> {
  bundle ??= import("plotly.js-dist-min/plotly.min.js", { with: { type: "text" } })
    .then((m: { default: string }) => m.default);
  return bundle;
}

/**
 * A self-contained HTML page that draws the figure: plotly.js and the figure's JSON inline, no
 * external script or style.
 *
 * @param fig the figure
 * @param title the page title; default the figure's title
 * @returns the page
 */
export async function figureHtml(fig: PlotlyFigure, title?: string): Promise<string> {
  const script = (await plotlyBundle()).replace(/<\/script/gi, "<\\/script");
  const pageTitle = title ?? fig.layout.title?.text ?? "figure";
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(pageTitle)}</title>
<style>html, body { margin: 0; height: 100%; } #figure { width: 100%; height: 100vh; }</style>
<script>${script}</script>
</head>
<body>
<div id="figure"></div>
<script>
const figure = ${scriptJson(fig)};
Plotly.newPlot("figure", figure.data, figure.layout, { responsive: true, displaylogo: false });
</script>
</body>
</html>
`;
}

/**
 * Writes `basePath.json` (Plotly JSON) and `basePath.html` (self-contained page), creating
 * parent folders.
 *
 * @param fig the figure
 * @param basePath path without extension, e.g. `results/figures/ppl_vs_rank`
 * @returns the two paths written
 */
export async function writeFigure(
  fig: PlotlyFigure,
  basePath: string,
): Promise<{ json: string; html: string }> {
  const json = `${basePath}.json`;
  const html = `${basePath}.html`;
  await Deno.mkdir(dirname(json), { recursive: true });
  await Deno.writeTextFile(json, JSON.stringify(fig, null, 1) + "\n");
  await Deno.writeTextFile(html, await figureHtml(fig));
  return { json, html };
}

function escapeHtml(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}

/** JSON that is safe inside a <script> element. */
function scriptJson(value: unknown): string {
  return JSON.stringify(value).replaceAll("<", "\\u003c").replaceAll("\u2028", "\\u2028")
    .replaceAll("\u2029", "\\u2029");
}
