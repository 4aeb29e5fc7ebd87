/**
 * The WAS controller network on TensorFlow.js, for inference: Linear(inputSize -> hiddenWidth) -> ReLU ->
 * Linear(hiddenWidth -> 1 + numLayers); scale s = first output (raw, no activation), layer weights
 * w = sigmoid(remaining outputs), each in (0, 1). Runs on whatever tfjs backend is active (see backend.ts).
 *
 * The weights are snapshotted and uploaded once at construction; call dispose() to free them (tfjs tensors are not garbage
 * collected on GPU/WASM backends).
 */
import * as tf from '@tensorflow/tfjs-core';
// Registers the CPU backend (and with it a backend that always works) for callers that never call selectBackend.
import './backend.js';
import { layerWeight, type ControllerOutput, type ControllerPredictor } from './forward.js';
import {
  outputSize,
  standardizeRows,
  validateParams,
  validateStandardization,
  type ControllerParams,
  type ControllerShape,
  type InputStandardization,
} from './params.js';

export type { ControllerOutput };

export interface ControllerBatchOutput {
  scales: Float32Array;
  /** Row-major [rows, numLayers]. */
  layerWeights: Float32Array;
}

/** Rows per tfjs call in batch prediction: bounds the hidden activations ([rows, hiddenWidth]) kept in memory. */
const PREDICT_CHUNK_ROWS = 256;

export class ControllerNetwork implements ControllerPredictor {
  readonly shape: ControllerShape;
  private readonly standardization: InputStandardization | null;
  private readonly w1: tf.Tensor2D;
  private readonly b1: tf.Tensor1D;
  private readonly w2: tf.Tensor2D;
  private readonly b2: tf.Tensor1D;
  private disposed = false;

  constructor(params: ControllerParams, standardization: InputStandardization | null = null) {
    validateParams(params);
    if (standardization) validateStandardization(standardization, params.shape.inputSize);
    const s = params.shape;
    this.shape = { ...s };
    this.standardization = standardization;
    // Copies: the CPU backend would otherwise alias the caller's arrays, and training mutates them in place.
    this.w1 = tf.tensor2d(params.w1.slice(), [s.inputSize, s.hiddenWidth]);
    this.b1 = tf.tensor1d(params.b1.slice());
    this.w2 = tf.tensor2d(params.w2.slice(), [s.hiddenWidth, outputSize(s)]);
    this.b2 = tf.tensor1d(params.b2.slice());
  }

  /**
   * Raw outputs [rows, 1 + numLayers] (s, then the layer-weight logits) for already-standardised rows. The caller owns
   * the returned tensor.
   */
  forwardRaw(x: tf.Tensor2D): tf.Tensor2D {
    this.checkAlive();
    return tf.tidy(() => tf.add(tf.matMul(tf.relu(tf.add(tf.matMul(x, this.w1), this.b1)), this.w2), this.b2) as tf.Tensor2D);
  }

  /**
   * One prompt: `row` is the concatenated input-layer residuals at the last prompt token (inputSize values).
   * Synchronous read-back: fine on cpu/wasm (about 1 ms on wasm for SmolLM2-135M's shape); on webgpu use predictAsync.
   */
  predict(row: Float32Array): ControllerOutput {
    const out = this.rawOutputs(row, 1);
    return { scale: out[0], layerWeights: toLayerWeights(out, 0, this.shape.numLayers) };
  }

  /** Like predict but reads back asynchronously (preferred on WebGPU/WebGL, where dataSync stalls the thread). */
  async predictAsync(row: Float32Array): Promise<ControllerOutput> {
    this.checkInput(row, 1);
    const y = this.forwardRaw(this.inputTensor(row, 1));
    try {
      const out = (await y.data()) as Float32Array;
      return { scale: out[0], layerWeights: toLayerWeights(out, 0, this.shape.numLayers) };
    } finally {
      y.dispose();
    }
  }

