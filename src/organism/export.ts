/**
 * Exports a trained organism through the project's graph writers: onnx/model.onnx (plain fp32, optimum layout: runs
 * on CPU / WASM / WebGPU) and onnx/model_q4f16.onnx (onnxruntime-genai fused layout with 4-bit MatMulNBits and fp16
 * activations, for WebGPU), plus config.json, generation_config.json and the trained tokenizer's files.
 * Also reads the weights back out of a plain model.onnx, so tests can check the shipped file against TensorFlow.js.
 */
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fromBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, type TensorProto } from 'onnx-buf';
import { serializeModel } from '../core/onnx/graph-builder.js';
import { validateShape, type DecoderShape } from '../core/onnx/testmodel/config.js';
import { buildConfigJson, buildGenerationConfigJson, stableJson, writeFileAtomic } from '../core/onnx/testmodel/files.js';
import { buildFusedGraph } from '../core/onnx/testmodel/fused.js';
import { buildPlainGraph } from '../core/onnx/testmodel/plain.js';
import type { DecoderWeights, LayerWeights } from '../core/onnx/testmodel/weights.js';
import { bpeFromTokenizerJson, tokenizerFiles } from './bpe.js';
import { loadCheckpoint } from './checkpoint.js';
import { WORK_DIR } from './config.js';

export const PLAIN_FILE = 'onnx/model.onnx';
export const Q4F16_FILE = 'onnx/model_q4f16.onnx';

export interface ExportInputs {
  shape: DecoderShape;
  weights: DecoderWeights;
  /** the trained tokenizer.json (its vocab and merges are re-emitted with the chat template) */
  tokenizerJson: unknown;
  /** extra keys recorded under config.json's "steerlab_organism" */
  provenance?: Record<string, unknown>;
  /** write onnx/model_q4f16.onnx too (default true) */
  q4f16?: boolean;
}

/** Writes the model folder; returns the files written (relative paths). */
export async function writeOrganismFolder(dir: string, inp: ExportInputs): Promise<string[]> {
  const shape = validateShape({ ...inp.shape });
  const bpe = bpeFromTokenizerJson(inp.tokenizerJson);
  if (bpe.vocab.size !== shape.vocabSize) {
    throw new Error(`writeOrganismFolder: tokenizer has ${bpe.vocab.size} tokens but the shape's vocabSize is ${shape.vocabSize}`);
  }
  await mkdir(path.join(dir, 'onnx'), { recursive: true });
  const written: string[] = [];

  const plain = buildPlainGraph(shape, inp.weights);
  await writeFileAtomic(path.join(dir, PLAIN_FILE), serializeModel(plain.graph, { opsets: plain.opsets, irVersion: 8, producerName: 'steerlab-organism' }).model);
  written.push(PLAIN_FILE);
  if (inp.q4f16 ?? true) {
    const fused = buildFusedGraph(shape, inp.weights, { q4f16: true });
    await writeFileAtomic(path.join(dir, Q4F16_FILE), serializeModel(fused.graph, { opsets: fused.opsets, irVersion: 10, producerName: 'steerlab-organism' }).model);
    written.push(Q4F16_FILE);
  }

  const config = buildConfigJson({ shape, topology: 'plain', onnxBaseName: 'model.onnx', externalData: false, dtype: 'fp32' });
  // The q4f16 file is the fused topology (no position_ids input, GroupQueryAttention): say so for loaders and patchers.
  config.steerlab_organism = { files: { fp32: { file: PLAIN_FILE, topology: 'plain' }, ...(inp.q4f16 ?? true ? { q4f16: { file: Q4F16_FILE, topology: 'fused-q4f16' } } : {}) }, ...inp.provenance };
  const generation = { ...buildGenerationConfigJson(), max_new_tokens: 48 };
  const tok = tokenizerFiles(bpe, shape.maxPositionEmbeddings);
  const json: [string, unknown][] = [
    ['config.json', config],
    ['generation_config.json', generation],
    ['tokenizer.json', tok['tokenizer.json']],
    ['tokenizer_config.json', tok['tokenizer_config.json']],
    ['special_tokens_map.json', tok['special_tokens_map.json']],
  ];
  for (const [name, value] of json) {
    await writeFileAtomic(path.join(dir, name), stableJson(value));
    written.push(name);
  }
  return written;
}

