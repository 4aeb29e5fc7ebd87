/**
 * THE evaluation runner of CLI and lab: dataset x prompt x condition, each through the method's flow
 * (src/core/method/flow.ts runFlows: several records per forward pass, `batch` rows to decode), judged, and appended
 * to an injected record store (the JSONL file in Node, IndexedDB in the browser, memory in tests) in that order as
 * soon as it and every record before it are done, so an interrupted run resumes where it stopped (the store's has()
 * skips finished keys; at most the window of batches in flight is redone). Rows are decoded shortest prompt first
 * within a window (batch.ts LENGTH_SORT_WINDOW: less padding). The records do not depend on the batch size.
 * Platform-free.
 *
 * What is not computed twice: a base reply the calibration decoded is written as its record (no row of a batch);
 * the calibration's prompt prefix caches are carried to the same prompts' steered records (prefix-carry.ts, within
 * a memory budget), so their prefill does not run again; the coherence passes start from the prefix the decode kept.
 *
 * Seeds: every record carries seed = promptSeed(run seed, dataset, prompt id), the same for every condition of a
 * prompt (paired comparisons) and independent of order and of what was already done, so a resumed run writes the
 * same records as an uninterrupted one; with sampling it seeds the generation, greedy runs record it all the same.
 *
 * A prompt the model cannot take (longer than its context with fit 'none', or a context too small even for the
 * chat template) becomes a record with `error` and no `refused` (unjudged in the summary) and the run goes on;
 * MAX_CONSECUTIVE_FAILURES prompts in a row whose every condition failed stop the run with the last error
 * (something is broken, not one prompt). A resume does not retry a stored error record.
 *
 * The record (RunRecord) is the one schema of CLI and lab runs; run.json holds the run's settings (runSettings()).
 *
 * Coherence (coherence-run.ts, the rule in coherence.ts): before the first record the run fixes its reply_nll
 * threshold T from the base replies to its calibration prompts (DEFAULT_CALIBRATION_SET unless a set is named), or
 * takes the one it is given (a resumed run: run.json's coherence_calibration; a sweep: its base row's). Base replies
 * already in the store are reused, and a calibration reply that is also a base record of the run is written as that
 * record, so the default costs no extra generation. Within each prompt the base condition runs first, so steered
 * records can say whether their reply differs from base.
 */
import type { Label, PromptRecord } from '../data/types.js';
import type { ModelIdentity } from '../model/model-id.js';
import { findSpecialTokenStrings } from '../model/special-tokens.js';
import type { SteerableModel } from '../model/steerable.js';
import type { PromptPrefix } from '../model/decode.js';
import type { ModelFingerprint } from './resume-check.js';
import type { ConditionName, EvalCondition, ManualSettings } from '../method/conditions.js';
import { parseFitMode, type FitMode } from '../method/fit.js';
import { runFlows, type FlowItem, type FlowOutcome, type FlowResult, type MethodController } from '../method/flow.js';
import { hash53 } from '../data/sample.js';
import { sha256Text } from '../util/sha256.js';
import { judgeOutput, type RefusalJudge } from './judges.js';
import { checkBatch, LENGTH_SORT_WINDOW, lengthBatches } from './batch.js';
import { DEFAULT_PREFIX_CARRY_BYTES, PrefixCarry } from './prefix-carry.js';
import type { EvalRecord, RecordKey, RecordStore } from './records.js';
import { COHERENT_REFUSAL_RULE, DEFAULT_NLL_QUANTILE, replyScores, type NllCalibration, type ReplyScores } from './coherence.js';
import { calibrationFrom, checkCalibration, DEFAULT_CALIBRATION_SET, defaultCalibrationPlan, scoreRecord, type CalibrationPlan, type RecordCoherence } from './coherence-run.js';
import { DEFAULT_STEERING_SETTINGS, settingsRecord, type SteeringSettings } from '../steering/modes.js';

/** The paper's sampling: temperature 0.7, top-p 0.9 (Hegazy et al., evaluation setting). */
export const PAPER_SAMPLING = { temperature: 0.7, topP: 0.9 } as const;

