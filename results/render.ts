/**
 * Static figures: Plotly figures rendered to SVG and PDF by headless Chromium (Debian's
 * `chromium`, driven through npm `puppeteer-core`). One browser session renders any number of
 * figures: plotly.js is loaded into a page once, each figure is drawn, exported as SVG by
 * `Plotly.toImage`, and that SVG is printed to a one-page PDF of the figure's size (vector
 * output, fonts embedded by Chromium).
 *
 * Output is made stable: Plotly's random per-plot id is replaced by a fixed one (trace ids are
 * set by {@linkcode paperStyle}), and the PDF's creation and modification dates are fixed.
 *
 * @module
 */

import { dirname } from "node:path";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import { plotlyBundle, type PlotlyFigure } from "./figure.ts";
import { PAPER_SIZE } from "./style.ts";

/** Where Chromium is looked for when `$HCINFER_CHROMIUM` is not set. */
export const CHROMIUM_CANDIDATES = [
  "/usr/bin/chromium",
  "/usr/bin/chromium-browser",
  "/usr/bin/google-chrome",
  "/usr/bin/google-chrome-stable",
];

/**
 * The Chromium executable: `$HCINFER_CHROMIUM`, else the first of
 * {@linkcode CHROMIUM_CANDIDATES} that exists.
 *
 * @returns its path
 * @throws Error saying how to install it when there is none
 */
export function findChromium(): string {
  const fromEnv = Deno.env.get("HCINFER_CHROMIUM");
  if (fromEnv) {
    if (!exists(fromEnv)) throw new Error(`HCINFER_CHROMIUM=${fromEnv}: no such file`);
    return fromEnv;
  }
  const found = CHROMIUM_CANDIDATES.find(exists);
  if (!found) {
    throw new Error(
      `no Chromium found (looked at ${CHROMIUM_CANDIDATES.join(", ")}); install Debian's ` +
        `'chromium' package (bash scripts/setup.sh does) or set HCINFER_CHROMIUM`,
    );
  }
  return found;
}

function exists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** A rendered figure. */
export interface Rendered {
  /** The SVG document (UTF-8 text, with an XML declaration-free `<svg>` root). */
  svg: string;
  /** A one-page PDF of the figure's size. */
  pdf: Uint8Array;
}

/** The fixed id put where Plotly writes its random per-plot id. */
const STABLE_UID = "hcifig";
/** The fixed date written into every PDF (same length as Chromium's). */
const STABLE_PDF_DATE = "D:20000101000000+00'00'";

/**
 * A headless Chromium session that renders Plotly figures. Start it once, render many,
 * close it (it is `AsyncDisposable`: `await using r = await FigureRenderer.start()`).
 */
export class FigureRenderer implements AsyncDisposable {
  private constructor(
    private readonly browser: Browser,
    private readonly plotPage: Page,
    private readonly printPage: Page,
  ) {}

