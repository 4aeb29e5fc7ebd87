/**
 * What the eval_batch measurements run, in Node (eval-batch-child.ts) and in the browser page (browser/eval-batch.ts):
 * the eval runner itself (src/core/eval/runner.ts runEval, what `lab eval` and the lab's evaluate op run) over real
 * chat prompts with two conditions per prompt, base and manual (a fixed direction on the last third of the layers),
 * greedy, keyword judge, records in memory; only `batch` changes between runs.
 */
import { wasKeywordJudge } from '../src/core/eval/judges.js';
import { MemoryRecordStore } from '../src/core/eval/records.js';
import { runEval, type RunRecord } from '../src/core/eval/runner.js';
import { resolveCondition } from '../src/core/method/conditions.js';
import type { SteerableModel } from '../src/core/model/index.js';
import type { DirectionFile } from '../src/core/steering/direction-file.js';
import { summarize } from './stats.js';

export const EVAL_BATCH_CONDITIONS = ['base', 'manual'] as const;

/** Where an eval's wall time went: the batched decode, and the batch-1 coherence passes around it. */
export interface EvalTimes {
  /** In decode() calls: prefill and token steps of B records at a time (what --batch speeds up). */
  decode_s: number;
  /**
   * In the unsteered reply-scoring passes (reply_nll, first_token_nll) and the steered first-token passes
   * (first_token_kl): one record at a time by design, so a record's numbers never depend on the batch it ran in.
   */
  measure_s: number;
  /** The rest: prompt formatting, policy matrices, judging, record writing. */
  other_s: number;
}

/** The model's methods timed: the decode, and the coherence passes (reply scoring, and any other forward). */
const TIMED = ['decode', 'replyLogits', 'forward', 'nextTokenLogits'] as const;

/**
 * Times the model's decode and coherence-pass calls while `fn` runs (own properties shadowing the
 * prototype's methods, removed afterwards), so the bench can say where the time went without touching the runner.
 */
async function timed<T>(sm: SteerableModel, fn: () => Promise<T>): Promise<{ value: T; times: EvalTimes }> {
  const spent = { decode: 0, measure: 0 };
  const wrap = <K extends (typeof TIMED)[number]>(name: K, bucket: keyof typeof spent) => {
    const original = sm[name].bind(sm) as (...a: unknown[]) => Promise<unknown>;
    (sm as unknown as Record<string, unknown>)[name] = async (...a: unknown[]) => {
      const t = performance.now();
      try {
        return await original(...a);
      } finally {
        spent[bucket] += performance.now() - t;
      }
    };
  };
  for (const name of TIMED) wrap(name, name === 'decode' ? 'decode' : 'measure');
  const t = performance.now();
  try {
    const value = await fn();
    const total = performance.now() - t;
    return { value, times: { decode_s: spent.decode / 1000, measure_s: spent.measure / 1000, other_s: (total - spent.decode - spent.measure) / 1000 } };
  } finally {
    for (const name of TIMED) delete (sm as unknown as Record<string, unknown>)[name];
  }
}

/** Runs the eval of `messages` with batch B; wall seconds, records made, tokens generated and a digest of the replies. */
export async function evalInBatches(sm: SteerableModel, messages: string[], B: number, maxNewTokens: number): Promise<{ seconds: number; records: number; tokens: number; replies: string; times: EvalTimes }> {
  const L = sm.numLayers;
  const H = sm.hiddenSize;
  const d = new Float32Array(H).map((_, h) => Math.sin(h * 1.7 + 0.3));
  const norm = Math.hypot(...d);
  const direction = d.map((x) => x / norm);
  const layerWeights = Array.from({ length: L }, (_, l) => (l >= Math.ceil((2 * L) / 3) ? 1 : 0));
  const parts = { direction: { direction } as DirectionFile, manual: { scale: 4, layerWeights } };
  const conditions = EVAL_BATCH_CONDITIONS.map((c) => resolveCondition(c, parts));
  const store = new MemoryRecordStore();
  const t = performance.now();
  const { value: r, times } = await timed(sm, () => runEval({
    model: sm,
    datasets: [{ name: 'bench', prompts: messages.map((text, i) => ({ id: `p${i}`, text, label: 'benign' as const, meta: {} })) }],
    conditions,
    direction,
    controller: null,
    directionId: null,
    controllerId: null,
    store,
    judge: wasKeywordJudge,
    maxNewTokens,
    sampling: null,
    seed: 0,
    batch: B,
  }));
  const seconds = (performance.now() - t) / 1000;
  if (r.failed > 0 || r.written !== messages.length * conditions.length) throw new Error(`eval_batch: the run wrote ${r.written} records, ${r.failed} failed`);
  const recs = store.records() as unknown as RunRecord[];
  return { seconds, records: recs.length, tokens: recs.reduce((n, x) => n + (x.new_tokens ?? 0), 0), replies: recs.map((x) => `${x.condition}:${x.output}`).join('\u0000'), times };
}

/** The first n prompts of the harmless-test split (JSONL text). */
/** What both eval_batch children take (Node and Chromium): the same model, prompts, reply length, batch sizes, repeats. */
export interface EvalBatchArgs {
  dir: string;
  /** Whose prompts (default the harmless-test split: short instructions; ToxicChat: real user prompts, long tail). */
  source?: 'harmless-test' | 'toxicchat-test';
  prompts: number;
  maxNewTokens: number;
  batches: number[];
  reps: number;
}

export function harmlessPrompts(jsonl: string, n: number): string[] {
  return jsonl.split('\n').filter(Boolean).slice(0, n).map((l) => (JSON.parse(l) as { instruction: string }).instruction);
}

/**
 * The time split of one batch size's repeats (seconds, min/median/max), and the decode's own speed-up over batch 1
 * paired per repeat: what batching buys where it applies, beside the whole run's speed-up.
 */
export function timeRows(times: readonly EvalTimes[], batch1: readonly EvalTimes[]) {
  return {
    decode_s: summarize(times.map((t) => t.decode_s)),
    measure_s: summarize(times.map((t) => t.measure_s)),
    other_s: summarize(times.map((t) => t.other_s)),
    decode_speedup: summarize(times.map((t, i) => batch1[i]!.decode_s / t.decode_s)),
  };
}
