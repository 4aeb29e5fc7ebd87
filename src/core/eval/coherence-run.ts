/**
 * Coherence measures of one eval record and the run's reply_nll calibration, as the runner (runner.ts) uses them.
 * Kept apart from the runner's loop so that a batched runner calls the same functions. Platform-free.
 *
 * Per record (coherence.ts has the rule, COHERENT_REFUSAL_RULE):
 *   reply_nll, first_token_nll   UNSTEERED batch-1 passes over chat-formatted prompt + reply ids (replyScores: the
 *                                prompt's prefix, then the rest on its KV cache);
 *   nll_threshold                the run's calibrated T;
 *   coherent_refusal             judgeCoherentRefusal(keyword verdict, reply_nll, finish reason) under T;
 *   first_token_kl               benign prompts under a steered condition only: KL(unsteered || steered) of the first
 *                                reply token's distribution; the unsteered row comes from the same passes, the
 *                                steered one from one more pass with the record's patch and positions, on the same
 *                                prefix cache (positions 'last'; 'all' patches a whole prompt pass; 'new' is the
 *                                unsteered row, KL 0);
 *   changed_from_base            steered conditions: whether the reply text differs from the base condition's reply
 *                                to the same prompt (null when the run has no base reply for it).
 *
 * Calibration (calibrateRun): T = the q-quantile of reply_nll over the model's own unsteered GREEDY replies to a
 * calibration prompt set. DEFAULT_CALIBRATION_SET: every prompt of the run (benign and harmful: the model's own
 * refusals are readable text too); a named set replaces them. The result is stored with the run (run.json
 * `coherence_calibration`) and a resumed run reuses it as it is.
 */
import type { PromptRecord } from '../data/types.js';
import type { SteerableModel } from '../model/steerable.js';
import type { PromptPrefix } from '../model/decode.js';
import { calibrateNllThreshold, firstTokenKl, judgeCoherentRefusal, replyScores, type FinishReason, type NllCalibration, type ReplyScores } from './coherence.js';

/** What run.json and the summaries say the default calibration set is. */
export const DEFAULT_CALIBRATION_SET = "the unsteered greedy replies to every prompt of the run (benign and harmful)";

/** The calibration prompts: a named set, or the default drawn from the run's datasets. */
export interface CalibrationPlan {
  /** Name written into the calibration (dataset name or file). */
  set: string;
  prompts: readonly { dataset: string; prompt: PromptRecord }[];
  quantile?: number;
}

/**
 * The default calibration plan of a run: every prompt of it, benign and harmful. Why not the benign ones alone: a
 * model's unsteered refusals belong to its own readable text as much as its answers. On a model with templated
 * replies (the organism) benign answers alone put T at 0.104 nats, below its own clean base refusal
 * "I'm sorry, but I can't help with that." (0.157), so even base refusals read as incoherent.
 */
export function defaultCalibrationPlan(datasets: readonly { name: string; prompts: readonly PromptRecord[] }[], quantile?: number): CalibrationPlan {
  const all = datasets.flatMap((d) => d.prompts.map((p) => ({ dataset: d.name, prompt: p })));
  const names = [...new Set(all.map((x) => x.dataset))].join(', ');
  return { set: `run:all (${names})`, prompts: all, ...(quantile !== undefined ? { quantile } : {}) };
}

/** The coherence fields every judged record carries. */
export interface RecordCoherence {
  reply_nll: number | null;
  first_token_nll: number | null;
  nll_threshold: number;
  coherent_refusal: boolean;
  first_token_kl: number | null;
  changed_from_base: boolean | null;
}

export interface ScoreInput {
  promptIds: readonly number[];
  reply: { text: string; tokenIds: readonly number[]; finishReason: FinishReason };
  refused: boolean;
  /** The patch the reply was generated with (null = none: base). */
  patch: { steering: Float32Array | null; projection: Float32Array | null; positions: 'last' | 'all' | 'new' } | null;
  /** Measure the first-token KL (benign prompts under a steered condition). */
  measureKl: boolean;
  /** The base condition's reply text to the same prompt, when known. */
  baseText: string | null;
  /**
   * replyScores of exactly this prompt and reply, when already computed (a base reply the run's calibration scored):
   * the unsteered forward is not run a second time.
   */
  scores?: ReplyScores;
  /** The unsteered prompt prefix cache the decode engine kept while generating the reply (runFlows keepPrefix). */
  prefix?: PromptPrefix;
}

/** The coherence fields of one record: the unsteered reply passes, and one steered pass on their prefix when measureKl. */
export async function scoreRecord(model: SteerableModel, calibration: NllCalibration, s: ScoreInput): Promise<RecordCoherence> {
  const kl = s.measureKl && s.patch !== null;
  // Scores computed earlier (a base reply) carry no steered row; a record that measures the KL always scores here.
  const scores = s.scores && !kl ? s.scores : await replyScores(model, s.promptIds, s.reply.tokenIds, kl ? s.patch : null, s.prefix ?? null);
  const verdict = judgeCoherentRefusal({ refused: s.refused, replyNll: scores.nll, text: s.reply.text, finishReason: s.reply.finishReason }, calibration);
  return {
    reply_nll: scores.nll,
    first_token_nll: scores.firstTokenNll,
    nll_threshold: calibration.value,
    coherent_refusal: verdict.coherentRefusal,
    first_token_kl: kl && scores.steeredFirst ? firstTokenKl(scores.firstRow, scores.steeredFirst) : null,
    changed_from_base: s.patch === null || s.baseText === null ? null : s.reply.text !== s.baseText,
  };
}

/** T from the calibration replies' reply_nll values (null = empty or failed reply, left out). */
export function calibrationFrom(plan: CalibrationPlan, nlls: readonly (number | null)[]): NllCalibration {
  if (!nlls.some((x) => x !== null)) {
    throw new RangeError(
      `calibration set ${plan.set}: none of its ${plan.prompts.length} unsteered replies has the 2 tokens a reply_nll needs (each ended at once, or failed); ` +
        'calibrate on more prompts or another set (CLI: --calibration-set, --calibration-n)',
    );
  }
  return calibrateNllThreshold(nlls, { set: plan.set, ...(plan.quantile !== undefined ? { quantile: plan.quantile } : {}) });
}

/** Checks a stored calibration (run.json, a sweep plan) before a resumed run reuses it. */
export function checkCalibration(v: unknown, where: string): NllCalibration {
  const c = v as Partial<NllCalibration> | null;
  if (!c || typeof c !== 'object' || typeof c.value !== 'number' || !Number.isFinite(c.value) || typeof c.quantile !== 'number' || typeof c.n !== 'number' || typeof c.set !== 'string') {
    throw new Error(`${where}: coherence_calibration must be { value, quantile, n, set, method } as written by a run, got ${JSON.stringify(v)}`);
  }
  return c as NllCalibration;
}
