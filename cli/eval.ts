/**
 * `deno task eval`: perplexity of one (model, text, quantization) point, printed as one JSON
 * object.
 *
 * @module
 */

import { loadTokenizer } from "../datasets/mod.ts";
import { Model } from "../ffi/mod.ts";
import { measurePerplexity, tokenizeCorpus } from "../experiments/perplexity_eval.ts";
import { QuantState } from "../experiments/quant_state.ts";
import { intOption, parseCli, runMain, UsageError } from "./args.ts";

const USAGE = `deno task eval --model DIR --data FILE [options]

Perplexity by the GPTQ protocol (text tokenized once with BOS, floor(n/seq) windows,
exp of the mean NLL of the predicted tokens). Prints one JSON object.

  --model DIR        Hugging Face checkpoint folder (config.json, safetensors, tokenizer.json)
  --data FILE        text file (read as-is) or C4-style .jsonl (texts joined with "\\n\\n")
  --format F         text | c4-jsonl (default: by extension)
  --seq N            window length in tokens (default 512)
  --max-windows N    score only the first N windows (default: all)
  --bits B           2, 3, 4, 8, or 16 = unquantized (default 16)
  --group G          quantization group size: 32, 64, 128, or -1 per row (default 128)
  --rank R           low-rank compensation rank per layer (default 0)
  --threads N        worker threads (default: all cores)`;

await runMain(async () => {
  const { values } = parseCli(Deno.args, {
    model: { type: "string" },
    data: { type: "string" },
    format: { type: "string" },
    seq: { type: "string" },
    "max-windows": { type: "string" },
    bits: { type: "string" },
    group: { type: "string" },
    rank: { type: "string" },
    threads: { type: "string" },
  }, USAGE);
  if (!values.model) throw new UsageError(`--model is required\n\n${USAGE}`);
  if (!values.data) throw new UsageError(`--data is required\n\n${USAGE}`);
  const format = values.format;
  if (format !== undefined && format !== "text" && format !== "c4-jsonl") {
    throw new UsageError(`--format: expected text or c4-jsonl, got '${format}'`);
  }
  const seqLen = intOption(values.seq, "seq", 512, 2);
  const maxWindows = intOption(values["max-windows"], "max-windows", 0, 0);
  const bits = intOption(values.bits, "bits", 16);
  if (![2, 3, 4, 8, 16].includes(bits)) throw new UsageError(`--bits: expected 2, 3, 4, 8 or 16`);
  const groupSize = intOption(values.group, "group", 128);
  if (![32, 64, 128, -1].includes(groupSize)) {
    throw new UsageError(`--group: expected 32, 64, 128 or -1, got ${groupSize}`);
  }
  const rank = intOption(values.rank, "rank", 0, 0);
  const nThreads = intOption(values.threads, "threads", 0, 0);

  const tokenizer = await loadTokenizer(values.model);
  using model = await Model.load(values.model, { nThreads });
  const tokens = await tokenizeCorpus(tokenizer, { path: values.data, format });
  const quantSeconds = await new QuantState(model, rank).apply({ bits, groupSize, rank });
  const r = await measurePerplexity(model, tokens, { seqLen, maxWindows: maxWindows || undefined });
  console.log(JSON.stringify({
    model: values.model,
    data: values.data,
    bits,
    groupSize: bits === 16 ? null : groupSize,
    rank: bits === 16 ? 0 : rank,
    ...r,
    quantSeconds,
  }));
});
