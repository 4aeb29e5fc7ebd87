/**
 * Reference forward pass of a Llama-family decoder (HF LlamaForCausalLM / Qwen2ForCausalLM semantics) in plain
 * TypeScript: batch 1, the whole causal sequence at once, optional steering and projection rows (the patch: after
 * layer l, x <- x - (x . u_l) u_l + steering_l, at every position). It exists to prove that every
 * built graph computes what it claims, and to give tests the residual stream a patched graph must expose.
 *
 * Accumulation is in float64 (JS numbers), results are stored as float32, so it is at least as exact as an fp32
 * ONNX run of the same weights.
 */
import { validateShape, type DecoderShape } from './config.js';
import type { DecoderWeights } from './weights.js';

export interface ReferenceResult {
  /** [S, V] */
  logits: Float32Array;
  /** [L+1, S, H]: index 0 embedding output, index l+1 the residual after layer l (after its projection and steering row). */
  residuals: Float32Array;
}

/**
 * Rotary inverse frequencies as float32, exactly as the graphs hold them: theta^(-2i/headDim), i < headDim/2.
 * Graph and reference share this so that both see the same angles.
 */
export function ropeInvFreq(shape: DecoderShape): Float32Array {
  const half = shape.headDim / 2;
  const out = new Float32Array(half);
  for (let i = 0; i < half; i++) out[i] = 1 / Math.pow(shape.ropeTheta, (2 * i) / shape.headDim);
  return out;
}

/** y[S, out] = x[S, in] @ W[in, out] (+ bias). */
function matmul(x: Float32Array, S: number, inDim: number, W: Float32Array, outDim: number, bias?: Float32Array): Float32Array {
  const y = new Float32Array(S * outDim);
  const acc = new Float64Array(outDim);
  for (let s = 0; s < S; s++) {
    if (bias) for (let o = 0; o < outDim; o++) acc[o] = bias[o];
    else acc.fill(0);
    for (let i = 0; i < inDim; i++) {
      const xi = x[s * inDim + i];
      if (xi === 0) continue;
      const row = i * outDim;
      for (let o = 0; o < outDim; o++) acc[o] += xi * W[row + o];
    }
    for (let o = 0; o < outDim; o++) y[s * outDim + o] = acc[o];
  }
  return y;
}

function rmsNorm(x: Float32Array, S: number, H: number, weight: Float32Array, eps: number): Float32Array {
  const y = new Float32Array(S * H);
  for (let s = 0; s < S; s++) {
    let ss = 0;
    for (let h = 0; h < H; h++) ss += x[s * H + h] * x[s * H + h];
    const inv = 1 / Math.sqrt(ss / H + eps);
    for (let h = 0; h < H; h++) y[s * H + h] = weight[h] * (x[s * H + h] * inv);
  }
  return y;
}

/** In place on [S, nHeads*hd]: HF rotate_half convention, x*cos + rotate_half(x)*sin with rotate_half(x) = [-x2, x1]. */
function applyRotary(x: Float32Array, S: number, nHeads: number, hd: number, invFreq: Float32Array): void {
  const half = hd / 2;
  for (let s = 0; s < S; s++) {
    for (let i = 0; i < half; i++) {
      // float32 angle, like the graph's Mul of float32 positions and float32 inverse frequencies
      const angle = Math.fround(Math.fround(s) * invFreq[i]);
      const c = Math.cos(angle);
      const sn = Math.sin(angle);
      for (let h = 0; h < nHeads; h++) {
        const base = s * nHeads * hd + h * hd;
        const x1 = x[base + i];
        const x2 = x[base + i + half];
        x[base + i] = x1 * c - x2 * sn;
        x[base + i + half] = x2 * c + x1 * sn;
      }
    }
  }
}

function checkInputs(shape: DecoderShape, weights: DecoderWeights, inputIds: number[], steering?: Float32Array, projection?: Float32Array): void {
  validateShape(shape);
  if (weights.layers.length !== shape.numLayers) {
    throw new Error(`referenceForward: weights have ${weights.layers.length} layers, shape says numLayers=${shape.numLayers}`);
  }
  if (weights.embedTokens.length !== shape.vocabSize * shape.hiddenSize) {
    throw new Error(`referenceForward: embedTokens has ${weights.embedTokens.length} values, expected vocabSize*hiddenSize=${shape.vocabSize * shape.hiddenSize}`);
  }
  if (inputIds.length === 0) throw new Error('referenceForward: inputIds must hold at least one token id');
  for (const id of inputIds) {
    if (!Number.isInteger(id) || id < 0 || id >= shape.vocabSize) {
      throw new Error(`referenceForward: token id ${id} is outside [0, ${shape.vocabSize})`);
    }
  }
  if (steering && steering.length !== shape.numLayers * shape.hiddenSize) {
    throw new Error(`referenceForward: steering must hold numLayers*hiddenSize=${shape.numLayers * shape.hiddenSize} values ([L, H]), got ${steering.length}`);
  }
  if (projection && projection.length !== shape.numLayers * shape.hiddenSize) {
    throw new Error(`referenceForward: projection must hold numLayers*hiddenSize=${shape.numLayers * shape.hiddenSize} values ([L, H]), got ${projection.length}`);
  }
}

/** In place on [S, H]: every row loses its component along u (float64 dot product), x <- x - (x . u) u. */
export function projectOut(x: Float32Array, S: number, H: number, u: Float32Array): void {
  for (let s = 0; s < S; s++) {
    let c = 0;
    for (let j = 0; j < H; j++) c += x[s * H + j] * u[j];
    for (let j = 0; j < H; j++) x[s * H + j] -= c * u[j];
  }
}

