import assert from "node:assert/strict";
import { join } from "node:path";
import { XMLParser, XMLValidator } from "fast-xml-parser";
import { PDFDocument } from "pdf-lib";
import { REPO_ROOT } from "../datasets/mod.ts";
import { FigureRenderer } from "../results/render.ts";
import { PAPER_FONT, PAPER_SIZE } from "../results/style.ts";
import { buildFigures, type FigureEntry, listResultSets } from "./figures.ts";

/** Traces drawn in a Plotly SVG: one <g class="trace ..."> per scatter or bar trace. */
function svgTraceCount(svg: string): number {
  return svg.match(/<g class="trace (scatter|bars)\b/g)?.length ?? 0;
}

Deno.test("deno task figures renders every committed result set to valid SVG and PDF", async () => {
  const out = await Deno.makeTempDir({ prefix: "hcinfer-figures-" });
  try {
    const t0 = performance.now();
    const run = await new Deno.Command(Deno.execPath(), {
      args: ["task", "figures", "--out", out],
      cwd: REPO_ROOT,
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    const stderr = new TextDecoder().decode(run.stderr);
    assert.equal(run.code, 0, stderr);
    console.log(`deno task figures: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    console.log(stderr.split("\n").filter((l) => l.startsWith("rendered ")).at(-1));

    const index: FigureEntry[] = JSON.parse(await Deno.readTextFile(join(out, "index.json")));
    const sets = await listResultSets(join(REPO_ROOT, "results"));
    // every set made by a declared experiment has figures: tiny-demo and small-ppl_vs_rank at least
    for (const set of ["tiny-demo", "small-ppl_vs_rank"]) {
      assert.ok(sets.includes(set));
      const names = index.filter((e) => e.set === set).map((e) => e.name).sort();
      assert.deepEqual(names, [
        "ppl-vs-bpw-books-heldout",
        "ppl-vs-bpw-wikitext2",
        "ppl-vs-rank-books-heldout",
        "ppl-vs-rank-wikitext2",
      ]);
    }
    for (const entry of index) {
      const json = JSON.parse(await Deno.readTextFile(join(out, entry.files.json)));
      assert.equal(json.data.length, entry.traces);
      assert.equal(json.layout.font.family, PAPER_FONT);
      assert.ok(json.layout.xaxis.title.text && json.layout.yaxis.title.text, "axis titles");

      const svg = await Deno.readTextFile(join(out, entry.files.svg!));
      assert.equal(XMLValidator.validate(svg), true, `${entry.files.svg} is not well-formed XML`);
      const root = new XMLParser({ ignoreAttributes: false }).parse(svg).svg;
      assert.ok(root, `${entry.files.svg}: root element is not <svg>`);
      assert.equal(root["@_xmlns"], "http://www.w3.org/2000/svg");
      assert.equal(Number(root["@_width"]), PAPER_SIZE.width);
      assert.equal(Number(root["@_height"]), PAPER_SIZE.height);
      assert.equal(svgTraceCount(svg), entry.traces, `${entry.files.svg}: trace count`);
      assert.ok(svg.includes(entry.title.replaceAll("&", "&amp;")), `${entry.files.svg}: title`);
      assert.match(svg, /font-family: ?'?"?DejaVu Sans/);

      const pdf = await Deno.readFile(join(out, entry.files.pdf!));
      assert.equal(new TextDecoder().decode(pdf.subarray(0, 5)), "%PDF-");
      const doc = await PDFDocument.load(pdf);
      assert.equal(doc.getPageCount(), 1, `${entry.files.pdf}: page count`);
      const { width, height } = doc.getPage(0).getSize(); // points: 72 per inch, 96 px per inch
      assert.ok(Math.abs(width - PAPER_SIZE.width * 0.75) < 1, `page width ${width}`);
      assert.ok(Math.abs(height - PAPER_SIZE.height * 0.75) < 1, `page height ${height}`);
      assert.match(new TextDecoder("latin1").decode(pdf), /DejaVuSans/, "font embedded");
    }
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("rendering is deterministic and draws error bars where points were repeated", async () => {
  const { synthetic } = await import("../experiments/synthetic.ts");
  const { paperStyle } = await import("../results/style.ts");
  const points = synthetic.points({ xs: [1, 2, 3], repeats: 3, delayMs: 0 });
  const records = points.map((point, i) => ({
    experiment: "synthetic",
    key: String(i),
    point,
    metrics: { value: point.x + point.seed / 10, pid: 0 },
    provenance: {},
    status: "ok" as const,
    started: "",
    seconds: 0,
  }));
  const [{ figure }] = await synthetic.figures(records);
  const fig = paperStyle(figure);
  const errorY = fig.data[0].error_y as { type: string; array: number[]; visible: boolean };
  assert.equal(errorY.type, "data");
  assert.ok(errorY.array.every((e) => Math.abs(e - 0.1) < 1e-12), String(errorY.array));
  await using renderer = await FigureRenderer.start();
  const a = await renderer.render(fig);
  const b = await renderer.render(fig);
  assert.equal(a.svg, b.svg);
  assert.deepEqual(a.pdf, b.pdf);
  assert.equal(a.svg.match(/class="errorbar"/g)?.length, 3);
});

Deno.test("the committed paper figures are current (results/figures/index.json)", async () => {
  const index: FigureEntry[] = JSON.parse(
    await Deno.readTextFile(join(REPO_ROOT, "results/figures/index.json")),
  );
  const fresh = await buildFigures({
    outDir: await Deno.makeTempDir(),
    render: false,
    html: false,
    log: () => {},
  });
  const key = (e: FigureEntry) => `${e.set}/${e.name}:${e.traces}`;
  assert.deepEqual(
    index.map(key).sort(),
    fresh.map(key).sort(),
    "rerun `deno task figures` and commit results/figures/",
  );
  for (const e of index) {
    for (const f of [e.files.svg, e.files.pdf, e.files.json]) {
      await Deno.stat(join(REPO_ROOT, "results/figures", f!));
    }
  }
});

Deno.test("the README embeds committed paper figures (SVG) that exist", async () => {
  const readme = await Deno.readTextFile(join(REPO_ROOT, "README.md"));
  const embedded = [...readme.matchAll(/!\[[^\]]*\]\((results\/figures\/[^)\s]+\.svg)\)/g)]
    .map((m) => m[1]);
  assert.ok(embedded.length >= 1, "README.md embeds no results/figures/*.svg");
  for (const path of embedded) await Deno.stat(join(REPO_ROOT, path));
});
