/**
 * Hand-built graphs for the patcher tests: a small fp32 decoder in the optimum style (decomposed RMSNorm, explicit
 * residual Adds in both input orders, a stream + constant Add that is NOT a residual), its If-merged form, and
 * assorted graphs the patcher must refuse.
 */
import { DataType, GraphBuilder, attr, serializeModel } from '../../src/core/onnx/graph-builder.js';

export interface ToyShape {
  layers: number;
  hidden: number;
  vocab: number;
  kvHeads: number;
  headDim: number;
}

export const TOY: ToyShape = { layers: 3, hidden: 16, vocab: 50, kvHeads: 2, headDim: 4 };

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function randomMatrix(r: () => number, n: number, scale: number): number[] {
  return Array.from({ length: n }, () => (r() * 2 - 1) * scale);
}

/** Weights as initializers of `b` (the outer graph for merged models). Same seed, same weights. */
export function toyWeights(b: GraphBuilder, shape: ToyShape, seed: number): Record<string, string> {
  const r = rng(seed);
  const { hidden: H, vocab: V, kvHeads, headDim } = shape;
  const w: Record<string, string> = {};
  w.embed = b.float32(randomMatrix(r, V * H, 1), [V, H], 'embed');
  for (let l = 0; l < shape.layers; l++) {
    w[`q${l}`] = b.float32(randomMatrix(r, H * H, 0.3), [H, H], `q${l}`);
    w[`o${l}`] = b.float32(randomMatrix(r, H * H, 0.3), [H, H], `o${l}`);
    w[`k${l}`] = b.float32(randomMatrix(r, H * kvHeads * headDim, 0.3), [H, kvHeads * headDim], `k${l}`);
    w[`v${l}`] = b.float32(randomMatrix(r, H * kvHeads * headDim, 0.3), [H, kvHeads * headDim], `v${l}`);
    w[`up${l}`] = b.float32(randomMatrix(r, H * 2 * H, 0.3), [H, 2 * H], `up${l}`);
    w[`down${l}`] = b.float32(randomMatrix(r, 2 * H * H, 0.3), [2 * H, H], `down${l}`);
    w[`n1_${l}`] = b.float32(randomMatrix(r, H, 1), [H], `n1_${l}`);
    w[`n2_${l}`] = b.float32(randomMatrix(r, H, 1), [H], `n2_${l}`);
    w[`bias${l}`] = b.float32(randomMatrix(r, H, 0.1), [H], `bias${l}`);
  }
  w.norm = b.float32(randomMatrix(r, H, 1), [H], 'norm');
  w.lmHead = b.float32(randomMatrix(r, H * V, 0.3), [H, V], 'lm_head');
  return w;
}

function rmsNorm(b: GraphBuilder, x: string, weight: string): string {
  const sq = b.op('Pow', [x, b.float32([2], [])]);
  const mean = b.op('ReduceMean', [sq], { axes: attr.ints([-1]), keepdims: attr.int(1) });
  const std = b.op('Sqrt', [b.op('Add', [mean, b.float32([1e-5], [])])]);
  return b.op('Mul', [b.op('Div', [x, std]), weight]);
}

export interface ToyBody {
  logits: string;
  presents: string[];
  /** The residual stream: embedding output, then the output of each layer. */
  residuals: string[];
}

/**
 * The decoder computation, reading graph-level names input_ids / past_key_values.* (outer scope in a branch).
 * `extraProducer` adds a third residual Add in the last layer (an odd producer count).
 */
