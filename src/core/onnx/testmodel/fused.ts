/**
 * The `fused` (fp32), `fused-q4` and `fused-q4f16` decoder graphs, shaped the way the onnxruntime-genai model builder writes
 * Llama-family decoders (the form transformers.js recommends for LLMs on the hub, docs/METHOD-NOTES.md section 4 (b)):
 *
 *   Gather(embed) -> SimplifiedLayerNormalization            (layer 0's input norm; ONNX domain, as the builder)
 *   per layer: q/k/v MatMul (+bias) -> com.microsoft GroupQueryAttention (rotary fused, do_rotary=1) -> o_proj
 *              -> com.microsoft SkipSimplifiedLayerNormalization(residual, o_proj, gamma): output 3 = residual sum
 *              -> gate/up MatMul -> SiLU (Sigmoid * Mul) -> Mul -> down MatMul
 *              -> SkipSimplifiedLayerNormalization (next layer's input norm, or the final norm)
 *   The final norm exposes only output 0: the last residual (after the last layer) is never materialised.
 *   lm_head MatMul -> logits.
 *
 * No position_ids input: GroupQueryAttention derives positions from seqlens_k = ReduceSum(attention_mask) - 1
 * (int32 [batch]) and total_sequence_length = Shape(attention_mask)[1] (int32 scalar), exactly like the builder.
 * Consequence shared with every builder-made model: GQA assumes padding on the RIGHT (measured on ORT 1.30 CPU:
 * right-padded rows are exact, prompt and decode; left-padded rows attend to the pads and use wrong positions).
 * transformers.js' generate() reads logits[:, -1], so right-padded batches get a wrong first token instead:
 * batched generation with padding is only correct at batch 1 or with equal-length rows.
 *
 * q4f16: float16 activations, past/present KV and logits; every projection (q, k, v, o, gate, up, down,
 * lm_head) as com.microsoft MatMulNBits (4 bits, block 32, symmetric, fp16 scales); embedding as a float16 Gather.
 * q4: the builder's CPU int4 form (`-p int4 -e cpu` with int4_accuracy_level=4): float32 activations, KV and logits,
 * the same 4-bit codes and (fp16-representable) scales stored as float32, and accuracy_level 4 on every MatMulNBits,
 * so onnxruntime's CPU kernel quantises each activation block to int8 and multiplies with integer dot products, as
 * llama.cpp's Q4_0 x Q8_0 does. (Without it, the kernel dequantises to float32 first: measured 1.1-1.2x slower per
 * decode step on the SmolLM2 shape.)
 */
import type { GraphProto } from 'onnx-buf';
import { DataType, GraphBuilder, attr, fromFloat16Array, toFloat16Array } from '../graph-builder.js';
import { validateShape, type DecoderShape } from './config.js';
import type { DecoderWeights } from './weights.js';
import { Q4_BLOCK_SIZE, quantizeQ4 } from './quant.js';
import { rotaryCaches } from './rotary.js';

export { quantizeQ4 } from './quant.js';

const MS = 'com.microsoft';
/** Opsets the genai builder declares; ORT resolves SimplifiedLayerNormalization (ONNX domain, since 1) under it. */
export const FUSED_OPSETS: { domain: string; version: number }[] = [
  { domain: '', version: 21 },
  { domain: MS, version: 1 },
];

export interface FusedOptions {
  q4f16: boolean;
  /** 4-bit projections with float32 activations (the `fused-q4` CPU form); not together with q4f16. */
  q4?: boolean;
}

/** MatMulNBits accuracy_level 4: activations quantised to int8 per block (CPU int8 dot products). */
const INT8_COMPUTE = 4;

