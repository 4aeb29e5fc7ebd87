/**
 * The WAS controller's inference in plain TypeScript: the same two-layer MLP as the TensorFlow.js network
 * (network.ts), without tfjs, so the CLI and the LLM worker run one prediction code where the flow runs (the
 * observed residual never leaves the worker). TensorFlow.js stays for training (train.ts, the controller worker).
 *
 *   x' = (x - mean) / std            per feature, when the controller carries standardisation statistics
 *   h  = relu(x' @ w1 + b1)          w1 [inputSize, hiddenWidth] (params.ts layout)
 *   o  = h @ w2 + b2                 w2 [hiddenWidth, 1 + numLayers]
 *   s  = o[0],  w_l = sigmoid(o[1 + l])
 *
 * Sums are taken in float64 and stored as float32 after each layer, as tfjs's CPU kernels do, so the outputs equal
 * the tfjs network's to float32 rounding (test/unit/controller-forward.test.ts holds them to 1e-6).
 */
import type { Controller } from './metadata.js';
import {
  outputSize,
  standardizeRows,
  validateParams,
  validateStandardization,
  type ControllerParams,
  type ControllerShape,
  type InputStandardization,
} from './params.js';

/** The controller's output for one prompt. */
export interface ControllerOutput {
  /** Global steering scale s (raw first output). */
  scale: number;
  /** Per-layer weights w_l = sigmoid(.), one per decoder layer, each in (0, 1). */
  layerWeights: Float32Array;
}

/** What the method's flow needs from a controller: one prediction per observed prompt. */
export interface ControllerPredictor {
  predict(row: Float32Array): ControllerOutput;
}

/** Largest float32 below 1 and smallest normal float32: keep w strictly inside (0, 1) even where float32 rounds. */
const W_MAX = 0.99999994;
const W_MIN = 1.1754944e-38;

/** sigmoid clamped strictly inside (0, 1): a saturated logit still gives a weight the policies accept. */
export function layerWeight(logit: number): number {
  return Math.min(W_MAX, Math.max(W_MIN, 1 / (1 + Math.exp(-logit))));
}

export class ControllerForward implements ControllerPredictor {
  readonly shape: ControllerShape;
  private readonly params: ControllerParams;
  private readonly standardization: InputStandardization | null;

  constructor(params: ControllerParams, standardization: InputStandardization | null = null) {
    validateParams(params);
    if (standardization) validateStandardization(standardization, params.shape.inputSize);
    this.shape = { ...params.shape };
    // Copies: training updates its arrays in place, and a prediction must not change under the caller's feet.
    this.params = { shape: this.shape, w1: params.w1.slice(), b1: params.b1.slice(), w2: params.w2.slice(), b2: params.b2.slice() };
    this.standardization = standardization ? { mean: standardization.mean.slice(), std: standardization.std.slice() } : null;
  }

  static of(c: Controller): ControllerForward {
    return new ControllerForward(c.params, c.standardization);
  }

  /** One prompt: `row` is the concatenated input-layer residuals at the last prompt token (inputSize values). */
  predict(row: Float32Array): ControllerOutput {
    const { inputSize: n, hiddenWidth: K, numLayers: L } = this.shape;
    if (!(row instanceof Float32Array)) throw new Error('controller input: expected a Float32Array');
    if (row.length !== n) {
      throw new Error(`controller input: got ${row.length} values, expected ${n} (input layers x hidden size); was the residual taken from the right model and layers?`);
    }
    const x = this.standardization ? standardizeRows(row, this.standardization) : row;
    const { w1, b1, w2, b2 } = this.params;
    // h = relu(x @ w1 + b1): accumulate row by row of w1 (contiguous reads), in float64.
    const acc = new Float64Array(K);
    for (let i = 0; i < n; i++) {
      const xi = x[i]!;
      if (xi === 0) continue;
      const o = i * K;
      for (let j = 0; j < K; j++) acc[j]! += xi * w1[o + j]!;
    }
    const h = new Float32Array(K);
    for (let j = 0; j < K; j++) h[j] = Math.max(0, Math.fround(Math.fround(acc[j]!) + b1[j]!));
    const O = outputSize(this.shape);
    const out = new Float64Array(O);
    for (let j = 0; j < K; j++) {
      const hj = h[j]!;
      if (hj === 0) continue;
      const o = j * O;
      for (let k = 0; k < O; k++) out[k]! += hj * w2[o + k]!;
    }
    const raw = new Float32Array(O);
    for (let k = 0; k < O; k++) raw[k] = Math.fround(out[k]!) + b2[k]!;
    const layerWeights = new Float32Array(L);
    for (let l = 0; l < L; l++) layerWeights[l] = layerWeight(raw[1 + l]!);
    return { scale: raw[0]!, layerWeights };
  }
}