export function toyBody(b: GraphBuilder, shape: ToyShape, w: Record<string, string>, opts: { extraProducer?: boolean; ambiguous?: boolean; gbq?: boolean; scaleEmbedding?: boolean } = {}): ToyBody {
  const { kvHeads, headDim } = shape;
  let h = opts.gbq
    ? quantizedEmbedding(b, shape)
    : b.op('Gather', [w.embed, 'input_ids'], { axis: attr.int(0) });
  if (opts.scaleEmbedding) h = b.op('Mul', [h, b.float32([Math.sqrt(shape.hidden)], [])]); // Gemma
  const residuals = [h];
  const presents: string[] = [];
  const kvShape = b.int64([0, 0, kvHeads, headDim]);
  for (let l = 0; l < shape.layers; l++) {
    const n1 = rmsNorm(b, h, w[`n1_${l}`]);
    for (const [kind, weight] of [['key', w[`k${l}`]], ['value', w[`v${l}`]]] as const) {
      const proj = b.op('Transpose', [b.op('Reshape', [b.op('MatMul', [n1, weight]), kvShape])], { perm: attr.ints([0, 2, 1, 3]) });
      presents.push(b.node('Concat', [`past_key_values.${l}.${kind}`, proj], [b.fresh(`present.${l}.${kind}`)], { axis: attr.int(2) })[0]);
    }
    const attn = b.op('MatMul', [b.op('Tanh', [b.op('MatMul', [n1, w[`q${l}`]])]), w[`o${l}`]]);
    const h1 = b.op('Add', [h, attn]); // stream first
    if (opts.ambiguous && l === 0) b.op('Add', [h, b.op('Relu', [attn])]); // a second "residual" reading the same stream
    const shifted = b.op('Add', [h1, w[`bias${l}`]]); // stream + constant: not a residual connection
    const n2 = rmsNorm(b, shifted, w[`n2_${l}`]);
    const mlp = b.op('MatMul', [b.op('Relu', [b.op('MatMul', [n2, w[`up${l}`]])]), w[`down${l}`]]);
    h = b.op('Add', [mlp, h1]); // stream second
    if (opts.extraProducer && l === shape.layers - 1) h = b.op('Add', [h, b.op('Sigmoid', [h])]);
    residuals.push(h);
  }
  const logits = b.op('MatMul', [rmsNorm(b, h, w.norm), w.lmHead]);
  return { logits, presents, residuals };
}

/** A 4-bit block-quantized embedding (com.microsoft GatherBlockQuantized, packed uint8, float32 scales). */
function quantizedEmbedding(b: GraphBuilder, shape: ToyShape): string {
  const r = rng(99);
  const { vocab: V, hidden: H } = shape;
  const packed = Uint8Array.from({ length: (V * H) / 2 }, () => Math.floor(r() * 256));
  const data = b.initializer('embed_q4', DataType.UINT8, [V, H / 2], packed);
  const scales = b.float32(randomMatrix(r, V * (H / 16), 0.2), [V, H / 16], 'embed_scales');
  return b.node('GatherBlockQuantized', [data, 'input_ids', scales], 1, { block_size: attr.int(16), bits: attr.int(4) }, 'com.microsoft')[0];
}

function declareInputs(b: GraphBuilder, shape: ToyShape): void {
  b.input('input_ids', DataType.INT64, ['batch_size', 'sequence_length']);
  b.input('attention_mask', DataType.INT64, ['batch_size', 'total_sequence_length']);
  for (let l = 0; l < shape.layers; l++) {
    for (const kind of ['key', 'value']) {
      b.input(`past_key_values.${l}.${kind}`, DataType.FLOAT, ['batch_size', shape.kvHeads, 'past_sequence_length', shape.headDim]);
    }
  }
}

function declareOutputs(b: GraphBuilder, shape: ToyShape, body: ToyBody, names?: { logits: string; presents: string[] }): void {
  const logitsName = names?.logits ?? 'logits';
  b.node('Identity', [body.logits], [logitsName]);
  b.output(logitsName, DataType.FLOAT, ['batch_size', 'sequence_length', shape.vocab]);
  body.presents.forEach((p, i) => {
    const name = names?.presents[i] ?? `present.${Math.floor(i / 2)}.${i % 2 ? 'value' : 'key'}`;
    b.node('Identity', [p], [name]);
    b.output(name, DataType.FLOAT, ['batch_size', shape.kvHeads, 'total_sequence_length', shape.headDim]);
  });
}

const OPSETS = [{ domain: '', version: 17 }];

/** Plain optimum-style decoder. `debug` also exposes every residual as an output `debug_residual_{i}`. */
export function plainDecoder(shape: ToyShape = TOY, opts: { seed?: number; debug?: boolean; extraProducer?: boolean; ambiguous?: boolean; gbq?: boolean; scaleEmbedding?: boolean; opset?: number } = {}): Uint8Array {
  const b = new GraphBuilder('toy_decoder');
  declareInputs(b, shape);
  const w = toyWeights(b, shape, opts.seed ?? 7);
  const body = toyBody(b, shape, w, opts);
  declareOutputs(b, shape, body);
  if (opts.debug) {
    body.residuals.forEach((r, i) => {
      b.node('Identity', [r], [`debug_residual_${i}`]);
      b.output(`debug_residual_${i}`, DataType.FLOAT, ['batch_size', 'sequence_length', shape.hidden]);
    });
  }
  const opsets = [{ domain: '', version: opts.opset ?? 17 }, ...(opts.gbq ? [{ domain: 'com.microsoft', version: 1 }] : [])];
  return serializeModel(b.graph(), { opsets, metadata: { origin: 'steerlab-test' } }).model;
}

