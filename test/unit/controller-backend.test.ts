import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import {
  activeBackend,
  ControllerNetwork,
  defaultBackendOrder,
  initControllerParams,
  lastBackendReport,
  selectBackend,
  syntheticActivations,
  trainController,
} from '../../src/core/controller/index.js';
import { firstLayer } from '../../src/core/controller/train.js';

describe('controller backend selection (Node)', () => {
  it('defaults to wasm then cpu in Node, and uses wasm when it initialises', async () => {
    expect(defaultBackendOrder()).toEqual(['wasm', 'cpu']);
    expect(await selectBackend()).toBe('wasm');
    expect(activeBackend()).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
    expect(lastBackendReport()).toEqual({ active: 'wasm', attempts: [{ name: 'wasm', ok: true }] });
  });

  it('falls through unavailable backends with reasons, and refuses when none works', async () => {
    expect(await selectBackend(['webgpu', 'webgl', 'bogus', 'cpu'])).toBe('cpu');
    const report = lastBackendReport()!;
    expect(report.active).toBe('cpu');
    expect(report.attempts.map((a) => [a.name, a.ok])).toEqual([
      ['webgpu', false],
      ['webgl', false],
      ['bogus', false],
      ['cpu', true],
    ]);
    expect(report.attempts[0].reason).toMatch(/not available in Node/);
    expect(report.attempts[2].reason).toMatch(/unknown backend/);
    await expect(selectBackend(['bogus'])).rejects.toThrow(/no backend worked: bogus \(unknown backend/);
    await expect(selectBackend([])).rejects.toThrow(/non-empty/);
  });

  it('wasm and cpu give the same predictions (to float32 rounding), and training is deterministic on wasm', async () => {
    const shape = { inputSize: 576, hiddenWidth: 128, numLayers: 30 };
    const p = initControllerParams(shape, 4);
    const x = syntheticActivations({ rows: 3, inputSize: 576, seed: 2, scale: 5 }).x;
    await selectBackend(['cpu']);
    const onCpu = new ControllerNetwork(p).predictBatch(x, 3);
    await selectBackend(['wasm']);
    const onWasm = new ControllerNetwork(p).predictBatch(x, 3);
    onCpu.scales.forEach((s, i) => expect(onWasm.scales[i]).toBeCloseTo(s, 4));
    onCpu.layerWeights.forEach((w, i) => expect(onWasm.layerWeights[i]).toBeCloseTo(w, 5));

    // The training forward x @ w1: tfjs matMul on wasm, a plain JS loop on cpu; both must agree.
    const xb = syntheticActivations({ rows: 4, inputSize: 576, seed: 5 }).x;
    const zWasm = await firstLayer(xb, 4, p);
    await selectBackend(['cpu']);
    const zCpu = await firstLayer(xb, 4, p);
    await selectBackend(['wasm']);
    zCpu.forEach((z, i) => expect(zWasm[i]).toBeCloseTo(z, 4));

    const data = syntheticActivations({ rows: 40, inputSize: 576, seed: 3 });
    const opts = { modelId: 'm', numLayers: 3, hiddenSize: 576, inputLayers: [2], hiddenWidth: 64, epochs: 2, learningRate: 1e-3 };
    const a = await trainController(data, opts);
    const b = await trainController(data, opts);
    expect(a.metadata.metrics.backend).toBe('wasm');
    expect(Buffer.from(a.params.w1.buffer).equals(Buffer.from(b.params.w1.buffer))).toBe(true);
    expect(Buffer.from(a.params.b2.buffer).equals(Buffer.from(b.params.b2.buffer))).toBe(true);
  });
});
