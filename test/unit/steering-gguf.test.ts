/**
 * GGUF control-vector writer: byte layout of GGUF v3 (checked by hand-reading the header, not only by our own
 * reader), llama.cpp's rules (direction.{k}, k >= 1, F32, 1-D), and bad input.
 */
import { describe, expect, test } from 'vitest';
import { decodeGguf, encodeControlVector, encodeGguf, GgufError, GGUF_ALIGNMENT } from '../../src/core/steering/gguf.js';

function matrix(L: number, H: number, f: (l: number, h: number) => number): Float32Array {
  const m = new Float32Array(L * H);
  for (let l = 0; l < L; l++) for (let h = 0; h < H; h++) m[l * H + h] = f(l, h);
  return m;
}

describe('GGUF writer', () => {
  test('header bytes follow GGUF v3 by hand', () => {
    const bytes = encodeGguf({ 'general.architecture': { type: 'string', value: 'controlvector' } }, [{ name: 'direction.1', dims: [3], data: new Float32Array([1, 2, 3]) }]);
    const v = new DataView(bytes.buffer);
    expect(new TextDecoder().decode(bytes.subarray(0, 4))).toBe('GGUF');
    expect(v.getUint32(4, true)).toBe(3);
    expect(v.getBigUint64(8, true)).toBe(1n); // tensors
    expect(v.getBigUint64(16, true)).toBe(1n); // kv pairs
    expect(v.getBigUint64(24, true)).toBe(BigInt('general.architecture'.length));
    expect(new TextDecoder().decode(bytes.subarray(32, 32 + 20))).toBe('general.architecture');
    expect(v.getUint32(52, true)).toBe(8); // GGUF_TYPE_STRING
    // data section aligned: file length is a multiple of the alignment and the last tensor's floats sit at its start
    expect(bytes.length % GGUF_ALIGNMENT).toBe(0);
    const dataStart = bytes.length - GGUF_ALIGNMENT;
    expect(v.getFloat32(dataStart, true)).toBe(1);
    expect(v.getFloat32(dataStart + 8, true)).toBe(3);
  });

  test('round trip of metadata and several tensors, each aligned', () => {
    const t = [
      { name: 'a', dims: [5], data: Float32Array.from([1, -2, 3.5, 4, 5]) },
      { name: 'b', dims: [2, 3], data: Float32Array.from([6, 7, 8, 9, 10, 11]) },
    ];
    const d = decodeGguf(encodeGguf({ s: { type: 'string', value: 'héllo' }, u: { type: 'uint32', value: 7 }, f: { type: 'float32', value: 0.5 }, i: { type: 'int32', value: -3 } }, t));
    expect(d.metadata).toEqual({ s: 'héllo', u: 7, f: 0.5, i: -3 });
    expect(d.tensors.map((x) => x.name)).toEqual(['a', 'b']);
    expect(Array.from(d.tensors[0]!.data)).toEqual([1, -2, 3.5, 4, 5]);
    expect(d.tensors[1]!.dims).toEqual([2, 3]);
    expect(Array.from(d.tensors[1]!.data)).toEqual([6, 7, 8, 9, 10, 11]);
  });

  test('bad tensors are refused with the tensor named', () => {
    expect(() => encodeGguf({}, [{ name: 'x', dims: [3], data: new Float32Array(2) }])).toThrow(/"x".*need 3 values/);
    expect(() => encodeGguf({}, [{ name: 'x', dims: [1], data: new Float32Array([NaN]) }])).toThrow(/finite/);
    expect(() => encodeGguf({}, [{ name: 'x', dims: [1], data: new Float32Array(1) }, { name: 'x', dims: [1], data: new Float32Array(1) }])).toThrow(/twice/);
    expect(() => decodeGguf(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]))).toThrow(GgufError);
  });
});

describe('llama.cpp control vector', () => {
  test('direction.{l} per non-zero row from 1 on, weights multiplied in, metadata as llama.cpp/repeng write it', () => {
    const L = 4;
    const H = 6;
    const w = [0.9, 0.1, 0.5, 0];
    const m = matrix(L, H, (l, h) => w[l]! * 2 * (h + 1));
    const out = encodeControlVector(m, { numLayers: L, hiddenSize: H, modelHint: 'llama' });
    expect(out.layers).toEqual([1, 2]);
    expect(out.warnings.join(' ')).toMatch(/row 0/);
    const d = decodeGguf(out.bytes);
    expect(d.metadata['general.architecture']).toBe('controlvector');
    expect(d.metadata['controlvector.model_hint']).toBe('llama');
    expect(d.metadata['controlvector.layer_count']).toBe(2);
    expect(d.tensors.map((t) => t.name)).toEqual(['direction.1', 'direction.2']);
    for (const t of d.tensors) {
      const l = Number(t.name.split('.')[1]);
      expect(t.dims).toEqual([H]);
      expect(Array.from(t.data)).toEqual(Array.from(m.subarray(l * H, (l + 1) * H)));
    }
  });

  test('wrong size, empty and unnamed inputs are refused', () => {
    expect(() => encodeControlVector(new Float32Array(5), { numLayers: 2, hiddenSize: 3, modelHint: 'x' })).toThrow(/2 x hiddenSize 3 = 6/);
    expect(() => encodeControlVector(new Float32Array(6), { numLayers: 2, hiddenSize: 3, modelHint: 'x' })).toThrow(/empty/);
    expect(() => encodeControlVector(new Float32Array(6).fill(1), { numLayers: 2, hiddenSize: 3, modelHint: ' ' })).toThrow(/modelHint/);
  });
});
