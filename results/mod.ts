/**
 * Results: the JSONL result store, provenance, tables and figures.
 *
 * @module
 */

export {
  appendRecord,
  canonicalJson,
  pointKey,
  readRecords,
  type StoreOptions,
  type WarningHandler,
} from "./store.ts";
export {
  collectProvenance,
  type GpuInfo,
  hashFile,
  type Provenance,
  type ProvenanceOptions,
} from "./provenance.ts";
export {
  cellText,
  type Column,
  pivot,
  type PivotSpec,
  type PivotTable,
  type Row,
  type Selector,
  toCsv,
  toMarkdown,
  valueAt,
} from "./table.ts";
export {
  figureHtml,
  type FigureTitles,
  heatmapFigure,
  lineFigure,
  meanWithError,
  type PlotlyAxis,
  plotlyBundle,
  type PlotlyFigure,
  type PlotlyLayout,
  type PlotlyTrace,
  type Sample,
  type Series,
  writeFigure,
} from "./figure.ts";
export {
  bitsPerWeight,
  type LinearShape,
  llamaLinearShapes,
  type LlamaShapeConfig,
  readModelShapes,
  type StorageSetting,
} from "./memory.ts";
export { type MergeOptions, mergeResultFiles, type MergeSummary, recordKey } from "./merge.ts";
export { PAPER_COLORWAY, PAPER_FONT, PAPER_SIZE, paperStyle } from "./style.ts";
