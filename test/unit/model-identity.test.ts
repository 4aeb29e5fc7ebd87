/**
 * The model identity rule (src/core/model/model-id.ts, model-content-id.ts) on files in memory: which bytes name a
 * model and which do not, sampling of files over the limit (a 5 GB external-data file is named by reading a few
 * MiB), the reference graph (the fp32 graph names the model whatever variant is loaded), and the artefact check
 * (another model is refused unless allowed, another variant warns).
 */
import { describe, expect, it } from 'vitest';
import {
  contentModelId,
  identityRanges,
  memoryFileReader,
  modelIdentity,
  SAMPLE_SLICES,
  WHOLE_FILE_LIMIT,
  type ModelFileReader,
} from '../../src/core/model/model-content-id.js';
import { decodeActivationCache, encodeActivationCache } from '../../src/core/method/activations.js';
import { decoderLayers } from '../../src/core/model/layer-index.js';
import { checkSameModel, recordedModel, type ModelIdentity } from '../../src/core/model/model-id.js';
import { buildTestModel } from '../../src/core/onnx/testmodel/build.js';

const enc = (s: string) => new TextEncoder().encode(s);
const config = (extra: Record<string, unknown> = {}) => enc(JSON.stringify({ model_type: 'llama', hidden_size: 64, num_hidden_layers: 4, ...extra }, null, 2));
/** A minimal ONNX ModelProto: field 7 (graph) holding an empty GraphProto; enough for the external-data scan. */
const EMPTY_GRAPH = Uint8Array.from([0x08, 0x08, 0x3a, 0x00]);

function folder(over: Record<string, Uint8Array> = {}): Record<string, Uint8Array> {
  return { 'config.json': config(), 'tokenizer.json': enc('{"model":{"vocab":{"a":0}}}'), 'tokenizer_config.json': enc('{"chat_template":"x"}'), 'onnx/model.onnx': EMPTY_GRAPH, ...over };
}

const id = async (files: Record<string, Uint8Array>, dtype: 'fp32' | 'q4f16' = 'fp32') =>
  (await modelIdentity({ kind: 'folder', name: 'organism', files: memoryFileReader(files) }, { dtype, modelFileName: 'model' })).id;

describe('what names a local model', () => {
  it('a content hash, not the folder name; the name is kept for display', async () => {
    const m = await modelIdentity({ kind: 'folder', name: 'organism', files: memoryFileReader(folder()) }, { dtype: 'fp32', modelFileName: 'model' });
    expect(m.id).toMatch(/^sha256:[0-9a-f]{16}$/);
    expect(m.name).toBe('organism');
    expect(m.variant).toEqual({ dtype: 'fp32', graph: 'onnx/model.onnx' });
    const other = await modelIdentity({ kind: 'folder', name: 'renamed', files: memoryFileReader(folder()) }, { dtype: 'fp32', modelFileName: 'model' });
    expect(other.id).toBe(m.id);
  });

  it('other weights, tokenizer, chat template or config give another id', async () => {
    const base = await id(folder());
    expect(await id(folder({ 'onnx/model.onnx': Uint8Array.from([0x08, 0x09, 0x3a, 0x00]) }))).not.toBe(base);
    expect(await id(folder({ 'tokenizer.json': enc('{"model":{"vocab":{"b":0}}}') }))).not.toBe(base);
    expect(await id(folder({ 'tokenizer_config.json': enc('{"chat_template":"y"}') }))).not.toBe(base);
    expect(await id(folder({ 'config.json': config({ hidden_size: 96 }) }))).not.toBe(base);
  });

  it("config.json's formatting, key order and transformers.js_config (loader hints) do not count", async () => {
    const base = await id(folder());
    const reordered = enc(JSON.stringify({ num_hidden_layers: 4, hidden_size: 64, model_type: 'llama' }));
    expect(await id(folder({ 'config.json': reordered }))).toBe(base);
    expect(await id(folder({ 'config.json': config({ 'transformers.js_config': { dtype: { model: 'q4f16' } } }) }))).toBe(base);
  });

  it('the fp32 graph names the model whatever variant is loaded; without it the loaded graph does', async () => {
    const both = folder({ 'onnx/model_q4f16.onnx': Uint8Array.from([0x08, 0x0a, 0x3a, 0x00]) });
    expect(await id(both, 'q4f16')).toBe(await id(both, 'fp32'));
    expect(await id(both, 'q4f16')).toBe(await id(folder()));
    const only = folder({ 'onnx/model_q4f16.onnx': Uint8Array.from([0x08, 0x0a, 0x3a, 0x00]) });
    delete only['onnx/model.onnx'];
    const alone = await id(only, 'q4f16');
    expect(alone).not.toBe(await id(folder()));
    const missing = folder();
    delete missing['onnx/model.onnx'];
    await expect(id(missing)).rejects.toThrow(/has no onnx\/model\.onnx/);
    const noConfig = folder();
    delete noConfig['config.json'];
    await expect(id(noConfig)).rejects.toThrow(/no config\.json/);
  });

  it('a hub model is its hub id, with the variant loaded', async () => {
    const m = await modelIdentity({ kind: 'hub', id: 'HuggingFaceTB/SmolLM2-135M-Instruct' }, { dtype: 'q4f16', modelFileName: 'model' });
    expect(m).toEqual({ id: 'HuggingFaceTB/SmolLM2-135M-Instruct', name: 'HuggingFaceTB/SmolLM2-135M-Instruct', variant: { dtype: 'q4f16', graph: 'onnx/model_q4f16.onnx' } });
  });
});

