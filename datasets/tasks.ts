/**
 * Zero-shot task loaders: the nine task files of the shared data tree (`data/tasks/*.jsonl`,
 * schemas in DATA.md, "Task files"), each turned into requests in the style of
 * lm-evaluation-harness (lm-eval): one `(context, continuation)` pair per answer choice, scored
 * by the log-likelihood of the continuation given the context.
 *
 * The prompts follow lm-eval's task configs (v0.4 `lm_eval/tasks/...`; `target_delimiter` is
 * the default `" "`, so every continuation starts with a space). The files hold the
 * llm-foundry (or, for HellaSwag, llama.cpp) preprocessed form of each example, and this is how
 * each one is mapped back to lm-eval's strings:
 *
 * | task | context (file fields) | continuation per choice | lm-eval source |
 * |---|---|---|---|
 * | arc_easy, arc_challenge | `query + "\nAnswer:"`; `query` is `"Question: {question}"` | `" " + choice` | `arc/arc_easy.yaml`: `"Question: {{question}}\nAnswer:"`, `choices.text` |
 * | piqa | `query + "Answer:"`; `query` is `"Question: {goal}\n"` | `" " + choice` | `piqa/piqa.yaml`: `"Question: {{goal}}\nAnswer:"`, `[sol1, sol2]` |
 * | boolq | `query` without its leading `"Passage: "`, `+ "\nAnswer:"` (`"{passage}\nQuestion: {question}?\nAnswer:"`) | `" no"`, `" yes"` | `super_glue/boolq/default.yaml` |
 * | copa | `query` with its final `", because"` / `", therefore"` turned into `" because"` / `" therefore"` (`premise.strip()[:-1] + " {connector}"`) | `" " + lowerFirst(choice)` | `super_glue/copa/utils.py` (`convert_choice`) |
 * | openbook_qa | `query` (the question stem) | `" " + choice` | `openbookqa/openbookqa.yaml`: `question_stem`, `choices.text` |
 * | hellaswag | `preprocess(ctx)`; `ctx` is already `"{activity_label}: {ctx_a} {ctx_b}"` | `" " + preprocess(ending)` | `hellaswag/utils.py` (`preprocess`, `process_docs`) |
 * | winogrande | `context_options[i]` (the sentence up to the blank, option i filled in) | `" " + continuation` (the rest of the sentence), the same for both options | `winogrande/preprocess_winogrande.py` (`partial_context`, `partial_target`; `multiple_inputs`) |
 * | lambada_openai | `context` (the text up to its last space) | `" " + continuation` (the last space-separated word) | `lambada/lambada_openai.yaml`: `text.split(' ')[:-1]`, `' ' + text.split(' ')[-1]` |
 *
 * Assumptions and known differences from lm-eval:
 * - ARC, PIQA, BoolQ, COPA and LAMBADA reproduce lm-eval's strings exactly, provided llm-foundry
 *   built `query` as described (checked on every record: the prefixes, `"\n"` and `"?"` endings,
 *   connectors and `context + " " + continuation` splits are all as assumed).
 * - HellaSwag: lm-eval builds `ctx_a + " " + ctx_b.capitalize()`; the file (klosax, for
 *   llama.cpp) has `ctx_b` uncapitalized and the boundary between `ctx_a` and `ctx_b` is lost, so
 *   the context is lm-eval's up to the case of `ctx_b` ("... on a roof. he" where lm-eval has
 *   "... on a roof. He"). lm-eval's `preprocess` (strip, `" [title]"` → `". "`, drop `[...]`,
 *   `"  "` → `" "`) is applied again to `ctx` and the endings; on this already cleaned text it
 *   changes nothing in practice. Accuracies compare with llama.cpp's more closely than lm-eval's.
 * - WinoGrande: the llm-foundry file stores lm-eval's partial contexts and partial target
 *   (stripped) directly.
 * - acc_norm divides by the length of the "choice" string as lm-eval's `doc_to_choice` gives it
 *   (see {@linkcode TaskExample.choices}): for WinoGrande these are the two contexts, as in lm-eval.
 *
 * @module
 */

