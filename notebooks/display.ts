/**
 * Rich output for the notebooks, through the Deno kernel's display API (`Deno.jupyter.display`
 * with a raw MIME bundle): figures as a Plotly bundle (`application/vnd.plotly.v1+json`, drawn
 * interactively by JupyterLab and VS Code) with a static SVG fallback (`image/svg+xml`, rendered
 * by headless Chromium, shown by viewers without Plotly, e.g. GitHub and nbconvert's HTML), and
 * Markdown tables. Outside a kernel the same calls print plain text.
 *
 * @module
 */

import type { PlotlyFigure } from "../results/figure.ts";
import type { FigureRenderer } from "../results/render.ts";
import { paperStyle } from "../results/style.ts";

/** The part of the kernel's API used here. */
interface JupyterApi {
  display(bundle: Record<string, unknown>, options: { raw: true }): Promise<void> | void;
}

/** `Deno.jupyter` inside a kernel, undefined elsewhere. */
function jupyter(): JupyterApi | undefined {
  return (Deno as unknown as { jupyter?: JupyterApi }).jupyter;
}

/**
 * The MIME bundle of a figure.
 *
 * @param fig the figure (shown in the paper style)
 * @param svg its static rendering, when available
 * @returns `{application/vnd.plotly.v1+json, image/svg+xml?, text/plain}`
 */
export function figureBundle(fig: PlotlyFigure, svg?: string): Record<string, unknown> {
  return {
    "application/vnd.plotly.v1+json": { data: fig.data, layout: fig.layout },
    ...(svg ? { "image/svg+xml": svg } : {}),
    "text/plain": `[figure: ${fig.layout.title?.text ?? "untitled"}; ${fig.data.length} traces]`,
  };
}

/**
 * Displays a figure in the paper style: interactive Plotly plus the SVG fallback (rendered with
 * `renderer` when one is given).
 *
 * @param fig the figure
 * @param renderer a started {@linkcode FigureRenderer} for the SVG fallback
 */
export async function showFigure(fig: PlotlyFigure, renderer?: FigureRenderer): Promise<void> {
  const styled = paperStyle(fig);
  const svg = renderer ? (await renderer.render(styled)).svg : undefined;
  const bundle = figureBundle(styled, svg);
  const api = jupyter();
  if (api) await api.display(bundle, { raw: true });
  else console.log(bundle["text/plain"]);
}

/**
 * Displays Markdown (e.g. a table from results/table.ts).
 *
 * @param markdown the text
 */
export async function showMarkdown(markdown: string): Promise<void> {
  const api = jupyter();
  if (api) await api.display({ "text/markdown": markdown, "text/plain": markdown }, { raw: true });
  else console.log(markdown);
}
