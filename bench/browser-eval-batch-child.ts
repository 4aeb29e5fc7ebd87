/**
 * Child: evaluation throughput by batch size in headless Chromium on onnxruntime-web WASM (the `eval_batch` section's
 * browser rows), the eval runner in a page (bench/browser/eval-batch.ts) on the SmolLM2-135M shape: the same
 * prompts, conditions and settings as bench/eval-batch-child.ts. Batch sizes interleaved per repeat.
 */
import { basename, dirname } from 'node:path';
import { launchChromium, startLabServer } from '../test/browser/harness.js';
import { childArgs } from './child.js';
import { EVAL_BATCH_CONDITIONS, timeRows, type EvalBatchArgs, type EvalTimes } from './eval-batch-common.js';
import { evalBatchMessages } from './eval-batch-prompts.js';
import { summarize } from './stats.js';

const { args, done } = childArgs<EvalBatchArgs>();
const MOUNT = '/bench-models/';
const messages = await evalBatchMessages(args);
const server = await startLabServer({ [MOUNT]: dirname(args.dir) });
const session = await launchChromium();
try {
  await session.page.goto(`${server.url}/bench/browser/eval-batch.html`);
  await session.page.waitForFunction(() => 'benchEvalBatch' in window, null, { timeout: 60_000 });
  const r = await session.page.evaluate(
    (req) => (window as unknown as { benchEvalBatch: (q: typeof req) => Promise<{ loadS: number; promptTokens: number[]; samples: { batch: number; rep: number; seconds: number; tokens: number; equal: boolean; times: EvalTimes }[] }> }).benchEvalBatch(req),
    { model: basename(args.dir), localModelPath: MOUNT, messages, batches: args.batches, maxNewTokens: args.maxNewTokens, reps: args.reps },
  );
  const ppm = (B: number) => r.samples.filter((s) => s.batch === B).map((s) => (messages.length / s.seconds) * 60);
  const base = ppm(args.batches[0]!);
  const times = (B: number) => r.samples.filter((s) => s.batch === B).map((s) => s.times);
  done({
    runtime: 'headless Chromium, onnxruntime-web WASM (page), eval runner',
    prompt_source: args.source ?? 'harmless-test',
    conditions: [...EVAL_BATCH_CONDITIONS],
    load_s: r.loadS,
    prompts: messages.length,
    prompt_tokens: summarize(r.promptTokens),
    max_new_tokens: args.maxNewTokens,
    repeats: args.reps,
    rows: args.batches.map((B) => ({
      batch: B,
      prompts_per_min: summarize(ppm(B)),
      tokens_per_s: summarize(r.samples.filter((s) => s.batch === B).map((s) => s.tokens / s.seconds)),
      speedup: summarize(ppm(B).map((x, i) => x / base[i]!)),
      replies_equal: r.samples.filter((s) => s.batch === B).every((s) => s.equal),
      ...timeRows(times(B), times(args.batches[0]!)),
    })),
  });
} catch (e) {
  done({ error: `${(e as Error).message.slice(0, 500)}; browser log tail: ${session.log.slice(-8).join(' | ')}` });
} finally {
  await session.close();
  await server.close();
}