import { join } from "node:path";
import { sharedDataPath } from "./bundled.ts";
import { readText } from "./files.ts";

/** The supported tasks, in the order of DATA.md's task table. */
export const TASK_NAMES = [
  "arc_easy",
  "arc_challenge",
  "openbook_qa",
  "piqa",
  "boolq",
  "copa",
  "winogrande",
  "lambada_openai",
  "hellaswag",
] as const;

/** A supported task. */
export type TaskName = (typeof TASK_NAMES)[number];

/** Static facts about a task. */
export interface TaskSpec {
  /** The task's name (also the file's stem). */
  name: TaskName;
  /** The lm-eval task it reproduces. */
  lmEvalTask: string;
  /**
   * `"multiple_choice"`: one request per choice, prediction = argmax log-likelihood.
   * `"greedy"` (LAMBADA): one request, correct when every continuation token is the argmax.
   */
  kind: "multiple_choice" | "greedy";
  /** Choices per example (1 for LAMBADA's single request). */
  numChoices: number;
  /** Accuracy of guessing: 1 / numChoices, 0 for LAMBADA. */
  chance: number;
  /** The metric lm-eval reports as the task's headline: acc_norm where it reports one, else acc. */
  primaryMetric: "acc" | "acc_norm";
  /** Records in the shared file (DATA.md). */
  records: number;
}

/** The specs of all tasks, by name. */
export const TASK_SPECS: Readonly<Record<TaskName, Readonly<TaskSpec>>> = {
  arc_easy: mc("arc_easy", "arc_easy", 4, "acc_norm", 2376),
  arc_challenge: mc("arc_challenge", "arc_challenge", 4, "acc_norm", 1172),
  openbook_qa: mc("openbook_qa", "openbookqa", 4, "acc_norm", 500),
  piqa: mc("piqa", "piqa", 2, "acc_norm", 1838),
  boolq: mc("boolq", "boolq", 2, "acc", 3270),
  copa: mc("copa", "copa", 2, "acc", 100),
  winogrande: mc("winogrande", "winogrande", 2, "acc", 1267),
  lambada_openai: {
    name: "lambada_openai",
    lmEvalTask: "lambada_openai",
    kind: "greedy",
    numChoices: 1,
    chance: 0,
    primaryMetric: "acc",
    records: 5153,
  },
  hellaswag: mc("hellaswag", "hellaswag", 4, "acc_norm", 10042),
};

function mc(
  name: TaskName,
  lmEvalTask: string,
  numChoices: number,
  primaryMetric: "acc" | "acc_norm",
  records: number,
): TaskSpec {
  return {
    name,
    lmEvalTask,
    kind: "multiple_choice",
    numChoices,
    chance: 1 / numChoices,
    primaryMetric,
    records,
  };
}

/** One loglikelihood request: score `continuation` given `context`. */
export interface ContinuationRequest {
  /** The text the model conditions on. */
  context: string;
  /** The text whose log-likelihood is measured (lm-eval: starts with the target delimiter). */
  continuation: string;
}

/** One example of a task. */
export interface TaskExample {
  /** 0-based index of the record in its file. */
  index: number;
  /** One request per choice (LAMBADA: one request). */
  requests: ContinuationRequest[];
  /**
   * lm-eval's `doc_to_choice` strings, whose lengths normalize acc_norm (characters) and
   * acc_bytes (UTF-8 bytes): the choices without the leading space; for WinoGrande the two
   * partial contexts; for LAMBADA the last word.
   */
  choices: string[];
  /** Index of the correct request (always 0 for LAMBADA). */
  gold: number;
}

/** A loaded task. */
export interface TaskData {
  /** The task's facts. */
  spec: Readonly<TaskSpec>;
  /** The file it was read from. */
  path: string;
  /** Its examples, in file order. */
  examples: TaskExample[];
}

