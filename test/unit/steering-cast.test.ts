import { describe, expect, it } from 'vitest';
import { residualIndex } from '../../src/core/model/layer-index.js';
import {
  castDecision,
  castGate,
  castSimilarity,
  conditionVectorPCA,
  fitCastCondition,
  fitConditionLayer,
  fitThreshold,
  middleThirdLayers,
  validateCastCondition,
} from '../../src/core/steering/cast.js';
import { cosine, normalize } from '../../src/core/steering/vector.js';
import { mulberry32 as rng } from '../../src/core/util/prng.js';

function gaussian(r: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
}

describe('CAST similarity and gate', () => {
  it('cos(h, tanh(P h)) by hand', () => {
    // c = (2, 0) (not unit: the projector divides by c.c); h = (1, 1): P h = (h.c / c.c) c = (2/4)(2, 0) = (1, 0)
    // tanh -> (tanh 1, 0); cos(h, that) = tanh1 / (sqrt2 * tanh1) = 1/sqrt2
    expect(castSimilarity([1, 1], [2, 0])).toBeCloseTo(Math.SQRT1_2, 7);
    // c = (1, 1), h = (3, 1): P h = (4/2)(1, 1) = (2, 2); tanh -> t(1, 1); cos = 4 / (sqrt10 * sqrt2)
    expect(castSimilarity([3, 1], [1, 1])).toBeCloseTo(4 / Math.sqrt(20), 7);
    expect(castSimilarity([0, 5], [1, 0])).toBe(0);
    expect(() => castSimilarity([1, 0], [0, 0])).toThrow(/condition vector is zero/);
    expect(() => castSimilarity([1, 0, 0], [1, 0])).toThrow(/condition vector has length 2, expected 3/);
  });

  it('gate is inclusive in both directions', () => {
    expect(castGate(0.5, 0.5, 'above')).toBe(true);
    expect(castGate(0.49, 0.5, 'above')).toBe(false);
    expect(castGate(0.5, 0.5, 'below')).toBe(true);
    expect(castGate(0.51, 0.5, 'below')).toBe(false);
    expect(() => castGate(NaN, 0.5, 'above')).toThrow(/similarity is NaN/);
    const c = { vector: Float32Array.from([1, 0]), layer: residualIndex(2), threshold: 0.9, activeWhen: 'above' as const };
    expect(castDecision(c, [5, 0.1]).active).toBe(true);
    expect(castDecision(c, [0.1, 5]).active).toBe(false);
  });

  it('middle third of the layers', () => {
    expect(middleThirdLayers(12)).toEqual([4, 5, 6, 7]);
    expect(middleThirdLayers(16)).toEqual([5, 6, 7, 8, 9]);
    expect(middleThirdLayers(1)).toEqual([0]);
  });
});

describe('condition vector by PCA of pairwise-centred activations', () => {
  it('recovers a planted condition vector with the positive sign', () => {
    const r = rng(11);
    const H = 48;
    const planted = normalize(Float32Array.from({ length: H }, (_, h) => Math.cos(0.7 * h) + 0.1));
    const pos: Float32Array[] = [];
    const neg: Float32Array[] = [];
    for (let i = 0; i < 100; i++) {
      // Shared per-pair content (cancels in the pair), plus the condition on the positive side, plus small noise.
      const shared = Float32Array.from({ length: H }, () => 3 * gaussian(r));
      const strength = 2 + r();
      pos.push(Float32Array.from(shared, (x, h) => x + strength * planted[h] + 0.2 * gaussian(r)));
      neg.push(Float32Array.from(shared, (x) => x + 0.2 * gaussian(r)));
    }
    const res = conditionVectorPCA(pos, neg);
    expect(cosine(res.vector, planted)).toBeGreaterThan(0.99);
    // Along the component: E[strength^2] = 2.5^2 + 1/12 ~ 6.33 plus noise 2 * 0.04 = 0.08; in total, the noise adds
    // 2 * 0.04 * 48 = 3.84 -> share ~ 6.41 / 10.17 ~ 0.63.
    expect(res.explainedVariance).toBeGreaterThan(0.55);
    expect(res.explainedVariance).toBeLessThan(0.7);
    // Swapping the roles flips the sign.
    expect(cosine(conditionVectorPCA(neg, pos).vector, planted)).toBeLessThan(-0.99);
  });

  it('finds the top component, not the mean difference, when they differ', () => {
    // Differences along x with alternating sign (mean zero) and a small constant y offset: PCA must pick x.
    const pos = [
      [5, 0.1],
      [-5, 0.1],
      [5, 0.1],
      [-5, 0.1],
    ];
    const neg = pos.map(() => [0, 0]);
    const v = conditionVectorPCA(pos, neg).vector;
    expect(Math.abs(v[0])).toBeGreaterThan(0.999);
  });

  it('refuses unpaired or empty input', () => {
    expect(() => conditionVectorPCA([[1, 2]], [])).toThrow(/equal counts, got 1 positive and 0 negative/);
    expect(() => conditionVectorPCA([[1, 2]], [[1, 2]])).toThrow(/every pair is identical/);
    expect(() => conditionVectorPCA([[1, 2]], [[1]])).toThrow(/negative activation 0 has length 1, expected 2/);
  });
});

