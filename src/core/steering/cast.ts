/**
 * Conditional activation steering (CAST; Lee et al., IBM/activation-steering): a condition vector c is checked once
 * on the prompt at one layer,
 *
 *   similarity = cos(h, tanh(P h)),   P h = (h . c / c . c) c,
 *
 * with h the prompt's activation there (IBM mean-pools it over the prompt tokens; the caller decides), and the
 * behaviour vector is added only when the similarity passes a threshold. This module holds the condition maths:
 * the similarity and gate, the condition vector by 1-component PCA of pairwise-centred activations, and the
 * threshold (and layer) fit by best F1. The matrix itself is built in policies.ts.
 */
import { residualIndex, type DecoderLayer, type ResidualIndex } from '../model/layer-index.js';
import { checkVector, dot, norm } from './vector.js';

/** 'above': steer when similarity >= threshold; 'below': steer when similarity <= threshold. */
export type CastComparison = 'above' | 'below';

export interface CastCondition {
  /** Condition vector c [hidden] (need not be unit: the projector divides by c . c). */
  vector: Float32Array;
  /** Residual index (0 = embeddings, k = output of decoder layer k-1) whose prompt activation is compared. */
  layer: ResidualIndex;
  threshold: number;
  activeWhen: CastComparison;
}

/** cos(h, tanh(P h)) with P the projector onto c. 0 when h is orthogonal to c (nothing projects). */
export function castSimilarity(activation: ArrayLike<number>, condition: ArrayLike<number>): number {
  const h = checkVector(activation, activation.length, 'prompt activation');
  const c = checkVector(condition, h.length, 'condition vector');
  const cc = dot(c, c);
  if (cc === 0) throw new RangeError('condition vector is zero; it defines no condition');
  const k = dot(h, c) / cc;
  const t = new Float64Array(h.length);
  for (let i = 0; i < h.length; i++) t[i] = Math.tanh(k * c[i]);
  const nh = norm(h);
  const nt = norm(t);
  if (nh === 0 || nt === 0) return 0;
  return dot(h, t) / (nh * nt);
}

/** Whether a similarity passes the gate. Inclusive, matching fitThreshold's thresholds at observed values. */
export function castGate(similarity: number, threshold: number, activeWhen: CastComparison): boolean {
  if (!Number.isFinite(similarity)) throw new RangeError(`CAST similarity is ${similarity}, expected a finite number`);
  if (activeWhen === 'above') return similarity >= threshold;
  if (activeWhen === 'below') return similarity <= threshold;
  throw new RangeError(`activeWhen must be 'above' or 'below', got ${String(activeWhen)}`);
}

/** Similarity and gate decision for one prompt activation (for the UI: "condition met, 0.43 >= 0.31"). */
export function castDecision(condition: CastCondition, activation: ArrayLike<number>): { similarity: number; active: boolean } {
  const similarity = castSimilarity(activation, condition.vector);
  return { similarity, active: castGate(similarity, condition.threshold, condition.activeWhen) };
}

/** The CAST default behaviour layers: the middle third, [floor(L/3), floor(2L/3)); at least one layer. */
export function middleThirdLayers(numLayers: number): DecoderLayer[] {
  if (!Number.isSafeInteger(numLayers) || numLayers <= 0) throw new RangeError(`numLayers must be a positive integer, got ${numLayers}`);
  const start = Math.floor(numLayers / 3);
  const end = Math.floor((2 * numLayers) / 3);
  if (end <= start) return [Math.floor(numLayers / 2) as DecoderLayer];
  return Array.from({ length: end - start }, (_, i) => (start + i) as DecoderLayer);
}

export interface ConditionVectorResult {
  /** Unit first principal component, signed so that positive examples project higher than their pair partners. */
  vector: Float32Array;
  /** Share of the pairwise-centred variance along the component, in [0, 1]. */
  explainedVariance: number;
  iterations: number;
}

/**
 * Condition vector by 1-component PCA of pairwise-centred activations: each pair (positive_i, negative_i), e.g.
 * harmful/harmless, is centred on its own mean, giving rows +(a - b)/2 and -(a - b)/2; their mean is zero, so the
 * first principal component is the top eigenvector of sum_i (a_i - b_i)(a_i - b_i)^T, found by power iteration
 * without ever forming the hidden x hidden covariance.
 */
