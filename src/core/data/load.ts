/**
 * Named datasets and user files from text. The Node helper (node.ts) reads the same files from disk and the
 * browser helper (browser.ts) fetches them; both end here, so parsing is identical on both platforms.
 */
import { datasetNames, findDataset, findView, type DatasetEntry, type DatasetView } from './catalog.js';
import { buildPrompts, DEFAULT_LABEL_MAP, type LabelRule } from './prompt-builder.js';
import { formatFromFileName, parseTable, type TableFormat } from './tabular.js';
import { DatasetError, isLabel, type Label, type LoadResult } from './types.js';

export interface ResolvedDataset {
  /** The dataset whose file is read. */
  entry: DatasetEntry;
  /** Set when the name was a filtered view over `entry`. */
  view?: DatasetView;
}

/** Name -> file to read (+ view filter); a clear error listing the known names otherwise. */
export function resolveDataset(name: string): ResolvedDataset {
  const view = findView(name);
  const entry = findDataset(view ? view.base : name);
  if (!entry) {
    throw new DatasetError(`unknown dataset '${name}': expected one of ${datasetNames().join(', ')}`);
  }
  return view ? { entry, view } : { entry };
}

/** Parse the text of a named dataset's file (as stored under public/data) into prompts, applying a view's filter. */
export function parseDataset(name: string, text: string): LoadResult {
  const { entry, view } = resolveDataset(name);
  const table = parseTable(text, entry.format, { source: name });
  const base = buildPrompts(table, entry, entry.name, { requireColumnsInHeader: entry.format === 'csv' });
  if (!view) return base;
  const prompts = base.prompts.filter(view.filter);
  if (prompts.length === 0) throw new DatasetError(`${name}: the filter '${view.filterRule}' kept no rows of ${entry.name}`);
  return { name, prompts, problems: base.problems, rowsRead: base.rowsRead };
}

export interface UserFileOptions {
  /** Name recorded as `dataset` in eval records; defaults to the file name. */
  name?: string;
  /** 'csv' or 'jsonl'; inferred from the file name when omitted. */
  format?: TableFormat;
  /** Column (CSV header name or JSON key) holding the prompt text. */
  textColumn: string;
  /**
   * One label for every row, or a column to read it from. Column values are matched trimmed and case-insensitively
   * against `map` (default: harmful/benign, unsafe/safe, 1/0, true/false).
   */
  label: Label | { column: string; map?: Record<string, Label> };
  /** Column with stable ids; without it ids are `row-<index>` (0-based data row). */
  idColumn?: string;
  /** CSV delimiter (default ','). */
  delimiter?: string;
  /** Where the file lies (its path), named in errors; defaults to the file name. */
  source?: string;
}

function userLabelRule(label: UserFileOptions['label']): LabelRule {
  if (typeof label === 'string') {
    if (!isLabel(label)) throw new DatasetError(`label '${label}' is not valid: expected 'harmful' or 'benign'`);
    return { kind: 'constant', label };
  }
  if (!label || typeof label.column !== 'string' || label.column === '') {
    throw new DatasetError("label must be 'harmful', 'benign' or { column: '<name>' }");
  }
  const map: Record<string, Label> = {};
  for (const [key, value] of Object.entries(label.map ?? DEFAULT_LABEL_MAP)) {
    if (!isLabel(value)) throw new DatasetError(`label map sends '${key}' to '${String(value)}': expected 'harmful' or 'benign'`);
    map[key.trim().toLowerCase()] = value;
  }
  return { kind: 'column', column: label.column, map };
}

/**
 * A user's CSV or JSONL file: every other column is kept in meta. Malformed rows come back in `problems` with their
 * line numbers; a file with no usable rows throws.
 */
export function parseUserFile(text: string, fileName: string, options: UserFileOptions): LoadResult {
  if (!options || typeof options.textColumn !== 'string' || options.textColumn === '') {
    throw new DatasetError('user file: textColumn is required (the column holding the prompt text)');
  }
  const format = options.format ?? formatFromFileName(fileName);
  const table = parseTable(text, format, { delimiter: options.delimiter, source: options.source ?? fileName });
  const spec = {
    textColumn: options.textColumn,
    label: userLabelRule(options.label),
    idColumn: options.idColumn,
    meta: 'rest' as const,
  };
  // JSONL has no header: a key missing from one line is that row's problem, unless no line has it at all.
  const name = options.name ?? fileName.replace(/^.*[\\/]/, '');
  if (format === 'jsonl' && table.rows.length > 0) {
    const needed = [spec.textColumn, spec.label.kind === 'column' ? spec.label.column : undefined, spec.idColumn];
    for (const column of needed) {
      if (column !== undefined && !table.columns.includes(column)) {
        throw new DatasetError(`${name}: no line has the key '${column}'; keys found: ${table.columns.map((c) => `'${c}'`).join(', ')}`);
      }
    }
  }
  return buildPrompts(table, spec, name, { requireColumnsInHeader: format === 'csv' });
}
