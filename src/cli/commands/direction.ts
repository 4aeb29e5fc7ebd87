/**
 * `lab direction`: a steering direction computed with the model and written as a direction file (safetensors +
 * metadata). Methods: embedding (the paper's Eq. 7, from the unembedding matrix, else the input embedding),
 * diff-in-means (Arditi et al., selected with the model's behaviour; ablation approximated additively, see
 * src/core/method/directions.ts), import (a user's vector, checked against the model).
 */
import type { Command } from 'commander';
import { loadPromptSet } from '../../core/method/datasets.js';
import { directionPrompts } from '../../core/method/prompt-sets.js';
import { lastTokenActivations } from '../../core/method/activations.js';
import {
  diffInMeansOfModel, directionReport, embeddingDirectionOfModel, type DiffInMeansInfo, type EmbeddingDirectionInfo, type LastTokenActivations,
} from '../../core/method/directions.js';
import type { LayerSeparation } from '../../core/steering/diff-in-means.js';
import { writeFileAtomic } from '../../core/util/atomic-write.js';
import { directionId } from '../../core/method/artifacts.js';
import { describeModel, modelFields, type ModelVariant } from '../../core/model/model-id.js';
import type { SteerableModel } from '../../core/model/steerable.js';
import type { DirectionFile } from '../../core/steering/direction-file.js';
import { importDirectionFile, writeDirectionFile } from '../../core/steering/direction-file-node.js';
import type { EmbeddingSource } from '../../core/onnx/weights-reader.js';
import { parseDevice } from '../../core/model/node-cli.js';
import { modelFolderInputs, refuseOverwritingInputs } from '../../core/util/same-file-node.js';
import { ProgressBar } from '../progress.js';
import { parseFinite, parseReal } from '../numbers.js';
import { parseCount, parseIndex, parseSeed } from '../policy-options.js';
import { addModelOptions, loadCommandModel, type ModelCliOptions } from '../model-options.js';

export interface DirectionCliOptions extends ModelCliOptions {
  method: string;
  file?: string;
  layer?: string;
  source?: string;
  harmful: string;
  harmless: string;
  /** User CSV/JSONL files given to --harmful / --harmless: the column holding the prompt text. */
  textColumn?: string;
  n: string;
  valN: string;
  seed: string;
  klThreshold?: string;
  inducedRefusalThreshold?: string;
  pruneLayerFraction?: string;
  out: string;
  /** Also fit a CAST condition on the harmful/harmless training prompts and write it here (the --cast file format). */
  castOut?: string;
  json?: boolean;
}

export interface DirectionRunResult {
  out: string;
  id: string;
  method: string;
  model_id: string;
  model_name: string;
  model_variant: ModelVariant;
  hidden_size: number;
  num_layers: number;
  embedding?: EmbeddingDirectionInfo;
  diff_in_means?: DiffInMeansInfo;
  import?: { source_file: string; source_norm: number | null };
  /** Per residual index: separation of the training prompts along the direction (diff-in-means, or with --cast-out). */
  separation?: LayerSeparation[];
  /** The CAST condition written to --cast-out (null when it could not be fitted). */
  cast?: { file: string; layer: number; threshold: number; active_when: string } | null;
  seconds: { load: number; compute: number; total: number };
}

const METHODS = ['embedding', 'diff-in-means', 'import'] as const;

async function harmfulHarmless(o: DirectionCliOptions) {
  const n = parseCount('n', o.n);
  const valN = parseCount('val-n', o.valN);
  const seed = parseSeed(o.seed);
  const load = async (source: string, label: 'harmful' | 'benign', flag: string) => {
    const set = await loadPromptSet({ source, label, ...(o.textColumn ? { textColumn: o.textColumn } : {}) });
    return { name: `--${flag} ${source}`, prompts: set.prompts };
  };
  const sets = directionPrompts(await load(o.harmful, 'harmful', 'harmful'), await load(o.harmless, 'benign', 'harmless'), n, valN, seed);
  return { hf: sets.harmful, hl: sets.harmless, seed };
}

