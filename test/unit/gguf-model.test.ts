/**
 * The GGUF writer's model-file parts (array and bool metadata, F16 / Q8_0 / Q4_0 tensors) and the Llama export:
 * ggml's quantisation rules, the rotary row permutation, weights that land where llama.cpp reads them, 4-bit
 * MatMulNBits codes repacked exactly into Q4_0, and clear refusals.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeGguf, dequantizeGgml, encodeGguf, GgufError, quantizeQ4_0, quantizeQ8_0 } from '../../src/core/steering/gguf.js';
import { exportLlamaGguf, permuteRopeRows } from '../../src/core/model/gguf-export.js';
import { buildTestModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { generateWeights } from '../../src/core/onnx/testmodel/weights.js';
import { effectiveQ4f16Weights } from '../../src/core/onnx/testmodel/fused.js';
import { mulberry32 } from '../../src/core/util/prng.js';

const root = mkdtempSync(join(tmpdir(), 'steerlab-gguf-unit-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const shape = SHAPE_PRESETS.tiny!;

function randn(n: number, seed: number, scale = 1): Float32Array {
  const r = mulberry32(seed);
  return Float32Array.from({ length: n }, () => (r() * 2 - 1) * scale);
}

async function filesOf(dir: string, graph: string) {
  const j = (f: string) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as Record<string, unknown>;
  return {
    graph: new Uint8Array(readFileSync(join(dir, 'onnx', graph))),
    config: j('config.json'),
    tokenizer: j('tokenizer.json'),
    tokenizerConfig: j('tokenizer_config.json'),
    generationConfig: j('generation_config.json'),
  };
}

describe('GGUF writer: model-file metadata and tensor types', () => {
  it('round-trips arrays, bools and every tensor type, quantising like ggml', () => {
    const x = randn(64 * 3, 1, 2);
    const bytes = encodeGguf(
      {
        a: { type: 'array', itemType: 'string', value: ['Ġa', 'b c', ''] },
        b: { type: 'array', itemType: 'int32', value: [1, -3, 5] },
        c: { type: 'bool', value: true },
      },
      [
        { name: 'f32', dims: [64, 3], data: x },
        { name: 'f16', dims: [64, 3], data: x, type: 'f16' },
        { name: 'q8', dims: [64, 3], data: x, type: 'q8_0' },
        { name: 'q4', dims: [64, 3], data: x, type: 'q4_0' },
      ],
    );
    const d = decodeGguf(bytes);
    expect(d.metadata).toMatchObject({ a: ['Ġa', 'b c', ''], b: [1, -3, 5], c: true });
    const t = Object.fromEntries(d.tensors.map((e) => [e.name, e]));
    expect(Array.from(t['f32']!.data)).toEqual(Array.from(x));
    expect(t['q8']!.raw.length).toBe((192 / 32) * 34);
    expect(t['q4']!.raw.length).toBe((192 / 32) * 18);
    for (const [name, steps] of [['f16', 1e-3], ['q8', 127], ['q4', 8]] as const) {
      // each value within half a quantisation step (f16: relative rounding; Q4_0: one step, as ggml clips the side
      // opposite the largest value at code 15), plus the fp16 rounding of the block scale
      for (let b = 0; b < 6; b++) {
        const block = x.subarray(b * 32, b * 32 + 32);
        const amax = Math.max(...Array.from(block, Math.abs));
        const step = name === 'f16' ? amax * steps : amax / steps;
        for (let j = 0; j < 32; j++) expect(Math.abs(t[name]!.data[b * 32 + j]! - block[j]!)).toBeLessThanOrEqual(step * (name === 'f16' ? 0.5 : name === 'q8' ? 0.57 : 1.07) + 1e-6);
      }
    }
  });

  it("Q4_0 and Q8_0 bytes follow ggml's reference rules", () => {
    // one block: the largest-magnitude value is -4, so d = -4 / -8 = 0.5 and codes are trunc(x / 0.5 + 8.5)
    const x = new Float32Array(32);
    x[0] = -4;
    x[1] = 1;
    x[16] = 3.4;
    const q4 = quantizeQ4_0(x);
    expect(dequantizeGgml('q4_0', q4, 32)[0]).toBe(-4);
    expect(q4[2]! & 15).toBe(0); // -4 / 0.5 + 8.5 = 0.5 -> 0
    expect(q4[2]! >> 4).toBe(Math.min(15, Math.trunc(3.4 / 0.5 + 8.5))); // value 16 sits in byte 0's high nibble
    expect(q4[3]! & 15).toBe(Math.trunc(1 / 0.5 + 8.5));
    const q8 = quantizeQ8_0(x);
    const deq = dequantizeGgml('q8_0', q8, 32);
    expect(deq[0]).toBeCloseTo(-4, 2);
    expect(new Int8Array(q8.buffer)[2]).toBe(-127);
  });

  it('refuses a quantised tensor whose rows are not whole blocks', () => {
    expect(() => encodeGguf({}, [{ name: 'w', dims: [48, 2], data: new Float32Array(96), type: 'q8_0' }])).toThrow(/multiple of 32/);
  });
});

describe('Llama GGUF export', () => {
  it("permutes q/k rows from Hugging Face's half rotation to llama.cpp's pair rotation", () => {
    // 2 heads of size 4, rows numbered: head h rows [h0 h1 h2 h3] -> [h0 h2 h1 h3]
    const m = Float32Array.from({ length: 8 }, (_, i) => i);
    expect(Array.from(permuteRopeRows(m, 2, 4, 1))).toEqual([0, 2, 1, 3, 4, 6, 5, 7]);
    const rows = Float32Array.from({ length: 16 }, (_, i) => i); // 8 rows of 2
    expect(Array.from(permuteRopeRows(rows, 1, 8, 2).subarray(0, 8))).toEqual([0, 1, 8, 9, 2, 3, 10, 11]);
  });

  it('writes every weight where llama.cpp reads it, transposed to [out, in], f32', async () => {
    const built = await buildTestModel(join(root, 'plain'), { shape, topology: 'plain', seed: 3 });
    const w = generateWeights(shape, built.seed);
    const { parts, report } = await exportLlamaGguf({ ...(await filesOf(built.dir, 'model.onnx')), type: 'f32', name: 't' });
    const d = decodeGguf(Uint8Array.from(parts.flatMap((p) => Array.from(p))));
    expect(report.tensors).toBe(d.tensors.length);
    expect(d.metadata).toMatchObject({
      'general.architecture': 'llama',
      'llama.block_count': shape.numLayers,
      'llama.attention.head_count_kv': shape.numKvHeads,
      'llama.rope.dimension_count': shape.headDim,
      'tokenizer.ggml.model': 'gpt2',
      'tokenizer.ggml.pre': 'gpt-2',
    });
    expect((d.metadata['tokenizer.ggml.tokens'] as string[]).length).toBe(shape.vocabSize);
    const t = Object.fromEntries(d.tensors.map((e) => [e.name, e]));
    const H = shape.hiddenSize;
    const I = shape.intermediateSize;
    // ffn_down: ONNX [I, H] (in, out) -> GGUF rows [H][I]
    expect(t['blk.1.ffn_down.weight']!.dims).toEqual([I, H]);
    expect(t['blk.1.ffn_down.weight']!.data[3 * I + 5]).toBe(w.layers[1]!.down[5 * H + 3]);
    // v: no permutation; k: permuted rows
    const kvDim = shape.numKvHeads * shape.headDim;
    expect(t['blk.0.attn_v.weight']!.data[7 * H + 2]).toBe(w.layers[0]!.v[2 * kvDim + 7]);
    const k = t['blk.0.attn_k.weight']!.data;
    const hd = shape.headDim;
    // new row 2i + 1 of head 0 = old row hd/2 + i
    expect(k[(2 * 3 + 1) * H + 4]).toBe(w.layers[0]!.k[4 * kvDim + hd / 2 + 3]);
    expect(t['output.weight']!.data[9 * H + 1]).toBe(w.lmHead[1 * shape.vocabSize + 9]);
    expect(t['token_embd.weight']!.data[9 * H + 1]).toBe(w.embedTokens[9 * H + 1]);
  });

  it('repacks 4-bit MatMulNBits codes into Q4_0 exactly (the q4 graph and the Q4_0 file hold the same weights)', async () => {
    const built = await buildTestModel(join(root, 'q4'), { shape, topology: 'fused-q4f16', seed: 4 });
    const eff = effectiveQ4f16Weights(shape, generateWeights(shape, built.seed));
    const { parts, report } = await exportLlamaGguf({ ...(await filesOf(built.dir, 'model_q4f16.onnx')), type: 'q4_0', name: 'q' });
    expect(report.encodings['blk.0.attn_v.weight']).toBe('q4_0 (repacked)');
    expect(report.encodings['token_embd.weight']).toBe('f16');
    const d = decodeGguf(Uint8Array.from(parts.flatMap((p) => Array.from(p))));
    const t = Object.fromEntries(d.tensors.map((e) => [e.name, e]));
    const H = shape.hiddenSize;
    const I = shape.intermediateSize;
    const kvDim = shape.numKvHeads * shape.headDim;
    let worst = 0;
    for (let o = 0; o < H; o++) for (let i = 0; i < I; i++) worst = Math.max(worst, Math.abs(t['blk.2.ffn_down.weight']!.data[o * I + i]! - eff.layers[2]!.down[i * H + o]!));
    for (let o = 0; o < kvDim; o++) for (let i = 0; i < H; i++) worst = Math.max(worst, Math.abs(t['blk.0.attn_v.weight']!.data[o * H + i]! - eff.layers[0]!.v[i * kvDim + o]!));
    expect(worst).toBe(0);
  });

  it('refuses what llama.cpp could not run the same way', async () => {
    const built = await buildTestModel(join(root, 'plain2'), { shape, topology: 'plain', seed: 3 });
    const f = await filesOf(built.dir, 'model.onnx');
    await expect(exportLlamaGguf({ ...f, config: { ...f.config, rope_scaling: { type: 'linear', factor: 2 } }, type: 'f32', name: 'x' })).rejects.toThrow(/rope_scaling/);
    await expect(exportLlamaGguf({ ...f, tokenizer: { model: { type: 'Unigram' } }, type: 'f32', name: 'x' })).rejects.toThrow(/byte-level BPE/);
    await expect(exportLlamaGguf({ ...f, type: 'q5' as never, name: 'x' })).rejects.toThrow(GgufError);
    await expect(exportLlamaGguf({ ...f, config: { ...f.config, num_hidden_layers: shape.numLayers + 1 }, type: 'f32', name: 'x' })).rejects.toThrow(/layer 4 input norm/);
  });
});
