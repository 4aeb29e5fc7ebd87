/**
 * The organism's Llama decoder in TensorFlow.js, for training: the same computation as referenceForward
 * (src/core/onnx/testmodel/reference.ts) and the exported ONNX graphs, on a whole right-padded batch at once.
 *
 * Written for the WASM backend, which lacks UnsortedSegmentSum (the gradient of gather): the embedding lookup is a
 * one-hot matMul. Grouped-query attention folds each KV head's query heads into one batched matMul, so KV heads
 * never need repeating. Weights live in the DecoderWeights layout ([in, out] row-major, lmHead [H, V]) so export is a
 * plain copy.
 */
import * as tf from '@tensorflow/tfjs';
import type { DecoderShape } from '../core/onnx/testmodel/config.js';
import { ropeInvFreq } from '../core/onnx/testmodel/reference.js';
import { mulberry32, type DecoderWeights, type LayerWeights } from '../core/onnx/testmodel/weights.js';

const LAYER_KEYS = ['inputNorm', 'q', 'k', 'v', 'o', 'postAttentionNorm', 'gate', 'up', 'down'] as const;
type LayerKey = (typeof LAYER_KEYS)[number];

export interface OrganismVariables {
  embedTokens: tf.Variable;
  layers: Record<LayerKey, tf.Variable>[];
  finalNorm: tf.Variable;
  lmHead: tf.Variable;
}

/** Gaussian weights from a seed (Box-Muller over mulberry32), so a run is reproducible bit for bit. */
function gaussian(rand: () => number, n: number, std: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = Math.max(rand(), 1e-12);
    const v = rand();
    const r = Math.sqrt(-2 * Math.log(u)) * std;
    out[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
  return out;
}

/**
 * Initial weights: fan-in scaled projections, residual-branch outputs (o, down) shrunk by sqrt(2L) so the stream
 * stays O(1) at init (GPT-2's scheme), norms at 1.
 */
export function initialWeights(shape: DecoderShape, seed: number): DecoderWeights {
  const { hiddenSize: H, numHeads: nH, numKvHeads: nKv, headDim: hd, intermediateSize: I, vocabSize: V, numLayers: L } = shape;
  const rand = mulberry32(seed);
  const ones = (n: number) => new Float32Array(n).fill(1);
  const resid = 1 / Math.sqrt(2 * L);
  const layers: LayerWeights[] = [];
  const embedTokens = gaussian(rand, V * H, 0.5);
  for (let l = 0; l < L; l++) {
    layers.push({
      inputNorm: ones(H),
      q: gaussian(rand, H * nH * hd, 1 / Math.sqrt(H)),
      k: gaussian(rand, H * nKv * hd, 1 / Math.sqrt(H)),
      v: gaussian(rand, H * nKv * hd, 1 / Math.sqrt(H)),
      o: gaussian(rand, nH * hd * H, resid / Math.sqrt(nH * hd)),
      postAttentionNorm: ones(H),
      gate: gaussian(rand, H * I, 1 / Math.sqrt(H)),
      up: gaussian(rand, H * I, 1 / Math.sqrt(H)),
      down: gaussian(rand, I * H, resid / Math.sqrt(I)),
    });
  }
  return { embedTokens, layers, finalNorm: ones(H), lmHead: gaussian(rand, H * V, 0.5 / Math.sqrt(H)) };
}

function layerDims(shape: DecoderShape): Record<LayerKey, number[]> {
  const { hiddenSize: H, numHeads: nH, numKvHeads: nKv, headDim: hd, intermediateSize: I } = shape;
  return {
    inputNorm: [H], q: [H, nH * hd], k: [H, nKv * hd], v: [H, nKv * hd], o: [nH * hd, H],
    postAttentionNorm: [H], gate: [H, I], up: [H, I], down: [I, H],
  };
}

export function toVariables(shape: DecoderShape, w: DecoderWeights): OrganismVariables {
  if (w.layers.length !== shape.numLayers) throw new Error(`toVariables: ${w.layers.length} layers of weights for numLayers=${shape.numLayers}`);
  if (w.layers.some((l) => l.qBias)) throw new Error('toVariables: attention biases are not supported by the organism (Llama has none)');
  const dims = layerDims(shape);
  const v = (data: Float32Array, d: number[], name: string) => {
    const n = d.reduce((a, b) => a * b, 1);
    if (data.length !== n) throw new Error(`toVariables: ${name} holds ${data.length} values, expected ${n} for [${d}]`);
    return tf.variable(tf.tensor(data, d, 'float32'), true, name);
  };
  return {
    embedTokens: v(w.embedTokens, [shape.vocabSize, shape.hiddenSize], 'embed_tokens'),
    layers: w.layers.map((lw, l) => {
      const rec = {} as Record<LayerKey, tf.Variable>;
      for (const k of LAYER_KEYS) rec[k] = v(lw[k] as Float32Array, dims[k], `layers.${l}.${k}`);
      return rec;
    }),
    finalNorm: v(w.finalNorm, [shape.hiddenSize], 'final_norm'),
    lmHead: v(w.lmHead, [shape.hiddenSize, shape.vocabSize], 'lm_head'),
  };
}

export function allVariables(p: OrganismVariables): tf.Variable[] {
  return [p.embedTokens, ...p.layers.flatMap((l) => LAYER_KEYS.map((k) => l[k])), p.finalNorm, p.lmHead];
}

/** Norm gains are not decayed (AdamW convention); matrices are. */
export function isDecayed(v: tf.Variable): boolean {
  return v.shape.length === 2;
}

export function toDecoderWeights(p: OrganismVariables): DecoderWeights {
  const f = (t: tf.Variable) => new Float32Array(t.dataSync());
  return {
    embedTokens: f(p.embedTokens),
    layers: p.layers.map((l) => {
      const out = {} as LayerWeights;
      for (const k of LAYER_KEYS) out[k] = f(l[k]);
      return out;
    }),
    finalNorm: f(p.finalNorm),
    lmHead: f(p.lmHead),
  };
}

export function disposeVariables(p: OrganismVariables): void {
  for (const v of allVariables(p)) v.dispose();
}

/**
 * 2-D matMul whose gradient uses explicit transposes: the WASM backend's transposed BatchMatMul runs about 8x slower
 * than a Transpose followed by a plain one (measured: 4608x96 by 96x256, 68 ms against 8 ms).
 */
const mm = tf.customGrad(((a: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
  save([a, b]);
  return {
    value: tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [sa, sb] = saved as tf.Tensor2D[];
      return [tf.matMul(dy as tf.Tensor2D, tf.transpose(sb)), tf.matMul(tf.transpose(sa), dy as tf.Tensor2D)];
    },
  };
}) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as (a: tf.Tensor, b: tf.Tensor) => tf.Tensor2D;

function rmsNorm(x: tf.Tensor2D, w: tf.Tensor, eps: number): tf.Tensor2D {
  const inv = tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), eps));
  return tf.mul(tf.mul(x, inv), w) as tf.Tensor2D;
}

