/**
 * The house style of paper figures: one pinned font family (DejaVu Sans, Debian's
 * `fonts-dejavu-core`, installed by scripts/setup.sh so that text is measured and embedded the
 * same everywhere), fixed sizes, a colour-blind-safe palette, white background, outside ticks
 * and deterministic trace ids (so that rendering a figure twice gives the same SVG).
 *
 * @module
 */

import type { PlotlyAxis, PlotlyFigure, PlotlyLayout } from "./figure.ts";

/** The font family of every paper figure. */
export const PAPER_FONT = "DejaVu Sans";

/** Size of a paper figure in CSS pixels (1 px = 1/96 in; the PDF page has this size). */
export const PAPER_SIZE = { width: 640, height: 400 } as const;

/** Okabe–Ito colours (colour-blind safe), then a few greys and extras. */
export const PAPER_COLORWAY = [
  "#0072B2",
  "#D55E00",
  "#009E73",
  "#CC79A7",
  "#E69F00",
  "#56B4E9",
  "#000000",
  "#F0E442",
  "#7f7f7f",
  "#8c564b",
];

const AXIS: PlotlyAxis = {
  showline: true,
  mirror: true,
  linecolor: "#444",
  linewidth: 1,
  ticks: "outside",
  tickcolor: "#444",
  gridcolor: "#e6e6e6",
  zeroline: false,
  automargin: true,
  title: { text: "", font: { size: 13 } },
};

/**
 * The figure in the paper style: layout fonts, sizes, margins, axes and colours replaced (titles,
 * axis types and ranges, legends' content and everything in the traces are kept), trace `uid`s
 * set to their index, a non-interactive-friendly size fixed.
 *
 * @param fig the figure as an experiment built it
 * @param size width and height in CSS pixels; default {@linkcode PAPER_SIZE}
 * @returns a new figure; `fig` is not modified
 */
export function paperStyle(
  fig: PlotlyFigure,
  size: { width: number; height: number } = PAPER_SIZE,
): PlotlyFigure {
  const { template: _template, ...layout } = fig.layout;
  const styled: PlotlyLayout = {
    ...layout,
    width: size.width,
    height: size.height,
    autosize: false,
    font: { family: PAPER_FONT, size: 12, color: "#222" },
    paper_bgcolor: "#ffffff",
    plot_bgcolor: "#ffffff",
    colorway: PAPER_COLORWAY,
    margin: { l: 64, r: 16, t: fig.layout.title ? 44 : 16, b: 56, pad: 0 },
    ...(fig.layout.title
      ? { title: { ...fig.layout.title, font: { size: 14 }, x: 0.5, xanchor: "center" } }
      : {}),
    legend: {
      ...(fig.layout.legend as object ?? {}),
      font: { size: 10.5 },
      bgcolor: "rgba(255,255,255,0.85)",
      bordercolor: "#ccc",
      borderwidth: 1,
    },
  };
  for (const key of Object.keys(layout)) {
    if (/^[xy]axis\d*$/.test(key)) styled[key] = styleAxis(layout[key] as PlotlyAxis);
  }
  styled.xaxis = styleAxis(layout.xaxis);
  styled.yaxis = styleAxis(layout.yaxis);
  return {
    data: fig.data.map((trace, i) => ({ ...trace, uid: String(i) })),
    layout: styled,
  };
}

function styleAxis(axis: PlotlyAxis | undefined): PlotlyAxis {
  const title = axis?.title ? { ...AXIS.title, ...axis.title } : undefined;
  return { ...AXIS, ...(axis ?? {}), ...(title ? { title } : { title: undefined }) };
}