/** Throws naming the tensor whose length does not match the shape (weights from another shape, say). */
function checkWeights(s: DecoderShape, w: DecoderWeights): void {
  const H = s.hiddenSize;
  const qDim = s.numHeads * s.headDim;
  const kvDim = s.numKvHeads * s.headDim;
  const I = s.intermediateSize;
  const expect = (name: string, a: Float32Array | undefined, n: number) => {
    if (!a) throw new Error(`buildFusedGraph: weights.${name} is missing (expected ${n} values)`);
    if (a.length !== n) throw new Error(`buildFusedGraph: weights.${name} has ${a.length} values, expected ${n} for this shape`);
  };
  expect('embedTokens', w.embedTokens, s.vocabSize * H);
  expect('finalNorm', w.finalNorm, H);
  expect('lmHead', w.lmHead, H * s.vocabSize);
  if (w.layers.length !== s.numLayers) {
    throw new Error(`buildFusedGraph: weights have ${w.layers.length} layers, shape.numLayers is ${s.numLayers}`);
  }
  w.layers.forEach((l, i) => {
    expect(`layers[${i}].inputNorm`, l.inputNorm, H);
    expect(`layers[${i}].q`, l.q, H * qDim);
    expect(`layers[${i}].k`, l.k, H * kvDim);
    expect(`layers[${i}].v`, l.v, H * kvDim);
    expect(`layers[${i}].o`, l.o, qDim * H);
    expect(`layers[${i}].postAttentionNorm`, l.postAttentionNorm, H);
    expect(`layers[${i}].gate`, l.gate, H * I);
    expect(`layers[${i}].up`, l.up, H * I);
    expect(`layers[${i}].down`, l.down, I * H);
    if (s.attentionBias) {
      expect(`layers[${i}].qBias`, l.qBias, qDim);
      expect(`layers[${i}].kBias`, l.kBias, kvDim);
      expect(`layers[${i}].vBias`, l.vBias, kvDim);
    }
  });
}

type FusedPrecision = 'fp32' | 'q4' | 'q4f16';

/** Writes float tensors in the graph's activation dtype and projections as MatMul or MatMulNBits. */
class FusedEmitter {
  readonly float: DataType;
  readonly q4f16: boolean;
  constructor(readonly g: GraphBuilder, readonly precision: FusedPrecision) {
    this.q4f16 = precision === 'q4f16';
    this.float = this.q4f16 ? DataType.FLOAT16 : DataType.FLOAT;
  }

  floatInit(name: string, dims: number[], data: Float32Array): string {
    return this.q4f16
      ? this.g.initializer(name, DataType.FLOAT16, dims, toFloat16Array(data))
      : this.g.initializer(name, DataType.FLOAT, dims, data);
  }

  /** x [.., k] @ W [k, n] (+ bias): plain MatMul for fp32, MatMulNBits for q4 / q4f16 (genai builder names). */
  linear(x: string, prefix: string, w: Float32Array, k: number, n: number, bias?: Float32Array, outName?: string): string {
    const matOut = outName && !bias ? outName : undefined;
    let y: string;
    if (this.precision !== 'fp32') {
      const q = quantizeQ4(w, k, n, Q4_BLOCK_SIZE);
      const nBlocks = Math.ceil(k / Q4_BLOCK_SIZE);
      const b = this.g.initializer(`${prefix}.weight.quant`, DataType.UINT8, [n, nBlocks, Q4_BLOCK_SIZE / 2], q.packed);
      const sc = this.q4f16
        ? this.g.initializer(`${prefix}.weight.scales`, DataType.FLOAT16, [n * nBlocks], toFloat16Array(q.scales))
        : this.g.initializer(`${prefix}.weight.scales`, DataType.FLOAT, [n * nBlocks], q.scales);
      [y] = this.g.node('MatMulNBits', [x, b, sc], [matOut ?? `${prefix}/MatMulNBits/output_0`], {
        K: attr.int(k), N: attr.int(n), bits: attr.int(4), block_size: attr.int(Q4_BLOCK_SIZE),
        ...(this.q4f16 ? {} : { accuracy_level: attr.int(INT8_COMPUTE) }),
      }, MS);
    } else {
      const wName = this.floatInit(`${prefix}.weight`, [k, n], w);
      [y] = this.g.node('MatMul', [x, wName], [matOut ?? `${prefix}/MatMul/output_0`]);
    }
    if (bias) {
      const bName = this.floatInit(`${prefix}.bias`, [n], bias);
      [y] = this.g.node('Add', [y, bName], [outName ?? `${prefix}/Add/output_0`]);
    }
    return y;
  }
}

