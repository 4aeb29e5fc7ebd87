/**
 * Structural detection of a decoder's residual stream (docs/METHOD-NOTES.md 4): start from the embedding Gather on input_ids
 * and follow the value that each residual producer carries to the next one. A producer is either an Add of the
 * stream and a branch computed from the stream, or a com.microsoft Skip*LayerNormalization taking the stream as input
 * 0 or 1 (its output 3 is the residual sum). Only op types and value names are used, never node names.
 */
import { AttributeProto_AttributeType, TensorProto_DataType, type NodeProto, type TensorProto, type ValueInfoProto } from 'onnx-buf';
import type { GraphView } from './model-io.js';
import { OnnxPatchError } from './patch-error.js';

export const SKIP_NORM_OPS = new Set(['SkipLayerNormalization', 'SkipSimplifiedLayerNormalization']);
const MS_DOMAIN = 'com.microsoft';

function isOnnxDomain(domain: string): boolean {
  return domain === '' || domain === 'ai.onnx';
}

/** Name lookups for one graph, falling back to the enclosing graph (If branches read outer-scope values). */
export class Scope {
  readonly producer = new Map<string, number>();
  readonly consumers = new Map<string, number[]>();
  private readonly initializers = new Map<string, TensorProto>();
  private readonly types = new Map<string, ValueInfoProto>();

  constructor(readonly graph: GraphView, readonly parent?: Scope) {
    graph.nodes.forEach((entry, i) => {
      for (const out of entry.node.output) if (out) this.producer.set(out, i);
      for (const inp of entry.node.input) {
        if (!inp) continue;
        const list = this.consumers.get(inp);
        if (list) {
          if (list[list.length - 1] !== i) list.push(i);
        } else this.consumers.set(inp, [i]);
      }
    });
    for (const t of graph.initializers) this.initializers.set(t.header.name, t.header);
    for (const vi of [...graph.valueInfo, ...graph.outputs, ...graph.inputs]) this.types.set(vi.name, vi);
  }

  node(i: number): NodeProto {
    return this.graph.nodes[i].node;
  }

  /** The node producing `name` in this graph or an enclosing one. */
  producerNode(name: string): NodeProto | undefined {
    const i = this.producer.get(name);
    if (i !== undefined) return this.node(i);
    if (this.isLocalDefinition(name)) return undefined;
    return this.parent?.producerNode(name);
  }

  initializer(name: string): TensorProto | undefined {
    if (this.producer.has(name)) return undefined;
    return this.initializers.get(name) ?? (this.isLocalDefinition(name) ? undefined : this.parent?.initializer(name));
  }

  valueInfo(name: string): ValueInfoProto | undefined {
    return this.types.get(name) ?? this.parent?.valueInfo(name);
  }

  /** True when `name` is an input of the outermost graph and nothing in between redefines it. */
  isRootInput(name: string): boolean {
    if (this.producer.has(name) || this.initializers.has(name)) return false;
    if (!this.parent) return this.graph.inputs.some((vi) => vi.name === name);
    if (this.graph.inputs.some((vi) => vi.name === name)) return false;
    return this.parent.isRootInput(name);
  }

  private isLocalDefinition(name: string): boolean {
    return this.graph.inputs.some((vi) => vi.name === name);
  }
}

export interface Producer {
  kind: 'add' | 'skip-norm';
  /** Index of the node in its graph's node list. */
  nodeIndex: number;
  /** The stream value this producer consumes. */
  streamIn: string;
  /** The residual it produces (Add output, or Skip* output 3); null when a Skip* exposes only output 0. */
  out: string | null;
}

export interface StreamDetection {
  embeddingNodeIndex: number;
  /** The residual stream before layer 0 (the embedding output, after any constant scaling). */
  streamStart: string;
  producers: Producer[];
  hiddenSize: number;
  streamDtype: TensorProto_DataType;
}

function elemTypeOf(vi: ValueInfoProto | undefined): TensorProto_DataType | undefined {
  if (vi?.type?.value.case !== 'tensorType') return undefined;
  const t = vi.type.value.value.elemType;
  return t === 0 ? undefined : (t as TensorProto_DataType);
}

function intAttr(node: NodeProto, name: string): number | undefined {
  const a = node.attribute.find((x) => x.name === name);
  if (!a) return undefined;
  if (a.type === AttributeProto_AttributeType.INT || a.i !== 0n) return Number(a.i);
  return undefined;
}