/** optimum's decoder_model_merged: both branches of an If on use_cache_branch hold the full decoder. */
export function mergedDecoder(shape: ToyShape = TOY, opts: { seed?: number; debug?: boolean } = {}): Uint8Array {
  const outer = new GraphBuilder('merged');
  declareInputs(outer, shape);
  outer.input('use_cache_branch', DataType.BOOL, [1]);
  const w = toyWeights(outer, shape, opts.seed ?? 7);
  const outNames = ['logits', ...Array.from({ length: shape.layers * 2 }, (_, i) => `present.${Math.floor(i / 2)}.${i % 2 ? 'value' : 'key'}`)];
  const branch = (prefix: string) => {
    const g = new GraphBuilder(`${prefix}_graph`, `${prefix}/`);
    const body = toyBody(g, shape, w);
    declareOutputs(g, shape, body, { logits: `${prefix}/logits`, presents: outNames.slice(1).map((n) => `${prefix}/${n}`) });
    if (opts.debug) {
      body.residuals.forEach((r, i) => {
        g.node('Identity', [r], [`${prefix}/debug_residual_${i}`]);
        g.output(`${prefix}/debug_residual_${i}`, DataType.FLOAT, ['batch_size', 'sequence_length', shape.hidden]);
      });
    }
    return g.graph();
  };
  const debugNames = opts.debug ? Array.from({ length: shape.layers + 1 }, (_, i) => `debug_residual_${i}`) : [];
  outer.node('If', ['use_cache_branch'], [...outNames, ...debugNames], { then_branch: attr.graph(branch('with_past')), else_branch: attr.graph(branch('no_past')) });
  outer.output('logits', DataType.FLOAT, ['batch_size', 'sequence_length', shape.vocab]);
  for (const n of outNames.slice(1)) outer.output(n, DataType.FLOAT, ['batch_size', shape.kvHeads, 'total_sequence_length', shape.headDim]);
  for (const n of debugNames) outer.output(n, DataType.FLOAT, ['batch_size', 'sequence_length', shape.hidden]);
  return serializeModel(outer.graph(), { opsets: OPSETS }).model;
}

/** BERT-like encoder: input_ids and residual Adds, but no KV cache. */
export function encoderOnly(shape: ToyShape = TOY): Uint8Array {
  const b = new GraphBuilder('encoder');
  b.input('input_ids', DataType.INT64, ['batch_size', 'sequence_length']);
  b.input('attention_mask', DataType.INT64, ['batch_size', 'sequence_length']);
  const w = toyWeights(b, shape, 3);
  let h = b.op('Gather', [w.embed, 'input_ids']);
  for (let l = 0; l < shape.layers; l++) h = b.op('Add', [h, b.op('MatMul', [rmsNorm(b, h, w[`n1_${l}`]), w[`q${l}`]])]);
  b.node('Identity', [h], ['last_hidden_state']);
  b.output('last_hidden_state', DataType.FLOAT, ['batch_size', 'sequence_length', shape.hidden]);
  return serializeModel(b.graph(), { opsets: OPSETS }).model;
}

/** A tiny convolutional net. */
export function convNet(): Uint8Array {
  const b = new GraphBuilder('convnet');
  b.input('pixel_values', DataType.FLOAT, ['batch', 3, 8, 8]);
  const k = b.float32(new Array(4 * 3 * 3 * 3).fill(0.1), [4, 3, 3, 3]);
  const y = b.op('Relu', [b.op('Conv', ['pixel_values', k], { pads: attr.ints([1, 1, 1, 1]) })]);
  b.node('GlobalAveragePool', [y], ['pooled']);
  b.output('pooled', DataType.FLOAT, ['batch', 4, 1, 1]);
  return serializeModel(b.graph(), { opsets: OPSETS }).model;
}

/** input_ids and a KV cache, but no residual connections (embedding straight to the head). */
export function noResidual(shape: ToyShape = TOY): Uint8Array {
  const b = new GraphBuilder('bag_of_words');
  declareInputs(b, shape);
  const w = toyWeights(b, shape, 5);
  const h = b.op('Gather', [w.embed, 'input_ids']);
  b.node('MatMul', [h, w.lmHead], ['logits']);
  b.output('logits', DataType.FLOAT, ['batch_size', 'sequence_length', shape.vocab]);
  b.node('Identity', ['past_key_values.0.key'], ['present.0.key']);
  b.output('present.0.key', DataType.FLOAT, ['batch_size', shape.kvHeads, 'past_sequence_length', shape.headDim]);
  return serializeModel(b.graph(), { opsets: OPSETS }).model;
}
