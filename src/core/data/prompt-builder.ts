/**
 * Rows -> prompt records, by a declarative spec (which column is the text, how the label is decided, which column
 * is the id, which columns to keep as meta). Shared by the named datasets and by user files.
 */
import type { CellValue, Table } from './tabular.js';
import { DatasetError, type Label, type LoadProblem, type LoadResult, type MetaValue, type PromptRecord } from './types.js';

export type LabelRule =
  /** Every row has the same label (e.g. AdvBench: all harmful). */
  | { kind: 'constant'; label: Label }
  /** The label is read from a column; values are matched trimmed and lower-cased against `map`'s keys. */
  | { kind: 'column'; column: string; map: Record<string, Label> };

export type MetaKind = 'string' | 'number' | 'flag01';

export interface MetaColumn {
  column: string;
  /** Key in `meta` (defaults to the column name). */
  key?: string;
  /** 'string' keeps text, 'number' parses, 'flag01' turns 0/1 into false/true. Empty/null cells are left out. */
  as?: MetaKind;
}

export interface PromptSpec {
  textColumn: string;
  label: LabelRule;
  /** Column holding a stable upstream id; without one the id is `row-<index>` (0-based data row). */
  idColumn?: string;
  /** Columns copied into meta; `'rest'` copies every other scalar column as it is (user files). */
  meta: MetaColumn[] | 'rest';
}

/** Default label values for a user file's label column: the words themselves plus the usual 0/1 encodings. */
export const DEFAULT_LABEL_MAP: Readonly<Record<string, Label>> = {
  harmful: 'harmful',
  benign: 'benign',
  unsafe: 'harmful',
  safe: 'benign',
  '1': 'harmful',
  '0': 'benign',
  true: 'harmful',
  false: 'benign',
};

function describe(value: CellValue | undefined): string {
  if (value === undefined) return 'missing';
  if (value === null) return 'null';
  if (typeof value === 'string') return value.length > 40 ? `'${value.slice(0, 40)}...'` : `'${value}'`;
  return typeof value === 'object' ? JSON.stringify(value).slice(0, 40) : String(value);
}

function cellKey(value: CellValue | undefined): string | null {
  if (typeof value === 'string') return value.trim().toLowerCase();
  if (typeof value === 'number' || typeof value === 'boolean') return String(value).toLowerCase();
  return null;
}

function metaValue(value: CellValue | undefined, kind: MetaKind): MetaValue | undefined | Error {
  if (value === undefined || value === null || value === '') return undefined;
  if (kind === 'string') return typeof value === 'object' ? JSON.stringify(value) : String(value);
  const num = typeof value === 'number' ? value : typeof value === 'string' ? Number(value.trim()) : NaN;
  if (kind === 'number') return Number.isFinite(num) ? num : new Error(`expected a number, got ${describe(value)}`);
  if (typeof value === 'boolean') return value;
  if (num === 0 || num === 1) return num === 1;
  return new Error(`expected 0 or 1, got ${describe(value)}`);
}

/** Fails fast when the file lacks a column the spec needs (e.g. a 404 page served instead of the CSV). */
function checkColumns(table: Table, spec: PromptSpec, source: string, requireInHeader: boolean): void {
  if (!requireInHeader) return;
  const needed = [spec.textColumn];
  if (spec.label.kind === 'column') needed.push(spec.label.column);
  if (spec.idColumn !== undefined) needed.push(spec.idColumn);
  for (const column of needed) {
    if (table.columns.filter((c) => c === column).length > 1) {
      throw new DatasetError(`${source}: column '${column}' appears more than once in the header: expected unique column names`);
    }
    if (!table.columns.includes(column)) {
      throw new DatasetError(
        `${source}: column '${column}' not found; the file has columns: ${table.columns.map((c) => `'${c}'`).join(', ') || '(none)'}`,
      );
    }
  }
}

export function buildPrompts(
  table: Table,
  spec: PromptSpec,
  name: string,
  options: { requireColumnsInHeader: boolean },
): LoadResult {
  checkColumns(table, spec, name, options.requireColumnsInHeader);
  const prompts: PromptRecord[] = [];
  const problems: LoadProblem[] = [...table.problems];
  const firstLineOfId = new Map<string, number>();

  for (const row of table.rows) {
    const bad = (message: string) => problems.push({ line: row.line, message });
    const text = row.values[spec.textColumn];
    if (typeof text !== 'string' || text.trim() === '') {
      bad(`text column '${spec.textColumn}' is ${typeof text === 'string' ? 'empty' : describe(text)}: expected non-empty text`);
      continue;
    }

    let label: Label;
    if (spec.label.kind === 'constant') {
      label = spec.label.label;
    } else {
      const raw = row.values[spec.label.column];
      const key = cellKey(raw);
      const mapped = key === null ? undefined : spec.label.map[key];
      if (mapped === undefined) {
        bad(
          `label column '${spec.label.column}' is ${describe(raw)}: expected one of ${Object.keys(spec.label.map)
            .map((k) => `'${k}'`)
            .join(', ')}`,
        );
        continue;
      }
      label = mapped;
    }

    let id: string;
    if (spec.idColumn !== undefined) {
      const raw = row.values[spec.idColumn];
      const key = typeof raw === 'string' ? raw.trim() : typeof raw === 'number' ? String(raw) : '';
      if (key === '') {
        bad(`id column '${spec.idColumn}' is ${describe(raw)}: expected a non-empty id`);
        continue;
      }
      id = key;
    } else {
      id = `row-${row.index}`;
    }
    const firstLine = firstLineOfId.get(id);
    if (firstLine !== undefined) {
      bad(`duplicate id '${id}' (first seen on line ${firstLine}): ids must be unique within a dataset`);
      continue;
    }

    const meta: Record<string, MetaValue> = {};
    let metaError: string | null = null;
    if (spec.meta === 'rest') {
      const skip = new Set([spec.textColumn, spec.idColumn, spec.label.kind === 'column' ? spec.label.column : undefined]);
      for (const [column, value] of Object.entries(row.values)) {
        if (skip.has(column)) continue;
        const v = metaValue(value, typeof value === 'number' ? 'number' : 'string');
        if (v instanceof Error || v === undefined) continue;
        meta[column] = typeof value === 'boolean' ? value : v;
      }
    } else {
      for (const m of spec.meta) {
        const v = metaValue(row.values[m.column], m.as ?? 'string');
        if (v instanceof Error) {
          metaError = `column '${m.column}': ${v.message}`;
          break;
        }
        if (v !== undefined) meta[m.key ?? m.column] = v;
      }
    }
    if (metaError !== null) {
      bad(metaError);
      continue;
    }

    firstLineOfId.set(id, row.line);
    prompts.push({ id, text, label, meta });
  }

  problems.sort((a, b) => a.line - b.line);
  if (prompts.length === 0) {
    const first = problems.slice(0, 3).map((p) => `line ${p.line}: ${p.message}`).join('; ');
    throw new DatasetError(
      `${name}: no usable rows (${table.rowsRead} rows read, ${problems.length} problems${first ? `; ${first}` : ''})`,
    );
  }
  return { name, prompts, problems, rowsRead: table.rowsRead };
}
