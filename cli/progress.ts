/**
 * Sweep progress on stderr: one rewritten line on a terminal, plain lines otherwise.
 *
 * @module
 */

import type { SweepProgress } from "../experiments/runner.ts";

const enc = new TextEncoder();

function fmtSeconds(s: number | null): string {
  if (s === null || !Number.isFinite(s)) return "?";
  if (s < 60) return `${s.toFixed(0)}s`;
  return `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, "0")}s`;
}

/**
 * A progress reporter for {@linkcode runSweep}.
 *
 * @param describe short text for a point
 * @returns the callback
 */
export function progressReporter<P>(
  describe: (p: P) => string,
): (p: SweepProgress<P>) => void {
  const tty = Deno.stderr.isTerminal();
  return (p) => {
    const head = `[${p.done}/${p.total}${p.skipped ? `, ${p.skipped} already done` : ""}]`;
    const line = p.current === null
      ? `${head} finished in ${fmtSeconds(p.elapsedSeconds)}`
      : `${head} ${describe(p.current)} (elapsed ${fmtSeconds(p.elapsedSeconds)}, eta ${
        fmtSeconds(p.etaSeconds)
      })`;
    if (tty) {
      Deno.stderr.writeSync(enc.encode(`\r\x1b[2K${line}${p.current === null ? "\n" : ""}`));
    } else {
      console.error(line);
    }
  };
}

/** A free-form status of a long run (e.g. a Slurm job), for {@linkcode statusReporter}. */
export interface Status {
  /** Points done. */
  done: number;
  /** Points in all. */
  total: number;
  /** What is going on. */
  text: string;
  /** Seconds since the start. */
  elapsedSeconds: number;
  /** Estimated seconds left, or null. */
  etaSeconds: number | null;
  /** The last report (ends the rewritten line on a terminal). */
  final?: boolean;
}

/**
 * A status reporter in the style of {@linkcode progressReporter}: one rewritten line on a
 * terminal, plain lines otherwise (only when something changed, at most every 30 s otherwise).
 *
 * @returns the callback
 */
export function statusReporter(): (s: Status) => void {
  const tty = Deno.stderr.isTerminal();
  let last = "";
  let lastAt = -Infinity;
  return (s) => {
    const head = `[${s.done}/${s.total}]`;
    const body = `${head} ${s.text}`;
    const line = s.final
      ? `${body} after ${fmtSeconds(s.elapsedSeconds)}`
      : `${body} (elapsed ${fmtSeconds(s.elapsedSeconds)}, eta ${fmtSeconds(s.etaSeconds)})`;
    if (tty) {
      Deno.stderr.writeSync(enc.encode(`\r\x1b[2K${line}${s.final ? "\n" : ""}`));
    } else if (s.final || body !== last || s.elapsedSeconds - lastAt >= 30) {
      console.error(line);
      last = body;
      lastAt = s.elapsedSeconds;
    }
  };
}