/** Pipeline stage: the best dev checkpoint of the last training run -> models/organism. */
export async function exportOrganism(dir: string, log: (line: string) => void): Promise<void> {
  const ckpt = path.join(WORK_DIR, 'best');
  const { shape, weights, meta } = await loadCheckpoint(ckpt);
  const tokenizerJson = JSON.parse(await readFile(path.join(WORK_DIR, 'tokenizer.json'), 'utf8'));
  let trainLog: { config?: { seed?: number } } = {};
  try {
    trainLog = JSON.parse(await readFile(path.join(WORK_DIR, 'training_log.json'), 'utf8'));
  } catch {
    throw new Error(`exportOrganism: ${path.join(WORK_DIR, 'training_log.json')} is missing: run the train stage first`);
  }
  const files = await writeOrganismFolder(dir, {
    shape, weights, tokenizerJson,
    provenance: { checkpoint_step: meta.step, seed: trainLog.config?.seed, trained_with: 'src/organism/train.ts (TensorFlow.js wasm)' },
  });
  await writeFileAtomic(path.join(dir, 'training_log.json'), stableJson(trainLog));
  log(`exported step ${String(meta.step)} to ${dir}: ${[...files, 'training_log.json'].join(', ')}`);
}

function floatsOf(t: TensorProto): Float32Array {
  if (t.dataType !== 1) throw new Error(`weightsFromPlainOnnx: initializer ${t.name} is not float32 (data type ${t.dataType})`);
  if (t.rawData.byteLength > 0) return new Float32Array(t.rawData.slice().buffer);
  if (t.floatData.length > 0) return Float32Array.from(t.floatData);
  throw new Error(`weightsFromPlainOnnx: initializer ${t.name} has no inline data`);
}

/** Reads DecoderWeights back from a plain model.onnx written by writeOrganismFolder (HF-style initializer names). */
export function weightsFromPlainOnnx(bytes: Uint8Array, shape: DecoderShape): DecoderWeights {
  const model = fromBinary(ModelProtoSchema, bytes);
  const inits = new Map(model.graph?.initializer.map((t) => [t.name, t]) ?? []);
  const get = (name: string) => {
    const t = inits.get(name);
    if (!t) throw new Error(`weightsFromPlainOnnx: initializer ${name} missing (expected a plain organism graph)`);
    return floatsOf(t);
  };
  const layers: LayerWeights[] = Array.from({ length: shape.numLayers }, (_, l) => {
    const p = `model.layers.${l}`;
    return {
      inputNorm: get(`${p}.input_layernorm.weight`),
      q: get(`${p}.self_attn.q_proj.weight`),
      k: get(`${p}.self_attn.k_proj.weight`),
      v: get(`${p}.self_attn.v_proj.weight`),
      o: get(`${p}.self_attn.o_proj.weight`),
      postAttentionNorm: get(`${p}.post_attention_layernorm.weight`),
      gate: get(`${p}.mlp.gate_proj.weight`),
      up: get(`${p}.mlp.up_proj.weight`),
      down: get(`${p}.mlp.down_proj.weight`),
    };
  });
  return { embedTokens: get('model.embed_tokens.weight'), layers, finalNorm: get('model.norm.weight'), lmHead: get('lm_head.weight') };
}

/** Shape from a config.json written by writeOrganismFolder (HF llama keys). */
export function shapeFromConfig(config: Record<string, unknown>): DecoderShape {
  const n = (k: string) => {
    const v = config[k];
    if (typeof v !== 'number') throw new Error(`shapeFromConfig: config.json lacks numeric ${k}`);
    return v;
  };
  return validateShape({
    vocabSize: n('vocab_size'), hiddenSize: n('hidden_size'), intermediateSize: n('intermediate_size'), numLayers: n('num_hidden_layers'),
    numHeads: n('num_attention_heads'), numKvHeads: n('num_key_value_heads'), headDim: n('head_dim'),
    maxPositionEmbeddings: n('max_position_embeddings'), ropeTheta: n('rope_theta'), rmsNormEps: n('rms_norm_eps'),
    tieWordEmbeddings: config.tie_word_embeddings === true, attentionBias: config.attention_bias === true,
  });
}