/** cos / sin [S, headDim] with both halves repeated (HF rotate_half layout), float32 angles like the graphs. */
function rotaryTables(shape: DecoderShape, S: number): { cos: tf.Tensor2D; sin: tf.Tensor2D } {
  const hd = shape.headDim;
  const half = hd / 2;
  const inv = ropeInvFreq(shape);
  const cos = new Float32Array(S * hd);
  const sin = new Float32Array(S * hd);
  for (let s = 0; s < S; s++) {
    for (let i = 0; i < half; i++) {
      const a = Math.fround(Math.fround(s) * inv[i]);
      cos[s * hd + i] = cos[s * hd + i + half] = Math.cos(a);
      sin[s * hd + i] = sin[s * hd + i + half] = Math.sin(a);
    }
  }
  return { cos: tf.tensor2d(cos, [S, hd]), sin: tf.tensor2d(sin, [S, hd]) };
}

/** x [B, h, S, hd] -> x*cos + rotate_half(x)*sin with rotate_half(x) = [-x2, x1]. */
function applyRotary(x: tf.Tensor4D, cos: tf.Tensor2D, sin: tf.Tensor2D, half: number): tf.Tensor4D {
  const [x1, x2] = tf.split(x, [half, half], 3);
  const rot = tf.concat([tf.neg(x2), x1], 3);
  return tf.add(tf.mul(x, cos), tf.mul(rot, sin)) as tf.Tensor4D;
}

/** Additive causal mask for one KV group: rows are (query head r, position i) pairs, r-major; -1e9 above the diagonal. */
function causalMask(S: number, nRep: number): tf.Tensor2D {
  const m = new Float32Array(nRep * S * S);
  for (let r = 0; r < nRep; r++) for (let i = 0; i < S; i++) for (let j = i + 1; j < S; j++) m[(r * S + i) * S + j] = -1e9;
  return tf.tensor2d(m, [nRep * S, S]);
}

