/**
 * `deno task notebooks [NOTEBOOK ...]`: executes notebooks headless with Jupyter's nbconvert on
 * the Deno kernel, as CI does; a failing cell fails the run. The kernel is installed by
 * `deno jupyter --install` into a private folder (nothing is written to the user's Jupyter
 * folders), and the executed copies go to `--out` (default results/runs/notebooks/).
 *
 * @module
 */

import { basename, join, resolve } from "node:path";
import { REPO_ROOT } from "../datasets/mod.ts";
import { parseCli, runMain, UsageError } from "./args.ts";

/** The notebooks CI executes: notebooks/*.ipynb (the fixtures/ folder is not included). */
export async function listNotebooks(dir = join(REPO_ROOT, "notebooks")): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && e.name.endsWith(".ipynb")) out.push(join(dir, e.name));
  }
  return out.sort();
}

/** A private Jupyter environment with the Deno kernel installed. */
export interface KernelEnv {
  /** Environment variables for jupyter (JUPYTER_PATH and private data/runtime/config dirs). */
  env: Record<string, string>;
  /** The folder holding it all; remove it when done. */
  dir: string;
}

/**
 * Installs the Deno kernel (`deno jupyter --install`, the running deno) into a new private
 * folder and returns the environment that makes jupyter find it first.
 *
 * @param dir the folder (default a new temporary one)
 * @returns the environment
 * @throws Error with deno's output when the installation fails
 */
export async function installDenoKernel(dir?: string): Promise<KernelEnv> {
  const root = dir ?? await Deno.makeTempDir({ prefix: "hcinfer-jupyter-" });
  const data = join(root, "data");
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["jupyter", "--install", "--force"],
    env: { XDG_DATA_HOME: data, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`deno jupyter --install failed: ${text.trim()}`);
  try {
    await Deno.stat(join(data, "jupyter", "kernels", "deno", "kernel.json"));
  } catch {
    throw new Error(`deno jupyter --install did not write ${data}/jupyter/kernels/deno: ${text}`);
  }
  return {
    dir: root,
    env: {
      JUPYTER_PATH: join(data, "jupyter"),
      JUPYTER_DATA_DIR: join(root, "user-data"),
      JUPYTER_RUNTIME_DIR: join(root, "runtime"),
      JUPYTER_CONFIG_DIR: join(root, "config"),
      PYDEVD_DISABLE_FILE_VALIDATION: "1",
      NO_COLOR: "1",
    },
  };
}

/** What executing one notebook gave. */
export interface NotebookRun {
  /** The notebook. */
  notebook: string;
  /** The executed copy. */
  output: string;
  /** True when every cell ran. */
  ok: boolean;
  /** Seconds taken. */
  seconds: number;
  /** nbconvert's output (the failing cell's error when not ok). */
  log: string;
}

/**
 * Executes a notebook with `jupyter nbconvert --to notebook --execute` on the Deno kernel.
 *
 * @param notebook the .ipynb file
 * @param kernel the environment from {@linkcode installDenoKernel}
 * @param outDir where the executed copy goes
 * @param timeoutSeconds per cell
 * @returns the outcome (not ok when a cell fails)
 * @throws Error when jupyter is not installed
 */
export async function executeNotebook(
  notebook: string,
  kernel: KernelEnv,
  outDir: string,
  timeoutSeconds = 600,
): Promise<NotebookRun> {
  await Deno.mkdir(outDir, { recursive: true });
  const t0 = performance.now();
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("jupyter", {
      args: [
        "nbconvert",
        "--to",
        "notebook",
        "--execute",
        `--ExecutePreprocessor.timeout=${timeoutSeconds}`,
        "--ExecutePreprocessor.kernel_name=deno",
        "--output-dir",
        outDir,
        notebook,
      ],
      cwd: resolve(notebook, ".."),
      env: kernel.env,
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (error) {
    throw new Error(
      `cannot run jupyter (${(error as Error).message}); install Jupyter ` +
        `(bash scripts/setup.sh installs Debian's jupyter-nbconvert and python3-nbclient)`,
      { cause: error },
    );
  }
  const log = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return {
    notebook,
    output: join(outDir, basename(notebook)),
    ok: out.success,
    seconds: (performance.now() - t0) / 1000,
    log,
  };
}

/** The error lines of a failed nbconvert run (the cell's exception), for messages. */
export function errorSummary(log: string): string {
  const lines = log.split("\n").filter((l) => !/^0\.00s|frozen|PYDEVD|^\s*$/.test(l));
  const start = lines.findIndex((l) => /CellExecutionError|An error occurred/.test(l));
  return (start >= 0 ? lines.slice(start) : lines.slice(-15)).slice(0, 40).join("\n");
}

const USAGE = `deno task notebooks [NOTEBOOK ...] [--out DIR]

Executes notebooks headless (jupyter nbconvert --execute) on the Deno kernel, installed by
'deno jupyter --install' into a private temporary folder; a failing cell fails the run (exit 1).
Without arguments: every notebooks/*.ipynb (not notebooks/fixtures/).

  --out DIR   folder for the executed copies (default results/runs/notebooks)

Needs Jupyter (Debian: jupyter-nbconvert, python3-nbclient, python3-ipykernel; installed by
scripts/setup.sh).`;

if (import.meta.main) {
  await runMain(async () => {
    const { values, positionals } = parseCli(Deno.args, { out: { type: "string" } }, USAGE);
    for (const p of positionals) {
      if (!p.endsWith(".ipynb")) throw new UsageError(`${p}: not a notebook (.ipynb)`);
      try {
        await Deno.stat(p);
      } catch {
        throw new UsageError(`${p}: no such notebook`);
      }
    }
    const notebooks = positionals.length
      ? positionals.map((p) => resolve(p))
      : await listNotebooks();
    const outDir = resolve(values.out ?? join(REPO_ROOT, "results/runs/notebooks"));
    const kernel = await installDenoKernel();
    const failed: string[] = [];
    try {
      for (const [i, nb] of notebooks.entries()) {
        console.error(`[${i}/${notebooks.length}] executing ${nb}`);
        const run = await executeNotebook(nb, kernel, outDir);
        console.error(
          `[${i + 1}/${notebooks.length}] ${basename(nb)}: ${run.ok ? "ok" : "FAILED"} ` +
            `(${run.seconds.toFixed(1)} s) -> ${run.output}`,
        );
        if (!run.ok) {
          console.error(errorSummary(run.log));
          failed.push(nb);
        }
      }
    } finally {
      await Deno.remove(kernel.dir, { recursive: true }).catch(() => {});
    }
    if (failed.length) throw new Error(`notebook(s) failed: ${failed.join(", ")}`);
  });
}
