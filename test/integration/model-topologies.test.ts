/**
 * The steerable model on every graph form hub models ship (plain, fused, fused-q4f16, merged), against the
 * unpatched model in plain transformers.js and against the reference forward pass:
 * - zero steering reproduces the unpatched logits and greedy tokens;
 * - the self-check's injection is exact, for the middle layer and for the first and last layers too;
 * - a non-zero steering row changes logits and greedy tokens;
 * - residual_stream equals the reference residuals (fp32 graphs), with and without steering.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AutoModelForCausalLM, Tensor } from '@huggingface/transformers';
import { buildTestModel, type BuiltModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS, type TestTopology } from '../../src/core/onnx/testmodel/config.js';
import { referenceForward } from '../../src/core/onnx/testmodel/reference.js';
import { generateWeights } from '../../src/core/onnx/testmodel/weights.js';
import { loadSteerableModel, type SteerableModel } from '../../src/core/model/index.js';
import { unpatchedLogits } from '../../src/core/model/identity.js';

const shape = SHAPE_PRESETS.tiny!;
const L = shape.numLayers;
const H = shape.hiddenSize;
const PROMPTS = [
  [5, 17, 200, 33, 8, 91, 140],
  [1, 250, 3, 77],
];

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function rowSteering(layer: number, scale: number, seed = 1): Float32Array {
  const m = new Float32Array(L * H);
  for (let i = 0; i < H; i++) m[layer * H + i] = scale * Math.sin(seed * 0.9 + i * 1.3);
  return m;
}

/** Greedy tokens of the UNPATCHED graph through transformers.js's own generate(). */
async function unpatchedGreedy(sm: SteerableModel, ids: number[], maxNew: number): Promise<number[]> {
  const model = (await AutoModelForCausalLM.from_pretrained(sm.source, { dtype: sm.dtype, device: 'cpu', model_file_name: sm.modelFileName } as never)) as unknown as {
    generate(o: Record<string, unknown>): Promise<{ data: BigInt64Array }>;
    dispose(): Promise<unknown>;
  };
  try {
    const seq = await model.generate({
      input_ids: new Tensor('int64', BigInt64Array.from(ids, BigInt), [1, ids.length]),
      attention_mask: new Tensor('int64', new BigInt64Array(ids.length).fill(1n), [1, ids.length]),
      max_new_tokens: maxNew,
      do_sample: false,
    });
    return Array.from(seq.data, Number).slice(ids.length);
  } finally {
    await model.dispose();
  }
}

