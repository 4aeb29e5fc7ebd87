/**
 * A trained controller: its metadata (what model, layers, direction and training produced it) together with its
 * parameters. The metadata object is stored verbatim (snake_case JSON) in the controller file (format.ts).
 */
import type { DecoderLayer } from '../model/layer-index.js';
import { recordedModelProblem, type ModelVariant } from '../model/model-id.js';
import { validateInputLayers } from './layers.js';
import type { NllCalibration } from '../eval/coherence.js';
import type { ControllerParams, ControllerShape, InputStandardization } from './params.js';

export const CONTROLLER_FORMAT = 'steerlab-controller';
export const CONTROLLER_FORMAT_VERSION = 1;

export type ControllerLoss = 'mse' | 'bce';
export const CONTROLLER_LOSSES: readonly ControllerLoss[] = ['mse', 'bce'];
export type StandardizationKind = 'none' | 'per-feature';

export interface EpochMetrics {
  epoch: number;
  /** Class-weighted training loss over the epoch (the objective actually minimised). */
  train_loss: number;
  /** Same objective on the validation set after the epoch; null without a validation set. */
  val_loss: number | null;
  /** Fraction of validation prompts classified right by s > threshold; null without a validation set. */
  val_accuracy: number | null;
  /** Mean of the harmful and benign recall (robust to imbalanced validation sets); null without validation. */
  val_balanced_accuracy: number | null;
  /** 'learned' layer weights: mean over validation rows with targets of (1/L) sum_l (w_l - t_l)^2. */
  val_layer_weight_mse?: number | null;
  seconds: number;
}

export interface ControllerMetrics {
  epochs: EpochMetrics[];
  /** Held-out accuracy after the last epoch (null without a validation set). */
  held_out_accuracy: number | null;
  held_out_balanced_accuracy: number | null;
  /** Decision threshold on s used for the accuracies: 0.5 for MSE (targets 0/1), 0 for BCE (s is a logit). */
  threshold: number;
  /** tfjs backend the training ran on (determinism holds per backend). */
  backend: string;
}

export interface ControllerTrainingConfig {
  epochs: number;
  batch_size: number;
  learning_rate: number;
  weight_decay: number;
  clip_norm: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Class balancing on: each class contributes lambda / (1 - lambda) of the loss whatever its count. */
  balance: boolean;
  lambda: number;
  init: string;
}

export interface ControllerTrainingSetInfo {
  description: string;
  harmful: number;
  benign: number;
  validation_harmful: number;
  validation_benign: number;
}

/** How the layer-weight targets of the 'learned' recipe were made (src/core/method/layer-targets.ts). */
export interface LayerTargetInfo {
  method: 'least-refusal-patch';
  /** What counts as a refusal of the patched prompt (the first token's refusal score, or keywords in the first tokens). */
  criterion:
    | { kind: 'first-token'; margin: number }
    | { kind: 'keyword'; tokens: number; judge: string }
    | { kind: 'coherent'; tokens: number; judge: string; calibration: NllCalibration };
  /** Gains tried per layer, descending (the first is the full patch). */
  grid: number[];
  /** The refusal tokens of the first-token criterion's refusal score. */
  refusal_token_ids: number[];
  /** Steering positions of the search's forward passes (the flow's setting). */
  positions: 'last' | 'all' | 'new';
  /** Patch strength of the search: row l = g_l * alpha * d (s = 1, the harmful target of s). */
  alpha: number;
  /** The search: start at the least uniform gain that refuses, then lower one layer at a time from the last. */
  order: 'least-uniform-gain, then last-to-first';
  /** Benign prompts' target for every layer. */
  benign_target: 0;
  /** Harmful rows searched: refused without a patch (targets 0), turned by some gain, not turned (no target). */
  harmful_rows: number;
  refused_unpatched: number;
  turned_by_patch: number;
  no_target: number;
  /** Mean least uniform gain over the turned rows (null when none). */
  mean_uniform_gain: number | null;
  /** Probes run: each one forward pass (first-token) or one short generation (keyword). */
  probes: number;
}

/** The layer-weights recipe: the paper's (no w term) or learned against per-prompt targets. */
export type LayerWeightsRecord =
  | { recipe: 'paper' }
  | { recipe: 'learned'; loss_weight: number; rows_with_targets: number; targets: LayerTargetInfo };

