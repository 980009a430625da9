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
  type PlotlyAxis,
  plotlyBundle,
  type PlotlyFigure,
  type PlotlyLayout,
  type PlotlyTrace,
  type Series,
  writeFigure,
} from "./figure.ts";
