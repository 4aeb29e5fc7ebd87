/**
 * weights-reader: the token matrix read from built test models equals the weights the builder wrote, for every
 * topology the lab meets (plain MatMul head, tied Transpose(embed) head, fused, q4f16 MatMulNBits, merged If, external
 * data), and the input-embedding path / fallback says which matrix it used.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTestModel, type BuiltModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS, type DecoderShape } from '../../src/core/onnx/testmodel/config.js';
import { generateWeights } from '../../src/core/onnx/testmodel/weights.js';
import { quantizeQ4 } from '../../src/core/onnx/testmodel/quant.js';
import { DataType, GraphBuilder, attr, fromFloat16Array, serializeModel, toFloat16Array } from '../../src/core/onnx/graph-builder.js';
import { readEmbeddingMatrix, WeightsReaderError } from '../../src/core/onnx/weights-reader.js';

const root = mkdtempSync(join(tmpdir(), 'steerlab-wreader-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const tiny = SHAPE_PRESETS.tiny!;
const V = tiny.vocabSize;
const H = tiny.hiddenSize;

/** [H, V] (MatMul layout) -> [V, H] */
function vocabMajor(hv: Float32Array, h: number, v: number): Float32Array {
  const out = new Float32Array(h * v);
  for (let i = 0; i < h; i++) for (let j = 0; j < v; j++) out[j * h + i] = hv[i * v + j]!;
  return out;
}

function maxAbs(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

async function build(name: string, topology: BuiltModel['topology'], shape: DecoderShape = tiny, externalData = false): Promise<{ b: BuiltModel; bytes: Uint8Array }> {
  const b = await buildTestModel(join(root, name), { shape, topology, seed: 5, externalData });
  return { b, bytes: new Uint8Array(readFileSync(join(b.dir, b.onnxFile))) };
}

const reader = (dir: string) => (loc: string) => new Uint8Array(readFileSync(join(dir, 'onnx', loc)));

describe('readEmbeddingMatrix', () => {
  const w = generateWeights(tiny, 5);

  it('plain: the lm_head MatMul weight, transposed to [vocab, hidden]', async () => {
    const { bytes } = await build('plain', 'plain');
    const m = await readEmbeddingMatrix(bytes, { expectVocabSize: V, expectHiddenSize: H });
    expect(m.source).toBe('unembedding');
    expect(m.storage).toBe('float32');
    expect(m.tensor).toBe('lm_head.weight');
    expect([m.vocabSize, m.hiddenSize]).toEqual([V, H]);
    expect(maxAbs(m.data, vocabMajor(w.lmHead, H, V))).toBe(0);
    expect(m.fallbackReason).toBeUndefined();
  });

  it('plain, input embedding on request: the Gather data', async () => {
    const { bytes } = await build('plain-e', 'plain');
    const m = await readEmbeddingMatrix(bytes, { prefer: 'input-embedding' });
    expect(m.source).toBe('input-embedding');
    expect(maxAbs(m.data, w.embedTokens)).toBe(0);
  });

  it('tied plain: Transpose(embed) resolves to the embedding rows', async () => {
    const shape = { ...tiny, tieWordEmbeddings: true };
    const { bytes } = await build('tied', 'plain', shape);
    const m = await readEmbeddingMatrix(bytes);
    expect(m.source).toBe('unembedding');
    expect(m.tensor).toBe('model.embed_tokens.weight');
    expect(maxAbs(m.data, generateWeights(shape, 5).embedTokens)).toBe(0);
  });

  it('fused fp32 and merged (If branch, outer-scope weights)', async () => {
    for (const topology of ['fused', 'merged'] as const) {
      const { bytes } = await build(topology, topology);
      const m = await readEmbeddingMatrix(bytes);
      expect(m.source).toBe('unembedding');
      expect(maxAbs(m.data, vocabMajor(w.lmHead, H, V))).toBe(0);
    }
  });

  it('fused-q4f16: MatMulNBits head dequantised exactly; fp16 input embedding widened', async () => {
    const { bytes } = await build('q4', 'fused-q4f16');
    const m = await readEmbeddingMatrix(bytes);
    expect(m.storage).toBe('q4');
    const q = quantizeQ4(w.lmHead, H, V);
    expect(maxAbs(m.data, vocabMajor(q.dequantized, H, V))).toBe(0);
    const e = await readEmbeddingMatrix(bytes, { prefer: 'input-embedding' });
    expect(e.storage).toBe('float16');
    expect(maxAbs(e.data, fromFloat16Array(toFloat16Array(w.embedTokens)))).toBe(0);
  });

  it('external data: read through the reader; without one, a clear error', async () => {
    const { b, bytes } = await build('ext', 'plain', tiny, true);
    const m = await readEmbeddingMatrix(bytes, { externalData: reader(b.dir) });
    expect(maxAbs(m.data, vocabMajor(w.lmHead, H, V))).toBe(0);
    await expect(readEmbeddingMatrix(bytes)).rejects.toThrow(/external data "model.onnx_data".*no external data reader/);
  });

  it('falls back to the input embedding when the head weight is computed, and says why', async () => {
    // logits = MatMul(Gather(E, input_ids), Relu(W)): the head's weight is not an initializer
    const g = new GraphBuilder('g');
    g.input('input_ids', DataType.INT64, ['b', 's']);
    const E = Float32Array.from({ length: 6 * 4 }, (_, i) => i * 0.5 - 3);
    const e = g.initializer('embed', DataType.FLOAT, [6, 4], E);
    const wt = g.initializer('head', DataType.FLOAT, [4, 6], new Float32Array(24).fill(1));
    const h = g.op('Gather', [e, 'input_ids'], { axis: attr.int(0) });
    g.node('MatMul', [h, g.op('Relu', [wt])], ['logits']);
    g.output('logits', DataType.FLOAT, ['b', 's', 6]);
    const { model } = serializeModel(g.graph(), { opsets: [{ domain: '', version: 17 }] });
    const m = await readEmbeddingMatrix(model);
    expect(m.source).toBe('input-embedding');
    expect(m.fallbackReason).toMatch(/"head".*computed|computed/);
    expect(Array.from(m.data)).toEqual(Array.from(E));
    await expect(readEmbeddingMatrix(model, { expectHiddenSize: 5 })).rejects.toThrow(/width 4.*hidden size is 5/);
  });

  it('rejects bytes that are not a model', async () => {
    await expect(readEmbeddingMatrix(new Uint8Array([1, 2, 3]))).rejects.toThrow();
    await expect(readEmbeddingMatrix(new Uint8Array([1, 2, 3]))).rejects.not.toBeInstanceOf(WeightsReaderError);
  });
});