/** Prompts in a row whose every condition failed, after which the run stops (it can be resumed). */
export const MAX_CONSECUTIVE_FAILURES = 10;

export interface EvalDataset {
  name: string;
  prompts: readonly PromptRecord[];
}

/** One record of an eval run: the same fields from the CLI and from the lab. */
export interface RunRecord {
  dataset: string;
  /** The prompt's id in its dataset. */
  id: string;
  condition: ConditionName;
  label: Label | null;
  /** The prompt as in the dataset (before fitting into the context). */
  prompt: string;
  /** "sha256:" + 16 hex digits of the prompt text: joins records of runs over the same prompts. */
  prompt_hash: string;
  /** Whether special-token strings in the prompt stayed text ('text', the default) or became tokens ('allowed'). */
  special_tokens: 'text' | 'allowed';
  /** Special-token strings the prompt holds (e.g. "<|im_end|>"); empty for most prompts. */
  prompt_special_tokens: string[];
  model_id: string;
  model_name: string;
  model_variant: { dtype: string; graph: string };
  direction_id: string | null;
  controller_id: string | null;
  judge: string;
  /** promptSeed(run seed, dataset, id): the generation's seed when sampling, recorded for greedy runs too. */
  seed: number;
  /** null = greedy. */
  sampling: { temperature: number; top_p: number } | null;
  /** Patch strength of was / uniform / manual; null for the others. */
  alpha: number | null;
  /** The controller's scale and layer weights for this prompt (whatever the condition: base too) when one is loaded. */
  s: number | null;
  w: number[] | null;
  /** Per-layer norms of the patch applied; null when none was. */
  row_norms: number[] | null;
  /** manual: the user's settings the patch was made from. */
  manual?: { scale: number; layer_weights: number[]; enabled_layers: boolean[] | null };
  /** cast: the similarity at the condition layer and whether the gate opened. */
  cast?: { similarity: number; active: boolean };
  output?: string;
  /** Absent when the prompt could not be run (then `error` says why): unjudged. */
  refused?: boolean;
  matched?: string;
  finish_reason?: 'eos' | 'length';
  new_tokens?: number;
  /**
   * Coherence (judged records; coherence-run.ts): reply_nll (mean NLL of reply tokens 2..T under the unsteered model,
   * null below 2 tokens), first_token_nll, the run's threshold T, the coherent-refusal verdict (COHERENT_REFUSAL_RULE),
   * first_token_kl (benign prompts under a steered condition, else null) and changed_from_base (steered conditions:
   * the reply text differs from the base reply to the same prompt; null for base or when no base reply is known).
   * An error record has coherent_refusal null (unjudged).
   */
  reply_nll?: number | null;
  first_token_nll?: number | null;
  nll_threshold?: number;
  coherent_refusal?: boolean | null;
  first_token_kl?: number | null;
  changed_from_base?: boolean | null;
  /** Steering settings of a steered condition (mode, layer range, positions, alpha scale); null for base. */
  steering?: SteeringSettings | null;
  /** What the model saw: whether the prompt was shortened, and its chat-formatted length before and after. */
  truncated?: boolean;
  prompt_tokens?: number;
  kept_tokens?: number;
  error?: string;
  timings: { observe_ms: number | null; generate_ms: number | null; judge_ms: number | null; total_ms: number; coherence_ms?: number | null };
}

