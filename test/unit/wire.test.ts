import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { NodeProtoSchema, StringStringEntryProtoSchema, TensorProtoSchema } from 'onnx-buf';
import { describe, expect, it } from 'vitest';
import { ChunkList, WireError, fieldView, payload, readVarint, scanMessage, stringField, varintField } from '../../src/core/onnx/wire.js';

describe('protobuf wire scanning', () => {
  it('reads varints and refuses truncated or over-long ones', () => {
    expect(readVarint(Uint8Array.from([0x96, 0x01]), 0, 2)).toEqual({ value: 150, next: 2 });
    expect(readVarint(Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0x0f]), 0, 5).value).toBe(2 ** 32 - 1);
    expect(() => readVarint(Uint8Array.from([0x96]), 0, 1)).toThrow(WireError);
    expect(() => readVarint(new Uint8Array(11).fill(0x80), 0, 11)).toThrow(/longer than 10 bytes/);
  });

  it('finds every field with exact byte ranges (all wire types) and matches @bufbuild/protobuf', () => {
    const t = create(TensorProtoSchema, {
      name: 'w',
      dims: [3n, 4n],
      dataType: 1,
      floatData: [1, 2, 3],
      doubleData: [0.5],
      rawData: Uint8Array.from([9, 8, 7]),
      externalData: [create(StringStringEntryProtoSchema, { key: 'location', value: 'x.bin' })],
    });
    const bytes = toBinary(TensorProtoSchema, t);
    const fields = scanMessage(bytes);
    expect(fields[0].start).toBe(0);
    expect(fields.at(-1)!.end).toBe(bytes.length);
    for (let i = 1; i < fields.length; i++) expect(fields[i].start).toBe(fields[i - 1].end);
    expect(stringField(bytes, fields.find((f) => f.no === 8)!)).toBe('w');
    expect(varintField(bytes, fields.find((f) => f.no === 2)!)).toBe(1);
    expect(payload(bytes, fields.find((f) => f.no === 9)!)).toEqual(Uint8Array.from([9, 8, 7]));
    // re-assembling the field views gives back the same message
    const again = new ChunkList();
    for (const f of fields) again.push(fieldView(bytes, f));
    expect(fromBinary(TensorProtoSchema, again.concat())).toEqual(t);
  });

  it('bounds-checks every length without allocating', () => {
    const huge = Uint8Array.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x01]);
    expect(() => scanMessage(huge)).toThrow(/declares \d+ bytes but only 1 remain/);
    const node = toBinary(NodeProtoSchema, create(NodeProtoSchema, { opType: 'Add', input: ['a', 'b'], output: ['c'] }));
    for (let n = 1; n < node.length; n++) {
      let ok = true;
      try {
        scanMessage(node.subarray(0, n));
      } catch (err) {
        expect(err).toBeInstanceOf(WireError);
        ok = false;
      }
      // a cut exactly between fields is valid protobuf; anywhere else it must fail
      const boundaries = scanMessage(node).map((f) => f.end);
      expect(ok).toBe(boundaries.includes(n));
    }
    expect(() => scanMessage(Uint8Array.from([0x0b]))).toThrow(/wire type 3/); // groups are not ONNX
    expect(() => scanMessage(Uint8Array.from([0x00, 0x01]))).toThrow(/field number 0/);
    expect(() => scanMessage(Uint8Array.from([0x09, 1, 2, 3]))).toThrow(/runs past/);
    expect(() => scanMessage(new Uint8Array(4), 2, 8)).toThrow(/outside buffer/);
  });

  it('writes nested length-delimited fields from chunks', () => {
    const inner = new ChunkList().lenField(1, new TextEncoder().encode('a')).lenField(1, new TextEncoder().encode('bb'));
    const outer = new ChunkList().lenField(1, new TextEncoder().encode('x')).lenField(5, new ChunkList().append(inner));
    const bytes = outer.concat();
    expect(bytes.length).toBe(outer.length);
    const fields = scanMessage(bytes);
    expect(fields.map((f) => f.no)).toEqual([1, 5]);
    const nested = scanMessage(bytes, fields[1].valueStart, fields[1].end);
    expect(nested.map((f) => stringField(bytes, f))).toEqual(['a', 'bb']);
    // a payload above 127 bytes needs a two-byte length
    const long = new ChunkList().lenField(3, new Uint8Array(300)).concat();
    expect(Array.from(long.subarray(0, 3))).toEqual([0x1a, 0xac, 0x02]);
  });
});
