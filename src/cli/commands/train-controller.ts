/**
 * `lab train-controller`: caches the last-prompt-token residuals of the controller's input layers (chat template
 * with the generation prompt: the same token the flow observes at inference), trains the WAS controller with the
 * paper's defaults (MSE on s, balanced, AdamW 5e-5, batch 4, 4 epochs, clipping 1.0) and saves it with its metadata.
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
import { parseReal, parseStrength } from '../numbers.js';
import { ProgressBar } from '../progress.js';
import { parseCount, parseSeed } from '../policy-options.js';
import { addModelOptions, loadCommandModel, type ModelCliOptions } from '../model-options.js';

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
  seconds: { load: number; activations: number; train: number; total: number };
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

    const inputSize = inputLayers.length * model.hiddenSize;
    const { train, validation } = splitControllerDataset({ x, labels }, inputSize, valFraction, seed);
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
      seconds: { load: (t1 - t0) / 1000, activations: (t2 - t1) / 1000, train: (t3 - t2) / 1000, total: (t3 - t0) / 1000 },
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
          `  ${r.seconds.load.toFixed(2)} s load, ${r.seconds.activations.toFixed(2)} s activations${r.activations_from_cache ? ' (cache)' : ''}, ${r.seconds.train.toFixed(2)} s training\n`,
      );
    });
}
