/**
 * Training the WAS controller on cached activations (paper Eq. 8): each row of x is the concatenated last-prompt-token
 * residuals of the input layers, labelled harmful (1) or benign (0). Default = the paper: MSE on s only against the
 * label, class-balanced with lambda = 0.5, AdamW (lr 5e-5, weight decay 0.01), batch 4, 4 epochs, gradient clipping
 * at global norm 1.0. The layer weights w get no loss term; they move only through the shared hidden layer (and
 * weight decay), exactly as in the paper. Option: BCE-with-logits on s (the released code's loss).
 *
 * Inputs are NOT normalised by default (neither the paper nor its code does); `standardize: true` fits a per-feature
 * mean/std on the training rows and stores it with the controller, and inference applies the same transform.
 *
 * The forward pass x @ w1 runs on the active tfjs backend; the rest of the step (a B x hiddenWidth problem) and the
 * fused AdamW update run in JS (optimizer.ts). Deterministic for a given seed on a given backend.
 *
 * Layer weights that learn (layerWeights: 'learned'): the paper's loss gives w no signal of its own, so WAS and
 * uniform end up alike. With per-row targets t [rows, L] in [0, 1] (src/core/method/layer-targets.ts: the least
 * per-layer gain that still turns a harmful prompt's first reply token into a refusal, 0 for benign prompts), the
 * loss gains a term on the sigmoid outputs:
 *   loss_row = c_row * ( l(s, y) + layerWeightLossWeight * (1/L) sum_l (w_l - t_l)^2 ),   w_l = sigmoid(o_l)
 * Rows whose targets are NaN (not searched) get no w term. 'paper' (default) keeps the paper's loss exactly.
 */
import type { ModelVariant } from '../model/model-id.js';
import * as tf from '@tensorflow/tfjs-core';
import { controllerInputLayers, validateInputLayers } from './layers.js';
import {
  CONTROLLER_FORMAT,
  CONTROLLER_FORMAT_VERSION,
  type Controller,
  type ControllerLoss,
  type EpochMetrics,
  type LayerTargetInfo,
} from './metadata.js';
import { ControllerNetwork } from './network.js';
import { AdamW, clipFactor, outerProductSquaredNorm, squaredNorm } from './optimizer.js';
import {
  CONTROLLER_INITS,
  fitStandardization,
  initControllerParams,
  outputSize,
  standardizeRows,
  type ControllerInit,
  type ControllerParams,
  type ControllerShape,
  type InputStandardization,
} from './params.js';
import { SeededRandom } from './prng.js';
import { layerTargetMse, splitControllerDataset, validateDataset, validateLayerTargets, type ControllerDataset } from './dataset.js';

export { layerTargetMse, splitControllerDataset, validateDataset, validateLayerTargets, type ControllerDataset };
import { yieldToEventLoop } from '../util/yield.js';

/** How w is trained: the paper's recipe (no w term) or learned against per-row targets (see the module comment). */
export type LayerWeightsRecipe = 'paper' | 'learned';

export interface BatchProgress {
  epoch: number;
  batch: number;
  batches: number;
  /** Class-weighted loss of this batch (before the update). */
  loss: number;
}

export interface TrainControllerOptions {
  /** The model's identity (SteerableModel.identity: id, display name, variant loaded). */
  modelId: string;
  modelName?: string;
  modelVariant?: ModelVariant;
  numLayers: number;
  hiddenSize: number;
  /** Decoder-layer indices feeding the controller; default controllerInputLayers(numLayers) (l >= 2/3 N). */
  inputLayers?: readonly number[];
  /** Hidden width of the MLP (paper 1024). */
  hiddenWidth?: number;
  /** 'mse' (paper, targets 1/0 on raw s) or 'bce' (BCE-with-logits on s). */
  loss?: ControllerLoss;
  epochs?: number;
  batchSize?: number;
  learningRate?: number;
  weightDecay?: number;
  /** Max global gradient norm; 0 disables clipping. */
  clipNorm?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Class balancing (default true): harmful rows weigh lambda, benign rows 1 - lambda, whatever their counts. */
  balance?: boolean;
  lambda?: number;
  /** Per-feature input standardisation fitted on the training rows (default false, as in the paper). */
  standardize?: boolean;
  /** 'paper' (default): MSE on s only. 'learned': plus a term pulling w towards data.layerTargets. */
  layerWeights?: LayerWeightsRecipe;
  /** Weight of the w term in the 'learned' recipe (default 1). */
  layerWeightLossWeight?: number;
  /** How the targets were made, stored in the metadata ('learned' recipe). */
  layerTargetInfo?: LayerTargetInfo;
  init?: ControllerInit;
  seed?: number;
  validation?: ControllerDataset;
  directionId?: string | null;
  alpha?: number;
  trainingSetDescription?: string;
  onBatch?: (p: BatchProgress) => void;
  onEpoch?: (m: EpochMetrics) => void;
  /** Aborting rejects the returned promise with the signal's reason (an AbortError by default). */
  signal?: AbortSignal;
  /** Clock for created_at (tests pin it). */
  now?: () => Date;
}

