/**
 * The patch on a graph nobody here wrote: ONNX Runtime's transformer optimizer output (fp16, SkipLayerNormalization,
 * GroupQueryAttention), driven with onnxruntime-node directly.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { fromBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema } from 'onnx-buf';
import * as ort from 'onnxruntime-node';
import { beforeAll, describe, expect, it } from 'vitest';
import { fromFloat16Array } from '../../src/core/onnx/graph-builder.js';
import { patchDecoder } from '../../src/core/onnx/patcher.js';
import { runSelfCheck } from '../../src/core/model/self-check.js';

const FIXTURE = fileURLToPath(new URL('../fixtures/onnx/tiny-qwen35-skipln-gqa-fp16.onnx', import.meta.url));
const L = 2;
const H = 64;
const KV = 2;
const HD = 16;

let original: ort.InferenceSession;
let patched: ort.InferenceSession;
let embedding: Float32Array;

interface RunOut {
  logits: Float32Array;
  presents: Uint16Array[];
  residual?: Float32Array;
}

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function randomIds(n: number, seed: number): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => Math.floor(r() * 1000));
}

function randomVector(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => (r() * 2 - 1) * scale);
}

/** Runs a batch of equal-length sequences; `past` are fp16 [B, KV, P, HD] per layer/key-value (key0, value0, key1, ...). */
async function run(
  session: ort.InferenceSession,
  ids: number[][],
  opts: { past?: Uint16Array[]; pastLen?: number; steering?: Float32Array; steerBatch?: number; projection?: Float32Array } = {},
): Promise<RunOut> {
  const B = ids.length;
  const S = ids[0].length;
  const P = opts.pastLen ?? 0;
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int32', Int32Array.from(ids.flat()), [B, S]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(B * (P + S)).fill(1n), [B, P + S]),
  };
  for (let l = 0; l < L; l++) {
    for (const [j, kind] of ['key', 'value'].entries()) {
      const data = opts.past?.[2 * l + j] ?? new Uint16Array(0);
      feeds[`past_key_values.${l}.${kind}`] = new ort.Tensor('float16', data, [B, KV, P, HD]);
    }
  }
  if (session.inputNames.includes('steering')) {
    const sb = opts.steerBatch ?? 1;
    feeds.steering = new ort.Tensor('float32', opts.steering ?? new Float32Array(sb * L * H), [sb, L, H]);
  }
  if (session.inputNames.includes('projection')) {
    feeds.projection = new ort.Tensor('float32', opts.projection ?? new Float32Array(L * H), [1, L, H]);
  }
  const out = await session.run(feeds);
  const presents = [0, 1].flatMap((l) => ['key', 'value'].map((k) => out[`present.${l}.${k}`].data as Uint16Array));
  return {
    logits: fromFloat16Array(out.logits.data as Uint16Array),
    presents,
    residual: out.residual_stream ? (out.residual_stream.data as Float32Array) : undefined,
  };
}

/** residual_stream [B, L+1, S, H]: the H-vector of (b, row, s). */
function residualAt(res: Float32Array, S: number, b: number, row: number, s: number): Float32Array {
  const at = ((b * (L + 1) + row) * S + s) * H;
  return res.subarray(at, at + H);
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/**
 * The fixture's logits are about 1e-2 (tiny random weights), so absolute tolerances mean little (all-zero logits
 * would pass 2e-2). Comparisons are relative to the reference's scale, which must itself be non-trivial.
 * Equal: within 2^-8 of the scale (fp16 rounding is 2^-11 per value; batching and the KV cache may reorder sums).
 */
const REL_EQUAL = 2 ** -8;
/** Different: by at least a tenth of the scale. */
const REL_DIFFERENT = 0.1;

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string): void {
  const scale = maxAbs(expected);
  expect(scale, `${what}: reference scale`).toBeGreaterThan(1e-3);
  expect(maxAbs(actual), `${what}: actual scale`).toBeGreaterThan(scale / 2);
  expect(maxAbsDiff(actual, expected), `${what}: max |difference| vs scale ${scale}`).toBeLessThanOrEqual(REL_EQUAL * scale);
}