/** Data type of a value: declared (value_info, graph I/O, initializer) or inferred through a few op types. */
export function dtypeOf(scope: Scope, name: string, depth = 0): TensorProto_DataType | undefined {
  if (depth > 32) return undefined;
  const declared = elemTypeOf(scope.valueInfo(name));
  if (declared !== undefined) return declared;
  const init = scope.initializer(name);
  if (init) return init.dataType as TensorProto_DataType;
  const node = scope.producerNode(name);
  if (!node) return undefined;
  const op = node.opType;
  if (op === 'Cast') return intAttr(node, 'to') as TensorProto_DataType | undefined;
  if (op === 'GatherBlockQuantized') return dtypeOf(scope, node.input[2] ?? '', depth + 1); // scales' type
  if (op === 'DequantizeLinear') return dtypeOf(scope, node.input[1] ?? '', depth + 1); // scale's type
  if (op === 'Constant') {
    const v = node.attribute.find((a) => a.name === 'value')?.t;
    return v ? (v.dataType as TensorProto_DataType) : undefined;
  }
  return node.input[0] ? dtypeOf(scope, node.input[0], depth + 1) : undefined;
}

/** Does `value` depend on `target` through producers of this graph? (a branch, not a constant or bias) */
function dependsOn(scope: Scope, value: string, target: string): boolean {
  const seen = new Set<string>();
  const stack = [value];
  while (stack.length) {
    const v = stack.pop()!;
    if (v === target) return true;
    if (seen.has(v)) continue;
    seen.add(v);
    const i = scope.producer.get(v);
    if (i === undefined) continue;
    for (const inp of scope.node(i).input) if (inp && !seen.has(inp)) stack.push(inp);
  }
  return false;
}

function derivesFromInputIds(scope: Scope, name: string): boolean {
  let v = name;
  for (let hop = 0; hop < 8; hop++) {
    if (v === 'input_ids') return scope.isRootInput('input_ids');
    const p = scope.producerNode(v);
    if (!p || p.opType !== 'Cast' || !isOnnxDomain(p.domain)) return false;
    v = p.input[0] ?? '';
  }
  return false;
}

function asProducer(scope: Scope, nodeIndex: number, stream: string): Producer | undefined {
  const n = scope.node(nodeIndex);
  if (n.opType === 'Add' && isOnnxDomain(n.domain) && n.input.length === 2) {
    const [a, b] = n.input;
    const other = a === stream ? b : b === stream ? a : undefined;
    if (other === undefined || other === stream) return undefined;
    if (!dependsOn(scope, other, stream)) return undefined; // stream + bias/constant is not a residual connection
    return { kind: 'add', nodeIndex, streamIn: stream, out: n.output[0] || null };
  }
  if (SKIP_NORM_OPS.has(n.opType) && n.domain === MS_DOMAIN && (n.input[0] === stream || n.input[1] === stream)) {
    return { kind: 'skip-norm', nodeIndex, streamIn: stream, out: n.output[3] || null };
  }
  return undefined;
}

function producersOf(scope: Scope, stream: string): Producer[] {
  const found: Producer[] = [];
  for (const i of scope.consumers.get(stream) ?? []) {
    const p = asProducer(scope, i, stream);
    if (p) found.push(p);
  }
  return found;
}

/** Ops that may sit between the embedding and the first residual producer (Gemma scales the embedding). */
const STREAM_PREAMBLE_OPS = new Set(['Cast', 'Identity', 'Mul', 'Div']);

function streamStartAfter(scope: Scope, embedOut: string): string {
  let v = embedOut;
  for (let hop = 0; hop < 4 && producersOf(scope, v).length === 0; hop++) {
    const next = (scope.consumers.get(v) ?? []).map((i) => scope.node(i)).filter((n) => {
      if (!STREAM_PREAMBLE_OPS.has(n.opType) || !isOnnxDomain(n.domain) || !n.output[0]) return false;
      // a scaling by something that does not itself come from the stream
      return n.input.every((inp) => inp === v || !dependsOn(scope, inp, v));
    });
    if (next.length !== 1) break;
    v = next[0].output[0];
  }
  return v;
}

function followChain(scope: Scope, start: string): Producer[] {
  const producers: Producer[] = [];
  const visited = new Set<number>();
  let stream: string | null = start;
  while (stream) {
    const next = producersOf(scope, stream);
    if (next.length === 0) break;
    if (next.length > 1) {
      const ops = next.map((p) => `${scope.node(p.nodeIndex).opType} -> ${p.out ?? '(output 0 only)'}`).join(', ');
      throw new OnnxPatchError(
        'RESIDUAL_CHAIN_AMBIGUOUS',
        `residual stream value '${stream}' (after ${producers.length} producers) feeds ${next.length} residual producers (${ops}); expected exactly one`,
      );
    }
    const p = next[0];
    if (visited.has(p.nodeIndex)) {
      throw new OnnxPatchError('RESIDUAL_CHAIN_AMBIGUOUS', `residual stream loops back to node ${p.nodeIndex} at value '${stream}'`);
    }
    visited.add(p.nodeIndex);
    producers.push(p);
    stream = p.out;
  }
  return producers;
}

