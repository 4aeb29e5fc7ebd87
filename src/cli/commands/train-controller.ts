/**
 * `lab train-controller`: caches the last-prompt-token residuals of the controller's input layers (chat template
 * with the generation prompt: the same token the flow observes at inference), trains the WAS controller with the
 * paper's defaults (MSE on s, balanced, AdamW 5e-5, batch 4, 4 epochs, clipping 1.0) and saves it with its metadata.
 * --layer-weights learned also gives w a training signal: per-prompt least-patch targets searched with the model
 * (src/core/method/layer-targets.ts), a loss term on the sigmoid outputs (src/core/controller/train.ts).
 */
import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { controllerInputLayers } from '../../core/controller/layers.js';
import { saveControllerFile } from '../../core/controller/node-io.js';
import { selectBackend } from '../../core/controller/backend.js';
import { PAPER_DEFAULTS, splitControllerDataset, trainController } from '../../core/controller/train.js';
import type { Controller, ControllerLoss, EpochMetrics } from '../../core/controller/metadata.js';
import { controllerActivations } from '../../core/method/activations.js';
import { readActivationCache, writeActivationCache } from '../../core/method/activations-node.js';
import { loadDirectionFor } from '../../core/method/artifacts-node.js';
import { loadPromptSet } from '../../core/method/datasets.js';
import { controllerPrompts } from '../../core/method/prompt-sets.js';
import { describeModel, modelFields } from '../../core/model/model-id.js';
import { modelFingerprint } from '../../core/eval/resume-check.js';
import { parseDevice } from '../../core/model/node-cli.js';
import { modelFolderInputs, refuseOverwritingInputs } from '../../core/util/same-file-node.js';
import { parseFinite, parseReal, parseStrength } from '../numbers.js';
import { ProgressBar } from '../progress.js';
import { parseCount, parseNumberList, parseSeed } from '../policy-options.js';
import { addModelOptions, loadCommandModel, type ModelCliOptions } from '../model-options.js';
import { DEFAULT_TARGET_GRID, layerTargets } from '../../core/method/layer-targets.js';
import { refusalFirstTokens } from '../../core/method/directions.js';
import type { LayerTargetInfo } from '../../core/controller/metadata.js';
import { calibrateNllThreshold, replyNll, type NllCalibration } from '../../core/eval/coherence.js';

/**
 * Training prompts of each class whose unsteered replies calibrate the 'coherent' target criterion's reply_nll
 * threshold: both classes, because the model's own refusals are its own text too (on the organism its several
 * refusal wordings cost more nats than its templated answers, and a benign-only threshold rejected every refusal).
 */
const TARGET_CALIBRATION_N = 32;

export interface TrainControllerCliOptions extends ModelCliOptions {
  direction: string;
  harmful: string;
  benign: string;
  textColumn?: string;
  n: string;
  valFraction: string;
  loss: string;
  epochs?: string;
  batch?: string;
  lr?: string;
  alpha?: string;
  seed: string;
  cache?: string;
  allowOtherModel?: boolean;
  /** paper (default) | learned */
  layerWeights?: string;
  targetGrid?: string;
  targetN?: string;
  targetMargin?: string;
  targetCriterion?: string;
  targetTokens?: string;
  wLossWeight?: string;
  out: string;
  json?: boolean;
}

export interface TrainControllerResult {
  out: string;
  model_id: string;
  model_name: string;
  direction_id: string;
  warnings: string[];
  input_layers: number[];
  rows: { harmful: number; benign: number; train: number; validation: number };
  epochs: EpochMetrics[];
  held_out_accuracy: number | null;
  held_out_balanced_accuracy: number | null;
  backend: string;
  activations_from_cache: boolean;
  /** What the user should hear (e.g. why an existing activation cache was not used). */
  notes: string[];
  layer_weights: 'paper' | 'learned';
  /** The target search ('learned' only). */
  layer_targets: LayerTargetInfo | null;
  seconds: { load: number; activations: number; targets: number; train: number; total: number };
}

