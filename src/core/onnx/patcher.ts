/**
 * The steering patch: makes any hub decoder steerable inside transformers.js by adding
 *   input  `steering`        float32 [steer_batch, num_layers, hidden]   row l is added to the residual after layer l
 *   input  `projection`      float32 [projection_batch, num_layers, hidden]  row l = u_l, a unit vector or zero (off)
 *   output `residual_stream` float32 [batch, num_layers + 1, seq, hidden] embedding output, then each layer's
 *                                                                          (steered) residual
 * so that, at every position, the residual after decoder layer l becomes
 *   x' = x - (x . u_l) u_l + steering_l
 * With u_l = 0 this is x + steering_l, bit for bit (x . 0 = 0 and x - 0 = x for every finite x). u_l = d with
 * steering_l = 0 is directional ablation (Arditi et al.); u_l = d with steering_l = t d clamps the component along d
 * to t. The dot product runs in float32 whatever the stream dtype (a float16 reduction over the hidden size would
 * lose the precision clamping needs); only the correction (x . u) u is cast back to the stream dtype.
 * With PatchOptions.logitsFrom also
 *   input  `logits_from`     int64 [1]   the language-model head runs on positions logits_from.. of the pass only
 * (a Slice before the head): a prefill whose logits nobody reads feeds its last position; 0 gives every position.
 * Detection is structural (residual.ts); the new model is emitted by splicing (model-io.ts), so the weights are
 * copied, never re-encoded.
 */
import { create } from '@bufbuild/protobuf';
import {
  AttributeProtoSchema,
  AttributeProto_AttributeType,
  NodeProtoSchema,
  TensorProto_DataType,
  type NodeProto,
  type ValueInfoProto,
} from 'onnx-buf';
import { tensor, valueInfo, type Dim } from './graph-builder.js';
import { readModel, writeModel, type GraphRewrite, type GraphView, type ModelView, type NodeEmit } from './model-io.js';
import { OnnxPatchError } from './patch-error.js';
import { detectResidualStream, Scope, type StreamDetection } from './residual.js';

export { OnnxPatchError } from './patch-error.js';

export interface PatchOptions {
  /**
   * Add the `projection` input (default true). false writes the steering-only patch of earlier versions: the
   * benchmarks compare the two, nothing else needs it.
   */
  projection?: boolean;
  expectedNumLayers?: number;
  expectedHiddenSize?: number;
  /** rewrite external-data `location` entries, e.g. {"model.onnx_data": "model_steerable.onnx_data"} */
  renameExternalData?: Record<string, string>;
  /**
   * false: the steering (and projection) inputs only, no `residual_stream` output (the lean graph for passes that read no residual:
   * every residual then keeps its only consumers, so onnxruntime runs the graph as it runs the original). Default true.
   */
  captureResiduals?: boolean;
  /**
   * The file name the input bytes were read from (Node, local files): inline weights are written as external data
   * pointing at their bytes in that file, so the patched graph holds no weights and onnxruntime reads them from the
   * original, given the folder (session option model_external_initializers_file_folder_path).
   */
  weightsByReference?: string;
  /**
   * Add the `logits_from` input (int64 [1]): the language-model head runs on positions logits_from.. of the pass
   * only, so a prefill whose logits nobody reads does not pay for them (a fifth of a prefill's arithmetic on the
   * SmolLM2-135M shape, and a [prompt x vocabulary] logits tensor). 0 = every position, as the unpatched graph.
   * Added only where the head is a MatMul reached from the `logits` output (through Cast); the report says whether.
   */
  logitsFrom?: boolean;
}

export interface InjectionPoint {
  layer: number;
  /** 'main', or the If attribute holding the branch ('then_branch' / 'else_branch') */
  graph: string;
  kind: 'add' | 'skip-norm';
  /** residual value name after steering */
  value: string;
}

