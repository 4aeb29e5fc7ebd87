import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { decoderLayer, residualIndex } from '../../src/core/model/layer-index.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  checkDirectionFits,
  decodeDirectionFile,
  diffInMeansDirectionFile,
  embeddingDirectionFile,
  encodeDirectionFile,
  type DirectionFile,
  type DirectionMetadata,
} from '../../src/core/steering/direction-file.js';
import { importDirection } from '../../src/core/steering/direction-import.js';
import { importDirectionFile, readDirectionFile, writeDirectionFile } from '../../src/core/steering/direction-file-node.js';
import { decodeSafetensors, encodeSafetensors } from '../../src/core/steering/safetensors.js';
import { normalize } from '../../src/core/steering/vector.js';

const H = 4;
const L = 3;
const model = { hiddenSize: H, numLayers: L, modelId: 'test/tiny' };
const createdAt = '2026-11-26T18:00:00.000Z';

function meta(extra: Partial<DirectionMetadata> = {}): DirectionMetadata {
  return {
    format: 'steerlab-direction',
    version: 1,
    model_id: 'test/tiny',
    hidden_size: H,
    num_layers: L,
    method: 'embedding',
    source_matrix: 'unembedding',
    created_at: createdAt,
    ...extra,
  };
}

const d = normalize(Float32Array.from([1, 2, 3, 4]));

/** A .npy file, version 1.0, little-endian float32 (or float64), C order. */
function npy(values: number[], shape: number[], descr = '<f4'): Uint8Array {
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const bpe = descr.endsWith('8') ? 8 : 4;
  const out = new Uint8Array(10 + header.length + values.length * bpe);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0], 0);
  new DataView(out.buffer).setUint16(8, header.length, true);
  out.set(new TextEncoder().encode(header), 10);
  const view = new DataView(out.buffer, 10 + header.length);
  values.forEach((v, i) => (bpe === 8 ? view.setFloat64(8 * i, v, true) : view.setFloat32(4 * i, v, true)));
  return out;
}

