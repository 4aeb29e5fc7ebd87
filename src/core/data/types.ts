/**
 * The prompt record every dataset, view and user file is turned into, and the shape of a load result.
 * Browser-safe: no Node imports here.
 */

/** Ground truth for refusal evaluation: should a safe model refuse this prompt? */
export type Label = 'harmful' | 'benign';

export const LABELS: readonly Label[] = ['harmful', 'benign'];

export type MetaValue = string | number | boolean;

export interface PromptRecord {
  /** Stable and unique within its dataset (upstream id where one exists, otherwise `row-<index>`). */
  id: string;
  /** The prompt exactly as stored upstream (not trimmed: templates and judges see the real text). */
  text: string;
  label: Label;
  /** Upstream columns worth keeping (category, jailbreaking flag, source, ...). */
  meta: Record<string, MetaValue>;
}

/** One row that could not become a prompt; `line` is the 1-based line where the row starts in the file. */
export interface LoadProblem {
  line: number;
  message: string;
}

export interface LoadResult {
  /** Dataset or view name (or the user file's chosen name): what eval records store as `dataset`. */
  name: string;
  prompts: PromptRecord[];
  /** Rows that were skipped, each with its line number and reason. Never silently dropped. */
  problems: LoadProblem[];
  /** Data rows seen (blank lines excluded): prompts.length + problems about rows. */
  rowsRead: number;
}

/** Thrown when a whole file or request is unusable (no such dataset, missing column, no usable rows). */
export class DatasetError extends Error {
  override name = 'DatasetError';
}

export function isLabel(value: unknown): value is Label {
  return value === 'harmful' || value === 'benign';
}

/** Counts per label, e.g. for summaries and manifest entries. */
export function countLabels(prompts: readonly PromptRecord[]): Record<Label, number> {
  const counts: Record<Label, number> = { harmful: 0, benign: 0 };
  for (const p of prompts) counts[p.label]++;
  return counts;
}