export async function runTrainController(o: TrainControllerCliOptions, onEpoch: (m: EpochMetrics) => void = () => {}): Promise<TrainControllerResult> {
  if (!o.out) throw new Error('--out FILE is required (where the controller is written)');
  const loss = o.loss as ControllerLoss;
  if (loss !== 'mse' && loss !== 'bce') throw new Error(`--loss must be mse or bce, got "${o.loss}"`);
  parseDevice(o.device);
  const n = parseCount('n', o.n);
  const valFraction = parseReal('val-fraction', o.valFraction, 0, 1, { minOpen: true, maxOpen: true });
  const seed = parseSeed(o.seed);
  const epochs = o.epochs !== undefined ? parseCount('epochs', o.epochs, 100_000) : PAPER_DEFAULTS.epochs;
  const batchSize = o.batch !== undefined ? parseCount('batch', o.batch, 100_000) : PAPER_DEFAULTS.batchSize;
  const learningRate = o.lr !== undefined ? parseReal('lr', o.lr, 0, 1, { minOpen: true }) : PAPER_DEFAULTS.learningRate;
  const alpha = o.alpha !== undefined ? parseStrength('alpha', o.alpha) : PAPER_DEFAULTS.alpha;
  const recipe = o.layerWeights ?? 'paper';
  if (recipe !== 'paper' && recipe !== 'learned') throw new Error(`--layer-weights must be paper or learned, got "${recipe}"`);
  const learnedOnly = (['targetGrid', 'targetN', 'targetMargin', 'targetCriterion', 'targetTokens', 'wLossWeight'] as const).filter((k) => o[k] !== undefined);
  if (recipe === 'paper' && learnedOnly.length) throw new Error(`--target-grid, --target-n, --target-margin, --target-criterion, --target-tokens and --w-loss-weight only apply with --layer-weights learned`);
  const criterion = o.targetCriterion ?? 'first-token';
  if (criterion !== 'first-token' && criterion !== 'keyword' && criterion !== 'coherent') throw new Error(`--target-criterion must be first-token, keyword or coherent, got "${criterion}"`);
  const targetTokens = o.targetTokens !== undefined ? parseCount('target-tokens', o.targetTokens, 1_000_000) : 8;
  const grid = o.targetGrid !== undefined ? parseNumberList('target-grid', o.targetGrid) : DEFAULT_TARGET_GRID;
  const targetN = o.targetN !== undefined ? parseCount('target-n', o.targetN) : undefined;
  const margin = o.targetMargin !== undefined ? parseFinite('target-margin', o.targetMargin) : 0;
  const wLossWeight = o.wLossWeight !== undefined ? parseReal('w-loss-weight', o.wLossWeight, 0, Infinity, { minOpen: true }) : 1;
  refuseOverwritingInputs(
    [{ path: o.out, role: '--out' }, ...(o.cache ? [{ path: o.cache, role: '--cache' }] : [])],
    [{ path: o.direction, role: '--direction' }, { path: o.harmful, role: '--harmful' }, { path: o.benign, role: '--benign' }, ...modelFolderInputs(o.model)],
  );

  // Prompt sets first: a bad dataset fails before the model loads.
  const load = async (source: string, label: 'harmful' | 'benign', flag: string) => {
    const set = await loadPromptSet({ source, label, ...(o.textColumn ? { textColumn: o.textColumn } : {}) });
    return { name: `--${flag} ${source}`, prompts: set.prompts };
  };
  const chosen = controllerPrompts(await load(o.harmful, 'harmful', 'harmful'), await load(o.benign, 'benign', 'benign'), n, seed);

  const t0 = performance.now();
  const model = await loadCommandModel(o);
  try {
    const dir = await loadDirectionFor(o.direction, model, { allowOtherModel: o.allowOtherModel === true });
    const t1 = performance.now();
    const inputLayers = controllerInputLayers(model.numLayers);
    const { prompts, labels } = chosen;
    const notes: string[] = [];
    const key = { model: model.identity, inputLayers, hiddenSize: model.hiddenSize, prompts, ...(o.cache ? { fingerprint: await modelFingerprint(model) } : {}) };
    let x = o.cache ? await readActivationCache(o.cache, key) : null;
    const fromCache = x !== null;
    if (o.cache && !fromCache && existsSync(o.cache)) {
      notes.push(`activation cache ${o.cache} not used (it was made with other prompts, layers or another model); computing the activations`);
    }
    if (!x) {
      const bar = new ProgressBar('activations', prompts.length);
      x = await controllerActivations(model, prompts, inputLayers, (d, t) => bar.update(d, t));
      if (o.cache) await writeActivationCache(o.cache, key, x);
    }
    const t2 = performance.now();
    let targets: { targets: Float32Array; info: LayerTargetInfo } | null = null;
    if (recipe === 'learned') {
      // controllerPrompts puts the harmful prompts first
      const harmfulTexts = prompts.slice(0, chosen.counts.harmful);
      const benignTexts = prompts.slice(chosen.counts.harmful);
      let nllCalibration: NllCalibration | undefined;
      if (criterion === 'coherent') {
        // the reply_nll threshold: unsteered greedy replies of the probes' length to training prompts of both classes
        const cal = [...benignTexts.slice(0, TARGET_CALIBRATION_N), ...harmfulTexts.slice(0, TARGET_CALIBRATION_N)];
        const bar = new ProgressBar('reply_nll calibration', cal.length);
        const nlls: (number | null)[] = [];
        for (const p of cal) {
          const ids = model.formatChat(p).ids;
          const r = await model.generate({ inputIds: ids, maxNewTokens: targetTokens, steering: null });
          nlls.push((await replyNll(model, ids, r.tokenIds)).nll);
          bar.update(nlls.length, cal.length);
        }
        nllCalibration = calibrateNllThreshold(nlls, { set: `first ${TARGET_CALIBRATION_N} prompts of ${o.benign} and of ${o.harmful} (unsteered, ${targetTokens} tokens)` });
      }
      const bar = new ProgressBar('layer targets', Math.min(targetN ?? Infinity, chosen.counts.harmful));
      targets = await layerTargets(model, prompts, labels, {
        direction: dir.file.direction,
        alpha,
        refusalTokenIds: refusalFirstTokens(model.tokenizer),
        grid,
        margin,
        criterion,
        tokens: targetTokens,
        ...(nllCalibration ? { nllCalibration } : {}),
        ...(targetN !== undefined ? { search: targetN } : {}),
        onProgress: (d, t) => bar.update(d, t),
      });
    }
    const t2b = performance.now();

    const inputSize = inputLayers.length * model.hiddenSize;
    const { train, validation } = splitControllerDataset({ x, labels, ...(targets ? { layerTargets: targets.targets } : {}) }, inputSize, valFraction, seed);
    const backend = await selectBackend();
    const controller: Controller = await trainController(train, {
      ...modelFields(model.identity),
      numLayers: model.numLayers,
      hiddenSize: model.hiddenSize,
      inputLayers,
      loss,
      epochs,
      batchSize,
      learningRate,
      seed,
      validation,
      directionId: dir.id,
      alpha,
      ...(targets ? { layerWeights: 'learned' as const, layerWeightLossWeight: wLossWeight, layerTargetInfo: targets.info } : {}),
      trainingSetDescription: `harmful: ${o.harmful} (${chosen.counts.harmful}), benign: ${o.benign} (${chosen.counts.benign}); last prompt token with chat template and generation prompt; validation fraction ${valFraction}, seed ${seed}`,
      onEpoch,
    });
    await saveControllerFile(o.out, controller);
    const t3 = performance.now();
    const m = controller.metadata.metrics;
    return {
      out: o.out,
      model_id: model.id,
      model_name: model.identity.name,
      direction_id: dir.id,
      warnings: dir.warnings,
      input_layers: inputLayers,
      rows: { harmful: chosen.counts.harmful, benign: chosen.counts.benign, train: train.labels.length, validation: validation.labels.length },
      epochs: m.epochs,
      held_out_accuracy: m.held_out_accuracy,
      held_out_balanced_accuracy: m.held_out_balanced_accuracy,
      backend,
      activations_from_cache: fromCache,
      notes,
      layer_weights: recipe,
      layer_targets: targets?.info ?? null,
      seconds: { load: (t1 - t0) / 1000, activations: (t2 - t1) / 1000, targets: (t2b - t2) / 1000, train: (t3 - t2b) / 1000, total: (t3 - t0) / 1000 },
    };
  } finally {
    await model.dispose();
  }
}

