/**
 * Reading experiment configs from JSON files. Paths inside a config may be written as
 * `shared:<path>` (under the shared tree, `$HCINFER_SHARED` or `../shared`), `repo:<path>`
 * (under this repository) or relative to the config file's folder.
 *
 * @module
 */

import { dirname, isAbsolute, join, resolve } from "node:path";
import type { z } from "zod";
import { readJson, REPO_ROOT, sharedRoot } from "../datasets/mod.ts";
import { parseConfig } from "./schema.ts";

/**
 * Resolves one path of a config.
 *
 * @param path as written in the config
 * @param baseDir folder the config file is in
 * @returns an absolute path
 */
export function resolveConfigPath(path: string, baseDir: string): string {
  if (path.startsWith("shared:")) return join(sharedRoot(), path.slice("shared:".length));
  if (path.startsWith("repo:")) return join(REPO_ROOT, path.slice("repo:".length));
  return isAbsolute(path) ? path : resolve(baseDir, path);
}

/** Rewrites every string field named `path` in `value` with {@linkcode resolveConfigPath}. */
export function resolvePaths(value: unknown, baseDir: string): unknown {
  if (Array.isArray(value)) return value.map((v) => resolvePaths(v, baseDir));
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [
        k,
        k === "path" && typeof v === "string"
          ? resolveConfigPath(v, baseDir)
          : resolvePaths(v, baseDir),
      ]),
    );
  }
  return value;
}

/**
 * Reads a JSON config file and resolves its paths (validation is the experiment's schema's job).
 *
 * @throws Error naming the file when it is missing or not valid JSON
 */
export async function readConfigFile(file: string): Promise<unknown> {
  return resolvePaths(await readJson(file, "experiment config"), dirname(resolve(file)));
}

/** The folder of the configs bundled with the experiments (`experiments/configs/`). */
export const BUNDLED_CONFIGS_DIR: string = new URL("./configs/", import.meta.url).pathname;

/**
 * Reads and validates a bundled config by file name, e.g. `throughput_h100.json`.
 *
 * @throws ConfigError naming the file and the fields that do not fit `schema`
 */
export async function readBundledConfig<S extends z.ZodType>(
  schema: S,
  name: string,
): Promise<z.output<S>> {
  const file = join(BUNDLED_CONFIGS_DIR, name);
  return parseConfig(schema, await readConfigFile(file), file);
}