export const PAPER_DEFAULTS = {
  hiddenWidth: 1024,
  loss: 'mse' as ControllerLoss,
  epochs: 4,
  batchSize: 4,
  learningRate: 5e-5,
  weightDecay: 0.01,
  clipNorm: 1.0,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  balance: true,
  lambda: 0.5,
  standardize: false,
  layerWeights: 'paper' as LayerWeightsRecipe,
  layerWeightLossWeight: 1,
  init: 'torch-linear' as ControllerInit,
  seed: 0,
  alpha: 2.0,
};

/** Decision threshold on s: targets are 0/1 for MSE; for BCE s is a logit, so sigmoid(s) > 0.5 means s > 0. */
export function scaleThreshold(loss: ControllerLoss): number {
  return loss === 'bce' ? 0 : 0.5;
}

/** Per-row loss and its derivative with respect to s. */
function lossAndGrad(loss: ControllerLoss, s: number, y: number): [number, number] {
  if (loss === 'mse') {
    const e = s - y;
    return [e * e, 2 * e];
  }
  // Numerically stable BCE-with-logits: max(s,0) - s*y + log(1 + exp(-|s|)).
  const l = Math.max(s, 0) - s * y + Math.log1p(Math.exp(-Math.abs(s)));
  return [l, 1 / (1 + Math.exp(-s)) - y];
}

/**
 * Per-class loss weights so that the mean over rows equals lambda * mean_harmful + (1 - lambda) * mean_benign
 * (the paper's balanced objective); with balance off every row weighs 1.
 */
export function classWeights(labels: ArrayLike<number>, balance: boolean, lambda: number): { harmful: number; benign: number } {
  if (!balance) return { harmful: 1, benign: 1 };
  let pos = 0;
  for (let i = 0; i < labels.length; i++) pos += labels[i];
  const n = labels.length;
  const neg = n - pos;
  return { harmful: pos ? (lambda * n) / pos : 0, benign: neg ? ((1 - lambda) * n) / neg : 0 };
}

function countClasses(labels: ArrayLike<number>): { harmful: number; benign: number } {
  let harmful = 0;
  for (let i = 0; i < labels.length; i++) harmful += labels[i];
  return { harmful, benign: labels.length - harmful };
}

/** Loss and accuracies of s on a dataset (used for validation after each epoch). */
export function evaluateScales(
  scales: Float32Array,
  labels: ArrayLike<number>,
  loss: ControllerLoss,
  balance: boolean,
  lambda: number,
): { loss: number; accuracy: number; balancedAccuracy: number } {
  const cw = classWeights(labels, balance, lambda);
  const thr = scaleThreshold(loss);
  let total = 0;
  let correct = 0;
  let tp = 0;
  let tn = 0;
  const { harmful, benign } = countClasses(labels);
  for (let r = 0; r < scales.length; r++) {
    const y = labels[r];
    total += (y ? cw.harmful : cw.benign) * lossAndGrad(loss, scales[r], y)[0];
    const predicted = scales[r] > thr ? 1 : 0;
    if (predicted === y) {
      correct++;
      if (y) tp++;
      else tn++;
    }
  }
  const recalls = [harmful ? tp / harmful : null, benign ? tn / benign : null].filter((x): x is number => x !== null);
  return {
    loss: total / scales.length,
    accuracy: correct / scales.length,
    balancedAccuracy: recalls.reduce((a, b) => a + b, 0) / recalls.length,
  };
}

