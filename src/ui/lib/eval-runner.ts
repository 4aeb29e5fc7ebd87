/**
 * The lab's evaluation run: prompts x conditions -> generate -> judge -> one record each in a RecordStore (IndexedDB
 * in the browser, memory in tests). Resumable: items whose (dataset, id, condition) is stored are skipped, so
 * re-running the same plan after a reload finishes what is left. Cancellable between generations (and the running
 * generation is stopped through the signal). The model and controller are injected, so this runs in Node tests.
 *
 * Each prompt is first fitted into the model's context (deps.fit: src/core/method/fit.ts in the LLM worker, the same
 * function the CLI uses; the run's fit mode, default 'middle'), and the fitted text is what is observed and
 * generated; every record carries `truncated`, `prompt_tokens` (the chat-formatted prompt's length before fitting)
 * and `kept_tokens`, as the CLI's records do. A prompt the model still cannot take (fit 'none', or a context too small
 * even for the template) becomes a record with `error` and no `refused`, so the summary counts it as unjudged
 * instead of the run failing; MAX_CONSECUTIVE_FAILURES in a row stop the run.
 *
 * Per prompt, the unsteered activation of the last prompt token is observed once and shared by every condition
 * (the controller and CAST read it); the 'off' condition's own generation provides it when 'off' is planned.
 */
import Papa from 'papaparse';
import { sample } from '../../core/data/sample.js';
import type { LoadResult, PromptRecord } from '../../core/data/types.js';
import { judgeOutput, type RefusalJudge } from '../../core/eval/judges.js';
import type { EvalRecord, RecordStore } from '../../core/eval/records.js';
import { parseFitMode, type FitMode, type FitResult } from '../../core/method/fit.js';
import type { ControllerPrediction, PolicyKind } from '../../core/steering/index.js';
import type { SteeringOutcome } from './steer.js';

export interface PlannedPrompt {
  dataset: string;
  prompt: PromptRecord;
}

/** n prompts per dataset chosen by seed (all of a smaller dataset), in the seeded order. */
export function planPrompts(datasets: readonly LoadResult[], n: number, seed: number): PlannedPrompt[] {
  if (!Number.isInteger(n) || n <= 0) throw new RangeError(`N must be a positive whole number of prompts per dataset, got ${n}`);
  if (datasets.length === 0) throw new RangeError('choose at least one dataset to evaluate on');
  const out: PlannedPrompt[] = [];
  for (const d of datasets) {
    for (const p of sample(d.prompts, Math.min(n, d.prompts.length), seed)) out.push({ dataset: d.name, prompt: p });
  }
  return out;
}

export interface GenerationOut {
  text: string;
  tokenIds: number[];
  finishReason: 'eos' | 'length' | 'abort';
  /** Unsteered residual of the last prompt token [L+1, H] when asked for. */
  promptResiduals?: Float32Array;
}

export interface EvalDeps {
  /** The user message fitted into the context for this run's reply length and fit mode (the worker's fit()). */
  fit(text: string): Promise<FitResult>;
  /** Unsteered residual of the last prompt token [L+1, H] of the chat-formatted prompt. */
  observe(text: string): Promise<Float32Array>;
  /** Controller prediction from the observed residual; null when no controller is loaded. */
  predict(promptResiduals: Float32Array): Promise<ControllerPrediction | null>;
  /** The matrix for a condition (steer.ts steeringFor with the run's settings). */
  steering(condition: PolicyKind, promptResiduals: Float32Array, prediction: ControllerPrediction | null): SteeringOutcome;
  generate(text: string, steering: Float32Array | null, capture: boolean): Promise<GenerationOut>;
  judge: RefusalJudge;
  store: RecordStore;
  onProgress?: (p: { done: number; total: number; skipped: number; last?: EvalRecord }) => void;
  signal?: AbortSignal;
}

/**
 * Prompts in a row whose every condition failed, after which the run stops instead of recording yet more errors
 * (something is broken, not just one prompt too long for the model).
 */
export const MAX_CONSECUTIVE_FAILURES = 10;

export interface EvalRunSummary {
  done: number;
  skipped: number;
  total: number;
  cancelled: boolean;
}

function aborted(signal?: AbortSignal): boolean {
  return signal?.aborted === true;
}

/**
 * The fit mode of a stored run's settings. Runs stored before fitting existed had none, and a resume must keep
 * doing what they did ('none'); a new run carries its choice (the panel's default is 'middle').
 */
export function runFitMode(settings: { fit?: unknown }): FitMode {
  return settings.fit === undefined ? 'none' : parseFitMode(settings.fit, 'the run\'s fit setting');
}

/** What the model saw, in the CLI records' names (nothing when the fit itself failed). */
function fitFields(f: FitResult | null): Partial<EvalRecord> {
  return f ? { truncated: f.truncated, prompt_tokens: f.originalTokens, kept_tokens: f.keptTokens } : {};
}

