/**
 * `Session`: one sequence's KV cache on a {@linkcode Model}, for decoding and greedy generation.
 *
 * ```ts
 * using session = Session.create(model, { nCtx: 256 });
 * const logits = await session.decode(promptIds); // logits of the last prompt token
 * const ids = await session.generateGreedy(promptIds, 24);
 * ```
 *
 * @module
 */

import { check, ERR_LEN_ARG, errorBuffer } from "./errors.ts";
import {
  int32Copy,
  type NativeModel,
  type NativeSession,
  retain,
  sessionFinalizer,
} from "./handles.ts";
import { sym } from "./library.ts";
import { type Model, nativeOf } from "./model.ts";
import {
  allocBytes,
  decodeSessionParams,
  encodeSessionParams,
  type SessionParams,
} from "./structs.ts";

/** Options of {@linkcode Session.create} (the fields of `hci_session_params`). */
export interface SessionOptions {
  /** KV cache capacity in tokens; 0 or absent = the model's maxPositions. */
  nCtx?: number;
  /** Threads for this session's calls; 0 or absent = the model's. */
  nThreads?: number;
}

/**
 * A KV cache on a model (`hci_session*`). It keeps its {@linkcode Model} object referenced.
 *
 * One call at a time: starting `decode` / `generateGreedy` (or `reset`, `nPast`) while another
 * call on the same session is still running throws, since the order of appends would be
 * undefined. Close it with {@linkcode Session.close} or `using`; closing its model closes it too.
 */
export class Session implements Disposable {
  /** The model this session decodes with. */
  readonly model: Model;
  /** The parameters it was created with (defaults filled in). */
  readonly params: SessionParams;
  readonly #native: NativeModel;
  readonly #id: number;

  private constructor(model: Model, native: NativeModel, s: NativeSession, params: SessionParams) {
    this.model = model;
    this.params = params;
    this.#native = native;
    this.#id = s.id;
    sessionFinalizer.register(this, { native, id: s.id }, this);
  }

  /**
   * Creates an empty KV cache on `model`.
   *
   * @throws Error when the model is closed; HciError on invalid parameters or out of memory
   */
  static create(model: Model, options: SessionOptions = {}): Session {
    const native = nativeOf(model);
    const s = sym();
    const defaults = decodeSessionParams(s.hci_session_default_params());
    const params: SessionParams = {
      nCtx: options.nCtx ?? defaults.nCtx,
      nThreads: options.nThreads ?? defaults.nThreads,
    };
    const out = allocBytes(8);
    const err = errorBuffer();
    check(
      s.hci_session_create(native.ptr!, encodeSessionParams(params), out, err, ERR_LEN_ARG),
      err,
    );
    const ptr = Deno.UnsafePointer.create(new BigUint64Array(out.buffer)[0]);
    if (ptr === null) throw new Error("hcinfer: hci_session_create returned no session");
    return new Session(model, native, native.addSession(ptr), params);
  }

  /** True once this session or its model was closed. */
  get closed(): boolean {
    const s = this.#native.sessions.get(this.#id);
    return !s || s.closing;
  }

  #live(): NativeSession {
    const s = this.#native.sessions.get(this.#id);
    if (!s || s.closing) {
      throw new Error(
        `hcinfer: session on ${this.model.dir} is closed` +
          (this.#native.closing ? " (its model was closed)" : ""),
      );
    }
    if (s.busy) {
      throw new Error("hcinfer: a call on this session is still running; await it first");
    }
    return s;
  }

  async #call<T>(run: (ptr: Deno.PointerObject) => Promise<T>): Promise<T> {
    const s = this.#live();
    s.busy = true;
    try {
      return await run(s.ptr);
    } finally {
      s.busy = false;
      this.#native.settleSession(s);
    }
  }

  /** Tokens already in the cache. */
  get nPast(): number {
    return sym().hci_session_n_past(this.#live().ptr);
  }

  /** Empties the cache. */
  reset(): void {
    const ptr = this.#live().ptr;
    const err = errorBuffer();
    check(sym().hci_session_reset(ptr, err, ERR_LEN_ARG), err);
  }

  /**
   * Appends tokens to the cache (a prefill when more than one) on a worker thread and returns
   * the logits of the last one (`vocabSize` floats).
   */
  decode(tokens: Int32Array | readonly number[]): Promise<Float32Array<ArrayBuffer>> {
    return this.#call(async (ptr) => {
      const data = int32Copy(tokens);
      const logits = new Float32Array(new ArrayBuffer(this.model.info.vocabSize * 4));
      const err = errorBuffer();
      const status = await sym().hci_session_decode(
        ptr,
        data,
        data.length,
        logits,
        err,
        ERR_LEN_ARG,
      );
      retain(data, logits, err);
      check(status, err);
      return logits;
    });
  }

  /**
   * Greedy generation on a worker thread: resets the cache, prefills `prompt`, then appends
   * argmax tokens until `nNew` are produced or `eosId` (if >= 0) is produced (it is included).
   *
   * @returns the new tokens only (not the prompt)
   */
  generateGreedy(
    prompt: Int32Array | readonly number[],
    nNew: number,
    eosId = -1,
  ): Promise<Int32Array<ArrayBuffer>> {
    return this.#call(async (ptr) => {
      const data = int32Copy(prompt);
      // At least one element: an empty buffer would reach C as NULL.
      const out = new Int32Array(new ArrayBuffer(Math.max(nNew, 1) * 4));
      const nOut = new Int32Array(new ArrayBuffer(4));
      const err = errorBuffer();
      const status = await sym().hci_generate_greedy(
        ptr,
        data,
        data.length,
        nNew,
        eosId,
        out,
        nOut,
        err,
        ERR_LEN_ARG,
      );
      retain(data, out, nOut, err);
      check(status, err);
      return out.slice(0, nOut[0]);
    });
  }

  /** Closes the session; idempotent. Freed now, or when a call still running on it finishes. */
  close(): void {
    sessionFinalizer.unregister(this);
    this.#native.closeSession(this.#id);
  }

  /** Same as {@linkcode Session.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
