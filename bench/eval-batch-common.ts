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

export const EVAL_BATCH_CONDITIONS = ['base', 'manual'] as const;

/** Runs the eval of `messages` with batch B; wall seconds, records made, tokens generated and a digest of the replies. */
export async function evalInBatches(sm: SteerableModel, messages: string[], B: number, maxNewTokens: number): Promise<{ seconds: number; records: number; tokens: number; replies: string }> {
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
  const r = await runEval({
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
  });
  const seconds = (performance.now() - t) / 1000;
  if (r.failed > 0 || r.written !== messages.length * conditions.length) throw new Error(`eval_batch: the run wrote ${r.written} records, ${r.failed} failed`);
  const recs = store.records() as unknown as RunRecord[];
  return { seconds, records: recs.length, tokens: recs.reduce((n, x) => n + (x.new_tokens ?? 0), 0), replies: recs.map((x) => `${x.condition}:${x.output}`).join('\u0000') };
}

/** The first n prompts of the harmless-test split (JSONL text). */
/** What both eval_batch children take (Node and Chromium): the same model, prompts, reply length, batch sizes, repeats. */
export interface EvalBatchArgs {
  dir: string;
  prompts: number;
  maxNewTokens: number;
  batches: number[];
  reps: number;
}

export function harmlessPrompts(jsonl: string, n: number): string[] {
  return jsonl.split('\n').filter(Boolean).slice(0, n).map((l) => (JSON.parse(l) as { instruction: string }).instruction);
}