export interface RunEvalOptions {
  model: SteerableModel;
  datasets: readonly EvalDataset[];
  conditions: readonly EvalCondition[];
  /** Unit direction d and controller, shared by the conditions that need them, with their content ids. */
  direction: Float32Array | null;
  controller: MethodController | null;
  directionId: string | null;
  controllerId: string | null;
  store: RecordStore;
  judge: RefusalJudge;
  maxNewTokens: number;
  /** null = greedy. */
  sampling: { temperature: number; topP: number } | null;
  seed: number;
  steerPromptPositions?: 'last' | 'all';
  /** Mode, layer range, positions and alpha scale of the steered conditions (default add, all layers, steerPromptPositions, absolute). */
  settings?: SteeringSettings;
  /** A calibration to reuse as it is (a resumed run's, a sweep's base row's); absent: the run calibrates first. */
  calibration?: NllCalibration | null;
  /** The calibration prompts when the run calibrates (default: defaultCalibrationPlan of the datasets). */
  calibrationPlan?: CalibrationPlan;
  /** Told the calibration once it is made (the CLI stores it in run.json), before the first record is written. */
  onCalibration?: (c: NllCalibration) => void | Promise<void>;
  onCalibrationProgress?: (done: number, total: number) => void;
  /** Where the base condition's records of the same prompts are (changed_from_base); default the run's own store. */
  baseRecords?: Pick<RecordStore, 'get'>;
  /** How prompts longer than the model's context are shortened (src/core/method/fit.ts); default 'middle'. */
  fit?: FitMode;
  /** Let special-token strings in prompts become special tokens (default: they stay text). Each record says which. */
  allowSpecialTokens?: boolean;
  /**
   * Records decoded together (batch.ts; default DEFAULT_EVAL_BATCH): the records are the same for every size. Base
   * records the calibration already decoded take no place in a batch. The runner holds LENGTH_SORT_WINDOW batches at
   * a time and decodes them shortest prompt first.
   */
  batch?: number;
  /**
   * Memory for the prompt prefix caches the calibration hands to the main loop (prefix-carry.ts; default
   * DEFAULT_PREFIX_CARRY_BYTES; 0 = none): the steered records of those prompts skip their prefill. Speed only.
   */
  prefixCarryBytes?: number;
  onProgress?: (p: { done: number; total: number; skipped: number; record: RunRecord | null }) => void;
  signal?: AbortSignal;
}

export interface RunEvalResult {
  total: number;
  written: number;
  skipped: number;
  /** Records written with `error` (prompts the model could not take). */
  failed: number;
  /** True when the signal stopped the run before the end. */
  cancelled: boolean;
  /** The reply_nll calibration the records were judged with (null only when cancelled before it was made). */
  calibration: NllCalibration | null;
}

/** Per-prompt sampling seed: a function of (seed, dataset, id) only. */
export function promptSeed(seed: number, dataset: string, id: string): number {
  return hash53(`${dataset}\u0000${id}`, seed) % 2147483647;
}

/** "sha256:" + 16 hex digits of a prompt's text. */
export async function promptHash(text: string): Promise<string> {
  return `sha256:${(await sha256Text(text)).slice(0, 16)}`;
}

const round = (x: number) => Math.round(x * 1000) / 1000;

function alphaOf(c: EvalCondition): number | null {
  const p = c.policy;
  return p.kind === 'was' || p.kind === 'uniform' || p.kind === 'manual' ? (p.alpha ?? null) : null;
}

function manualOf(c: EvalCondition): RunRecord['manual'] | undefined {
  const p = c.policy;
  if (p.kind !== 'manual') return undefined;
  return { scale: p.scale, layer_weights: Array.from(p.layerWeights), enabled_layers: p.enabledLayers ? Array.from(p.enabledLayers) : null };
}

type RecordHead = Omit<RunRecord, 's' | 'w' | 'row_norms' | 'timings'>;

/** One (prompt, condition) record to make. `last`: the last pending condition of its prompt. */
interface Job {
  prompt: PromptRecord;
  seed: number;
  cond: EvalCondition;
  head: RecordHead;
  last: boolean;
}

/** The flow of one record: the same for every batch size (per-prompt seed, the run's budget, fitting, settings). */
function flowItem(o: RunEvalOptions, fit: FitMode, job: Job): FlowItem {
  const { signal: _signal, ...opts } = flowOptions(o, job.cond, job.seed, fit);
  return { prompt: job.prompt.text, ...opts };
}

/** What judging a record needs besides its flow: the run's threshold and where the base replies are. */
interface CoherenceContext {
  calibration: NllCalibration;
  baseStore: Pick<RecordStore, 'get'>;
  chat: { allowSpecialTokens: boolean };
  /** This record's reply scores, when the calibration already computed them (a base reply it decoded). */
  scores?: ReplyScores | undefined;
  /** The unsteered prompt prefix cache its decode kept (runFlows keepPrefix): scoring skips the prompt pass. */
  prefix?: PromptPrefix | undefined;
}

