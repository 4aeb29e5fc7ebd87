import { describe, expect, it } from 'vitest';
import { decoderLayer, decoderLayers, residualIndex, type DecoderLayer } from '../../src/core/model/layer-index.js';
import { rowNorms, validateSteeringMatrix } from '../../src/core/steering/matrix.js';
import { steeringMatrix, validatePolicy, type PolicyContext, type SteeringPolicy } from '../../src/core/steering/policies.js';

// 3 layers, hidden 2, d = (0.6, 0.8).
const d = Float32Array.from([0.6, 0.8]);
const base: PolicyContext = {
  numLayers: 3,
  hiddenSize: 2,
  direction: d,
  prediction: { scale: 1.5, layerWeights: Float32Array.from([0.2, 0.5, 1]) },
};

function rows(m: Float32Array | null): number[][] {
  if (!m) throw new Error('expected a matrix');
  return [0, 1, 2].map((l) => Array.from(m.subarray(l * 2, l * 2 + 2)).map((x) => +x.toFixed(6)));
}

describe('steering policies (hand computations)', () => {
  it('off -> null', () => {
    expect(steeringMatrix({ kind: 'off' }, base)).toBeNull();
  });

  it('was: row l = s * w_l * alpha * d', () => {
    // s * alpha = 3; rows = 3 * w_l * (0.6, 0.8) -> w 0.2: (0.36, 0.48); 0.5: (0.9, 1.2); 1: (1.8, 2.4)
    expect(rows(steeringMatrix({ kind: 'was' }, base))).toEqual([
      [0.36, 0.48],
      [0.9, 1.2],
      [1.8, 2.4],
    ]);
    // alpha 1 halves it
    expect(rows(steeringMatrix({ kind: 'was', alpha: 1 }, base))[2]).toEqual([0.9, 1.2]);
  });

  it('uniform: row l = s * 0.5 * alpha * d, ignoring the layer weights', () => {
    // 1.5 * 0.5 * 2 = 1.5 -> (0.9, 1.2) everywhere
    expect(rows(steeringMatrix({ kind: 'uniform' }, base))).toEqual([
      [0.9, 1.2],
      [0.9, 1.2],
      [0.9, 1.2],
    ]);
  });

  it('manual: user scale and weights, switched-off layers are zero', () => {
    const p: SteeringPolicy = { kind: 'manual', scale: -1, layerWeights: [1, 0.25, 2], enabledLayers: [true, false, true] };
    // -1 * 2 * w: w 1 -> (-1.2, -1.6); off -> 0; w 2 -> (-2.4, -3.2)
    expect(rows(steeringMatrix(p, { ...base, prediction: undefined }))).toEqual([
      [-1.2, -1.6],
      [0, 0],
      [-2.4, -3.2],
    ]);
  });

  it('actadd: raw vector times coefficient at one layer only', () => {
    const p: SteeringPolicy = { kind: 'actadd', vector: Float32Array.from([3, -4]), layer: decoderLayer(1), coefficient: 0.5 };
    expect(rows(steeringMatrix(p, base))).toEqual([
      [0, 0],
      [1.5, -2],
      [0, 0],
    ]);
    expect(rows(steeringMatrix({ kind: 'actadd', vector: Float32Array.from([3, -4]), layer: decoderLayer(0) }, base))[0]).toEqual([3, -4]);
  });

  it('cast: strength * behaviour vector at the chosen layers when the gate opens, else null', () => {
    const condition = { vector: Float32Array.from([1, 0]), layer: residualIndex(1), threshold: 0.5, activeWhen: 'above' as const };
    const p: SteeringPolicy = { kind: 'cast', condition, layers: decoderLayers([0, 2]) };
    // h = (2, 0): P h = (2, 0), tanh -> (0.964, 0): cos = 1 >= 0.5 -> on; default strength 1.5 * d = (0.9, 1.2)
    expect(rows(steeringMatrix(p, { ...base, promptActivation: Float32Array.from([2, 0]) }))).toEqual([
      [0.9, 1.2],
      [0, 0],
      [0.9, 1.2],
    ]);
    // h = (0, 2): orthogonal to c -> similarity 0 -> off
    expect(steeringMatrix(p, { ...base, promptActivation: Float32Array.from([0, 2]) })).toBeNull();
    // 'below' flips the gate
    const below: SteeringPolicy = { ...p, condition: { ...condition, activeWhen: 'below' } };
    expect(steeringMatrix(below, { ...base, promptActivation: Float32Array.from([2, 0]) })).toBeNull();
    // Own behaviour vector and strength; default layers = middle third of 3 layers = [1]
    const own: SteeringPolicy = { kind: 'cast', condition, behaviourVector: Float32Array.from([1, 1]), strength: 2 };
    expect(rows(steeringMatrix(own, { ...base, promptActivation: Float32Array.from([2, 0]) }))).toEqual([
      [0, 0],
      [2, 2],
      [0, 0],
    ]);
    expect(() => steeringMatrix(p, base)).toThrow(/needs the prompt's activation at condition layer 1/);
  });
});

describe('validation', () => {
  const bad: [string, SteeringPolicy, PolicyContext, RegExp][] = [
    ['was without prediction', { kind: 'was' }, { ...base, prediction: undefined }, /needs the controller's prediction/],
    ['weights length', { kind: 'was' }, { ...base, prediction: { scale: 1, layerWeights: new Float32Array(2) } }, /has length 2, expected 3/],
    ['weight outside [0,1]', { kind: 'was' }, { ...base, prediction: { scale: 1, layerWeights: Float32Array.from([0, 2, 0]) } }, /weight 1 is 2, expected a sigmoid/],
    ['NaN scale', { kind: 'uniform' }, { ...base, prediction: { scale: NaN, layerWeights: new Float32Array(3) } }, /scale must be a finite number/],
    ['alpha', { kind: 'was', alpha: Infinity }, base, /alpha must be a finite number/],
    ['non-unit direction', { kind: 'was' }, { ...base, direction: Float32Array.from([1, 1]) }, /unit vector, its norm is 1.414/],
    ['direction size', { kind: 'uniform' }, { ...base, direction: Float32Array.from([1]) }, /steering direction has length 1, expected 2/],
    ['manual weights length', { kind: 'manual', scale: 1, layerWeights: [1, 1] }, base, /manual layer weights .* has length 2, expected 3/],
    ['manual switches length', { kind: 'manual', scale: 1, layerWeights: [1, 1, 1], enabledLayers: [true] }, base, /1 given, expected 3/],
    ['actadd layer', { kind: 'actadd', vector: Float32Array.from([1, 1]), layer: 3 as DecoderLayer }, base, /ActAdd layer 3 is out of range: expected an integer in \[0, 3\)/],
    ['actadd vector NaN', { kind: 'actadd', vector: Float32Array.from([1, NaN]), layer: decoderLayer(0) }, base, /ActAdd vector\[1\] is NaN/],
    [
      'cast layers',
      { kind: 'cast', condition: { vector: Float32Array.from([1, 0]), layer: residualIndex(0), threshold: 0, activeWhen: 'above' }, layers: decoderLayers([1, 1]) },
      { ...base, promptActivation: Float32Array.from([1, 0]) },
      /CAST layer 1 is listed twice/,
    ],
    [
      'cast zero condition',
      { kind: 'cast', condition: { vector: Float32Array.from([0, 0]), layer: residualIndex(0), threshold: 0, activeWhen: 'above' } },
      { ...base, promptActivation: Float32Array.from([1, 0]) },
      /condition vector is zero/,
    ],
    ['unknown kind', { kind: 'bogus' } as unknown as SteeringPolicy, base, /unknown steering policy kind "bogus"/],
  ];
  for (const [name, policy, ctx, re] of bad) {
    it(`rejects ${name}`, () => {
      expect(() => steeringMatrix(policy, ctx)).toThrow(re);
    });
  }

  it('validatePolicy checks settings without a prediction', () => {
    expect(() => validatePolicy({ kind: 'was' }, { numLayers: 3, hiddenSize: 2 })).not.toThrow();
    expect(() => validatePolicy({ kind: 'manual', scale: 1, layerWeights: [1] }, { numLayers: 3, hiddenSize: 2 })).toThrow(/expected 3/);
    expect(() => validatePolicy({ kind: 'off' }, { numLayers: 0, hiddenSize: 2 })).toThrow(/numLayers must be a positive integer/);
  });

  it('validateSteeringMatrix names the bad entry', () => {
    expect(() => validateSteeringMatrix(new Float32Array(5), { numLayers: 3, hiddenSize: 2 })).toThrow(/5 values, expected numLayers 3 x hiddenSize 2 = 6/);
    expect(() => validateSteeringMatrix(Float32Array.from([0, 0, 0, Infinity, 0, 0]), { numLayers: 3, hiddenSize: 2 })).toThrow(/row 1, column 1 is Infinity/);
    expect(Array.from(rowNorms(Float32Array.from([3, 4, 0, 0, 0, 1]), { numLayers: 3, hiddenSize: 2 }))).toEqual([5, 0, 1]);
  });
});
