/** referenceForward: residual stream layout, steering rows, and input checks. */
import { describe, expect, it } from 'vitest';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { argmaxRow, referenceForward, referenceGreedy, ropeInvFreq } from '../../src/core/onnx/testmodel/reference.js';
import { generateWeights } from '../../src/core/onnx/testmodel/weights.js';
import { maxAbsDiff } from './testmodel-helpers.js';

const shape = SHAPE_PRESETS.tiny;
const { numLayers: L, hiddenSize: H, vocabSize: V } = shape;
const weights = generateWeights(shape, 5);
const ids = [1, 44, 201, 87, 300];
const S = ids.length;
const base = referenceForward(shape, weights, ids);
const slice = (r: Float32Array, layer: number) => r.subarray(layer * S * H, (layer + 1) * S * H);

function steeringRow(layer: number, value: (j: number) => number): Float32Array {
  const m = new Float32Array(L * H);
  for (let j = 0; j < H; j++) m[layer * H + j] = value(j);
  return m;
}

describe('referenceForward', () => {
  it('returns logits [S, V] and residuals [L+1, S, H] with the embedding rows at index 0', () => {
    expect(base.logits).toHaveLength(S * V);
    expect(base.residuals).toHaveLength((L + 1) * S * H);
    for (let s = 0; s < S; s++) {
      expect(Array.from(base.residuals.subarray(s * H, (s + 1) * H))).toEqual(Array.from(weights.embedTokens.subarray(ids[s] * H, (ids[s] + 1) * H)));
    }
    // each layer moves the stream
    for (let l = 0; l < L; l++) expect(maxAbsDiff(slice(base.residuals, l), slice(base.residuals, l + 1))).toBeGreaterThan(1e-3);
  });

  it('is causal: a prefix gives the same logits and residuals as the full run', () => {
    const prefix = referenceForward(shape, weights, ids.slice(0, 3));
    expect(maxAbsDiff(prefix.logits, base.logits.subarray(0, 3 * V))).toBeLessThan(1e-6);
    for (let l = 0; l <= L; l++) {
      const p = prefix.residuals.subarray(l * 3 * H, (l + 1) * 3 * H); // prefix layout is [L+1, 3, H]
      expect(maxAbsDiff(p, slice(base.residuals, l).subarray(0, 3 * H))).toBeLessThan(1e-6);
    }
  });

  it('a zero steering matrix changes nothing', () => {
    const r = referenceForward(shape, weights, ids, { steering: new Float32Array(L * H) });
    expect(maxAbsDiff(r.logits, base.logits)).toBe(0);
    expect(maxAbsDiff(r.residuals, base.residuals)).toBe(0);
  });

  it('row l is added to the residual after layer l at every position, and later layers see it', () => {
    const row = (j: number) => (j % 3) - 1;
    const last = referenceForward(shape, weights, ids, { steering: steeringRow(L - 1, row) });
    for (let l = 0; l < L; l++) expect(maxAbsDiff(slice(last.residuals, l), slice(base.residuals, l))).toBe(0);
    const expected = Float32Array.from(slice(base.residuals, L), (x, i) => x + row(i % H));
    expect(maxAbsDiff(slice(last.residuals, L), expected)).toBeLessThan(1e-5);
    expect(maxAbsDiff(last.logits, base.logits)).toBeGreaterThan(1e-2);

    const first = referenceForward(shape, weights, ids, { steering: steeringRow(0, row) });
    expect(maxAbsDiff(slice(first.residuals, 0), slice(base.residuals, 0))).toBe(0);
    const expected1 = Float32Array.from(slice(base.residuals, 1), (x, i) => x + row(i % H));
    expect(maxAbsDiff(slice(first.residuals, 1), expected1)).toBeLessThan(1e-5);
    expect(maxAbsDiff(slice(first.residuals, 2), slice(base.residuals, 2))).toBeGreaterThan(1e-1);
  });

  it('greedy decoding follows the argmax of the last row and stops at an eos id', () => {
    const next = argmaxRow(base.logits, V, S - 1);
    const greedy = referenceGreedy(shape, weights, ids, 4);
    expect(greedy).toHaveLength(4);
    expect(greedy[0]).toBe(next);
    expect(referenceGreedy(shape, weights, ids, 4, [next])).toEqual([next]);
  });

  it('uses HF rotary inverse frequencies theta^(-2i/d)', () => {
    const inv = ropeInvFreq(shape);
    expect(inv).toHaveLength(shape.headDim / 2);
    expect(inv[0]).toBe(1);
    expect(inv[1]).toBeCloseTo(Math.pow(shape.ropeTheta, -2 / shape.headDim), 7);
  });

  it('rejects bad inputs naming what was expected', () => {
    expect(() => referenceForward(shape, weights, [])).toThrow(/at least one token/);
    expect(() => referenceForward(shape, weights, [V])).toThrow(/token id 320 is outside \[0, 320\)/);
    expect(() => referenceForward(shape, weights, [1], { steering: new Float32Array(H) })).toThrow(/steering must hold numLayers\*hiddenSize=256/);
    expect(() => referenceForward({ ...shape, numLayers: 3 }, weights, [1])).toThrow(/weights have 4 layers/);
  });
});