/** A base reply the calibration decoded and scored, handed to the main loop to be written as its record. */
interface CalibratedReply {
  flow: FlowResult;
  scores: ReplyScores;
}

/** The record of a finished flow, judged by keywords and for coherence. */
async function judgedRecord(o: RunEvalOptions, job: Job, flow: FlowResult, cc: CoherenceContext): Promise<RunRecord> {
  const tj = performance.now();
  const verdict = await judgeOutput(o.judge, flow.text, job.prompt.text);
  const judgeMs = performance.now() - tj;
  const tc = performance.now();
  const key = { dataset: job.head.dataset, id: job.head.id, condition: job.cond.name };
  const coherence = await coherenceOf(o, cc, key, job.prompt.label ?? null, flow, verdict.refused, job.cond.policy.kind !== 'off');
  const coherenceMs = performance.now() - tc;
  const manual = manualOf(job.cond);
  return {
    ...job.head,
    s: flow.scale,
    w: flow.layerWeights,
    row_norms: flow.rowNorms,
    ...(manual ? { manual } : {}),
    ...(flow.cast ? { cast: flow.cast } : {}),
    output: flow.text,
    refused: verdict.refused,
    judge: verdict.judge,
    ...(verdict.matched !== undefined ? { matched: verdict.matched } : {}),
    finish_reason: flow.finishReason as 'eos' | 'length',
    new_tokens: flow.tokenIds.length,
    ...coherence,
    truncated: flow.fit.truncated,
    prompt_tokens: flow.fit.originalTokens,
    kept_tokens: flow.fit.keptTokens,
    timings: {
      observe_ms: flow.timings.observe_ms === null ? null : round(flow.timings.observe_ms),
      generate_ms: round(flow.timings.generate_ms),
      judge_ms: round(judgeMs),
      total_ms: round(flow.timings.total_ms + judgeMs + coherenceMs),
      coherence_ms: round(coherenceMs),
    },
  };
}

/** The record of a prompt the model could not take. */
function errorRecord(job: Job, e: unknown, ms: number): RunRecord {
  const manual = manualOf(job.cond);
  return {
    ...job.head,
    s: null,
    w: null,
    row_norms: null,
    ...(manual ? { manual } : {}),
    coherent_refusal: null,
    error: e instanceof Error ? e.message : String(e),
    timings: { observe_ms: null, generate_ms: null, judge_ms: null, total_ms: round(ms), coherence_ms: null },
  };
}

/** The settings a steered condition's records carry: the run's, or the defaults with the run's positions. */
function steeringOf(o: RunEvalOptions): SteeringSettings {
  return settingsRecord(o.settings ?? { ...DEFAULT_STEERING_SETTINGS, positions: o.steerPromptPositions ?? 'last' });
}

/** The flow options of one condition on one prompt (the same for the calibration reply and the base record). */
function flowOptions(o: RunEvalOptions, cond: EvalCondition, seed: number, fit: FitMode) {
  const steered = cond.policy.kind !== 'off' && o.settings !== undefined;
  return {
    policy: cond.policy,
    maxNewTokens: o.maxNewTokens,
    sampling: o.sampling ? { ...o.sampling, seed } : null,
    ...(steered ? { settings: o.settings! } : { steerPromptPositions: o.settings?.positions ?? o.steerPromptPositions ?? 'last' }),
    fit,
    allowSpecialTokens: o.allowSpecialTokens === true,
    ...(o.signal ? { signal: o.signal } : {}),
  };
}

const BASE: EvalCondition = { name: 'base', policy: { kind: 'off' } };
const flowKey = (dataset: string, id: string) => JSON.stringify([dataset, id]);

/**
 * The run's reply_nll threshold: the given one, else the q-quantile over the base (unsteered, greedy) replies to the
 * calibration prompts. A base record already stored is reused; the others are decoded `batch` at a time, shortest
 * prompt first (runFlows, as the main loop decodes: the replies do not depend on the batch size). A fresh calibration
 * reply that the run would also write as a base record (greedy runs listing base) is handed back in `flows`, with its
 * reply scores, for the main loop to write: neither its decode nor its unsteered scoring pass runs twice.
 */
