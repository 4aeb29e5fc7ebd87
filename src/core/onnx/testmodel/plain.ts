/**
 * The "plain" test decoder: what optimum / torch.onnx.export writes for a Llama-family model (docs/METHOD-NOTES.md section 4a).
 * Only standard ONNX ops (opset 17): Gather embedding, RMSNorm decomposed as
 * Pow -> ReduceMean -> Add(eps) -> Sqrt -> Div -> Mul -> Mul(weight), q/k/v MatMul (+ bias Add for Qwen2),
 * rotary embedding computed from position_ids (HF rotate_half convention), past KV concatenated, grouped-query
 * attention by repeating KV heads, causal + padding mask from attention_mask, SwiGLU MLP, two residual Adds per layer.
 *
 * `emitDecoder` writes the decoder body into any GraphBuilder, so the merged (If) topology reuses it for both
 * branches while the weights stay in the outer graph.
 */
import { create } from '@bufbuild/protobuf';
import { TensorProtoSchema, type GraphProto } from 'onnx-buf';
import { DataType, GraphBuilder, attr, type Dim } from '../graph-builder.js';
import { validateShape, type DecoderShape } from './config.js';
import { ropeInvFreq } from './reference.js';
import type { DecoderWeights } from './weights.js';

export const PLAIN_OPSET = 17;
export const PLAIN_OPSETS = [{ domain: '', version: PLAIN_OPSET }];

/** The most negative float32: what HF adds to masked attention scores (finite, so fully masked rows stay NaN-free). */
const MASK_MIN = -3.4028234663852886e38;

export interface LayerWeightNames {
  inputNorm: string;
  q: string;
  k: string;
  v: string;
  qBias?: string;
  kBias?: string;
  vBias?: string;
  o: string;
  postAttentionNorm: string;
  gate: string;
  up: string;
  down: string;
}

export interface WeightNames {
  embed: string;
  layers: LayerWeightNames[];
  finalNorm: string;
  /** [H, V] initializer, or null when tied: the graph then uses Transpose(embed) like a tied PyTorch export. */
  lmHead: string | null;
  invFreq: string;
}

/** Float32 initializer that views the weight's bytes instead of copying them (the 0.5B preset is ~2 GB). */
function addFloat(g: GraphBuilder, name: string, dims: number[], data: Float32Array): string {
  const expected = dims.reduce((a, b) => a * b, 1);
  if (data.length !== expected) throw new Error(`initializer ${name}: ${data.length} values for dims [${dims}] (expected ${expected})`);
  g.initializers.push(
    create(TensorProtoSchema, {
      name,
      dataType: DataType.FLOAT,
      dims: dims.map((d) => BigInt(d)),
      rawData: new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength),
    }),
  );
  return name;
}

