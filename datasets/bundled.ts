/**
 * Paths of the small texts bundled with the project (so the demo runs without ../shared) and of
 * the shared data tree.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { join, resolve } from "node:path";

/** The repository root (the folder above datasets/). */
export const REPO_ROOT: string = fileURLToPath(new URL("..", import.meta.url)).replace(/\/$/, "");

/** The folder of the bundled texts, datasets/data. */
export const BUNDLED_DATA_DIR: string = fileURLToPath(new URL("./data", import.meta.url));

/** The first 40,827 bytes of WikiText-2 test (wiki.test.raw), cut after a paragraph row. */
export const WIKITEXT2_TEST_HEAD: string = join(BUNDLED_DATA_DIR, "wikitext2_test_head.txt");

/** The first 39,999 bytes of books/heldout.txt, cut after a paragraph. */
export const BOOKS_HELDOUT_HEAD: string = join(BUNDLED_DATA_DIR, "books_heldout_head.txt");

/** The environment variable that overrides the shared tree's root. */
export const SHARED_ENV = "HCINFER_SHARED";

/**
 * The root of the shared tree (holding `data/` and `models/`): `$HCINFER_SHARED` when it is set
 * (and readable without a permission prompt), otherwise `../shared` beside the repository.
 *
 * @returns an absolute path
 */
export function sharedRoot(): string {
  const state = Deno.permissions.querySync({ name: "env", variable: SHARED_ENV }).state;
  const fromEnv = state === "granted" ? Deno.env.get(SHARED_ENV) : undefined;
  return fromEnv ? resolve(fromEnv) : resolve(REPO_ROOT, "..", "shared");
}

/**
 * A path under the shared data folder, e.g. `sharedDataPath("wikitext-2/wiki.test.raw")`.
 *
 * @param rel path relative to `<shared>/data`
 * @returns an absolute path (which may not exist)
 */
export function sharedDataPath(rel: string): string {
  return join(sharedRoot(), "data", rel);
}

/**
 * A path under the shared models folder, e.g. `sharedModelPath("small")`.
 *
 * @param rel path relative to `<shared>/models`
 * @returns an absolute path (which may not exist)
 */
export function sharedModelPath(rel: string): string {
  return join(sharedRoot(), "models", rel);
}