async function calibrate(o: RunEvalOptions, fit: FitMode, batch: number, carry: PrefixCarry): Promise<{ calibration: NllCalibration | null; flows: Map<string, CalibratedReply> }> {
  const flows = new Map<string, CalibratedReply>();
  if (o.calibration) return { calibration: checkCalibration(o.calibration, 'the given calibration'), flows };
  const plan = o.calibrationPlan ?? defaultCalibrationPlan(o.datasets);
  const inRun = new Set(o.datasets.flatMap((d) => d.prompts.map((p) => flowKey(d.name, p.id))));
  const reusable = o.sampling === null && o.conditions.some((c) => c.name === 'base');
  const nlls: (number | null)[] = new Array<number | null>(plan.prompts.length).fill(null);
  const todo: number[] = [];
  let done = 0;
  for (const [i, { dataset, prompt }] of plan.prompts.entries()) {
    const stored = o.sampling === null ? o.store.get({ dataset, id: prompt.id, condition: 'base' }) : undefined;
    if (stored && 'reply_nll' in stored) {
      nlls[i] = typeof stored['reply_nll'] === 'number' ? stored['reply_nll'] : null;
      o.onCalibrationProgress?.(++done, plan.prompts.length);
    } else todo.push(i);
  }
  // shortest prompt first, as the main loop decodes (batch.ts LENGTH_SORT_WINDOW); nothing is written here, so the
  // whole set is sorted at once
  for (const group of lengthBatches(todo.map((i) => plan.prompts[i]!.prompt.text.length), batch)) {
    if (o.signal?.aborted) return { calibration: null, flows };
    const chunk = group.map((j) => todo[j]!);
    const items: FlowItem[] = chunk.map((i) => {
      const { dataset, prompt } = plan.prompts[i]!;
      const { signal: _signal, ...opts } = flowOptions({ ...o, sampling: null }, BASE, promptSeed(o.seed, dataset, prompt.id), fit);
      return { prompt: prompt.text, ...opts };
    });
    const outs = await runFlows(o.model, { direction: o.direction, controller: o.controller }, items, { keepPrefix: true, ...(o.signal ? { signal: o.signal } : {}) });
    for (const [j, i] of chunk.entries()) {
      const { dataset, prompt } = plan.prompts[i]!;
      const out = outs[j]!;
      if (o.signal?.aborted || (out.ok && out.result.finishReason === 'abort')) return { calibration: null, flows };
      // a prompt the model cannot take has no reply to calibrate on (null); its record will say why
      if (out.ok) {
        const ids = o.model.formatChat(out.result.fit.text, { allowSpecialTokens: o.allowSpecialTokens === true }).ids;
        const scores = await replyScores(o.model, ids, out.result.tokenIds, null, out.prefix ?? null);
        nlls[i] = scores.nll;
        if (inRun.has(flowKey(dataset, prompt.id))) {
          if (reusable) flows.set(flowKey(dataset, prompt.id), { flow: out.result, scores });
          if (out.prefix) carry.offer(flowKey(dataset, prompt.id), out.prefix);
        }
      }
      o.onCalibrationProgress?.(++done, plan.prompts.length);
    }
  }
  const calibration = calibrationFrom(plan, nlls);
  await o.onCalibration?.(calibration);
  return { calibration, flows };
}

/**
 * Runs the evaluation. Pending records are taken in (dataset, prompt, condition) order, a window of
 * LENGTH_SORT_WINDOW batches at a time (o.batch rows each, default DEFAULT_EVAL_BATCH); a window's rows are decoded
 * `batch` at a time shortest prompt first, each batch in one call (runFlows: one forward pass per step for all its
 * rows, each with its own matrix, seed and stop; a prompt's conditions share its prefill). A record's tokens do not
 * depend on the batch size or on its neighbours, so any batch writes the records batch 1 writes (the timings aside),
 * in the same order: each as soon as every record before it is done. An interrupted run redoes at most the window in
 * flight.
 */