describe('direction file', () => {
  it('round-trips an embedding direction with metadata', () => {
    const file: DirectionFile = { metadata: meta({ note: 'paper Eq. 7' }), direction: d };
    const out = decodeDirectionFile(encodeDirectionFile(file), model);
    expect(out.metadata).toEqual(file.metadata);
    expect(Array.from(out.direction)).toEqual(Array.from(d));
    // Readable by any safetensors reader: tensor "direction" [hidden], format in the metadata.
    const raw = decodeSafetensors(encodeDirectionFile(file));
    expect(raw.tensors.direction.shape).toEqual([H]);
    expect(raw.metadata.format).toBe('steerlab-direction');
    expect(JSON.parse(raw.metadata.steerlab).source_matrix).toBe('unembedding');
  });

  it('diff-in-means: per-layer "directions", direction chosen by layer when absent', () => {
    const directions = Float32Array.from({ length: L * H }, (_, i) => (i % H) + Math.floor(i / H) * 10 + 1);
    const m = meta({
      method: 'diff-in-means',
      source_matrix: undefined,
      layer: decoderLayer(1),
      position: 4,
      datasets: { harmful: 'advbench', harmless: 'alpaca' },
      sample_counts: { harmful_train: 128, harmless_train: 128 },
      seed: 7,
    });
    delete m.source_matrix;
    const bytes = encodeSafetensors(
      { directions: { dtype: 'F32', shape: [L, H], data: directions } },
      { format: 'steerlab-direction', version: '1', steerlab: JSON.stringify(m) },
    );
    const out = decodeDirectionFile(bytes, model);
    const row1 = normalize(directions.subarray(H, 2 * H));
    for (let h = 0; h < H; h++) expect(out.direction[h]).toBeCloseTo(row1[h], 7);
    expect(out.directions && Array.from(out.directions)).toEqual(Array.from(directions));
    expect(out.metadata.sample_counts).toEqual({ harmful_train: 128, harmless_train: 128 });
    // And the full file (direction + directions + raw) round-trips.
    const again = decodeDirectionFile(encodeDirectionFile({ ...out, rawDirection: directions.slice(H, 2 * H) }));
    expect(again.rawDirection && Array.from(again.rawDirection)).toEqual([11, 12, 13, 14]);
  });

  it('refuses a model of another shape', () => {
    const bytes = encodeDirectionFile({ metadata: meta(), direction: d });
    expect(() => decodeDirectionFile(bytes, { hiddenSize: 8, numLayers: L, modelId: 'other/m' }, 'd.safetensors')).toThrow(
      /^d\.safetensors: direction made for test\/tiny has hidden size 4, but the loaded model other\/m has hidden size 8/,
    );
    expect(() => decodeDirectionFile(bytes, { hiddenSize: H, numLayers: 16 })).toThrow(/has 3 layers, but the loaded model has 16/);
    // Same shape: the shape check passes; which model it was made for is checked against the model identity
    // (src/core/method/artifacts.ts, test/unit/model-identity.test.ts).
    expect(checkDirectionFits(decodeDirectionFile(bytes), { hiddenSize: H, numLayers: L, modelId: 'test/tiny-q4' })).toEqual([]);
  });

  it('refuses malformed direction files', () => {
    const enc = (m: unknown, tensors: Record<string, { shape: number[]; data: Float32Array }>) =>
      encodeSafetensors(
        Object.fromEntries(Object.entries(tensors).map(([k, t]) => [k, { dtype: 'F32' as const, ...t }])),
        { format: 'steerlab-direction', version: '1', steerlab: JSON.stringify(m) },
      );
    const cases: [unknown, Record<string, { shape: number[]; data: Float32Array }>, RegExp][] = [
      [meta(), { direction: { shape: [H], data: Float32Array.from([1, 1, 1, 1]) } }, /"direction" must be a unit vector, its norm is 2/],
      [meta(), { direction: { shape: [5], data: normalize(Float32Array.from([1, 1, 1, 1, 1])) } }, /shape \[5\], expected \[4\]/],
      [meta(), {}, /neither a "direction"/],
      [meta({ method: 'diff-in-means' }), { directions: { shape: [L, H], data: new Float32Array(L * H).fill(1) } }, /no metadata layer/],
      [{ ...meta(), method: 'magic' }, { direction: { shape: [H], data: d } }, /method is "magic", expected one of embedding, diff-in-means, import/],
      [{ ...meta(), source_matrix: undefined }, { direction: { shape: [H], data: d } }, /source_matrix is required for method 'embedding'/],
      [{ ...meta(), version: 9 }, { direction: { shape: [H], data: d } }, /version 9 is newer/],
      [{ ...meta(), layer: 3 }, { direction: { shape: [H], data: d } }, /layer 3 is out of range \[0, 3\)/],
      [{ ...meta(), hidden_size: 0 }, { direction: { shape: [H], data: d } }, /hidden_size must be a positive integer/],
      [{ ...meta(), created_at: 'yesterday' }, { direction: { shape: [H], data: d } }, /created_at must be an ISO 8601 time/],
      [meta(), { direction: { shape: [H], data: d }, bias: { shape: [1], data: new Float32Array(1) } }, /unexpected tensors "bias"/],
    ];
    for (const [m, tensors, re] of cases) expect(() => decodeDirectionFile(enc(m, tensors)), String(re)).toThrow(re);
    const other = encodeSafetensors({ direction: { dtype: 'F32', shape: [H], data: d } });
    expect(() => decodeDirectionFile(other)).toThrow(/not a Steerlab direction file.*use importDirection/);
    // NaN inside the tensor data is refused by the safetensors layer.
    const nan = enc(meta(), { direction: { shape: [H], data: d } });
    new DataView(nan.buffer).setFloat32(nan.length - 4, NaN, true);
    expect(() => decodeDirectionFile(nan)).toThrow(/"direction": value at index 3 is NaN/);
  });
});