export function conditionVectorPCA(
  positives: readonly ArrayLike<number>[],
  negatives: readonly ArrayLike<number>[],
  options: { maxIterations?: number; tolerance?: number } = {},
): ConditionVectorResult {
  if (positives.length === 0) throw new RangeError('conditionVectorPCA: at least one pair of activations is needed');
  if (positives.length !== negatives.length) {
    throw new RangeError(`conditionVectorPCA: pairs need equal counts, got ${positives.length} positive and ${negatives.length} negative activations`);
  }
  const hidden = positives[0].length;
  if (hidden === 0) throw new RangeError('conditionVectorPCA: activations are empty');
  const n = positives.length;
  const diffs = new Float64Array(n * hidden);
  let total = 0;
  for (let i = 0; i < n; i++) {
    const a = checkVector(positives[i], hidden, `positive activation ${i}`);
    const b = checkVector(negatives[i], hidden, `negative activation ${i}`);
    for (let h = 0; h < hidden; h++) {
      const d = a[h] - b[h];
      diffs[i * hidden + h] = d;
      total += d * d;
    }
  }
  if (total === 0) throw new RangeError('conditionVectorPCA: every pair is identical; there is no variance to find a component in');

  // Start from the mean difference (usually close to the answer) plus a small deterministic tilt, so the start is
  // never exactly orthogonal to the top component.
  let v = new Float64Array(hidden);
  for (let i = 0; i < n; i++) for (let h = 0; h < hidden; h++) v[h] += diffs[i * hidden + h];
  let vn = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  for (let h = 0; h < hidden; h++) v[h] = (vn > 0 ? v[h] / vn : 0) + 1e-3 * Math.sin(12.9898 * (h + 1));
  vn = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  for (let h = 0; h < hidden; h++) v[h] /= vn;

  const maxIterations = options.maxIterations ?? 1000;
  const tolerance = options.tolerance ?? 1e-10;
  const proj = new Float64Array(n);
  let lambda = 0;
  let iterations = 0;
  for (; iterations < maxIterations; iterations++) {
    // w = D^T (D v)
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let h = 0; h < hidden; h++) s += diffs[i * hidden + h] * v[h];
      proj[i] = s;
    }
    const w = new Float64Array(hidden);
    for (let i = 0; i < n; i++) for (let h = 0; h < hidden; h++) w[h] += proj[i] * diffs[i * hidden + h];
    const wn = Math.sqrt(w.reduce((s, x) => s + x * x, 0));
    if (wn === 0) break;
    let c = 0;
    for (let h = 0; h < hidden; h++) {
      w[h] /= wn;
      c += w[h] * v[h];
    }
    v = w;
    lambda = wn;
    if (1 - Math.abs(c) < tolerance) {
      iterations++;
      break;
    }
  }
  // Sign: positives should project above their partners on average.
  let meanProj = 0;
  for (let i = 0; i < n; i++) for (let h = 0; h < hidden; h++) meanProj += diffs[i * hidden + h] * v[h];
  const sign = meanProj < 0 ? -1 : 1;
  return {
    vector: Float32Array.from(v, (x) => sign * x),
    explainedVariance: Math.min(1, lambda / total),
    iterations,
  };
}

export interface ThresholdFit {
  threshold: number;
  activeWhen: CastComparison;
  f1: number;
  precision: number;
  recall: number;
}

/**
 * Threshold and comparison with the best F1 for "steer" (label true) prompts. Candidate thresholds are the observed
 * similarities (gates are inclusive, so every split of the sorted values is reachable); both comparisons are tried.
 * Ties keep the first found, scanning 'above' before 'below' and thresholds in ascending order.
 */
export function fitThreshold(similarities: ArrayLike<number>, labels: ArrayLike<boolean>): ThresholdFit {
  const n = similarities.length;
  if (n === 0) throw new RangeError('fitThreshold: no similarities given');
  if (labels.length !== n) throw new RangeError(`fitThreshold: ${n} similarities but ${labels.length} labels`);
  let positives = 0;
  for (let i = 0; i < n; i++) {
    if (!Number.isFinite(similarities[i])) throw new RangeError(`fitThreshold: similarity ${i} is ${similarities[i]}, expected finite`);
    if (typeof labels[i] !== 'boolean') throw new TypeError(`fitThreshold: label ${i} must be a boolean (true = should steer)`);
    if (labels[i]) positives++;
  }
  if (positives === 0) throw new RangeError('fitThreshold: no positive (should-steer) labels; F1 is undefined');
  const thresholds = [...new Set(Array.from(similarities))].sort((a, b) => a - b);
  let best: ThresholdFit | null = null;
  for (const activeWhen of ['above', 'below'] as const) {
    for (const t of thresholds) {
      let tp = 0;
      let fp = 0;
      for (let i = 0; i < n; i++) {
        if (castGate(similarities[i], t, activeWhen)) {
          if (labels[i]) tp++;
          else fp++;
        }
      }
      const precision = tp + fp > 0 ? tp / (tp + fp) : 0;
      const recall = tp / positives;
      const f1 = precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
      if (!best || f1 > best.f1) best = { threshold: t, activeWhen, f1, precision, recall };
    }
  }
  return best!;
}