/** float32 -> float16 -> float32: what an fp16 initializer gives back. */
function roundFloat16(a: Float32Array): Float32Array {
  return fromFloat16Array(toFloat16Array(a));
}

/**
 * The weights exactly as the q4f16 graph holds them: projections (and lm_head) dequantised from their 4-bit codes,
 * embedding, norm gammas and biases rounded to float16. Feeding these to the reference forward pass separates
 * quantisation error (a property of the weights) from float16 arithmetic error (what tests must bound).
 */
export function effectiveQ4f16Weights(shape: DecoderShape, weights: DecoderWeights): DecoderWeights {
  return effectiveWeights(shape, weights, roundFloat16);
}

/** The weights as the q4 graph holds them: projections (and lm_head) dequantised, everything else float32 as given. */
export function effectiveQ4Weights(shape: DecoderShape, weights: DecoderWeights): DecoderWeights {
  return effectiveWeights(shape, weights, (a) => a);
}

function effectiveWeights(shape: DecoderShape, weights: DecoderWeights, float: (a: Float32Array) => Float32Array): DecoderWeights {
  validateShape(shape);
  checkWeights(shape, weights);
  const H = shape.hiddenSize;
  const qDim = shape.numHeads * shape.headDim;
  const kvDim = shape.numKvHeads * shape.headDim;
  const I = shape.intermediateSize;
  const dq = (w: Float32Array, k: number, n: number) => quantizeQ4(w, k, n, Q4_BLOCK_SIZE).dequantized;
  return {
    embedTokens: float(weights.embedTokens),
    finalNorm: float(weights.finalNorm),
    lmHead: dq(weights.lmHead, H, shape.vocabSize),
    layers: weights.layers.map((l) => ({
      inputNorm: float(l.inputNorm),
      postAttentionNorm: float(l.postAttentionNorm),
      q: dq(l.q, H, qDim),
      k: dq(l.k, H, kvDim),
      v: dq(l.v, H, kvDim),
      o: dq(l.o, qDim, H),
      gate: dq(l.gate, H, I),
      up: dq(l.up, H, I),
      down: dq(l.down, I, H),
      ...(shape.attentionBias ? { qBias: float(l.qBias!), kBias: float(l.kBias!), vBias: float(l.vBias!) } : {}),
    })),
  };
}

