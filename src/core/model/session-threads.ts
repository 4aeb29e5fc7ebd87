/**
 * onnxruntime-node's intra-op thread count for a model's sessions: one thread for a tiny model, onnxruntime's default
 * (one per core) otherwise. A decode step of a tiny model is hundreds of small kernels, each too small to split; a
 * second thread only adds a hand-off per kernel. On the organism (1.4 M matmul weights, 2 cores) one thread decoded
 * 1.09-1.18x faster than two in three bench runs (median rates; 1.04-1.09x paired per repeat: the peer section's
 * `steerlab t1` against `steerlab`) and used 36-39 % less CPU per token; on the SmolLM2-135M shape two threads are
 * 1.3-1.6x faster. The outputs do not depend on
 * it: prefills of 7, 40 and 130 tokens gave the same logits, caches and residuals, bit for bit, at one and two
 * threads (the organism and the SmolLM2 shape, plain graphs). The browser's onnxruntime-web sets threads globally and
 * is not touched here.
 */

/** Below this many matmul weights per token, sessions run one intra-op thread. */
export const SMALL_MODEL_MATMUL_WEIGHTS = 8_000_000;

export interface ThreadShape {
  numLayers: number;
  hiddenSize: number;
  vocabSize: number;
  /** config.intermediate_size; 4 x hidden when the config has none. */
  intermediateSize?: number | null;
}

/**
 * Weights a token multiplies by, counted from the config: per layer the attention projections (q, k, v, o; counted
 * as four hidden x hidden, an upper bound under grouped-query attention) and the three MLP projections, then the head.
 */
export function matmulWeightsPerToken(s: ThreadShape): number {
  const H = s.hiddenSize;
  const I = s.intermediateSize && s.intermediateSize > 0 ? s.intermediateSize : 4 * H;
  return s.numLayers * (4 * H * H + 3 * H * I) + s.vocabSize * H;
}

/** 1 for a model below SMALL_MODEL_MATMUL_WEIGHTS, else null (onnxruntime's default). */
export function intraOpThreadsFor(s: ThreadShape): 1 | null {
  return matmulWeightsPerToken(s) < SMALL_MODEL_MATMUL_WEIGHTS ? 1 : null;
}