function positiveInt(v: number, name: string): number {
  if (!Number.isInteger(v) || v <= 0) throw new Error(`controller training: ${name} must be a positive integer, got ${v}`);
  return v;
}

/** Gives timers, workers' messages and abort signals a chance to run at most every this many ms. */
const YIELD_EVERY_MS = 25;

/**
 * Trains a controller. Returns the trained controller (metadata with per-epoch metrics, parameters, standardisation).
 * Rejects with the abort reason if `signal` aborts, and with a clear Error on bad data or options.
 */
export async function trainController(data: ControllerDataset, options: TrainControllerOptions): Promise<Controller> {
  const o = { ...PAPER_DEFAULTS, ...stripUndefined(options) };
  if (typeof o.modelId !== 'string') throw new Error('controller training: modelId must be a string');
  positiveInt(o.numLayers, 'numLayers');
  positiveInt(o.hiddenSize, 'hiddenSize');
  const inputLayers = validateInputLayers(o.inputLayers ?? controllerInputLayers(o.numLayers), o.numLayers);
  const hiddenWidth = positiveInt(o.hiddenWidth, 'hiddenWidth');
  const epochs = positiveInt(o.epochs, 'epochs');
  const batchSize = positiveInt(o.batchSize, 'batchSize');
  if (o.loss !== 'mse' && o.loss !== 'bce') throw new Error(`controller training: loss must be "mse" or "bce", got ${String(o.loss)}`);
  if (!(o.lambda > 0 && o.lambda < 1)) throw new Error(`controller training: lambda must be in (0, 1), got ${o.lambda}`);
  if (!(Number.isFinite(o.clipNorm) && o.clipNorm >= 0)) throw new Error(`controller training: clipNorm must be >= 0, got ${o.clipNorm}`);
  if (!Number.isFinite(o.alpha)) throw new Error(`controller training: alpha must be a finite number, got ${o.alpha}`);
  if (!CONTROLLER_INITS.includes(o.init)) throw new Error(`controller training: unknown init "${o.init}"`);
  const seed = o.seed;
  if (!Number.isSafeInteger(seed)) throw new Error(`controller training: seed must be an integer, got ${seed}`);
  if (o.layerWeights !== 'paper' && o.layerWeights !== 'learned') throw new Error(`controller training: layerWeights must be "paper" or "learned", got ${String(o.layerWeights)}`);
  const learned = o.layerWeights === 'learned';
  if (!(Number.isFinite(o.layerWeightLossWeight) && o.layerWeightLossWeight > 0)) throw new Error(`controller training: layerWeightLossWeight must be > 0, got ${o.layerWeightLossWeight}`);
  if (learned && !o.layerTargetInfo) throw new Error("controller training: the 'learned' layer-weights recipe needs layerTargetInfo (how the targets were made) for the metadata");

  const shape = { inputSize: inputLayers.length * o.hiddenSize, hiddenWidth, numLayers: o.numLayers };
  const n = shape.inputSize;
  const rows = validateDataset(data, n, 'training set');
  const counts = countClasses(data.labels);
  if (!counts.harmful || !counts.benign) {
    throw new Error(
      `training set: needs both classes, got ${counts.harmful} harmful (label 1) and ${counts.benign} benign (label 0) rows`,
    );
  }
  const targetRows = learned ? validateLayerTargets(data.layerTargets, rows, o.numLayers, 'training set') : 0;
  const validation = o.validation;
  if (validation) validateDataset(validation, n, 'validation set');
  const validationTargets = learned && validation?.layerTargets ? validation.layerTargets : null;
  if (validationTargets) validateLayerTargets(validationTargets, validation!.labels.length, o.numLayers, 'validation set');
  const valCounts = validation ? countClasses(validation.labels) : { harmful: 0, benign: 0 };
  o.signal?.throwIfAborted();

  const standardization: InputStandardization | null = o.standardize ? fitStandardization(data.x, rows, n) : null;
  const x = standardization ? standardizeRows(data.x, standardization) : data.x;
  const params = initControllerParams(shape, seed, o.init);
  const optimizer = new AdamW({ learningRate: o.learningRate, weightDecay: o.weightDecay, beta1: o.beta1, beta2: o.beta2, eps: o.eps });
  const cw = classWeights(data.labels, o.balance, o.lambda);
  const shuffle = new SeededRandom(seed, 'shuffle');
  const order = new Uint32Array(rows);
  for (let r = 0; r < rows; r++) order[r] = r;

  const batches = Math.ceil(rows / batchSize);
  const xb = new Float32Array(batchSize * n);
  const yb = new Float64Array(batchSize);
  const cb = new Float64Array(batchSize);
  const tb = learned ? new Float32Array(batchSize * o.numLayers) : null;
  const L = o.numLayers;
  const work = gradientBuffers(shape, batchSize);
  const threshold = scaleThreshold(o.loss);
  const epochMetrics: EpochMetrics[] = [];
  let lastYield = performance.now();

  for (let epoch = 1; epoch <= epochs; epoch++) {
    const t0 = performance.now();
    shuffle.shuffle(order);
    let epochLoss = 0;
    for (let bi = 0; bi < batches; bi++) {
      if (performance.now() - lastYield > YIELD_EVERY_MS) {
        await yieldToEventLoop();
        lastYield = performance.now();
      }
      o.signal?.throwIfAborted();
      const start = bi * batchSize;
      const B = Math.min(batchSize, rows - start);
      for (let b = 0; b < B; b++) xb.set(x.subarray(order[start + b] * n, (order[start + b] + 1) * n), b * n);

      for (let b = 0; b < B; b++) {
        const y = data.labels[order[start + b]];
        yb[b] = y;
        cb[b] = y ? cw.harmful : cw.benign;
        if (tb) tb.set(data.layerTargets!.subarray(order[start + b] * L, (order[start + b] + 1) * L), b * L);
      }
      // Forward x @ w1 on the tfjs backend, read back asynchronously (WebGPU has no synchronous read-back).
      const z1 = await firstLayer(xb.subarray(0, B * n), B, params);
      const g = batchGradients(params, xb, z1, B, yb, cb, o.loss, work, tb ? { targets: tb, weight: o.layerWeightLossWeight } : undefined);
      epochLoss += g.lossSum;
      const batchLoss = g.lossSum / B;
      const scale = clipFactor(Math.sqrt(g.normSq), o.clipNorm);

      optimizer.beginStep();
      optimizer.updateOuterProduct('w1', params.w1, xb, g.dz, B, n, hiddenWidth, scale);
      optimizer.updateDense('b1', params.b1, g.b1, scale);
      optimizer.updateDense('w2', params.w2, g.w2, scale);
      optimizer.updateDense('b2', params.b2, g.b2, scale);
      if (!Number.isFinite(batchLoss) || !Number.isFinite(params.b2[0])) {
        throw new Error(`controller training diverged at epoch ${epoch} batch ${bi + 1} (loss ${batchLoss}); lower the learning rate`);
      }
      o.onBatch?.({ epoch, batch: bi + 1, batches, loss: batchLoss });
    }

    const m: EpochMetrics = {
      epoch,
      train_loss: epochLoss / rows,
      val_loss: null,
      val_accuracy: null,
      val_balanced_accuracy: null,
      seconds: 0,
    };
    if (validation) {
      const net = new ControllerNetwork(params, standardization);
      try {
        const out = await net.predictBatchAsync(validation.x, validation.labels.length);
        const ev = evaluateScales(out.scales, validation.labels, o.loss, o.balance, o.lambda);
        m.val_loss = ev.loss;
        m.val_accuracy = ev.accuracy;
        m.val_balanced_accuracy = ev.balancedAccuracy;
        if (validationTargets) m.val_layer_weight_mse = layerTargetMse(out.layerWeights, validationTargets, L);
      } finally {
        net.dispose();
      }
    }
    m.seconds = (performance.now() - t0) / 1000;
    epochMetrics.push(m);
    o.onEpoch?.(m);
  }

  const last = epochMetrics[epochMetrics.length - 1];
  return {
    params,
    standardization,
    metadata: {
      format: CONTROLLER_FORMAT,
      version: CONTROLLER_FORMAT_VERSION,
      model_id: o.modelId,
      ...(o.modelName !== undefined ? { model_name: o.modelName } : {}),
      ...(o.modelVariant !== undefined ? { model_variant: { ...o.modelVariant } } : {}),
      num_layers: o.numLayers,
      hidden_size: o.hiddenSize,
      input_layers: inputLayers,
      hidden_width: hiddenWidth,
      direction_id: o.directionId ?? null,
      alpha: o.alpha,
      loss: o.loss,
      standardization: standardization ? 'per-feature' : 'none',
      layer_weights: learned
        ? { recipe: 'learned', loss_weight: o.layerWeightLossWeight, rows_with_targets: targetRows, targets: o.layerTargetInfo! }
        : { recipe: 'paper' },
      training_set: {
        description: o.trainingSetDescription ?? '',
        harmful: counts.harmful,
        benign: counts.benign,
        validation_harmful: valCounts.harmful,
        validation_benign: valCounts.benign,
      },
      training: {
        epochs,
        batch_size: batchSize,
        learning_rate: o.learningRate,
        weight_decay: o.weightDecay,
        clip_norm: o.clipNorm,
        beta1: o.beta1,
        beta2: o.beta2,
        eps: o.eps,
        balance: o.balance,
        lambda: o.lambda,
        init: o.init,
      },
      seed,
      metrics: {
        epochs: epochMetrics,
        held_out_accuracy: last.val_accuracy,
        held_out_balanced_accuracy: last.val_balanced_accuracy,
        threshold,
        backend: tf.getBackend(),
      },
      created_at: (o.now ?? (() => new Date()))().toISOString(),
    },
  };
}

