import { describe, expect, it } from 'vitest';
import { decoderLayer, layerBefore, outputOf, residualIndex } from '../../src/core/model/layer-index.js';
import { ablate, ablateRows } from '../../src/core/steering/ablation.js';
import {
  candidateAt,
  diffInMeans,
  layerSeparation,
  listCandidates,
  residualsFromArray,
  type DirectionCandidate,
  type Residuals,
} from '../../src/core/steering/diff-in-means.js';
import { klDivergence, meanRefusalScore, refusalScore, selectDirection, type CandidateScores } from '../../src/core/steering/selection.js';
import { cosine, dot, normalize } from '../../src/core/steering/vector.js';
import { mulberry32 as rng } from '../../src/core/util/prng.js';

function gaussian(r: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
}

const N = 200;
const LAYERS = 5; // residual indices 0..4 of a 4-layer model
const P = 2;
const H = 32;

/** Harmful = noise + shift * u at residual index 3, position 1 (shift smaller elsewhere); harmless = noise. */
function synthetic(seed: number, u: Float32Array): { harmful: Residuals; harmless: Residuals } {
  const r = rng(seed);
  const make = (harmful: boolean) => {
    const data = new Float32Array(N * LAYERS * P * H);
    for (let i = 0; i < N; i++)
      for (let l = 0; l < LAYERS; l++)
        for (let p = 0; p < P; p++) {
          const shift = harmful ? (l === 3 && p === 1 ? 6 : l) : 0;
          const base = ((i * LAYERS + l) * P + p) * H;
          for (let h = 0; h < H; h++) data[base + h] = gaussian(r) + shift * u[h];
        }
    return residualsFromArray(data, [N, LAYERS, P, H]);
  };
  return { harmful: make(true), harmless: make(false) };
}

const planted = normalize(Float32Array.from({ length: H }, (_, h) => Math.sin(h + 1)));

describe('diff-in-means candidates', () => {
  it('recovers a planted direction (cos > 0.99) and its norm', () => {
    const { harmful, harmless } = synthetic(1, planted);
    const c = diffInMeans(harmful, harmless);
    expect(c.layers).toBe(LAYERS);
    expect(c.positions).toBe(P);
    const best = candidateAt(c, residualIndex(3), 1);
    expect(cosine(best.direction, planted)).toBeGreaterThan(0.99);
    expect(best.norm).toBeGreaterThan(5.5);
    expect(best.norm).toBeLessThan(6.8);
    // Raw vector = harmful mean - harmless mean, exactly.
    const i = (3 * P + 1) * H;
    expect(best.vector[5]).toBeCloseTo(c.harmfulMean[i + 5] - c.harmlessMean[i + 5], 5);
    // Residual index 0 has no shift (zero planted difference): its direction is noise, not the planted one.
    expect(Math.abs(cosine(candidateAt(c, residualIndex(0), 0).direction, planted))).toBeLessThan(0.9);
    expect(listCandidates(c)).toHaveLength(LAYERS * P);
  });

  it('accepts a callback source and checks shapes', () => {
    const src: Residuals = { count: 2, layers: 1, positions: 1, hiddenSize: 2, get: (i) => (i === 0 ? [1, 2] : [3, 4]) };
    const zero: Residuals = { count: 1, layers: 1, positions: 1, hiddenSize: 2, get: () => [0, 1] };
    const c = diffInMeans(src, zero);
    expect(Array.from(c.vectors)).toEqual([2, 2]);
    expect(() => diffInMeans(src, { ...zero, hiddenSize: 3 })).toThrow(/differ in hiddenSize: 2 vs 3/);
    expect(() => diffInMeans({ ...src, get: () => [1, NaN] }, zero)).toThrow(/is NaN, expected finite/);
    expect(() => residualsFromArray(new Float32Array(5), [1, 1, 1, 4])).toThrow(/expected \[1, 1, 1, 4\] = 4/);
  });

  it('maps residual indices to steering rows', () => {
    expect(layerBefore(residualIndex(3), 4)).toBe(2);
    expect(outputOf(layerBefore(residualIndex(3), 4))).toBe(3);
    expect(() => layerBefore(residualIndex(0), 4)).toThrow(/index 0 is the embedding output/);
    expect(() => layerBefore(residualIndex(5), 4)).toThrow(/no steering row/);
    expect(() => residualIndex(5, 4)).toThrow(/residual index 5 is out of range: expected 0\.\.4/);
    expect(() => decoderLayer(4, 4)).toThrow(/decoder layer 4 is out of range: expected 0\.\.3/);
    expect(() => decoderLayer(-1)).toThrow(/non-negative integer/);
  });

  it('per-layer separation peaks where the direction was planted', () => {
    const { harmful, harmless } = synthetic(2, planted);
    const stats = layerSeparation(harmful, harmless, planted, 1);
    expect(stats).toHaveLength(LAYERS);
    // Harmful mean projection at index 3 ~ 6 (noise projects to ~N(0,1)), harmless ~ 0, std ~ 1.
    expect(stats[3].harmfulMean).toBeCloseTo(6, 0);
    expect(Math.abs(stats[3].harmlessMean)).toBeLessThan(0.3);
    expect(stats[3].harmfulStd).toBeGreaterThan(0.8);
    expect(stats[3].harmfulStd).toBeLessThan(1.2);
    const best = stats.reduce((a, b) => (b.separation > a.separation ? b : a));
    expect(best.layer).toBe(3);
    expect(stats[0].separation).toBeLessThan(0.5);
    // Hand check of the pooled-std formula on a tiny set: harmful projections 1, 3; harmless -1, 1 -> d = 2 / sqrt(2).
    const one = (vals: number[]): Residuals => ({ count: vals.length, layers: 1, positions: 1, hiddenSize: 1, get: (i) => [vals[i]] });
    const s = layerSeparation(one([1, 3]), one([-1, 1]), Float32Array.from([2]))[0];
    expect(s.separation).toBeCloseTo(2 / Math.SQRT2, 10);
    expect(() => layerSeparation(one([1]), one([1]), new Float32Array(3))).toThrow(/expected 1 \(one direction\) or 1 \(one per layer\)/);
  });
});