/** Adds every weight as an initializer with HF-style names; returns the names for emitDecoder. */
export function addWeightInitializers(g: GraphBuilder, shape: DecoderShape, weights: DecoderWeights): WeightNames {
  const { hiddenSize: H, numHeads: nH, numKvHeads: nKv, headDim: hd, intermediateSize: I, vocabSize: V } = shape;
  if (weights.layers.length !== shape.numLayers) {
    throw new Error(`weights have ${weights.layers.length} layers, shape says numLayers=${shape.numLayers}`);
  }
  const embed = addFloat(g, 'model.embed_tokens.weight', [V, H], weights.embedTokens);
  const layers = weights.layers.map((w, l): LayerWeightNames => {
    const p = `model.layers.${l}`;
    const names: LayerWeightNames = {
      inputNorm: addFloat(g, `${p}.input_layernorm.weight`, [H], w.inputNorm),
      q: addFloat(g, `${p}.self_attn.q_proj.weight`, [H, nH * hd], w.q),
      k: addFloat(g, `${p}.self_attn.k_proj.weight`, [H, nKv * hd], w.k),
      v: addFloat(g, `${p}.self_attn.v_proj.weight`, [H, nKv * hd], w.v),
      o: addFloat(g, `${p}.self_attn.o_proj.weight`, [nH * hd, H], w.o),
      postAttentionNorm: addFloat(g, `${p}.post_attention_layernorm.weight`, [H], w.postAttentionNorm),
      gate: addFloat(g, `${p}.mlp.gate_proj.weight`, [H, I], w.gate),
      up: addFloat(g, `${p}.mlp.up_proj.weight`, [H, I], w.up),
      down: addFloat(g, `${p}.mlp.down_proj.weight`, [I, H], w.down),
    };
    if (shape.attentionBias) {
      if (!w.qBias || !w.kBias || !w.vBias) throw new Error(`layer ${l}: shape has attentionBias but the weights carry no q/k/v bias`);
      names.qBias = addFloat(g, `${p}.self_attn.q_proj.bias`, [nH * hd], w.qBias);
      names.kBias = addFloat(g, `${p}.self_attn.k_proj.bias`, [nKv * hd], w.kBias);
      names.vBias = addFloat(g, `${p}.self_attn.v_proj.bias`, [nKv * hd], w.vBias);
    }
    return names;
  });
  const finalNorm = addFloat(g, 'model.norm.weight', [H], weights.finalNorm);
  const lmHead = shape.tieWordEmbeddings ? null : addFloat(g, 'lm_head.weight', [H, V], weights.lmHead);
  const invFreq = addFloat(g, 'model.rotary_emb.inv_freq', [hd / 2], ropeInvFreq(shape));
  return { embed, layers, finalNorm, lmHead, invFreq };
}

export interface DecoderInputNames {
  inputIds: string;
  attentionMask: string;
  positionIds: string;
  /** null: the no-past decoder (first step of a merged model), which never reads past inputs. */
  past: { key: string; value: string }[] | null;
}

export interface DecoderOutputNames {
  logits: string;
  presentKey: (layer: number) => string;
  presentValue: (layer: number) => string;
}

export const IO = {
  inputIds: 'input_ids',
  attentionMask: 'attention_mask',
  positionIds: 'position_ids',
  pastKey: (l: number) => `past_key_values.${l}.key`,
  pastValue: (l: number) => `past_key_values.${l}.value`,
  logits: 'logits',
  presentKey: (l: number) => `present.${l}.key`,
  presentValue: (l: number) => `present.${l}.value`,
};

/** Declares the transformers.js decoder inputs (KV heads and head dim static: transformers.js needs them). */
export function declareDecoderInputs(g: GraphBuilder, shape: DecoderShape): DecoderInputNames {
  const inputIds = g.input(IO.inputIds, DataType.INT64, ['batch_size', 'sequence_length']);
  const attentionMask = g.input(IO.attentionMask, DataType.INT64, ['batch_size', 'total_sequence_length']);
  const positionIds = g.input(IO.positionIds, DataType.INT64, ['batch_size', 'sequence_length']);
  const kvDims: Dim[] = ['batch_size', shape.numKvHeads, 'past_sequence_length', shape.headDim];
  const past = Array.from({ length: shape.numLayers }, (_, l) => ({
    key: g.input(IO.pastKey(l), DataType.FLOAT, kvDims),
    value: g.input(IO.pastValue(l), DataType.FLOAT, kvDims),
  }));
  return { inputIds, attentionMask, positionIds, past };
}

/** Declares logits and present.* with the given names on g (the outer graph or an If branch). */
export function declareDecoderOutputs(g: GraphBuilder, shape: DecoderShape, out: DecoderOutputNames): void {
  g.output(out.logits, DataType.FLOAT, ['batch_size', 'sequence_length', shape.vocabSize]);
  const kvDims: Dim[] = ['batch_size', shape.numKvHeads, 'total_sequence_length', shape.headDim];
  for (let l = 0; l < shape.numLayers; l++) {
    g.output(out.presentKey(l), DataType.FLOAT, kvDims);
    g.output(out.presentValue(l), DataType.FLOAT, kvDims);
  }
}

