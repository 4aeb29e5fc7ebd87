/** The playground's path from activations to the steering matrix (src/ui/lib/steer.ts). */
import { residualIndex } from '../../src/core/model/layer-index.js';
import { describe, expect, test } from 'vitest';
import {
  controllerFeatures, defaultSettings, directionHeat, manualFromPrediction, policyUnavailable, steeringFor, type SteeringArtefacts,
} from '../../src/ui/lib/steer.js';

const L = 3;
const H = 4;
const d = Float32Array.from([1, 0, 0, 0]);
const arts = (over: Partial<SteeringArtefacts> = {}): SteeringArtefacts => ({
  numLayers: L, hiddenSize: H, direction: d, actadd: null, cast: null, hasController: true, ...over,
});
const prediction = { scale: 0.8, layerWeights: Float32Array.from([0.25, 0.5, 1]) };

describe('steering matrix from UI settings', () => {
  test('WAS: row l = s * w_l * alpha * d; row norms match', () => {
    const o = steeringFor({ ...defaultSettings(L), kind: 'was', alpha: 2 }, arts(), prediction, null);
    expect(o.matrix).not.toBeNull();
    const m = o.matrix!;
    for (let l = 0; l < L; l++) expect(m[l * H]).toBeCloseTo(0.8 * prediction.layerWeights[l]! * 2, 6);
    expect(Array.from(o.rowNorms).map((x) => +x.toFixed(5))).toEqual([0.4, 0.8, 1.6]);
  });

  test('manual: switching a layer off zeroes exactly its row', () => {
    const s = { ...defaultSettings(L), kind: 'manual' as const, ...manualFromPrediction(prediction, L) };
    const on = steeringFor(s, arts(), null, null).rowNorms;
    const off = steeringFor({ ...s, manualEnabled: [true, false, true] }, arts(), null, null).rowNorms;
    expect(off[1]).toBe(0);
    expect(off[0]).toBeCloseTo(on[0]!, 6);
    expect(off[2]).toBeCloseTo(on[2]!, 6);
    expect(on[1]).toBeGreaterThan(0);
  });

  test('off gives no matrix; unavailable policies say why in words', () => {
    expect(steeringFor({ ...defaultSettings(L), kind: 'off' }, arts(), null, null).matrix).toBeNull();
    expect(policyUnavailable('was', arts({ hasController: false }))).toMatch(/controller/);
    expect(policyUnavailable('manual', arts({ direction: null }))).toMatch(/direction/);
    expect(policyUnavailable('actadd', arts())).toMatch(/difference-in-means/);
    expect(policyUnavailable('cast', arts())).toMatch(/CAST condition/);
    expect(() => steeringFor({ ...defaultSettings(L), kind: 'was' }, arts({ hasController: false }), null, null)).toThrow(/controller/);
  });

  test('CAST reads the prompt activation at its condition layer and gates the patch', () => {
    const cast = { vector: Float32Array.from([0, 1, 0, 0]), layer: residualIndex(2), threshold: 0.5, activeWhen: 'above' as const };
    const res = new Float32Array((L + 1) * H);
    res.set([0, 3, 0, 0], 2 * H); // along the condition vector at residual index 2
    const on = steeringFor({ ...defaultSettings(L), kind: 'cast' }, arts({ cast }), null, res);
    expect(on.cast?.active).toBe(true);
    expect(on.matrix).not.toBeNull();
    res.set([3, 0, 0, 0], 2 * H); // orthogonal: similarity 0
    const off = steeringFor({ ...defaultSettings(L), kind: 'cast' }, arts({ cast }), null, res);
    expect(off.cast?.active).toBe(false);
    expect(off.matrix).toBeNull();
  });

  test('controller features take residual index l + 1 of each input layer', () => {
    const res = Float32Array.from({ length: (L + 1) * H }, (_, i) => i);
    expect(Array.from(controllerFeatures(res, [1, 2], L, H))).toEqual([8, 9, 10, 11, 12, 13, 14, 15]);
    expect(() => controllerFeatures(res, [3], L, H)).toThrow(/not in 0..2/);
    expect(() => controllerFeatures(res.subarray(1), [1], L, H)).toThrow(/expected/);
  });

  test('manual starts from the prediction (rounded), or s = 1, w = 0.5 without one', () => {
    expect(manualFromPrediction(prediction, L)).toEqual({ manualScale: 0.8, manualWeights: [0.25, 0.5, 1], manualEnabled: [true, true, true] });
    expect(manualFromPrediction(null, 2)).toEqual({ manualScale: 1, manualWeights: [0.5, 0.5], manualEnabled: [true, true] });
  });

  test('heat strip: cosine of each token residual after layer l with d', () => {
    const T = 2;
    const tr = new Float32Array(T * (L + 1) * H);
    // token 0, layer 0 (residual index 1): along d; token 1, layer 2 (index 3): against d
    tr.set([2, 0, 0, 0], (0 * (L + 1) + 1) * H);
    tr.set([-1, 0, 0, 0], (1 * (L + 1) + 3) * H);
    tr.set([0, 5, 0, 0], (1 * (L + 1) + 1) * H);
    const h = directionHeat(tr, d, L, H);
    expect(h.length).toBe(T * L);
    expect(h[0]).toBeCloseTo(1);
    expect(h[1 * L + 2]).toBeCloseTo(-1);
    expect(h[1 * L + 0]).toBeCloseTo(0);
    expect(() => directionHeat(tr.subarray(1), d, L, H)).toThrow(/multiple/);
  });
});
