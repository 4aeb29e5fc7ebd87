/**
 * The patch on the project's Llama test models (src/core/onnx/testmodel/build.ts), one per topology: zero steering
 * is the identity, injection is exact, and the exposed residual stream (steered or not) is the reference forward
 * pass's.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { fromFloat16Array, toFloat16Array } from '../../src/core/onnx/graph-builder.js';
import { patchDecoder } from '../../src/core/onnx/patcher.js';
import { buildTestModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS, TEST_TOPOLOGIES, type TestTopology } from '../../src/core/onnx/testmodel/config.js';
import { effectiveQ4Weights } from '../../src/core/onnx/testmodel/fused.js';
import { referenceForward } from '../../src/core/onnx/testmodel/reference.js';
import { generateWeights } from '../../src/core/onnx/testmodel/weights.js';

const shape = SHAPE_PRESETS.tiny;
const { numLayers: L, hiddenSize: H, vocabSize: V, numKvHeads: KV, headDim: HD } = shape;
const SEED = 3;
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function vector(n: number, seed: number, scale: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return ((s / 2 ** 32) * 2 - 1) * scale;
  });
}

async function run(session: ort.InferenceSession, ids: number[], half: boolean, steering?: Float32Array, projection?: Float32Array, logitsFrom = 0) {
  const S = ids.length;
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, S]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(S).fill(1n), [1, S]),
  };
  if (session.inputNames.includes('position_ids')) {
    feeds.position_ids = new ort.Tensor('int64', BigInt64Array.from(ids.map((_, i) => BigInt(i))), [1, S]);
  }
  if (session.inputNames.includes('use_cache_branch')) feeds.use_cache_branch = new ort.Tensor('bool', [false], [1]);
  for (let l = 0; l < L; l++) {
    for (const k of ['key', 'value']) {
      feeds[`past_key_values.${l}.${k}`] = half
        ? new ort.Tensor('float16', new Uint16Array(0), [1, KV, 0, HD])
        : new ort.Tensor('float32', new Float32Array(0), [1, KV, 0, HD]);
    }
  }
  if (session.inputNames.includes('steering')) feeds.steering = new ort.Tensor('float32', steering ?? new Float32Array(L * H), [1, L, H]);
  if (session.inputNames.includes('projection')) feeds.projection = new ort.Tensor('float32', projection ?? new Float32Array(L * H), [1, L, H]);
  if (session.inputNames.includes('logits_from')) feeds.logits_from = new ort.Tensor('int64', BigInt64Array.of(BigInt(logitsFrom)), [1]);
  const out = await session.run(feeds);
  const f32 = (t: ort.Tensor) => (t.type === 'float16' ? fromFloat16Array(t.data as Uint16Array) : (t.data as Float32Array));
  return {
    logits: f32(out.logits),
    presents: Object.keys(out).filter((k) => k.startsWith('present')).map((k) => f32(out[k])),
    residual: out.residual_stream ? (out.residual_stream.data as Float32Array) : undefined,
  };
}

function maxRelDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i])));
  return m;
}

describe.each(TEST_TOPOLOGIES.map((t) => [t]))('test model %s', (topology: TestTopology) => {
  it('logits_from: the head runs on positions from.. only; 0 is the full graph bit for bit, the cache never changes', async () => {
    const dir = mkdtempSync(join(tmpdir(), `steerlab-patch-from-${topology}-`));
    dirs.push(dir);
    const built = await buildTestModel(dir, { shape, topology, seed: SEED });
    const bytes = readFileSync(join(dir, built.onnxFile));
    const half = topology === 'fused-q4f16';
    const full = await ort.InferenceSession.create(patchDecoder(bytes).bytes);
    const { bytes: out, report } = patchDecoder(bytes, { logitsFrom: true });
    expect(report.logits_from_input).toBe('logits_from');
    expect(patchDecoder(bytes).report.logits_from_input).toBeNull();
    const limited = await ort.InferenceSession.create(out);
    expect(limited.inputNames).toContain('logits_from');
    const ids = [0, 5, 77, 200, 13, 9];
    const S = ids.length;
    const steering = vector(L * H, 5, 0.5);
    const want = await run(full, ids, half, steering);
    const all = await run(limited, ids, half, steering, undefined, 0);
    expect(all.logits).toEqual(want.logits);
    expect(all.residual).toEqual(want.residual);
    for (const from of [S - 1, 2, S]) {
      const got = await run(limited, ids, half, steering, undefined, from);
      expect(got.logits.length).toBe((S - from) * V);
      // the head on fewer rows: the same values up to the kernel's rounding for another row count
      if (from < S) expect(maxRelDiff(got.logits, want.logits.subarray(from * V))).toBeLessThanOrEqual(half ? 2 ** -9 : 1e-5);
      got.presents.forEach((p, i) => expect(p).toEqual(want.presents[i]));
      expect(got.residual).toEqual(want.residual);
    }
  });


  it('zero-steering identity, exact injection, reference residual stream', async () => {
    const dir = mkdtempSync(join(tmpdir(), `steerlab-patch-${topology}-`));
    dirs.push(dir);
    const built = await buildTestModel(dir, { shape, topology, seed: SEED });
    const bytes = readFileSync(join(dir, built.onnxFile));
    const { bytes: out, report } = patchDecoder(bytes, { expectedNumLayers: L, expectedHiddenSize: H });
    const half = topology === 'fused-q4f16';
    expect(report.topology).toBe(topology.startsWith('fused') ? 'fused' : topology);
    expect(report.stream_dtype).toBe(half ? 'float16' : 'float32');
    const base = await ort.InferenceSession.create(bytes);
    const patched = await ort.InferenceSession.create(out);
    const ids = [0, 5, 77, 200, 13, 9];
    const S = ids.length;
    const a = await run(base, ids, half);
    const b = await run(patched, ids, half);
    expect(maxRelDiff(b.logits, a.logits)).toBeLessThanOrEqual(half ? 0 : 1e-5);
    b.presents.forEach((p, i) => expect(maxRelDiff(p, a.presents[i])).toBeLessThanOrEqual(half ? 0 : 1e-5));

    const layer = 1;
    const v = vector(H, 17, 1);
    const steering = new Float32Array(L * H);
    steering.set(v, layer * H);
    const st = await run(patched, ids, half, steering);
    const rowBlock = (r: Float32Array, row: number) => r.subarray(row * S * H, (row + 1) * S * H);
    for (let row = 0; row <= layer; row++) expect(rowBlock(st.residual!, row)).toEqual(rowBlock(b.residual!, row));
    const r0 = rowBlock(b.residual!, layer + 1);
    const r1 = rowBlock(st.residual!, layer + 1);
    const vq = half ? fromFloat16Array(toFloat16Array(v)) : v;
    for (let i = 0; i < S * H; i++) {
      const tol = half ? (Math.max(Math.abs(r0[i]), Math.abs(r1[i])) + Math.abs(v[i % H])) * 2 ** -10 : 1e-5 * Math.max(1, Math.abs(r1[i]));
      expect(Math.abs(r1[i] - r0[i] - vq[i % H])).toBeLessThanOrEqual(tol);
    }
    expect(maxRelDiff(st.logits, b.logits)).toBeGreaterThan(1e-3);

    // The reference forward pass: the q4 graph's on its dequantised weights, up to the int8 rounding of its
    // activations (measured 4.8e-3 of the logit scale on this shape); the fp16 graph is checked against its own base.
    const q4 = topology === 'fused-q4';
    const refWeights = q4 ? effectiveQ4Weights(shape, generateWeights(shape, SEED)) : generateWeights(shape, SEED);
    const refTol = q4 ? 2.5e-2 : 1e-4;
    if (!half) {
      // the graph's residual stream is the reference's, unsteered and steered
      const ref = referenceForward(shape, refWeights, ids);
      const refSteered = referenceForward(shape, refWeights, ids, { steering });
      expect(maxRelDiff(b.residual!, ref.residuals)).toBeLessThan(refTol);
      expect(maxRelDiff(st.residual!, refSteered.residuals)).toBeLessThan(refTol);
      expect(maxRelDiff(st.logits, refSteered.logits)).toBeLessThan(refTol);
      expect(st.logits.length).toBe(S * V);
    }

    // projection: clamp the component along u at `layer` to t (t = 0: ablation), against the hand computation
    const raw = vector(H, 29, 1);
    const un = Math.hypot(...raw);
    const u = raw.map((x) => x / un);
    for (const t of [0, 3]) {
      const projection = new Float32Array(L * H);
      projection.set(u, layer * H);
      const clamp = new Float32Array(L * H);
      clamp.set(u.map((x) => t * x), layer * H);
      const pr = await run(patched, ids, half, clamp, projection);
      for (let row = 0; row <= layer; row++) expect(rowBlock(pr.residual!, row)).toEqual(rowBlock(b.residual!, row));
      const x = rowBlock(b.residual!, layer + 1);
      const y = rowBlock(pr.residual!, layer + 1);
      for (let p = 0; p < S; p++) {
        let c = 0;
        let comp = 0;
        for (let h = 0; h < H; h++) c += x[p * H + h] * u[h];
        for (let h = 0; h < H; h++) {
          const want = x[p * H + h] - c * u[h] + t * u[h];
          // fp16: the fused norm adds its two summands after the steered one was rounded (the summand can be larger
          // than the sum): a few half-ulps of the magnitudes involved
          const tol = half ? (Math.abs(x[p * H + h]) + Math.abs(c * u[h]) + Math.abs(t * u[h])) * 2 ** -9 : 1e-5 * Math.max(1, Math.abs(want));
          expect(Math.abs(y[p * H + h] - want)).toBeLessThanOrEqual(tol);
          comp += y[p * H + h] * u[h];
        }
        expect(Math.abs(comp - t)).toBeLessThan(half ? 2e-2 : 1e-5);
      }
      if (!half) {
        // downstream layers too: the whole stream and the logits are the reference's with the same projection
        const ref = referenceForward(shape, refWeights, ids, { steering: clamp, projection });
        expect(maxRelDiff(pr.residual!, ref.residuals)).toBeLessThan(refTol);
        expect(maxRelDiff(pr.logits, ref.logits)).toBeLessThan(refTol);
      }
    }
  });
});
