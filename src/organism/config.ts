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
export const MODEL_DIR = path.join(PROJECT_ROOT, 'models/organism');
/** Checkpoints and other big intermediates: git-ignored. ORGANISM_WORK_DIR moves them (parallel experiments). */
export const WORK_DIR = process.env.ORGANISM_WORK_DIR ? path.resolve(process.env.ORGANISM_WORK_DIR) : path.join(PROJECT_ROOT, '.tmp/organism');

/**
 * Llama architecture, small enough to train on 2 shared CPU cores in well under an hour: 6 layers so that per-layer
 * steering weights mean something, grouped-query attention (4 query heads over 2 KV heads) like the hub models.
 */
export const ORGANISM_SHAPE: DecoderShape = {
  vocabSize: 768,
  hiddenSize: 96,
  intermediateSize: 256,
  numLayers: 6,
  numHeads: 4,
  numKvHeads: 2,
  // 24, not a multiple of 16: onnxruntime's GroupQueryAttention (the fused q4f16 export) rejects it, so this organism
  // ships fp32 only. A 6-head / headDim-16 variant ran as q4f16 but missed the harmful-refusal target (MODEL_CARD.md).
  headDim: 24,
  maxPositionEmbeddings: 256,
  ropeTheta: 10000,
  rmsNormEps: 1e-5,
  tieWordEmbeddings: false,
  attentionBias: false,
};

export interface TrainConfig {
  seed: number;
  /** longest training sequence (prompt + answer) in tokens; longer conversations are shortened or dropped */
  contextLength: number;
  batchSize: number;
  steps: number;
  warmupSteps: number;
  peakLr: number;
  minLr: number;
  weightDecay: number;
  gradClip: number;
  /** stop early (and keep the checkpoint) once this many seconds have passed */
  timeBudgetSec: number;
  logEvery: number;
  /** how many times each harmful request is refused per epoch (harmful requests are fewer than harmless ones) */
  refusalRepeat: number;
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
  steps: 700,
  warmupSteps: 40,
  peakLr: 3e-3,
  minLr: 1e-4,
  weightDecay: 0.01,
  gradClip: 1.0,
  timeBudgetSec: 45 * 60,
  logEvery: 10,
  refusalRepeat: 2,
  devFrom: 150,
  devEvery: 150,
  devPerKind: 32,
};
