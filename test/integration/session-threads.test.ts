/**
 * Node sessions of a tiny model run one intra-op thread (src/core/model/session-threads.ts): which models get it, that
 * the loader applies it, and that it changes no output (the reason it may be chosen per model at all).
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import * as ort from 'onnxruntime-node';
import { loadSteerableModel } from '../../src/core/model/index.js';
import { intraOpThreadsFor, matmulWeightsPerToken, SMALL_MODEL_MATMUL_WEIGHTS } from '../../src/core/model/session-threads.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { patchDecoder } from '../../src/core/onnx/patcher.js';

const ORGANISM = resolve('models/organism');

describe('intra-op threads by model size', () => {
  it('one thread below the limit, onnxruntime default above it', () => {
    const organism = JSON.parse(readFileSync(join(ORGANISM, 'config.json'), 'utf8')) as Record<string, number>;
    const shape = { numLayers: organism.num_hidden_layers!, hiddenSize: organism.hidden_size!, vocabSize: organism.vocab_size!, intermediateSize: organism.intermediate_size! };
    // 6 x (4 x 128^2 + 3 x 128 x 384) + 1024 x 128
    expect(matmulWeightsPerToken(shape)).toBe(1_409_024);
    expect(intraOpThreadsFor(shape)).toBe(1);
    for (const preset of ['smollm2-135m', 'qwen2.5-0.5b']) {
      const s = SHAPE_PRESETS[preset]!;
      const w = { numLayers: s.numLayers, hiddenSize: s.hiddenSize, vocabSize: s.vocabSize, intermediateSize: s.intermediateSize };
      expect(matmulWeightsPerToken(w)).toBeGreaterThan(10 * SMALL_MODEL_MATMUL_WEIGHTS);
      expect(intraOpThreadsFor(w)).toBeNull();
    }
    // no intermediate_size in the config: 4 x hidden
    expect(matmulWeightsPerToken({ numLayers: 2, hiddenSize: 10, vocabSize: 5 })).toBe(2 * (400 + 1200) + 50);
  });

  it('the loader gives the organism one thread', async () => {
    const sm = await loadSteerableModel(ORGANISM);
    try {
      expect(sm.intraOpThreads).toBe(1);
    } finally {
      await sm.dispose();
    }
  });

  it('one and two threads give the same outputs, bit for bit (logits, caches, residuals)', async () => {
    const graph = join(ORGANISM, 'onnx/model.onnx');
    const bytes = patchDecoder(readFileSync(graph), { weightsByReference: 'model.onnx', logitsFrom: true }).bytes;
    const session = (threads: number) =>
      ort.InferenceSession.create(bytes, { executionProviders: ['cpu'], intraOpNumThreads: threads, extra: { session: { model_external_initializers_file_folder_path: dirname(graph) } } } as never);
    const [one, two] = [await session(1), await session(2)];
    const cfg = JSON.parse(readFileSync(join(ORGANISM, 'config.json'), 'utf8')) as Record<string, number>;
    const L = cfg.num_hidden_layers!;
    const H = cfg.hidden_size!;
    const kvHeads = cfg.num_key_value_heads!;
    const headDim = H / cfg.num_attention_heads!;
    const int64 = (a: number[]) => BigInt64Array.from(a.map(BigInt));
    try {
      let compared = 0;
      for (const T of [7, 40, 130]) {
        const feeds: Record<string, ort.Tensor> = {
          input_ids: new ort.Tensor('int64', int64(Array.from({ length: T }, (_, i) => 3 + ((i * 7919) % (cfg.vocab_size! - 10)))), [1, T]),
          attention_mask: new ort.Tensor('int64', int64(new Array<number>(T).fill(1)), [1, T]),
          position_ids: new ort.Tensor('int64', int64(Array.from({ length: T }, (_, i) => i)), [1, T]),
          steering: new ort.Tensor('float32', new Float32Array(L * H).map((_, i) => 0.3 * Math.sin(i)), [1, L, H]),
          projection: new ort.Tensor('float32', new Float32Array(L * H), [1, L, H]),
          logits_from: new ort.Tensor('int64', int64([0]), [1]),
        };
        for (let l = 0; l < L; l++) for (const k of ['key', 'value']) feeds[`past_key_values.${l}.${k}`] = new ort.Tensor('float32', new Float32Array(0), [1, kvHeads, 0, headDim]);
        const [a, b] = [await one.run(feeds), await two.run(feeds)];
        expect(Object.keys(a).sort()).toEqual(Object.keys(b).sort());
        for (const k of Object.keys(a)) {
          expect(Buffer.from((a[k]!.data as Float32Array).buffer).equals(Buffer.from((b[k]!.data as Float32Array).buffer)), `${k} at ${T} tokens`).toBe(true);
          compared++;
        }
      }
      // logits, residual_stream and 2 x 6 caches, at three prompt lengths
      expect(compared).toBe(3 * (2 + 2 * L));
    } finally {
      await one.release();
      await two.release();
    }
  });
});
