import * as tf from '@tensorflow/tfjs-core';
// tfjs-core alone registers no gradients (the @tensorflow/tfjs bundle does); the reference autodiff needs them.
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import { describe, expect, it } from 'vitest';
import { initControllerParams, outputSize } from '../../src/core/controller/index.js';
import { AdamW, clipFactor, outerProductSquaredNorm, squaredNorm } from '../../src/core/controller/optimizer.js';
import { batchGradients, firstLayer, gradientBuffers } from '../../src/core/controller/train.js';

const cfg = { learningRate: 0.1, weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8 };

/** torch.optim.AdamW's update (non-amsgrad), written out in float64 as in the PyTorch docs. */
function torchAdamW(p: number[], grads: number[][]): number[] {
  const m = p.map(() => 0);
  const v = p.map(() => 0);
  const q = [...p];
  grads.forEach((g, t0) => {
    const t = t0 + 1;
    for (let i = 0; i < q.length; i++) {
      q[i] *= 1 - cfg.learningRate * cfg.weightDecay;
      m[i] = cfg.beta1 * m[i] + (1 - cfg.beta1) * g[i];
      v[i] = cfg.beta2 * v[i] + (1 - cfg.beta2) * g[i] * g[i];
      const mhat = m[i] / (1 - cfg.beta1 ** t);
      const vhat = v[i] / (1 - cfg.beta2 ** t);
      q[i] -= (cfg.learningRate * mhat) / (Math.sqrt(vhat) + cfg.eps);
    }
  });
  return q;
}

describe('AdamW and clipping', () => {
  it('follows torch.optim.AdamW step for step (decoupled weight decay, bias correction)', () => {
    const p0 = [0.5, -1.5, 2.0, 0];
    const grads = [
      [0.1, -0.2, 0.0, 3],
      [0.3, 0.1, -0.5, -1],
      [-0.2, 0.4, 0.2, 0.5],
    ];
    const p = new Float32Array(p0);
    const opt = new AdamW(cfg);
    for (const g of grads) {
      opt.beginStep();
      opt.updateDense('p', p, new Float32Array(g), 1);
    }
    torchAdamW(p0, grads).forEach((want, i) => expect(p[i]).toBeCloseTo(want, 5));
  });

  it('a zero gradient only decays the weight (as for the w head under the s-only loss)', () => {
    const p = new Float32Array([2]);
    const opt = new AdamW(cfg);
    opt.beginStep();
    opt.updateDense('p', p, new Float32Array([0]), 1);
    expect(p[0]).toBeCloseTo(2 * (1 - 0.1 * 0.01), 6);
  });

  it('the rank-B update equals the update with the materialised gradient a^T d', () => {
    const B = 3;
    const rows = 5;
    const cols = 7;
    const a = Float32Array.from({ length: B * rows }, (_, i) => Math.sin(i + 1));
    const d = Float32Array.from({ length: B * cols }, (_, i) => Math.cos(2 * i));
    const dense = new Float32Array(rows * cols);
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) for (let b = 0; b < B; b++) dense[i * cols + j] += a[b * rows + i] * d[b * cols + j];
    for (const batch of [B, 5]) {
      // batch 5 takes the generic (non-unrolled) loop: pad with zero rows, which add nothing.
      const aa = new Float32Array(batch * rows);
      aa.set(a);
      const dd = new Float32Array(batch * cols);
      dd.set(d);
      const p1 = Float32Array.from({ length: rows * cols }, (_, i) => i / 10);
      const p2 = p1.slice();
      const o1 = new AdamW(cfg);
      const o2 = new AdamW(cfg);
      for (let s = 0; s < 3; s++) {
        o1.beginStep();
        o2.beginStep();
        o1.updateOuterProduct('w', p1, aa, dd, batch, rows, cols, 0.7);
        o2.updateDense('w', p2, dense, 0.7);
      }
      Array.from(p1).forEach((v, i) => expect(v).toBeCloseTo(p2[i], 6));
      expect(outerProductSquaredNorm(aa, dd, batch, rows, cols)).toBeCloseTo(squaredNorm(dense), 4);
    }
  });

  it('clips like clip_grad_norm_: factor max_norm / (norm + 1e-6) only when above the max', () => {
    expect(clipFactor(0.5, 1)).toBe(1);
    expect(clipFactor(4, 1)).toBeCloseTo(0.25, 6);
    expect(clipFactor(4, 0)).toBe(1);
    expect(() => new AdamW({ ...cfg, beta1: 1 })).toThrow(/beta1 must be in \[0, 1\)/);
    expect(() => new AdamW(cfg).updateDense('p', new Float32Array(1), new Float32Array(1), 1)).toThrow(/beginStep/);
  });
});

/** x^T dz: the implicit first-layer gradient of batchGradients, made dense for comparison with autodiff. */
function denseW1Gradient(x: Float32Array, dz: Float32Array, B: number, inputSize: number, hiddenWidth: number): Float64Array {
  const dw1 = new Float64Array(inputSize * hiddenWidth);
  for (let i = 0; i < inputSize; i++) for (let j = 0; j < hiddenWidth; j++) for (let b = 0; b < B; b++) dw1[i * hiddenWidth + j] += x[b * inputSize + i] * dz[b * hiddenWidth + j];
  return dw1;
}

function expectAllClose(got: ArrayLike<number>, want: ArrayLike<number>): void {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < want.length; i++) expect(got[i]).toBeCloseTo(want[i], 5);
}