export interface ControllerMetadata {
  format: typeof CONTROLLER_FORMAT;
  version: typeof CONTROLLER_FORMAT_VERSION;
  /** The model's identity (src/core/model/model-id.ts): hub id or a local folder's content hash. */
  model_id: string;
  /** Display name of that model; absent in files made before the identity rule. */
  model_name?: string;
  /** The graph the training activations came from (dtype, file); loading another variant of the model warns. */
  model_variant?: ModelVariant;
  num_layers: number;
  hidden_size: number;
  /** Decoder-layer indices (0-based) whose output residuals (residual_stream index l+1) form the input, ascending. */
  input_layers: DecoderLayer[];
  hidden_width: number;
  /** Id of the steering direction this controller was trained to drive, or null if not tied to one. */
  direction_id: string | null;
  /** Patch strength: delta_h_l = s * w_l * alpha * d (paper default 2.0). */
  alpha: number;
  loss: ControllerLoss;
  /** Whether inputs are standardised per feature before the first layer (statistics stored as tensors). */
  standardization: StandardizationKind;
  /** How w was trained; absent in files written before the option existed (= the paper's recipe). */
  layer_weights?: LayerWeightsRecord;
  training_set: ControllerTrainingSetInfo;
  training: ControllerTrainingConfig;
  seed: number;
  metrics: ControllerMetrics;
  created_at: string;
}

export interface Controller {
  metadata: ControllerMetadata;
  params: ControllerParams;
  standardization: InputStandardization | null;
}

export function shapeFromMetadata(m: ControllerMetadata): ControllerShape {
  return { inputSize: m.input_layers.length * m.hidden_size, hiddenWidth: m.hidden_width, numLayers: m.num_layers };
}

/** What a caller knows about the model it will steer; loading refuses a controller made for another model. */
export interface ControllerExpectation {
  numLayers?: number;
  hiddenSize?: number;
  /** Checked only when given; a different id is an error unless allowOtherModelId. */
  modelId?: string;
  allowOtherModelId?: boolean;
}

export class ControllerFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ControllerFormatError';
  }
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function field<T>(o: Obj, key: string, where: string, check: (v: unknown) => boolean, expected: string): T {
  const v = o[key];
  if (!check(v)) throw new ControllerFormatError(`${where}: "${key}" must be ${expected}, got ${JSON.stringify(v)}`);
  return v as T;
}

const isPosInt = (v: unknown) => Number.isInteger(v) && (v as number) > 0;
const isNonNegInt = (v: unknown) => Number.isInteger(v) && (v as number) >= 0;
const isFiniteNum = (v: unknown) => typeof v === 'number' && Number.isFinite(v);
const isNumOrNull = (v: unknown) => v === null || isFiniteNum(v);
const isStr = (v: unknown) => typeof v === 'string';

