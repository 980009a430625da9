/**
 * Reading text and JSON files with errors that name the file.
 *
 * @module
 */

const UTF8 = new TextDecoder("utf-8", { ignoreBOM: true });

/**
 * Reads a whole file as UTF-8, byte for byte: a byte-order mark is kept (as Python's
 * `open(path, encoding="utf-8").read()` keeps it), nothing is stripped, newlines are untouched.
 *
 * @param path the file to read
 * @param what how to call the file in an error message, e.g. "tokenizer file"
 * @returns the decoded text
 * @throws Error naming the path when it does not exist or cannot be read
 */
export async function readText(path: string, what = "file"): Promise<string> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (error) {
    throw fileError(path, what, error);
  }
  return UTF8.decode(bytes);
}

/**
 * Reads and parses a JSON file.
 *
 * @param path the file to read
 * @param what how to call the file in an error message
 * @returns the parsed value
 * @throws Error naming the path when it does not exist, cannot be read or is not valid JSON
 */
export async function readJson(path: string, what = "file"): Promise<unknown> {
  const text = await readText(path, what);
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`${what} ${path} is not valid JSON: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

/**
 * Turns an error from a file operation into one whose message names the file.
 *
 * @param path the file the operation was on
 * @param what how to call the file
 * @param error the error thrown by Deno
 * @returns an Error saying the file does not exist, or that it could not be read and why
 */
export function fileError(path: string, what: string, error: unknown): Error {
  if (error instanceof Deno.errors.NotFound) {
    return new Error(`${what} ${path} does not exist`, { cause: error });
  }
  const message = error instanceof Error ? error.message : String(error);
  return new Error(`cannot read ${what} ${path}: ${message}`, { cause: error });
}
