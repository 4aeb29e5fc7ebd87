/**
 * Cost of the patch on a big model: the toy decoder plus one 400 MB initializer. Splicing must keep this well under
 * 2 s and about one model size of extra memory (the output buffer), where re-encoding would cost seconds and ~3x.
 */
import { describe, expect, it } from 'vitest';
import { DataType, GraphBuilder, serializeModel, tensor } from '../../src/core/onnx/graph-builder.js';
import { patchDecoder } from '../../src/core/onnx/patcher.js';
import { scanMessage } from '../../src/core/onnx/wire.js';
import { TOY, plainDecoder, toyBody, toyWeights } from './patcher-graphs.js';

const BIG = 400 * 1024 * 1024;

function bigModel(): Uint8Array {
  const b = new GraphBuilder('big_decoder');
  b.input('input_ids', DataType.INT64, ['batch_size', 'sequence_length']);
  for (let l = 0; l < TOY.layers; l++) {
    for (const k of ['key', 'value']) b.input(`past_key_values.${l}.${k}`, DataType.FLOAT, ['batch_size', TOY.kvHeads, 'past', TOY.headDim]);
  }
  const body = toyBody(b, TOY, toyWeights(b, TOY, 1));
  b.node('Identity', [body.logits], ['logits']);
  b.output('logits', DataType.FLOAT, ['batch_size', 'sequence_length', TOY.vocab]);
  const big = tensor('big_weight', DataType.UINT8, [1], new Uint8Array(1));
  big.dims = [BigInt(BIG)];
  big.rawData = new Uint8Array(BIG).fill(7); // set directly: no second 400 MB copy while building
  b.initializers.push(big);
  return serializeModel(b.graph(), { opsets: [{ domain: '', version: 17 }] }).model;
}

describe('patch cost on a 400 MB model', () => {
  it('splices in well under 2 s with about 1x extra memory', () => {
    const model = bigModel();
    expect(model.length).toBeGreaterThan(BIG);
    patchDecoder(plainDecoder()); // warm the code paths on a small model first
    const before = process.memoryUsage();
    let t0 = performance.now();
    const { bytes, report } = patchDecoder(model);
    const ms = performance.now() - t0;
    const after = process.memoryUsage();
    const extra = (after.arrayBuffers - before.arrayBuffers) / model.length;
    // A second run (the first may pay for the collection of the builder's garbage), then the floor: one plain copy of
    // the model into a fresh buffer, page faults included. Other jobs on a shared 2-core machine can slow all of
    // these several-fold, so the time bound is 2 s or 3 copies, whichever is larger, on the better of the two runs.
    t0 = performance.now();
    patchDecoder(model);
    const ms2 = performance.now() - t0;
    t0 = performance.now();
    new Uint8Array(model.length).set(model);
    const copyMs = performance.now() - t0;
    console.log(
      `patchDecoder on ${(model.length / 2 ** 20).toFixed(0)} MiB: ${ms.toFixed(0)} ms, again ${ms2.toFixed(0)} ms (one plain copy: ${copyMs.toFixed(0)} ms), ` +
        `extra ArrayBuffer memory ${(extra * 100).toFixed(1)}% of the model, output +${bytes.length - model.length} bytes`,
    );
    expect(report.num_layers).toBe(TOY.layers);
    expect(Math.min(ms, ms2)).toBeLessThan(Math.max(2000, 3 * copyMs));
    expect(extra).toBeLessThan(1.1);
    expect(bytes.length - model.length).toBeLessThan(20_000);
    // the 400 MB initializer is in the output, byte for byte
    const top = scanMessage(bytes);
    const g = top.find((f) => f.no === 7)!;
    const inits = scanMessage(bytes, g.valueStart, g.end).filter((f) => f.no === 5);
    const big = inits.find((f) => f.end - f.valueStart > BIG)!;
    const raw = scanMessage(bytes, big.valueStart, big.end).find((f) => f.no === 9)!;
    expect(raw.end - raw.valueStart).toBe(BIG);
    for (let i = 0; i < 1000; i++) expect(bytes[raw.valueStart + Math.floor((i / 1000) * BIG)]).toBe(7);
  });
});
