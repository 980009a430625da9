/**
 * Shared zod schemas of experiment settings, and {@linkcode parseConfig}, which turns a zod
 * failure into one clear message naming the config's source and every failing key path.
 *
 * @module
 */

import { z } from "zod";

/** Weight bits; 16 means unquantized. */
export const BitsSchema = z.literal([2, 3, 4, 8, 16]);
/** Quantization group size; -1 means one group per output channel. */
export const GroupSizeSchema = z.literal([32, 64, 128, -1]);
/** Rank of a compensation branch (0 = none). */
export const RankSchema = z.int().min(0);
/** Window length of perplexity evaluation, in tokens. */
export const SeqLenSchema = z.int().min(2);
/** Random seed. */
export const SeedSchema = z.int().min(0);

/** One quantization setting. */
export const QuantSettingSchema = z.strictObject({
  bits: BitsSchema,
  groupSize: GroupSizeSchema,
  rank: RankSchema,
});
/** One quantization setting: bits (16 = unquantized), group size (-1 = per channel), rank. */
export type QuantSetting = z.infer<typeof QuantSettingSchema>;

/** Grid axes of quantization settings, each a non-empty list. */
export const QuantGridSchema = z.strictObject({
  bits: z.array(BitsSchema).min(1),
  groupSize: z.array(GroupSizeSchema).min(1),
  rank: z.array(RankSchema).min(1),
});
/** Grid axes of quantization settings. */
export type QuantGrid = z.infer<typeof QuantGridSchema>;

/** Evaluation text: a name for tables, a file, its format and optional caps. */
export const DatasetSpecSchema = z.strictObject({
  name: z.string().min(1),
  path: z.string().min(1),
  format: z.enum(["text", "c4-jsonl"]).optional(),
  maxWindows: z.int().positive().optional(),
  maxDocs: z.int().positive().optional(),
});
/** Evaluation text: name, path, format (by extension when absent), window and document caps. */
export type DatasetSpec = z.infer<typeof DatasetSpecSchema>;

/** A model checkpoint folder and its name in tables. */
export const ModelSpecSchema = z.strictObject({
  name: z.string().min(1),
  path: z.string().min(1),
});
/** A model checkpoint folder and its name in tables. */
export type ModelSpec = z.infer<typeof ModelSpecSchema>;

/** Weight quantizer. */
export const QuantizerSchema = z.enum(["rtn", "gptq"]);
/** Scaling of the residual before its SVD: identity, activation diagonal or full covariance. */
export const ScalingSchema = z.enum(["plain", "act-diag", "act-cov"]);
/** Rank allocation across layers under a budget. */
export const AllocationSchema = z.enum(["uniform", "energy", "sensitivity"]);
/** Where compensation branches are computed. */
export const PlacementSchema = z.enum(["none", "gpu", "cpu-sync", "cpu-async"]);

/** A config that failed validation; `issues` holds one line per failing key path. */
export class ConfigError extends Error {
  /** One `path: problem` line per issue. */
  readonly issues: string[];
  /**
   * Builds the error and its message from the source and the issue lines.
   *
   * @param source where the config came from (a file, or "command line")
   * @param issues one `path: problem` line per issue
   */
  constructor(source: string, issues: string[]) {
    super(`invalid experiment config in ${source}: ${issues.join("; ")}`);
    this.name = "ConfigError";
    this.issues = issues;
  }
}

/**
 * Validates a config against a schema.
 *
 * @param schema the zod schema
 * @param value the config value
 * @param source where it came from, for the message (a file name, or "command line")
 * @returns the parsed (typed, defaulted) config
 * @throws ConfigError, e.g. `invalid experiment config in experiments/demo.ts: grid.bits[2]:
 *   expected one of 2,3,4,8,16, got 5`
 */
export function parseConfig<S extends z.ZodType>(
  schema: S,
  value: unknown,
  source: string,
): z.output<S> {
  const result = schema.safeParse(value, { reportInput: true });
  if (result.success) return result.data;
  throw new ConfigError(source, result.error.issues.flatMap(describeIssue));
}

/**
 * A key path as written in code: `grid.bits[2]`; the empty path is "(config)".
 *
 * @param path the path of a zod issue
 * @returns the path's text
 */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const key of path) {
    if (typeof key === "number") out += `[${key}]`;
    else if (typeof key === "string" && /^[A-Za-z_$][\w$]*$/.test(key)) {
      out += out === "" ? key : `.${key}`;
    } else out += `[${JSON.stringify(String(key))}]`;
  }
  return out === "" ? "(config)" : out;
}

function describeIssue(issue: z.core.$ZodIssue): string[] {
  const at = formatPath(issue.path);
  const got = show(issue.input);
  switch (issue.code) {
    case "invalid_type":
      return [
        issue.input === undefined
          ? `${at}: missing (expected ${issue.expected})`
          : `${at}: expected ${issue.expected}, got ${got}`,
      ];
    case "invalid_value":
      return [
        issue.values.length === 1
          ? `${at}: expected ${show(issue.values[0])}, got ${got}`
          : `${at}: expected one of ${issue.values.map(show).join(",")}, got ${got}`,
      ];
    case "too_small":
    case "too_big": {
      const small = issue.code === "too_small";
      const bound = small ? issue.minimum : issue.maximum;
      const op = small ? (issue.inclusive ? ">=" : ">") : (issue.inclusive ? "<=" : "<");
      const what = issue.origin === "array"
        ? "length"
        : issue.origin === "string"
        ? "string length"
        : "value";
      const actual = issue.origin === "array" || issue.origin === "string"
        ? String((issue.input as { length?: number })?.length)
        : got;
      return [`${at}: ${what} must be ${op} ${bound}, got ${actual}`];
    }
    case "unrecognized_keys":
      return issue.keys.map((k) => `${formatPath([...issue.path, k])}: unknown key`);
    default:
      return [`${at}: ${issue.message}${issue.input === undefined ? "" : `, got ${got}`}`];
  }
}

function show(value: unknown): string {
  if (value === undefined) return "undefined";
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "number") return String(value); // NaN and Infinity too
  try {
    const text = JSON.stringify(value);
    return text.length > 60 ? `${text.slice(0, 60)}…` : text;
  } catch {
    return String(value);
  }
}