function expectDifferent(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  const scale = Math.max(maxAbs(a), maxAbs(b));
  expect(scale, `${what}: scale`).toBeGreaterThan(1e-3);
  expect(maxAbsDiff(a, b), `${what}: max |difference| vs scale ${scale}`).toBeGreaterThan(REL_DIFFERENT * scale);
}

/** Steering matrix [L, H] with vector v at row `layer`. */
function steeringAt(layer: number, v: Float32Array): Float32Array {
  const m = new Float32Array(L * H);
  m.set(v, layer * H);
  return m;
}

beforeAll(async () => {
  const bytes = readFileSync(FIXTURE);
  const { bytes: out, report } = patchDecoder(bytes, { expectedNumLayers: L, expectedHiddenSize: H });
  expect(report.topology).toBe('fused');
  original = await ort.InferenceSession.create(bytes);
  patched = await ort.InferenceSession.create(out);
  const model = fromBinary(ModelProtoSchema, bytes);
  const t = model.graph!.initializer.find((x) => x.name === 'embed_tokens.weight')!;
  // Uint8Array.from copies: the view may sit at an odd offset of a Node Buffer
  embedding = fromFloat16Array(new Uint16Array(Uint8Array.from(t.rawData).buffer));
});

describe('patched fixture (onnxruntime-node)', () => {
  it('reports the real exporter topology', () => {
    const { report } = patchDecoder(readFileSync(FIXTURE));
    expect(report).toMatchObject({ topology: 'fused', num_layers: 2, hidden_size: 64, stream_dtype: 'float16', opset: 21 });
    expect(report.injection_points.map((p) => p.kind)).toEqual(['skip-norm', 'skip-norm']);
    // layer outputs: output 3 of the second SkipLayerNormalization of each layer (README), the last one materialised
    // on the final norm, which exposes only output 0 in the original
    expect(report.injection_points[0].value).toBe('l0.r2');
    const m = fromBinary(ModelProtoSchema, patchDecoder(readFileSync(FIXTURE)).bytes);
    const finalNorm = m.graph!.node.find((n) => n.output[0] === 'final_ln')!;
    expect(finalNorm.output[3]).toBe(report.injection_points[1].value);
    const producer = (v: string) => m.graph!.node.find((n) => n.output[0] === v)!;
    const steeredInput = producer(finalNorm.input[0]);
    expect(steeredInput.opType).toBe('Add'); // ... plus steering row 1
    const projectedInput = producer(steeredInput.input[0]);
    expect(projectedInput.opType).toBe('Sub'); // ... minus (x . u_1) u_1
    expect(projectedInput.input[0]).toBe('l1.r1'); // the stream entering the final norm
    expect(patched.inputNames).toContain('steering');
    expect(patched.inputNames).toContain('projection');
    expect(patched.outputNames[patched.outputNames.length - 1]).toBe('residual_stream');
  });

  it('zero steering reproduces logits and presents exactly', async () => {
    const ids = [randomIds(7, 1), randomIds(7, 2)];
    const a = await run(original, ids);
    const b = await run(patched, ids);
    expect(b.logits).toEqual(a.logits);
    for (let i = 0; i < a.presents.length; i++) expect(b.presents[i]).toEqual(a.presents[i]);
    // row 0 of residual_stream is the embedding output (fp16 values widened to float32)
    const S = 7;
    for (let s = 0; s < S; s++) {
      const id = ids[1][s];
      expect(Array.from(residualAt(b.residual!, S, 1, 0, s))).toEqual(Array.from(embedding.subarray(id * H, (id + 1) * H)));
    }
  });

  it('injects exactly at every layer and position; earlier rows unchanged', async () => {
    const ids = [randomIds(6, 3)];
    const S = 6;
    const base = await run(patched, ids);
    for (let layer = 0; layer < L; layer++) {
      const v = randomVector(H, 10 + layer, 0.5);
      const steered = await run(patched, ids, { steering: steeringAt(layer, v) });
      for (let s = 0; s < S; s++) {
        for (let row = 0; row <= layer; row++) {
          expect(residualAt(steered.residual!, S, 0, row, s)).toEqual(residualAt(base.residual!, S, 0, row, s));
        }
        const r0 = residualAt(base.residual!, S, 0, layer + 1, s);
        const r1 = residualAt(steered.residual!, S, 0, layer + 1, s);
        for (let h = 0; h < H; h++) {
          // fp16 rounding of the sum: half an ulp of the larger magnitude (2^-11 relative) plus the cast of v itself
          const tol = (Math.max(Math.abs(r0[h]), Math.abs(r1[h])) + Math.abs(v[h])) * 2 ** -10;
          expect(Math.abs(r1[h] - r0[h] - v[h])).toBeLessThanOrEqual(tol);
        }
      }
    }
  });

  it('projection: ablation and clamping at every layer and position (float16 stream), earlier rows unchanged', async () => {
    const ids = [randomIds(6, 31)];
    const S = 6;
    const base = await run(patched, ids);
    for (let layer = 0; layer < L; layer++) {
      const raw = randomVector(H, 40 + layer, 1);
      const norm = Math.hypot(...raw);
      const u = raw.map((x) => x / norm);
      for (const t of [0, -2.5]) {
        const out = await run(patched, ids, { projection: steeringAt(layer, u), steering: steeringAt(layer, u.map((x) => t * x)) });
        let worstComponent = 0;
        for (let s = 0; s < S; s++) {
          for (let row = 0; row <= layer; row++) expect(residualAt(out.residual!, S, 0, row, s)).toEqual(residualAt(base.residual!, S, 0, row, s));
          const x = residualAt(base.residual!, S, 0, layer + 1, s);
          const y = residualAt(out.residual!, S, 0, layer + 1, s);
          const c = x.reduce((a, v, h) => a + v * u[h]!, 0);
          let component = 0;
          let bound = 0;
          for (let h = 0; h < H; h++) {
            // two fp16 roundings (the correction's cast and the sum), each half an ulp of the magnitudes involved
            const tol = (Math.abs(x[h]!) + Math.abs(c * u[h]!) + Math.abs(t * u[h]!)) * 2 ** -10;
            expect(Math.abs(y[h]! - (x[h]! - c * u[h]! + t * u[h]!))).toBeLessThanOrEqual(tol);
            component += y[h]! * u[h]!;
            bound += tol * Math.abs(u[h]!);
          }
          expect(Math.abs(component - t)).toBeLessThanOrEqual(bound);
          worstComponent = Math.max(worstComponent, Math.abs(component - t));
        }
        expect(worstComponent).toBeLessThan(2e-2);
      }
    }
  });

  it('passes the load-time self-check (steering, ablation, clamping) driven through onnxruntime-node', async () => {
    const ids = randomIds(6, 51);
    const r = await runSelfCheck(
      {
        numLayers: L,
        hiddenSize: H,
        streamDtype: 'float16',
        forward: async ([row], o) => {
          const out = await run(patched, [row!], { ...(o.steering ? { steering: o.steering } : {}), ...(o.projection ? { projection: o.projection } : {}) });
          return { logits: { data: out.logits, dims: [1, row!.length, 1000] }, residuals: { data: out.residual!, dims: [1, L + 1, row!.length, H] } };
        },
      },
      ids,
    );
    console.info(`[fixture] self-check: ${JSON.stringify(r)}`);
    expect(r.ok).toBe(true);
    expect(r.upstream_max_error).toBe(0);
    // this graph's residuals are ~0.06, under the tolerance's floor of 1e-2 (relative to max(scale, 1)): also hold
    // the errors to fp16 precision at this scale, and check that the ablation removed something
    expect(r.projection!.removed_component).toBeGreaterThan(5 * r.tolerance);
    for (const e of [r.injection_max_error, r.projection!.ablation_max_error, r.projection!.clamp_max_error, r.projection!.projection_max_error]) expect(e).toBeLessThan(1e-3);
  });

  it('the last residual row is what the final norm and the head read (logits = LN(row L) @ lm_head)', async () => {
    const model = fromBinary(ModelProtoSchema, readFileSync(FIXTURE));
    const init = (name: string) => {
      const t = model.graph!.initializer.find((x) => x.name === name)!;
      return fromFloat16Array(new Uint16Array(Uint8Array.from(t.rawData).buffer));
    };
    const [w, b, head] = [init('norm.w'), init('norm.b'), init('lm_head.w')];
    const finalNorm = model.graph!.node.filter((n) => n.opType === 'SkipLayerNormalization').at(-1)!;
    const eps = finalNorm.attribute.find((a) => a.name === 'epsilon')?.f ?? 1e-12;
    const ids = [randomIds(4, 21)];
    const S = 4;
    const V = 1000;
    const out = await run(patched, ids, { steering: randomVector(L * H, 22, 1) });
    for (let s = 0; s < S; s++) {
      const r = residualAt(out.residual!, S, 0, L, s);
      const mean = r.reduce((a, x) => a + x, 0) / H;
      const variance = r.reduce((a, x) => a + (x - mean) ** 2, 0) / H;
      const n = r.map((x, h) => ((x - mean) / Math.sqrt(variance + eps)) * w[h] + b[h]);
      const logits = new Float32Array(V);
      for (let v = 0; v < V; v++) for (let h = 0; h < H; h++) logits[v] += n[h] * head[h * V + v];
      // logits here are ~1e-2 (tiny random weights); fp16 rounding is ~1e-5 of that
      expectClose(out.logits.subarray(s * V, (s + 1) * V), logits, `logits at position ${s} vs LN(row L) @ lm_head`);
    }
  });

  it('a non-zero steering row changes the logits', async () => {
    const ids = [randomIds(5, 4)];
    const base = await run(patched, ids);
    const steered = await run(patched, ids, { steering: steeringAt(0, randomVector(H, 5, 4)) });
    expectDifferent(base.logits, steered.logits, 'steered vs unsteered logits');
  });

  it('steer_batch = batch applies one matrix per sequence', async () => {
    const ids = [randomIds(5, 6), randomIds(5, 7)];
    const mA = randomVector(L * H, 8, 1);
    const mB = randomVector(L * H, 9, 1);
    const both = new Float32Array(2 * L * H);
    both.set(mA, 0);
    both.set(mB, L * H);
    const batched = await run(patched, ids, { steering: both, steerBatch: 2 });
    const a = await run(patched, [ids[0]], { steering: mA });
    const b = await run(patched, [ids[1]], { steering: mB });
    const V = 1000;
    const half = 5 * V;
    expectClose(batched.logits.subarray(0, half), a.logits, 'batch row 0 vs its own run');
    expectClose(batched.logits.subarray(half), b.logits, 'batch row 1 vs its own run');
    // and the two sequences really got different steering
    const unsteered = await run(patched, ids, { steering: new Float32Array(2 * L * H), steerBatch: 2 });
    const shared = new Float32Array(2 * L * H);
    shared.set(mA, 0);
    shared.set(mA, L * H);
    const sameForBoth = await run(patched, ids, { steering: shared, steerBatch: 2 });
    expectDifferent(sameForBoth.logits.subarray(half), batched.logits.subarray(half), 'row 1 under matrix A vs matrix B');
    expectDifferent(unsteered.logits, batched.logits, 'unsteered vs steered batch');
  });

  it('steers decode steps with a KV cache like a full prefill', async () => {
    const full = randomIds(6, 11);
    const prompt = full.slice(0, 5);
    const m = randomVector(L * H, 12, 1);
    const prefill = await run(patched, [prompt], { steering: m });
    const step = await run(patched, [[full[5]]], { steering: m, past: prefill.presents, pastLen: 5 });
    const whole = await run(patched, [full], { steering: m });
    const V = 1000;
    expectClose(step.logits, whole.logits.subarray(5 * V), 'decode step vs full prefill logits');
    for (let row = 0; row <= L; row++) {
      expectClose(residualAt(step.residual!, 1, 0, row, 0), residualAt(whole.residual!, 6, 0, row, 5), `decode step vs full prefill residual ${row}`);
    }
    // injection at the decode position itself
    const zeroStep = await run(patched, [[full[5]]], { past: prefill.presents, pastLen: 5 });
    const v = randomVector(H, 13, 0.5);
    const vStep = await run(patched, [[full[5]]], { steering: steeringAt(1, v), past: prefill.presents, pastLen: 5 });
    const r0 = residualAt(zeroStep.residual!, 1, 0, 2, 0);
    const r1 = residualAt(vStep.residual!, 1, 0, 2, 0);
    for (let h = 0; h < H; h++) {
      const tol = (Math.max(Math.abs(r0[h]), Math.abs(r1[h])) + Math.abs(v[h])) * 2 ** -10;
      expect(Math.abs(r1[h] - r0[h] - v[h])).toBeLessThanOrEqual(tol);
    }
  });
});
