/**
 * Every input the patcher must refuse gets an OnnxPatchError with a code and a message naming what it found and
 * what it expected; nothing hangs, nothing else is thrown.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { create, toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema } from 'onnx-buf';
import { describe, expect, it } from 'vitest';
import { OnnxPatchError, inspectDecoder, patchDecoder, type PatchOptions } from '../../src/core/onnx/patcher.js';
import { scanMessage } from '../../src/core/onnx/wire.js';
import { TOY, convNet, encoderOnly, mergedDecoder, noResidual, plainDecoder } from './patcher-graphs.js';

const FIXTURE = readFileSync(fileURLToPath(new URL('../fixtures/onnx/tiny-qwen35-skipln-gqa-fp16.onnx', import.meta.url)));

function errorOf(bytes: Uint8Array, opts?: PatchOptions): OnnxPatchError {
  try {
    patchDecoder(bytes, opts);
  } catch (err) {
    expect(err).toBeInstanceOf(OnnxPatchError);
    return err as OnnxPatchError;
  }
  throw new Error('expected patchDecoder to fail');
}

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

describe('refused inputs', () => {
  it('empty input', () => {
    const e = errorOf(new Uint8Array(0));
    expect(e.code).toBe('EMPTY_INPUT');
    expect(e.message).toMatch(/empty/);
  });

  it('random bytes', () => {
    const r = rng(1);
    for (let i = 0; i < 300; i++) {
      const n = 1 + Math.floor(r() * 4000);
      const bytes = Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
      const e = errorOf(bytes);
      expect(['MALFORMED_PROTOBUF', 'NO_GRAPH']).toContain(e.code);
    }
  });

  it('a huge declared length does not allocate, it fails', () => {
    // field 7 (graph), length varint = 2^62
    const bytes = Uint8Array.from([0x3a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40, 1, 2, 3]);
    const e = errorOf(bytes);
    expect(e.code).toBe('MALFORMED_PROTOBUF');
    expect(e.message).toMatch(/declares \d+ bytes but only 3 remain/);
  });

  it('truncations of the fixture at many offsets', () => {
    const offsets = new Set<number>();
    for (let i = 1; i < 300; i++) offsets.add(i);
    for (let i = 300; i < FIXTURE.length; i += 211) offsets.add(i);
    for (const f of scanMessage(FIXTURE)) offsets.add(f.start); // exactly at top-level field boundaries
    offsets.delete(0);
    const codes = new Set<string>();
    for (const n of offsets) codes.add(errorOf(FIXTURE.subarray(0, n)).code);
    expect([...codes].sort()).toEqual(['MALFORMED_PROTOBUF', 'MISSING_OPSET', 'NO_GRAPH', 'OPSET_TOO_OLD'].filter((c) => codes.has(c)));
    expect(codes.has('MALFORMED_PROTOBUF')).toBe(true);
    expect(codes.has('MISSING_OPSET')).toBe(true); // cut right before the com.microsoft opset import
  });

  it('flipped bytes give an OnnxPatchError or a model, never another error', () => {
    const r = rng(2);
    let refused = 0;
    for (let i = 0; i < 400; i++) {
      const bytes = Uint8Array.from(FIXTURE);
      // bias towards the headers, where structure lives; the rest lands in weights
      const at = i % 2 ? Math.floor(r() * 4000) : Math.floor(r() * bytes.length);
      bytes[at] ^= 1 << Math.floor(r() * 8);
      try {
        patchDecoder(bytes);
      } catch (err) {
        expect(err).toBeInstanceOf(OnnxPatchError);
        expect((err as OnnxPatchError).message.length).toBeGreaterThan(10);
        refused++;
      }
    }
    expect(refused).toBeGreaterThan(10);
  });

  it('a model without a graph', () => {
    const bytes = toBinary(ModelProtoSchema, create(ModelProtoSchema, { irVersion: 8n, producerName: 'x' }));
    const e = errorOf(bytes);
    expect(e.code).toBe('NO_GRAPH');
  });

  it('opset below 13', () => {
    const e = errorOf(plainDecoder(TOY, { opset: 12 }));
    expect(e.code).toBe('OPSET_TOO_OLD');
    expect(e.message).toMatch(/opset 12 .*>= 13/);
  });

  it('no input_ids (a conv net)', () => {
    const e = errorOf(convNet());
    expect(e.code).toBe('NO_INPUT_IDS');
    expect(e.message).toMatch(/pixel_values/);
  });

  it('encoder-only graph (no KV cache)', () => {
    const e = errorOf(encoderOnly());
    expect(e.code).toBe('NOT_A_DECODER');
    expect(e.message).toMatch(/past_key_values.*present.*last_hidden_state/);
  });

  it('a graph with input_ids and a KV cache but no residual stream', () => {
    const e = errorOf(noResidual());
    expect(e.code).toBe('NO_RESIDUAL_STREAM');
    expect(e.message).toMatch(/feeds \[MatMul\]/);
  });

  it('a residual chain that forks (cannot be followed)', () => {
    const e = errorOf(plainDecoder(TOY, { ambiguous: true }));
    expect(e.code).toBe('RESIDUAL_CHAIN_AMBIGUOUS');
    expect(e.message).toMatch(/feeds 2 residual producers/);
  });

  it('an odd producer count', () => {
    const e = errorOf(plainDecoder(TOY, { extraProducer: true }));
    expect(e.code).toBe('ODD_PRODUCER_COUNT');
    expect(e.message).toMatch(/found 7 residual producers/);
  });

  it('layer-count and hidden-size mismatches', () => {
    const e = errorOf(plainDecoder(), { expectedNumLayers: 4 });
    expect(e.code).toBe('LAYER_COUNT_MISMATCH');
    expect(e.message).toBe('found 6 residual producers = 3 layers, config says 4');
    const m = errorOf(mergedDecoder(), { expectedNumLayers: 2 });
    expect(m.message).toBe('found 6 residual producers = 3 layers, config says 2');
    const f = errorOf(FIXTURE, { expectedNumLayers: 24 });
    expect(f.message).toBe('found 4 residual producers = 2 layers, config says 24');
    const h = errorOf(plainDecoder(), { expectedHiddenSize: 32 });
    expect(h.code).toBe('HIDDEN_SIZE_MISMATCH');
    expect(h.message).toMatch(/hidden size 16, config says 32/);
  });

  it('bad options', () => {
    expect(errorOf(plainDecoder(), { expectedNumLayers: 0 }).code).toBe('BAD_OPTIONS');
  });

  it('double patch', () => {
    for (const once of [patchDecoder(plainDecoder()).bytes, patchDecoder(mergedDecoder()).bytes, patchDecoder(FIXTURE).bytes]) {
      const e = errorOf(once);
      expect(e.code).toBe('ALREADY_PATCHED');
      expect(() => inspectDecoder(once)).toThrow(/already patched/);
    }
  });
});
