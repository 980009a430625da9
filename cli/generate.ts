/**
 * `deno task generate`: greedy continuation of a prompt; prints the token ids and the text.
 *
 * @module
 */

import { loadTokenizer } from "../datasets/mod.ts";
import { Model, Session } from "../ffi/mod.ts";
import { QuantState } from "../experiments/quant_state.ts";
import { intOption, parseCli, runMain, UsageError } from "./args.ts";

const USAGE = `deno task generate --model DIR --prompt TEXT [options]

Greedy decoding with the KV cache. Prints a JSON object with the prompt ids, the generated ids
and the decoded text.

  --model DIR      Hugging Face checkpoint folder
  --prompt TEXT    prompt (BOS is prepended)
  --n N            new tokens (default 24)
  --bits B         2, 3, 4, 8, or 16 = unquantized (default 16)
  --group G        group size (default 128)
  --rank R         compensation rank (default 0)
  --stop-at-eos    stop when </s> is generated`;

await runMain(async () => {
  const { values } = parseCli(Deno.args, {
    model: { type: "string" },
    prompt: { type: "string" },
    n: { type: "string" },
    bits: { type: "string" },
    group: { type: "string" },
    rank: { type: "string" },
    "stop-at-eos": { type: "boolean" },
  }, USAGE);
  if (!values.model) throw new UsageError(`--model is required\n\n${USAGE}`);
  if (values.prompt === undefined) throw new UsageError(`--prompt is required\n\n${USAGE}`);
  const nNew = intOption(values.n, "n", 24, 0);
  const bits = intOption(values.bits, "bits", 16);
  if (![2, 3, 4, 8, 16].includes(bits)) throw new UsageError(`--bits: expected 2, 3, 4, 8 or 16`);
  const groupSize = intOption(values.group, "group", 128);
  const rank = intOption(values.rank, "rank", 0, 0);

  const tokenizer = await loadTokenizer(values.model);
  using model = await Model.load(values.model);
  await new QuantState(model, rank).apply({ bits, groupSize, rank });
  const prompt = tokenizer.encode(values.prompt);
  if (prompt.length + nNew > model.info.maxPositions) {
    throw new UsageError(
      `prompt (${prompt.length} tokens) + --n ${nNew} exceeds the model's ${model.info.maxPositions} positions`,
    );
  }
  using session = Session.create(model, { nCtx: prompt.length + nNew });
  const eos = values["stop-at-eos"] ? (tokenizer.eosId ?? -1) : -1;
  const ids = await session.generateGreedy(prompt, nNew, eos);
  console.log(JSON.stringify({
    promptIds: Array.from(prompt),
    ids: Array.from(ids),
    text: tokenizer.decode([...prompt, ...ids], { skipSpecialTokens: false }),
  }));
});
