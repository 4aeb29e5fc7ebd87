/**
 * Child: what residual capture costs, prefill and decode, on raw onnxruntime-node sessions of one model (the
 * `capture` section). Variants, each its own session:
 *   unpatched   the original graph
 *   none        the lean graph: steering input, no residual_stream (patchDecoder captureResiduals: false), what the
 *               decode engine runs for passes that read no residual
 *   last        residual_stream of the last position only (capture-variants.ts): what an observation needs
 *   all         the patched graph: residual_stream [B, L+1, S, H] of every position (as loaded, less its logits_from input)
 * Prefill: one pass over S tokens, empty cache. Decode: single-token passes on a cache of P tokens, each output
 * read back (residual_stream included where the variant has it). Repeats interleaved; ratios to unpatched paired per
 * repeat; CPU time of the process beside wall time.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { patchDecoder } from '../src/core/onnx/patcher.js';
import { captureVariant } from './capture-variants.js';
import { childArgs } from './child.js';
import { rotated, summarize } from './stats.js';

interface Args {
  dir: string;
  onnxFile: string;
  prefillTokens: number;
  decodeContext: number;
  decodeSteps: number;
  reps: number;
}

const { args, done } = childArgs<Args>();
const shape = JSON.parse(readFileSync(join(args.dir, 'steerlab_build.json'), 'utf8')).shape as { numLayers: number; hiddenSize: number; numKvHeads: number; headDim: number; vocabSize: number };
const original = join(args.dir, args.onnxFile);
const folder = dirname(original);
const VARIANTS = ['unpatched', 'none', 'last', 'all'] as const;
type V = (typeof VARIANTS)[number];

function writeVariant(name: string, bytes: Uint8Array): string {
  const file = join(folder, `bench_capture_${name}.onnx`);
  writeFileSync(`${file}.tmp`, bytes);
  renameSync(`${file}.tmp`, file);
  return file;
}
const files: Record<V, string> = { unpatched: original, none: '', last: '', all: '' };
{
  const bytes = readFileSync(original);
  const patched = patchDecoder(bytes).bytes;
  files.all = writeVariant('all', patched);
  files.last = writeVariant('last', captureVariant(patched, 'last'));
  files.none = writeVariant('none', patchDecoder(bytes, { captureResiduals: false }).bytes);
}
const sessions = {} as Record<V, ort.InferenceSession>;
for (const v of VARIANTS) sessions[v] = await ort.InferenceSession.create(files[v], { executionProviders: ['cpu'] });

const L = shape.numLayers;
const H = shape.hiddenSize;
const zeroSteering = new ort.Tensor('float32', new Float32Array(L * H), [1, L, H]);
const ids = (n: number, from = 0) => BigInt64Array.from({ length: n }, (_, i) => BigInt(300 + (((from + i) * 7919) % (shape.vocabSize - 300))));

/** One pass: `n` new tokens at positions past..past+n-1 on `kv` (null = empty). */
function feeds(sess: ort.InferenceSession, n: number, past: number, kv: Record<string, ort.Tensor> | null): Record<string, ort.Tensor> {
  const f: Record<string, ort.Tensor> = {};
  for (const name of sess.inputNames) {
    if (name === 'input_ids') f[name] = new ort.Tensor('int64', ids(n, past), [1, n]);
    else if (name === 'attention_mask') f[name] = new ort.Tensor('int64', new BigInt64Array(past + n).fill(1n), [1, past + n]);
    else if (name === 'position_ids') f[name] = new ort.Tensor('int64', BigInt64Array.from({ length: n }, (_, i) => BigInt(past + i)), [1, n]);
    else if (name === 'steering' || name === 'projection') f[name] = zeroSteering;
    else if (name.startsWith('past_key_values')) f[name] = kv?.[name] ?? new ort.Tensor('float32', new Float32Array(0), [1, shape.numKvHeads, 0, shape.headDim]);
    else throw new Error(`unexpected graph input ${name}`);
  }
  return f;
}
const asPast = (out: ort.InferenceSession.ReturnType) => Object.fromEntries(Object.entries(out).filter(([k]) => k.startsWith('present')).map(([k, t]) => [k.replace('present', 'past_key_values'), t as ort.Tensor]));
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

async function prefill(v: V) {
  const s = sessions[v];
  const f = feeds(s, args.prefillTokens, 0, null);
  const c = cpuMs();
  const t = performance.now();
  await s.run(f);
  return { wall: performance.now() - t, cpu: cpuMs() - c };
}

async function decode(v: V) {
  const s = sessions[v];
  let kv = asPast(await s.run(feeds(s, args.decodeContext, 0, null)));
  let wall = 0;
  let cpu = 0;
  for (let i = 0; i < args.decodeSteps; i++) {
    const f = feeds(s, 1, args.decodeContext + i, kv);
    const c = cpuMs();
    const t = performance.now();
    const out = await s.run(f);
    wall += performance.now() - t;
    cpu += cpuMs() - c;
    kv = asPast(out);
  }
  return { wall: wall / args.decodeSteps, cpu: cpu / args.decodeSteps };
}

const res = { prefill: {} as Record<V, { wall: number[]; cpu: number[] }>, decode: {} as Record<V, { wall: number[]; cpu: number[] }> };
for (const v of VARIANTS) {
  res.prefill[v] = { wall: [], cpu: [] };
  res.decode[v] = { wall: [], cpu: [] };
  await prefill(v); // warm-up
  await decode(v);
}
for (let r = 0; r < args.reps; r++) {
  for (const v of rotated(VARIANTS, r)) {
    const p = await prefill(v);
    res.prefill[v].wall.push(p.wall);
    res.prefill[v].cpu.push(p.cpu);
    const d = await decode(v);
    res.decode[v].wall.push(d.wall);
    res.decode[v].cpu.push(d.cpu);
  }
}
const ratios = (m: Record<V, { wall: number[]; cpu: number[] }>, k: 'wall' | 'cpu') =>
  Object.fromEntries(VARIANTS.filter((v) => v !== 'unpatched').map((v) => [v, summarize(m[v][k].map((x, i) => x / m.unpatched[k][i]!))]));
const ms = (m: Record<V, { wall: number[]; cpu: number[] }>, k: 'wall' | 'cpu') => Object.fromEntries(VARIANTS.map((v) => [v, summarize(m[v][k])]));
done({
  prefill_tokens: args.prefillTokens,
  decode_context: args.decodeContext,
  decode_steps: args.decodeSteps,
  repeats: args.reps,
  prefill: { ms: ms(res.prefill, 'wall'), cpu_ms: ms(res.prefill, 'cpu'), ratio: ratios(res.prefill, 'wall'), cpu_ratio: ratios(res.prefill, 'cpu') },
  decode: { ms_per_step: ms(res.decode, 'wall'), cpu_ms_per_step: ms(res.decode, 'cpu'), ratio: ratios(res.decode, 'wall'), cpu_ratio: ratios(res.decode, 'cpu') },
});
