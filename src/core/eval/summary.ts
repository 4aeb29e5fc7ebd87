/**
 * What a finished (or interrupted) eval run is as files, the same for the CLI and the lab (platform-free): the
 * run folder holds
 *   run.json       the run's settings (runSettings(): model identity, datasets, conditions, seeds, judge, ids of the
 *                  direction, controller and CAST settings...): a resume must match them;
 *   records.jsonl  one EvalRecord per line, in the order they were made;
 *   summary.json / summary.csv / summary.md   refusal rate per (dataset, condition) with Wilson 95 % intervals, and
 *                  per label for datasets holding both labels.
 * runFiles() gives exactly these texts for a list of records (the lab's export; the CLI writes the same), and
 * parseRecordsJsonl() reads records.jsonl back (the CLI's `lab summarize`).
 */
import Papa from 'papaparse';
import type { Label } from '../data/types.js';
import { checkRecord, summarize, type EvalRecord, type SummaryRow } from './records.js';
import { Z95 } from './stats.js';

export type SummaryLabel = Label | 'mixed';

export interface LabelledSummaryRow extends SummaryRow {
  /** harmful: the rate is refusal; benign: the rate is over-refusal; mixed: both labels in one row. */
  label: SummaryLabel;
}

export interface RunSummary {
  /** One row per (dataset, condition). */
  rows: LabelledSummaryRow[];
  /** Datasets holding both labels, split per label: dataset is "<name> [harmful]" / "<name> [benign]". */
  byLabel: LabelledSummaryRow[];
}

function labelsOf(records: readonly EvalRecord[]): Map<string, Set<string>> {
  const m = new Map<string, Set<string>>();
  for (const r of records) {
    let s = m.get(r.dataset);
    if (!s) m.set(r.dataset, (s = new Set()));
    s.add(typeof r.label === 'string' ? r.label : '?');
  }
  return m;
}

export function summarizeRun(records: readonly EvalRecord[]): RunSummary {
  const labels = labelsOf(records);
  const labelOf = (dataset: string): SummaryLabel => {
    const s = labels.get(dataset);
    return s && s.size === 1 && (s.has('harmful') || s.has('benign')) ? ([...s][0] as Label) : 'mixed';
  };
  const rows = summarize(records).map((r) => ({ ...r, label: labelOf(r.dataset) }));
  const mixed = records.filter((r) => labelOf(r.dataset) === 'mixed' && typeof r.label === 'string');
  const byLabel = summarize(mixed.map((r) => ({ ...r, dataset: `${r.dataset} [${r.label as string}]` }))).map((r) => ({
    ...r,
    label: (r.dataset.endsWith('[harmful]') ? 'harmful' : r.dataset.endsWith('[benign]') ? 'benign' : 'mixed') as SummaryLabel,
  }));
  return { rows, byLabel };
}

const COLUMNS = ['dataset', 'condition', 'label', 'judge', 'n', 'refusals', 'refusal_rate', 'ci_low', 'ci_high', 'unjudged'] as const;

export function runSummaryJson(s: RunSummary): string {
  return `${JSON.stringify({ z: Z95, interval: 'wilson', rows: s.rows, by_label: s.byLabel }, null, 2)}\n`;
}

export function runSummaryCsv(s: RunSummary): string {
  const data = [...s.rows, ...s.byLabel].map((r) =>
    COLUMNS.map((c) => {
      const v = r[c];
      return typeof v === 'number' && Number.isNaN(v) ? '' : (v ?? '');
    }),
  );
  return `${Papa.unparse({ fields: [...COLUMNS], data }, { newline: '\n', escapeFormulae: true })}\n`;
}

function pct(x: number): string {
  return Number.isNaN(x) ? '–' : (100 * x).toFixed(1);
}

function measure(label: SummaryLabel): string {
  return label === 'harmful' ? 'refusal' : label === 'benign' ? 'over-refusal' : 'refusal (mixed labels)';
}

/** The table the CLI prints and writes as summary.md. */
export function runSummaryMarkdown(s: RunSummary): string {
  // Dataset and condition names come from users: escape what would break the table.
  const cell = (t: string) => t.replace(/\\/g, '\\\\').replace(/\|/g, '\\|').replace(/[\r\n]+/g, ' ');
  const table = (rows: LabelledSummaryRow[]) => [
    '| dataset | condition | measures | judge | n | refusals | rate (%) | Wilson 95 % CI (%) | unjudged |',
    '|---|---|---|---|---:|---:|---:|---|---:|',
    ...rows.map(
      (r) =>
        `| ${cell(r.dataset)} | ${cell(r.condition)} | ${measure(r.label)} | ${cell(r.judge ?? '')} | ${r.n} | ${r.refusals} | ${pct(r.refusal_rate)} | ${Number.isNaN(r.ci_low) ? '–' : `${pct(r.ci_low)} – ${pct(r.ci_high)}`} | ${r.unjudged} |`,
    ),
  ];
  const out = table(s.rows);
  if (s.byLabel.length > 0) out.push('', 'Datasets with both labels, per label (refusal on benign prompts = over-refusal):', '', ...table(s.byLabel));
  return `${out.join('\n')}\n`;
}

/** records.jsonl: one record per line, in order. */
export function recordsJsonl(records: readonly EvalRecord[]): string {
  return records.map((r) => `${JSON.stringify(r)}\n`).join('');
}

/** Records from records.jsonl text; a line that is not a record is an error naming the line. */
export function parseRecordsJsonl(text: string, source = 'records.jsonl'): EvalRecord[] {
  const out: EvalRecord[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let v: unknown;
    try {
      v = JSON.parse(line);
      checkRecord(v);
    } catch (e) {
      throw new Error(`${source} line ${i + 1} is not an eval record: ${(e as Error).message}`);
    }
    out.push(v);
  });
  return out;
}

export const RUN_FILES = ['run.json', 'records.jsonl', 'summary.json', 'summary.csv', 'summary.md'] as const;
export type RunFileName = (typeof RUN_FILES)[number];

/** The summary files of a list of records. */
export function summaryFiles(records: readonly EvalRecord[]): Record<'summary.json' | 'summary.csv' | 'summary.md', string> {
  const s = summarizeRun(records);
  return { 'summary.json': runSummaryJson(s), 'summary.csv': runSummaryCsv(s), 'summary.md': runSummaryMarkdown(s) };
}

/** Every file of a run folder as text, from its settings (runSettings()) and records: what the CLI writes. */
export function runFiles(settings: object, records: readonly EvalRecord[]): Record<RunFileName, string> {
  return { 'run.json': runSettingsJson(settings), 'records.jsonl': recordsJsonl(records), ...summaryFiles(records) };
}

/** run.json's text. */
export function runSettingsJson(settings: object): string {
  return `${JSON.stringify(settings, null, 2)}\n`;
}