export function referenceForward(
  shape: DecoderShape,
  weights: DecoderWeights,
  inputIds: number[],
  opts: {
    steering?: Float32Array;
    projection?: Float32Array;
    /** Only positions >= steerFrom carry the patch (default 0: every position), as in a cached generation step. */
    steerFrom?: number;
  } = {},
): ReferenceResult {
  checkInputs(shape, weights, inputIds, opts.steering, opts.projection);
  const from = opts.steerFrom ?? 0;
  if (!Number.isSafeInteger(from) || from < 0 || from > inputIds.length) throw new Error(`referenceForward: steerFrom must be an integer in [0, ${inputIds.length}], got ${from}`);
  const { hiddenSize: H, numLayers: L, numHeads: nH, numKvHeads: nKv, headDim: hd, vocabSize: V, intermediateSize: I } = shape;
  const S = inputIds.length;
  const nRep = nH / nKv;
  const invFreq = ropeInvFreq(shape);
  const scale = 1 / Math.sqrt(hd);
  const residuals = new Float32Array((L + 1) * S * H);

  let h = new Float32Array(S * H);
  for (let s = 0; s < S; s++) h.set(weights.embedTokens.subarray(inputIds[s] * H, (inputIds[s] + 1) * H), s * H);
  residuals.set(h, 0);

  const scores = new Float64Array(S);
  for (let l = 0; l < L; l++) {
    const w = weights.layers[l];
    const xn = rmsNorm(h, S, H, w.inputNorm, shape.rmsNormEps);
    const q = matmul(xn, S, H, w.q, nH * hd, w.qBias);
    const k = matmul(xn, S, H, w.k, nKv * hd, w.kBias);
    const v = matmul(xn, S, H, w.v, nKv * hd, w.vBias);
    applyRotary(q, S, nH, hd, invFreq);
    applyRotary(k, S, nKv, hd, invFreq);

    const attn = new Float32Array(S * nH * hd);
    for (let head = 0; head < nH; head++) {
      const kvHead = Math.floor(head / nRep); // HF repeat_kv: each kv head serves nRep consecutive query heads
      for (let i = 0; i < S; i++) {
        let max = -Infinity;
        for (let j = 0; j <= i; j++) {
          let dot = 0;
          for (let d = 0; d < hd; d++) dot += q[i * nH * hd + head * hd + d] * k[j * nKv * hd + kvHead * hd + d];
          scores[j] = dot * scale;
          if (scores[j] > max) max = scores[j];
        }
        let sum = 0;
        for (let j = 0; j <= i; j++) {
          scores[j] = Math.exp(scores[j] - max);
          sum += scores[j];
        }
        for (let d = 0; d < hd; d++) {
          let acc = 0;
          for (let j = 0; j <= i; j++) acc += scores[j] * v[j * nKv * hd + kvHead * hd + d];
          attn[i * nH * hd + head * hd + d] = acc / sum;
        }
      }
    }
    const o = matmul(attn, S, nH * hd, w.o, H);
    const h1 = new Float32Array(S * H);
    for (let i = 0; i < S * H; i++) h1[i] = h[i] + o[i];

    const xn2 = rmsNorm(h1, S, H, w.postAttentionNorm, shape.rmsNormEps);
    const gate = matmul(xn2, S, H, w.gate, I);
    const up = matmul(xn2, S, H, w.up, I);
    for (let i = 0; i < S * I; i++) {
      const g = gate[i];
      gate[i] = (g / (1 + Math.exp(-g))) * up[i]; // SwiGLU: silu(gate) * up
    }
    const down = matmul(gate, S, I, w.down, H);
    const h2 = new Float32Array(S * H);
    for (let i = 0; i < S * H; i++) h2[i] = h1[i] + down[i];
    const patched = h2.subarray(from * H);
    if (opts.projection) projectOut(patched, S - from, H, opts.projection.subarray(l * H, (l + 1) * H));
    if (opts.steering) {
      const row = opts.steering.subarray(l * H, (l + 1) * H);
      for (let s = from; s < S; s++) for (let j = 0; j < H; j++) h2[s * H + j] += row[j];
    }
    residuals.set(h2, (l + 1) * S * H);
    h = h2;
  }
  const hn = rmsNorm(h, S, H, weights.finalNorm, shape.rmsNormEps);
  const logits = matmul(hn, S, H, weights.lmHead, V);
  return { logits, residuals };
}

/** Index of the largest value in row `row` of a [rows, width] matrix (first one on ties, like argmax in transformers.js). */
export function argmaxRow(m: Float32Array, width: number, row: number): number {
  let best = 0;
  let bestV = -Infinity;
  for (let i = 0; i < width; i++) {
    const x = m[row * width + i];
    if (x > bestV) {
      bestV = x;
      best = i;
    }
  }
  return best;
}

/** Greedy decoding by re-running referenceForward on the whole prefix each step; stops after an eos id. */
export function referenceGreedy(
  shape: DecoderShape,
  weights: DecoderWeights,
  promptIds: number[],
  maxNewTokens: number,
  eosIds: number[] = [],
): number[] {
  const ids = promptIds.slice();
  const out: number[] = [];
  for (let t = 0; t < maxNewTokens; t++) {
    const { logits } = referenceForward(shape, weights, ids);
    const next = argmaxRow(logits, shape.vocabSize, ids.length - 1);
    out.push(next);
    ids.push(next);
    if (eosIds.includes(next)) break;
  }
  return out;
}
