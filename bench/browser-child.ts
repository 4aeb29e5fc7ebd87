/**
 * Child: decode speed of the patched model in headless Chromium on ORT-web WASM, through the app's own LLM worker
 * (workers/llm.worker.ts, driven by the debug page of test/browser/harness.ts), on the SmolLM2-135M shape.
 *   patched_zero / patched_was : greedy generation with zero steering and with a WAS-like steering matrix.
 * The worker reports only each generation's total time, so the decode rate of cached steps is taken from two
 * generations that differ only in length: (N - 1) / (time(N tokens) - time(1 token)); the prefill cancels out.
 * No unpatched baseline here: the worker only ever loads patched graphs (that is its purpose).
 */
import { basename, dirname } from 'node:path';
import { controllerInputLayers } from '../src/core/controller/index.js';
import type { SteerlabDebugApi } from '../src/ui/debug/main.js';
import { launchChromium, openDebugPage, startLabServer } from '../test/browser/harness.js';
import { childArgs } from './child.js';
import { rotated, summarize } from './stats.js';

declare global {
  interface Window { steerlabDebug: SteerlabDebugApi }
}

interface Args {
  dir: string;
  reps: number;
  newTokens: number;
  promptTokens: number;
}

const { args, done } = childArgs<Args>();
const MOUNT = '/bench-models/';
const server = await startLabServer({ [MOUNT]: dirname(args.dir) });
const session = await launchChromium();
try {
  await openDebugPage(session, server.url);
  const t0 = Date.now();
  const { info } = await session.page.evaluate(
    (req) => window.steerlabDebug.load(req),
    { model: basename(args.dir), localModelPath: MOUNT, allowRemoteModels: false, device: 'wasm' as const, dtype: 'fp32' as const, selfCheck: false },
  );
  const loadS = (Date.now() - t0) / 1000;
  console.log(`loaded ${info.model} on ${info.device} in ${loadS.toFixed(1)} s`);
  const L = info.numLayers;
  const H = info.hiddenSize;
  const was = new Array<number>(L * H).fill(0);
  for (const l of controllerInputLayers(L)) for (let h = 0; h < H; h++) was[l * H + h] = (2 * (0.5 + 0.4 * Math.cos(l)) * Math.sin(h * 1.7 + 0.3)) / Math.sqrt(H / 2);
  const ids = Array.from({ length: args.promptTokens }, (_, i) => 300 + ((i * 7919) % 40000));
  const gen = (steering: number[] | null, n: number) =>
    session.page.evaluate(([s, k, p]) => window.steerlabDebug.generate({ prompt: { kind: 'ids', ids: p }, maxNewTokens: k, steering: s }), [steering, n, ids] as const);

  type V = 'patched_zero' | 'patched_was';
  const rates: Record<V, number[]> = { patched_zero: [], patched_was: [] };
  const once = async (v: V) => {
    const s = v === 'patched_zero' ? null : was;
    const short = await gen(s, 1);
    const long = await gen(s, args.newTokens);
    if (long.result.tokenIds.length < 3) throw new Error(`only ${long.result.tokenIds.length} tokens generated`);
    rates[v].push((long.result.tokenIds.length - 1) / ((long.result.ms - short.result.ms) / 1000));
  };
  await once('patched_zero'); // warm-up
  rates.patched_zero.length = 0;
  for (let r = 0; r < args.reps; r++) for (const v of rotated(['patched_zero', 'patched_was'] as V[], r)) await once(v);
  await session.page.evaluate(() => window.steerlabDebug.dispose());
  const z = summarize(rates.patched_zero);
  const w = summarize(rates.patched_was);
  done({
    model: 'smollm2-135m', topology: 'plain', runtime: 'headless Chromium, onnxruntime-web WASM (LLM worker)',
    device: info.device, load_s: loadS, new_tokens: args.newTokens, repeats: args.reps,
    unpatched_tok_s: null, patched_zero_tok_s: z.median, patched_was_tok_s: w.median, ratio_zero: null, ratio_was: null,
    was_vs_zero: w.median / z.median,
    patched_zero: z, patched_was: w,
    note: `Patched model only (zero steering ${z.median.toFixed(2)} tok/s, WAS-like matrix ${w.median.toFixed(2)} tok/s, WAS/zero ${(w.median / z.median).toFixed(3)}; load ${loadS.toFixed(1)} s). No unpatched baseline in the browser: the LLM worker only loads patched graphs, and the patched-vs-unpatched ratio is measured in Node on the same graphs. Rates from two generations of different length (the worker reports total time per generation only).`,
  });
} catch (e) {
  done({ error: `${(e as Error).message.slice(0, 500)}; browser log tail: ${session.log.slice(-5).join(' | ')}` });
} finally {
  await session.close();
  await server.close();
}