const fmt = (x: number | null, d = 4) => (x === null ? '–' : x.toFixed(d));

export function register(program: Command): void {
  addModelOptions(program.command('train-controller').description('cache last-prompt-token activations and train the WAS controller (paper defaults)'))
    .requiredOption('--direction <file>', 'the direction file the controller will drive')
    .requiredOption('--harmful <dataset>', 'harmful prompts (dataset name or file; only harmful-labelled rows are used)')
    .requiredOption('--benign <dataset>', 'benign prompts (dataset name or file; only benign-labelled rows are used)')
    .option('--text-column <col>', 'user files: the column holding the prompt text')
    .option('--n <n>', 'prompts per class (the released code: 500)', '500')
    .option('--val-fraction <f>', 'held-out fraction of each class', '0.2')
    .option('--loss <loss>', 'mse (paper) | bce (released code)', 'mse')
    .option('--epochs <e>', `epochs (paper ${PAPER_DEFAULTS.epochs})`)
    .option('--batch <b>', `batch size (paper ${PAPER_DEFAULTS.batchSize})`)
    .option('--lr <lr>', `learning rate (paper ${PAPER_DEFAULTS.learningRate})`)
    .option('--alpha <a>', `patch strength stored with the controller (paper ${PAPER_DEFAULTS.alpha})`)
    .option('--seed <s>', 'sampling, split and initialisation seed', '0')
    .option('--cache <file>', 'activation cache (.safetensors): reused when model (id and variant), layers and prompts match')
    .option('--allow-other-model', 'accept a direction made for another model of the same shape (it then warns)')
    .option(
      '--layer-weights <recipe>',
      'paper (default: MSE on s only; w learns nothing of its own) | learned (also fit w to per-prompt targets: the least gain per layer, ' +
        'searched greedily from the last layer down, that keeps the first reply token of a harmful prompt a refusal under the patch g_l * alpha * d; benign prompts: 0)',
    )
    .option('--target-grid <list>', `learned: gains tried per layer, descending from 1 to 0 (default ${DEFAULT_TARGET_GRID.join(',')})`)
    .option('--target-n <n>', 'learned: search targets for the first n harmful prompts only (the rest get no w term)')
    .option('--target-criterion <c>', "learned: what counts as a refusal of the patched prompt: first-token (default: the first reply token's refusal score log p - log(1-p) > margin) | keyword (arditi keywords in the first --target-tokens greedy tokens) | coherent (keyword and reply_nll <= the 0.95-quantile of unsteered replies to 32 benign and 32 harmful training prompts)")
    .option('--target-tokens <k>', 'learned, keyword criterion: reply tokens generated per probe (default 8)')
    .option('--target-margin <x>', 'learned, first-token criterion: refusal when the first token refusal score log p - log(1-p) exceeds this (default 0)')
    .option('--w-loss-weight <x>', 'learned: weight of the w term in the loss (default 1)')
    .requiredOption('--out <file>', 'output controller file (.safetensors)')
    .option('--json', 'print the result as JSON')
    .action(async (opts: TrainControllerCliOptions) => {
      const r = await runTrainController(opts, (m) => {
        if (!opts.json) {
          process.stdout.write(
            `epoch ${m.epoch}: train loss ${fmt(m.train_loss)}, held-out loss ${fmt(m.val_loss)}, held-out accuracy ${fmt(m.val_accuracy, 3)} (${m.seconds.toFixed(2)} s)\n`,
          );
        }
      });
      for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
      for (const n of r.notes) process.stderr.write(`note: ${n}\n`);
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
        return;
      }
      process.stdout.write(
        `controller for ${describeModel({ id: r.model_id, name: r.model_name })} (input layers ${r.input_layers.join(', ')}; direction ${r.direction_id}) -> ${r.out}\n` +
          `  ${r.rows.train} training rows, ${r.rows.validation} held out; held-out accuracy ${fmt(r.held_out_accuracy, 3)} (balanced ${fmt(r.held_out_balanced_accuracy, 3)}); tfjs backend ${r.backend}\n` +
          (r.layer_targets
            ? `  layer weights learned: targets searched for ${r.layer_targets.harmful_rows} harmful prompts (${r.layer_targets.refused_unpatched} refused unpatched, ${r.layer_targets.turned_by_patch} turned by a patch (mean least uniform gain ${r.layer_targets.mean_uniform_gain?.toFixed(2) ?? '-'}), ${r.layer_targets.no_target} not turned; ${r.layer_targets.probes} probes, ${r.seconds.targets.toFixed(1)} s)\n`
            : '  layer weights: paper recipe (no w term)\n') +
          `  ${r.seconds.load.toFixed(2)} s load, ${r.seconds.activations.toFixed(2)} s activations${r.activations_from_cache ? ' (cache)' : ''}, ${r.seconds.train.toFixed(2)} s training\n`,
      );
    });
}