/** Options of {@linkcode loadTask}. */
export interface LoadTaskOptions {
  /** The task file; default `<dir>/<name>.jsonl`. */
  path?: string;
  /** Folder of the task files; default the shared tree's `data/tasks`. */
  dir?: string;
  /** Keep only the first `limit` examples (a positive integer); default all. */
  limit?: number;
}

/**
 * Whether a string names a supported task.
 *
 * @param name the string
 * @returns true for one of {@linkcode TASK_NAMES}
 */
export function isTaskName(name: string): name is TaskName {
  return (TASK_NAMES as readonly string[]).includes(name);
}

/**
 * The default path of a task file.
 *
 * @param name the task
 * @param dir the folder; default the shared tree's `data/tasks`
 * @returns `<dir>/<name>.jsonl`
 */
export function taskPath(name: TaskName, dir: string = sharedDataPath("tasks")): string {
  return join(dir, `${name}.jsonl`);
}

/**
 * Loads a task file and builds its requests.
 *
 * @param name the task
 * @param options the file, or its folder, and a limit on the examples
 * @returns the task's spec, path and examples
 * @throws Error naming the file when it cannot be read; Error naming the file and line for a
 *   line that is not JSON or does not follow the task's schema; RangeError for a bad `limit`
 */
export async function loadTask(name: TaskName, options: LoadTaskOptions = {}): Promise<TaskData> {
  if (!isTaskName(name)) throw new RangeError(`unknown task ${JSON.stringify(name)}`);
  const { limit } = options;
  if (limit !== undefined && !(Number.isInteger(limit) && limit > 0)) {
    throw new RangeError(`loadTask: limit must be a positive integer, got ${limit}`);
  }
  const path = options.path ?? taskPath(name, options.dir);
  const lines = (await readText(path, `${name} task file`)).split("\n");
  const examples: TaskExample[] = [];
  for (let i = 0; i < lines.length && (limit === undefined || examples.length < limit); i++) {
    if (lines[i].trim() === "") continue;
    let record: unknown;
    try {
      record = JSON.parse(lines[i]);
    } catch (error) {
      throw new Error(`${path}:${i + 1}: malformed JSON line: ${(error as Error).message}`, {
        cause: error,
      });
    }
    try {
      examples.push(taskExample(name, record, examples.length));
    } catch (error) {
      throw new Error(`${path}:${i + 1}: ${(error as Error).message}`, { cause: error });
    }
  }
  return { spec: TASK_SPECS[name], path, examples };
}

/**
 * Builds one example from one record of a task file (see the module documentation for the
 * strings built per task).
 *
 * @param name the task
 * @param record the parsed JSON line
 * @param index the example's index in its file
 * @returns the example
 * @throws Error saying which field is missing or malformed
 */
