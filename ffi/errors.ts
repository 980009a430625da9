/**
 * Errors reported by libhcinfer: every fallible entry point returns an `hci_status` and writes a
 * NUL-terminated message into a caller-supplied buffer; {@linkcode check} turns a nonzero status
 * into an {@linkcode HciError} carrying that message.
 *
 * @module
 */

import { allocBytes } from "./structs.ts";

/** The `hci_status` codes of `hcinfer.h`. */
export enum Status {
  /** Success. */
  Ok = 0,
  /** A parameter is out of range or inconsistent. */
  InvalidArgument = 1,
  /** A file is missing or unreadable. */
  Io = 2,
  /** A file is malformed (truncated, bad header, shape mismatch). */
  Format = 3,
  /** Valid input that this build cannot handle (architecture, dtype). */
  Unsupported = 4,
  /** An allocation failed. */
  OutOfMemory = 5,
  /** A numerical routine failed (SVD did not converge, NaN). */
  Numeric = 6,
  /** The caller's cancel flag was raised. */
  Cancelled = 7,
  /** A bug in the library. */
  Internal = 8,
}

const STATUS_NAMES: readonly string[] = [
  "HCI_OK",
  "HCI_ERR_INVALID_ARGUMENT",
  "HCI_ERR_IO",
  "HCI_ERR_FORMAT",
  "HCI_ERR_UNSUPPORTED",
  "HCI_ERR_OUT_OF_MEMORY",
  "HCI_ERR_NUMERIC",
  "HCI_ERR_CANCELLED",
  "HCI_ERR_INTERNAL",
];

/** The C name of a status code, e.g. `statusName(3) === "HCI_ERR_FORMAT"`. */
export function statusName(status: number): string {
  return STATUS_NAMES[status] ?? `HCI_STATUS_${status}`;
}

/** Bytes of the error buffer passed to every fallible call. */
export const ERR_LEN = 1024;
/** {@linkcode ERR_LEN} as the `size_t err_len` argument (`usize` is typed `bigint`). */
export const ERR_LEN_ARG: bigint = BigInt(ERR_LEN);

/** A fresh, zeroed error buffer of {@linkcode ERR_LEN} bytes (safe for nonblocking calls). */
export function errorBuffer(): Uint8Array<ArrayBuffer> {
  return allocBytes(ERR_LEN);
}

/** Decodes a NUL-terminated UTF-8 string from `bytes` (the whole buffer if there is no NUL). */
export function decodeCString(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return new TextDecoder().decode(end < 0 ? bytes : bytes.subarray(0, end));
}

/** A failure reported by libhcinfer: `message` is the library's own message. */
export class HciError extends Error {
  /** The `hci_status` code (nonzero). */
  readonly status: number;
  /** The C name of {@linkcode HciError.status}, e.g. `"HCI_ERR_IO"`. */
  readonly statusName: string;

  /**
   * Creates the error of one failed call.
   *
   * @param status the nonzero `hci_status` returned by the call
   * @param message the library's message (when empty, the status name is used)
   * @param options the standard `Error` options (`cause`)
   */
  constructor(status: number, message: string, options?: ErrorOptions) {
    const name = statusName(status);
    super(message.length > 0 ? message : name, options);
    this.name = "HciError";
    this.status = status;
    this.statusName = name;
  }
}

/**
 * Throws an {@linkcode HciError} when `status` is nonzero, with the message the library wrote
 * into `err`; returns normally on `HCI_OK`.
 */
export function check(status: number, err: Uint8Array): void {
  if (status !== Status.Ok) throw new HciError(status, decodeCString(err));
}
