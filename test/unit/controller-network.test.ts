import { describe, expect, it } from 'vitest';
import {
  ControllerNetwork,
  initControllerParams,
  outputSize,
  standardizeRows,
  validateParams,
  type ControllerParams,
} from '../../src/core/controller/index.js';

const shape = { inputSize: 24, hiddenWidth: 16, numLayers: 5 };

/** Reference forward in float64, straight from the paper's definition. */
function reference(p: ControllerParams, x: Float32Array): { s: number; w: number[] } {
  const { inputSize: n, hiddenWidth: H } = p.shape;
  const O = outputSize(p.shape);
  const h = new Float64Array(H);
  for (let j = 0; j < H; j++) {
    let z = p.b1[j];
    for (let i = 0; i < n; i++) z += x[i] * p.w1[i * H + j];
    h[j] = Math.max(0, z);
  }
  const o = new Float64Array(O);
  for (let k = 0; k < O; k++) {
    let v = p.b2[k];
    for (let j = 0; j < H; j++) v += h[j] * p.w2[j * O + k];
    o[k] = v;
  }
  return { s: o[0], w: Array.from(o.slice(1), (v) => 1 / (1 + Math.exp(-v))) };
}

function row(seed: number, n: number, amp = 3): Float32Array {
  const r = new Float32Array(n);
  for (let i = 0; i < n; i++) r[i] = Math.sin(seed * 13.1 + i * 0.7) * amp;
  return r;
}

describe('controller network', () => {
  it('outputs a raw scale and numLayers weights strictly inside (0, 1)', () => {
    const p = initControllerParams(shape, 1);
    const net = new ControllerNetwork(p);
    for (let k = 0; k < 5; k++) {
      const out = net.predict(row(k, shape.inputSize, 50));
      expect(typeof out.scale).toBe('number');
      expect(Number.isFinite(out.scale)).toBe(true);
      expect(out.layerWeights).toBeInstanceOf(Float32Array);
      expect(out.layerWeights.length).toBe(shape.numLayers);
      for (const w of out.layerWeights) {
        expect(w).toBeGreaterThan(0);
        expect(w).toBeLessThan(1);
      }
    }
    net.dispose();
  });

  it('keeps weights strictly inside (0, 1) even for saturated logits', () => {
    const p = initControllerParams(shape, 1);
    p.b2.set([0, 500, -500, 40, -120, 0]);
    p.w2.fill(0);
    const net = new ControllerNetwork(p);
    const w = net.predict(row(0, shape.inputSize)).layerWeights;
    for (const v of w) {
      expect(v).toBeGreaterThan(0);
      expect(v).toBeLessThan(1);
    }
    net.dispose();
  });

  it('matches a float64 reference of Linear -> ReLU -> Linear, s raw, w = sigmoid', () => {
    const p = initControllerParams(shape, 7);
    const net = new ControllerNetwork(p);
    const x = row(3, shape.inputSize);
    const out = net.predict(x);
    const ref = reference(p, x);
    expect(out.scale).toBeCloseTo(ref.s, 5);
    ref.w.forEach((w, l) => expect(out.layerWeights[l]).toBeCloseTo(w, 6));
    net.dispose();
  });

  it('predictBatch and predictAsync agree with predict', async () => {
    const p = initControllerParams(shape, 2);
    const net = new ControllerNetwork(p);
    const rows = 300; // more than one internal chunk
    const x = new Float32Array(rows * shape.inputSize);
    for (let r = 0; r < rows; r++) x.set(row(r, shape.inputSize), r * shape.inputSize);
    const batch = net.predictBatch(x, rows);
    for (const r of [0, 1, 255, 256, 299]) {
      const one = net.predict(x.subarray(r * shape.inputSize, (r + 1) * shape.inputSize));
      expect(batch.scales[r]).toBeCloseTo(one.scale, 5);
      expect(Array.from(batch.layerWeights.subarray(r * 5, r * 5 + 5))).toEqual(
        Array.from(one.layerWeights).map((v) => expect.closeTo(v, 6)),
      );
    }
    const a = await net.predictAsync(x.subarray(0, shape.inputSize));
    expect(a.scale).toBeCloseTo(batch.scales[0], 5);
    net.dispose();
  });

  it('applies stored input standardisation before the first layer', () => {
    const p = initControllerParams(shape, 3);
    const st = { mean: new Float32Array(shape.inputSize).fill(5), std: new Float32Array(shape.inputSize).fill(2) };
    const x = row(1, shape.inputSize, 10);
    const withSt = new ControllerNetwork(p, st).predict(x);
    const manual = new ControllerNetwork(p).predict(standardizeRows(x, st));
    expect(withSt.scale).toBe(manual.scale);
    expect(Array.from(withSt.layerWeights)).toEqual(Array.from(manual.layerWeights));
  });

  it('initialises deterministically from the seed (bit-identical), differently for another seed', () => {
    const a = initControllerParams({ inputSize: 576 * 10, hiddenWidth: 64, numLayers: 30 }, 42);
    const b = initControllerParams({ inputSize: 576 * 10, hiddenWidth: 64, numLayers: 30 }, 42);
    const c = initControllerParams({ inputSize: 576 * 10, hiddenWidth: 64, numLayers: 30 }, 43);
    expect(Buffer.from(a.w1.buffer).equals(Buffer.from(b.w1.buffer))).toBe(true);
    expect(Buffer.from(a.w2.buffer).equals(Buffer.from(b.w2.buffer))).toBe(true);
    expect(Buffer.from(a.w1.buffer).equals(Buffer.from(c.w1.buffer))).toBe(false);
    // torch-linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    const bound = 1 / Math.sqrt(5760);
    expect(Math.max(...a.w1.subarray(0, 10000).map(Math.abs))).toBeLessThanOrEqual(bound);
    expect(Math.max(...a.w1.subarray(0, 10000).map(Math.abs))).toBeGreaterThan(bound * 0.99);
    const he = initControllerParams(shape, 1, 'he-uniform');
    expect(Array.from(he.b1).every((v) => v === 0)).toBe(true);
    expect(() => initControllerParams(shape, 1, 'nope' as never)).toThrow(/unknown "nope"/);
  });

  it('gives clear errors for wrong input sizes, bad params and use after dispose', () => {
    const p = initControllerParams(shape, 1);
    const net = new ControllerNetwork(p);
    expect(() => net.predict(new Float32Array(23))).toThrow(/got 23 values, expected 1 x 24/);
    expect(() => net.predict([1, 2] as unknown as Float32Array)).toThrow(/Float32Array/);
    net.dispose();
    expect(() => net.predict(row(0, 24))).toThrow(/disposed/);
    const bad = initControllerParams(shape, 1);
    bad.w2[3] = NaN;
    expect(() => validateParams(bad)).toThrow(/w2: value at index 3 is NaN/);
    expect(() => new ControllerNetwork(bad)).toThrow(/w2/);
    expect(() => new ControllerNetwork({ ...p, b1: new Float32Array(3) })).toThrow(/b1: has 3 values, expected 16/);
  });
});
