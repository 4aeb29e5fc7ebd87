import { describe, expect, it } from 'vitest';
import { decodeSafetensors, encodeSafetensors, SafetensorsError } from '../../src/core/steering/safetensors.js';

/** Build a safetensors file by hand from a header object and a data buffer (to craft malformed files). */
function craft(header: unknown, data: Uint8Array = new Uint8Array(0), headerLenOverride?: number): Uint8Array {
  const h = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLenOverride ?? h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

function f32bytes(values: number[]): Uint8Array {
  return new Uint8Array(Float32Array.from(values).buffer);
}

describe('safetensors', () => {
  it('round-trips tensors and metadata, with an 8-byte aligned header', () => {
    const a = Float32Array.from([1, -2.5, 3e-8, 1e30, 0, -0]);
    const b = Float32Array.from([7]);
    const bytes = encodeSafetensors(
      { b: { dtype: 'F32', shape: [1], data: b }, a: { dtype: 'F32', shape: [2, 3], data: a } },
      { format: 'x', note: 'héllo' },
    );
    const headerLen = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect(headerLen % 8).toBe(0);
    const out = decodeSafetensors(bytes);
    expect(out.metadata).toEqual({ format: 'x', note: 'héllo' });
    expect(out.tensors.a.shape).toEqual([2, 3]);
    expect(out.tensors.a.dtype).toBe('F32');
    expect(Array.from(out.tensors.a.data)).toEqual(Array.from(a));
    expect(Array.from(out.tensors.b.data)).toEqual([7]);
    // Deterministic: same input, same bytes.
    const again = encodeSafetensors(
      { a: { dtype: 'F32', shape: [2, 3], data: a }, b: { dtype: 'F32', shape: [1], data: b } },
      { format: 'x', note: 'héllo' },
    );
    expect(Buffer.from(again).equals(Buffer.from(bytes))).toBe(true);
  });

  it('encodes a subarray view without its neighbours', () => {
    const big = Float32Array.from([9, 1, 2, 9]);
    const out = decodeSafetensors(encodeSafetensors({ v: { dtype: 'F32', shape: [2], data: big.subarray(1, 3) } }));
    expect(Array.from(out.tensors.v.data)).toEqual([1, 2]);
  });

  it('reads F16 and BF16 as float32', () => {
    // F16: 1.0 = 0x3c00, -2.0 = 0xc000, 0.5 = 0x3800; BF16: 1.0 = 0x3f80, -3.0 = 0xc040
    const f16 = new Uint8Array(new Uint16Array([0x3c00, 0xc000, 0x3800]).buffer);
    const bf16 = new Uint8Array(new Uint16Array([0x3f80, 0xc040]).buffer);
    const data = new Uint8Array(10);
    data.set(f16, 0);
    data.set(bf16, 6);
    const bytes = craft({ h: { dtype: 'F16', shape: [3], data_offsets: [0, 6] }, g: { dtype: 'BF16', shape: [2], data_offsets: [6, 10] } }, data);
    const out = decodeSafetensors(bytes);
    expect(Array.from(out.tensors.h.data)).toEqual([1, -2, 0.5]);
    expect(out.tensors.h.dtype).toBe('F16');
    expect(Array.from(out.tensors.g.data)).toEqual([1, -3]);
  });

  it('refuses bad inputs to the encoder', () => {
    expect(() => encodeSafetensors({ a: { dtype: 'F32', shape: [3], data: new Float32Array(2) } })).toThrow(/needs 3 values, data has 2/);
    expect(() => encodeSafetensors({ a: { dtype: 'F32', shape: [2], data: Float32Array.from([1, NaN]) } })).toThrow(/index 1 is NaN/);
    expect(() => encodeSafetensors({ __metadata__: { dtype: 'F32', shape: [0], data: new Float32Array(0) } })).toThrow(/reserved/);
    expect(() => encodeSafetensors({}, { k: 3 as unknown as string })).toThrow(/metadata "k" must be a string/);
  });

  it('gives clear errors on malformed files', () => {
    const good = encodeSafetensors({ a: { dtype: 'F32', shape: [4], data: Float32Array.from([1, 2, 3, 4]) } });
    const cases: [string, Uint8Array, RegExp][] = [
      ['too short', new Uint8Array(5), /too short/],
      ['truncated data', good.subarray(0, good.length - 4), /out of range.*truncated/],
      ['header length past end', craft({}, new Uint8Array(0), 1000), /header length 1000 runs past the end/],
      ['bad JSON', craft('{"a": [}'), /not valid JSON/],
      ['not an object', craft('[1, 2]'), /JSON object/],
      ['unknown dtype', craft({ a: { dtype: 'F13', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4)), /unknown dtype "F13"/],
      ['unsupported dtype', craft({ a: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }, new Uint8Array(8)), /I64 is not supported/],
      ['shape/size mismatch', craft({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)), /needs 12 bytes, data_offsets span 8/],
      ['offset out of range', craft({ a: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, new Uint8Array(8)), /out of range/],
      ['end before begin', craft({ a: { dtype: 'F32', shape: [0], data_offsets: [4, 0] } }, new Uint8Array(4)), /end before begin/],
      [
        'overlap',
        craft({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, new Uint8Array(12)),
        /"a" and "b" overlap/,
      ],
      ['hole', craft({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, new Uint8Array(8)), /unused bytes 0..4/],
      ['trailing bytes', craft({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(8)), /trailing/],
      ['bad shape', craft({ a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, new Uint8Array(4)), /non-negative integers/],
      ['bad metadata', craft({ __metadata__: { k: 1 } }), /metadata "k" must be a string/],
      ['NaN data', craft({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, f32bytes([1, NaN])), /"a": value at index 1 is NaN/],
    ];
    for (const [name, bytes, re] of cases) {
      let err: unknown;
      try {
        decodeSafetensors(bytes, { source: 'x.safetensors' });
      } catch (e) {
        err = e;
      }
      expect(err, name).toBeInstanceOf(SafetensorsError);
      expect((err as Error).message, name).toMatch(re);
      expect((err as Error).message, name).toMatch(/^x\.safetensors: /);
    }
  });

  it('accepts NaN only when asked', () => {
    const bytes = craft({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, f32bytes([1, Infinity]));
    expect(decodeSafetensors(bytes, { allowNonFinite: true }).tensors.a.data[1]).toBe(Infinity);
  });

  it('does not alias the input bytes', () => {
    const bytes = encodeSafetensors({ a: { dtype: 'F32', shape: [1], data: Float32Array.from([5]) } });
    const out = decodeSafetensors(bytes);
    bytes.fill(0);
    expect(out.tensors.a.data[0]).toBe(5);
  });

  it('decodes from a Node Buffer that is a view into a larger pool (what fs.readFile returns)', () => {
    const bytes = encodeSafetensors({ a: { dtype: 'F32', shape: [3], data: Float32Array.from([1, 2, 3]) } });
    const pool = Buffer.alloc(bytes.length + 37, 7);
    pool.set(bytes, 13);
    const view = pool.subarray(13, 13 + bytes.length);
    const out = decodeSafetensors(view);
    expect(out.tensors.a.data).toHaveLength(3);
    expect(Array.from(out.tensors.a.data)).toEqual([1, 2, 3]);
  });
});
