/**
 * Text -> rows with line numbers, for CSV (papaparse: the jailbreak files have multi-line quoted fields) and JSONL.
 * Rows that cannot be read become problems with the line where they start; blank lines are not rows.
 * Browser-safe: takes text, never touches the file system.
 */
import Papa from 'papaparse';
import { DatasetError, type LoadProblem } from './types.js';

export type CellValue = string | number | boolean | null | object;

export interface TableRow {
  /** 1-based line where the row starts (a CSV row with multi-line fields spans several lines). */
  line: number;
  /** 0-based index among the data rows of the file, malformed rows included, so ids stay put when one is fixed. */
  index: number;
  values: Record<string, CellValue>;
}

export interface Table {
  /** Column names (CSV header; for JSONL the union of keys, in order of first appearance). */
  columns: string[];
  rows: TableRow[];
  problems: LoadProblem[];
  /** Data rows seen, malformed ones included. */
  rowsRead: number;
}

/** A leading byte-order mark would otherwise end up in the first column name. CRLF is folded so line counts agree. */
function normaliseText(text: string): string {
  if (typeof text !== 'string') throw new DatasetError(`expected file contents as a string, got ${typeof text}`);
  const noBom = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  return noBom.replace(/\r\n/g, '\n');
}

/** Offsets where each line starts, to turn papaparse's character cursor into a line number. */
function lineStarts(text: string): number[] {
  const starts = [0];
  for (let i = text.indexOf('\n'); i !== -1; i = text.indexOf('\n', i + 1)) starts.push(i + 1);
  return starts;
}

function lineAt(starts: number[], offset: number): number {
  let lo = 0;
  let hi = starts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (starts[mid]! <= offset) lo = mid;
    else hi = mid - 1;
  }
  return lo + 1;
}

export interface CsvOptions {
  /** Field delimiter; ',' unless told (auto-detection guesses wrong on prose-heavy prompts). */
  delimiter?: string;
  /** The file (or dataset) the text came from, named in errors. */
  source?: string;
}

export function parseCsvTable(text: string, options: CsvOptions = {}): Table {
  const body = normaliseText(text);
  const starts = lineStarts(body);
  const delimiter = options.delimiter ?? ',';
  let header: string[] | null = null;
  const rows: TableRow[] = [];
  const problems: LoadProblem[] = [];
  let rowStart = 0;
  let index = 0;

  Papa.parse<string[]>(body, {
    delimiter,
    newline: '\n',
    header: false,
    skipEmptyLines: false,
    step: (result) => {
      const start = rowStart;
      rowStart = result.meta.cursor;
      // The row starts after the newline that ended the previous one.
      const startOffset = start > 0 && body[start] === '\n' ? start + 1 : start;
      const line = lineAt(starts, Math.min(startOffset, Math.max(body.length - 1, 0)));
      const cells = result.data;
      if (cells.length === 1 && cells[0] === '') return; // blank line: not a row
      if (header === null) {
        header = cells.map((c) => c.trim());
        return;
      }
      const rowIndex = index++;
      if (result.errors.length > 0) {
        const what = result.errors.map((e) => `${e.code}: ${e.message}`).join('; ');
        problems.push({ line, message: `unreadable CSV row (${what})` });
        return;
      }
      if (cells.length !== header.length) {
        problems.push({
          line,
          message: `CSV row has ${cells.length} fields, expected ${header.length} (columns: ${header.join(', ')})`,
        });
        return;
      }
      const values: Record<string, CellValue> = {};
      header.forEach((name, i) => {
        if (!(name in values)) values[name] = cells[i]!;
      });
      rows.push({ line, index: rowIndex, values });
    },
  });

  if (header === null) throw new DatasetError(`${options.source ? `${options.source}: ` : ''}CSV file is empty: expected a header line and data rows`);
  return { columns: header, rows, problems, rowsRead: index };
}

export function parseJsonlTable(text: string): Table {
  const lines = normaliseText(text).split('\n');
  const columns: string[] = [];
  const seen = new Set<string>();
  const rows: TableRow[] = [];
  const problems: LoadProblem[] = [];
  let index = 0;
  lines.forEach((raw, i) => {
    const line = i + 1;
    if (raw.trim() === '') return; // blank line (and the final newline): not a row
    const rowIndex = index++;
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch (err) {
      problems.push({ line, message: `unparseable JSON line (${(err as Error).message})` });
      return;
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      const kind = parsed === null ? 'null' : Array.isArray(parsed) ? 'an array' : typeof parsed;
      problems.push({ line, message: `JSON line is ${kind}, expected an object with named fields` });
      return;
    }
    const values = parsed as Record<string, CellValue>;
    for (const key of Object.keys(values)) {
      if (!seen.has(key)) {
        seen.add(key);
        columns.push(key);
      }
    }
    rows.push({ line, index: rowIndex, values });
  });
  return { columns, rows, problems, rowsRead: index };
}

export type TableFormat = 'csv' | 'jsonl';

export function parseTable(text: string, format: TableFormat, options: CsvOptions = {}): Table {
  if (format === 'csv') return parseCsvTable(text, options);
  if (format === 'jsonl') return parseJsonlTable(text);
  throw new DatasetError(`unknown file format '${String(format)}': expected 'csv' or 'jsonl'`);
}

/** Format from a file name: .csv, .jsonl / .ndjson. */
export function formatFromFileName(fileName: string): TableFormat {
  const lower = fileName.toLowerCase();
  if (lower.endsWith('.csv')) return 'csv';
  if (lower.endsWith('.jsonl') || lower.endsWith('.ndjson')) return 'jsonl';
  throw new DatasetError(`cannot tell the format of '${fileName}': expected a .csv or .jsonl file, or pass format`);
}