export async function runDirection(o: DirectionCliOptions, log: (s: string) => void = () => {}): Promise<DirectionRunResult> {
  if (!(METHODS as readonly string[]).includes(o.method)) throw new Error(`--method must be one of ${METHODS.join(', ')}, got "${o.method}"`);
  if (!o.out || !o.out.endsWith('.safetensors')) throw new Error(`--out must name a .safetensors file, got "${o.out ?? ''}"`);
  if (o.method === 'import' && !o.file) throw new Error('--method import needs --file FILE (safetensors, JSON array or .npy)');
  if (o.castOut !== undefined && (o.method === 'import' || !o.castOut.endsWith('.json'))) {
    throw new Error(`--cast-out must name a .json file and works with --method embedding or diff-in-means, got "${o.castOut}" with --method ${o.method}`);
  }
  if (o.source !== undefined && o.source !== 'unembedding' && o.source !== 'input-embedding') {
    throw new Error(`--source must be unembedding or input-embedding, got "${o.source}"`);
  }
  // Every number (and the device) before the model loads.
  parseDevice(o.device);
  const thresholds = {
    kl: o.klThreshold !== undefined ? parseReal('kl-threshold', o.klThreshold, 0, Infinity) : undefined,
    induced: o.inducedRefusalThreshold !== undefined ? parseFinite('induced-refusal-threshold', o.inducedRefusalThreshold) : undefined,
    prune: o.pruneLayerFraction !== undefined ? parseReal('prune-layer-fraction', o.pruneLayerFraction, 0, 1, { maxOpen: true }) : undefined,
  };
  if (o.method === 'diff-in-means') {
    parseCount('n', o.n);
    parseCount('val-n', o.valN);
    parseSeed(o.seed);
  }
  refuseOverwritingInputs(
    [{ path: o.out, role: '--out' }, ...(o.castOut ? [{ path: o.castOut, role: '--cast-out' }] : [])],
    [...(o.file ? [{ path: o.file, role: '--file' }] : []), { path: o.harmful, role: '--harmful' }, { path: o.harmless, role: '--harmless' }, ...modelFolderInputs(o.model)],
  );
  const t0 = performance.now();
  const model: SteerableModel = await loadCommandModel(o);
  const t1 = performance.now();
  try {
    let file: DirectionFile;
    const result: Partial<DirectionRunResult> = {};
    let acts: LastTokenActivations | null = null;
    if (o.method === 'embedding') {
      const r = await embeddingDirectionOfModel(model, { prefer: (o.source as EmbeddingSource | undefined) ?? 'unembedding' });
      file = r.file;
      result.embedding = r.info;
      if (o.castOut) {
        const { hf, hl } = await harmfulHarmless(o);
        acts = { harmful: await lastTokenActivations(model, hf.train), harmless: await lastTokenActivations(model, hl.train) };
      }
    } else if (o.method === 'diff-in-means') {
      const { hf, hl, seed } = await harmfulHarmless(o);
      const bars = new Map<string, ProgressBar>();
      const r = await diffInMeansOfModel(
        model,
        { harmfulTrain: hf.train, harmlessTrain: hl.train, harmfulVal: hf.val, harmlessVal: hl.val },
        {
          seed,
          datasets: { harmful: o.harmful, harmless: o.harmless },
          selection: {
            ...(thresholds.kl !== undefined ? { klThreshold: thresholds.kl } : {}),
            ...(thresholds.induced !== undefined ? { inducedRefusalThreshold: thresholds.induced } : {}),
            ...(thresholds.prune !== undefined ? { pruneLayerFraction: thresholds.prune } : {}),
          },
          onProgress: (stage, done, total) => {
            let b = bars.get(stage);
            if (!b) bars.set(stage, (b = new ProgressBar(stage, total)));
            b.update(done, total);
          },
        },
      );
      file = r.file;
      result.diff_in_means = r.info;
      acts = r.lastToken;
    } else {
      const layer = o.layer !== undefined ? parseIndex('layer', o.layer, model.numLayers) : undefined;
      file = await importDirectionFile(o.file!, { ...modelFields(model.identity), hiddenSize: model.hiddenSize, numLayers: model.numLayers, ...(layer !== undefined ? { layer } : {}) });
      result.import = { source_file: o.file!, source_norm: file.metadata.source_norm ?? null };
    }
    await writeDirectionFile(o.out, file);
    if (acts) {
      // The lab's separation plot and CAST condition, from the same core function (directionReport).
      const report = directionReport(file, acts, model.numLayers, model.hiddenSize);
      result.separation = report.separation;
      if (o.castOut) {
        const c = report.cast;
        if (c) await writeFileAtomic(o.castOut, `${JSON.stringify({ vector: Array.from(c.vector), layer: c.layer, threshold: c.threshold, activeWhen: c.activeWhen })}\n`);
        result.cast = c ? { file: o.castOut, layer: c.layer, threshold: c.threshold, active_when: c.activeWhen } : null;
      }
    }
    const t2 = performance.now();
    log(`wrote ${o.out}`);
    return {
      out: o.out,
      id: await directionId(file),
      method: o.method,
      model_id: model.id,
      model_name: model.identity.name,
      model_variant: { ...model.identity.variant },
      hidden_size: model.hiddenSize,
      num_layers: model.numLayers,
      ...result,
      seconds: { load: (t1 - t0) / 1000, compute: (t2 - t1) / 1000, total: (t2 - t0) / 1000 },
    };
  } finally {
    await model.dispose();
  }
}