/** The hand-written loss, four gradients and global norm against tfjs autodiff's value and gradients. */
function expectMatchesAutodiff(
  g: ReturnType<typeof batchGradients>,
  autodiff: { value: tf.Scalar; grads: tf.Tensor[] },
  x: Float32Array,
  B: number,
  shape: { inputSize: number; hiddenWidth: number },
): void {
  const { value, grads } = autodiff;
  expect(g.lossSum / B).toBeCloseTo(value.dataSync()[0], 5);
  expectAllClose(denseW1Gradient(x, g.dz, B, shape.inputSize, shape.hiddenWidth), grads[0].dataSync());
  expectAllClose(g.b1, grads[1].dataSync());
  expectAllClose(g.w2, grads[2].dataSync());
  expectAllClose(g.b2, grads[3].dataSync());
  let norm = 0;
  for (const t of grads) norm += squaredNorm(t.dataSync() as Float32Array);
  expect(g.normSq).toBeCloseTo(norm, 5);
}

describe('hand-written backward pass', () => {
  it('matches tfjs autodiff with the learned layer-weights term (a row without targets gets none)', async () => {
    const shape = { inputSize: 10, hiddenWidth: 7, numLayers: 3 };
    const p = initControllerParams(shape, 8);
    const B = 3;
    const L = shape.numLayers;
    const x = Float32Array.from({ length: B * shape.inputSize }, (_, i) => Math.cos(i * 0.41) * 2);
    const y = [1, 0, 1];
    const c = [0.75, 1.5, 0.75];
    const targets = Float32Array.from([0.9, 0.2, 0.5, NaN, NaN, NaN, 0, 1, 0.3]);
    const weight = 0.7;
    const g = batchGradients(p, x, await firstLayer(x, B, p), B, y, c, 'mse', gradientBuffers(shape, B), { targets, weight });
    const O = outputSize(shape);
    const mask = tf.tensor1d([1, 0, 1]);
    const t = tf.tensor2d(Array.from(targets, (v) => (Number.isNaN(v) ? 0 : v)), [B, L]);
    const f = (w1: tf.Tensor, b1: tf.Tensor, w2: tf.Tensor, b2: tf.Tensor) => {
      const h = tf.relu(tf.add(tf.matMul(tf.tensor2d(x, [B, shape.inputSize]), w1 as tf.Tensor2D), b1));
      const o = tf.add(tf.matMul(h, w2 as tf.Tensor2D), b2);
      const s = tf.squeeze(tf.slice(o, [0, 0], [B, 1]), [1]);
      const w = tf.sigmoid(tf.slice(o, [0, 1], [B, L]));
      const sTerm = tf.square(tf.sub(s, tf.tensor1d(y)));
      const wTerm = tf.mul(tf.mean(tf.square(tf.sub(w, t)), 1), tf.mul(mask, weight));
      return tf.mean(tf.mul(tf.add(sTerm, wTerm), tf.tensor1d(c)));
    };
    const args = [tf.tensor2d(p.w1, [shape.inputSize, shape.hiddenWidth]), tf.tensor1d(p.b1), tf.tensor2d(p.w2, [shape.hiddenWidth, O]), tf.tensor1d(p.b2)];
    expectMatchesAutodiff(g, tf.valueAndGrads(f as (...a: tf.Tensor[]) => tf.Scalar)(args), x, B, shape);
    // the w columns really carry gradient
    expect(Math.max(...Array.from(g.b2.subarray(1), Math.abs))).toBeGreaterThan(1e-4);
  });

  for (const loss of ['mse', 'bce'] as const) {
    it(`matches tfjs autodiff for the ${loss} loss on s (class-weighted)`, async () => {
      const shape = { inputSize: 12, hiddenWidth: 9, numLayers: 4 };
      const p = initControllerParams(shape, 5);
      const B = 3;
      const x = Float32Array.from({ length: B * shape.inputSize }, (_, i) => Math.sin(i * 0.37) * 2);
      const y = [1, 0, 1];
      const c = [0.75, 1.5, 0.75];
      const g = batchGradients(p, x, await firstLayer(x, B, p), B, y, c, loss, gradientBuffers(shape, B));

      const O = outputSize(shape);
      const f = (w1: tf.Tensor, b1: tf.Tensor, w2: tf.Tensor, b2: tf.Tensor) => {
        const h = tf.relu(tf.add(tf.matMul(tf.tensor2d(x, [B, shape.inputSize]), w1 as tf.Tensor2D), b1));
        const s = tf.squeeze(tf.slice(tf.add(tf.matMul(h, w2 as tf.Tensor2D), b2), [0, 0], [B, 1]), [1]);
        const yt = tf.tensor1d(y);
        const per =
          loss === 'mse'
            ? tf.square(tf.sub(s, yt))
            : tf.add(tf.sub(tf.relu(s), tf.mul(s, yt)), tf.log1p(tf.exp(tf.neg(tf.abs(s)))));
        return tf.mean(tf.mul(per, tf.tensor1d(c)));
      };
      const args = [
        tf.tensor2d(p.w1, [shape.inputSize, shape.hiddenWidth]),
        tf.tensor1d(p.b1),
        tf.tensor2d(p.w2, [shape.hiddenWidth, O]),
        tf.tensor1d(p.b2),
      ];
      expectMatchesAutodiff(g, tf.valueAndGrads(f as (...a: tf.Tensor[]) => tf.Scalar)(args), x, B, shape);
    });
  }
});
