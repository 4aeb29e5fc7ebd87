/**
 * Directional ablation (Arditi et al.): remove the component of the residual stream along a unit direction,
 *   x' = x - (x . d) d,
 * at every layer and position. In a model run it is the patched graph's `projection` input with row l = d for every
 * decoder layer (ablationProjection; the diff-in-means selection's ablation run); ablate / ablateRows are the same
 * operation on stored activations.
 */
import { checkVector, norm } from './vector.js';

function checkUnit(direction: ArrayLike<number>, hiddenSize: number): Float32Array {
  const d = checkVector(direction, hiddenSize, 'ablation direction');
  const n = norm(d);
  if (Math.abs(n - 1) > 1e-3) throw new RangeError(`ablation direction must be a unit vector, its norm is ${n}; normalise it first`);
  return d;
}

/** A copy of `x` with its component along the unit direction `d` removed. */
export function ablate(x: ArrayLike<number>, direction: ArrayLike<number>): Float32Array {
  const d = checkUnit(direction, x.length);
  const out = Float32Array.from(x);
  projectOutRows(out, d.length, d);
  return out;
}

/**
 * In place: every row of `rows` ([n, hidden] row-major) loses its component along the unit `direction`. Returns
 * `rows`. The projection coefficient is accumulated in float64, so the remaining component is at float32 rounding.
 */
export function ablateRows(rows: Float32Array, hiddenSize: number, direction: ArrayLike<number>): Float32Array {
  if (!Number.isSafeInteger(hiddenSize) || hiddenSize <= 0 || rows.length % hiddenSize !== 0) {
    throw new RangeError(`ablateRows: length ${rows.length} is not a multiple of hidden size ${hiddenSize}`);
  }
  return projectOutRows(rows, hiddenSize, checkUnit(direction, hiddenSize));
}

function projectOutRows(rows: Float32Array, hiddenSize: number, d: Float32Array): Float32Array {
  for (let start = 0; start < rows.length; start += hiddenSize) {
    let c = 0;
    for (let h = 0; h < hiddenSize; h++) c += rows[start + h] * d[h];
    for (let h = 0; h < hiddenSize; h++) rows[start + h] -= c * d[h];
  }
  return rows;
}

/**
 * The projection matrix [numLayers * hidden] that ablates the unit `direction` after every decoder layer (row l = d):
 * handed to SteerableModel.forward / generate as `projection`, it removes the component along d from the residual
 * after each layer, at every position the pass covers.
 */
export function ablationProjection(direction: ArrayLike<number>, numLayers: number): Float32Array {
  if (!Number.isSafeInteger(numLayers) || numLayers <= 0) throw new RangeError(`numLayers must be a positive integer, got ${numLayers}`);
  const d = checkUnit(direction, direction.length);
  const m = new Float32Array(numLayers * d.length);
  for (let l = 0; l < numLayers; l++) m.set(d, l * d.length);
  return m;
}