  /**
   * Launches Chromium and loads plotly.js into a page.
   *
   * @param options the Chromium executable (default {@linkcode findChromium})
   * @returns the renderer
   */
  static async start(options: { executablePath?: string } = {}): Promise<FigureRenderer> {
    const browser = await puppeteer.launch({
      executablePath: options.executablePath ?? findChromium(),
      headless: true,
      // --no-sandbox: CI runs as root in a container; the pages only hold our own figures.
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--font-render-hinting=none",
        "--hide-scrollbars",
      ],
    });
    try {
      const plotPage = await browser.newPage();
      const script = (await plotlyBundle()).replace(/<\/script/gi, "<\\/script");
      await plotPage.setContent(
        `<!DOCTYPE html><html><head><meta charset="utf-8"><script>${script}</script></head>` +
          `<body style="margin:0"></body></html>`,
      );
      const printPage = await browser.newPage();
      return new FigureRenderer(browser, plotPage, printPage);
    } catch (error) {
      await browser.close();
      throw error;
    }
  }

  /**
   * Renders one figure at its layout's size (default {@linkcode PAPER_SIZE}).
   *
   * @param fig the figure (use {@linkcode paperStyle} first for paper output)
   * @returns the SVG text and the PDF bytes
   */
  async render(fig: PlotlyFigure): Promise<Rendered> {
    const width = Number(fig.layout.width ?? PAPER_SIZE.width);
    const height = Number(fig.layout.height ?? PAPER_SIZE.height);
    const url = await this.plotPage.evaluate(
      async (figure: PlotlyFigure, w: number, h: number) => {
        // deno-lint-ignore no-explicit-any
        const Plotly = (globalThis as any).Plotly;
        // deno-lint-ignore no-explicit-any
        const doc = (globalThis as any).document;
        const div = doc.createElement("div");
        doc.body.appendChild(div);
        try {
          await Plotly.newPlot(div, figure.data, figure.layout, {
            staticPlot: true,
            displayModeBar: false,
          });
          return await Plotly.toImage(div, { format: "svg", width: w, height: h }) as string;
        } finally {
          Plotly.purge(div);
          div.remove();
        }
      },
      fig,
      width,
      height,
    );
    const comma = url.indexOf(",");
    let svg = decodeURIComponent(url.slice(comma + 1));
    // toImage draws a clone with a random id of its own; the id names <defs> and clip paths
    const uid = svg.match(/<defs id="defs-([0-9a-z]+)"/)?.[1];
    if (uid) svg = svg.replaceAll(uid, STABLE_UID);
    await this.printPage.setContent(
      `<!DOCTYPE html><html><head><meta charset="utf-8"><style>` +
        `@page { size: ${width}px ${height}px; margin: 0 } html, body { margin: 0; padding: 0 }` +
        ` svg { display: block }</style></head><body>${svg}</body></html>`,
    );
    const pdf = await this.printPage.pdf({
      width: `${width}px`,
      height: `${height}px`,
      printBackground: true,
      pageRanges: "1",
      margin: { top: 0, right: 0, bottom: 0, left: 0 },
    });
    return { svg, pdf: stablePdf(pdf) };
  }

  /** Closes the browser. */
  async close(): Promise<void> {
    await this.browser.close();
  }

  /** Closes the browser. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Replaces the PDF's creation/modification dates (same length, so offsets stay valid). */
function stablePdf(pdf: Uint8Array): Uint8Array {
  const text = new TextDecoder("latin1").decode(pdf);
  const fixed = text.replace(
    /\/(CreationDate|ModDate) \(D:[0-9]{14}[^)]*\)/g,
    (match, name: string) => {
      const date = match.slice(`/${name} (`.length, -1);
      return date.length === STABLE_PDF_DATE.length ? `/${name} (${STABLE_PDF_DATE})` : match;
    },
  );
  if (fixed === text) return pdf;
  const out = new Uint8Array(fixed.length);
  for (let i = 0; i < fixed.length; i++) out[i] = fixed.charCodeAt(i);
  return out;
}

/** One figure to render and where to write it. */
export interface RenderJob {
  /** The figure. */
  figure: PlotlyFigure;
  /** Path of the SVG file to write, if any. */
  svgPath?: string;
  /** Path of the PDF file to write, if any. */
  pdfPath?: string;
}

/**
 * Renders figures in one browser session and writes their SVG and PDF files (parent folders
 * are created).
 *
 * @param jobs the figures and their output paths
 * @param onRendered called after each figure with its index and seconds taken
 * @returns seconds spent launching the browser and in total
 */
export async function renderFigures(
  jobs: readonly RenderJob[],
  onRendered?: (index: number, seconds: number) => void,
): Promise<{ launchSeconds: number; seconds: number }> {
  const t0 = performance.now();
  if (jobs.length === 0) return { launchSeconds: 0, seconds: 0 };
  await using renderer = await FigureRenderer.start();
  const launchSeconds = (performance.now() - t0) / 1000;
  for (const [i, job] of jobs.entries()) {
    const t = performance.now();
    const { svg, pdf } = await renderer.render(job.figure);
    for (const path of [job.svgPath, job.pdfPath]) {
      if (path) await Deno.mkdir(dirname(path), { recursive: true });
    }
    if (job.svgPath) await Deno.writeTextFile(job.svgPath, svg);
    if (job.pdfPath) await Deno.writeFile(job.pdfPath, pdf);
    onRendered?.(i, (performance.now() - t) / 1000);
  }
  return { launchSeconds, seconds: (performance.now() - t0) / 1000 };
}