/** Dims of the tensor behind `name`: an initializer, possibly behind DequantizeLinear / Cast / Identity. */
function initializerBehind(scope: Scope, name: string): TensorProto | undefined {
  let v = name;
  for (let hop = 0; hop < 4; hop++) {
    const t = scope.initializer(v);
    if (t) return t;
    const p = scope.producerNode(v);
    if (!p || !['DequantizeLinear', 'Cast', 'Identity'].includes(p.opType)) return undefined;
    v = p.input[0] ?? '';
  }
  return undefined;
}

function lastStaticDim(vi: ValueInfoProto | undefined): number | undefined {
  if (vi?.type?.value.case !== 'tensorType') return undefined;
  const dims = vi.type.value.value.shape?.dim ?? [];
  const d = dims[dims.length - 1]?.value;
  return d?.case === 'dimValue' ? Number(d.value) : undefined;
}

function hiddenSizeOf(scope: Scope, embed: NodeProto, streamStart: string): number | undefined {
  const data = initializerBehind(scope, embed.input[0] ?? '');
  if (data && data.dims.length === 2) {
    const cols = Number(data.dims[1]);
    if (embed.opType === 'GatherBlockQuantized' && data.dataType === TensorProto_DataType.UINT8) {
      return (cols * 8) / (intAttr(embed, 'bits') ?? 4); // packed sub-byte values
    }
    return cols;
  }
  return lastStaticDim(scope.valueInfo(streamStart)) ?? lastStaticDim(scope.valueInfo(embed.output[0] ?? ''));
}

/**
 * Finds the embedding and the residual chain of one decoder graph. Returns undefined when the graph has no
 * embedding Gather on input_ids (the caller may then look inside If branches).
 */
export function detectResidualStream(scope: Scope): StreamDetection | undefined {
  const candidates: number[] = [];
  scope.graph.nodes.forEach((entry, i) => {
    const n = entry.node;
    const isGather = (n.opType === 'Gather' && isOnnxDomain(n.domain)) || (n.opType === 'GatherBlockQuantized' && n.domain === MS_DOMAIN);
    if (isGather && n.input[1] && n.output[0] && derivesFromInputIds(scope, n.input[1])) candidates.push(i);
  });
  if (candidates.length === 0) return undefined;
  // Several Gathers on input_ids (per-layer embeddings, say): the token embedding is the one that starts the chain.
  let best: { index: number; start: string; producers: Producer[] } | undefined;
  let firstError: unknown;
  for (const index of candidates) {
    try {
      const start = streamStartAfter(scope, scope.node(index).output[0]);
      const producers = followChain(scope, start);
      if (!best || producers.length > best.producers.length) best = { index, start, producers };
    } catch (err) {
      firstError ??= err;
    }
  }
  if (!best || best.producers.length === 0) {
    if (firstError) throw firstError;
    const embed = scope.node(candidates[0]);
    const start = streamStartAfter(scope, embed.output[0]);
    const consumers = (scope.consumers.get(start) ?? []).map((i) => scope.node(i).opType);
    throw new OnnxPatchError(
      'NO_RESIDUAL_STREAM',
      `cannot follow the residual stream: embedding ${embed.opType} output '${start}' feeds [${consumers.join(', ') || 'nothing'}], ` +
        'expected a residual Add (stream + branch computed from it) or a com.microsoft Skip*LayerNormalization; not a transformer decoder?',
    );
  }
  const embed = scope.node(best.index);
  const hiddenSize = hiddenSizeOf(scope, embed, best.start);
  if (hiddenSize === undefined || !Number.isInteger(hiddenSize) || hiddenSize <= 0) {
    throw new OnnxPatchError(
      'NO_EMBEDDING',
      `cannot read the hidden size: embedding ${embed.opType} data '${embed.input[0]}' is not a 2-D initializer and '${best.start}' has no static last dim`,
    );
  }
  const dtype = dtypeOf(scope, best.start);
  if (dtype === undefined) {
    throw new OnnxPatchError('UNSUPPORTED_DTYPE', `cannot tell the data type of the residual stream '${best.start}' (no value_info, no typed initializer)`);
  }
  return { embeddingNodeIndex: best.index, streamStart: best.start, producers: best.producers, hiddenSize, streamDtype: dtype };
}