describe('selectDirection (Arditi filters)', () => {
  const cand = (k: number, position = 0): DirectionCandidate => ({
    layer: residualIndex(k),
    position,
    vector: Float32Array.from([1, 0]),
    direction: Float32Array.from([1, 0]),
    norm: 1,
  });
  // numLayers = 10 -> layers >= 8 are pruned.
  const table: Record<number, CandidateScores> = {
    1: { ablationRefusalScore: -3, steeringRefusalScore: 1, kl: 0.5 }, // best ablation but KL too high
    2: { ablationRefusalScore: -2, steeringRefusalScore: -1, kl: 0.01 }, // induces no refusal
    3: { ablationRefusalScore: -1, steeringRefusalScore: 2, kl: 0.05 }, // passes
    4: { ablationRefusalScore: -1.5, steeringRefusalScore: 0.5, kl: 0.09 }, // passes, better: the winner
    5: { ablationRefusalScore: NaN, steeringRefusalScore: 1, kl: 0 }, // NaN
    8: { ablationRefusalScore: -9, steeringRefusalScore: 9, kl: 0 }, // late layer
  };
  const cands = [1, 2, 3, 4, 5, 8].map((l) => cand(l));

  it('applies every filter and picks the lowest ablation score among survivors', async () => {
    const seen: number[] = [];
    const progress: [number, number][] = [];
    const r = await selectDirection(
      cands,
      async (c) => {
        seen.push(c.layer);
        return table[c.layer];
      },
      { numLayers: 10, onProgress: (d, t) => progress.push([d, t]) },
    );
    expect(r.selected?.layer).toBe(4);
    expect(seen).toEqual([1, 2, 3, 4, 5]); // layer 8 pruned before running the model
    expect(progress.at(-1)).toEqual([5, 5]);
    const by = Object.fromEntries(r.ranking.map((x) => [x.layer, x.filteredBy]));
    expect(by[1]).toEqual(['kl']);
    expect(by[2]).toEqual(['no-induced-refusal']);
    expect(by[3]).toEqual([]);
    expect(by[4]).toEqual([]);
    expect(by[5]).toEqual(['nan-score']);
    expect(by[8]).toEqual(['late-layer']);
    expect(r.ranking.map((x) => x.layer)).toEqual([4, 3, 1, 2, 5, 8]);
    expect(r.ranking.find((x) => x.layer === 8)?.scores).toBeNull();
  });

  it('evaluates pruned layers on request and returns null when nothing survives', async () => {
    const r = await selectDirection([cand(8), cand(1)], (c) => table[c.layer], { numLayers: 10, evaluatePruned: true });
    expect(r.selected).toBeNull();
    expect(r.ranking[0].layer).toBe(8); // ordered by ablation score among the filtered
    expect(r.ranking[0].scores?.ablationRefusalScore).toBe(-9);
    // Loosening the KL threshold lets layer 1 through.
    const loose = await selectDirection([cand(8), cand(1)], (c) => table[c.layer], { numLayers: 10, klThreshold: 1 });
    expect(loose.selected?.layer).toBe(1);
    await expect(selectDirection([], () => table[1], { numLayers: 10 })).rejects.toThrow(/no candidates/);
    // Without numLayers, the largest candidate layer is taken as L (full capture 0..L): L = 8 prunes only index 8.
    const dflt = await selectDirection(cands, (c) => table[c.layer]);
    expect(dflt.ranking.find((x) => x.layer === 8)?.filteredBy).toEqual(['late-layer']);
    expect(dflt.selected?.layer).toBe(4);
  });
});

