/**
 * `npx tsx bench/profile-step.ts [preset-topology] [past] [reps]`: where the patched graph's decode time goes.
 * One cached decode step (1 new token on a past of `past` tokens) on raw onnxruntime-node sessions of
 *   unpatched | patched_full (as shipped) | patched_none (residual_stream emptied, steering kept) |
 *   patched_steering_only (the patch without the projection input)
 * interleaved, wall and CPU time per step (medians), then one ORT profile per variant aggregated by op type, so
 * the extra nodes of the patch (Split, Add, Unsqueeze, Concat; MatMul, Mul, Sub for the projection) and any lost
 * fusion show up by name; the kernel time of the patch's own nodes (named steerlab/...) is summed apart.
 * Not part of `npm run bench` (a diagnostic); models from bench/models.ts.
 */
import { existsSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { patchDecoder } from '../src/core/onnx/patcher.js';
import { captureVariant } from './capture-variants.js';
import { modelDir } from './models.js';
import { rotated, summarize } from './stats.js';

const [name = 'smollm2-135m-fused', pastArg = '64', repsArg = '30'] = process.argv.slice(2);
const dir = join(modelDir(name.replace(/-(plain|fused)$/, ''), name.endsWith('fused') ? 'fused' : 'plain'));
const past = Number(pastArg);
const reps = Number(repsArg);
const shape = JSON.parse(readFileSync(join(dir, 'steerlab_build.json'), 'utf8')).shape as { numLayers: number; hiddenSize: number; numKvHeads: number; headDim: number };
const original = join(dir, 'onnx/model.onnx');
const files: Record<string, string> = { unpatched: original };
const patched = patchDecoder(readFileSync(original)).bytes;
for (const [v, bytes] of [['patched_full', patched], ['patched_none', captureVariant(patched, 'none')], ['patched_steering_only', patchDecoder(readFileSync(original), { projection: false }).bytes]] as const) {
  const f = join(dir, 'onnx', `bench_${v}_step.onnx`);
  if (!existsSync(f)) {
    writeFileSync(`${f}.tmp`, bytes);
    renameSync(`${f}.tmp`, f);
  }
  files[v] = f;
}

function feeds(sess: ort.InferenceSession): Record<string, ort.Tensor> {
  const f: Record<string, ort.Tensor> = {};
  const kv = new Float32Array(shape.numKvHeads * past * shape.headDim).map((_, i) => Math.sin(i) * 0.1);
  for (const n of sess.inputNames) {
    if (n === 'input_ids') f[n] = new ort.Tensor('int64', BigInt64Array.from([500n]), [1, 1]);
    else if (n === 'attention_mask') f[n] = new ort.Tensor('int64', new BigInt64Array(past + 1).fill(1n), [1, past + 1]);
    else if (n === 'position_ids') f[n] = new ort.Tensor('int64', BigInt64Array.from([BigInt(past)]), [1, 1]);
    else if (n === 'steering' || n === 'projection') f[n] = new ort.Tensor('float32', new Float32Array(shape.numLayers * shape.hiddenSize), [1, shape.numLayers, shape.hiddenSize]);
    else if (n.startsWith('past_key_values')) f[n] = new ort.Tensor('float32', kv, [1, shape.numKvHeads, past, shape.headDim]);
    else throw new Error(`unexpected input ${n}`);
  }
  return f;
}

const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
const variants = Object.keys(files);
const sessions: Record<string, ort.InferenceSession> = {};
for (const v of variants) sessions[v] = await ort.InferenceSession.create(files[v]!);
const wall: Record<string, number[]> = Object.fromEntries(variants.map((v) => [v, []]));
const cpu: Record<string, number[]> = Object.fromEntries(variants.map((v) => [v, []]));
for (let r = -3; r < reps; r++) {
  for (const v of rotated(variants, r + 3)) {
    const f = feeds(sessions[v]!);
    const c = cpuMs();
    const t = performance.now();
    await sessions[v]!.run(f);
    if (r >= 0) {
      wall[v]!.push(performance.now() - t);
      cpu[v]!.push(cpuMs() - c);
    }
  }
}
console.log(`${name}, decode step on a past of ${past}, ${reps} interleaved repeats (ms, median (min-max)):`);
for (const v of variants) {
  const w = summarize(wall[v]!);
  const c = summarize(cpu[v]!);
  const pw = summarize(wall[v]!.map((x, i) => x / wall.unpatched![i]!));
  console.log(`  ${v.padEnd(13)} wall ${w.median.toFixed(2)} (${w.min.toFixed(2)}-${w.max.toFixed(2)})  cpu ${c.median.toFixed(2)}  paired wall ratio vs unpatched ${pw.median.toFixed(3)}`);
}
for (const s of Object.values(sessions)) await s.release();

// ORT profile: per-op-type kernel time of 20 steps per variant.
for (const v of variants) {
  const sess = await ort.InferenceSession.create(files[v]!, { enableProfiling: true, profileFilePrefix: join(tmpdir(), `steerlab-profile-${process.pid}-${v}`) });
  for (let i = 0; i < 20; i++) await sess.run(feeds(sess));
  sess.endProfiling();
  await sess.release();
}
for (const v of variants) {
  const file = readdirSync(tmpdir()).find((f) => f.startsWith(`steerlab-profile-${process.pid}-${v}`));
  if (!file) continue;
  const events = JSON.parse(readFileSync(join(tmpdir(), file), 'utf8')) as { cat: string; name: string; dur: number; args?: { op_name?: string } }[];
  rmSync(join(tmpdir(), file));
  const byOp = new Map<string, { us: number; n: number }>();
  let total = 0;
  let own = 0;
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue;
    if (e.name.startsWith('steerlab/')) own += e.dur;
    const op = e.args?.op_name ?? '?';
    const a = byOp.get(op) ?? { us: 0, n: 0 };
    a.us += e.dur;
    a.n++;
    byOp.set(op, a);
    total += e.dur;
  }
  const top = [...byOp.entries()].sort((a, b) => b[1].us - a[1].us);
  console.log(`  profile ${v}: kernel time per step ${(total / 20 / 1000).toFixed(2)} ms, of which the patch's own nodes ${(own / 20 / 1000).toFixed(3)} ms; nodes per step ${top.reduce((s, [, a]) => s + a.n, 0) / 20}`);
  console.log(`    ${top.map(([op, a]) => `${op} ${(a.us / 20 / 1000).toFixed(2)} ms x${a.n / 20}`).join(', ')}`);
}
