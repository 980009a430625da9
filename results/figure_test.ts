import assert from "node:assert/strict";
import { join } from "node:path";
import { heatmapFigure, lineFigure, writeFigure } from "./figure.ts";

Deno.test("lineFigure and heatmapFigure build Plotly specs", () => {
  const line = lineFigure({
    title: "PPL vs rank",
    xTitle: "rank",
    yTitle: "perplexity",
    logY: true,
    series: [{ name: "3 bit", x: [0, 16, 64], y: [30, 20, null] }],
  });
  assert.deepEqual(line.data[0], {
    type: "scatter",
    mode: "lines+markers",
    name: "3 bit",
    x: [0, 16, 64],
    y: [30, 20, null],
  });
  assert.deepEqual(line.layout.title, { text: "PPL vs rank" });
  assert.deepEqual(line.layout.yaxis, { title: { text: "perplexity" }, type: "log" });
  assert.deepEqual(line.layout.xaxis, { title: { text: "rank" } });
  const heat = heatmapFigure({
    x: [0, 16],
    y: [2, 4],
    z: [[40, 20], [10, 9]],
    colorbarTitle: "ppl",
  });
  assert.equal(heat.data[0].type, "heatmap");
  assert.deepEqual(heat.data[0].x, ["0", "16"]);
  assert.deepEqual(heat.data[0].z, [[40, 20], [10, 9]]);
  assert.equal(heat.layout.title, undefined);
});

Deno.test("writeFigure writes Plotly JSON and a self-contained HTML page", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const fig = lineFigure({
      title: "Demo <figure> & co",
      series: [{ name: "</script><b>x", x: [1, 2, 3], y: [1.5, 2.25, 3.125] }],
    });
    const paths = await writeFigure(fig, join(dir, "figs", "demo"));
    assert.deepEqual(paths, {
      json: join(dir, "figs", "demo.json"),
      html: join(dir, "figs", "demo.html"),
    });
    assert.deepEqual(JSON.parse(await Deno.readTextFile(paths.json)), fig);

    const html = await Deno.readTextFile(paths.html);
    assert.ok(html.startsWith("<!DOCTYPE html>"));
    assert.match(html, /plotly\.js v3\.\d+\.\d+/); // the library is inlined
    assert.ok(html.length > 3_000_000);
    assert.ok(html.includes("window.Plotly"));
    assert.ok(html.includes("[1.5,2.25,3.125]")); // the data
    assert.ok(html.includes('Plotly.newPlot("figure"'));
    assert.ok(html.includes("<title>Demo &lt;figure&gt; &amp; co</title>"));
    // no external resources, and the data cannot close the script element
    assert.doesNotMatch(html, /<script[^>]*\bsrc\s*=/i);
    assert.doesNotMatch(html, /<link\b/i);
    assert.equal(html.match(/<\/script>/gi)?.length, 2);
    assert.ok(html.includes("\\u003c/script>\\u003cb>x"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("meanWithError: mean and sample standard deviation per x, sorted", async () => {
  const { meanWithError } = await import("./figure.ts");
  const m = meanWithError([
    { x: 2, y: 1 },
    { x: 1, y: 5 },
    { x: 2, y: 3 },
    { x: 2, y: null },
  ]);
  assert.deepEqual(m.x, [1, 2]);
  assert.deepEqual(m.y, [5, 2]);
  assert.deepEqual(m.error, [null, Math.SQRT2]);
  assert.deepEqual(m.n, [1, 2]);
});
