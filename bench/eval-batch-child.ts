/**
 * Child: evaluation throughput by batch size in Node (the `eval_batch` section): the eval runner (runEval, what
 * `lab eval` runs) over real chat prompts (the harmless-test split, or ToxicChat's test split: args.source; the model's
 * chat template), two conditions per prompt (eval-batch-common.ts), `maxNewTokens` per reply, greedy; only the batch
 * size changes. Prompts in file order, as a user's dataset comes (the runner sorts within its windows itself). No
 * lean session (`lab eval` does not open one). Batch sizes interleaved per repeat; every
 * batch size must write the replies of batch 1 (checked, reported as replies_equal).
 */
import { loadSteerableModel } from '../src/core/model/index.js';
import { childArgs } from './child.js';
import { EVAL_BATCH_CONDITIONS, evalInBatches, timeRows, type EvalBatchArgs, type EvalTimes } from './eval-batch-common.js';
import { evalBatchMessages } from './eval-batch-prompts.js';
import { rotated, summarize } from './stats.js';

const { args, done } = childArgs<EvalBatchArgs>();
const sm = await loadSteerableModel(args.dir, { dtype: 'fp32' });
const messages = await evalBatchMessages(args);
const promptTokens = messages.map((m) => sm.formatChat(m).ids.length);
const runAll = (B: number) => evalInBatches(sm, messages, B, args.maxNewTokens);

await evalInBatches(sm, messages.slice(0, 2), 2, 2); // warm-up
const per: Record<number, { ppm: number[]; tps: number[]; replies: string[]; times: EvalTimes[] }> = {};
for (const B of args.batches) per[B] = { ppm: [], tps: [], replies: [], times: [] };
for (let r = 0; r < args.reps; r++) {
  for (const B of rotated(args.batches, r)) {
    const { seconds, tokens, replies, times } = await runAll(B);
    per[B]!.ppm.push((messages.length / seconds) * 60);
    per[B]!.tps.push(tokens / seconds);
    per[B]!.replies.push(replies);
    per[B]!.times.push(times);
  }
}
// every batch size must write the replies of batch 1
const reference = per[args.batches[0]!]!.replies[0]!;
const base = per[args.batches[0]!]!.ppm;
const baseTimes = per[args.batches[0]!]!.times;
await sm.dispose();
done({
  runtime: 'node onnxruntime-node (cpu), eval runner',
  prompt_source: args.source ?? 'harmless-test',
  conditions: [...EVAL_BATCH_CONDITIONS],
  prompts: messages.length,
  prompt_tokens: summarize(promptTokens),
  max_new_tokens: args.maxNewTokens,
  repeats: args.reps,
  rows: args.batches.map((B) => ({
    batch: B,
    prompts_per_min: summarize(per[B]!.ppm),
    tokens_per_s: summarize(per[B]!.tps),
    speedup: summarize(per[B]!.ppm.map((x, i) => x / base[i]!)),
    replies_equal: per[B]!.replies.every((x) => x === reference),
    ...timeRows(per[B]!.times, baseTimes),
  })),
});
