/**
 * Prompt sets for the method's commands (Node): a named dataset (or view) of public/data, or a user's CSV / JSONL
 * file with its text column and one label for every row. A name that is an existing file path is read as a user file.
 */
import { existsSync, statSync } from 'node:fs';
import { basename } from 'node:path';
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
    return loadUserFile(source, { textColumn: spec.textColumn, label: spec.label, ...(spec.idColumn ? { idColumn: spec.idColumn } : {}), name: basename(source) });
  }
  const hint = existsSync(source) ? ' (it exists but is not a file)' : '';
  throw new DatasetError(`unknown dataset '${source}'${hint}: expected a file path or one of ${datasetNames().join(', ')}`);
}

export { pick };
