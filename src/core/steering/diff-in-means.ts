/**
 * Refusal direction by difference in means (Arditi et al. 2024, andyrdt/refusal_direction): for every residual
 * layer index and every post-instruction position, r[l][p] = mean over harmful prompts - mean over harmless prompts.
 *
 * Layer index convention (used by every function here): residual index k is the residual stream AFTER k decoder
 * layers, i.e. the input of layer k; index 0 is the embedding output and index L the output of the last layer, so a
 * full capture has L + 1 indices. Steerlab's patch adds row l of the steering matrix to the output of layer l, which
 * is residual index l + 1: use layerBefore() / outputOf() (src/core/model/layer-index.ts) to move between the two.
 * Positions are the P post-instruction tokens (the chat-template tokens after the user's text), index 0..P-1 in
 * order; position p is offset p - P from the end of the prompt (Arditi's negative positions).
 */
import { residualIndex, type ResidualIndex } from '../model/layer-index.js';
import { normalize } from './vector.js';

/** Residual activations of n prompts at each (residual index, post-instruction position). */
export interface Residuals {
  count: number;
  layers: number;
  positions: number;
  hiddenSize: number;
  /** Activation of prompt `sample` at residual index `layer`, position `position`; hiddenSize values. */
  get(sample: number, layer: number, position: number): ArrayLike<number>;
}

function checkDim(value: number, what: string): void {
  if (!Number.isSafeInteger(value) || value <= 0) throw new RangeError(`${what} must be a positive integer, got ${value}`);
}

/** Residuals stored densely as [n, layers, positions, hidden] row-major (e.g. a capture of L + 1 residual indices). */
export function residualsFromArray(data: Float32Array, shape: readonly [number, number, number, number]): Residuals {
  const [n, layers, positions, hidden] = shape;
  checkDim(n, 'number of prompts');
  checkDim(layers, 'number of residual layers');
  checkDim(positions, 'number of positions');
  checkDim(hidden, 'hidden size');
  const size = n * layers * positions * hidden;
  if (data.length !== size) {
    throw new RangeError(`residual array has ${data.length} values, expected [${shape.join(', ')}] = ${size}`);
  }
  return {
    count: n,
    layers,
    positions,
    hiddenSize: hidden,
    get(sample, layer, position) {
      const start = ((sample * layers + layer) * positions + position) * hidden;
      return data.subarray(start, start + hidden);
    },
  };
}

/** All diff-in-means candidates plus the class means they came from (kept for plots and statistics). */
export interface DiffInMeansCandidates {
  layers: number;
  positions: number;
  hiddenSize: number;
  harmfulCount: number;
  harmlessCount: number;
  /** Raw (unnormalised) r[layer][position], flattened [layers, positions, hidden]. */
  vectors: Float32Array;
  harmfulMean: Float32Array;
  harmlessMean: Float32Array;
}

/** One candidate: the raw difference vector (used by ActAdd) and its unit direction (used for ablation/steering). */
export interface DirectionCandidate {
  /** Residual index (0 = embeddings, k = output of decoder layer k-1); its steering row is layerBefore(layer). */
  layer: ResidualIndex;
  position: number;
  vector: Float32Array;
  direction: Float32Array;
  norm: number;
}

function classMean(res: Residuals, what: string): Float64Array {
  checkDim(res.count, `number of ${what} prompts`);
  const { layers, positions, hiddenSize } = res;
  const mean = new Float64Array(layers * positions * hiddenSize);
  for (let i = 0; i < res.count; i++) {
    for (let l = 0; l < layers; l++) {
      for (let p = 0; p < positions; p++) {
        const v = res.get(i, l, p);
        if (v.length !== hiddenSize) throw new RangeError(`${what} residual (prompt ${i}, layer ${l}, position ${p}) has length ${v.length}, expected ${hiddenSize}`);
        const base = (l * positions + p) * hiddenSize;
        for (let h = 0; h < hiddenSize; h++) {
          const x = v[h];
          if (!Number.isFinite(x)) throw new RangeError(`${what} residual (prompt ${i}, layer ${l}, position ${p})[${h}] is ${x}, expected finite`);
          mean[base + h] += x;
        }
      }
    }
  }
  for (let j = 0; j < mean.length; j++) mean[j] /= res.count;
  return mean;
}

/** r[l][p] = mean_harmful - mean_harmless for every residual index and position. */
export function diffInMeans(harmful: Residuals, harmless: Residuals): DiffInMeansCandidates {
  for (const key of ['layers', 'positions', 'hiddenSize'] as const) {
    if (harmful[key] !== harmless[key]) {
      throw new RangeError(`harmful and harmless residuals differ in ${key}: ${harmful[key]} vs ${harmless[key]}`);
    }
  }
  const mh = classMean(harmful, 'harmful');
  const mb = classMean(harmless, 'harmless');
  const vectors = new Float32Array(mh.length);
  for (let j = 0; j < mh.length; j++) vectors[j] = mh[j] - mb[j];
  return {
    layers: harmful.layers,
    positions: harmful.positions,
    hiddenSize: harmful.hiddenSize,
    harmfulCount: harmful.count,
    harmlessCount: harmless.count,
    vectors,
    harmfulMean: Float32Array.from(mh),
    harmlessMean: Float32Array.from(mb),
  };
}

