/**
 * Locating and opening libhcinfer (once per process).
 *
 * The library is `$HCINFER_LIB` when that variable is set, else
 * `<repo>/runtime/build/libhcinfer.so` next to this file's repository (built by
 * `bash scripts/setup.sh`). Opening it checks `hci_abi_version()` against
 * {@linkcode ABI_VERSION}. Needs `--allow-ffi`, and `--allow-env=HCINFER_LIB` to honour the
 * variable.
 *
 * @module
 */

import { type HciSymbols, symbols } from "./symbols.ts";

/** The `HCI_ABI_VERSION` these bindings were written against. */
export const ABI_VERSION = 1;

/** The environment variable that overrides the library's path. */
export const LIBRARY_ENV = "HCINFER_LIB";

function libraryFileName(): string {
  switch (Deno.build.os) {
    case "darwin":
      return "libhcinfer.dylib";
    case "windows":
      return "hcinfer.dll";
    default:
      return "libhcinfer.so";
  }
}

function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch (e) {
    // Without --allow-env the override is simply not consulted.
    if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
      return undefined;
    }
    throw e;
  }
}

function urlToPath(url: URL): string {
  if (url.protocol !== "file:") {
    throw new Error(
      `hcinfer: cannot locate the library next to ${url.href} (not a local file); ` +
        `set ${LIBRARY_ENV} to the path of ${libraryFileName()}`,
    );
  }
  const path = decodeURIComponent(url.pathname);
  // file:///C:/x on Windows has a leading slash before the drive letter.
  return Deno.build.os === "windows" ? path.replace(/^\/([A-Za-z]:)/, "$1") : path;
}

/**
 * The path the library is loaded from: `$HCINFER_LIB` if set, else
 * `<repo>/runtime/build/libhcinfer.so` resolved from this module's URL.
 */
export function libraryPath(): string {
  return readEnv(LIBRARY_ENV) ??
    urlToPath(new URL(`../runtime/build/${libraryFileName()}`, import.meta.url));
}

function exists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
      return true; // let dlopen report what it can
    }
    throw e;
  }
}

/** An opened libhcinfer. */
export interface Library {
  /** Where it was loaded from. */
  readonly path: string;
  /** The typed symbol table. */
  readonly symbols: HciSymbols;
}

let opened: Library | undefined;

const PROBE = { hci_abi_version: { parameters: [], result: "i32" } } as const;

function open<S extends Deno.ForeignLibraryInterface>(
  path: string,
  table: S,
): Deno.DynamicLibrary<S> {
  try {
    return Deno.dlopen(path, table);
  } catch (e) {
    throw new Error(
      `hcinfer: cannot open ${path}: ${e instanceof Error ? e.message : String(e)}; ` +
        `rebuild it with \`bash scripts/setup.sh\``,
      { cause: e },
    );
  }
}

/**
 * Opens the library on first use and returns it; later calls return the same instance.
 *
 * @throws Error when the file is missing (saying where it looked and how to build it), when it
 *   cannot be opened, or when its ABI version differs from {@linkcode ABI_VERSION}.
 */
export function library(): Library {
  if (opened) return opened;
  const path = libraryPath();
  const fromEnv = readEnv(LIBRARY_ENV) !== undefined;
  if (!exists(path)) {
    throw new Error(
      `hcinfer: library not found at ${path}` +
        (fromEnv ? ` (from ${LIBRARY_ENV})` : "") +
        `; build it with \`bash scripts/setup.sh\` (or \`cmake -S runtime -B runtime/build && ` +
        `cmake --build runtime/build\`), or set ${LIBRARY_ENV} to the path of a built ` +
        `${libraryFileName()}`,
    );
  }
  // Check the ABI with a minimal table first, so that a library of another version fails with
  // this message rather than with a missing symbol. On success the probe stays open: unloading
  // a library that may have started thread pools (OpenBLAS, OpenMP) is not safe.
  const probe = open(path, PROBE);
  const abi = probe.symbols.hci_abi_version();
  if (abi !== ABI_VERSION) {
    probe.close();
    throw new Error(
      `hcinfer: ${path} has ABI version ${abi}, but these bindings need ${ABI_VERSION}; ` +
        `rebuild the library from this checkout (\`bash scripts/setup.sh\`) or update ffi/`,
    );
  }
  const lib = open(path, symbols);
  opened = { path, symbols: lib.symbols };
  return opened;
}

/** Shorthand for `library().symbols`. */
export function sym(): HciSymbols {
  return library().symbols;
}

function cString(ptr: Deno.PointerValue): string {
  return ptr === null ? "" : Deno.UnsafePointerView.getCString(ptr);
}

/** The library's version string (`hci_version()`), e.g. `"0.1.0 (g++ 12.2.0, ...)"`. */
export function libraryVersion(): string {
  return cString(sym().hci_version());
}

/** The library's name for a status code (`hci_status_name()`), e.g. `"HCI_ERR_IO"`. */
export function libraryStatusName(status: number): string {
  return cString(sym().hci_status_name(status));
}