/** Gradients of one batch. w1's gradient is implicit: x^T dz (rank B), consumed by AdamW.updateOuterProduct. */
export interface BatchGradients {
  /** Sum over the batch rows of class weight x loss (divide by B for the batch's mean loss). */
  lossSum: number;
  /** d loss / d z1, row-major [B, hiddenWidth]. */
  dz: Float32Array;
  b1: Float32Array;
  /** Dense [hiddenWidth, 1 + numLayers]; only column 0 is non-zero unless the w term is on. */
  w2: Float32Array;
  b2: Float32Array;
  /** Squared global norm over all four gradients (for clipping). */
  normSq: number;
  /** Raw s for each row (forward by-product). */
  scales: Float32Array;
}

/** Scratch arrays reused across batches (the step allocates nothing per batch besides tfjs' own tensors). */
export function gradientBuffers(shape: ControllerShape, maxBatch: number): BatchGradients & { h: Float32Array } {
  const H = shape.hiddenWidth;
  return {
    lossSum: 0,
    normSq: 0,
    dz: new Float32Array(maxBatch * H),
    h: new Float32Array(maxBatch * H),
    b1: new Float32Array(H),
    w2: new Float32Array(H * outputSize(shape)),
    b2: new Float32Array(outputSize(shape)),
    scales: new Float32Array(maxBatch),
  };
}