/** The candidate at (residual index, position). */
export function candidateAt(c: DiffInMeansCandidates, layer: ResidualIndex, position: number): DirectionCandidate {
  if (!Number.isSafeInteger(layer) || layer < 0 || layer >= c.layers) throw new RangeError(`layer ${layer} out of range [0, ${c.layers})`);
  if (!Number.isSafeInteger(position) || position < 0 || position >= c.positions) {
    throw new RangeError(`position ${position} out of range [0, ${c.positions})`);
  }
  const start = (layer * c.positions + position) * c.hiddenSize;
  const vector = c.vectors.slice(start, start + c.hiddenSize);
  let n = 0;
  for (const x of vector) n += x * x;
  n = Math.sqrt(n);
  return { layer, position, vector, direction: normalize(vector, `diff-in-means candidate (layer ${layer}, position ${position})`), norm: n };
}

/** Every candidate, layer-major. Candidates with a zero difference (identical classes) are skipped. */
export function listCandidates(c: DiffInMeansCandidates): DirectionCandidate[] {
  const out: DirectionCandidate[] = [];
  for (let l = 0; l < c.layers; l++) {
    for (let p = 0; p < c.positions; p++) {
      const start = (l * c.positions + p) * c.hiddenSize;
      let n = 0;
      for (let h = 0; h < c.hiddenSize; h++) n += c.vectors[start + h] ** 2;
      if (n > 0) out.push(candidateAt(c, residualIndex(l), p));
    }
  }
  return out;
}

/** How well one layer separates harmful from harmless prompts along a direction (for per-layer plots). */
export interface LayerSeparation {
  layer: number;
  /** Mean projection of harmful / harmless activations on the unit direction. */
  harmfulMean: number;
  harmlessMean: number;
  harmfulStd: number;
  harmlessStd: number;
  /** (harmfulMean - harmlessMean) / pooled std (Cohen's d); 0 when both classes have zero spread and equal means. */
  separation: number;
}

/**
 * Per residual index, project every prompt's activation at `position` (default: last post-instruction token) on
 * the direction and summarise. `direction` is one unit vector [hidden] for all layers, or one per layer
 * [layers * hidden] (e.g. each layer's own diff-in-means direction); each is normalised here.
 */
export function layerSeparation(
  harmful: Residuals,
  harmless: Residuals,
  direction: Float32Array,
  position = harmful.positions - 1,
): LayerSeparation[] {
  const { layers, hiddenSize } = harmful;
  if (harmless.layers !== layers || harmless.hiddenSize !== hiddenSize || harmless.positions !== harmful.positions) {
    throw new RangeError('harmful and harmless residuals must have the same layers, positions and hidden size');
  }
  if (!Number.isSafeInteger(position) || position < 0 || position >= harmful.positions) {
    throw new RangeError(`position ${position} out of range [0, ${harmful.positions})`);
  }
  let perLayer: boolean;
  if (direction.length === hiddenSize) perLayer = false;
  else if (direction.length === layers * hiddenSize) perLayer = true;
  else throw new RangeError(`direction has length ${direction.length}, expected ${hiddenSize} (one direction) or ${layers * hiddenSize} (one per layer)`);
  const shared = perLayer ? null : normalize(direction, 'direction');
  const out: LayerSeparation[] = [];
  for (let l = 0; l < layers; l++) {
    const d = shared ?? normalize(direction.subarray(l * hiddenSize, (l + 1) * hiddenSize), `direction of layer ${l}`);
    const stats = (res: Residuals) => {
      let sum = 0;
      let sumSq = 0;
      for (let i = 0; i < res.count; i++) {
        const v = res.get(i, l, position);
        let x = 0;
        for (let h = 0; h < hiddenSize; h++) x += v[h] * d[h];
        sum += x;
        sumSq += x * x;
      }
      const mean = sum / res.count;
      // Sample variance (n - 1); a single prompt has no spread.
      const variance = res.count > 1 ? Math.max(0, (sumSq - res.count * mean * mean) / (res.count - 1)) : 0;
      return { mean, variance, n: res.count };
    };
    const a = stats(harmful);
    const b = stats(harmless);
    const dof = a.n + b.n - 2;
    const pooled = dof > 0 ? Math.sqrt(((a.n - 1) * a.variance + (b.n - 1) * b.variance) / dof) : 0;
    const diff = a.mean - b.mean;
    const separation = pooled > 0 ? diff / pooled : diff === 0 ? 0 : Math.sign(diff) * Infinity;
    out.push({
      layer: l,
      harmfulMean: a.mean,
      harmlessMean: b.mean,
      harmfulStd: Math.sqrt(a.variance),
      harmlessStd: Math.sqrt(b.variance),
      separation,
    });
  }
  return out;
}