const root = mkdtempSync(join(tmpdir(), 'steerlab-model-topo-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const TOPOLOGIES: TestTopology[] = ['plain', 'fused', 'fused-q4f16', 'merged'];

describe.each(TOPOLOGIES)('steerable model, %s graph', (topology) => {
  let built: BuiltModel;
  let sm: SteerableModel;
  const fp16 = topology === 'fused-q4f16';
  const logitTol = fp16 ? 1e-2 : 1e-5;

  beforeAll(async () => {
    built = await buildTestModel(join(root, topology), { shape, topology, seed: 7 });
    sm = await loadSteerableModel(built.dir, { dtype: built.dtype, modelFileName: built.modelFileName });
  });
  afterAll(async () => sm?.dispose());

  it('passes the load-time self-check with an exact injection', () => {
    const r = sm.selfCheck!;
    expect(r.ok).toBe(true);
    expect(r.layer).toBe(Math.floor(L / 2));
    expect(r.upstream_max_error).toBe(0);
    expect(r.injection_max_error).toBeLessThanOrEqual(r.tolerance);
    expect(sm.report.stream_dtype).toBe(fp16 ? 'float16' : 'float32');
    console.info(`[${topology}] injection_max_error=${r.injection_max_error.toExponential(3)} tolerance=${r.tolerance.toExponential(3)}`);
  });

  it('zero steering reproduces the unpatched logits and greedy tokens', async () => {
    const ref = await unpatchedLogits(sm, PROMPTS);
    let worst = 0;
    for (let i = 0; i < PROMPTS.length; i++) {
      const mine = await sm.forward([PROMPTS[i]!], { steering: null });
      expect(mine.logits.dims).toEqual([1, PROMPTS[i]!.length, shape.vocabSize]);
      expect(mine.residuals.dims).toEqual([1, L + 1, PROMPTS[i]!.length, H]);
      worst = Math.max(worst, maxAbsDiff(mine.logits.data, ref[i]!.data));
    }
    console.info(`[${topology}] identity_max_logit_diff=${worst.toExponential(3)}`);
    expect(worst).toBeLessThanOrEqual(logitTol);

    // generation continues from the cache of the unsteered prefill (the WAS flow) and observes the last prompt token
    const theirs = await unpatchedGreedy(sm, PROMPTS[0]!, 12);
    const mine = await sm.generate({ inputIds: PROMPTS[0]!, maxNewTokens: 12, steering: null, capture: 'all' });
    expect(mine.tokenIds).toEqual(theirs);
    expect(mine.tokenIds.length).toBeGreaterThan(0);
    const S = PROMPTS[0]!.length;
    const full = (await sm.forward([PROMPTS[0]!], { steering: null })).residuals.data;
    const last = new Float32Array((L + 1) * H);
    for (let k = 0; k <= L; k++) last.set(full.subarray((k * S + S - 1) * H, (k * S + S) * H), k * H);
    expect(maxAbsDiff(mine.promptResiduals!, last)).toBeLessThanOrEqual(fp16 ? 2e-2 : 1e-5);
    expect(maxAbsDiff(mine.tokenResiduals!.subarray(0, (L + 1) * H), last)).toBeLessThanOrEqual(fp16 ? 2e-2 : 1e-5);
  });

  it('adds a steering row exactly after its layer, at the first and last layers too', async () => {
    const ids = PROMPTS[0]!;
    const S = ids.length;
    const zero = (await sm.forward([ids], { steering: null })).residuals.data;
    for (const layer of [0, L - 1]) {
      const m = rowSteering(layer, 0.5);
      const r = (await sm.forward([ids], { steering: m })).residuals.data;
      let inj = 0;
      let up = 0;
      for (let k = 0; k <= layer; k++) for (let j = 0; j < S * H; j++) up = Math.max(up, Math.abs(r[k * S * H + j]! - zero[k * S * H + j]!));
      for (let p = 0; p < S; p++) {
        for (let i = 0; i < H; i++) {
          const j = (layer + 1) * S * H + p * H + i;
          inj = Math.max(inj, Math.abs(r[j]! - zero[j]! - m[layer * H + i]!));
        }
      }
      expect(up).toBe(0);
      expect(inj).toBeLessThanOrEqual(fp16 ? 1e-2 : 1e-5);
    }
  });

  it('a non-zero steering row changes the logits and the greedy tokens', async () => {
    const ids = PROMPTS[0]!;
    const m = rowSteering(1, 8);
    const a = await sm.forward([ids], { steering: null });
    const b = await sm.forward([ids], { steering: m });
    expect(maxAbsDiff(a.logits.data, b.logits.data)).toBeGreaterThan(0.1);
    const plain = await sm.generate({ inputIds: ids, maxNewTokens: 10, steering: null });
    const steered = await sm.generate({ inputIds: ids, maxNewTokens: 10, steering: m, steerPromptPositions: 'all' });
    expect(steered.tokenIds).not.toEqual(plain.tokenIds);
  });

  if (!fp16) {
    it('residual_stream and logits match the reference forward pass, with and without steering', async () => {
      const weights = generateWeights(shape, built.seed);
      for (const steering of [undefined, rowSteering(2, 1.5)]) {
        for (const ids of PROMPTS) {
          const ref = referenceForward(shape, weights, ids, steering ? { steering } : {});
          const mine = await sm.forward([ids], { steering: steering ?? null });
          expect(maxAbsDiff(mine.residuals.data, ref.residuals)).toBeLessThanOrEqual(1e-4);
          expect(maxAbsDiff(mine.logits.data, ref.logits)).toBeLessThanOrEqual(1e-4);
        }
      }
    });

    it('batched forward with one steering row per batch entry equals separate passes', async () => {
      const ids = [PROMPTS[0]!.slice(0, 4), PROMPTS[1]!];
      const m0 = rowSteering(1, 1);
      const m1 = rowSteering(3, 2, 5);
      const both = new Float32Array(2 * L * H);
      both.set(m0, 0);
      both.set(m1, L * H);
      const batched = await sm.forward(ids, { steering: both });
      const one = await sm.forward([ids[0]!], { steering: m0 });
      const two = await sm.forward([ids[1]!], { steering: m1 });
      const half = batched.residuals.data.length / 2;
      expect(maxAbsDiff(batched.residuals.data.subarray(0, half), one.residuals.data)).toBeLessThanOrEqual(1e-5);
      expect(maxAbsDiff(batched.residuals.data.subarray(half), two.residuals.data)).toBeLessThanOrEqual(1e-5);
    });
  }
});