  /** Many prompts at once: x is row-major [rows, inputSize]. */
  predictBatch(x: Float32Array, rows: number): ControllerBatchOutput {
    this.checkInput(x, rows);
    const L = this.shape.numLayers;
    const scales = new Float32Array(rows);
    const layerWeights = new Float32Array(rows * L);
    const n = this.shape.inputSize;
    for (let r0 = 0; r0 < rows; r0 += PREDICT_CHUNK_ROWS) {
      const r1 = Math.min(rows, r0 + PREDICT_CHUNK_ROWS);
      const out = this.rawOutputs(x.subarray(r0 * n, r1 * n), r1 - r0);
      for (let r = 0; r < r1 - r0; r++) {
        scales[r0 + r] = out[r * (L + 1)];
        layerWeights.set(toLayerWeights(out, r * (L + 1), L), (r0 + r) * L);
      }
    }
    return { scales, layerWeights };
  }

  /** predictBatch with asynchronous read-back (needed on WebGPU). */
  async predictBatchAsync(x: Float32Array, rows: number): Promise<ControllerBatchOutput> {
    this.checkInput(x, rows);
    const L = this.shape.numLayers;
    const scales = new Float32Array(rows);
    const layerWeights = new Float32Array(rows * L);
    const n = this.shape.inputSize;
    for (let r0 = 0; r0 < rows; r0 += PREDICT_CHUNK_ROWS) {
      const r1 = Math.min(rows, r0 + PREDICT_CHUNK_ROWS);
      const y = this.forwardRaw(this.inputTensor(x.subarray(r0 * n, r1 * n), r1 - r0));
      let out: Float32Array;
      try {
        out = (await y.data()) as Float32Array;
      } finally {
        y.dispose();
      }
      for (let r = 0; r < r1 - r0; r++) {
        scales[r0 + r] = out[r * (L + 1)];
        layerWeights.set(toLayerWeights(out, r * (L + 1), L), (r0 + r) * L);
      }
    }
    return { scales, layerWeights };
  }

  /** Scales only (what the training loss and held-out accuracy look at). */
  predictScales(x: Float32Array, rows: number): Float32Array {
    return this.predictBatch(x, rows).scales;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const t of [this.w1, this.b1, this.w2, this.b2]) t.dispose();
  }

  private rawOutputs(x: Float32Array, rows: number): Float32Array {
    this.checkInput(x, rows);
    if (tf.getBackend() === 'webgpu') {
      throw new Error('controller: the webgpu backend cannot read results back synchronously; use predictAsync / predictBatchAsync');
    }
    const y = this.forwardRaw(this.inputTensor(x, rows));
    try {
      return y.dataSync() as Float32Array;
    } finally {
      y.dispose();
    }
  }

  private inputTensor(x: Float32Array, rows: number): tf.Tensor2D {
    // Standardise in JS with the exact arithmetic training used, so train-time and run-time inputs match bit for bit.
    const v = this.standardization ? standardizeRows(x, this.standardization) : x;
    return tf.tensor2d(v, [rows, this.shape.inputSize]);
  }

  private checkInput(x: Float32Array, rows: number): void {
    this.checkAlive();
    if (!(x instanceof Float32Array)) throw new Error('controller input: expected a Float32Array');
    if (!Number.isInteger(rows) || rows < 1) throw new Error(`controller input: rows must be a positive integer, got ${rows}`);
    if (x.length !== rows * this.shape.inputSize) {
      throw new Error(
        `controller input: got ${x.length} values, expected ${rows} x ${this.shape.inputSize} ` +
          `(input layers x hidden size); was the residual taken from the right model and layers?`,
      );
    }
  }

  private checkAlive(): void {
    if (this.disposed) throw new Error('controller network was disposed');
  }
}

function toLayerWeights(out: Float32Array, offset: number, numLayers: number): Float32Array {
  const w = new Float32Array(numLayers);
  for (let l = 0; l < numLayers; l++) w[l] = layerWeight(out[offset + 1 + l]);
  return w;
}
