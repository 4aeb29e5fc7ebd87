/**
 * The evaluation runner: dataset x condition x prompt, each prompt through the method's flow (src/core/method/flow.ts),
 * judged, and appended to a record store as soon as it is done, so an interrupted run resumes where it stopped (the
 * store's has() skips finished keys; at most the record in flight is redone). Sampling seeds depend only on
 * (seed, dataset, prompt id), never on the order or on what was already done, so a resumed run writes the same
 * records as an uninterrupted one (and every condition of a prompt shares its seed: paired comparisons).
 *
 * Summaries: refusal rate with a Wilson 95 % interval per (dataset, condition); on a benign dataset that rate is the
 * over-refusal rate. A dataset holding both labels (e.g. toxicchat-test) is also summarised per label.
 * Platform-free: the Node command wires the store (openRunStore) and the files.
 */
import Papa from 'papaparse';
import { hash53 } from '../data/sample.js';
import type { Label, PromptRecord } from '../data/types.js';
import type { SteerableModel } from '../model/steerable.js';
import type { EvalCondition } from '../method/conditions.js';
import { parseFitMode, type FitMode } from '../method/fit.js';
import { runFlow, type MethodController } from '../method/flow.js';
import { judgeOutput, type RefusalJudge } from './judges.js';
import { promptHash } from './resume-check.js';
import { markdownCell, summarize, type EvalRecord, type RecordStore, type SummaryRow } from './records.js';
import { Z95 } from './stats.js';

/** The paper's sampling (METHOD.md section 1). */
export const PAPER_SAMPLING = { temperature: 0.7, topP: 0.9 } as const;

export interface EvalDataset {
  name: string;
  prompts: readonly PromptRecord[];
}

export interface RunEvalOptions {
  model: SteerableModel;
  datasets: readonly EvalDataset[];
  conditions: readonly EvalCondition[];
  /** Unit direction d and controller, shared by the conditions that need them. */
  direction: Float32Array | null;
  controller: MethodController | null;
  store: RecordStore;
  judge: RefusalJudge;
  maxNewTokens: number;
  /** null = greedy. */
  sampling: { temperature: number; topP: number } | null;
  seed: number;
  steerPromptPositions?: 'last' | 'all';
  /**
   * How prompts longer than the model's context are shortened (src/core/method/fit.ts); default 'middle'. Each record
   * carries `truncated` and `prompt_tokens` (the chat-formatted prompt's length before fitting) and `kept_tokens`.
   */
  fit?: FitMode;
  /** Let special-token strings in prompts become special tokens (default: text). Each record says which. */
  allowSpecialTokens?: boolean;
  /** Copied into every record (model id, direction id, controller file...). */
  stamp?: Record<string, unknown>;
  onProgress?: (p: { done: number; total: number; skipped: number; record: EvalRecord | null }) => void;
  signal?: AbortSignal;
}

export interface RunEvalResult {
  total: number;
  written: number;
  skipped: number;
}

/** Per-prompt sampling seed: a function of (seed, dataset, id) only. */
export function promptSeed(seed: number, dataset: string, id: string): number {
  return hash53(`${dataset}\u0000${id}`, seed) % 2147483647;
}

const round = (x: number) => Math.round(x * 1000) / 1000;

export async function runEval(o: RunEvalOptions): Promise<RunEvalResult> {
  if (!Number.isInteger(o.maxNewTokens) || o.maxNewTokens < 1) throw new Error(`max new tokens must be an integer >= 1, got ${o.maxNewTokens}`);
  const fit = parseFitMode(o.fit);
  const total = o.datasets.reduce((s, d) => s + d.prompts.length, 0) * o.conditions.length;
  let done = 0;
  let skipped = 0;
  let written = 0;
  for (const ds of o.datasets) {
    for (const cond of o.conditions) {
      for (const p of ds.prompts) {
        if (o.signal?.aborted) return { total, written, skipped };
        const key = { dataset: ds.name, id: p.id, condition: cond.name };
        if (o.store.has(key)) {
          done++;
          skipped++;
          o.onProgress?.({ done, total, skipped, record: null });
          continue;
        }
        const seed = promptSeed(o.seed, ds.name, p.id);
        const flow = await runFlow(
          o.model,
          p.text,
          { direction: o.direction, controller: o.controller },
          {
            policy: cond.policy,
            maxNewTokens: o.maxNewTokens,
            sampling: o.sampling ? { ...o.sampling, seed } : null,
            steerPromptPositions: o.steerPromptPositions ?? 'last',
            fit,
            allowSpecialTokens: o.allowSpecialTokens === true,
            ...(o.signal ? { signal: o.signal } : {}),
          },
        );
        if (flow.finishReason === 'abort') return { total, written, skipped };
        const tj = performance.now();
        const verdict = await judgeOutput(o.judge, flow.text, p.text);
        const judgeMs = performance.now() - tj;
        const record: EvalRecord = {
          ...key,
          label: p.label,
          prompt_hash: await promptHash(p.text),
          special_tokens: o.allowSpecialTokens === true ? 'allowed' : 'text',
          prompt_special_tokens: flow.specialTokens,
          s: flow.scale,
          w: flow.layerWeights,
          row_norms: flow.rowNorms,
          ...(flow.cast ? { cast: flow.cast } : {}),
          output: flow.text,
          refused: verdict.refused,
          judge: verdict.judge,
          ...(verdict.matched !== undefined ? { matched: verdict.matched } : {}),
          finish_reason: flow.finishReason,
          new_tokens: flow.tokenIds.length,
          truncated: flow.fit.truncated,
          prompt_tokens: flow.fit.originalTokens,
          kept_tokens: flow.fit.keptTokens,
          sampling: o.sampling ? { temperature: o.sampling.temperature, top_p: o.sampling.topP, seed } : null,
          timings: {
            observe_ms: flow.timings.observe_ms === null ? null : round(flow.timings.observe_ms),
            generate_ms: round(flow.timings.generate_ms),
            judge_ms: round(judgeMs),
            total_ms: round(flow.timings.total_ms + judgeMs),
          },
          ...(o.stamp ?? {}),
        };
        await o.store.append(record);
        written++;
        done++;
        o.onProgress?.({ done, total, skipped, record });
      }
    }
  }
  return { total, written, skipped };
}

// ------------------------------------------------------------------------------------------------ summary

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
  const cell = markdownCell;
  const table = (rows: LabelledSummaryRow[]) => [
    '| dataset | condition | measures | judge | n | refusals | rate (%) | Wilson 95 % CI (%) |',
    '|---|---|---|---|---:|---:|---:|---|',
    ...rows.map(
      (r) =>
        `| ${cell(r.dataset)} | ${cell(r.condition)} | ${measure(r.label)} | ${cell(r.judge ?? '')} | ${r.n} | ${r.refusals} | ${pct(r.refusal_rate)} | ${Number.isNaN(r.ci_low) ? '–' : `${pct(r.ci_low)} – ${pct(r.ci_high)}`} |`,
    ),
  ];
  const out = table(s.rows);
  if (s.byLabel.length > 0) out.push('', 'Datasets with both labels, per label (refusal on benign prompts = over-refusal):', '', ...table(s.byLabel));
  return `${out.join('\n')}\n`;
}
