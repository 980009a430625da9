/**
 * Experiments framework: settings schemas and config validation, grids, and the resumable
 * sweep runner.
 *
 * @module
 */

export {
  AllocationSchema,
  BitsSchema,
  ConfigError,
  type DatasetSpec,
  DatasetSpecSchema,
  formatPath,
  GroupSizeSchema,
  type ModelSpec,
  ModelSpecSchema,
  parseConfig,
  PlacementSchema,
  type QuantGrid,
  QuantGridSchema,
  QuantizerSchema,
  type QuantSetting,
  QuantSettingSchema,
  RankSchema,
  ScalingSchema,
  SeedSchema,
  SeqLenSchema,
} from "./schema.ts";
export { expandGrid, type GridPoint } from "./grid.ts";
export {
  type PointContext,
  runSweep,
  type Shard,
  type SweepOptions,
  type SweepProgress,
  type SweepRecord,
  type SweepSummary,
} from "./runner.ts";
export {
  type AnyExperiment,
  type Experiment,
  listShardFiles,
  localConfig,
  locateRecordedFile,
  mergeShards,
  type NamedFigure,
  type PointRunner,
  portableConfig,
  readExperimentRecords,
  recordedModelDir,
  RESULTS_FILE,
  runExperiment,
  type RunExperimentOptions,
  shardPath,
} from "./experiment.ts";
export { experimentNames, EXPERIMENTS, findExperiment } from "./registry.ts";
