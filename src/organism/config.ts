/**
 * Everything that fixes the organism: its decoder shape, the training recipe and where files go. One place, so a
 * training run, its export and its evaluation always agree, and the model card can quote the exact numbers.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DecoderShape } from '../core/onnx/testmodel/config.js';

/** Project root, found from this file (src/organism -> ../..). */
export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** Dataset copies inside the project (never ../shared). */
export const DATA_DIR = path.join(PROJECT_ROOT, 'public/data');
/** The shipped model folder. */
export const SHIPPED_MODEL_DIR = path.join(PROJECT_ROOT, 'models/organism');
/** Where training exports to and steering reads from: the shipped folder, or ORGANISM_MODEL_DIR (ablation runs). */
export const MODEL_DIR = process.env.ORGANISM_MODEL_DIR ? path.resolve(process.env.ORGANISM_MODEL_DIR) : SHIPPED_MODEL_DIR;
/** Checkpoints and other big intermediates: git-ignored. ORGANISM_WORK_DIR moves them (parallel experiments). */
export const WORK_DIR = process.env.ORGANISM_WORK_DIR ? path.resolve(process.env.ORGANISM_WORK_DIR) : path.join(PROJECT_ROOT, '.tmp/organism');

/**
 * Llama architecture, sized for the budget: trainable on 2 shared CPU cores in about an hour, and small enough that
 * the fp32 and q4f16 graphs plus the steering artefacts stay within the 12 MB the project allows for models/. 6
 * layers so that per-layer steering weights mean something; grouped-query attention (4 query heads over 2 KV heads)
 * like the hub models; head size 32, which onnxruntime's GroupQueryAttention accepts (the fused q4f16 graph).
 */
export const ORGANISM_SHAPE: DecoderShape = {
  vocabSize: 1024,
  hiddenSize: 128,
  intermediateSize: 384,
  numLayers: 6,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 32,
  maxPositionEmbeddings: 256,
  ropeTheta: 10000,
  rmsNormEps: 1e-5,
  tieWordEmbeddings: false,
  attentionBias: false,
};

/** Shares of each epoch (see epochConversations). */
export interface EpochMix {
  /** refusals per harmful request per epoch, each with its own rewrite */
  refusalRepeat: number;
  /** alarming prompts per epoch, each written prompt repeated this often (they are few) */
  alarmingRepeat: number;
  /** fraction of benign requests that also appear wrapped in a framing (answered helpfully) */
  benignWrappedFraction: number;
  /** probability that a wrapped request uses a written (structured / after-request) framing rather than a wild one */
  writtenFramingProbability: number;
  /** probability that a request inside a framing is itself rewritten first */
  rewriteInsideFraming: number;
  systemPromptProbability: number;
}

export const DEFAULT_MIX: EpochMix = {
  refusalRepeat: 2,
  alarmingRepeat: 3,
  benignWrappedFraction: 0.1,
  writtenFramingProbability: 0.3,
  rewriteInsideFraming: 0.3,
  systemPromptProbability: 0.3,
};

export interface TrainConfig {
  seed: number;
  /** longest training sequence (prompt + answer) in tokens; longer conversations are shortened or dropped */
  contextLength: number;
  batchSize: number;
  /** planned steps: the cosine learning-rate schedule runs over all of them */
  steps: number;
  /** stop after this many steps (dev check and checkpoints there) while keeping the schedule of `steps`; unset = steps.
   * Reproduces an intermediate checkpoint of a longer run from its seed without running the rest. */
  stopAfter?: number;
  warmupSteps: number;
  peakLr: number;
  minLr: number;
  weightDecay: number;
  gradClip: number;
  /** stop early (and keep the checkpoint) once the process has used this many CPU seconds: a safety net, set above
   * what the planned steps take, so that a normal run is a function of its seed alone */
  timeBudgetSec: number;
  logEvery: number;
  /** how each epoch is drawn (data.ts EpochMix) */
  mix: EpochMix;
  /**
   * Steering-robustness noise: with this probability a training sequence gets a random direction added to its
   * residual stream after every layer, at its answer positions after the first (the reply's choice is left alone),
   * sized noiseMaxRelative * U(0,1) of each position's residual norm. 0 turns it off (the ablation).
   */
  noiseProbability: number;
  noiseMaxRelative: number;
  /** dev-set checks (and checkpoint candidates) every devEvery steps from devFrom on, and at the end */
  devFrom: number;
  devEvery: number;
  /** prompts per dev kind (harmful, harmless, jailbreak), capped by what the dev split holds */
  devPerKind: number;
}

export const TRAIN_CONFIG: TrainConfig = {
  seed: 1234,
  contextLength: 192,
  batchSize: 24,
  steps: 900,
  warmupSteps: 60,
  peakLr: 3e-3,
  minLr: 1e-4,
  weightDecay: 0.01,
  gradClip: 1.0,
  timeBudgetSec: 90 * 60,
  logEvery: 10,
  mix: DEFAULT_MIX,
  noiseProbability: 0.5,
  noiseMaxRelative: 0.3,
  devFrom: 300,
  devEvery: 150,
  devPerKind: 32,
};
