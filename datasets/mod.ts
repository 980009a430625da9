/**
 * Datasets: evaluation text loaders, zero-shot task loaders, tokenization with a model's
 * tokenizer.json, the perplexity protocol's helpers and the bundled small texts.
 *
 * @module
 */

export { fileError, readJson, readText } from "./files.ts";
export {
  type DecodeOptions,
  type EncodeOptions,
  loadTokenizer,
  type TextTokenizer,
} from "./tokenizer.ts";
export {
  type C4Options,
  type CorpusFormat,
  corpusFormatOf,
  type CorpusSpec,
  loadC4Jsonl,
  loadCorpus,
  loadPlainText,
} from "./text.ts";
export {
  type ContinuationRequest,
  hellaswagPreprocess,
  isTaskName,
  loadTask,
  type LoadTaskOptions,
  lowerFirst,
  TASK_NAMES,
  TASK_SPECS,
  type TaskData,
  type TaskExample,
  taskExample,
  type TaskName,
  taskPath,
  type TaskSpec,
} from "./tasks.ts";
export { type PerplexityResult, perplexityResult, pplFromNll, windowCount } from "./perplexity.ts";
export {
  BOOKS_HELDOUT_HEAD,
  BUNDLED_DATA_DIR,
  REPO_ROOT,
  SHARED_ENV,
  sharedDataPath,
  sharedModelPath,
  sharedRoot,
  WIKITEXT2_TEST_HEAD,
} from "./bundled.ts";
