import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ControllerFormatError,
  ControllerNetwork,
  decodeController,
  encodeController,
  syntheticActivations,
  trainController,
  type Controller,
} from '../../src/core/controller/index.js';
import { loadControllerFile, saveControllerFile } from '../../src/core/controller/node-io.js';
import { decodeSafetensors, encodeSafetensors } from '../../src/core/steering/safetensors.js';

const model = { modelId: 'toy-6x32', numLayers: 6, hiddenSize: 32 };
let controller: Controller;
let standardized: Controller;
let dir: string;

beforeAll(async () => {
  const data = syntheticActivations({ rows: 40, inputSize: 64, seed: 3 });
  const opts = { ...model, hiddenWidth: 16, epochs: 2, learningRate: 1e-3, directionId: 'refusal-emb', trainingSetDescription: 'synthetic 20+20' };
  controller = await trainController(data, opts);
  standardized = await trainController(data, { ...opts, standardize: true });
  dir = await mkdtemp(path.join(os.tmpdir(), 'steerlab-controller-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function bits(a: Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

function expectSame(a: Controller, b: Controller): void {
  expect(b.metadata).toEqual(a.metadata);
  for (const k of ['w1', 'b1', 'w2', 'b2'] as const) expect(bits(b.params[k]).equals(bits(a.params[k]))).toBe(true);
  expect(b.params.shape).toEqual(a.params.shape);
  if (a.standardization) {
    expect(bits(b.standardization!.mean).equals(bits(a.standardization.mean))).toBe(true);
    expect(bits(b.standardization!.std).equals(bits(a.standardization.std))).toBe(true);
  } else {
    expect(b.standardization).toBeNull();
  }
}

/** Re-encode a controller file with edited metadata/tensors (to build malformed files). */
function tamper(c: Controller, edit: (meta: Record<string, string>, tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }>) => void): Uint8Array {
  const d = decodeSafetensors(encodeController(c));
  const tensors = Object.fromEntries(Object.entries(d.tensors).map(([k, t]) => [k, { dtype: 'F32' as const, shape: t.shape, data: t.data }]));
  edit(d.metadata, tensors);
  return encodeSafetensors(tensors, d.metadata);
}

function editMeta(c: Controller, patch: Record<string, unknown>): Uint8Array {
  return tamper(c, (m) => {
    m.controller = JSON.stringify({ ...JSON.parse(m.controller), ...patch });
  });
}

describe('controller file format', () => {
  it('round-trips bit-exactly (with and without standardisation), and re-encodes to identical bytes', () => {
    for (const c of [controller, standardized]) {
      const bytes = encodeController(c);
      const back = decodeController(bytes);
      expectSame(c, back);
      expect(Buffer.from(encodeController(back)).equals(Buffer.from(bytes))).toBe(true);
    }
  });

  it('stores PyTorch nn.Linear names and [out, in] layout plus readable metadata', () => {
    const d = decodeSafetensors(encodeController(standardized));
    expect(d.tensors['fc1.weight'].shape).toEqual([16, 64]);
    expect(d.tensors['fc2.weight'].shape).toEqual([7, 16]);
    expect(d.tensors['fc2.bias'].shape).toEqual([7]);
    expect(d.tensors['input.mean'].shape).toEqual([64]);
    // fc1.weight[j, i] = w1[i, j]
    expect(d.tensors['fc1.weight'].data[3 * 64 + 5]).toBe(standardized.params.w1[5 * 16 + 3]);
    expect(d.metadata.format).toBe('steerlab-controller');
    expect(d.metadata.version).toBe('1');
    const meta = JSON.parse(d.metadata.controller);
    expect(meta).toMatchObject({ model_id: 'toy-6x32', num_layers: 6, hidden_size: 32, input_layers: [4, 5], alpha: 2, direction_id: 'refusal-emb' });
    expect(meta.metrics.epochs).toHaveLength(2);
    expect(typeof meta.created_at).toBe('string');
  });

  it('a loaded controller predicts exactly like the trained one', () => {
    const back = decodeController(encodeController(standardized));
    const row = syntheticActivations({ rows: 1, inputSize: 64, seed: 8 }).x;
    const a = new ControllerNetwork(standardized.params, standardized.standardization).predict(row);
    const b = new ControllerNetwork(back.params, back.standardization).predict(row);
    expect(b.scale).toBe(a.scale);
    expect(bits(b.layerWeights).equals(bits(a.layerWeights))).toBe(true);
  });

  it('refuses NaN / Inf weights with the tensor name', () => {
    // The shared writer refuses NaN, so write a valid file and patch one weight's bytes.
    const good = encodeController(controller);
    const headerLen = Number(new DataView(good.buffer, good.byteOffset).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(good.subarray(8, 8 + headerLen)));
    const at = 8 + headerLen + header['fc2.bias'].data_offsets[0] + 4;
    const bad = good.slice();
    new DataView(bad.buffer).setFloat32(at, Infinity, true);
    expect(() => decodeController(bad)).toThrow(ControllerFormatError);
    expect(() => decodeController(bad)).toThrow(/fc2\.bias.*index 1 is Infinity/);
    new DataView(bad.buffer).setFloat32(at, NaN, true);
    expect(() => decodeController(bad)).toThrow(/fc2\.bias.*NaN/);
  });

  it('refuses tensors whose shapes do not match the metadata, and missing or extra tensors', () => {
    const wrongShape = tamper(controller, (_m, t) => {
      t['fc1.weight'] = { dtype: 'F32', shape: [16, 63], data: new Float32Array(16 * 63) };
    });
    expect(() => decodeController(wrongShape)).toThrow(/"fc1\.weight" has shape \[16, 63\], expected \[16, 64\]/);
    const missing = tamper(controller, (_m, t) => {
      delete t['fc2.bias'];
    });
    expect(() => decodeController(missing)).toThrow(/"fc2\.bias" is missing/);
    const extra = tamper(controller, (_m, t) => {
      t['fc3.weight'] = { dtype: 'F32', shape: [1], data: new Float32Array(1) };
    });
    expect(() => decodeController(extra)).toThrow(/unexpected tensors "fc3\.weight"/);
    // Metadata claiming another hidden size no longer fits the stored tensors.
    expect(() => decodeController(editMeta(controller, { hidden_size: 48 }))).toThrow(/"fc1\.weight" has shape \[16, 64\], expected \[16, 96\]/);
    expect(() => decodeController(editMeta(controller, { num_layers: 8 }))).toThrow(/"fc2\.weight" has shape \[7, 16\], expected \[9, 16\]/);
  });

  it('refuses a controller made for another model (hidden size, layer count, model id)', () => {
    const bytes = encodeController(controller);
    expect(decodeController(bytes, { expect: { numLayers: 6, hiddenSize: 32, modelId: 'toy-6x32' } }).metadata.model_id).toBe('toy-6x32');
    expect(() => decodeController(bytes, { expect: { hiddenSize: 576 } })).toThrow(
      /made for another model.*hidden size 32 but the model's hidden size is 576/,
    );
    expect(() => decodeController(bytes, { expect: { numLayers: 30 } })).toThrow(/6 layer weights but the model has 30 layers/);
    expect(() => decodeController(bytes, { expect: { modelId: 'other' } })).toThrow(/trained on model "toy-6x32", not "other"/);
    expect(decodeController(bytes, { expect: { modelId: 'other', allowOtherModelId: true } }).metadata.num_layers).toBe(6);
  });

  it('refuses wrong format, unsupported version, bad metadata fields and non-safetensors bytes', () => {
    expect(() => decodeController(tamper(controller, (m) => (m.format = 'steerlab-direction')))).toThrow(
      /"format" is "steerlab-direction", expected "steerlab-controller"/,
    );
    expect(() => decodeController(tamper(controller, (m) => (m.version = '2')))).toThrow(/version "2" is not supported, this build reads version 1/);
    expect(() => decodeController(editMeta(controller, { version: 2 }))).toThrow(/format version 2 is not supported/);
    expect(() => decodeController(editMeta(controller, { alpha: 'strong' }))).toThrow(/"alpha" must be a finite number, got "strong"/);
    expect(() => decodeController(editMeta(controller, { loss: 'hinge' }))).toThrow(/"loss" must be one of mse, bce/);
    expect(() => decodeController(editMeta(controller, { input_layers: [5, 4] }))).toThrow(/strictly ascending/);
    expect(() => decodeController(editMeta(controller, { standardization: 'per-feature' }))).toThrow(/"input\.mean" is missing/);
    expect(() => decodeController(tamper(controller, (m) => (m.controller = '{oops')))).toThrow(/not valid JSON/);
    expect(() => decodeController(new TextEncoder().encode('hello, not a controller'))).toThrow(ControllerFormatError);
    expect(() => decodeController(new Uint8Array(3))).toThrow(/not a valid controller file.*too short/);
  });

  it('refuses to encode inconsistent or non-finite controllers', () => {
    const bad = { ...controller, params: { ...controller.params, b2: controller.params.b2.slice() } };
    bad.params.b2[0] = NaN;
    expect(() => encodeController(bad)).toThrow(/b2: value at index 0 is NaN/);
    expect(() => encodeController({ ...controller, standardization: standardized.standardization })).toThrow(/standardization is "none"/);
  });
});

describe('controller files on disk (Node)', () => {
  it('saves atomically (no temp files left), overwrites, and loads back bit-exactly', async () => {
    const file = path.join(dir, 'ctl.safetensors');
    await saveControllerFile(file, controller);
    await saveControllerFile(file, standardized);
    expect(await readdir(dir)).toEqual(['ctl.safetensors']);
    expectSame(standardized, await loadControllerFile(file, { expect: { numLayers: 6, hiddenSize: 32 } }));
  });

  it('names the file in load errors', async () => {
    await expect(loadControllerFile(path.join(dir, 'missing.safetensors'))).rejects.toThrow(/cannot read controller file .*missing\.safetensors/);
    const file = path.join(dir, 'other-model.safetensors');
    await writeFile(file, encodeController(controller));
    await expect(loadControllerFile(file, { expect: { hiddenSize: 576 } })).rejects.toThrow(/other-model\.safetensors: made for another model/);
    const broken = path.join(dir, 'broken.safetensors');
    const bytes = await readFile(file);
    await writeFile(broken, bytes.subarray(0, bytes.length - 10));
    await expect(loadControllerFile(broken)).rejects.toThrow(/broken\.safetensors.*(out of range|truncated)/);
  });

  it('decodes a Node Buffer (whose slice() is a view) correctly', () => {
    const bytes = encodeController(controller);
    // A Buffer carved out of a larger pool, as fs.readFile may return.
    const pool = Buffer.alloc(bytes.length + 100);
    pool.set(bytes, 50);
    expectSame(controller, decodeController(pool.subarray(50, 50 + bytes.length)));
  });
});