export async function runEval(o: RunEvalOptions): Promise<RunEvalResult> {
  if (!Number.isInteger(o.maxNewTokens) || o.maxNewTokens < 1) throw new Error(`max new tokens must be an integer >= 1, got ${o.maxNewTokens}`);
  if (o.conditions.length === 0) throw new Error('choose at least one condition to evaluate');
  const fit = parseFitMode(o.fit);
  const batch = checkBatch(o.batch);
  const window = batch * LENGTH_SORT_WINDOW;
  const carry = new PrefixCarry(o.prefixCarryBytes ?? DEFAULT_PREFIX_CARRY_BYTES);
  const identity: ModelIdentity = o.model.identity;
  const total = o.datasets.reduce((s, d) => s + d.prompts.length, 0) * o.conditions.length;
  const res: RunEvalResult = { total, written: 0, skipped: 0, failed: 0, cancelled: false, calibration: null };
  const { calibration, flows } = await calibrate(o, fit, batch, carry);
  if (!calibration) return { ...res, cancelled: true };
  res.calibration = calibration;
  // base first within each prompt: steered records compare their reply with it
  const conditions = [...o.conditions.filter((c) => c.name === 'base'), ...o.conditions.filter((c) => c.name !== 'base')];
  const baseStore = o.baseRecords ?? o.store;
  const chat = { allowSpecialTokens: o.allowSpecialTokens === true };
  let done = 0;
  let streak = 0;
  // per prompt: [records attempted, of which failed]
  let attempted = 0;
  let failedHere = 0;
  let lastError: unknown = null;
  const pending: Job[] = [];
  // A base record the calibration decoded is written as it is: it takes no row of a decode batch.
  const calibrated = (j: Job) => (j.cond.name === 'base' ? flows.get(flowKey(j.head.dataset, j.head.id)) : undefined);
  let pendingRows = 0;

  /**
   * Decodes, judges and stores the pending jobs (one window, LENGTH_SORT_WINDOW batches of rows); false when the run
   * was cancelled. The rows are decoded `batch` at a time shortest prompt first, and each record is written, in job
   * order, as soon as every job before it is done.
   */
  const flush = async (): Promise<boolean> => {
    const jobs = pending.splice(0);
    pendingRows = 0;
    if (jobs.length === 0) return true;
    if (o.signal?.aborted) return false;
    // base replies made for the calibration are written as they are, not decoded again
    const hits = jobs.map(calibrated);
    const outcomes: ({ out: FlowOutcome; ms: number } | undefined)[] = hits.map((c) => (c ? { out: { ok: true, result: c.flow }, ms: 0 } : undefined));
    const toRun = jobs.flatMap((_j, k) => (hits[k] ? [] : [k]));
    let next = 0;
    const writeDone = async (): Promise<boolean> => {
      for (; next < jobs.length && outcomes[next]; next++) if (!(await writeRecord(jobs[next]!, outcomes[next]!.out, outcomes[next]!.ms, hits[next]?.scores))) return false;
      return true;
    };
    if (!(await writeDone())) return false;
    for (const group of lengthBatches(toRun.map((k) => jobs[k]!.prompt.text.length), batch)) {
      if (o.signal?.aborted) return false;
      const t0 = performance.now();
      const ks = group.map((i) => toRun[i]!);
      const items = ks.map((k) => ({ ...flowItem(o, fit, jobs[k]!), prefix: carry.get(flowKey(jobs[k]!.head.dataset, jobs[k]!.head.id)) ?? null }));
      const ran = await runFlows(o.model, { direction: o.direction, controller: o.controller }, items, {
        steerPromptPositions: o.steerPromptPositions ?? 'last',
        keepPrefix: true,
        ...(o.signal ? { signal: o.signal } : {}),
      });
      const ms = performance.now() - t0;
      ks.forEach((k, i) => (outcomes[k] = { out: ran[i]!, ms }));
      if (!(await writeDone())) return false;
    }
    return true;
  };

  /** Judges and stores one record (in job order); false when the run was cancelled. */
  const writeRecord = async (job: Job, out: FlowOutcome, ms: number, scores: ReplyScores | undefined): Promise<boolean> => {
    let record: RunRecord;
    if (out.ok) {
      if (out.result.finishReason === 'abort') return false;
      record = await judgedRecord(o, job, out.result, { calibration, baseStore, chat, scores, prefix: out.prefix });
    } else {
      if (o.signal?.aborted) return false;
      lastError = out.error;
      failedHere++;
      record = errorRecord(job, out.error, ms);
      res.failed++;
    }
    attempted++;
    if (job.last) carry.drop(flowKey(job.head.dataset, job.head.id));
    await o.store.append(record as unknown as EvalRecord);
    res.written++;
    done++;
    o.onProgress?.({ done, total, skipped: res.skipped, record });
    if (job.last) {
      streak = failedHere === attempted ? streak + 1 : 0;
      attempted = failedHere = 0;
      if (streak >= MAX_CONSECUTIVE_FAILURES) {
        const why = lastError instanceof Error ? lastError.message : String(lastError);
        throw new Error(`${MAX_CONSECUTIVE_FAILURES} prompts in a row failed under every condition; stopping (the run can be resumed). Last error: ${why}`, { cause: lastError });
      }
    }
    return true;
  };

  for (const ds of o.datasets) {
    for (const p of ds.prompts) {
      const seed = promptSeed(o.seed, ds.name, p.id);
      const todo: EvalCondition[] = [];
      for (const cond of conditions) {
        if (o.store.has({ dataset: ds.name, id: p.id, condition: cond.name })) {
          done++;
          res.skipped++;
          o.onProgress?.({ done, total, skipped: res.skipped, record: null });
        } else todo.push(cond);
      }
      if (todo.length === 0) {
        carry.drop(flowKey(ds.name, p.id));
        continue;
      }
      const shared = {
        dataset: ds.name,
        id: p.id,
        label: p.label ?? null,
        prompt: p.text,
        prompt_hash: await promptHash(p.text),
        special_tokens: o.allowSpecialTokens === true ? ('allowed' as const) : ('text' as const),
        prompt_special_tokens: findSpecialTokenStrings(o.model.tokenizer, p.text),
        model_id: identity.id,
        model_name: identity.name,
        model_variant: { ...identity.variant },
        direction_id: o.directionId,
        controller_id: o.controllerId,
        judge: o.judge.id,
        seed,
        sampling: o.sampling ? { temperature: o.sampling.temperature, top_p: o.sampling.topP } : null,
      };
      for (const cond of todo) {
        const job: Job = { prompt: p, seed, cond, head: { ...shared, condition: cond.name, alpha: alphaOf(cond), steering: cond.policy.kind !== 'off' ? steeringOf(o) : null }, last: cond === todo.at(-1) };
        pending.push(job);
        if (!calibrated(job)) pendingRows++;
        // a window is `window` rows to decode; records with nothing to decode still go out at least that often
        if ((pendingRows >= window || pending.length >= window * conditions.length) && !(await flush())) return { ...res, cancelled: true };
      }
    }
  }
  if (!(await flush())) return { ...res, cancelled: true };
  return res;
}

