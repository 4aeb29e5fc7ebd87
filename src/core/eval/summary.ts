/**
 * What a finished (or interrupted) eval run is as files, the same for the CLI and the lab (platform-free): the
 * run folder holds
 *   run.json       the run's settings (runSettings(): model identity, datasets, conditions, seeds, judge, ids of the
 *                  direction, controller and CAST settings...): a resume must match them;
 *   records.jsonl  one EvalRecord per line, in the order they were made;
 *   summary.json / summary.csv / summary.md   refusal rate per (dataset, condition) with Wilson 95 % intervals, and
 *                  per label for datasets holding both labels; beside it the coherent-refusal rate (records'
 *                  coherent_refusal, the rule in coherence.ts) with its own Wilson interval, mean reply_nll, the
 *                  fraction of replies that differ from base, the mean first-token KL and the steering settings.
 * runFiles() gives exactly these texts for a list of records (the lab's export; the CLI writes the same), and
 * parseRecordsJsonl() reads records.jsonl back (the CLI's `lab summarize`).
 */
import Papa from 'papaparse';
import type { Label } from '../data/types.js';
import { COHERENT_REFUSAL_RULE } from './coherence.js';
import { checkRecord, summarize, type EvalRecord, type SummaryRow } from './records.js';
import { wilsonInterval, Z95 } from './stats.js';

export type SummaryLabel = Label | 'mixed';

export interface CoherenceColumns {
  /** Records with a boolean coherent_refusal, and how many are coherent refusals (benign: coherent over-refusals). */
  coherent_n: number;
  coherent_refusals: number;
  /** Wilson 95 % interval of coherent_refusals / coherent_n (NaN when coherent_n = 0). */
  coherent_rate: number;
  coherent_ci_low: number;
  coherent_ci_high: number;
  /** Mean reply_nll over the records that have one (NaN when none). */
  mean_reply_nll: number;
  /** Steered records with a known base reply, and the fraction whose reply differs from it (NaN when none). */
  changed_n: number;
  changed_from_base: number;
  /** Mean first-token KL (steered vs unsteered) over the records that measured it (benign prompts; NaN when none). */
  mean_first_token_kl: number;
  /** The steering settings the group's records carry, compactly (steeringLabel), '; '-joined when several. */
  steering: string;
}