describe('refusal score and KL', () => {
  it('refusalScore = log p - log(1 - p)', () => {
    const logits = [Math.log(0.2), Math.log(0.3), Math.log(0.5)];
    expect(refusalScore(logits, [0])).toBeCloseTo(Math.log(0.2 / 0.8), 10);
    expect(refusalScore(logits, [0, 1])).toBeCloseTo(0, 10);
    expect(refusalScore(logits, [2, 2])).toBeCloseTo(0, 10); // duplicates count once
    // Stable where p rounds to 1 in float: logit margin 800.
    expect(refusalScore([800, 0, 0], [0])).toBeCloseTo(800 - Math.log(2), 6);
    expect(meanRefusalScore(Float32Array.from([...logits, ...logits]), 3, [0])).toBeCloseTo(Math.log(0.25), 5);
    expect(() => refusalScore(logits, [3])).toThrow(/outside the vocabulary \[0, 3\)/);
    expect(() => refusalScore([0, NaN], [0])).toThrow(/logit 1 is NaN/);
  });

  it('klDivergence matches the definition and is 0 for equal distributions', () => {
    const p = [0.1, 0.6, 0.3];
    const q = [0.3, 0.3, 0.4];
    const expected = p.reduce((s, pi, i) => s + pi * Math.log(pi / q[i]), 0);
    // Logits shifted by a constant describe the same distribution.
    expect(klDivergence(p.map(Math.log), q.map((x) => Math.log(x) + 5))).toBeCloseTo(expected, 10);
    expect(klDivergence([1, 2, 3], [1, 2, 3])).toBe(0);
  });
});

describe('directional ablation', () => {
  it('removes the component along the direction exactly and keeps the rest', () => {
    const d = normalize(Float32Array.from([3, 4, 0]));
    const x = Float32Array.from([1, 2, 5]);
    const y = ablate(x, d);
    // x.d = (3 + 8)/5 = 2.2 -> y = x - 2.2 * (0.6, 0.8, 0) = (-0.32, 0.24, 5)
    expect(y[0]).toBeCloseTo(-0.32, 6);
    expect(y[1]).toBeCloseTo(0.24, 6);
    expect(y[2]).toBe(5);
    expect(Math.abs(dot(y, d))).toBeLessThan(1e-6);
    expect(Array.from(x)).toEqual([1, 2, 5]); // input untouched
  });

  it('ablates a batch in place, every row', () => {
    const r = rng(3);
    const Hd = 64;
    const d = normalize(Float32Array.from({ length: Hd }, () => gaussian(r)));
    const rows = Float32Array.from({ length: 10 * Hd }, () => gaussian(r) * 10);
    const before = rows.slice();
    ablateRows(rows, Hd, d);
    for (let i = 0; i < 10; i++) {
      const row = rows.subarray(i * Hd, (i + 1) * Hd);
      expect(Math.abs(dot(row, d))).toBeLessThan(1e-4);
      // Orthogonal part unchanged: row = before - (before.d) d
      const c = dot(before.subarray(i * Hd, (i + 1) * Hd), d);
      expect(row[7]).toBeCloseTo(before[i * Hd + 7] - c * d[7], 4);
    }
    expect(() => ablateRows(rows, Hd, Float32Array.from({ length: Hd }, () => 1))).toThrow(/must be a unit vector/);
    expect(() => ablateRows(rows.subarray(1), Hd, d)).toThrow(/not a multiple of hidden size 64/);
  });
});