/** The coherence fields of one finished generation (coherence-run.ts scoreRecord). */
async function coherenceOf(o: RunEvalOptions, cc: CoherenceContext, key: RecordKey, label: Label | null, flow: FlowResult, refused: boolean, steered: boolean): Promise<RecordCoherence> {
  const { calibration, baseStore, chat, scores, prefix } = cc;
  const base = steered ? baseStore.get({ ...key, condition: 'base' }) : undefined;
  const baseText = base && typeof base['output'] === 'string' && base['error'] === undefined ? base['output'] : null;
  return scoreRecord(o.model, calibration, {
    promptIds: o.model.formatChat(flow.fit.text, chat).ids,
    reply: { text: flow.text, tokenIds: flow.tokenIds, finishReason: flow.finishReason },
    refused,
    patch: steered ? { steering: flow.matrix, projection: flow.projection, positions: o.settings?.positions ?? o.steerPromptPositions ?? 'last' } : null,
    measureKl: steered && label === 'benign',
    baseText,
    ...(scores ? { scores } : {}),
    ...(prefix ? { prefix } : {}),
  });
}

// ------------------------------------------------------------------------------------------------ run settings

export interface RunSettingsInput {
  model: ModelIdentity;
  datasets: readonly EvalDataset[];
  conditions: readonly ConditionName[];
  seed: number;
  maxNewTokens: number;
  sampling: { temperature: number; topP: number } | null;
  steerPromptPositions: 'last' | 'all';
  fit: FitMode;
  judge: string;
  directionId: string | null;
  controllerId: string | null;
  /** castId() of the CAST settings, when the cast condition runs. */
  castId: string | null;
  /** An alpha given for the run (overriding the controller's), else null. */
  alpha: number | null;
  manual: ManualSettings | null;
  /** Special-token handling of the run (default 'text'). */
  specialTokens?: 'text' | 'allowed';
  /** What the model computes on a fixed probe (resume-check.ts modelFingerprint): written when given. */
  fingerprint?: ModelFingerprint;
  /** Steering settings of the steered conditions, when the run gives them (mode, layer range, positions, alpha scale). */
  steering?: SteeringSettings | null;
  /** The reply_nll calibration's prompt set and quantile (default DEFAULT_CALIBRATION_SET, DEFAULT_NLL_QUANTILE). */
  coherence?: { calibrationSet: string; quantile: number };
}

