/**
 * Deterministic, seeded weights for test decoders. The same (shape, seed) always gives the same numbers, so
 * builder output is byte-identical run to run and the reference forward pass can regenerate what a graph holds.
 *
 * Layout follows ONNX MatMul convention: projection matrices are [in, out] row-major (x @ W).
 */
import type { DecoderShape } from './config.js';
import { mulberry32 } from '../../util/prng.js';

export { mulberry32 };


/** Fills with uniform values in [-scale, scale): cheaper than Gaussian and just as useful for tests. */
function uniform(rand: () => number, n: number, scale: number, offset = 0): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = offset + (rand() * 2 - 1) * scale;
  return out;
}

export interface LayerWeights {
  inputNorm: Float32Array; // [H]
  q: Float32Array; // [H, nH*hd]
  k: Float32Array; // [H, nKv*hd]
  v: Float32Array; // [H, nKv*hd]
  qBias?: Float32Array; // [nH*hd]
  kBias?: Float32Array; // [nKv*hd]
  vBias?: Float32Array; // [nKv*hd]
  o: Float32Array; // [nH*hd, H]
  postAttentionNorm: Float32Array; // [H]
  gate: Float32Array; // [H, I]
  up: Float32Array; // [H, I]
  down: Float32Array; // [I, H]
}

export interface DecoderWeights {
  embedTokens: Float32Array; // [V, H]
  layers: LayerWeights[];
  finalNorm: Float32Array; // [H]
  /** [H, V]; for tied embeddings this is the transpose of embedTokens, materialised once. */
  lmHead: Float32Array;
}

/** Seeds derive per tensor so adding a layer never changes the weights of earlier ones. */
function tensorRand(seed: number, layer: number, slot: number): () => number {
  return mulberry32((seed * 1_000_003 + layer * 7919 + slot * 104_729) >>> 0);
}

export function generateWeights(s: DecoderShape, seed: number): DecoderWeights {
  const H = s.hiddenSize;
  const qDim = s.numHeads * s.headDim;
  const kvDim = s.numKvHeads * s.headDim;
  const I = s.intermediateSize;
  // Scales chosen so activations stay O(1) through many layers and the logits are far from uniform:
  // tests need greedy tokens that move when the residual stream is steered.
  // Tied embeddings double as the unembedding: at full scale the current token's own embedding dominates the
  // residual and greedy decoding just echoes it, so tied models get embeddings of norm ~1 instead.
  const embedScale = s.tieWordEmbeddings ? 1 / Math.sqrt(H) : 1.0;
  const embedTokens = uniform(tensorRand(seed, -1, 0), s.vocabSize * H, embedScale);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < s.numLayers; l++) {
    const r = (slot: number) => tensorRand(seed, l, slot);
    const lw: LayerWeights = {
      inputNorm: uniform(r(0), H, 0.1, 1.0),
      q: uniform(r(1), H * qDim, 1 / Math.sqrt(H)),
      k: uniform(r(2), H * kvDim, 1 / Math.sqrt(H)),
      v: uniform(r(3), H * kvDim, 1 / Math.sqrt(H)),
      o: uniform(r(4), qDim * H, 0.5 / Math.sqrt(qDim)),
      postAttentionNorm: uniform(r(5), H, 0.1, 1.0),
      gate: uniform(r(6), H * I, 1 / Math.sqrt(H)),
      up: uniform(r(7), H * I, 1 / Math.sqrt(H)),
      down: uniform(r(8), I * H, 0.5 / Math.sqrt(I)),
    };
    if (s.attentionBias) {
      lw.qBias = uniform(r(9), qDim, 0.1);
      lw.kBias = uniform(r(10), kvDim, 0.1);
      lw.vBias = uniform(r(11), kvDim, 0.1);
    }
    layers.push(lw);
  }
  const finalNorm = uniform(tensorRand(seed, -2, 0), H, 0.1, 1.0);
  let lmHead: Float32Array;
  if (s.tieWordEmbeddings) {
    lmHead = new Float32Array(H * s.vocabSize);
    for (let v = 0; v < s.vocabSize; v++) for (let h = 0; h < H; h++) lmHead[h * s.vocabSize + v] = embedTokens[v * H + h];
  } else {
    lmHead = uniform(tensorRand(seed, -3, 0), H * s.vocabSize, 1 / Math.sqrt(H));
  }
  return { embedTokens, layers, finalNorm, lmHead };
}
