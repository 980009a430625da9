/**
 * Tokenization with a model's own `tokenizer.json`, through `@huggingface/tokenizers` (pure JS).
 *
 * The library adds special tokens through the post-processor of `tokenizer.json` (for the
 * project's checkpoints a `TemplateProcessing` whose `single` template is `<s> $A`) when its
 * `add_special_tokens` option is true, its default. This module always encodes the content
 * without the template and puts the BOS in front itself when asked, so `addBos: false` drops
 * exactly the leading BOS and nothing else, and other template tokens (a trailing EOS, say) are
 * never added.
 *
 * @module
 */

import { Tokenizer } from "@huggingface/tokenizers";
import { join } from "node:path";
import { readJson } from "./files.ts";

/** Options of {@linkcode TextTokenizer.encode}. */
export interface EncodeOptions {
  /**
   * Put the BOS token first (default true), as Hugging Face transformers does for Llama-style
   * tokenizers. Has no effect for a tokenizer without a BOS token (`bosId === null`).
   */
  addBos?: boolean;
}

/** Options of {@linkcode TextTokenizer.decode}. */
export interface DecodeOptions {
  /** Leave out special tokens such as `<s>` and `</s>` (default false). */
  skipSpecialTokens?: boolean;
  /**
   * Apply the library's `clean_up_tokenization` (" ." → ".", " 's" → "'s", ...). Default false,
   * so that decoding gives back exactly the encoded text. (The library itself defaults to true
   * unless tokenizer_config.json says otherwise.)
   */
  cleanUpSpaces?: boolean;
}

/** A loaded tokenizer. */
export interface TextTokenizer {
  /** The folder the tokenizer was read from. */
  readonly modelDir: string;
  /** Id of the beginning-of-sequence token, or null when the tokenizer has none. */
  readonly bosId: number | null;
  /** Id of the end-of-sequence token, or null when the tokenizer has none. */
  readonly eosId: number | null;
  /** Number of token ids (largest id + 1, added tokens included). */
  readonly vocabSize: number;
  /** Encodes text to token ids, BOS first unless `addBos` is false. */
  encode(text: string, options?: EncodeOptions): Int32Array;
  /** Decodes token ids to text. Throws a RangeError for an id outside the vocabulary. */
  decode(ids: ArrayLike<number>, options?: DecodeOptions): string;
}

type TokenSpec = string | { content?: string } | null | undefined;

/**
 * Loads the tokenizer of a Hugging Face model folder: `tokenizer.json` (required) and
 * `tokenizer_config.json` (optional; it names the BOS and EOS tokens).
 *
 * @param modelDir folder holding `tokenizer.json`
 * @returns the tokenizer
 * @throws Error naming the file when `tokenizer.json` is missing, is not valid JSON or is not
 *   understood by the library, or when `tokenizer_config.json` exists but is not valid JSON
 */
export async function loadTokenizer(modelDir: string): Promise<TextTokenizer> {
  const tokenizerPath = join(modelDir, "tokenizer.json");
  const configPath = join(modelDir, "tokenizer_config.json");
  const tokenizerJson = await readJson(tokenizerPath, "tokenizer file");
  let config: Record<string, unknown> = {};
  if (await exists(configPath)) {
    config = (await readJson(configPath, "tokenizer config file")) as Record<string, unknown>;
  }
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(tokenizerJson as object, config);
  } catch (error) {
    throw new Error(
      `tokenizer file ${tokenizerPath} is not supported: ${(error as Error).message}`,
      { cause: error },
    );
  }
  let vocabSize = 0;
  for (const id of tok.get_vocab(true).values()) vocabSize = Math.max(vocabSize, id + 1);
  const bosId = tokenId(tok, config.bos_token as TokenSpec) ??
    templateBosId(tokenizerJson as Record<string, unknown>);
  const eosId = tokenId(tok, config.eos_token as TokenSpec);

  return {
    modelDir,
    bosId,
    eosId,
    vocabSize,
    encode(text: string, options: EncodeOptions = {}): Int32Array {
      if (typeof text !== "string") throw new TypeError("encode: text must be a string");
      const ids = tok.encode(text, { add_special_tokens: false }).ids;
      const addBos = (options.addBos ?? true) && bosId !== null;
      const out = new Int32Array(ids.length + (addBos ? 1 : 0));
      if (addBos) out[0] = bosId;
      out.set(ids, addBos ? 1 : 0);
      return out;
    },
    decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
      const list = Array.from(ids);
      if (list.length === 0) return ""; // the library throws on an empty list
      for (const id of list) {
        if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
          throw new RangeError(
            `decode: token id ${id} is outside the vocabulary 0..${vocabSize - 1}`,
          );
        }
      }
      return tok.decode(list, {
        skip_special_tokens: options.skipSpecialTokens ?? false,
        clean_up_tokenization_spaces: options.cleanUpSpaces ?? false,
      });
    },
  };
}

function tokenId(tok: Tokenizer, spec: TokenSpec): number | null {
  const content = typeof spec === "string" ? spec : spec?.content;
  if (typeof content !== "string") return null;
  return tok.token_to_id(content) ?? null;
}

/** The id of a special token that the post-processor's `single` template puts first, if any. */
function templateBosId(tokenizerJson: Record<string, unknown>): number | null {
  const post = tokenizerJson.post_processor as {
    type?: string;
    single?: Array<{ SpecialToken?: { id: string } }>;
    special_tokens?: Record<string, { ids?: number[] }>;
  } | null;
  if (post?.type !== "TemplateProcessing") return null;
  const first = post.single?.[0]?.SpecialToken?.id;
  if (first === undefined) return null;
  return post.special_tokens?.[first]?.ids?.[0] ?? null;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}
