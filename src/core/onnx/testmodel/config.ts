/**
 * Shape of a Llama-family decoder (RMSNorm, rotary embeddings, SwiGLU MLP, grouped-query attention).
 * Shared by the test-model builder, the reference forward pass and the benchmarks, so that a graph and
 * its reference always describe the same architecture.
 */
export interface DecoderShape {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  /** hiddenSize / numHeads unless a model says otherwise. */
  headDim: number;
  maxPositionEmbeddings: number;
  ropeTheta: number;
  rmsNormEps: number;
  /** lm_head shares the embedding matrix (SmolLM2, Qwen2.5-0.5B, Llama-3.2-1B). */
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry a bias (Qwen2). */
  attentionBias: boolean;
}

/** Graph forms that hub models really ship (see docs/METHOD-NOTES.md section 4). */
export type TestTopology = 'plain' | 'fused' | 'fused-q4' | 'fused-q4f16' | 'merged';
/** The transformers.js dtype each topology's file is named for (onnx/model.onnx, model_q4.onnx, model_q4f16.onnx). */
export type TestDtype = 'fp32' | 'q4' | 'q4f16';
export const TEST_TOPOLOGIES: readonly TestTopology[] = ['plain', 'fused', 'fused-q4', 'fused-q4f16', 'merged'];

export const SHAPE_PRESETS: Record<string, DecoderShape> = {
  /** A few hundred KB: fast enough for every unit test. */
  tiny: {
    vocabSize: 320, hiddenSize: 64, intermediateSize: 128, numLayers: 4, numHeads: 4, numKvHeads: 2, headDim: 16,
    maxPositionEmbeddings: 256, ropeTheta: 10000, rmsNormEps: 1e-5, tieWordEmbeddings: false, attentionBias: false,
  },
  /** HuggingFaceTB/SmolLM2-135M-Instruct config.json. */
  'smollm2-135m': {
    vocabSize: 49152, hiddenSize: 576, intermediateSize: 1536, numLayers: 30, numHeads: 9, numKvHeads: 3, headDim: 64,
    maxPositionEmbeddings: 8192, ropeTheta: 100000, rmsNormEps: 1e-5, tieWordEmbeddings: true, attentionBias: false,
  },
  /** Qwen/Qwen2.5-0.5B-Instruct config.json. */
  'qwen2.5-0.5b': {
    vocabSize: 151936, hiddenSize: 896, intermediateSize: 4864, numLayers: 24, numHeads: 14, numKvHeads: 2, headDim: 64,
    maxPositionEmbeddings: 32768, ropeTheta: 1000000, rmsNormEps: 1e-6, tieWordEmbeddings: true, attentionBias: true,
  },
};

/** Checks a shape for the constraints the graphs rely on; throws naming the field and what was expected. */
export function validateShape(s: DecoderShape): DecoderShape {
  const positive: (keyof DecoderShape)[] = [
    'vocabSize', 'hiddenSize', 'intermediateSize', 'numLayers', 'numHeads', 'numKvHeads', 'headDim', 'maxPositionEmbeddings',
  ];
  for (const k of positive) {
    const v = s[k] as number;
    if (!Number.isInteger(v) || v <= 0) throw new Error(`decoder shape: ${k} must be a positive integer, got ${v}`);
  }
  if (s.numHeads % s.numKvHeads !== 0) {
    throw new Error(`decoder shape: numHeads (${s.numHeads}) must be a multiple of numKvHeads (${s.numKvHeads})`);
  }
  if (s.headDim % 2 !== 0) throw new Error(`decoder shape: headDim must be even for rotary embeddings, got ${s.headDim}`);
  if (!(s.ropeTheta > 0)) throw new Error(`decoder shape: ropeTheta must be > 0, got ${s.ropeTheta}`);
  if (!(s.rmsNormEps > 0)) throw new Error(`decoder shape: rmsNormEps must be > 0, got ${s.rmsNormEps}`);
  return s;
}
