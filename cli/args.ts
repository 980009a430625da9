/**
 * Command-line helpers shared by the `deno task` entry points: parsing with `node:util`
 * parseArgs, `--help`, integer options, and one clear line on stderr for a user error.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";

/** An error in what the user typed or pointed at: printed as one line, exit code 2. */
export class UsageError extends Error {
  /** @param message what is wrong, naming the option or file */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/**
 * Parses `args` against `options`; prints `usage` and exits 0 on `--help`.
 *
 * @throws UsageError for an unknown option or a missing value
 */
export function parseCli<O extends NonNullable<ParseArgsConfig["options"]>>(
  args: string[],
  options: O,
  usage: string,
) {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: { ...options, help: { type: "boolean", short: "h" } },
      allowPositionals: true,
      strict: true,
    });
  } catch (e) {
    throw new UsageError(`${(e as Error).message}\n\n${usage}`);
  }
  if ((parsed.values as Record<string, unknown>).help) {
    console.log(usage);
    Deno.exit(0);
  }
  return parsed;
}

/**
 * Reads an integer option.
 *
 * @throws UsageError naming the option when the value is not an integer in [min, max]
 */
export function intOption(
  value: string | undefined,
  name: string,
  fallback: number,
  min = -Infinity,
  max = Infinity,
): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new UsageError(`--${name}: expected an integer in [${min}, ${max}], got '${value}'`);
  }
  return n;
}

/**
 * Runs a CLI main function: user errors and library errors become one line on stderr and a
 * nonzero exit code instead of a stack trace.
 */
export async function runMain(main: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (e) {
    const err = e as Error;
    console.error(`error: ${err.message}`);
    if (Deno.env.get("HCINFER_DEBUG")) console.error(err.stack);
    Deno.exit(err instanceof UsageError ? 2 : 1);
  }
}
