/**
 * Result tables: Markdown and CSV from rows and a column spec, and pivoting of records
 * (e.g. rows = bits, columns = rank, cells = perplexity).
 *
 * @module
 */

/** A row of a table: any object; columns pick values from it. */
export type Row = Record<string, unknown>;

/** A table column. */
export interface Column<R = Row> {
  /** Property of the row, or a dotted path into it such as `"metrics.ppl"`. */
  key: string;
  /** Header text; default the key. */
  header?: string;
  /** Formats a cell; default: "" for null/undefined, `String` for primitives, JSON otherwise. */
  format?: (value: unknown, row: R) => string;
  /** Alignment in Markdown; default left. */
  align?: "left" | "right" | "center";
}

/**
 * The value a key selects in a row: the property named `key` if present, else the dotted path.
 *
 * @param row the row
 * @param key property name or dotted path
 * @returns the value, or undefined
 */
export function valueAt(row: unknown, key: string): unknown {
  if (row !== null && typeof row === "object" && key in row) {
    return (row as Record<string, unknown>)[key];
  }
  let value: unknown = row;
  for (const part of key.split(".")) {
    if (value === null || typeof value !== "object") return undefined;
    value = (value as Record<string, unknown>)[part];
  }
  return value;
}

/**
 * The text of one cell, through the column's `format` or the default formatting.
 *
 * @param row the row
 * @param column the column
 * @returns the cell text
 */
export function cellText<R>(row: R, column: Column<R>): string {
  const value = valueAt(row, column.key);
  if (column.format) return column.format(value, row);
  if (value === null || value === undefined) return "";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/**
 * A Markdown (GitHub) table with padded columns and a trailing newline. `|` in cells is escaped
 * and newlines become `<br>`.
 *
 * @param rows the rows
 * @param columns the columns, in order
 * @returns the table text
 */
export function toMarkdown<R>(rows: readonly R[], columns: readonly Column<R>[]): string {
  const escape = (s: string) => s.replaceAll("|", "\\|").replace(/\r?\n/g, "<br>");
  const header = columns.map((c) => escape(c.header ?? c.key));
  const body = rows.map((row) => columns.map((c) => escape(cellText(row, c))));
  const widths = columns.map((_, j) =>
    Math.max(3, header[j].length, ...body.map((r) => r[j].length))
  );
  const pad = (s: string, j: number) => {
    const w = widths[j];
    switch (columns[j].align) {
      case "right":
        return s.padStart(w);
      case "center": {
        const left = Math.floor((w - s.length) / 2);
        return (" ".repeat(left) + s).padEnd(w);
      }
      default:
        return s.padEnd(w);
    }
  };
  const line = (cells: string[]) => `| ${cells.map(pad).join(" | ")} |`;
  const rule = columns.map((c, j) => {
    const w = widths[j];
    if (c.align === "right") return "-".repeat(w - 1) + ":";
    if (c.align === "center") return ":" + "-".repeat(w - 2) + ":";
    return "-".repeat(w);
  });
  return [line(header), `| ${rule.join(" | ")} |`, ...body.map(line)].join("\n") + "\n";
}

/**
 * CSV (RFC 4180 quoting: a field with a comma, quote, CR, LF or leading/trailing space is
 * quoted, quotes doubled), LF line ends, header first, trailing newline.
 *
 * @param rows the rows
 * @param columns the columns, in order
 * @returns the CSV text
 */
export function toCsv<R>(rows: readonly R[], columns: readonly Column<R>[]): string {
  const field = (s: string) => /[",\r\n]|^\s|\s$/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
  const lines = [columns.map((c) => field(c.header ?? c.key))];
  for (const row of rows) lines.push(columns.map((c) => field(cellText(row, c))));
  return lines.map((l) => l.join(",")).join("\n") + "\n";
}

/** Selects a value from a record: a key or dotted path, or a function. */
export type Selector<R> = string | ((record: R) => unknown);

/** How {@linkcode pivot} lays out records. */
export interface PivotSpec<R> {
  /** The value that picks the row (e.g. `"point.bits"`). */
  row: Selector<R>;
  /** The value that picks the column (e.g. `"point.rank"`). */
  col: Selector<R>;
  /** The cell value (e.g. `"metrics.ppl"`). */
  value: Selector<R>;
  /** Header of the first column; default the last part of `row` when it is a path, else "row". */
  rowHeader?: string;
  /** Header of a value column; default `String(colValue)`. */
  colHeader?: (colValue: unknown) => string;
  /** Cell format of the value columns (see {@linkcode Column.format}). */
  format?: (value: unknown) => string;
  /** Combines several records falling in one cell; without it that is an error. */
  reduce?: (values: unknown[]) => unknown;
}

/** A pivoted table, ready for {@linkcode toMarkdown} / {@linkcode toCsv}. */
export interface PivotTable {
  /** One row per distinct row value: key "row" holds it, keys "c0", "c1", ... the cells. */
  rows: Row[];
  /** The first column, then one per distinct column value. */
  columns: Column[];
  /** The distinct row values, in table order. */
  rowValues: unknown[];
  /** The distinct column values, in table order. */
  colValues: unknown[];
}

/**
 * Pivots records into a table. Distinct row and column values are sorted ascending when they
 * are all numbers, otherwise kept in order of first appearance. Cells without a record are
 * empty.
 *
 * @param records the records (e.g. from {@linkcode readRecords})
 * @param spec which values make rows, columns and cells
 * @returns the table
 * @throws Error when two records fall into one cell and no `reduce` is given
 */
export function pivot<R>(records: readonly R[], spec: PivotSpec<R>): PivotTable {
  const get = (s: Selector<R>, r: R) => typeof s === "function" ? s(r) : valueAt(r, s);
  const rowValues = distinct(records.map((r) => get(spec.row, r)));
  const colValues = distinct(records.map((r) => get(spec.col, r)));
  const cells = new Map<unknown, Map<unknown, unknown[]>>();
  for (const record of records) {
    const rv = get(spec.row, record);
    const cv = get(spec.col, record);
    if (!cells.has(rv)) cells.set(rv, new Map());
    const row = cells.get(rv)!;
    if (!row.has(cv)) row.set(cv, []);
    row.get(cv)!.push(get(spec.value, record));
  }
  const rowName = typeof spec.row === "string" ? spec.row.split(".").pop()! : "row";
  const rows = rowValues.map((rv) => {
    const out: Row = { row: rv };
    colValues.forEach((cv, j) => {
      const values = cells.get(rv)?.get(cv);
      if (values === undefined) return;
      if (values.length > 1 && !spec.reduce) {
        throw new Error(
          `pivot: ${values.length} records for row ${String(rv)}, column ${String(cv)}; ` +
            `give a reduce function to combine them`,
        );
      }
      out[`c${j}`] = values.length > 1 ? spec.reduce!(values) : values[0];
    });
    return out;
  });
  const format = spec.format;
  const columns: Column[] = [
    { key: "row", header: spec.rowHeader ?? rowName },
    ...colValues.map((cv, j): Column => ({
      key: `c${j}`,
      header: spec.colHeader ? spec.colHeader(cv) : String(cv),
      align: "right",
      ...(format ? { format: (v: unknown) => v === undefined ? "" : format(v) } : {}),
    })),
  ];
  return { rows, columns, rowValues, colValues };
}

function distinct(values: unknown[]): unknown[] {
  const unique = [...new Set(values)];
  return unique.every((v) => typeof v === "number")
    ? (unique as number[]).sort((a, b) => a - b)
    : unique;
}
