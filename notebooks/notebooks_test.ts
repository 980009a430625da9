import assert from "node:assert/strict";
import { basename, join } from "node:path";
import { REPO_ROOT } from "../datasets/mod.ts";
import {
  errorSummary,
  executeNotebook,
  installDenoKernel,
  listNotebooks,
} from "../cli/notebooks.ts";

interface Output {
  output_type: string;
  data?: Record<string, unknown>;
  ename?: string;
}

Deno.test("every notebook executes headless on the Deno kernel (nbconvert), with rich output", async (t) => {
  const notebooks = await listNotebooks();
  assert.deepEqual(notebooks.map((n) => basename(n)), ["overview.ipynb", "walkthrough.ipynb"]);
  const kernel = await installDenoKernel();
  const outDir = join(kernel.dir, "executed");
  try {
    for (const notebook of notebooks) {
      await t.step(basename(notebook), async () => {
        const run = await executeNotebook(notebook, kernel, outDir);
        assert.ok(run.ok, `${basename(notebook)} failed:\n${errorSummary(run.log)}`);
        const executed = JSON.parse(await Deno.readTextFile(run.output));
        const outputs: Output[] = executed.cells.flatMap((c: { outputs?: Output[] }) =>
          c.outputs ?? []
        );
        assert.ok(!outputs.some((o) => o.output_type === "error"));
        // figures: an interactive Plotly bundle with its static SVG fallback
        const figures = outputs.filter((o) => o.data?.["application/vnd.plotly.v1+json"]);
        assert.ok(figures.length >= 1, "no Plotly figure displayed");
        for (const f of figures) {
          const svg = f.data!["image/svg+xml"];
          const text = Array.isArray(svg) ? svg.join("") : String(svg);
          assert.match(text, /^<svg[^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
        }
        assert.ok(outputs.some((o) => o.data?.["text/markdown"]), "no table displayed");
      });
    }
  } finally {
    await Deno.remove(kernel.dir, { recursive: true });
  }
});

Deno.test("a notebook with a failing cell fails the check (notebooks/fixtures/broken.ipynb)", async () => {
  const broken = join(REPO_ROOT, "notebooks/fixtures/broken.ipynb");
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      join(REPO_ROOT, "cli/notebooks.ts"),
      broken,
      "--out",
      await Deno.makeTempDir(),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 1, stderr);
  assert.match(stderr, /broken\.ipynb: FAILED/);
  assert.match(stderr, /this cell fails on purpose/);
  assert.match(stderr, /error: notebook\(s\) failed: .*broken\.ipynb/);
});
