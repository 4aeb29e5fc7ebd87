/**
 * Child: prefill cost of residual capture, on raw onnxruntime-node sessions of one model (no transformers.js in
 * between, so the figures isolate the graph and the read-back of its outputs):
 *   unpatched        the original graph
 *   patched_full     the patched graph as shipped: steering input + residual_stream [1, L+1, S, H]
 *   patched_none     steering input, residual_stream emptied (capture off)      (capture-variants.ts)
 *   patched_last     steering input, residual_stream of the last position only  (capture-variants.ts)
 * One forward pass over S tokens with an empty past, zero steering; repeats interleaved, medians reported.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { patchDecoder } from '../src/core/onnx/patcher.js';
import { captureVariant } from './capture-variants.js';
import { childArgs, writeGraphVariant } from './child.js';
import { rotated, summarize } from './stats.js';

interface Args {
  dir: string;
  onnxFile: string;
  prefillTokens: number;
  reps: number;
  variants: string[];
}

const { args, done } = childArgs<Args>();
const shape = JSON.parse(readFileSync(join(args.dir, 'steerlab_build.json'), 'utf8')).shape as {
  numLayers: number; hiddenSize: number; numKvHeads: number; headDim: number; vocabSize: number;
};
const original = join(args.dir, args.onnxFile);

const writeVariant = (name: string, bytes: Uint8Array) => writeGraphVariant(original, name, bytes);

const files: Record<string, string> = { unpatched: original };
{
  const patched = patchDecoder(readFileSync(original)).bytes;
  if (args.variants.includes('patched_full')) files.patched_full = writeVariant('patched_full', patched);
  if (args.variants.includes('patched_none')) files.patched_none = writeVariant('capture_none', captureVariant(patched, 'none'));
  if (args.variants.includes('patched_last')) files.patched_last = writeVariant('capture_last', captureVariant(patched, 'last'));
}

const sessions: Record<string, ort.InferenceSession> = {};
for (const v of args.variants) sessions[v] = await ort.InferenceSession.create(files[v]!, { executionProviders: ['cpu'] });
console.log(`sessions: ${Object.keys(sessions).join(', ')}; rss ${(process.memoryUsage.rss() / 2 ** 30).toFixed(2)} GiB`);

const S = args.prefillTokens;
const ids = BigInt64Array.from({ length: S }, (_, i) => BigInt(300 + ((i * 7919) % (shape.vocabSize - 300))));
function feeds(sess: ort.InferenceSession): Record<string, ort.Tensor> {
  const f: Record<string, ort.Tensor> = {};
  for (const name of sess.inputNames) {
    if (name === 'input_ids') f[name] = new ort.Tensor('int64', ids, [1, S]);
    else if (name === 'attention_mask') f[name] = new ort.Tensor('int64', new BigInt64Array(S).fill(1n), [1, S]);
    else if (name === 'position_ids') f[name] = new ort.Tensor('int64', BigInt64Array.from({ length: S }, (_, i) => BigInt(i)), [1, S]);
    else if (name === 'steering' || name === 'projection') f[name] = new ort.Tensor('float32', new Float32Array(shape.numLayers * shape.hiddenSize), [1, shape.numLayers, shape.hiddenSize]);
    else if (name.startsWith('past_key_values')) f[name] = new ort.Tensor('float32', new Float32Array(0), [1, shape.numKvHeads, 0, shape.headDim]);
    else throw new Error(`unexpected graph input ${name}`);
  }
  return f;
}

const runs: Record<string, number[]> = Object.fromEntries(args.variants.map((v) => [v, []]));
const cpu: Record<string, number[]> = Object.fromEntries(args.variants.map((v) => [v, []]));
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
const outBytes: Record<string, number> = {};
async function once(v: string): Promise<number> {
  const sess = sessions[v]!;
  const f = feeds(sess);
  const c = cpuMs();
  const t = performance.now();
  const out = await sess.run(f);
  const dt = (performance.now() - t) / 1000;
  cpu[v]!.push(cpuMs() - c);
  outBytes[v] = (out['residual_stream']?.data as Float32Array | undefined)?.byteLength ?? 0;
  for (const t of Object.values(out)) t.dispose();
  return dt;
}
for (const v of args.variants) await once(v); // warm-up
for (const v of args.variants) cpu[v]!.length = 0;
for (let r = 0; r < args.reps; r++) {
  for (const v of rotated(args.variants, r)) runs[v]!.push(await once(v));
}
for (const s of Object.values(sessions)) await s.release();
/** Median over repeats of the paired ratio a/b - 1 (same repeat, adjacent runs): robust to slow drift. */
const paired = (m: Record<string, number[]>, a: string, b: string) => (m[a] && m[b] ? summarize(m[a]!.map((x, i) => x / m[b]![i]!)).median - 1 : NaN);
done({
  prefill_tokens: S,
  seconds: Object.fromEntries(args.variants.map((v) => [v, summarize(runs[v]!)])),
  residual_bytes: outBytes,
  cpu_ms: Object.fromEntries(args.variants.map((v) => [v, summarize(cpu[v]!)])),
  overhead_vs_unpatched: Object.fromEntries(args.variants.filter((v) => v !== 'unpatched').map((v) => [v, paired(runs, v, 'unpatched')])),
  capture_overhead_full_vs_none: paired(runs, 'patched_full', 'patched_none'),
  capture_overhead_last_vs_none: paired(runs, 'patched_last', 'patched_none'),
  cpu_overhead_vs_unpatched: Object.fromEntries(args.variants.filter((v) => v !== 'unpatched').map((v) => [v, paired(cpu, v, 'unpatched')])),
  cpu_capture_overhead_full_vs_none: paired(cpu, 'patched_full', 'patched_none'),
  cpu_capture_overhead_last_vs_none: paired(cpu, 'patched_last', 'patched_none'),
});
