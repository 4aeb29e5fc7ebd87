/**
 * `lab build-test-model`: writes a seeded Llama-family test decoder folder that transformers.js loads from a local
 * path (see src/core/onnx/testmodel/build.ts). A preset gives the shape; single dimensions can be overridden.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { buildTestModel, type BuiltModel } from '../../core/onnx/testmodel/build.js';
import { SHAPE_PRESETS, TEST_TOPOLOGIES, type DecoderShape, type TestTopology } from '../../core/onnx/testmodel/config.js';
import { MAX_LAYERS, parseInteger, parseReal, parseSeedOption } from '../numbers.js';

export interface BuildTestModelCliOptions {
  out: string;
  topology: string;
  preset: string;
  layers?: string;
  hidden?: string;
  heads?: string;
  kvHeads?: string;
  headDim?: string;
  intermediate?: string;
  vocab?: string;
  maxPos?: string;
  ropeTheta?: string;
  rmsNormEps?: string;
  tieEmbeddings?: boolean;
  attentionBias?: boolean;
  seed: string;
  externalData?: boolean;
  json?: boolean;
}

/** Upper bounds of the shape flags: far above any real model, low enough to refuse a typo before allocating. */
const LIMITS: Record<string, number> = {
  layers: MAX_LAYERS, hidden: 65_536, heads: 1024, 'kv-heads': 1024, 'head-dim': 4096, intermediate: 1 << 20, vocab: 1 << 21, 'max-pos': 1 << 24,
};

function dimension(flag: string, v: string): number {
  return parseInteger(flag, v, 1, LIMITS[flag]!);
}

/** Preset plus overrides; head_dim follows hidden/heads when either changes and --head-dim is not given. */
export function shapeFromCli(o: BuildTestModelCliOptions): DecoderShape {
  const preset = SHAPE_PRESETS[o.preset];
  if (!preset) throw new Error(`--preset must be one of ${Object.keys(SHAPE_PRESETS).join(', ')}, got "${o.preset}"`);
  const s: DecoderShape = { ...preset };
  if (o.layers !== undefined) s.numLayers = dimension('layers', o.layers);
  if (o.hidden !== undefined) s.hiddenSize = dimension('hidden', o.hidden);
  if (o.heads !== undefined) s.numHeads = dimension('heads', o.heads);
  if (o.kvHeads !== undefined) s.numKvHeads = dimension('kv-heads', o.kvHeads);
  if (o.headDim !== undefined) {
    s.headDim = dimension('head-dim', o.headDim);
  } else if (o.hidden !== undefined || o.heads !== undefined) {
    if (s.hiddenSize % s.numHeads !== 0) {
      throw new Error(`--hidden (${s.hiddenSize}) must be a multiple of --heads (${s.numHeads}), or give --head-dim explicitly`);
    }
    s.headDim = s.hiddenSize / s.numHeads;
  }
  if (o.intermediate !== undefined) s.intermediateSize = dimension('intermediate', o.intermediate);
  if (o.vocab !== undefined) s.vocabSize = dimension('vocab', o.vocab);
  if (o.maxPos !== undefined) s.maxPositionEmbeddings = dimension('max-pos', o.maxPos);
  if (o.ropeTheta !== undefined) s.ropeTheta = parseReal('rope-theta', o.ropeTheta, 0, 1e9, { minOpen: true });
  if (o.rmsNormEps !== undefined) s.rmsNormEps = parseReal('rms-norm-eps', o.rmsNormEps, 0, 1, { minOpen: true, maxOpen: true });
  if (o.tieEmbeddings !== undefined) s.tieWordEmbeddings = o.tieEmbeddings;
  if (o.attentionBias !== undefined) s.attentionBias = o.attentionBias;
  return s;
}

export interface BuildTestModelResult extends BuiltModel {
  files: { path: string; bytes: number }[];
  totalBytes: number;
  ms: number;
}

/** The command's work without commander, so tests can call it directly. */
export async function runBuildTestModel(o: BuildTestModelCliOptions): Promise<BuildTestModelResult> {
  if (!o.out) throw new Error('--out DIR is required');
  if (!TEST_TOPOLOGIES.includes(o.topology as TestTopology)) {
    throw new Error(`--topology must be one of ${TEST_TOPOLOGIES.join(', ')}, got "${o.topology}"`);
  }
  const seed = parseSeedOption(o.seed);
  const shape = shapeFromCli(o);
  const t0 = performance.now();
  const built = await buildTestModel(o.out, {
    shape,
    topology: o.topology as TestTopology,
    seed,
    externalData: o.externalData ? true : undefined,
  });
  const ms = performance.now() - t0;
  const names = [built.onnxFile, `${built.onnxFile}_data`, 'config.json', 'generation_config.json', 'tokenizer.json',
    'tokenizer_config.json', 'special_tokens_map.json', 'steerlab_build.json'];
  const files: { path: string; bytes: number }[] = [];
  for (const path of names) {
    const st = await stat(join(built.dir, path)).catch(() => null);
    if (st) files.push({ path, bytes: st.size });
  }
  return { ...built, files, totalBytes: files.reduce((a, f) => a + f.bytes, 0), ms: Math.round(ms) };
}

const size = (n: number) => (n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e3).toFixed(1)} kB`);

export function register(program: Command): void {
  program
    .command('build-test-model')
    .description('write a seeded Llama-family ONNX test decoder folder that transformers.js loads from a local path')
    .requiredOption('--out <dir>', 'output folder')
    .option('--topology <t>', `graph form: ${TEST_TOPOLOGIES.join(' | ')}`, 'plain')
    .option('--preset <name>', `shape preset: ${Object.keys(SHAPE_PRESETS).join(' | ')}`, 'tiny')
    .option('--layers <n>', 'number of decoder layers')
    .option('--hidden <n>', 'hidden size')
    .option('--heads <n>', 'attention heads')
    .option('--kv-heads <n>', 'key/value heads (grouped-query attention)')
    .option('--head-dim <n>', 'head dimension (default hidden / heads when either is overridden)')
    .option('--intermediate <n>', 'MLP intermediate size')
    .option('--vocab <n>', 'vocabulary size (>= 263)')
    .option('--max-pos <n>', 'max_position_embeddings')
    .option('--rope-theta <x>', 'rotary base')
    .option('--rms-norm-eps <x>', 'RMSNorm epsilon')
    .option('--tie-embeddings', 'lm_head shares the embedding matrix')
    .option('--no-tie-embeddings', 'separate lm_head matrix')
    .option('--attention-bias', 'q/k/v projections carry a bias (writes a qwen2 config)')
    .option('--no-attention-bias', 'no q/k/v bias (writes a llama config)')
    .option('--seed <n>', 'weight seed', '0')
    .option('--external-data', 'write weights to onnx/<file>.onnx_data (automatic above 1.5 GB)')
    .option('--json', 'print the result as JSON')
    .action(async (opts: BuildTestModelCliOptions) => {
      const r = await runBuildTestModel(opts);
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
        return;
      }
      const s = r.shape;
      process.stdout.write(
        `built ${r.topology} test model (${s.numLayers} layers, hidden ${s.hiddenSize}, vocab ${s.vocabSize}, seed ${r.seed}) ` +
          `in ${r.dir} in ${r.ms} ms\n` +
          r.files.map((f) => `  ${f.path.padEnd(34)} ${size(f.bytes)}\n`).join('') +
          `  load with model_file_name '${r.modelFileName}', dtype '${r.dtype}'\n`,
      );
    });
}
