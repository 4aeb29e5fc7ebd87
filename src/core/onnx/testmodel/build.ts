/**
 * Writes a test-model folder that transformers.js (AutoModelForCausalLM + AutoTokenizer) loads from a local path:
 * config.json, generation_config.json, tokenizer files, steerlab_build.json and onnx/<file> (+ .onnx_data).
 * Weights come from generateWeights(shape, seed), so the same options always give byte-identical files and the
 * reference forward pass can recompute what the graph holds.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { GraphProto } from 'onnx-buf';
import { serializeModel } from '../graph-builder.js';
import { TEST_TOPOLOGIES, validateShape, type DecoderShape, type TestDtype, type TestTopology } from './config.js';
import { buildConfigJson, buildGenerationConfigJson, stableJson, writeFileAtomic } from './files.js';
import { buildFusedGraph } from './fused.js';
import { buildMergedGraph } from './merged.js';
import { buildPlainGraph } from './plain.js';
import { MIN_VOCAB_SIZE, buildTokenizerFiles } from './tokenizer.js';
import { generateWeights } from './weights.js';

export interface BuildOptions {
  shape: DecoderShape;
  topology: TestTopology;
  seed: number;
  /** default: automatic, above EXTERNAL_DATA_THRESHOLD bytes of initializers */
  externalData?: boolean;
}

export interface BuiltModel {
  dir: string;
  /** path relative to dir, e.g. 'onnx/model.onnx' */
  onnxFile: string;
  /** transformers.js model_file_name: 'model' | 'decoder_model_merged' */
  modelFileName: string;
  dtype: TestDtype;
  shape: DecoderShape;
  seed: number;
  topology: TestTopology;
}

/** Protobuf caps a message at 2 GiB; stay well below so that a model plus its graph always fits. */
export const EXTERNAL_DATA_THRESHOLD = 1.5e9;
/** Tensors at least this large go to the .onnx_data file; small constants stay inline, as onnx's converter does. */
const EXTERNAL_MIN_BYTES = 1024;

interface TopologyFiles {
  modelFileName: 'model' | 'decoder_model_merged';
  dtype: TestDtype;
  /** file name inside onnx/: `${modelFileName}${dtype suffix}.onnx`, as transformers.js resolves it */
  onnxBaseName: string;
  irVersion: number;
}

export function topologyFiles(topology: TestTopology): TopologyFiles {
  switch (topology) {
    case 'plain':
      return { modelFileName: 'model', dtype: 'fp32', onnxBaseName: 'model.onnx', irVersion: 8 };
    case 'fused':
      return { modelFileName: 'model', dtype: 'fp32', onnxBaseName: 'model.onnx', irVersion: 10 };
    case 'fused-q4':
      return { modelFileName: 'model', dtype: 'q4', onnxBaseName: 'model_q4.onnx', irVersion: 10 };
    case 'fused-q4f16':
      return { modelFileName: 'model', dtype: 'q4f16', onnxBaseName: 'model_q4f16.onnx', irVersion: 10 };
    case 'merged':
      return { modelFileName: 'decoder_model_merged', dtype: 'fp32', onnxBaseName: 'decoder_model_merged.onnx', irVersion: 8 };
  }
}

/** Checks everything a build needs before any work starts; errors name the option and what was expected. */
export function validateBuildOptions(opts: BuildOptions): void {
  if (!opts || typeof opts !== 'object') throw new Error('buildTestModel: options object required');
  if (!TEST_TOPOLOGIES.includes(opts.topology)) {
    throw new Error(`buildTestModel: topology must be one of ${TEST_TOPOLOGIES.join(', ')}, got ${String(opts.topology)}`);
  }
  if (!Number.isInteger(opts.seed) || opts.seed < 0 || opts.seed > 0xffffffff) {
    throw new Error(`buildTestModel: seed must be an integer in [0, 2^32), got ${opts.seed}`);
  }
  if (opts.externalData !== undefined && typeof opts.externalData !== 'boolean') {
    throw new Error(`buildTestModel: externalData must be true, false or absent, got ${String(opts.externalData)}`);
  }
  validateShape(opts.shape);
  if (opts.shape.vocabSize < MIN_VOCAB_SIZE) {
    throw new Error(
      `buildTestModel: vocabSize must be >= ${MIN_VOCAB_SIZE} (3 special + 256 byte tokens + a few merges), got ${opts.shape.vocabSize}`,
    );
  }
}

function buildGraph(opts: BuildOptions): { graph: GraphProto; opsets: { domain: string; version: number }[] } {
  const weights = generateWeights(opts.shape, opts.seed);
  switch (opts.topology) {
    case 'plain':
      return buildPlainGraph(opts.shape, weights);
    case 'merged':
      return buildMergedGraph(opts.shape, weights);
    case 'fused':
      return buildFusedGraph(opts.shape, weights, { q4f16: false });
    case 'fused-q4':
      return buildFusedGraph(opts.shape, weights, { q4f16: false, q4: true });
    case 'fused-q4f16':
      return buildFusedGraph(opts.shape, weights, { q4f16: true });
  }
}

function initializerBytes(graph: GraphProto): number {
  let n = 0;
  for (const t of graph.initializer) n += t.rawData.byteLength;
  return n;
}

export async function buildTestModel(outDir: string, opts: BuildOptions): Promise<BuiltModel> {
  if (typeof outDir !== 'string' || outDir.length === 0) throw new Error('buildTestModel: outDir must be a non-empty path');
  validateBuildOptions(opts);
  const dir = resolve(outDir);
  const files = topologyFiles(opts.topology);
  const shape = { ...opts.shape };

  const { graph, opsets } = buildGraph({ ...opts, shape });
  const externalData = opts.externalData ?? initializerBytes(graph) > EXTERNAL_DATA_THRESHOLD;
  const { model, externalData: dataBytes } = serializeModel(graph, {
    opsets,
    irVersion: files.irVersion,
    externalData: externalData ? { location: `${files.onnxBaseName}_data`, minBytes: EXTERNAL_MIN_BYTES } : undefined,
  });

  await mkdir(join(dir, 'onnx'), { recursive: true });
  const onnxFile = `onnx/${files.onnxBaseName}`;
  // Data first: a folder whose .onnx exists must never point at a missing .onnx_data.
  if (dataBytes) await writeFileAtomic(join(dir, `${onnxFile}_data`), dataBytes);
  else await rm(join(dir, `${onnxFile}_data`), { force: true }); // stale data of an earlier build in this folder
  await writeFileAtomic(join(dir, onnxFile), model);

  const config = buildConfigJson({ shape, topology: opts.topology, onnxBaseName: files.onnxBaseName, externalData, dtype: files.dtype });
  const tok = buildTokenizerFiles(shape.vocabSize, shape.maxPositionEmbeddings);
  const json: [string, unknown][] = [
    ['config.json', config],
    ['generation_config.json', buildGenerationConfigJson()],
    ['tokenizer.json', tok['tokenizer.json']],
    ['tokenizer_config.json', tok['tokenizer_config.json']],
    ['special_tokens_map.json', tok['special_tokens_map.json']],
    [
      'steerlab_build.json',
      { topology: opts.topology, seed: opts.seed, externalData, onnxFile, modelFileName: files.modelFileName, dtype: files.dtype, shape },
    ],
  ];
  for (const [name, value] of json) await writeFileAtomic(join(dir, name), stableJson(value));

  return { dir, onnxFile, modelFileName: files.modelFileName, dtype: files.dtype, shape, seed: opts.seed, topology: opts.topology };
}
