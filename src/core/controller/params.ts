/**
 * The controller's numbers, as plain Float32Arrays: the one source of truth that training updates, the file format
 * stores and the tfjs network uploads. Layout is the x @ W convention (row-major [in, out]) so that a batch forward
 * is one matMul and the rank-B gradient of w1 is an outer product over contiguous rows; the file format transposes to
 * PyTorch's nn.Linear [out, in] layout on save so files load in PyTorch unchanged.
 *
 *   z1 = x @ w1 + b1        w1 [inputSize, hiddenWidth]
 *   h  = relu(z1)
 *   o  = h @ w2 + b2        w2 [hiddenWidth, 1 + numLayers]
 *   scale s = o[0] (raw), layer weights w = sigmoid(o[1..])
 */
import { SeededRandom } from './prng.js';

export interface ControllerShape {
  /** n_input_layers * hidden_size. */
  inputSize: number;
  /** Width of the hidden layer (paper: 1024). */
  hiddenWidth: number;
  /** Decoder layers of the steered model: the network outputs 1 + numLayers values. */
  numLayers: number;
}

export interface ControllerParams {
  shape: ControllerShape;
  w1: Float32Array;
  b1: Float32Array;
  w2: Float32Array;
  b2: Float32Array;
}

/** Per-feature input standardisation x' = (x - mean) / std, fitted on the training set and stored with the weights. */
export interface InputStandardization {
  mean: Float32Array;
  std: Float32Array;
}

/**
 * Weight initialisation.
 * - 'torch-linear' (default): PyTorch nn.Linear's default, which the paper's released code uses: weights and biases
 *   U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (Kaiming-uniform with a = sqrt(5)).
 * - 'he-uniform': weights U(-sqrt(6/fan_in), sqrt(6/fan_in)), zero biases (suits ReLU).
 * - 'glorot-uniform': weights U(-sqrt(6/(fan_in+fan_out)), ...), zero biases.
 */
export type ControllerInit = 'torch-linear' | 'he-uniform' | 'glorot-uniform';
export const CONTROLLER_INITS: readonly ControllerInit[] = ['torch-linear', 'he-uniform', 'glorot-uniform'];

export function outputSize(shape: ControllerShape): number {
  return 1 + shape.numLayers;
}

export function validateShape(shape: ControllerShape): ControllerShape {
  for (const k of ['inputSize', 'hiddenWidth', 'numLayers'] as const) {
    const v = shape[k];
    if (!Number.isInteger(v) || v <= 0) throw new Error(`controller shape: ${k} must be a positive integer, got ${v}`);
  }
  return shape;
}

function fillLinear(rand: SeededRandom, init: ControllerInit, fanIn: number, fanOut: number): { w: Float32Array; b: Float32Array } {
  const w = new Float32Array(fanIn * fanOut);
  const b = new Float32Array(fanOut);
  const bound =
    init === 'torch-linear' ? 1 / Math.sqrt(fanIn) : init === 'he-uniform' ? Math.sqrt(6 / fanIn) : Math.sqrt(6 / (fanIn + fanOut));
  for (let i = 0; i < w.length; i++) w[i] = rand.symmetric(bound);
  if (init === 'torch-linear') for (let i = 0; i < b.length; i++) b[i] = rand.symmetric(bound);
  return { w, b };
}

/** Fresh parameters from a seed: the same (shape, seed, init) always gives bit-identical arrays. */
export function initControllerParams(shape: ControllerShape, seed: number, init: ControllerInit = 'torch-linear'): ControllerParams {
  validateShape(shape);
  if (!CONTROLLER_INITS.includes(init)) throw new Error(`controller init: unknown "${init}", expected one of ${CONTROLLER_INITS.join(', ')}`);
  const rand = new SeededRandom(seed, 'init');
  const l1 = fillLinear(rand, init, shape.inputSize, shape.hiddenWidth);
  const l2 = fillLinear(rand, init, shape.hiddenWidth, outputSize(shape));
  return { shape: { ...shape }, w1: l1.w, b1: l1.b, w2: l2.w, b2: l2.b };
}

function checkArray(name: string, a: Float32Array, length: number): void {
  if (!(a instanceof Float32Array)) throw new Error(`controller ${name}: expected a Float32Array`);
  if (a.length !== length) throw new Error(`controller ${name}: has ${a.length} values, expected ${length}`);
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) throw new Error(`controller ${name}: value at index ${i} is ${a[i]}, expected a finite number`);
  }
}

/** Throws naming the array, its length or the first non-finite value. */
export function validateParams(p: ControllerParams): ControllerParams {
  const s = validateShape(p.shape);
  checkArray('w1', p.w1, s.inputSize * s.hiddenWidth);
  checkArray('b1', p.b1, s.hiddenWidth);
  checkArray('w2', p.w2, s.hiddenWidth * outputSize(s));
  checkArray('b2', p.b2, outputSize(s));
  return p;
}

export function validateStandardization(st: InputStandardization, inputSize: number): InputStandardization {
  checkArray('input mean', st.mean, inputSize);
  checkArray('input std', st.std, inputSize);
  for (let i = 0; i < st.std.length; i++) {
    if (!(st.std[i] > 0)) throw new Error(`controller input std: value at index ${i} is ${st.std[i]}, expected > 0`);
  }
  return st;
}

export function cloneParams(p: ControllerParams): ControllerParams {
  return { shape: { ...p.shape }, w1: p.w1.slice(), b1: p.b1.slice(), w2: p.w2.slice(), b2: p.b2.slice() };
}

/**
 * Fits per-feature mean/std on rows of x (row-major [rows, inputSize]). Constant features get std 1 so they pass
 * through centred instead of exploding. Accumulates in float64.
 */
export function fitStandardization(x: Float32Array, rows: number, inputSize: number): InputStandardization {
  if (rows < 1) throw new Error('input standardisation: needs at least one training row');
  const sum = new Float64Array(inputSize);
  const sq = new Float64Array(inputSize);
  for (let r = 0; r < rows; r++) {
    const o = r * inputSize;
    for (let j = 0; j < inputSize; j++) sum[j] += x[o + j];
  }
  const mean = new Float32Array(inputSize);
  for (let j = 0; j < inputSize; j++) mean[j] = sum[j] / rows;
  for (let r = 0; r < rows; r++) {
    const o = r * inputSize;
    for (let j = 0; j < inputSize; j++) {
      const d = x[o + j] - mean[j];
      sq[j] += d * d;
    }
  }
  const std = new Float32Array(inputSize);
  for (let j = 0; j < inputSize; j++) {
    const s = Math.sqrt(sq[j] / rows);
    std[j] = s > 1e-6 ? s : 1;
  }
  return { mean, std };
}

/** Applies standardisation to rows (returns a new array). */
export function standardizeRows(x: Float32Array, st: InputStandardization): Float32Array {
  const n = st.mean.length;
  const out = new Float32Array(x.length);
  for (let o = 0; o < x.length; o += n) {
    for (let j = 0; j < n; j++) out[o + j] = (x[o + j] - st.mean[j]) / st.std[j];
  }
  return out;
}
