/**
 * Internal bookkeeping of native handles shared by `Model` and `Session` (not re-exported).
 *
 * One {@linkcode NativeModel} per loaded model owns the `hci_model*` and every `hci_session*`
 * created on it. Closing only marks a handle; the native `*_free` runs once no nonblocking call
 * on it is in flight (a worker thread may still be using it), and the model is freed only after
 * all of its sessions. The same object is the held value of the finalization registries, so a
 * handle that was never closed is still freed (sessions first) when its owner is collected; it
 * holds no reference to the `Model` / `Session` objects themselves.
 *
 * @module
 */

import { sym } from "./library.ts";

/** One native session owned by a {@linkcode NativeModel}. */
export interface NativeSession {
  /** Unique per process (pointer values can be reused after a free). */
  readonly id: number;
  /** The `hci_session*`. */
  readonly ptr: Deno.PointerObject;
  /** A nonblocking call on this session is in flight. */
  busy: boolean;
  /** close() was requested; freed when not busy. */
  closing: boolean;
}

let nextSessionId = 1;
let liveModels = 0;
let liveSessions = 0;

/** Native handles not yet freed in this process (for leak tests; not re-exported). */
export function liveNativeHandles(): { models: number; sessions: number } {
  return { models: liveModels, sessions: liveSessions };
}

/** The native state of one model: its handle, its sessions and its in-flight calls. */
export class NativeModel {
  /** The `hci_model*`, or null once freed. */
  ptr: Deno.PointerObject | null;
  /** close() was requested. */
  closing = false;
  /** Nonblocking model calls (load excluded) in flight. */
  inflight = 0;
  /** Live native sessions by id. */
  readonly sessions: Map<number, NativeSession> = new Map();

  /** @param ptr the `hci_model*` returned by `hci_model_load` */
  constructor(ptr: Deno.PointerObject) {
    this.ptr = ptr;
    liveModels++;
  }

  /** Registers a new native session and returns its record. */
  addSession(ptr: Deno.PointerObject): NativeSession {
    const s: NativeSession = { id: nextSessionId++, ptr, busy: false, closing: false };
    this.sessions.set(s.id, s);
    liveSessions++;
    return s;
  }

  /** Marks a session closed; frees it now if no call is in flight on it. */
  closeSession(id: number): void {
    const s = this.sessions.get(id);
    if (!s) return;
    s.closing = true;
    this.settleSession(s);
  }

  /** Frees `s` if it is closing and idle, then the model if that was the last thing holding it. */
  settleSession(s: NativeSession): void {
    if (!s.closing || s.busy || !this.sessions.has(s.id)) return;
    this.sessions.delete(s.id);
    sym().hci_session_free(s.ptr);
    liveSessions--;
    this.settle();
  }

  /** Marks the model closed and closes its sessions; frees what is idle now, the rest later. */
  close(): void {
    if (this.closing) return;
    this.closing = true;
    for (const id of [...this.sessions.keys()]) this.closeSession(id);
    this.settle();
  }

  /** Frees the model if it is closing, idle and has no native session left. */
  settle(): void {
    if (!this.closing || this.inflight > 0 || this.sessions.size > 0 || this.ptr === null) return;
    const ptr = this.ptr;
    this.ptr = null;
    sym().hci_model_free(ptr);
    liveModels--;
  }
}

/**
 * Backstop for models never closed: frees their sessions, then the model. (A `Model` that is
 * collectable has no call in flight and no reachable `Session`: both reference it.)
 */
export const modelFinalizer: FinalizationRegistry<NativeModel> = new FinalizationRegistry(
  (native) => native.close(),
);

/** Backstop for sessions never closed (their model may still be in use). */
export const sessionFinalizer: FinalizationRegistry<{ native: NativeModel; id: number }> =
  new FinalizationRegistry(({ native, id }) => native.closeSession(id));

/** Copies `data` into a fresh off-heap `Int32Array` (safe to hand to a nonblocking call). */
export function int32Copy(data: ArrayLike<number>): Int32Array<ArrayBuffer> {
  const out = new Int32Array(new ArrayBuffer(data.length * 4));
  out.set(data);
  return out;
}

/** Encodes `s` as a NUL-terminated UTF-8 string in a fresh off-heap buffer. */
export function cStringBytes(s: string): Uint8Array<ArrayBuffer> {
  const utf8 = new TextEncoder().encode(s);
  if (utf8.includes(0)) throw new TypeError(`string contains a NUL byte: ${JSON.stringify(s)}`);
  const out = new Uint8Array(new ArrayBuffer(utf8.length + 1));
  out.set(utf8);
  return out;
}

/**
 * Keeps its arguments referenced: call it after the `await` of a nonblocking FFI call with every
 * buffer passed to that call, so none is collected while a worker thread still uses it.
 */
export function retain(..._buffers: unknown[]): void {}

/** Options common to the long calls. */
export interface LongCallOptions {
  /** Called with the library's progress counter (layers or windows done) when it changes. */
  onProgress?: (done: number) => void;
  /** Raises the call's cancel flag; the call then rejects with `signal.reason`. */
  signal?: AbortSignal;
}

/** How often the progress counter of a long call is polled, in milliseconds. */
export const PROGRESS_POLL_MS = 100;

/**
 * Runs a long nonblocking call that takes a progress counter and a cancel flag: polls the counter
 * while it runs, raises the flag when `signal` aborts (or when `onProgress` throws), and reports
 * the final count once more when the call settles.
 *
 * @param start starts the call with the (off-heap) counter and flag it must pass to C
 * @returns the call's status; rejects with `signal.reason` when the signal aborted it, or with
 *   the callback's error when `onProgress` threw
 */
export async function runLongCall(
  start: (progress: BigInt64Array<ArrayBuffer>, cancel: Int32Array<ArrayBuffer>) => Promise<number>,
  options: LongCallOptions = {},
  cancelledStatus: number,
): Promise<number> {
  const { onProgress, signal } = options;
  signal?.throwIfAborted();
  const progress = new BigInt64Array(new ArrayBuffer(8));
  const cancel = new Int32Array(new ArrayBuffer(4));
  let reported = -1;
  let callbackError: { error: unknown } | undefined;
  const report = () => {
    if (!onProgress || callbackError) return;
    const done = Number(progress[0]);
    if (done === reported) return;
    reported = done;
    try {
      onProgress(done);
    } catch (error) {
      callbackError = { error };
      cancel[0] = 1;
    }
  };
  const onAbort = () => {
    cancel[0] = 1;
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  const timer = onProgress ? setInterval(report, PROGRESS_POLL_MS) : undefined;
  let status: number;
  try {
    status = await start(progress, cancel);
  } finally {
    if (timer !== undefined) clearInterval(timer);
    signal?.removeEventListener("abort", onAbort);
    retain(progress, cancel);
  }
  report();
  if (callbackError) throw callbackError.error;
  if (status === cancelledStatus && signal?.aborted) throw signal.reason;
  return status;
}