describe('building files from the methods', () => {
  it('embedding direction file', () => {
    const f = embeddingDirectionFile(d, 'input-embedding', { ...model, createdAt, note: 'released-code variant' });
    const back = decodeDirectionFile(encodeDirectionFile(f), model);
    expect(back.metadata).toMatchObject({ method: 'embedding', source_matrix: 'input-embedding', note: 'released-code variant' });
    expect(Array.from(back.direction)).toEqual(Array.from(d));
  });

  it('diff-in-means file: residual index k -> steering row k - 1, per-layer rows from indices 1..L', () => {
    const vec = (k: number) => Float32Array.from([k, 1, 0, 0]);
    const selected = { layer: residualIndex(2), position: 3, vector: vec(2), direction: normalize(vec(2)) };
    const f = diffInMeansDirectionFile(selected, vec, { ...model, createdAt, seed: 1, sampleCounts: { harmful_train: 128 } });
    const back = decodeDirectionFile(encodeDirectionFile(f), model);
    expect(back.metadata).toMatchObject({ method: 'diff-in-means', layer: 1, position: 3, seed: 1 });
    expect(Array.from(back.directions!)).toEqual([1, 1, 0, 0, 2, 1, 0, 0, 3, 1, 0, 0]);
    expect(Array.from(back.rawDirection!)).toEqual([2, 1, 0, 0]);
    expect(() => diffInMeansDirectionFile({ ...selected, layer: residualIndex(0) }, null, model)).toThrow(/residual index 0 has no steering row/);
  });
});