function describe(r: DirectionRunResult): string {
  const lines = [`direction ${r.id} (${r.method}) for ${describeModel({ id: r.model_id, name: r.model_name })}: hidden ${r.hidden_size}, ${r.num_layers} layers -> ${r.out}`];
  if (r.embedding) {
    const e = r.embedding;
    lines.push(`  rows of the ${e.source_matrix} "${e.tensor}" (${e.storage}); ${e.refusal_token_count} refusal and ${e.answer_token_count} answer tokens pooled; |mean difference| ${e.raw_norm.toPrecision(4)}`);
    if (e.fallback_reason) lines.push(`  unembedding not used: ${e.fallback_reason}`);
  }
  if (r.diff_in_means) {
    const d = r.diff_in_means;
    const s = d.selected;
    lines.push(`  ${d.candidates} candidates (${d.positions} post-instruction positions), ${d.evaluated} evaluated`);
    lines.push(`  selected residual index ${s.residual_index} (steering row ${s.steering_row}), position ${s.position}, |r| ${s.norm.toPrecision(4)}`);
    if (s.scores) lines.push(`  ablation refusal score ${s.scores.ablationRefusalScore.toFixed(3)}, induced refusal score ${s.scores.steeringRefusalScore.toFixed(3)}, KL ${s.scores.kl.toFixed(4)}`);
    lines.push(`  ablation: ${d.ablation}`);
  }
  if (r.cast) lines.push(`  CAST condition at residual index ${r.cast.layer} (steer when similarity ${r.cast.active_when === 'above' ? '>=' : '<='} ${r.cast.threshold.toPrecision(4)}) -> ${r.cast.file}`);
  else if (r.cast === null) lines.push('  no CAST condition could be fitted (fewer than two prompt pairs)');
  if (r.import) lines.push(`  imported from ${r.import.source_file}${r.import.source_norm !== null ? ` (norm ${r.import.source_norm.toPrecision(4)})` : ''}`);
  lines.push(`  ${r.seconds.load.toFixed(2)} s load, ${r.seconds.compute.toFixed(2)} s compute`);
  return `${lines.join('\n')}\n`;
}

export function register(program: Command): void {
  addModelOptions(program.command('direction').description('compute a steering direction with the model and write it as a direction file'))
    .requiredOption('--method <m>', 'embedding | diff-in-means | import')
    .option('--file <file>', 'import: the vector file (safetensors, JSON array, .npy)')
    .option('--layer <l>', 'import: row to take from a [num_layers, hidden] array')
    .option('--source <matrix>', 'embedding: unembedding (paper, default) | input-embedding (released code)')
    .option('--harmful <dataset>', 'diff-in-means: harmful prompts', 'harmful-train')
    .option('--harmless <dataset>', 'diff-in-means: harmless prompts', 'harmless-train')
    .option('--text-column <col>', 'diff-in-means with user CSV/JSONL files as --harmful / --harmless: the prompt column')
    .option('--n <n>', 'diff-in-means: training prompts per class (Arditi: 128)', '128')
    .option('--val-n <n>', 'diff-in-means: validation prompts per class (Arditi: 32)', '32')
    .option('--seed <s>', 'sampling seed', '0')
    .option('--kl-threshold <x>', 'diff-in-means: drop candidates whose ablation KL exceeds this (default 0.1)')
    .option('--induced-refusal-threshold <x>', 'diff-in-means: minimum refusal score the added vector must induce (default 0)')
    .option('--prune-layer-fraction <x>', 'diff-in-means: drop candidates in the last fraction of layers (default 0.2)')
    .requiredOption('--out <file>', 'output .safetensors direction file')
    .option('--cast-out <file>', 'also fit a CAST condition on the training prompts (best-F1 layer and threshold) and write it as JSON for --cast')
    .option('--json', 'print the result as JSON')
    .action(async (opts: DirectionCliOptions) => {
      const r = await runDirection(opts);
      process.stdout.write(opts.json ? `${JSON.stringify(r, null, 2)}\n` : describe(r));
    });
}