export interface LabelledSummaryRow extends SummaryRow, CoherenceColumns {
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

/** "add L2-4 last abs": a record's steering settings in one short cell; '' for none (base). */
export function steeringLabel(v: unknown): string {
  if (!v || typeof v !== 'object') return '';
  const s = v as { mode?: unknown; layers?: { first: number; last: number } | null; positions?: unknown; alpha?: { scale?: unknown } };
  const layers = s.layers ? `L${s.layers.first}-${s.layers.last}` : 'all layers';
  return `${String(s.mode)} ${layers} ${String(s.positions)} ${s.alpha?.scale === 'relative' ? 'relative alpha' : 'absolute alpha'}`;
}

const mean = (xs: number[]) => (xs.length === 0 ? NaN : xs.reduce((a, b) => a + b, 0) / xs.length);

/** The coherence columns of one group of records. */
export function coherenceColumns(records: readonly EvalRecord[]): CoherenceColumns {
  const judged = records.filter((r) => typeof r['coherent_refusal'] === 'boolean');
  const k = judged.filter((r) => r['coherent_refusal'] === true).length;
  const ci = wilsonInterval(k, judged.length, Z95);
  const nums = (f: string) => records.map((r) => r[f]).filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
  const changed = records.filter((r) => typeof r['changed_from_base'] === 'boolean');
  return {
    coherent_n: judged.length,
    coherent_refusals: k,
    coherent_rate: ci.rate,
    coherent_ci_low: ci.low,
    coherent_ci_high: ci.high,
    mean_reply_nll: mean(nums('reply_nll')),
    changed_n: changed.length,
    changed_from_base: changed.length === 0 ? NaN : changed.filter((r) => r['changed_from_base'] === true).length / changed.length,
    mean_first_token_kl: mean(nums('first_token_kl')),
    steering: [...new Set(records.map((r) => steeringLabel(r['steering'])).filter((x) => x !== ''))].join('; '),
  };
}

function withCoherence<R extends SummaryRow>(rows: R[], records: readonly EvalRecord[]): (R & CoherenceColumns)[] {
  const groups = new Map<string, EvalRecord[]>();
  for (const r of records) {
    const k = JSON.stringify([r.dataset, r.condition]);
    const g = groups.get(k);
    if (g) g.push(r);
    else groups.set(k, [r]);
  }
  return rows.map((row) => ({ ...row, ...coherenceColumns(groups.get(JSON.stringify([row.dataset, row.condition])) ?? []) }));
}

export function summarizeRun(records: readonly EvalRecord[]): RunSummary {
  const labels = labelsOf(records);
  const labelOf = (dataset: string): SummaryLabel => {
    const s = labels.get(dataset);
    return s && s.size === 1 && (s.has('harmful') || s.has('benign')) ? ([...s][0] as Label) : 'mixed';
  };
  const rows = withCoherence(summarize(records).map((r) => ({ ...r, label: labelOf(r.dataset) })), records);
  const mixed = records.filter((r) => labelOf(r.dataset) === 'mixed' && typeof r.label === 'string').map((r) => ({ ...r, dataset: `${r.dataset} [${r.label as string}]` }));
  const byLabel = withCoherence(
    summarize(mixed).map((r) => ({
      ...r,
      label: (r.dataset.endsWith('[harmful]') ? 'harmful' : r.dataset.endsWith('[benign]') ? 'benign' : 'mixed') as SummaryLabel,
    })),
    mixed,
  );
  return { rows, byLabel };
}

const COLUMNS = [
  'dataset', 'condition', 'label', 'judge', 'n', 'refusals', 'refusal_rate', 'ci_low', 'ci_high', 'unjudged',
  'coherent_n', 'coherent_refusals', 'coherent_rate', 'coherent_ci_low', 'coherent_ci_high',
  'mean_reply_nll', 'changed_n', 'changed_from_base', 'mean_first_token_kl', 'steering',
] as const;

export function runSummaryJson(s: RunSummary): string {
  return `${JSON.stringify({ z: Z95, interval: 'wilson', coherent_refusal_rule: COHERENT_REFUSAL_RULE, rows: s.rows, by_label: s.byLabel }, null, 2)}\n`;
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

const interval = (rate: number, low: number, high: number) => (Number.isNaN(rate) ? '–' : `${pct(rate)} (${pct(low)} – ${pct(high)})`);
const num = (x: number, digits: number) => (Number.isNaN(x) ? '–' : x.toFixed(digits));

/** The table the CLI prints and writes as summary.md. */
export function runSummaryMarkdown(s: RunSummary): string {
  // Dataset and condition names come from users: escape what would break the table.
  const cell = (t: string) => t.replace(/\\/g, '\\\\').replace(/\|/g, '\\|').replace(/[\r\n]+/g, ' ');
  const table = (rows: LabelledSummaryRow[]) => [
    '| dataset | condition | measures | judge | n | refusals | rate (%) | Wilson 95 % CI (%) | unjudged | coherent rate (%) (Wilson 95 % CI) | mean reply_nll | changed from base (%) | first-token KL | steering |',
    '|---|---|---|---|---:|---:|---:|---|---:|---|---:|---:|---:|---|',
    ...rows.map(
      (r) =>
        `| ${cell(r.dataset)} | ${cell(r.condition)} | ${measure(r.label)} | ${cell(r.judge ?? '')} | ${r.n} | ${r.refusals} | ${pct(r.refusal_rate)} | ${Number.isNaN(r.ci_low) ? '–' : `${pct(r.ci_low)} – ${pct(r.ci_high)}`} | ${r.unjudged} | ` +
        `${interval(r.coherent_rate, r.coherent_ci_low, r.coherent_ci_high)} | ${num(r.mean_reply_nll, 3)} | ${Number.isNaN(r.changed_from_base) ? '–' : pct(r.changed_from_base)} | ${num(r.mean_first_token_kl, 4)} | ${cell(r.steering)} |`,
    ),
  ];
  const out = table(s.rows);
  if (s.byLabel.length > 0) out.push('', 'Datasets with both labels, per label (refusal on benign prompts = over-refusal):', '', ...table(s.byLabel));
  out.push('', `Coherent rate: ${COHERENT_REFUSAL_RULE}. On benign prompts it is the coherent over-refusal rate.`);
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