/** The w term of the 'learned' recipe for one batch: targets [B, numLayers] (a NaN row = no term), its weight. */
export interface LayerTargetTerm {
  targets: ArrayLike<number>;
  weight: number;
}

/**
 * Rest of the forward pass and the backward pass of one batch, by hand: x row-major [B, inputSize] (already
 * standardised), z1 = x @ w1 without b1 (firstLayer). The network is two linear layers, so the whole backward pass is
 * a few B x hiddenWidth (x outputs) loops. Loss = (1/B) sum_b c_b * (l(s_b, y_b) + lambda_w (1/L) sum_l
 * (sigmoid(o_bl) - t_bl)^2), the w term only with `wTerm` and only on rows with targets. Results are written into
 * `work` and returned.
 */
export function batchGradients(
  params: ControllerParams,
  x: Float32Array,
  z1: Float32Array,
  B: number,
  y: ArrayLike<number>,
  c: ArrayLike<number>,
  loss: ControllerLoss,
  work: BatchGradients & { h: Float32Array },
  wTerm?: LayerTargetTerm,
): BatchGradients {
  const H = params.shape.hiddenWidth;
  const O = outputSize(params.shape);
  const L = params.shape.numLayers;
  const n = params.shape.inputSize;
  if (z1.length < B * H) throw new Error(`batchGradients: z1 has ${z1.length} values, expected ${B} x ${H}`);
  const { h, dz, b1: gb1, w2: gW2, b2: gb2, scales } = work;
  gb1.fill(0);
  gW2.fill(0);
  gb2.fill(0);
  let lossSum = 0;
  const dO = new Float64Array(O);
  for (let b = 0; b < B; b++) {
    for (let j = 0; j < H; j++) {
      const z = z1[b * H + j] + params.b1[j];
      h[b * H + j] = z > 0 ? z : 0;
    }
    let s = params.b2[0];
    for (let j = 0; j < H; j++) s += h[b * H + j] * params.w2[j * O];
    scales[b] = s;
    const [l, dl] = lossAndGrad(loss, s, y[b]);
    lossSum += c[b] * l;
    dO.fill(0);
    dO[0] = (c[b] * dl) / B;
    const withTargets = wTerm !== undefined && !Number.isNaN(wTerm.targets[b * L]);
    if (withTargets) {
      let wl = 0;
      for (let k = 1; k < O; k++) {
        let o = params.b2[k];
        for (let j = 0; j < H; j++) o += h[b * H + j] * params.w2[j * O + k];
        const w = 1 / (1 + Math.exp(-o));
        const e = w - wTerm.targets[b * L + k - 1];
        wl += e * e;
        dO[k] = (c[b] * wTerm.weight * (2 / L) * e * w * (1 - w)) / B;
      }
      lossSum += (c[b] * wTerm.weight * wl) / L;
    }
    const outs = withTargets ? O : 1;
    for (let k = 0; k < outs; k++) gb2[k] += dO[k];
    for (let j = 0; j < H; j++) {
      const idx = b * H + j;
      let back = 0;
      for (let k = 0; k < outs; k++) {
        gW2[j * O + k] += h[idx] * dO[k];
        back += dO[k] * params.w2[j * O + k];
      }
      // d loss / d z1 = sum_k dO_k w2[j, k] where the ReLU is active (h > 0 exactly where z1 > 0).
      const d = h[idx] > 0 ? back : 0;
      dz[idx] = d;
      gb1[j] += d;
    }
  }
  const normSq = outerProductSquaredNorm(x, dz, B, n, H) + squaredNorm(gb1) + squaredNorm(gb2) + squaredNorm(gW2);
  work.lossSum = lossSum;
  work.normSq = normSq;
  return work;
}

