/**
 * Child: what the `projection` input costs, on raw onnxruntime-node sessions of one model (no transformers.js in
 * between, so the figures isolate the graph):
 *   steering_only    the patch without the projection input (PatchOptions.projection false: the earlier patch)
 *   projection_zero  the patch as shipped, steering and projection zero (what every unsteered or add-mode pass runs)
 *   projection_on    the patch as shipped, a unit projection row and a steering row at every layer (clamp mode)
 * Decode: one cached step (1 new token on a past of `pastTokens`), `steps` steps per repeat, mean seconds per step.
 * Prefill: one pass over `prefillTokens` tokens with an empty past. Repeats interleaved (rotated order), medians
 * reported, and the paired ratio (same repeat) of each variant over steering_only, for wall time and for the CPU time
 * of this process (all ORT threads: the same work measured without the wait for cores other jobs hold).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { patchDecoder } from '../src/core/onnx/patcher.js';
import { childArgs, writeGraphVariant } from './child.js';
import { rotated, summarize } from './stats.js';

interface Args {
  dir: string;
  onnxFile: string;
  pastTokens: number;
  steps: number;
  prefillTokens: number;
  reps: number;
}

const { args, done } = childArgs<Args>();
const shape = JSON.parse(readFileSync(join(args.dir, 'steerlab_build.json'), 'utf8')).shape as {
  numLayers: number; hiddenSize: number; numKvHeads: number; headDim: number; vocabSize: number;
};
const { numLayers: L, hiddenSize: H } = shape;
const original = join(args.dir, args.onnxFile);

const writeVariant = (name: string, bytes: Uint8Array) => writeGraphVariant(original, name, bytes);

type Variant = 'steering_only' | 'projection_zero' | 'projection_on';
const VARIANTS: Variant[] = ['steering_only', 'projection_zero', 'projection_on'];
const bytes = readFileSync(original);
const files = {
  steering_only: writeVariant('steering_only', patchDecoder(bytes, { projection: false }).bytes),
  projection: writeVariant('projection', patchDecoder(bytes).bytes),
};
const sessions = {
  steering_only: await ort.InferenceSession.create(files.steering_only, { executionProviders: ['cpu'] }),
  projection: await ort.InferenceSession.create(files.projection, { executionProviders: ['cpu'] }),
};
const sessionOf = (v: Variant) => (v === 'steering_only' ? sessions.steering_only : sessions.projection);
console.log(`sessions ready; rss ${(process.memoryUsage.rss() / 2 ** 30).toFixed(2)} GiB`);

const unit = new Float32Array(H);
for (let h = 0; h < H; h++) unit[h] = Math.sin(1.7 * h + 0.3);
const n = Math.hypot(...unit);
for (let h = 0; h < H; h++) unit[h]! /= n;
const zeros = new Float32Array(L * H);
const projOn = new Float32Array(L * H);
const steerOn = new Float32Array(L * H);
for (let l = 0; l < L; l++) {
  projOn.set(unit, l * H);
  for (let h = 0; h < H; h++) steerOn[l * H + h] = 3 * unit[h]!;
}

function feeds(v: Variant, S: number, past: number): Record<string, ort.Tensor> {
  const sess = sessionOf(v);
  const on = v === 'projection_on';
  const f: Record<string, ort.Tensor> = {};
  for (const name of sess.inputNames) {
    if (name === 'input_ids') f[name] = new ort.Tensor('int64', BigInt64Array.from({ length: S }, (_, i) => BigInt(300 + ((i * 7919) % (shape.vocabSize - 300)))), [1, S]);
    else if (name === 'attention_mask') f[name] = new ort.Tensor('int64', new BigInt64Array(past + S).fill(1n), [1, past + S]);
    else if (name === 'position_ids') f[name] = new ort.Tensor('int64', BigInt64Array.from({ length: S }, (_, i) => BigInt(past + i)), [1, S]);
    else if (name === 'steering') f[name] = new ort.Tensor('float32', on ? steerOn : zeros, [1, L, H]);
    else if (name === 'projection') f[name] = new ort.Tensor('float32', on ? projOn : zeros, [1, L, H]);
    else if (name.startsWith('past_key_values')) f[name] = new ort.Tensor('float32', new Float32Array(shape.numKvHeads * past * shape.headDim), [1, shape.numKvHeads, past, shape.headDim]);
    else throw new Error(`unexpected graph input ${name}`);
  }
  return f;
}

const empty = (): Record<Variant, number[]> => ({ steering_only: [], projection_zero: [], projection_on: [] });
const decode = empty();
const prefill = empty();
const decodeCpu = empty();
const prefillCpu = empty();
const cpuS = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

async function decodeOnce(v: Variant): Promise<[number, number]> {
  const f = feeds(v, 1, args.pastTokens);
  const c = cpuS();
  const t = performance.now();
  for (let i = 0; i < args.steps; i++) {
    const out = await sessionOf(v).run(f);
    for (const x of Object.values(out)) x.dispose();
  }
  return [(performance.now() - t) / 1000 / args.steps, (cpuS() - c) / args.steps];
}

async function prefillOnce(v: Variant): Promise<[number, number]> {
  const f = feeds(v, args.prefillTokens, 0);
  const c = cpuS();
  const t = performance.now();
  const out = await sessionOf(v).run(f);
  const dt = (performance.now() - t) / 1000;
  const dc = cpuS() - c;
  for (const x of Object.values(out)) x.dispose();
  return [dt, dc];
}

for (const v of VARIANTS) {
  await decodeOnce(v); // warm-up
  await prefillOnce(v);
}
const loadStart = (await import('node:os')).loadavg();
for (let r = 0; r < args.reps; r++) {
  for (const v of rotated(VARIANTS, r)) {
    const [w, c] = await decodeOnce(v);
    decode[v].push(w);
    decodeCpu[v].push(c);
  }
  for (const v of rotated(VARIANTS, r)) {
    const [w, c] = await prefillOnce(v);
    prefill[v].push(w);
    prefillCpu[v].push(c);
  }
  console.log(`rep ${r + 1}/${args.reps}: decode ms/step ${VARIANTS.map((v) => (decode[v].at(-1)! * 1000).toFixed(2)).join(' / ')}; prefill s ${VARIANTS.map((v) => prefill[v].at(-1)!.toFixed(3)).join(' / ')}`);
}
await sessions.steering_only.release();
await sessions.projection.release();

/** Median over repeats of the paired ratio variant / steering_only (same repeat, adjacent runs). */
const paired = (m: Record<Variant, number[]>, v: Variant) => summarize(m[v].map((x, i) => x / m.steering_only[i]!));
done({
  past_tokens: args.pastTokens,
  decode_steps_per_repeat: args.steps,
  prefill_tokens: args.prefillTokens,
  repeats: args.reps,
  load_average: { start: loadStart, end: (await import('node:os')).loadavg() },
  decode_s_per_step: Object.fromEntries(VARIANTS.map((v) => [v, summarize(decode[v])])),
  prefill_s: Object.fromEntries(VARIANTS.map((v) => [v, summarize(prefill[v])])),
  decode_time_ratio_vs_steering_only: { projection_zero: paired(decode, 'projection_zero'), projection_on: paired(decode, 'projection_on') },
  prefill_time_ratio_vs_steering_only: { projection_zero: paired(prefill, 'projection_zero'), projection_on: paired(prefill, 'projection_on') },
  decode_cpu_ratio_vs_steering_only: { projection_zero: paired(decodeCpu, 'projection_zero'), projection_on: paired(decodeCpu, 'projection_on') },
  prefill_cpu_ratio_vs_steering_only: { projection_zero: paired(prefillCpu, 'projection_zero'), projection_on: paired(prefillCpu, 'projection_on') },
});