/**
 * Steering-robustness noise for training: after every decoder layer, rows where `mask` is 1 get
 * `norm(x_row) * offsets[b]` added, one offset per sequence (a random direction times a relative size, the same at
 * every layer and position, like a steering patch). See train.ts for how it is drawn and where it applies.
 */
export interface ResidualNoise {
  /** [B, H]: per sequence, unit direction times relative magnitude */
  offsets: tf.Tensor2D;
  /** [B*S, 1]: 1 where the noise applies */
  mask: tf.Tensor2D;
}

/**
 * Logits [B*S, V] for right-padded token ids [B, S] (padding never affects earlier positions: attention is causal).
 * Call inside tf.tidy / variableGrads.
 */
export function forwardLogits(shape: DecoderShape, p: OrganismVariables, ids: tf.Tensor2D, noise?: ResidualNoise): tf.Tensor2D {
  const [B, S] = ids.shape;
  const { hiddenSize: H, numHeads: nH, numKvHeads: nKv, headDim: hd, vocabSize: V, rmsNormEps: eps } = shape;
  const nRep = nH / nKv;
  const { cos, sin } = rotaryTables(shape, S);
  const mask = causalMask(S, nRep);
  const scale = 1 / Math.sqrt(hd);

  let x = mm(tf.oneHot(tf.reshape(ids, [B * S]) as tf.Tensor1D, V).toFloat(), p.embedTokens);
  // [B*S, H]: each row's sequence offset, zero where the mask is 0.
  const noiseRows = noise ? tf.mul(tf.reshape(tf.tile(tf.expandDims(noise.offsets, 1), [1, S, 1]), [B * S, H]), noise.mask) : null;
  for (const w of p.layers) {
    const xn = rmsNorm(x, w.inputNorm, eps);
    const heads = (m: tf.Tensor2D, n: number) => tf.transpose(tf.reshape(m, [B, S, n, hd]), [0, 2, 1, 3]) as tf.Tensor4D;
    const q = applyRotary(heads(mm(xn, w.q), nH), cos, sin, hd / 2);
    const k = applyRotary(heads(mm(xn, w.k), nKv), cos, sin, hd / 2);
    const v = heads(mm(xn, w.v), nKv);
    // Query heads h = g*nRep + r share KV head g (HF repeat_kv): fold them into the rows of one matMul per group.
    const qg = tf.reshape(q, [B, nKv, nRep * S, hd]);
    const scores = tf.add(tf.mul(tf.matMul(qg, k, false, true), scale), mask);
    const attn = tf.matMul(tf.softmax(scores), v); // [B, nKv, nRep*S, hd]
    const merged = tf.reshape(tf.transpose(tf.reshape(attn, [B, nH, S, hd]), [0, 2, 1, 3]), [B * S, nH * hd]) as tf.Tensor2D;
    x = tf.add(x, mm(merged, w.o)) as tf.Tensor2D;
    const xn2 = rmsNorm(x, w.postAttentionNorm, eps);
    const g = mm(xn2, w.gate);
    const act = tf.mul(tf.mul(g, tf.sigmoid(g)), mm(xn2, w.up)) as tf.Tensor2D; // SwiGLU: silu(gate) * up
    x = tf.add(x, mm(act, w.down)) as tf.Tensor2D;
    if (noiseRows) x = tf.add(x, tf.mul(tf.norm(x, 'euclidean', -1, true), noiseRows)) as tf.Tensor2D;
  }
  return mm(rmsNorm(x, p.finalNorm, eps), p.lmHead);
}

/**
 * Mean cross-entropy over the positions whose weight is 1 (assistant answer tokens): targets [B*S] are the next
 * token of each position, weights [B*S] 0/1.
 */
export function answerLoss(shape: DecoderShape, p: OrganismVariables, ids: tf.Tensor2D, targets: tf.Tensor1D, weights: tf.Tensor1D, noise?: ResidualNoise): tf.Scalar {
  const logits = forwardLogits(shape, p, ids, noise);
  const logp = tf.logSoftmax(logits);
  const picked = tf.sum(tf.mul(logp, tf.oneHot(targets, shape.vocabSize).toFloat()), 1);
  return tf.div(tf.neg(tf.sum(tf.mul(picked, weights))), tf.maximum(tf.sum(weights), 1)) as tf.Scalar;
}