export interface PatchReport {
  topology: 'plain' | 'fused' | 'merged';
  num_layers: number;
  hidden_size: number;
  stream_dtype: 'float32' | 'float16' | 'bfloat16';
  injection_points: InjectionPoint[];
  opset: number;
  steering_input: 'steering';
  /** null when the patch was written without it (PatchOptions.projection false). */
  projection_input: 'projection' | null;
  residual_output: 'residual_stream';
  /** The input limiting the head's positions (PatchOptions.logitsFrom), or null when the graph has none. */
  logits_from_input?: 'logits_from' | null;
}

export const STEERING_INPUT = 'steering';
export const LOGITS_FROM_INPUT = 'logits_from';
export const PROJECTION_INPUT = 'projection';
export const RESIDUAL_OUTPUT = 'residual_stream';
const MIN_OPSET = 13;

const STREAM_DTYPES: Partial<Record<TensorProto_DataType, PatchReport['stream_dtype']>> = {
  [TensorProto_DataType.FLOAT]: 'float32',
  [TensorProto_DataType.FLOAT16]: 'float16',
  [TensorProto_DataType.BFLOAT16]: 'bfloat16',
};

/** One decoder graph found in the model: the main graph, or one branch of an If-merged decoder. */
interface DecoderSite {
  graphLabel: string;
  scope: Scope;
  detection: StreamDetection;
}

interface Analysis {
  model: ModelView;
  sites: DecoderSite[];
  /** Index of the If node in the root graph for merged decoders. */
  ifNodeIndex?: number;
  report: PatchReport;
  batchDim: Dim;
  seqDim: Dim;
}

function checkOptions(opts: PatchOptions): void {
  for (const key of ['expectedNumLayers', 'expectedHiddenSize'] as const) {
    const v = opts[key];
    if (v !== undefined && (!Number.isInteger(v) || v <= 0)) {
      throw new OnnxPatchError('BAD_OPTIONS', `${key} must be a positive integer, got ${v}`);
    }
  }
}

function dimOf(vi: ValueInfoProto | undefined, i: number, fallback: string): Dim {
  if (vi?.type?.value.case !== 'tensorType') return fallback;
  const d = vi.type.value.value.shape?.dim[i]?.value;
  if (d?.case === 'dimParam' && d.value) return d.value;
  if (d?.case === 'dimValue') return Number(d.value);
  return fallback;
}

function layerCount(d: StreamDetection, label: string): number {
  const n = d.producers.length;
  if (n % 2 !== 0) {
    throw new OnnxPatchError(
      'ODD_PRODUCER_COUNT',
      `found ${n} residual producers in ${label}; expected an even number (two per decoder layer: attention and MLP)`,
    );
  }
  return n / 2;
}

function usedDomains(g: GraphView, acc: Set<string>): Set<string> {
  for (const { node, subgraphs } of g.nodes) {
    acc.add(node.domain === 'ai.onnx' ? '' : node.domain);
    for (const sub of subgraphs) usedDomains(sub.graph, acc);
  }
  return acc;
}