/** Writes the decoder body into g. Weight names may live in an outer graph (If branches read outer scope). */
export function emitDecoder(
  g: GraphBuilder,
  shape: DecoderShape,
  w: WeightNames,
  io: DecoderInputNames,
  out: DecoderOutputNames,
): void {
  const { numHeads: nH, numKvHeads: nKv, headDim: hd } = shape;
  const half = hd / 2;
  const nRep = nH / nKv;
  const f = (v: number, hint = 'const') => g.float32([v], [], hint);
  const i64 = (v: number[], hint = 'const') => g.int64(v, [v.length], hint);
  const i64scalar = (v: number, hint = 'const') => g.int64([v], [], hint);
  const two = f(2, 'two');
  const one = f(1, 'one');
  const eps = f(shape.rmsNormEps, 'eps');

  const rmsNorm = (x: string, weight: string): string => {
    const pow = g.op('Pow', [x, two]);
    const mean = g.op('ReduceMean', [pow], { axes: attr.ints([-1]), keepdims: attr.int(1) });
    const sq = g.op('Sqrt', [g.op('Add', [mean, eps])]);
    const inv = g.op('Div', [one, sq]);
    return g.op('Mul', [weight, g.op('Mul', [x, inv])]);
  };

  // Rotary tables from position_ids: freqs = pos * inv_freq, emb = cat(freqs, freqs), cos/sin -> [B, 1, S, hd].
  const pos = g.op('Cast', [io.positionIds], { to: attr.int(DataType.FLOAT) });
  const freqs = g.op('Mul', [g.op('Unsqueeze', [pos, i64([2])]), w.invFreq]);
  const emb = g.op('Concat', [freqs, freqs], { axis: attr.int(-1) });
  const cos = g.op('Unsqueeze', [g.op('Cos', [emb]), i64([1])]);
  const sin = g.op('Unsqueeze', [g.op('Sin', [emb]), i64([1])]);
  const halfStarts = i64([0]);
  const halfEnds = i64([half]);
  const secondStarts = i64([half]);
  const secondEnds = i64([hd]);
  const lastAxis = i64([3]);
  const rotary = (x: string, outName?: string): string => {
    const x1 = g.op('Slice', [x, halfStarts, halfEnds, lastAxis]);
    const x2 = g.op('Slice', [x, secondStarts, secondEnds, lastAxis]);
    const rotated = g.op('Concat', [g.op('Neg', [x2]), x1], { axis: attr.int(-1) });
    const sum = [g.op('Mul', [x, cos]), g.op('Mul', [rotated, sin])];
    return outName ? g.node('Add', sum, [outName])[0] : g.op('Add', sum);
  };

  // Attention bias [B, 1, S, T]: query i (absolute position T-S+i) sees key j iff j <= T-S+i and mask[j] == 1.
  // Left padding works because padded keys are masked and padded queries never feed real ones.
  const total = g.op('Gather', [g.op('Shape', [io.attentionMask]), i64scalar(1)], { axis: attr.int(0) });
  const seq = g.op('Gather', [g.op('Shape', [io.inputIds]), i64scalar(1)], { axis: attr.int(0) });
  const pastLen = g.op('Sub', [total, seq]);
  const step = i64scalar(1);
  const queryPos = g.op('Range', [pastLen, total, step]);
  const keyPos = g.op('Range', [i64scalar(0), total, step]);
  const causal = g.op('LessOrEqual', [g.op('Unsqueeze', [keyPos, i64([0])]), g.op('Unsqueeze', [queryPos, i64([1])])]);
  const padding = g.op('Unsqueeze', [g.op('Cast', [io.attentionMask], { to: attr.int(DataType.BOOL) }), i64([1, 2])]);
  const allowed = g.op('And', [causal, padding]);
  const maskBias = g.op('Where', [allowed, f(0, 'zero'), f(MASK_MIN, 'mask_min')]);

  const headsShapes = new Map<number, string>(); // one shape constant per head count, not one per use
  const headsShape = (n: number) => {
    if (!headsShapes.has(n)) headsShapes.set(n, i64([0, 0, n, hd], 'heads_shape'));
    return headsShapes.get(n)!;
  };
  const perm = [0, 2, 1, 3];
  const repeatAxis = i64([2]);
  const repeatShape = nRep > 1 ? i64([1, 1, nRep, 1, 1], 'repeat') : '';
  const repeatedShape = nRep > 1 ? i64([0, nH, -1, hd], 'repeated_shape') : '';
  const repeatKv = (x: string): string => {
    if (nRep === 1) return x;
    // HF repeat_kv: [B, KV, T, hd] -> [B, KV, nRep, T, hd] -> [B, KV*nRep, T, hd]
    const expanded = g.op('Expand', [g.op('Unsqueeze', [x, repeatAxis]), repeatShape]);
    return g.op('Reshape', [expanded, repeatedShape]);
  };
  const sqrtHd = f(Math.sqrt(hd), 'sqrt_head_dim');
  const mergedShape = i64([0, 0, nH * hd], 'merged_shape');

  let h = g.op('Gather', [w.embed, io.inputIds], { axis: attr.int(0) });
  for (let l = 0; l < shape.numLayers; l++) {
    const lw = w.layers[l];
    const xn = rmsNorm(h, lw.inputNorm);
    const project = (weight: string, bias: string | undefined) => {
      const y = g.op('MatMul', [xn, weight]);
      return bias ? g.op('Add', [y, bias]) : y;
    };
    const split = (x: string, heads: number) =>
      g.op('Transpose', [g.op('Reshape', [x, headsShape(heads)])], { perm: attr.ints(perm) });
    const q = rotary(split(project(lw.q, lw.qBias), nH));
    const kNew = split(project(lw.k, lw.kBias), nKv);
    const vNew = split(project(lw.v, lw.vBias), nKv);
    let k: string;
    let v: string;
    if (io.past) {
      const kRot = rotary(kNew);
      k = g.node('Concat', [io.past[l].key, kRot], [out.presentKey(l)], { axis: attr.int(2) })[0];
      v = g.node('Concat', [io.past[l].value, vNew], [out.presentValue(l)], { axis: attr.int(2) })[0];
    } else {
      k = rotary(kNew, out.presentKey(l));
      v = g.node('Identity', [vNew], [out.presentValue(l)])[0];
    }
    const kT = g.op('Transpose', [repeatKv(k)], { perm: attr.ints([0, 1, 3, 2]) });
    const scores = g.op('Add', [g.op('Div', [g.op('MatMul', [q, kT]), sqrtHd]), maskBias]);
    const probs = g.op('Softmax', [scores], { axis: attr.int(-1) });
    const ctx = g.op('Transpose', [g.op('MatMul', [probs, repeatKv(v)])], { perm: attr.ints(perm) });
    const attnOut = g.op('MatMul', [g.op('Reshape', [ctx, mergedShape]), lw.o]);
    const h1 = g.op('Add', [h, attnOut]);

    const xn2 = rmsNorm(h1, lw.postAttentionNorm);
    const gate = g.op('MatMul', [xn2, lw.gate]);
    const silu = g.op('Mul', [gate, g.op('Sigmoid', [gate])]);
    const up = g.op('MatMul', [xn2, lw.up]);
    const down = g.op('MatMul', [g.op('Mul', [silu, up]), lw.down]);
    h = g.op('Add', [h1, down]);
  }
  const hn = rmsNorm(h, w.finalNorm);
  const lmHead = w.lmHead ?? g.op('Transpose', [w.embed], { perm: attr.ints([1, 0]) });
  g.node('MatMul', [hn, lmHead], [out.logits]);
}

export interface BuiltGraph {
  graph: GraphProto;
  opsets: { domain: string; version: number }[];
}

/** The optimum "model.onnx" with-past decoder (also serves the first step with past_sequence_length 0). */
export function buildPlainGraph(shape: DecoderShape, weights: DecoderWeights): BuiltGraph {
  validateShape(shape);
  const g = new GraphBuilder('main_graph');
  const io = declareDecoderInputs(g, shape);
  const w = addWeightInitializers(g, shape, weights);
  const out: DecoderOutputNames = { logits: IO.logits, presentKey: IO.presentKey, presentValue: IO.presentValue };
  emitDecoder(g, shape, w, io, out);
  declareDecoderOutputs(g, shape, out);
  return { graph: g.graph(), opsets: PLAIN_OPSETS };
}