/** Checks every field of parsed metadata (types, ranges, consistency); throws ControllerFormatError naming the field. */
export function validateMetadata(raw: unknown, source = 'controller metadata'): ControllerMetadata {
  const where = source;
  if (!isObj(raw)) throw new ControllerFormatError(`${where}: expected a JSON object`);
  if (raw.format !== CONTROLLER_FORMAT) {
    throw new ControllerFormatError(`${where}: "format" is ${JSON.stringify(raw.format)}, expected "${CONTROLLER_FORMAT}" (not a controller file?)`);
  }
  if (raw.version !== CONTROLLER_FORMAT_VERSION) {
    throw new ControllerFormatError(
      `${where}: format version ${JSON.stringify(raw.version)} is not supported, this build reads version ${CONTROLLER_FORMAT_VERSION}`,
    );
  }
  field<string>(raw, 'model_id', where, isStr, 'a string');
  const modelProblem = recordedModelProblem(raw);
  if (modelProblem) throw new ControllerFormatError(`${where}: ${modelProblem}`);
  const numLayers = field<number>(raw, 'num_layers', where, isPosInt, 'a positive integer');
  field<number>(raw, 'hidden_size', where, isPosInt, 'a positive integer');
  field<number>(raw, 'hidden_width', where, isPosInt, 'a positive integer');
  const layers = field<number[]>(raw, 'input_layers', where, Array.isArray, 'an array of layer indices');
  try {
    validateInputLayers(layers, numLayers);
  } catch (e) {
    throw new ControllerFormatError(`${where}: ${(e as Error).message}`);
  }
  field(raw, 'direction_id', where, (v) => v === null || isStr(v), 'a string or null');
  field(raw, 'alpha', where, isFiniteNum, 'a finite number');
  field(raw, 'loss', where, (v) => CONTROLLER_LOSSES.includes(v as ControllerLoss), `one of ${CONTROLLER_LOSSES.join(', ')}`);
  field(raw, 'standardization', where, (v) => v === 'none' || v === 'per-feature', '"none" or "per-feature"');
  field(raw, 'seed', where, Number.isSafeInteger, 'an integer');
  field(raw, 'created_at', where, isStr, 'an ISO date string');

  if (raw.layer_weights !== undefined) {
    const lw = field<Obj>(raw, 'layer_weights', where, isObj, 'an object');
    const w = `${where} layer_weights`;
    field(lw, 'recipe', w, (v) => v === 'paper' || v === 'learned', '"paper" or "learned"');
    if (lw.recipe === 'learned') {
      field(lw, 'loss_weight', w, isFiniteNum, 'a finite number');
      field(lw, 'rows_with_targets', w, isPosInt, 'a positive count');
      const t = field<Obj>(lw, 'targets', w, isObj, 'an object');
      field(t, 'method', `${w}.targets`, (v) => v === 'least-refusal-patch', '"least-refusal-patch"');
      field(t, 'grid', `${w}.targets`, (v) => Array.isArray(v) && v.every(isFiniteNum), 'an array of numbers');
      field(t, 'criterion', `${w}.targets`, (v) => isObj(v) && ['first-token', 'keyword', 'coherent'].includes(v.kind as string), "{ kind: 'first-token' | 'keyword' | 'coherent', ... }");
      field(t, 'alpha', `${w}.targets`, isFiniteNum, 'a finite number');
      for (const k of ['harmful_rows', 'refused_unpatched', 'turned_by_patch', 'no_target', 'probes']) field(t, k, `${w}.targets`, isNonNegInt, 'a count');
    }
  }
  const ts = field<Obj>(raw, 'training_set', where, isObj, 'an object');
  field(ts, 'description', `${where} training_set`, isStr, 'a string');
  for (const k of ['harmful', 'benign', 'validation_harmful', 'validation_benign']) field(ts, k, `${where} training_set`, isNonNegInt, 'a count');

  const tr = field<Obj>(raw, 'training', where, isObj, 'an object');
  for (const k of ['epochs', 'batch_size']) field(tr, k, `${where} training`, isPosInt, 'a positive integer');
  for (const k of ['learning_rate', 'weight_decay', 'clip_norm', 'beta1', 'beta2', 'eps', 'lambda']) {
    field(tr, k, `${where} training`, isFiniteNum, 'a finite number');
  }
  field(tr, 'balance', `${where} training`, (v) => typeof v === 'boolean', 'a boolean');
  field(tr, 'init', `${where} training`, isStr, 'a string');

  const me = field<Obj>(raw, 'metrics', where, isObj, 'an object');
  const epochs = field<unknown[]>(me, 'epochs', `${where} metrics`, Array.isArray, 'an array');
  epochs.forEach((e, i) => {
    const w = `${where} metrics.epochs[${i}]`;
    if (!isObj(e)) throw new ControllerFormatError(`${w}: expected an object`);
    field(e, 'epoch', w, isPosInt, 'a positive integer');
    field(e, 'train_loss', w, isFiniteNum, 'a finite number');
    for (const k of ['val_loss', 'val_accuracy', 'val_balanced_accuracy']) field(e, k, w, isNumOrNull, 'a number or null');
    if (e.val_layer_weight_mse !== undefined) field(e, 'val_layer_weight_mse', w, isNumOrNull, 'a number or null');
    field(e, 'seconds', w, isFiniteNum, 'a finite number');
  });
  for (const k of ['held_out_accuracy', 'held_out_balanced_accuracy']) field(me, k, `${where} metrics`, isNumOrNull, 'a number or null');
  field(me, 'threshold', `${where} metrics`, isFiniteNum, 'a finite number');
  field(me, 'backend', `${where} metrics`, isStr, 'a string');
  return raw as unknown as ControllerMetadata;
}

/** Refuses a controller made for another model: the input size and output count would silently not fit. */
export function checkExpectation(m: ControllerMetadata, expect: ControllerExpectation | undefined, source = 'controller'): void {
  if (!expect) return;
  const problems: string[] = [];
  if (expect.numLayers !== undefined && expect.numLayers !== m.num_layers) {
    problems.push(`it has ${m.num_layers} layer weights but the model has ${expect.numLayers} layers`);
  }
  if (expect.hiddenSize !== undefined && expect.hiddenSize !== m.hidden_size) {
    problems.push(`it reads residuals of hidden size ${m.hidden_size} but the model's hidden size is ${expect.hiddenSize}`);
  }
  if (expect.modelId !== undefined && !expect.allowOtherModelId && expect.modelId !== m.model_id) {
    problems.push(`it was trained on model "${m.model_id}", not "${expect.modelId}"`);
  }
  if (problems.length) {
    throw new ControllerFormatError(`${source}: made for another model (model_id "${m.model_id}"): ${problems.join('; ')}`);
  }
}