function analyse(bytes: Uint8Array, opts: PatchOptions): Analysis {
  checkOptions(opts);
  if (!(bytes instanceof Uint8Array) || bytes.length === 0) {
    throw new OnnxPatchError('EMPTY_INPUT', 'the model is empty (0 bytes); expected an ONNX ModelProto');
  }
  const model = readModel(bytes);
  const onnxOpset = model.opsets.find((o) => o.domain === '' || o.domain === 'ai.onnx');
  if (!onnxOpset) throw new OnnxPatchError('OPSET_TOO_OLD', `the model imports no ai.onnx opset (found: ${model.opsets.map((o) => `${o.domain || 'ai.onnx'} ${o.version}`).join(', ') || 'none'}); expected opset >= ${MIN_OPSET}`);
  if (onnxOpset.version < MIN_OPSET) {
    throw new OnnxPatchError('OPSET_TOO_OLD', `ai.onnx opset ${onnxOpset.version} is too old; the patch needs opset >= ${MIN_OPSET} (Split with split sizes input, Unsqueeze with axes input)`);
  }
  const imported = new Set(model.opsets.map((o) => (o.domain === 'ai.onnx' ? '' : o.domain)));
  const missing = [...usedDomains(model.graph, new Set())].filter((d) => !imported.has(d));
  if (missing.length) {
    throw new OnnxPatchError('MISSING_OPSET', `nodes use domain(s) ${missing.map((d) => `'${d}'`).join(', ')} but the model imports no opset for them (truncated or broken model?)`);
  }
  const g = model.graph;
  const inputNames = g.inputs.map((vi) => vi.name);
  const outputNames = g.outputs.map((vi) => vi.name);
  if (inputNames.includes(STEERING_INPUT) || inputNames.includes(PROJECTION_INPUT) || outputNames.includes(RESIDUAL_OUTPUT)) {
    throw new OnnxPatchError('ALREADY_PATCHED', `the graph already has a '${STEERING_INPUT}' or '${PROJECTION_INPUT}' input or a '${RESIDUAL_OUTPUT}' output: it is already patched`);
  }
  if (!inputNames.includes('input_ids')) {
    throw new OnnxPatchError('NO_INPUT_IDS', `the graph has no input 'input_ids' (inputs: ${inputNames.join(', ') || 'none'}); expected a text decoder`);
  }
  const hasKv = inputNames.some((n) => n.startsWith('past_key_values') || n.startsWith('past.')) || outputNames.some((n) => n.startsWith('present'));
  if (!hasKv) {
    throw new OnnxPatchError(
      'NOT_A_DECODER',
      `the graph has no KV-cache inputs (past_key_values*) or outputs (present*) (outputs: ${outputNames.join(', ')}); expected a decoder with a KV cache, not an encoder`,
    );
  }
  const root = new Scope(g);
  const sites: DecoderSite[] = [];
  let ifNodeIndex: number | undefined;
  const direct = detectResidualStream(root);
  if (direct) {
    sites.push({ graphLabel: 'main', scope: root, detection: direct });
  } else {
    // Merged decoders (optimum): the decoder lives twice, in both branches of an If on use_cache_branch.
    g.nodes.forEach((entry, i) => {
      if (ifNodeIndex !== undefined || entry.node.opType !== 'If') return;
      const branches = entry.subgraphs.filter((s) => s.attrName === 'then_branch' || s.attrName === 'else_branch');
      if (branches.length !== 2) return;
      const found = branches.map((b) => {
        const scope = new Scope(b.graph, root);
        return { graphLabel: b.attrName, scope, detection: detectResidualStream(scope) };
      });
      if (found.every((f) => f.detection)) {
        ifNodeIndex = i;
        for (const f of found) sites.push({ graphLabel: f.graphLabel, scope: f.scope, detection: f.detection! });
      }
    });
  }
  if (sites.length === 0) {
    throw new OnnxPatchError(
      'NO_EMBEDDING',
      `no embedding found: expected a Gather or com.microsoft GatherBlockQuantized whose indices come from 'input_ids' (possibly through Cast), in the main graph or in both branches of an If`,
    );
  }
  const layers = sites.map((s) => layerCount(s.detection, s.graphLabel === 'main' ? 'the graph' : `If ${s.graphLabel}`));
  const hidden = sites.map((s) => s.detection.hiddenSize);
  const dtypes = sites.map((s) => s.detection.streamDtype);
  if (new Set(layers).size > 1 || new Set(hidden).size > 1 || new Set(dtypes).size > 1) {
    throw new OnnxPatchError('MERGED_BRANCHES_DIFFER', `the If branches describe different decoders: layers [${layers}], hidden sizes [${hidden}], stream dtypes [${dtypes}]`);
  }
  const numLayers = layers[0];
  const producerCount = sites[0].detection.producers.length;
  if (opts.expectedNumLayers !== undefined && opts.expectedNumLayers !== numLayers) {
    throw new OnnxPatchError('LAYER_COUNT_MISMATCH', `found ${producerCount} residual producers = ${numLayers} layers, config says ${opts.expectedNumLayers}`);
  }
  const hiddenSize = hidden[0];
  if (opts.expectedHiddenSize !== undefined && opts.expectedHiddenSize !== hiddenSize) {
    throw new OnnxPatchError('HIDDEN_SIZE_MISMATCH', `the embedding has hidden size ${hiddenSize}, config says ${opts.expectedHiddenSize}`);
  }
  const streamDtype = STREAM_DTYPES[dtypes[0]];
  if (!streamDtype) {
    throw new OnnxPatchError('UNSUPPORTED_DTYPE', `the residual stream has ONNX data type ${TensorProto_DataType[dtypes[0]] ?? dtypes[0]}; expected FLOAT, FLOAT16 or BFLOAT16`);
  }
  const anySkip = sites.some((s) => s.detection.producers.some((p) => p.kind === 'skip-norm'));
  const idsInfo = g.inputs.find((vi) => vi.name === 'input_ids');
  const report: PatchReport = {
    topology: ifNodeIndex !== undefined ? 'merged' : anySkip ? 'fused' : 'plain',
    num_layers: numLayers,
    hidden_size: hiddenSize,
    stream_dtype: streamDtype,
    injection_points: [],
    opset: onnxOpset.version,
    steering_input: STEERING_INPUT,
    projection_input: opts.projection === false ? null : PROJECTION_INPUT,
    residual_output: RESIDUAL_OUTPUT,
  };
  return {
    model, sites, ifNodeIndex, report,
    batchDim: dimOf(idsInfo, 0, 'batch_size'),
    seqDim: dimOf(idsInfo, 1, 'sequence_length'),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Rewriting

/** Every value and node name in the model (all scopes), so new names never shadow or collide. */
class Names {
  private readonly used = new Set<string>();

  constructor(g: GraphView) {
    this.collect(g);
  }

  private collect(g: GraphView): void {
    for (const vi of [...g.inputs, ...g.outputs, ...g.valueInfo]) this.used.add(vi.name);
    for (const t of g.initializers) this.used.add(t.header.name);
    for (const { node, subgraphs } of g.nodes) {
      this.used.add(node.name);
      for (const v of [...node.input, ...node.output]) this.used.add(v);
      for (const s of subgraphs) this.collect(s.graph);
    }
  }

  has(name: string): boolean {
    return this.used.has(name);
  }

  fresh(hint: string): string {
    let name = `steerlab/${hint}`;
    for (let i = 1; this.used.has(name); i++) name = `steerlab/${hint}_${i}`;
    this.used.add(name);
    return name;
  }
}

type NodeAttr = { name: string; i?: number; ints?: number[]; t?: ReturnType<typeof tensor> };

function node(names: Names, opType: string, inputs: string[], outputs: string[], attrs: NodeAttr[] = []): NodeProto {
  return create(NodeProtoSchema, {
    name: names.fresh(`${opType}_node`),
    opType,
    input: inputs,
    output: outputs,
    attribute: attrs.map((a) =>
      a.t
        ? create(AttributeProtoSchema, { name: a.name, type: AttributeProto_AttributeType.TENSOR, t: a.t })
        : a.ints
          ? create(AttributeProtoSchema, { name: a.name, type: AttributeProto_AttributeType.INTS, ints: a.ints.map(BigInt) })
          : create(AttributeProtoSchema, { name: a.name, type: AttributeProto_AttributeType.INT, i: BigInt(a.i ?? 0) }),
    ),
  });
}

function int64Constant(names: Names, hint: string, values: number[]): { node: NodeProto; out: string } {
  const out = names.fresh(hint);
  const t = tensor(out, TensorProto_DataType.INT64, [values.length], BigInt64Array.from(values.map(BigInt)));
  return { node: node(names, 'Constant', [], [out], [{ name: 'value', t }]), out };
}

/** Input slot of the optional bias of a Skip*LayerNormalization (its output 3 is input + skip + bias). */
const SKIP_BIAS_SLOT: Record<string, number> = { SkipSimplifiedLayerNormalization: 3, SkipLayerNormalization: 4 };

/**
 * Plans the rewrite of one decoder graph. Returns its node list and the name of its residual-stack value, and
 * records the injection points.
 *
 * Nodes added per decoder layer l (x: the layer's output residual, stream dtype T):
 *   plain Add producer:  Add -> x;  [Cast x->f32 if T != f32], MatMul(x, u_l^T) = c [B,S,1], Mul(c, u_l) [B,S,H],
 *                        [Cast ->T], Sub(x, .), Add(., steering_l)  => x - (x.u_l)u_l + steering_l
 *   Skip*Norm producer:  the node adds its two summands itself, so x is first computed by one extra Add (+ bias),
 *                        the same correction is subtracted from the incoming stream summand together with the
 *                        steering row, and the node's output 3 is then x - (x.u_l)u_l + steering_l.
 * Once per graph: Split of `steering` and `projection` into rows [SB,1,H], a Transpose + Split of `projection`
 * into columns [SB,H,1] for the MatMul, and a Cast of each steering row to T.
 */
function rewriteDecoder(site: DecoderSite, numLayers: number, names: Names, stackName: string | null, report: PatchReport, withProjection: boolean, head: number | null = null): NodeEmit[] {
  const { detection, scope, graphLabel } = site;
  const tag = graphLabel === 'main' ? '' : `${graphLabel}/`;
  const dtype = detection.streamDtype;
  const F32 = TensorProto_DataType.FLOAT;
  const pre: NodeProto[] = [];
  // steering [SB, L, H] -> L rows [SB, 1, H], each broadcasting over batch and positions; cast to the stream dtype.
  const sizes = int64Constant(names, `${tag}steering_split_sizes`, new Array(numLayers).fill(1));
  pre.push(sizes.node);
  const rowsF32 = Array.from({ length: numLayers }, (_, l) => names.fresh(`${tag}steering_row_${l}`));
  pre.push(node(names, 'Split', [STEERING_INPUT, sizes.out], rowsF32, [{ name: 'axis', i: 1 }]));
  const toStream = (v: string, hint: string, into: NodeProto[]): string => {
    if (dtype === F32) return v;
    const cast = names.fresh(hint);
    into.push(node(names, 'Cast', [v], [cast], [{ name: 'to', i: dtype }]));
    return cast;
  };
  const rows = rowsF32.map((r, l) => toStream(r, `${tag}steering_row_${l}_cast`, pre));
  // projection [SB, L, H] -> rows u_l [SB, 1, H] and columns u_l^T [SB, H, 1], float32.
  let uRows: string[] = [];
  let uCols: string[] = [];
  if (withProjection) {
    uRows = Array.from({ length: numLayers }, (_, l) => names.fresh(`${tag}projection_row_${l}`));
    pre.push(node(names, 'Split', [PROJECTION_INPUT, sizes.out], uRows, [{ name: 'axis', i: 1 }]));
    const transposed = names.fresh(`${tag}projection_transposed`);
    pre.push(node(names, 'Transpose', [PROJECTION_INPUT], [transposed], [{ name: 'perm', ints: [0, 2, 1] }]));
    uCols = Array.from({ length: numLayers }, (_, l) => names.fresh(`${tag}projection_column_${l}`));
    pre.push(node(names, 'Split', [transposed, sizes.out], uCols, [{ name: 'axis', i: 2 }]));
  }
  /** (x . u_l) u_l in the stream dtype, computed in float32; its nodes go to `into`. */
  const correction = (x: string, l: number, into: NodeProto[]): string => {
    let xf = x;
    if (dtype !== F32) {
      xf = names.fresh(`${tag}layer_${l}_residual_f32`);
      into.push(node(names, 'Cast', [x], [xf], [{ name: 'to', i: F32 }]));
    }
    const c = names.fresh(`${tag}layer_${l}_projection_coefficient`);
    into.push(node(names, 'MatMul', [xf, uCols[l]!], [c]));
    const cu = names.fresh(`${tag}layer_${l}_projection`);
    into.push(node(names, 'Mul', [c, uRows[l]!], [cu]));
    return toStream(cu, `${tag}layer_${l}_projection_cast`, into);
  };
  /** `target` - correction + steering row (or target + steering row without the projection input). */
  const steer = (target: string, x: string, l: number, out: string, into: NodeProto[]): void => {
    let base = target;
    if (withProjection) {
      const corr = correction(x, l, into);
      base = names.fresh(`${tag}layer_${l}_projected`);
      into.push(node(names, 'Sub', [target, corr], [base]));
    }
    into.push(node(names, 'Add', [base, rows[l]!], [out]));
  };

  const before = new Map<number, NodeProto[]>();
  const after = new Map<number, NodeProto[]>();
  const replaced = new Map<number, NodeProto>();
  const residuals = [detection.streamStart];
  for (let l = 0; l < numLayers; l++) {
    const p = detection.producers[2 * l + 1]; // the second residual producer of layer l closes the layer
    const orig = scope.node(p.nodeIndex);
    if (p.kind === 'add') {
      // Consumers keep reading the original name, which now carries the steered residual.
      const out = orig.output[0];
      const raw = names.fresh(`${tag}layer_${l}_residual_unsteered`);
      replaced.set(p.nodeIndex, { ...orig, output: [raw, ...orig.output.slice(1)] });
      const nodes: NodeProto[] = [];
      steer(raw, raw, l, out, nodes);
      after.set(p.nodeIndex, nodes);
      residuals.push(out);
      report.injection_points.push({ layer: l, graph: graphLabel, kind: 'add', value: out });
    } else {
      // Steer one summand with an explicit Add (never the `bias` input, docs/METHOD-NOTES.md 4): output 3 = input + skip is then
      // the steered residual and output 0 normalises it. Output 3 is added when the node (a final norm) exposes only
      // output 0. The summand is the incoming stream, not the branch: in onnxruntime 1.30 CPU an fp16 Add of +0 on a
      // MatMulNBits output changed ~60% of the logits by an ulp, while +0 on the stream is bit-exact.
      const slot = orig.input[0] === p.streamIn ? 0 : 1;
      const nodes: NodeProto[] = [];
      let full = '';
      if (withProjection) {
        // The unsteered layer output, as the node would compute it (input + skip [+ bias]), for the dot product.
        full = names.fresh(`${tag}layer_${l}_residual_unsteered`);
        const biasSlot = SKIP_BIAS_SLOT[orig.opType];
        const bias = biasSlot !== undefined ? orig.input[biasSlot] : undefined;
        const sum = bias ? names.fresh(`${tag}layer_${l}_residual_without_bias`) : full;
        nodes.push(node(names, 'Add', [orig.input[0]!, orig.input[1]!], [sum]));
        if (bias) nodes.push(node(names, 'Add', [sum, bias], [full]));
      }
      const steered = names.fresh(`${tag}layer_${l}_stream_steered`);
      steer(orig.input[slot]!, full, l, steered, nodes);
      before.set(p.nodeIndex, nodes);
      const outputs = [...orig.output];
      while (outputs.length < 4) outputs.push('');
      if (!outputs[3]) outputs[3] = names.fresh(`${tag}layer_${l}_residual`);
      const input = [...orig.input];
      input[slot] = steered;
      replaced.set(p.nodeIndex, { ...orig, input, output: outputs });
      residuals.push(outputs[3]);
      report.injection_points.push({ layer: l, graph: graphLabel, kind: 'skip-norm', value: outputs[3] });
    }
  }

  // The head reads positions logits_from.. of its input [B, S, H] (Slice on axis 1; a start past the end clamps).
  if (head !== null) {
    const orig = scope.node(head);
    const ends = int64Constant(names, `${tag}logits_slice_ends`, [Number.MAX_SAFE_INTEGER]);
    const axes = int64Constant(names, `${tag}logits_slice_axes`, [1]);
    const sliced = names.fresh(`${tag}head_input_from`);
    before.set(head, [...(before.get(head) ?? []), ends.node, axes.node, node(names, 'Slice', [orig.input[0]!, LOGITS_FROM_INPUT, ends.out, axes.out], [sliced])]);
    replaced.set(head, { ...orig, input: [sliced, ...orig.input.slice(1)] });
  }

  // residual_stream: stack [B, S, H] x (L + 1) on a new axis 1, in float32 (none in the lean graph).
  const post: NodeProto[] = [];
  if (stackName !== null) stackResiduals(names, tag, residuals, dtype, stackName, post);

  const items: NodeEmit[] = pre.map((n) => ({ kind: 'encode', node: n }));
  scope.graph.nodes.forEach((entry, i) => {
    for (const n of before.get(i) ?? []) items.push({ kind: 'encode', node: n });
    const r = replaced.get(i);
    items.push(r ? { kind: 'encode', node: r } : { kind: 'keep', entry });
    for (const n of after.get(i) ?? []) items.push({ kind: 'encode', node: n });
  });
  for (const n of post) items.push({ kind: 'encode', node: n });
  return items;
}

function stackResiduals(names: Names, tag: string, residuals: string[], dtype: TensorProto_DataType, stackName: string, post: NodeProto[]): void {
  const axes = int64Constant(names, `${tag}residual_axes`, [1]);
  post.push(axes.node);
  const unsq = residuals.map((r, i) => {
    const u = names.fresh(`${tag}residual_${i}_unsqueezed`);
    post.push(node(names, 'Unsqueeze', [r, axes.out], [u]));
    return u;
  });
  if (dtype === TensorProto_DataType.FLOAT) {
    post.push(node(names, 'Concat', unsq, [stackName], [{ name: 'axis', i: 1 }]));
  } else {
    const stacked = names.fresh(`${tag}residual_stack`);
    post.push(node(names, 'Concat', unsq, [stacked], [{ name: 'axis', i: 1 }]));
    post.push(node(names, 'Cast', [stacked], [stackName], [{ name: 'to', i: TensorProto_DataType.FLOAT }]));
  }
}

/** Ops that apply the head to the last axis, so that their first input can be sliced on the sequence axis. */
const HEAD_OPS = new Set(['MatMul', 'MatMulNBits', 'FusedMatMul']);

/** Index of the language-model head in a decoder scope: the MatMul whose output becomes `logits` (through Cast). */
function headNode(scope: Scope, logits: string): number | null {
  let v = logits;
  for (let hops = 0; hops < 4; hops++) {
    const i = scope.producer.get(v);
    if (i === undefined) return null;
    const n = scope.node(i);
    if (n.opType === 'Cast' || n.opType === 'Identity') v = n.input[0]!;
    else return HEAD_OPS.has(n.opType) && (n.domain === '' || n.domain === 'ai.onnx' || n.domain === 'com.microsoft') ? i : null;
  }
  return null;
}

/** The name `logits` carries inside each decoder site (the If's output slot maps to each branch's output). */
function logitsNames(a: Analysis): (string | null)[] {
  if (a.ifNodeIndex === undefined) return a.sites.map(() => (a.model.graph.outputs.some((o) => o.name === 'logits') ? 'logits' : null));
  const ifNode = a.model.graph.nodes[a.ifNodeIndex]!;
  const slot = ifNode.node.output.indexOf('logits');
  return a.sites.map((site) => (slot < 0 ? null : (site.scope.graph.outputs[slot]?.name ?? null)));
}

function plan(a: Analysis, capture = true, logitsFrom = false): GraphRewrite {
  const names = new Names(a.model.graph);
  if (names.has(STEERING_INPUT) || names.has(PROJECTION_INPUT) || names.has(RESIDUAL_OUTPUT)) {
    throw new OnnxPatchError('ALREADY_PATCHED', `the model already uses the name '${STEERING_INPUT}', '${PROJECTION_INPUT}' or '${RESIDUAL_OUTPUT}' for a value; cannot add the steering inputs/output`);
  }
  const { num_layers: L, hidden_size: H } = a.report;
  const withProjection = a.report.projection_input !== null;
  const newInputs = [valueInfo(STEERING_INPUT, TensorProto_DataType.FLOAT, ['steer_batch', L, H])];
  // Its own batch dim (1 or batch, like steer_batch): onnxruntime plans buffers by dim names, so a shared name would
  // forbid a [1, L, H] steering beside a [batch, L, H] projection.
  if (withProjection) newInputs.push(valueInfo(PROJECTION_INPUT, TensorProto_DataType.FLOAT, ['projection_batch', L, H]));
  // the head's positions: only where every site's head is found (else the graph keeps its full logits, no input)
  const logitsValues = logitsNames(a);
  const heads = a.sites.map((site, k) => (logitsValues[k] ? headNode(site.scope, logitsValues[k]!) : null));
  const sliceHead = logitsFrom && heads.every((h) => h !== null);
  a.report.logits_from_input = sliceHead ? LOGITS_FROM_INPUT : null;
  if (sliceHead) {
    if (names.has(LOGITS_FROM_INPUT)) throw new OnnxPatchError('ALREADY_PATCHED', `the model already uses the name '${LOGITS_FROM_INPUT}' for a value`);
    newInputs.push(valueInfo(LOGITS_FROM_INPUT, TensorProto_DataType.INT64, [1]));
  }
  const headOf = (k: number) => (sliceHead ? heads[k]! : null);
  const residualDims: Dim[] = [a.batchDim, L + 1, a.seqDim, H];
  const rootRewrite: GraphRewrite = {
    newInputs,
    newOutputs: capture ? [valueInfo(RESIDUAL_OUTPUT, TensorProto_DataType.FLOAT, residualDims)] : [],
  };
  if (a.ifNodeIndex === undefined) {
    rootRewrite.nodes = rewriteDecoder(a.sites[0], L, names, capture ? RESIDUAL_OUTPUT : null, a.report, withProjection, headOf(0));
    return rootRewrite;
  }
  // Merged: each branch computes its own stack and returns it as a new last output; the If returns it as
  // `residual_stream`, appended last everywhere so the branch, If and graph output lists stay aligned.
  const branches = new Map<string, GraphRewrite>();
  for (const [k, site] of a.sites.entries()) {
    const branchOut = capture ? names.fresh(`${site.graphLabel}/${RESIDUAL_OUTPUT}`) : null;
    branches.set(site.graphLabel, {
      nodes: rewriteDecoder(site, L, names, branchOut, a.report, withProjection, headOf(k)),
      newOutputs: branchOut ? [valueInfo(branchOut, TensorProto_DataType.FLOAT, residualDims)] : [],
    });
  }
  rootRewrite.nodes = a.model.graph.nodes.map((entry, i): NodeEmit =>
    i === a.ifNodeIndex ? { kind: 'splice', entry, newOutputs: capture ? [RESIDUAL_OUTPUT] : [], branches } : { kind: 'keep', entry },
  );
  return rootRewrite;
}

/** Keeps the promise that every failure is an OnnxPatchError with a code. */
function guarded<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof OnnxPatchError) throw err;
    const msg = err instanceof Error ? err.message : String(err);
    throw new OnnxPatchError('UNEXPECTED', `cannot patch this model: ${msg}`);
  }
}

/** Detection only: what patchDecoder would do, without writing anything. */
export function inspectDecoder(bytes: Uint8Array, opts: PatchOptions = {}): PatchReport {
  return guarded(() => {
    const a = analyse(bytes, opts);
    plan(a); // fills injection_points exactly as the patch would
    return a.report;
  });
}

export function patchDecoder(bytes: Uint8Array, opts: PatchOptions = {}): { bytes: Uint8Array; report: PatchReport } {
  return guarded(() => {
    const a = analyse(bytes, opts);
    const rw = plan(a, opts.captureResiduals !== false, opts.logitsFrom === true);
    return { bytes: writeModel(a.model, rw, opts.renameExternalData ?? {}, opts.weightsByReference), report: a.report };
  });
}
