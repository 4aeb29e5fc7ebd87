/**
 * Child: evaluation throughput by batch size in Node (the `eval_batch` section), measured with the decode engine
 * directly (SteerableModel.decode; the eval runner's wiring to it comes later). Each prompt is a real chat prompt
 * (the harmless-test split, the model's chat template), decoded like an eval record: WAS-style steering computed from
 * the observed last prompt token (observe -> a fixed direction scaled by a number read from the residual), then
 * `maxNewTokens` steered tokens, greedy. Prompts are taken in file order in chunks of B (no length sorting). The lean
 * session (no residual_stream) runs every pass that reads no residual. Batch sizes interleaved per repeat.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadSteerableModel } from '../src/core/model/index.js';
import { childArgs } from './child.js';
import { decodeInChunks, harmlessPrompts } from './eval-batch-common.js';
import { rotated, summarize } from './stats.js';

interface Args {
  dir: string;
  prompts: number;
  maxNewTokens: number;
  batches: number[];
  reps: number;
  lean: boolean;
}

const { args, done } = childArgs<Args>();
const sm = await loadSteerableModel(args.dir, { dtype: 'fp32' });
const lean = args.lean ? await sm.useLeanSession() : false;
const messages = harmlessPrompts(readFileSync(join(import.meta.dirname, '..', 'public', 'data', 'refusal_direction', 'harmless_test.jsonl'), 'utf8'), args.prompts);
const prompts = messages.map((m) => sm.formatChat(m).ids);
const runAll = (B: number) => decodeInChunks(sm, prompts, B, args.maxNewTokens);

await runAll(Math.max(...args.batches)); // warm-up
const per: Record<number, { ppm: number[]; tps: number[] }> = {};
for (const B of args.batches) per[B] = { ppm: [], tps: [] };
for (let r = 0; r < args.reps; r++) {
  for (const B of rotated(args.batches, r)) {
    const { seconds, tokens } = await runAll(B);
    per[B]!.ppm.push((prompts.length / seconds) * 60);
    per[B]!.tps.push(tokens / seconds);
  }
}
const base = per[args.batches[0]!]!.ppm;
await sm.dispose();
done({
  runtime: 'node onnxruntime-node (cpu), decode engine',
  lean_session: lean,
  prompts: prompts.length,
  prompt_tokens: summarize(prompts.map((p) => p.length)),
  max_new_tokens: args.maxNewTokens,
  repeats: args.reps,
  rows: args.batches.map((B) => ({
    batch: B,
    prompts_per_min: summarize(per[B]!.ppm),
    tokens_per_s: summarize(per[B]!.tps),
    speedup: summarize(per[B]!.ppm.map((x, i) => x / base[i]!)),
  })),
});
