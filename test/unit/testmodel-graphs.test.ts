/**
 * The plain and merged test graphs compute what referenceForward computes: prefill, step-by-step decoding with
 * past KV, left padding, and both branches of the merged If.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS, type DecoderShape } from '../../src/core/onnx/testmodel/config.js';
import { referenceForward } from '../../src/core/onnx/testmodel/reference.js';
import { generateWeights, type DecoderWeights } from '../../src/core/onnx/testmodel/weights.js';
import { TOL, emptyPast, logitsRow, maxAbsDiff, presentAsPast, range, runDecoder } from './testmodel-helpers.js';

const VARIANTS: Record<string, DecoderShape> = {
  tiny: SHAPE_PRESETS.tiny,
  // Qwen2-like: q/k/v bias, tied lm_head, 4 query heads on one KV head
  'tiny-bias-tied-mqa': { ...SHAPE_PRESETS.tiny, attentionBias: true, tieWordEmbeddings: true, numKvHeads: 1, ropeTheta: 1e6, rmsNormEps: 1e-6 },
  // no grouping (numKvHeads == numHeads): the graph skips the repeat
  'tiny-mha': { ...SHAPE_PRESETS.tiny, numKvHeads: 4, numLayers: 2 },
};
const SEED = 7;
const PROMPT = [1, 40, 201, 77, 300, 5, 123, 9];

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'steerlab-testmodel-graphs-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

function refRow(shape: DecoderShape, weights: DecoderWeights, ids: number[], pos: number): Float32Array {
  const { logits } = referenceForward(shape, weights, ids);
  return logits.subarray(pos * shape.vocabSize, (pos + 1) * shape.vocabSize);
}

for (const [name, shape] of Object.entries(VARIANTS)) {
  describe(`plain graph, ${name}`, () => {
    let sess: ort.InferenceSession;
    let weights: DecoderWeights;
    beforeAll(async () => {
      const built = await buildTestModel(join(root, `plain-${name}`), { shape, topology: 'plain', seed: SEED });
      sess = await ort.InferenceSession.create(join(built.dir, built.onnxFile));
      weights = generateWeights(shape, SEED);
    });

    it('has the transformers.js input and output names', () => {
      const kv = range(shape.numLayers).flatMap((l) => [`.${l}.key`, `.${l}.value`]);
      expect(sess.inputNames).toEqual(['input_ids', 'attention_mask', 'position_ids', ...kv.map((s) => `past_key_values${s}`)]);
      expect(sess.outputNames).toEqual(['logits', ...kv.map((s) => `present${s}`)]);
    });

    it('prefill logits match the reference at every position', async () => {
      const S = PROMPT.length;
      const out = await runDecoder(sess, { ids: [PROMPT], mask: [PROMPT.map(() => 1)], positions: [range(S)], past: emptyPast(shape, 1) });
      expect(out.logits.dims).toEqual([1, S, shape.vocabSize]);
      const ref = referenceForward(shape, weights, PROMPT);
      expect(maxAbsDiff(out.logits.data as Float32Array, ref.logits)).toBeLessThan(TOL);
      expect(out['present.0.key'].dims).toEqual([1, shape.numKvHeads, S, shape.headDim]);
    });

    it('one token at a time with past KV matches the reference on the whole prefix', async () => {
      let past = emptyPast(shape, 1);
      for (let t = 0; t < PROMPT.length; t++) {
        const out = await runDecoder(sess, { ids: [[PROMPT[t]]], mask: [range(t + 1).map(() => 1)], positions: [[t]], past });
        const diff = maxAbsDiff(logitsRow(out.logits, 0, 0), refRow(shape, weights, PROMPT.slice(0, t + 1), t));
        expect(diff, `step ${t}`).toBeLessThan(TOL);
        past = presentAsPast(shape, out);
      }
      expect(past['past_key_values.0.key'].dims).toEqual([1, shape.numKvHeads, PROMPT.length, shape.headDim]);
    });

    it('a chunk after a prefilled past matches the reference', async () => {
      const first = await runDecoder(sess, { ids: [PROMPT.slice(0, 5)], mask: [range(5).map(() => 1)], positions: [range(5)], past: emptyPast(shape, 1) });
      const rest = PROMPT.slice(5);
      const out = await runDecoder(sess, {
        ids: [rest],
        mask: [PROMPT.map(() => 1)],
        positions: [rest.map((_, i) => 5 + i)],
        past: presentAsPast(shape, first),
      });
      for (let i = 0; i < rest.length; i++) {
        expect(maxAbsDiff(logitsRow(out.logits, 0, i), refRow(shape, weights, PROMPT, 5 + i))).toBeLessThan(TOL);
      }
    });

    it('left padding gives the unpadded logits for the real tokens, in prefill and in the next step', async () => {
      const short = PROMPT.slice(0, 5);
      const pad = PROMPT.length - short.length;
      // positions as transformers.js makes them: cumsum of the mask minus one, padded slots set to 1
      const out = await runDecoder(sess, {
        ids: [[...Array(pad).fill(0), ...short], PROMPT],
        mask: [[...Array(pad).fill(0), ...short.map(() => 1)], PROMPT.map(() => 1)],
        positions: [[...Array(pad).fill(1), ...range(short.length)], range(PROMPT.length)],
        past: emptyPast(shape, 2),
      });
      const refShort = referenceForward(shape, weights, short).logits;
      for (let i = 0; i < short.length; i++) {
        const d = maxAbsDiff(logitsRow(out.logits, 0, pad + i), refShort.subarray(i * shape.vocabSize, (i + 1) * shape.vocabSize));
        expect(d, `padded row, token ${i}`).toBeLessThan(TOL);
      }
      const refLong = referenceForward(shape, weights, PROMPT).logits;
      const full = (out.logits.data as Float32Array).subarray(PROMPT.length * shape.vocabSize);
      expect(maxAbsDiff(full, refLong)).toBeLessThan(TOL);

      const next = [17, 250];
      const step = await runDecoder(sess, {
        ids: [[next[0]], [next[1]]],
        mask: [[...Array(pad).fill(0), ...short.map(() => 1), 1], [...PROMPT.map(() => 1), 1]],
        positions: [[short.length], [PROMPT.length]],
        past: presentAsPast(shape, out),
      });
      expect(maxAbsDiff(logitsRow(step.logits, 0, 0), refRow(shape, weights, [...short, next[0]], short.length))).toBeLessThan(TOL);
      expect(maxAbsDiff(logitsRow(step.logits, 1, 0), refRow(shape, weights, [...PROMPT, next[1]], PROMPT.length))).toBeLessThan(TOL);
    });
  });
}

describe('merged graph (If on use_cache_branch)', () => {
  const shape = VARIANTS['tiny-bias-tied-mqa'];
  let merged: ort.InferenceSession;
  let plain: ort.InferenceSession;
  beforeAll(async () => {
    const m = await buildTestModel(join(root, 'merged'), { shape, topology: 'merged', seed: SEED });
    const p = await buildTestModel(join(root, 'merged-plain'), { shape, topology: 'plain', seed: SEED });
    expect(m.onnxFile).toBe('onnx/decoder_model_merged.onnx');
    expect(m.modelFileName).toBe('decoder_model_merged');
    merged = await ort.InferenceSession.create(join(m.dir, m.onnxFile));
    plain = await ort.InferenceSession.create(join(p.dir, p.onnxFile));
  });

  it('declares use_cache_branch and the plain I/O', () => {
    expect(merged.inputNames).toEqual([...plain.inputNames, 'use_cache_branch']);
    expect(merged.outputNames).toEqual(plain.outputNames);
  });

  it('no-past branch matches plain on the prompt; with-past branch matches plain on the next steps', async () => {
    const S = 5;
    const first = { ids: [PROMPT.slice(0, S)], mask: [range(S).map(() => 1)], positions: [range(S)], past: emptyPast(shape, 1) };
    const mOut = await runDecoder(merged, { ...first, useCacheBranch: false });
    const pOut = await runDecoder(plain, first);
    for (const name of plain.outputNames) {
      expect(mOut[name].dims, name).toEqual(pOut[name].dims);
      expect(maxAbsDiff(mOut[name].data as Float32Array, pOut[name].data as Float32Array), name).toBeLessThan(1e-6);
    }
    const ref = referenceForward(shape, generateWeights(shape, SEED), PROMPT.slice(0, S));
    expect(maxAbsDiff(mOut.logits.data as Float32Array, ref.logits)).toBeLessThan(TOL);

    // The no-past branch must ignore past inputs entirely (optimum's merged decoder gets dummy past on step one).
    const ignored = await runDecoder(merged, { ...first, useCacheBranch: false, past: presentAsPast(shape, pOut) });
    expect(maxAbsDiff(ignored.logits.data as Float32Array, pOut.logits.data as Float32Array)).toBeLessThan(1e-6);

    let mPast = presentAsPast(shape, mOut);
    let pPast = presentAsPast(shape, pOut);
    for (let t = S; t < PROMPT.length; t++) {
      const step = { ids: [[PROMPT[t]]], mask: [range(t + 1).map(() => 1)], positions: [[t]] };
      const m = await runDecoder(merged, { ...step, past: mPast, useCacheBranch: true });
      const p = await runDecoder(plain, { ...step, past: pPast });
      for (const name of plain.outputNames) {
        expect(maxAbsDiff(m[name].data as Float32Array, p[name].data as Float32Array), `${name} step ${t}`).toBeLessThan(1e-6);
      }
      mPast = presentAsPast(shape, m);
      pPast = presentAsPast(shape, p);
    }
  });
});