/** CAST's grid search over layers: fit a threshold at each layer and keep the layer with the best F1. */
export function fitConditionLayer(
  byLayer: readonly { layer: number; similarities: ArrayLike<number> }[],
  labels: ArrayLike<boolean>,
): ThresholdFit & { layer: number; perLayer: (ThresholdFit & { layer: number })[] } {
  if (byLayer.length === 0) throw new RangeError('fitConditionLayer: no layers given');
  const perLayer = byLayer.map(({ layer, similarities }) => ({ layer, ...fitThreshold(similarities, labels) }));
  let best = perLayer[0];
  for (const r of perLayer) if (r.f1 > best.f1) best = r;
  return { ...best, perLayer };
}

/**
 * A CAST condition fitted on labelled prompt activations, as IBM's grid search does it: at every residual index
 * 1..L a condition vector by PCA of (harmful_i, harmless_i) pairs, the similarity of every prompt to it, and the
 * threshold with the best F1 for "harmful = steer"; the residual index with the best F1 wins. `harmful` and
 * `harmless` are [n, L+1, H] activations of one token per prompt (the flow reads the last prompt token). null when
 * there are fewer than two pairs or no layer yields a condition vector.
 */
export function fitCastCondition(harmful: Float32Array, harmless: Float32Array, numLayers: number, hiddenSize: number): CastCondition | null {
  const stride = (numLayers + 1) * hiddenSize;
  for (const [what, a] of [['harmful', harmful], ['harmless', harmless]] as const) {
    if (a.length % stride !== 0) throw new RangeError(`${what} activations have ${a.length} values, not a multiple of (L+1) x H = ${stride}`);
  }
  const nh = harmful.length / stride;
  const nb = harmless.length / stride;
  const pairs = Math.min(nh, nb);
  if (pairs < 2) return null;
  const row = (a: Float32Array, i: number, k: number) => a.subarray(i * stride + k * hiddenSize, i * stride + (k + 1) * hiddenSize);
  const labels = [...new Array<boolean>(nh).fill(true), ...new Array<boolean>(nb).fill(false)];
  const byLayer: { layer: number; similarities: number[]; vector: Float32Array }[] = [];
  for (let k = 1; k <= numLayers; k++) {
    let vector: Float32Array;
    try {
      vector = conditionVectorPCA(
        Array.from({ length: pairs }, (_, i) => row(harmful, i, k)),
        Array.from({ length: pairs }, (_, i) => row(harmless, i, k)),
      ).vector;
    } catch {
      // Every pair identical at this layer: no condition vector, the layer cannot be chosen.
      continue;
    }
    const similarities = [
      ...Array.from({ length: nh }, (_, i) => castSimilarity(row(harmful, i, k), vector)),
      ...Array.from({ length: nb }, (_, i) => castSimilarity(row(harmless, i, k), vector)),
    ];
    byLayer.push({ layer: k, similarities, vector });
  }
  if (byLayer.length === 0) return null;
  const fit = fitConditionLayer(byLayer, labels);
  const chosen = byLayer.find((b) => b.layer === fit.layer)!;
  return { vector: chosen.vector, layer: residualIndex(fit.layer, numLayers), threshold: fit.threshold, activeWhen: fit.activeWhen };
}

/** Throws unless the condition fits a model of this shape (vector of hidden size, layer a residual index 0..L). */
export function validateCastCondition(c: CastCondition, numLayers: number, hiddenSize: number): CastCondition {
  if (!c || typeof c !== 'object') throw new TypeError('CAST condition must be an object { vector, layer, threshold, activeWhen }');
  checkVector(c.vector, hiddenSize, 'CAST condition vector');
  if (!Number.isSafeInteger(c.layer) || c.layer < 0 || c.layer > numLayers) {
    throw new RangeError(`CAST condition layer ${String(c.layer)} is not a residual index in 0..${numLayers}`);
  }
  if (typeof c.threshold !== 'number' || !Number.isFinite(c.threshold)) throw new RangeError(`CAST threshold must be a finite number, got ${String(c.threshold)}`);
  if (c.activeWhen !== 'above' && c.activeWhen !== 'below') throw new RangeError(`CAST activeWhen must be 'above' or 'below', got ${String(c.activeWhen)}`);
  return c;
}