export function buildFusedGraph(
  shape: DecoderShape,
  weights: DecoderWeights,
  opts: FusedOptions,
): { graph: GraphProto; opsets: { domain: string; version: number }[] } {
  validateShape(shape);
  checkWeights(shape, weights);
  if (typeof opts?.q4f16 !== 'boolean') throw new Error(`buildFusedGraph: opts.q4f16 must be a boolean, got ${opts?.q4f16}`);
  if (opts.q4 !== undefined && typeof opts.q4 !== 'boolean') throw new Error(`buildFusedGraph: opts.q4 must be a boolean or absent, got ${String(opts.q4)}`);
  if (opts.q4 && opts.q4f16) throw new Error('buildFusedGraph: opts.q4 and opts.q4f16 are two different graphs; set one');
  const precision: FusedPrecision = opts.q4f16 ? 'q4f16' : opts.q4 ? 'q4' : 'fp32';
  // onnxruntime's GroupQueryAttention kernels refuse other head sizes ("head_size shall be a multiple of 16"):
  // fail here, naming the shape, rather than write a graph no runtime can run.
  if (shape.headDim % 16 !== 0) {
    throw new Error(`buildFusedGraph: headDim must be a multiple of 16 for GroupQueryAttention (onnxruntime), got ${shape.headDim}; use the plain or merged topology for this shape`);
  }
  const s = shape;
  const H = s.hiddenSize;
  const qDim = s.numHeads * s.headDim;
  const kvDim = s.numKvHeads * s.headDim;
  const I = s.intermediateSize;
  const g = new GraphBuilder(precision === 'fp32' ? 'steerlab_fused' : `steerlab_fused_${precision}`);
  const e = new FusedEmitter(g, precision);
  const F = e.float;

  // ---- I/O (transformers.js names; KV heads and head dim static, see docs/METHOD-NOTES.md section 3) ----
  const inputIds = g.input('input_ids', DataType.INT64, ['batch_size', 'sequence_length']);
  const mask = g.input('attention_mask', DataType.INT64, ['batch_size', 'total_sequence_length']);
  const past = Array.from({ length: s.numLayers }, (_, i) => ({
    key: g.input(`past_key_values.${i}.key`, F, ['batch_size', s.numKvHeads, 'past_sequence_length', s.headDim]),
    value: g.input(`past_key_values.${i}.value`, F, ['batch_size', s.numKvHeads, 'past_sequence_length', s.headDim]),
  }));
  g.output('logits', F, ['batch_size', 'sequence_length', s.vocabSize]);
  for (let i = 0; i < s.numLayers; i++) {
    g.output(`present.${i}.key`, F, ['batch_size', s.numKvHeads, 'total_sequence_length', s.headDim]);
    g.output(`present.${i}.value`, F, ['batch_size', s.numKvHeads, 'total_sequence_length', s.headDim]);
  }

  // ---- attention-mask reformatting for GQA (the builder's attn_mask_reformat subgraph) ----
  const pre = '/model/attn_mask_reformat/attn_mask_subgraph';
  const [maskSum] = g.node('ReduceSum', [mask, g.int64([1], [1], 'axes_1')], [`${pre}/ReduceSum/output_0`], { keepdims: attr.int(0) });
  const [maskSumMinus1] = g.node('Sub', [maskSum, g.int64([1], [], 'one_i64')], [`${pre}/Sub/output_0`]);
  const [seqlensK] = g.node('Cast', [maskSumMinus1], [`${pre}/Sub/Cast/output_0`], { to: attr.int(DataType.INT32) });
  const [maskShape] = g.node('Shape', [mask], [`${pre}/Shape/output_0`]);
  const [totalLen64] = g.node('Gather', [maskShape, g.int64([1], [], 'idx_1')], [`${pre}/Gather/output_0`], { axis: attr.int(0) });
  const [totalSeqLen] = g.node('Cast', [totalLen64], [`${pre}/Gather/Cast/output_0`], { to: attr.int(DataType.INT32) });

  const rope = rotaryCaches(s);
  const cosCache = e.floatInit('cos_cache', rope.dims, rope.cos);
  const sinCache = e.floatInit('sin_cache', rope.dims, rope.sin);

  // ---- embedding and layer 0's input norm ----
  const embed = e.floatInit('model.embed_tokens.weight', [s.vocabSize, H], weights.embedTokens);
  const [embOut] = g.node('Gather', [embed, inputIds], ['/model/embed_tokens/Gather/output_0'], { axis: attr.int(0) });
  const eps = attr.float(s.rmsNormEps);
  const [ln0] = g.node(
    'SimplifiedLayerNormalization',
    [embOut, e.floatInit('model.layers.0.input_layernorm.weight', [H], weights.layers[0].inputNorm)],
    ['/model/layers.0/input_layernorm/SimplifiedLayerNormalization/output_0'],
    { epsilon: eps, axis: attr.int(-1), stash_type: attr.int(1) },
  );

  /** Skip norm: input = residual so far, skip = branch output; output 3 = their sum, the new residual. */
  const skipNorm = (prefix: string, residual: string, branch: string, gamma: Float32Array, gammaName: string, last: boolean) => {
    const outs = last ? [`${prefix}/output_0`] : [`${prefix}/output_0`, '', '', `${prefix}/output_3`];
    g.node('SkipSimplifiedLayerNormalization', [residual, branch, e.floatInit(gammaName, [H], gamma)], outs, { epsilon: eps }, MS);
    return { normed: outs[0], residual: last ? undefined : outs[3] };
  };

  let normed = ln0;
  let residual = embOut;
  for (let l = 0; l < s.numLayers; l++) {
    const lw = weights.layers[l];
    const p = `/model/layers.${l}`;
    const m = `model.layers.${l}`;
    // Attention.
    const q = e.linear(normed, `${m}.attn.q_proj`, lw.q, H, qDim, s.attentionBias ? lw.qBias : undefined);
    const k = e.linear(normed, `${m}.attn.k_proj`, lw.k, H, kvDim, s.attentionBias ? lw.kBias : undefined);
    const v = e.linear(normed, `${m}.attn.v_proj`, lw.v, H, kvDim, s.attentionBias ? lw.vBias : undefined);
    const [attnOut] = g.node(
      'GroupQueryAttention',
      [q, k, v, past[l].key, past[l].value, seqlensK, totalSeqLen, cosCache, sinCache],
      [`${p}/attn/GroupQueryAttention/output_0`, `present.${l}.key`, `present.${l}.value`],
      {
        num_heads: attr.int(s.numHeads),
        kv_num_heads: attr.int(s.numKvHeads),
        scale: attr.float(1 / Math.sqrt(s.headDim)),
        local_window_size: attr.int(-1),
        do_rotary: attr.int(1),
        rotary_interleaved: attr.int(0),
      },
      MS,
    );
    const o = e.linear(attnOut, `${m}.attn.o_proj`, lw.o, qDim, H);
    const post = skipNorm(`${p}/post_attention_layernorm/SkipLayerNorm`, residual, o, lw.postAttentionNorm, `${m}.post_attention_layernorm.weight`, false);
    residual = post.residual!;
    // MLP: SiLU(gate) * up, SiLU as Sigmoid * Mul like the builder.
    const gate = e.linear(post.normed, `${m}.mlp.gate_proj`, lw.gate, H, I);
    const up = e.linear(post.normed, `${m}.mlp.up_proj`, lw.up, H, I);
    const [sig] = g.node('Sigmoid', [gate], [`${p}/mlp/act_fn/Sigmoid/output_0`]);
    const [silu] = g.node('Mul', [gate, sig], [`${p}/mlp/act_fn/Mul/output_0`]);
    const [gated] = g.node('Mul', [silu, up], [`${p}/mlp/Mul/output_0`]);
    const down = e.linear(gated, `${m}.mlp.down_proj`, lw.down, I, H);
    // Next layer's input norm, or the final norm (which hides the last residual sum).
    const last = l === s.numLayers - 1;
    const next = last
      ? skipNorm('/model/layers.final_norm_layernorm/SkipLayerNorm', residual, down, weights.finalNorm, 'model.norm.weight', true)
      : skipNorm(`/model/layers.${l + 1}/input_layernorm/SkipLayerNorm`, residual, down, weights.layers[l + 1].inputNorm, `model.layers.${l + 1}.input_layernorm.weight`, false);
    normed = next.normed;
    if (!last) residual = next.residual!;
  }

  // lm_head (a separate matrix even when tied, as the builder writes it).
  e.linear(normed, 'lm_head', weights.lmHead, H, s.vocabSize, undefined, 'logits');

  return { graph: g.graph(), opsets: FUSED_OPSETS.map((o) => ({ ...o })) };
}
