import { describe, expect, it } from 'vitest';
import {
  classWeights,
  ControllerNetwork,
  splitControllerDataset,
  syntheticActivations,
  trainController,
  type ControllerDataset,
  type TrainControllerOptions,
} from '../../src/core/controller/index.js';

// A small stand-in for a model: 6 layers, hidden size 32, input layers 4..5 (the l >= 2/3 N rule), so 64 inputs.
const model = { modelId: 'toy-6x32', numLayers: 6, hiddenSize: 32 };
const inputSize = 2 * 32;
// Paper defaults are for ~1000 real prompts; these synthetic tests use a higher lr and more epochs to converge fast.
const fast: Partial<TrainControllerOptions> = { hiddenWidth: 64, learningRate: 2e-3, epochs: 6, batchSize: 8, seed: 11 };

function clusters(rows = 400, seed = 1, extra: Partial<Parameters<typeof syntheticActivations>[0]> = {}) {
  return splitControllerDataset(syntheticActivations({ rows, inputSize, separation: 0.4, seed, ...extra }), inputSize, 0.25, seed);
}

function sameBits(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

describe('controller training', () => {
  it('uses the paper input layers by default and records metadata', async () => {
    const { train } = clusters(40);
    const c = await trainController(train, { ...model, ...fast, epochs: 1, directionId: 'dir-1', trainingSetDescription: 'synthetic' });
    expect(c.metadata.input_layers).toEqual([4, 5]);
    expect(c.params.shape).toEqual({ inputSize: 64, hiddenWidth: 64, numLayers: 6 });
    expect(c.metadata).toMatchObject({
      format: 'steerlab-controller',
      version: 1,
      model_id: 'toy-6x32',
      num_layers: 6,
      hidden_size: 32,
      hidden_width: 64,
      direction_id: 'dir-1',
      alpha: 2,
      loss: 'mse',
      standardization: 'none',
      seed: 11,
      training_set: { description: 'synthetic', harmful: train.labels.length / 2, benign: train.labels.length / 2 },
    });
    expect(c.metadata.training).toMatchObject({ batch_size: 8, learning_rate: 2e-3, weight_decay: 0.01, clip_norm: 1, lambda: 0.5, balance: true });
    expect(c.metadata.metrics.held_out_accuracy).toBeNull();
    expect(c.metadata.metrics.backend).toBe('cpu');
  });

  it('defaults to the paper hyper-parameters (MSE, lr 5e-5, batch 4, 4 epochs, clip 1, hidden 1024)', async () => {
    const { train } = clusters(16);
    const batches: number[] = [];
    const c = await trainController(train, { ...model, onBatch: (b) => batches.push(b.epoch) });
    expect(c.metadata.training).toMatchObject({ epochs: 4, batch_size: 4, learning_rate: 5e-5, weight_decay: 0.01, clip_norm: 1, lambda: 0.5 });
    expect(c.metadata.hidden_width).toBe(1024);
    expect(c.metadata.loss).toBe('mse');
    expect(batches.length).toBe(4 * Math.ceil(train.labels.length / 4));
  });

  it('loss falls and s separates two Gaussian clusters (held-out accuracy >= 0.95)', async () => {
    const { train, validation } = clusters();
    const epochs: number[] = [];
    const c = await trainController(train, { ...model, ...fast, validation, onEpoch: (m) => epochs.push(m.train_loss) });
    expect(epochs.length).toBe(6);
    expect(epochs[epochs.length - 1]).toBeLessThan(epochs[0] * 0.5);
    expect(c.metadata.metrics.epochs.map((e) => e.train_loss)).toEqual(epochs);
    expect(c.metadata.metrics.held_out_accuracy).toBeGreaterThanOrEqual(0.95);
    expect(c.metadata.metrics.threshold).toBe(0.5);
    // The stored accuracy is what the network really does on the held-out rows.
    const net = new ControllerNetwork(c.params, c.standardization);
    const s = net.predictScales(validation.x, validation.labels.length);
    let correct = 0;
    s.forEach((v, i) => (correct += Number((v > 0.5 ? 1 : 0) === validation.labels[i])));
    expect(correct / s.length).toBe(c.metadata.metrics.held_out_accuracy);
    // s approaches its targets: mean s of harmful near 1, benign near 0.
    const mean = (label: number) => {
      let sum = 0;
      let k = 0;
      s.forEach((v, i) => validation.labels[i] === label && ((sum += v), k++));
      return sum / k;
    };
    expect(mean(1)).toBeGreaterThan(0.7);
    expect(mean(0)).toBeLessThan(0.3);
    net.dispose();
  });

  it('BCE-with-logits option trains too (threshold s > 0)', async () => {
    const { train, validation } = clusters(400, 2);
    const c = await trainController(train, { ...model, ...fast, loss: 'bce', validation });
    expect(c.metadata.loss).toBe('bce');
    expect(c.metadata.metrics.threshold).toBe(0);
    const losses = c.metadata.metrics.epochs.map((e) => e.train_loss);
    expect(losses[losses.length - 1]).toBeLessThan(losses[0]);
    expect(c.metadata.metrics.held_out_accuracy).toBeGreaterThanOrEqual(0.95);
  });

  it('is deterministic: same seed gives bit-identical weights and metrics, another seed differs', async () => {
    const { train, validation } = clusters(120, 3);
    const opts = { ...model, ...fast, epochs: 2, validation, now: () => new Date(0) };
    const a = await trainController(train, opts);
    const b = await trainController(train, opts);
    const d = await trainController(train, { ...opts, seed: 12 });
    for (const k of ['w1', 'b1', 'w2', 'b2'] as const) expect(sameBits(a.params[k], b.params[k])).toBe(true);
    expect(a.metadata).toEqual(
      expect.objectContaining({ ...b.metadata, metrics: { ...b.metadata.metrics, epochs: expect.any(Array) } }),
    );
    expect(a.metadata.metrics.epochs.map((e) => e.train_loss)).toEqual(b.metadata.metrics.epochs.map((e) => e.train_loss));
    expect(sameBits(a.params.w1, d.params.w1)).toBe(false);
    const row = validation.x.subarray(0, inputSize);
    const pa = new ControllerNetwork(a.params).predict(row);
    const pb = new ControllerNetwork(b.params).predict(row);
    expect(pa.scale).toBe(pb.scale);
    expect(sameBits(pa.layerWeights, pb.layerWeights)).toBe(true);
  });

  it('class balancing makes both classes count equally on an imbalanced set', async () => {
    // Every row has the same activations, so the best s is a constant: lambda-weighted mean of the targets.
    // Balanced (lambda 0.5): 0.5. Unbalanced with 10 % harmful: 0.1.
    const rows = 100;
    const x = new Float32Array(rows * inputSize);
    for (let r = 0; r < rows; r++) for (let j = 0; j < inputSize; j++) x[r * inputSize + j] = Math.sin(j);
    const labels = Uint8Array.from({ length: rows }, (_, r) => (r % 10 === 0 ? 1 : 0));
    const data: ControllerDataset = { x, labels };
    // Full batches: each step sees the exact weighted objective (with small noisy batches, the rare heavily weighted
    // harmful rows get clipped and Adam-normalised, which biases the fixed point; see the report).
    const opts = { ...model, ...fast, learningRate: 1e-2, epochs: 150, batchSize: rows };
    const probe = x.subarray(0, inputSize);
    const balanced = await trainController(data, opts);
    const plain = await trainController(data, { ...opts, balance: false });
    const weighted = await trainController(data, { ...opts, lambda: 0.8 });
    const s = (c: typeof balanced) => new ControllerNetwork(c.params).predict(probe).scale;
    expect(s(balanced)).toBeCloseTo(0.5, 1);
    expect(s(plain)).toBeCloseTo(0.1, 1);
    expect(s(weighted)).toBeCloseTo(0.8, 1);
    expect(classWeights(labels, true, 0.5)).toEqual({ harmful: 5, benign: 0.5 / 0.9 });
    expect(classWeights(labels, false, 0.5)).toEqual({ harmful: 1, benign: 1 });
  });

  it('standardisation is fitted on the training rows, stored, and applied at inference', async () => {
    // Residual-like scale: large offset and spread; standardised training still separates.
    const { train, validation } = clusters(400, 4, { scale: 40, offset: 100 });
    const c = await trainController(train, { ...model, ...fast, standardize: true, validation });
    expect(c.metadata.standardization).toBe('per-feature');
    expect(c.standardization).not.toBeNull();
    const meanOfMeans = c.standardization!.mean.reduce((a, b) => a + b, 0) / inputSize;
    expect(meanOfMeans).toBeCloseTo(100, -1);
    expect(c.metadata.metrics.held_out_accuracy).toBeGreaterThanOrEqual(0.95);
  });

  it('abort stops training: pre-aborted, aborted from a callback, and from a timer mid-epoch', async () => {
    const { train } = clusters(200, 5);
    const pre = new AbortController();
    pre.abort();
    await expect(trainController(train, { ...model, ...fast, signal: pre.signal })).rejects.toThrow(/abort/i);

    const ac = new AbortController();
    let seen = 0;
    const p = trainController(train, {
      ...model,
      ...fast,
      signal: ac.signal,
      onBatch: (b) => {
        seen++;
        if (b.batch === 3) ac.abort();
      },
    });
    await expect(p).rejects.toMatchObject({ name: 'AbortError' });
    expect(seen).toBe(3);

    // A timer can only fire if training yields to the event loop: it must.
    const big = syntheticActivations({ rows: 400, inputSize: 576, seed: 6 });
    const timer = new AbortController();
    let batches = 0;
    setTimeout(() => timer.abort(), 50);
    const t0 = performance.now();
    await expect(
      trainController(big, { modelId: 'm', numLayers: 3, hiddenSize: 576, inputLayers: [2], hiddenWidth: 256, epochs: 50, signal: timer.signal, onBatch: () => batches++ }),
    ).rejects.toMatchObject({ name: 'AbortError' });
    expect(batches).toBeLessThan(50 * 100);
    expect(performance.now() - t0).toBeLessThan(5000);
  });

  it('rejects bad data and options with clear errors', async () => {
    const { train } = clusters(20);
    await expect(trainController({ x: new Float32Array(10), labels: [0, 1] }, model)).rejects.toThrow(
      /x has 10 values, expected 2 rows \(labels\) x 64/,
    );
    await expect(trainController({ x: new Float32Array(128), labels: [0, 2] }, model)).rejects.toThrow(/label of row 1 is 2/);
    const nan = train.x.slice();
    nan[70] = NaN;
    await expect(trainController({ x: nan, labels: train.labels }, model)).rejects.toThrow(/row 1 feature 6 is NaN/);
    await expect(trainController({ x: new Float32Array(128), labels: [1, 1] }, model)).rejects.toThrow(/needs both classes/);
    await expect(trainController(train, { ...model, loss: 'hinge' as never })).rejects.toThrow(/loss must be "mse" or "bce"/);
    await expect(trainController(train, { ...model, epochs: 0 })).rejects.toThrow(/epochs must be a positive integer/);
    await expect(trainController(train, { ...model, inputLayers: [9] })).rejects.toThrow(/0\.\.5/);
    await expect(trainController(train, { ...model, validation: { x: new Float32Array(3), labels: [1] } })).rejects.toThrow(
      /validation set: x has 3 values/,
    );
  });

  it('splits datasets stratified and reproducibly', () => {
    const d = syntheticActivations({ rows: 100, inputSize: 4, harmfulFraction: 0.3, seed: 9 });
    const a = splitControllerDataset(d, 4, 0.2, 1);
    const b = splitControllerDataset(d, 4, 0.2, 1);
    expect(a.validation.labels.length).toBe(20);
    expect(Array.from(a.validation.labels).filter((y) => y === 1).length).toBe(6);
    expect(sameBits(a.train.x, b.train.x)).toBe(true);
    expect(() => splitControllerDataset(d, 4, 1, 1)).toThrow(/fraction must be in \(0, 1\)/);
  });
});
