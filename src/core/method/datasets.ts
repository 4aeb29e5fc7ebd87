/**
 * Prompt sets for the method's commands (Node): a named dataset (or view) of public/data, or a user's CSV / JSONL
 * file with its text column and one label for every row. A name that is an existing file path is read as a user file.
 */
import { existsSync, realpathSync, statSync } from 'node:fs';
import { basename, resolve, sep } from 'node:path';
import { datasetNames, findDataset, findView } from '../data/catalog.js';
import { loadDataset, loadUserFile } from '../data/node.js';
import { pick } from '../data/sample.js';
import { DatasetError, type Label, type LoadResult } from '../data/types.js';

export interface PromptSetSpec {
  /** Dataset or view name, or a path to a .csv / .jsonl file. */
  source: string;
  /** User files: the column holding the prompt text. */
  textColumn?: string;
  /** User files: the label of every row. */
  label?: Label;
  /** User files: a column with stable ids. */
  idColumn?: string;
  /** User files: the name records carry as `dataset` (default: the file name; see datasetNames). */
  name?: string;
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

export async function loadPromptSet(spec: PromptSetSpec): Promise<LoadResult> {
  const { source } = spec;
  if (findDataset(source) || findView(source)) return loadDataset(source);
  if (isFile(source)) {
    if (!spec.textColumn) throw new DatasetError(`${source}: a user file needs --text-column (the column holding the prompt text)`);
    if (!spec.label) throw new DatasetError(`${source}: a user file needs --label harmful|benign (the label of every row)`);
    return loadUserFile(source, { textColumn: spec.textColumn, label: spec.label, ...(spec.idColumn ? { idColumn: spec.idColumn } : {}), name: spec.name ?? basename(source) });
  }
  const hint = existsSync(source) ? ' (it exists but is not a file)' : '';
  throw new DatasetError(`unknown dataset '${source}'${hint}: expected a file path or one of ${datasetNames().join(', ')}`);
}

export { pick };

/**
 * The names records carry for a list of dataset sources: a dataset's own name; a file's name, or, when different
 * files share one (a/prompts.jsonl and b/prompts.jsonl), the shortest end of their paths that tells them apart.
 * The same dataset or file given twice is an error.
 */
export function datasetNamesFor(sources: readonly string[]): string[] {
  const real = sources.map((s) => (findDataset(s) || findView(s) ? null : isFile(s) ? realpathSync(s) : null));
  sources.forEach((s, i) => {
    const j = sources.findIndex((t, k) => k < i && (real[i] !== null ? real[k] === real[i] : t === s));
    if (j >= 0) throw new DatasetError(`dataset '${s}' is given twice${s !== sources[j] ? ` (as '${sources[j]}' and '${s}')` : ''}`);
  });
  const parts = sources.map((s, i) => (real[i] === null ? [s] : resolve(s).split(sep).filter((p) => p !== '')));
  return parts.map((p, i) => {
    if (real[i] === null) return p[0]!;
    for (let k = 1; ; k++) {
      const name = p.slice(-k).join('/');
      const clash = parts.some((q, j) => j !== i && q.slice(-k).join('/') === name);
      if (!clash || k >= p.length) return name;
    }
  });
}