describe('fitThreshold', () => {
  it('picks the best-F1 threshold on a crafted set', () => {
    // Positives mostly high; one positive at 0.35 and one negative at 0.7.
    const sims = [0.9, 0.8, 0.75, 0.35, 0.7, 0.4, 0.3, 0.2, 0.1];
    const labels = [true, true, true, true, false, false, false, false, false];
    const fit = fitThreshold(sims, labels);
    // Threshold 0.7 'above': TP 3, FP 1 -> P 0.75, R 0.75, F1 0.75. Threshold 0.35: TP 4, FP 2 -> P 2/3, R 1, F1 0.8.
    // Threshold 0.75: TP 3, FP 0 -> P 1, R 0.75, F1 6/7 = 0.857: the best.
    expect(fit.activeWhen).toBe('above');
    expect(fit.threshold).toBe(0.75);
    expect(fit.f1).toBeCloseTo(6 / 7, 10);
    expect(fit.precision).toBe(1);
    expect(fit.recall).toBe(0.75);
  });

  it("finds 'below' when positives have low similarity", () => {
    const fit = fitThreshold([0.1, 0.2, 0.8, 0.9], [true, true, false, false]);
    expect(fit).toEqual({ threshold: 0.2, activeWhen: 'below', f1: 1, precision: 1, recall: 1 });
  });

  it('picks the best layer', () => {
    const labels = [true, true, false, false];
    const r = fitConditionLayer(
      [
        { layer: 3, similarities: [0.5, 0.2, 0.4, 0.1] },
        { layer: 5, similarities: [0.9, 0.8, 0.2, 0.1] },
      ],
      labels,
    );
    expect(r.layer).toBe(5);
    expect(r.f1).toBe(1);
    expect(r.perLayer).toHaveLength(2);
  });

  it('refuses bad input', () => {
    expect(() => fitThreshold([0.1], [false])).toThrow(/no positive/);
    expect(() => fitThreshold([0.1, 0.2], [true])).toThrow(/2 similarities but 1 labels/);
    expect(() => fitThreshold([NaN], [true])).toThrow(/similarity 0 is NaN/);
  });
});

describe('fitCastCondition (the condition the lab and `lab direction --cast-out` fit)', () => {
  const L = 5;
  const H = 8;
  /** n prompts [n, L+1, H], noise everywhere; harmful ones get +shift along unit axis 3 at residual index 2 only. */
  function acts(n: number, shift: number, seed: number): Float32Array {
    const r = rng(seed);
    const data = new Float32Array(n * (L + 1) * H);
    for (let i = 0; i < data.length; i++) data[i] = r() - 0.5;
    for (let i = 0; i < n; i++) data[(i * (L + 1) + 2) * H + 3] += shift;
    return data;
  }

  it('finds the residual index where the classes differ and separates them', () => {
    const harmful = acts(24, 4, 1);
    const harmless = acts(24, 0, 2);
    const c = fitCastCondition(harmful, harmless, L, H)!;
    expect(c).not.toBeNull();
    expect(c.layer).toBe(2);
    expect(Math.abs(c.vector[3]!)).toBeGreaterThan(0.9);
    const stride = (L + 1) * H;
    const row = (a: Float32Array, i: number) => a.subarray(i * stride + c.layer * H, i * stride + (c.layer + 1) * H);
    const steered = (a: Float32Array, n: number) => Array.from({ length: n }, (_, i) => castDecision(c, row(a, i)).active).filter(Boolean).length;
    expect(steered(harmful, 24)).toBeGreaterThanOrEqual(22);
    expect(steered(harmless, 24)).toBeLessThanOrEqual(2);
  });

  it('needs two pairs; identical classes give no condition; a ragged array is refused', () => {
    expect(fitCastCondition(acts(1, 3, 1), acts(1, 0, 2), L, H)).toBeNull();
    const same = acts(4, 0, 5);
    expect(fitCastCondition(same, same, L, H)).toBeNull();
    expect(() => fitCastCondition(new Float32Array(7), acts(2, 0, 1), L, H)).toThrow(/not a multiple of \(L\+1\) x H = 48/);
  });

  it('validateCastCondition checks the shape against the model', () => {
    const c = { vector: new Float32Array(H).fill(1), layer: residualIndex(2), threshold: 0.3, activeWhen: 'above' as const };
    expect(validateCastCondition(c, L, H)).toBe(c);
    expect(() => validateCastCondition({ ...c, vector: new Float32Array(3) }, L, H)).toThrow(/length 3, expected 8/);
    expect(() => validateCastCondition({ ...c, layer: residualIndex(L + 1) }, L, H)).toThrow(/not a residual index in 0..5/);
    expect(() => validateCastCondition({ ...c, threshold: NaN }, L, H)).toThrow(/threshold/);
    expect(() => validateCastCondition({ ...c, activeWhen: 'sideways' as never }, L, H)).toThrow(/activeWhen/);
  });
});