export function taskExample(name: TaskName, record: unknown, index: number): TaskExample {
  if (record === null || typeof record !== "object" || Array.isArray(record)) {
    throw new Error(`expected a JSON object`);
  }
  const r = record as Record<string, unknown>;
  const spec = TASK_SPECS[name];
  switch (name) {
    case "arc_easy":
    case "arc_challenge": {
      const query = prefixed(r, "query", "Question: ");
      return choicesExample(index, `${query}\nAnswer:`, r, spec.numChoices, "gold");
    }
    case "openbook_qa":
      return choicesExample(index, str(r, "query"), r, spec.numChoices, "gold");
    case "piqa": {
      const query = prefixed(r, "query", "Question: ");
      if (!query.endsWith("\n")) throw new Error(`"query" should end with a newline`);
      return choicesExample(index, `${query}Answer:`, r, spec.numChoices, "gold");
    }
    case "boolq": {
      const query = prefixed(r, "query", "Passage: ");
      const choices = strings(r, "choices", 2);
      if (choices[0] !== "no" || choices[1] !== "yes") {
        throw new Error(`"choices" should be ["no", "yes"], got ${JSON.stringify(choices)}`);
      }
      return choicesExample(
        index,
        `${query.slice("Passage: ".length)}\nAnswer:`,
        r,
        2,
        "gold",
      );
    }
    case "copa": {
      const query = str(r, "query");
      const m = /^([\s\S]*), (because|therefore)$/.exec(query);
      if (!m) throw new Error(`"query" should end with ", because" or ", therefore"`);
      const choices = strings(r, "choices", 2).map(lowerFirst);
      const context = `${m[1]} ${m[2]}`;
      return {
        index,
        requests: choices.map((c) => ({ context, continuation: ` ${c}` })),
        choices,
        gold: goldIndex(r, "gold", 2),
      };
    }
    case "hellaswag": {
      const context = hellaswagPreprocess(str(r, "ctx"));
      const choices = strings(r, "endings", spec.numChoices).map(hellaswagPreprocess);
      return {
        index,
        requests: choices.map((c) => ({ context, continuation: ` ${c}` })),
        choices,
        gold: goldIndex(r, "label", spec.numChoices),
      };
    }
    case "winogrande": {
      const contexts = strings(r, "context_options", 2);
      const continuation = ` ${str(r, "continuation")}`;
      return {
        index,
        requests: contexts.map((context) => ({ context, continuation })),
        choices: contexts,
        gold: goldIndex(r, "gold", 2),
      };
    }
    case "lambada_openai": {
      const word = str(r, "continuation");
      if (word === "") throw new Error(`"continuation" is empty`);
      return {
        index,
        requests: [{ context: str(r, "context"), continuation: ` ${word}` }],
        choices: [word],
        gold: 0,
      };
    }
  }
}

/**
 * lm-eval's HellaSwag `preprocess`: strip, `" [title]"` → `". "`, remove `[...]` spans, then
 * replace each double space by one space (one pass, as Python's `str.replace`).
 *
 * @param text a context or ending
 * @returns the cleaned text
 */
export function hellaswagPreprocess(text: string): string {
  return text.trim().replaceAll(" [title]", ". ").replace(/\[.*?\]/g, "").replaceAll("  ", " ");
}

/**
 * lm-eval's COPA `convert_choice`: the first character lowercased.
 *
 * @param text a choice
 * @returns the choice with a lowercase first character
 */
export function lowerFirst(text: string): string {
  return text.length ? text[0].toLowerCase() + text.slice(1) : text;
}

function choicesExample(
  index: number,
  context: string,
  r: Record<string, unknown>,
  numChoices: number,
  goldKey: string,
): TaskExample {
  const choices = strings(r, "choices", numChoices);
  return {
    index,
    requests: choices.map((c) => ({ context, continuation: ` ${c}` })),
    choices,
    gold: goldIndex(r, goldKey, numChoices),
  };
}

function str(r: Record<string, unknown>, key: string): string {
  const v = r[key];
  if (typeof v !== "string") throw new Error(`expected a string field "${key}"`);
  return v;
}

function prefixed(r: Record<string, unknown>, key: string, prefix: string): string {
  const v = str(r, key);
  if (!v.startsWith(prefix)) {
    throw new Error(`"${key}" should start with ${JSON.stringify(prefix)}`);
  }
  return v;
}

function strings(r: Record<string, unknown>, key: string, n: number): string[] {
  const v = r[key];
  if (!Array.isArray(v) || v.length !== n || !v.every((s) => typeof s === "string")) {
    throw new Error(`expected "${key}" to be an array of ${n} strings`);
  }
  return v as string[];
}

function goldIndex(r: Record<string, unknown>, key: string, n: number): number {
  const v = r[key];
  if (!Number.isInteger(v) || (v as number) < 0 || (v as number) >= n) {
    throw new Error(`expected "${key}" to be an integer in 0..${n - 1}, got ${JSON.stringify(v)}`);
  }
  return v as number;
}