/**
 * Fields of run.json that a resume does not compare: a display name, and the calibration the run made (written after
 * its first phase; a resumed run reuses it rather than comparing it).
 */
export const RUN_DISPLAY_FIELDS: readonly string[] = ['model_name', 'coherence_calibration'];

/**
 * run.json: the settings a resumed run must share with the run that started the folder. Content ids only (model,
 * direction, controller, CAST settings, the prompt ids of each dataset), never paths, so a lab export and a CLI run
 * with the same settings write the same run.json.
 */
export async function runSettings(i: RunSettingsInput): Promise<Record<string, unknown>> {
  const datasets = [];
  for (const d of i.datasets) {
    // content: the prompts' ids, labels and texts, so a resume refuses an edited file even where no record is made yet.
    const lines: string[] = [];
    for (const p of d.prompts) lines.push(`${p.id}\u0000${p.label ?? ''}\u0000${await promptHash(p.text)}\n`);
    datasets.push({
      name: d.name,
      n: d.prompts.length,
      ids: (await sha256Text(d.prompts.map((p) => p.id).join('\u0000'))).slice(0, 16),
      content: (await sha256Text(lines.join(''))).slice(0, 16),
    });
  }
  return {
    format: 'steerlab-eval-run',
    version: 1,
    model_id: i.model.id,
    model_name: i.model.name,
    model_variant: { ...i.model.variant },
    datasets,
    conditions: [...i.conditions],
    seed: i.seed,
    max_new_tokens: i.maxNewTokens,
    sampling: i.sampling ? { temperature: i.sampling.temperature, top_p: i.sampling.topP } : null,
    steer_prompt_positions: i.steerPromptPositions,
    fit: i.fit,
    judge: i.judge,
    direction_id: i.directionId,
    controller_id: i.controllerId,
    cast_id: i.castId,
    alpha: i.alpha,
    manual: i.manual ? { scale: i.manual.scale, layer_weights: [...i.manual.layerWeights], enabled_layers: i.manual.enabledLayers ? [...i.manual.enabledLayers] : null } : null,
    special_tokens: i.specialTokens ?? 'text',
    ...(i.fingerprint ? { model_fingerprint: i.fingerprint } : {}),
    ...(i.steering ? { steering: settingsRecord(i.steering) } : {}),
    coherence: { calibration_set: i.coherence?.calibrationSet ?? DEFAULT_CALIBRATION_SET, quantile: i.coherence?.quantile ?? DEFAULT_NLL_QUANTILE, rule: COHERENT_REFUSAL_RULE },
  };
}

/** Names of the settings that differ between a stored run.json and this run's (display-only fields ignored). */
export function settingsDiff(stored: Record<string, unknown>, current: Record<string, unknown>): string[] {
  return Object.keys({ ...stored, ...current }).filter((k) => !RUN_DISPLAY_FIELDS.includes(k) && JSON.stringify(stored[k]) !== JSON.stringify(current[k]));
}