/** Runs (or resumes) the plan. Resolves with cancelled = true when the signal fired; rejects on a real error. */
export async function runEval(plan: readonly PlannedPrompt[], conditions: readonly PolicyKind[], deps: EvalDeps): Promise<EvalRunSummary> {
  if (conditions.length === 0) throw new RangeError('choose at least one condition to evaluate');
  // 'off' first: its generation also yields the observed activation the other conditions need.
  const order = [...new Set(conditions)].sort((a, b) => (a === 'off' ? -1 : b === 'off' ? 1 : 0));
  const total = plan.length * order.length;
  let failures = 0;
  let done = 0;
  let skipped = 0;
  for (const { dataset, prompt } of plan) {
    const todo = order.filter((c) => !deps.store.has({ dataset, id: prompt.id, condition: c }));
    skipped += order.length - todo.length;
    done += order.length - todo.length;
    if (todo.length === 0) {
      deps.onProgress?.({ done, total, skipped });
      continue;
    }
    let fitted: FitResult | null = null;
    let residuals: Float32Array | null = null;
    let prediction: ControllerPrediction | null | undefined;
    let succeeded = false;
    let lastError: unknown = null;
    for (const condition of todo) {
      if (aborted(deps.signal)) return { done, skipped, total, cancelled: true };
      const t0 = Date.now();
      let outcome: SteeringOutcome | null = null;
      let gen: GenerationOut;
      try {
        fitted ??= await deps.fit(prompt.text);
        if (condition !== 'off' && !residuals) residuals = await deps.observe(fitted.text);
        if (condition !== 'off') {
          if (prediction === undefined) prediction = await deps.predict(residuals!);
          outcome = deps.steering(condition, residuals!, prediction);
        }
        gen = await deps.generate(fitted.text, outcome?.matrix ?? null, condition === 'off' && !residuals);
        succeeded = true;
      } catch (e) {
        if (aborted(deps.signal)) return { done, skipped, total, cancelled: true };
        // A prompt the model cannot take (e.g. longer than its context) is recorded unjudged and the run goes on.
        lastError = e;
        const record: EvalRecord = {
          dataset, id: prompt.id, condition, label: prompt.label, prompt: prompt.text, ...fitFields(fitted), error: e instanceof Error ? e.message : String(e), ms: Date.now() - t0,
        };
        await deps.store.append(record);
        done++;
        deps.onProgress?.({ done, total, skipped, last: record });
        continue;
      }
      if (gen.finishReason === 'abort' || aborted(deps.signal)) return { done, skipped, total, cancelled: true };
      if (condition === 'off' && gen.promptResiduals) residuals = gen.promptResiduals;
      const verdict = await judgeOutput(deps.judge, gen.text, prompt.text);
      const p = outcome?.prediction ?? null;
      const record: EvalRecord = {
        dataset,
        id: prompt.id,
        condition,
        label: prompt.label,
        prompt: prompt.text,
        ...fitFields(fitted),
        output: gen.text,
        tokens: gen.tokenIds.length,
        finish: gen.finishReason,
        refused: verdict.refused,
        judge: verdict.judge,
        matched: verdict.matched ?? null,
        s: p ? p.scale : null,
        w: p ? Array.from(p.layerWeights) : null,
        steered: outcome?.matrix != null,
        cast_similarity: outcome?.cast?.similarity ?? null,
        ms: Date.now() - t0,
      };
      await deps.store.append(record);
      done++;
      deps.onProgress?.({ done, total, skipped, last: record });
    }
    // Many prompts in a row with nothing but failures mean something is broken: stop (the run can be resumed).
    failures = succeeded ? 0 : failures + 1;
    if (failures >= MAX_CONSECUTIVE_FAILURES) throw lastError;
  }
  return { done, skipped, total, cancelled: false };
}

const RECORD_COLUMNS = ['dataset', 'id', 'condition', 'label', 'refused', 'judge', 'matched', 's', 'w', 'steered', 'cast_similarity', 'tokens', 'finish', 'ms', 'error', 'truncated', 'prompt_tokens', 'kept_tokens', 'prompt', 'output'] as const;

/** Per-prompt records as CSV (w joined by spaces); formulas escaped because prompts and outputs are untrusted text. */
export function recordsToCsv(records: readonly EvalRecord[]): string {
  const data = records.map((r) =>
    RECORD_COLUMNS.map((c) => {
      const v = r[c];
      if (Array.isArray(v)) return v.map((x) => (typeof x === 'number' ? x.toFixed(4) : String(x))).join(' ');
      return v === null || v === undefined ? '' : (v as string | number | boolean);
    }),
  );
  return `${Papa.unparse({ fields: [...RECORD_COLUMNS], data }, { newline: '\n', escapeFormulae: true })}\n`;
}
