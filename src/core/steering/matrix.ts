/**
 * The steering matrix: float32 [numLayers, hiddenSize] row-major; row l is added to the residual stream after
 * decoder layer l (the patched graph's `steering` input). Every matrix a policy builds passes validateSteeringMatrix
 * before it leaves this folder, so the graph never sees a wrong size or a NaN.
 */
import { firstNonFinite, norm } from './vector.js';

export interface MatrixShape {
  numLayers: number;
  hiddenSize: number;
}

export function checkShape({ numLayers, hiddenSize }: MatrixShape): void {
  if (!Number.isSafeInteger(numLayers) || numLayers <= 0) throw new RangeError(`numLayers must be a positive integer, got ${numLayers}`);
  if (!Number.isSafeInteger(hiddenSize) || hiddenSize <= 0) throw new RangeError(`hiddenSize must be a positive integer, got ${hiddenSize}`);
}

/** Zero matrix [numLayers * hiddenSize]. */
export function zeroMatrix(shape: MatrixShape): Float32Array {
  checkShape(shape);
  return new Float32Array(shape.numLayers * shape.hiddenSize);
}

/** Throws unless `m` is a Float32Array of numLayers * hiddenSize finite values; returns it. */
export function validateSteeringMatrix(m: Float32Array, shape: MatrixShape, what = 'steering matrix'): Float32Array {
  checkShape(shape);
  if (!(m instanceof Float32Array)) throw new TypeError(`${what} must be a Float32Array`);
  const expected = shape.numLayers * shape.hiddenSize;
  if (m.length !== expected) {
    throw new RangeError(`${what} has ${m.length} values, expected numLayers ${shape.numLayers} x hiddenSize ${shape.hiddenSize} = ${expected}`);
  }
  const bad = firstNonFinite(m);
  if (bad >= 0) {
    const layer = Math.floor(bad / shape.hiddenSize);
    throw new RangeError(`${what} row ${layer}, column ${bad % shape.hiddenSize} is ${m[bad]}; every entry must be finite`);
  }
  return m;
}

/** m[layer] += coefficient * vector. */
export function addToRow(m: Float32Array, shape: MatrixShape, layer: number, vector: ArrayLike<number>, coefficient: number): void {
  if (!Number.isSafeInteger(layer) || layer < 0 || layer >= shape.numLayers) throw new RangeError(`layer ${layer} out of range [0, ${shape.numLayers})`);
  if (vector.length !== shape.hiddenSize) throw new RangeError(`vector has length ${vector.length}, expected hidden size ${shape.hiddenSize}`);
  const base = layer * shape.hiddenSize;
  for (let h = 0; h < shape.hiddenSize; h++) m[base + h] += coefficient * vector[h];
}

/** Per-layer norms of a steering matrix (for the UI's "how hard is each layer pushed" bar chart). */
export function rowNorms(m: Float32Array, shape: MatrixShape): Float32Array {
  validateSteeringMatrix(m, shape);
  const out = new Float32Array(shape.numLayers);
  for (let l = 0; l < shape.numLayers; l++) out[l] = norm(m.subarray(l * shape.hiddenSize, (l + 1) * shape.hiddenSize));
  return out;
}