/**
 * x [rows, inputSize] @ w1; b1 is added by the caller. Runs on the tfjs backend, except on tfjs' 'cpu' backend, whose
 * generic matMul kernel is several times slower than the plain loop below (one pass over w1 for the whole batch).
 */
export async function firstLayer(x: Float32Array, rows: number, p: ControllerParams): Promise<Float32Array> {
  const { inputSize, hiddenWidth } = p.shape;
  if (tf.getBackend() === 'cpu') return firstLayerJs(x, rows, p.w1, inputSize, hiddenWidth);
  const z = tf.tidy(() => tf.matMul(tf.tensor2d(x, [rows, inputSize]), tf.tensor2d(p.w1, [inputSize, hiddenWidth])));
  try {
    return (await z.data()) as Float32Array;
  } finally {
    z.dispose();
  }
}

function firstLayerJs(x: Float32Array, rows: number, w1: Float32Array, n: number, H: number): Float32Array {
  const z = new Float32Array(rows * H);
  const acc = new Float64Array(rows * H);
  for (let i = 0; i < n; i++) {
    const w = w1.subarray(i * H, (i + 1) * H);
    for (let b = 0; b < rows; b++) {
      const xi = x[b * n + i];
      if (xi === 0) continue;
      const o = b * H;
      for (let j = 0; j < H; j++) acc[o + j] += xi * w[j];
    }
  }
  for (let k = 0; k < z.length; k++) z[k] = acc[k];
  return z;
}

/** Drops keys whose value is undefined, so `{ epochs: undefined }` falls back to the default instead of erasing it. */
function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