describe('import of a user direction', () => {
  const opts = { ...model, modelId: 'test/tiny', createdAt };

  it('imports a JSON array, normalises it and keeps the raw vector', () => {
    const f = importDirection(new TextEncoder().encode(' [3, 0, 4, 0]'), 'v.json', opts);
    expect(Array.from(f.direction)).toEqual([0.6000000238418579, 0, 0.800000011920929, 0]);
    expect(Array.from(f.rawDirection!)).toEqual([3, 0, 4, 0]);
    expect(f.metadata).toMatchObject({ method: 'import', source_file: 'v.json', source_norm: 5, hidden_size: H, num_layers: L });
    const obj = importDirection(new TextEncoder().encode('{"direction": [0, 0, 0, 2]}'), 'o.json', opts);
    expect(Array.from(obj.direction)).toEqual([0, 0, 0, 1]);
    // Encodes as a valid direction file.
    expect(decodeDirectionFile(encodeDirectionFile(f), model).metadata.method).toBe('import');
  });

  it('imports .npy float32 and float64', () => {
    expect(Array.from(importDirection(npy([0, 2, 0, 0], [4]), 'v.npy', opts).direction)).toEqual([0, 1, 0, 0]);
    expect(Array.from(importDirection(npy([0, 0, -3, 0], [4], '<f8'), 'v.npy', opts).direction)).toEqual([0, 0, -1, 0]);
    expect(() => importDirection(npy([1, 2, 3, 4], [4], '>f4'), 'v.npy', opts)).toThrow(/dtype >f4 is not supported/);
    const full = npy([1, 2, 3, 4], [4]);
    const truncated = full.subarray(0, full.length - 4);
    expect(() => importDirection(truncated, 'v.npy', opts)).toThrow(/data has \d+ bytes, shape \(4\) of <f4 needs 16/);
  });

  it('imports safetensors: tensor "direction", or the only tensor; a Steerlab file is kept as is', () => {
    const one = encodeSafetensors({ refusal_dir: { dtype: 'F32', shape: [H], data: Float32Array.from([0, 0, 5, 0]) } });
    expect(Array.from(importDirection(one, 'r.safetensors', opts).direction)).toEqual([0, 0, 1, 0]);
    const two = encodeSafetensors({
      a: { dtype: 'F32', shape: [H], data: Float32Array.from([1, 0, 0, 0]) },
      b: { dtype: 'F32', shape: [H], data: Float32Array.from([0, 1, 0, 0]) },
    });
    expect(() => importDirection(two, 'two.safetensors', opts)).toThrow(/cannot tell which tensor is the direction: found "a", "b"/);
    const ours = encodeDirectionFile({ metadata: meta(), direction: d });
    expect(importDirection(ours, 'ours.safetensors', opts).metadata.method).toBe('embedding');
  });

  it('takes one row of a per-layer array when asked', () => {
    const rows = JSON.stringify([
      [1, 0, 0, 0],
      [0, 2, 0, 0],
      [0, 0, 3, 0],
    ]);
    const bytes = new TextEncoder().encode(rows);
    expect(() => importDirection(bytes, 'l.json', opts)).toThrow(/one vector per layer \[3, 4\]; choose one with the layer option \(0..2\)/);
    const f = importDirection(bytes, 'l.json', { ...opts, layer: 2 });
    expect(Array.from(f.direction)).toEqual([0, 0, 1, 0]);
    expect(f.metadata.layer).toBe(2);
    expect(f.directions?.length).toBe(L * H);
  });

  it('refuses vectors that do not fit the model, with clear errors', () => {
    const enc = (s: string) => new TextEncoder().encode(s);
    expect(() => importDirection(enc('[1, 2, 3]'), 'v.json', opts)).toThrow(/^v\.json: the vector has 3 values, but the model's hidden size is 4/);
    expect(() => importDirection(enc('[[1,2,3,4],[1,2,3,4]]'), 'v.json', { ...opts, layer: 0 })).toThrow(/has 2 rows; a per-layer array needs one row per decoder layer \(3\)/);
    expect(() => importDirection(enc('[1, "a", 3, 4]'), 'v.json', opts)).toThrow(/direction\[1\] is "a", expected a finite number/);
    expect(() => importDirection(enc('[0, 0, 0, 0]'), 'v.json', opts)).toThrow(/imported vector is zero/);
    expect(() => importDirection(enc('[1, 2'), 'v.json', opts)).toThrow(/not valid JSON/);
    expect(() => importDirection(new Uint8Array([1, 2, 3]), 'x.bin', opts)).toThrow(/unrecognised file/);
    expect(() => importDirection(npy([1, 2, 3, 4, 5], [5]), 'v.npy', opts)).toThrow(/has 5 values, but the model's hidden size is 4/);
  });
});

describe('node helpers', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'steerlab-direction-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes atomically (no temp file left) and reads back with the fit check', async () => {
    const path = join(dir, 'direction.safetensors');
    await writeDirectionFile(path, { metadata: meta(), direction: d });
    await writeDirectionFile(path, { metadata: meta({ note: 'second' }), direction: d }); // overwrite
    expect(await readdir(dir)).toEqual(['direction.safetensors']);
    const back = await readDirectionFile(path, model);
    expect(back.metadata.note).toBe('second');
    await expect(readDirectionFile(path, { hiddenSize: H, numLayers: 2 })).rejects.toThrow(/direction\.safetensors: direction made for test\/tiny has 3 layers/);
    // A failing write leaves the old file intact and no temp file behind.
    await expect(writeDirectionFile(path, { metadata: meta(), direction: Float32Array.from([1, 1, 1, 1]) })).rejects.toThrow(/unit vector/);
    expect((await readDirectionFile(path)).metadata.note).toBe('second');
    expect(await readdir(dir)).toEqual(['direction.safetensors']);
    expect((await readFile(path)).length).toBeGreaterThan(0);
  });

  it('imports a file from disk', async () => {
    const path = join(dir, 'v.npy');
    await writeFile(path, npy([0, 0, 0, 9], [4]));
    const f = await importDirectionFile(path, { ...model, modelId: 'test/tiny' });
    expect(Array.from(f.direction)).toEqual([0, 0, 0, 1]);
    await rm(path);
  });
});
