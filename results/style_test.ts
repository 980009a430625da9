import assert from "node:assert/strict";
import { lineFigure } from "./figure.ts";
import { PAPER_FONT, PAPER_SIZE, paperStyle } from "./style.ts";

Deno.test("paperStyle fixes font, size and trace ids, and keeps titles and axis types", () => {
  const fig = lineFigure({
    title: "t",
    xTitle: "x (units)",
    yTitle: "y (log scale)",
    logY: true,
    series: [{ name: "a", x: [1, 2], y: [3, 4], error: [null, 0.5] }, {
      name: "b",
      x: [1],
      y: [2],
    }],
  });
  const styled = paperStyle(fig);
  assert.equal((styled.layout.font as { family: string }).family, PAPER_FONT);
  assert.equal(styled.layout.width, PAPER_SIZE.width);
  assert.equal(styled.layout.title?.text, "t");
  assert.equal(styled.layout.xaxis?.title?.text, "x (units)");
  assert.equal(styled.layout.yaxis?.type, "log");
  assert.deepEqual(styled.data.map((d) => d.uid), ["0", "1"]);
  assert.deepEqual(styled.data[0].error_y, { type: "data", array: [0, 0.5], visible: true });
  assert.equal(styled.data[1].error_y, undefined);
  assert.equal(fig.layout.width, undefined, "the input is not modified");
});
