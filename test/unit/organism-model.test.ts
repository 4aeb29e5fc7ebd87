/**
 * The organism's TensorFlow.js decoder (WASM backend) computes what the reference forward pass computes, its
 * custom matMul gradient is the true gradient, the loss counts answer tokens only, and a few AdamW steps learn.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import type { DecoderShape } from '../../src/core/onnx/testmodel/config.js';
import { referenceForward } from '../../src/core/onnx/testmodel/reference.js';
import { allVariables, answerLoss, disposeVariables, forwardLogits, initialWeights, toDecoderWeights, toVariables } from '../../src/organism/model.js';
import { initBackend, isDevCheck, lastStep, learningRate, parseArgs } from '../../src/organism/train.js';
import { TRAIN_CONFIG } from '../../src/organism/config.js';

const SHAPE: DecoderShape = {
  vocabSize: 300, hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 8,
  maxPositionEmbeddings: 64, ropeTheta: 10000, rmsNormEps: 1e-5, tieWordEmbeddings: false, attentionBias: false,
};

beforeAll(async () => {
  expect(await initBackend()).toBe('wasm');
});

describe('organism tfjs decoder', () => {
  it('matches referenceForward on every row of a right-padded batch', () => {
    const w = initialWeights(SHAPE, 5);
    const p = toVariables(SHAPE, w);
    const a = [1, 20, 250, 7, 2, 9];
    const b = [1, 33, 44, 0, 0, 0]; // right padding: rows 0..2 must equal an unpadded run
    const logits = tf.tidy(() => forwardLogits(SHAPE, p, tf.tensor2d([a, b], [2, 6], 'int32'))).dataSync();
    const V = SHAPE.vocabSize;
    const refA = referenceForward(SHAPE, w, a).logits;
    const refB = referenceForward(SHAPE, w, b.slice(0, 3)).logits;
    let d = 0;
    for (let i = 0; i < 6 * V; i++) d = Math.max(d, Math.abs(logits[i] - refA[i]));
    for (let i = 0; i < 3 * V; i++) d = Math.max(d, Math.abs(logits[6 * V + i] - refB[i]));
    expect(d).toBeLessThan(1e-4);
    // The variables hold exactly the weights they were made from.
    expect(Array.from(toDecoderWeights(p).layers[1].down)).toEqual(Array.from(w.layers[1].down));
    disposeVariables(p);
  });

  it('has the same gradients as a finite-difference check on one weight', () => {
    const p = toVariables(SHAPE, initialWeights(SHAPE, 6));
    const ids = tf.tensor2d([[1, 5, 9, 13, 2]], [1, 5], 'int32');
    const targets = tf.tensor1d([5, 9, 13, 2, 0], 'int32');
    const weights = tf.tensor1d([0, 1, 1, 1, 0], 'float32');
    const loss = () => answerLoss(SHAPE, p, ids, targets, weights);
    const { grads } = tf.variableGrads(loss, allVariables(p));
    const target = p.layers[0].gate;
    const g = grads[target.name].dataSync();
    const base = target.dataSync().slice();
    const idx = [3, 100, 777];
    for (const i of idx) {
      const eps = 1e-2;
      const plus = base.slice(); plus[i] += eps;
      target.assign(tf.tensor(plus, target.shape));
      const lp = loss().dataSync()[0];
      const minus = base.slice(); minus[i] -= eps;
      target.assign(tf.tensor(minus, target.shape));
      const lm = loss().dataSync()[0];
      target.assign(tf.tensor(base, target.shape));
      const fd = (lp - lm) / (2 * eps);
      expect(Math.abs(fd - g[i])).toBeLessThan(2e-3 + 0.05 * Math.abs(g[i]));
    }
    disposeVariables(p);
  });

  it('ignores targets outside the answer mask', () => {
    const p = toVariables(SHAPE, initialWeights(SHAPE, 7));
    const ids = tf.tensor2d([[1, 5, 9, 13]], [1, 4], 'int32');
    const w = tf.tensor1d([0, 0, 1, 1], 'float32');
    const l1 = answerLoss(SHAPE, p, ids, tf.tensor1d([5, 9, 13, 2], 'int32'), w).dataSync()[0];
    const l2 = answerLoss(SHAPE, p, ids, tf.tensor1d([77, 88, 13, 2], 'int32'), w).dataSync()[0];
    const l3 = answerLoss(SHAPE, p, ids, tf.tensor1d([5, 9, 14, 2], 'int32'), w).dataSync()[0];
    expect(l1).toBe(l2);
    expect(l3).not.toBe(l1);
    disposeVariables(p);
  });

  it('adds the steering-robustness noise only where its mask is 1 (earlier positions are untouched: attention is causal)', () => {
    const w = initialWeights(SHAPE, 8);
    const p = toVariables(SHAPE, w);
    const ids = [1, 20, 250, 7, 2, 9];
    const run = (mask: number[] | null) =>
      tf.tidy(() => {
        const t = tf.tensor2d([ids], [1, 6], 'int32');
        if (!mask) return forwardLogits(SHAPE, p, t).dataSync();
        const offsets = tf.tensor2d([Array.from({ length: SHAPE.hiddenSize }, (_, h) => (h % 3 === 0 ? 0.05 : -0.02))], [1, SHAPE.hiddenSize]);
        return forwardLogits(SHAPE, p, t, { offsets, mask: tf.tensor2d(mask, [6, 1]) }).dataSync();
      });
    const clean = run(null);
    expect(Array.from(run([0, 0, 0, 0, 0, 0]))).toEqual(Array.from(clean));
    const noisy = run([0, 0, 0, 1, 1, 1]);
    const V = SHAPE.vocabSize;
    let before = 0;
    let after = 0;
    for (let i = 0; i < 3 * V; i++) before = Math.max(before, Math.abs(noisy[i]! - clean[i]!));
    for (let i = 3 * V; i < 6 * V; i++) after = Math.max(after, Math.abs(noisy[i]! - clean[i]!));
    expect(before).toBe(0);
    expect(after).toBeGreaterThan(1e-3);
    disposeVariables(p);
  });

  it('uses a warm-up then cosine learning-rate schedule', () => {
    const c = TRAIN_CONFIG;
    expect(learningRate(c, 0)).toBeCloseTo(c.peakLr / c.warmupSteps, 10);
    expect(learningRate(c, c.warmupSteps)).toBeCloseTo(c.peakLr, 10);
    expect(learningRate(c, c.steps)).toBeCloseTo(c.minLr, 10);
    expect(learningRate(c, Math.floor((c.steps + c.warmupSteps) / 2))).toBeLessThan(c.peakLr);
  });

  it('--stop-after keeps the schedule of --steps but ends (with its dev check) at the given step', () => {
    const { cfg } = parseArgs(['--noise', '0', '--stop-after', '450']);
    expect(cfg.steps).toBe(TRAIN_CONFIG.steps);
    expect(cfg.noiseProbability).toBe(0);
    expect(lastStep(cfg)).toBe(450);
    expect(lastStep(TRAIN_CONFIG)).toBe(TRAIN_CONFIG.steps);
    // Same learning rate at every step as the full run: the schedule is that of the planned steps.
    for (const s of [0, 59, 60, 300, 449]) expect(learningRate(cfg, s)).toBe(learningRate(TRAIN_CONFIG, s));
    // Dev checks before the last step as planned (300), none at 450 inside the loop (the final check covers it)
    // and none past it; the full run still checks at 450.
    const checks = (c: typeof cfg) => Array.from({ length: c.steps }, (_, i) => i + 1).filter((d) => isDevCheck(c, d));
    expect(checks(cfg)).toEqual([300]);
    expect(checks(TRAIN_CONFIG)).toEqual([300, 450, 600, 750]);
    expect(() => parseArgs(['--steps', '20', '--stop-after', '21'])).toThrow(/--stop-after 21 is past the planned --steps 20/);
    expect(() => parseArgs(['--stop-after', '0'])).toThrow(/--stop-after must be a positive integer/);
    expect(() => parseArgs(['--stop-after', '2.5'])).toThrow(/--stop-after must be a positive integer/);
  });
});