describe('large files are sampled, never read whole', () => {
  it(`files up to ${WHOLE_FILE_LIMIT} bytes are whole; larger ones: first and last MiB and ${SAMPLE_SLICES} slices`, () => {
    expect(identityRanges(10)).toEqual([[0, 10]]);
    expect(identityRanges(WHOLE_FILE_LIMIT)).toEqual([[0, WHOLE_FILE_LIMIT]]);
    const size = 5 * 2 ** 30;
    const r = identityRanges(size);
    expect(r).toHaveLength(SAMPLE_SLICES + 2);
    expect(r[0]).toEqual([0, 2 ** 20]);
    expect(r[r.length - 1]).toEqual([size - 2 ** 20, size]);
    for (let i = 1; i < r.length; i++) expect(r[i]![0]).toBeGreaterThanOrEqual(r[i - 1]![1]);
  });

  it('a graph with 5 GB of external data is named by reading a few MiB; a changed sampled byte changes the id', async () => {
    // A real graph that names external data: a tiny built model written with external data.
    const { mkdtempSync, readFileSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'steerlab-identity-ext-'));
    try {
      const built = await buildTestModel(dir, { shape: { vocabSize: 300, hiddenSize: 16, intermediateSize: 32, numLayers: 2, numHeads: 2, numKvHeads: 1, headDim: 8, maxPositionEmbeddings: 64, ropeTheta: 10000, rmsNormEps: 1e-5, tieWordEmbeddings: false, attentionBias: false }, topology: 'plain', seed: 1, externalData: true });
      const graph = new Uint8Array(readFileSync(join(dir, built.onnxFile)));
      const size = 5 * 2 ** 30;
      let read = 0;
      let flip = -1;
      const virtual: ModelFileReader = {
        size: async (f) => (f === 'onnx/model.onnx_data' ? size : f === 'onnx/model.onnx' ? graph.byteLength : f === 'config.json' ? config().byteLength : null),
        read: async (f, a, b) => {
          if (f === 'onnx/model.onnx') return graph.subarray(a, b);
          if (f === 'config.json') return config().subarray(a, b);
          read += b - a;
          // Deterministic bytes of the virtual file; `flip` changes one of them.
          const out = new Uint8Array(b - a);
          for (let i = 0; i < out.length; i++) out[i] = (a + i) % 251 ^ (a + i === flip ? 1 : 0);
          return out;
        },
      };
      const first = await contentModelId(virtual, { modelFileName: 'model', variant: { dtype: 'fp32', graph: 'onnx/model.onnx' } });
      expect(first.manifest.text).toMatch(/onnx\/model\.onnx_data 5368709120 sampled [0-9a-f]{64}/);
      expect(read).toBeLessThan(5 * 2 ** 20);
      flip = size - 10; // inside the last MiB
      const second = await contentModelId(virtual, { modelFileName: 'model', variant: { dtype: 'fp32', graph: 'onnx/model.onnx' } });
      expect(second.id).not.toBe(first.id);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('checking an artefact against the loaded model', () => {
  const loaded: ModelIdentity = { id: 'sha256:aaaaaaaaaaaaaaaa', name: 'organism', variant: { dtype: 'q4f16', graph: 'onnx/model_q4f16.onnx' } };

  it('the same model and variant: no warning', () => {
    expect(checkSameModel(recordedModel(loaded), loaded, 'direction d').warnings).toEqual([]);
  });

  it('another variant of the same model warns (fp32 direction, q4f16 graph loaded)', () => {
    const w = checkSameModel({ model_id: loaded.id, model_name: 'organism', model_variant: { dtype: 'fp32', graph: 'onnx/model.onnx' } }, loaded, 'direction d').warnings;
    expect(w).toHaveLength(1);
    expect(w[0]).toMatch(/made with fp32 onnx\/model\.onnx .* loaded variant is q4f16 onnx\/model_q4f16\.onnx/);
  });

  it('another model is refused, naming both; allowed, it loads with a warning', () => {
    const other = { model_id: 'sha256:bbbbbbbbbbbbbbbb', model_name: 'organism' };
    expect(() => checkSameModel(other, loaded, 'controller c')).toThrow(/controller c was made for model organism \(sha256:bbbbbbbbbbbbbbbb\), but the loaded model is organism \(sha256:aaaaaaaaaaaaaaaa\).*--allow-other-model/);
    const w = checkSameModel(other, loaded, 'controller c', { allowOtherModel: true }).warnings;
    expect(w).toHaveLength(1);
    expect(w[0]).toMatch(/accepted/);
  });
});

describe('activation caches record the model and its variant', () => {
  it('a cache made with one model or variant is not used for another', async () => {
    const model: ModelIdentity = { id: 'sha256:aaaaaaaaaaaaaaaa', name: 'm', variant: { dtype: 'fp32', graph: 'onnx/model.onnx' } };
    const key = { model, inputLayers: decoderLayers([2, 3]), hiddenSize: 2, prompts: ['a', 'b'] };
    const x = Float32Array.from({ length: 8 }, (_, i) => i);
    const bytes = await encodeActivationCache(key, x);
    expect(Array.from((await decodeActivationCache(bytes, key, 'c'))!)).toEqual(Array.from(x));
    expect(await decodeActivationCache(bytes, { ...key, model: { ...model, id: 'sha256:bbbbbbbbbbbbbbbb' } }, 'c')).toBeNull();
    expect(await decodeActivationCache(bytes, { ...key, model: { ...model, variant: { dtype: 'q4f16', graph: 'onnx/model_q4f16.onnx' } } }, 'c')).toBeNull();
    expect(await decodeActivationCache(bytes, { ...key, prompts: ['a', 'c'] }, 'c')).toBeNull();
  });
});
