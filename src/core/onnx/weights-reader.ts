/**
 * Reading the token matrix the WAS embedding direction is built from (Hegazy et al., Eq. 7), straight from ONNX bytes:
 *
 *   unembedding (the paper): the weight of the MatMul / Gemm / MatMulNBits whose output is `logits`, followed back
 *     through Cast, Identity, a bias Add and a merged decoder's If; a tied head (`Transpose(embed)`) resolves to the
 *     embedding initializer; 4-bit / 8-bit MatMulNBits weights are dequantised, float16 / bfloat16 widened;
 *   input embedding (the released code, and the fallback): the data of the Gather that reads `input_ids`.
 *
 * Initializers may live in external data files (the caller hands a reader for `location`). The result is always
 * vocab-major [vocab, hidden] float32, and says which matrix and which storage it came from, so the direction file
 * can record it. Pure (no Node APIs).
 */
import { fromBinary } from '@bufbuild/protobuf';
import { TensorProtoSchema, TensorProto_DataLocation, type NodeProto, type TensorProto } from 'onnx-buf';
import { fromFloat16Bits } from './graph-builder.js';
import { readModel, type GraphView, type NodeEntry, type TensorHeader } from './model-io.js';
import { payload } from './wire.js';
import { externalLocationProblem } from './external-location.js';

export type EmbeddingSource = 'unembedding' | 'input-embedding';

export interface EmbeddingMatrix {
  source: EmbeddingSource;
  /** Name of the initializer read (for MatMulNBits: its packed weight). */
  tensor: string;
  /** How the initializer stored its numbers. */
  storage: 'float32' | 'float16' | 'bfloat16' | 'q4' | 'q8';
  vocabSize: number;
  hiddenSize: number;
  /** [vocab, hidden] row-major: row t is token t's vector. */
  data: Float32Array;
  /** Why the unembedding was not used, when `source` is 'input-embedding' by fallback. */
  fallbackReason?: string;
}

/** Returns the bytes of an external data file named by a tensor's `location` (relative to the model file). */
export type ExternalDataReader = (location: string) => Uint8Array | Promise<Uint8Array>;

export interface ReadEmbeddingOptions {
  externalData?: ExternalDataReader;
  /** 'unembedding' (default, the paper): use the LM head, fall back to the input embedding; 'input-embedding': only it. */
  prefer?: EmbeddingSource;
  /** When known (config.json), checked against the matrix found. */
  expectVocabSize?: number;
  expectHiddenSize?: number;
}

export class WeightsReaderError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WeightsReaderError';
  }
}

// ONNX TensorProto.DataType values used here.
const DT = { FLOAT: 1, UINT8: 2, INT8: 3, FLOAT16: 10, BFLOAT16: 16 } as const;

interface Scope {
  graph: GraphView;
  parent: Scope | null;
  /** output name -> node, in this graph only */
  producers: Map<string, NodeEntry>;
  inits: Map<string, TensorHeader>;
}

function scopeOf(graph: GraphView, parent: Scope | null): Scope {
  const producers = new Map<string, NodeEntry>();
  for (const n of graph.nodes) for (const o of n.node.output) producers.set(o, n);
  const inits = new Map<string, TensorHeader>();
  for (const t of graph.initializers) inits.set(t.header.name, t);
  return { graph, parent, producers, inits };
}

/** An initializer visible from `scope` (own graph first, then enclosing graphs: ONNX outer-scope rules). */
function findInit(scope: Scope, name: string): TensorHeader | null {
  for (let s: Scope | null = scope; s; s = s.parent) {
    const t = s.inits.get(name);
    if (t) return t;
  }
  return null;
}

/** A Constant node's tensor visible from `scope`. */
function findConstant(scope: Scope, name: string): TensorProto | null {
  for (let s: Scope | null = scope; s; s = s.parent) {
    const n = s.producers.get(name);
    if (n) {
      if (n.node.opType !== 'Constant') return null;
      const a = n.node.attribute.find((x) => x.name === 'value');
      return a?.t ?? null;
    }
  }
  return null;
}

function intAttr(node: NodeProto, name: string, dflt: number | null): number | null {
  const a = node.attribute.find((x) => x.name === name);
  return a ? Number(a.i) : dflt;
}

function intsAttr(node: NodeProto, name: string): number[] | null {
  const a = node.attribute.find((x) => x.name === name);
  return a ? a.ints.map(Number) : null;
}

/** A weight found for the head: an initializer (or Constant) and whether it was seen through a 2-D transpose. */
interface WeightRef {
  tensor: TensorProto | TensorHeader;
  transposed: boolean;
}

function isHeader(t: TensorProto | TensorHeader): t is TensorHeader {
  return (t as TensorHeader).field !== undefined;
}

/** Follow a weight input back through Cast / Identity / Transpose([1,0]) to an initializer or Constant. */
function resolveWeight(scope: Scope, name: string, transposed = false, depth = 0): WeightRef | null {
  if (depth > 8) return null;
  const init = findInit(scope, name);
  if (init) return { tensor: init, transposed };
  const c = findConstant(scope, name);
  if (c) return { tensor: c, transposed };
  for (let s: Scope | null = scope; s; s = s.parent) {
    const n = s.producers.get(name);
    if (!n) continue;
    const op = n.node.opType;
    if (op === 'Cast' || op === 'Identity') return resolveWeight(s, n.node.input[0]!, transposed, depth + 1);
    if (op === 'Transpose') {
      const perm = intsAttr(n.node, 'perm');
      if (perm && !(perm.length === 2 && perm[0] === 1 && perm[1] === 0)) return null;
      return resolveWeight(s, n.node.input[0]!, !transposed, depth + 1);
    }
    return null;
  }
  return null;
}

// ------------------------------------------------------------------------------------------------ tensor data

function fullTensor(bytes: Uint8Array, t: TensorProto | TensorHeader): TensorProto {
  if (!isHeader(t)) return t;
  return fromBinary(TensorProtoSchema, payload(bytes, t.field));
}

async function rawBytesOf(t: TensorProto, reader: ExternalDataReader | undefined): Promise<Uint8Array | null> {
  if (t.dataLocation === TensorProto_DataLocation.EXTERNAL) {
    const kv = Object.fromEntries(t.externalData.map((e) => [e.key, e.value]));
    const location = kv['location'];
    if (!location) throw new WeightsReaderError(`tensor "${t.name}" is stored externally but names no location`);
    const outside = externalLocationProblem(location);
    if (outside !== null) {
      throw new WeightsReaderError(`tensor "${t.name}" names external data at ${JSON.stringify(location)}, outside the model folder (${outside}); refusing to read it`);
    }
    if (!reader) throw new WeightsReaderError(`tensor "${t.name}" is stored in external data "${location}", but no external data reader was given`);
    const file = await reader(location);
    const offset = kv['offset'] !== undefined ? Number(kv['offset']) : 0;
    const length = kv['length'] !== undefined ? Number(kv['length']) : file.byteLength - offset;
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > file.byteLength) {
      throw new WeightsReaderError(`tensor "${t.name}": external data range offset ${kv['offset']} length ${kv['length']} lies outside "${location}" (${file.byteLength} bytes)`);
    }
    return file.subarray(offset, offset + length);
  }
  return t.rawData.byteLength > 0 ? t.rawData : null;
}

function elementCount(dims: readonly bigint[] | readonly number[]): number {
  let n = 1;
  for (const d of dims) n *= Number(d);
  return n;
}

/** Any float-ish tensor (float32 / float16 / bfloat16) widened to float32. */
async function floatData(t: TensorProto, reader: ExternalDataReader | undefined): Promise<{ data: Float32Array; storage: 'float32' | 'float16' | 'bfloat16' }> {
  const n = elementCount(t.dims);
  const raw = await rawBytesOf(t, reader);
  const out = new Float32Array(n);
  if (t.dataType === DT.FLOAT) {
    if (raw) {
      if (raw.byteLength !== 4 * n) throw new WeightsReaderError(`tensor "${t.name}": ${raw.byteLength} bytes for ${n} float32 values`);
      const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
      for (let i = 0; i < n; i++) out[i] = v.getFloat32(4 * i, true);
    } else {
      if (t.floatData.length !== n) throw new WeightsReaderError(`tensor "${t.name}": ${t.floatData.length} float_data values, expected ${n}`);
      out.set(t.floatData);
    }
    return { data: out, storage: 'float32' };
  }
  if (t.dataType === DT.FLOAT16 || t.dataType === DT.BFLOAT16) {
    const bits = (i: number): number => {
      if (raw) return raw[2 * i]! | (raw[2 * i + 1]! << 8);
      return t.int32Data[i]! & 0xffff;
    };
    if (raw ? raw.byteLength !== 2 * n : t.int32Data.length !== n) throw new WeightsReaderError(`tensor "${t.name}": wrong data size for ${n} 16-bit values`);
    if (t.dataType === DT.FLOAT16) {
      for (let i = 0; i < n; i++) out[i] = fromFloat16Bits(bits(i));
      return { data: out, storage: 'float16' };
    }
    const u = new Uint32Array(1);
    const f = new Float32Array(u.buffer);
    for (let i = 0; i < n; i++) {
      u[0] = bits(i) << 16;
      out[i] = f[0]!;
    }
    return { data: out, storage: 'bfloat16' };
  }
  throw new WeightsReaderError(`tensor "${t.name}" has data type ${t.dataType}, expected float32 (1), float16 (10) or bfloat16 (16)`);
}

async function uint8Data(t: TensorProto, reader: ExternalDataReader | undefined): Promise<Uint8Array> {
  if (t.dataType !== DT.UINT8) throw new WeightsReaderError(`tensor "${t.name}" has data type ${t.dataType}, expected uint8 (2)`);
  const n = elementCount(t.dims);
  const raw = await rawBytesOf(t, reader);
  const out = raw ? raw.slice() : Uint8Array.from(t.int32Data);
  if (out.length !== n) throw new WeightsReaderError(`tensor "${t.name}": ${out.length} bytes for ${n} uint8 values`);
  return out;
}

// ------------------------------------------------------------------------------------------------ the head

interface HeadFound {
  node: NodeEntry;
  scope: Scope;
}

/** The node computing `name` (through Cast / Identity / bias Add / If), in `scope` or a branch below it. */
function headProducer(scope: Scope, name: string, depth = 0): HeadFound | string {
  if (depth > 16) return `gave up following "${name}" after 16 steps`;
  const n = scope.producers.get(name);
  if (!n) return `no node produces "${name}"`;
  const op = n.node.opType;
  if (op === 'MatMul' || op === 'Gemm' || op === 'MatMulNBits') return { node: n, scope };
  if (op === 'Cast' || op === 'Identity') return headProducer(scope, n.node.input[0]!, depth + 1);
  if (op === 'Add') {
    // lm_head with a bias: follow the input that is not a constant
    const dynamic = n.node.input.filter((i) => !findInit(scope, i) && !findConstant(scope, i));
    if (dynamic.length !== 1) return `"${name}" is an Add of ${dynamic.length} computed inputs, not a bias add`;
    return headProducer(scope, dynamic[0]!, depth + 1);
  }
  if (op === 'If') {
    // merged decoders: both branches hold the same head; take the first branch's output at the same position
    const idx = n.node.output.indexOf(name);
    const sub = n.subgraphs[0];
    if (!sub || idx < 0) return `"${name}" comes from an If node without a readable branch`;
    const inner = scopeOf(sub.graph, scope);
    const out = sub.graph.outputs[idx]?.name;
    if (!out) return `If branch "${sub.attrName}" has no output ${idx}`;
    return headProducer(inner, out, depth + 1);
  }
  return `"${name}" is produced by ${op} (${n.node.name || 'unnamed'}), not by a MatMul, Gemm or MatMulNBits`;
}

async function denseHead(bytes: Uint8Array, found: HeadFound, reader: ExternalDataReader | undefined): Promise<EmbeddingMatrix | string> {
  const { node, scope } = found;
  const op = node.node.opType;
  const wName = node.node.input[1];
  if (!wName) return `${op} has no weight input`;
  const ref = resolveWeight(scope, wName);
  if (!ref) return `the weight "${wName}" of the ${op} is computed, not an initializer (possibly quantised with DequantizeLinear)`;
  let transposed = ref.transposed;
  if (op === 'Gemm') {
    if ((intAttr(node.node, 'transA', 0) ?? 0) !== 0) return 'Gemm with transA is not a head';
    if ((intAttr(node.node, 'transB', 0) ?? 0) !== 0) transposed = !transposed;
  }
  const t = fullTensor(bytes, ref.tensor);
  if (t.dims.length !== 2) return `the weight "${t.name}" has ${t.dims.length} dimensions, expected 2`;
  const [d0, d1] = t.dims.map(Number) as [number, number];
  const { data, storage } = await floatData(t, reader);
  // MatMul(x, W) multiplies by W [hidden, vocab]; seen through a transpose the initializer is [vocab, hidden].
  if (transposed) return { source: 'unembedding', tensor: t.name, storage, vocabSize: d0, hiddenSize: d1, data };
  const out = new Float32Array(d0 * d1);
  for (let h = 0; h < d0; h++) for (let v = 0; v < d1; v++) out[v * d0 + h] = data[h * d1 + v]!;
  return { source: 'unembedding', tensor: t.name, storage, vocabSize: d1, hiddenSize: d0, data: out };
}

/**
 * com.microsoft MatMulNBits: B [N, nBlocks, blockSize * bits / 8] uint8 holds the [K, N] weight column by column,
 * codes packed low bits first; scales [N * nBlocks]; optional uint8 zero points packed the same way (default
 * 2^(bits-1)). Column n of the weight (= token n's vector for a head) is dequantised as (q - zp) * scale.
 */
async function nbitsHead(bytes: Uint8Array, found: HeadFound, reader: ExternalDataReader | undefined): Promise<EmbeddingMatrix | string> {
  const { node, scope } = found;
  const K = intAttr(node.node, 'K', null);
  const N = intAttr(node.node, 'N', null);
  const bits = intAttr(node.node, 'bits', 4);
  const block = intAttr(node.node, 'block_size', null);
  if (!K || !N || !block) return 'MatMulNBits lacks its K, N or block_size attribute';
  if (bits !== 4 && bits !== 8) return `MatMulNBits with ${bits} bits is not supported (4 or 8)`;
  if (node.node.input.length > 4 && node.node.input[4]) return 'MatMulNBits with g_idx (act-order) is not supported';
  const bRef = resolveWeight(scope, node.node.input[1]!);
  const sRef = node.node.input[2] ? resolveWeight(scope, node.node.input[2]) : null;
  if (!bRef || !sRef || bRef.transposed || sRef.transposed) return 'MatMulNBits weight or scales are not plain initializers';
  const bT = fullTensor(bytes, bRef.tensor);
  const sT = fullTensor(bytes, sRef.tensor);
  const codes = await uint8Data(bT, reader);
  const { data: scales } = await floatData(sT, reader);
  const nBlocks = Math.ceil(K / block);
  const blob = (block * bits) / 8;
  if (codes.length !== N * nBlocks * blob) return `MatMulNBits weight "${bT.name}" has ${codes.length} bytes, expected N ${N} x ${nBlocks} blocks x ${blob}`;
  if (scales.length !== N * nBlocks) return `MatMulNBits scales "${sT.name}" have ${scales.length} values, expected ${N * nBlocks}`;
  let zeros: Uint8Array | null = null;
  const zpName = node.node.input[3];
  if (zpName) {
    const zRef = resolveWeight(scope, zpName);
    if (!zRef) return 'MatMulNBits zero points are not an initializer';
    const zT = fullTensor(bytes, zRef.tensor);
    if (zT.dataType !== DT.UINT8) return `MatMulNBits zero points of type ${zT.dataType} are not supported (uint8 only)`;
    zeros = await uint8Data(zT, reader);
  }
  const perByte = 8 / bits;
  const zpRow = Math.ceil(nBlocks / perByte);
  const mask = (1 << bits) - 1;
  const dflt = 1 << (bits - 1);
  const out = new Float32Array(N * K);
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < nBlocks; b++) {
      const scale = scales[n * nBlocks + b]!;
      let zp = dflt;
      if (zeros) {
        const zb = zeros[n * zpRow + Math.floor(b / perByte)]!;
        zp = (zb >> ((b % perByte) * bits)) & mask;
      }
      const base = (n * nBlocks + b) * blob;
      for (let j = 0; j < block && b * block + j < K; j++) {
        const byte = codes[base + Math.floor(j / perByte)]!;
        const q = (byte >> ((j % perByte) * bits)) & mask;
        out[n * K + b * block + j] = (q - zp) * scale;
      }
    }
  }
  return { source: 'unembedding', tensor: bT.name, storage: bits === 4 ? 'q4' : 'q8', vocabSize: N, hiddenSize: K, data: out };
}

async function readUnembedding(bytes: Uint8Array, main: Scope, reader: ExternalDataReader | undefined): Promise<EmbeddingMatrix | string> {
  const outputs = main.graph.outputs.map((o) => o.name);
  const logits = outputs.includes('logits') ? 'logits' : null;
  if (!logits) return `the graph has no "logits" output (outputs: ${outputs.slice(0, 5).join(', ')}${outputs.length > 5 ? ', ...' : ''})`;
  const found = headProducer(main, logits);
  if (typeof found === 'string') return found;
  return found.node.node.opType === 'MatMulNBits' ? nbitsHead(bytes, found, reader) : denseHead(bytes, found, reader);
}

/** The Gather whose indices are `input_ids` (through Cast / Identity), anywhere in the main graph or its branches. */
function findEmbeddingGather(scope: Scope): { node: NodeEntry; scope: Scope } | null {
  const fromIds = (s: Scope, name: string, depth = 0): boolean => {
    if (name === 'input_ids') return true;
    if (depth > 4) return false;
    const n = s.producers.get(name);
    return !!n && (n.node.opType === 'Cast' || n.node.opType === 'Identity') && fromIds(s, n.node.input[0]!, depth + 1);
  };
  for (const n of scope.graph.nodes) {
    if (n.node.opType === 'Gather' && fromIds(scope, n.node.input[1] ?? '') && (intAttr(n.node, 'axis', 0) ?? 0) === 0) return { node: n, scope };
  }
  for (const n of scope.graph.nodes) {
    for (const sub of n.subgraphs) {
      const r = findEmbeddingGather(scopeOf(sub.graph, scope));
      if (r) return r;
    }
  }
  return null;
}

async function readInputEmbedding(bytes: Uint8Array, main: Scope, reader: ExternalDataReader | undefined): Promise<EmbeddingMatrix | string> {
  const g = findEmbeddingGather(main);
  if (!g) {
    const gbq = main.graph.nodes.some((n) => n.node.opType === 'GatherBlockQuantized');
    return gbq ? 'the input embedding is a GatherBlockQuantized (quantised embedding), which is not supported' : 'no Gather reads input_ids';
  }
  const ref = resolveWeight(g.scope, g.node.node.input[0]!);
  if (!ref || ref.transposed) return `the embedding Gather's data "${g.node.node.input[0]}" is not an initializer`;
  const t = fullTensor(bytes, ref.tensor);
  if (t.dims.length !== 2) return `embedding "${t.name}" has ${t.dims.length} dimensions, expected 2`;
  const { data, storage } = await floatData(t, reader);
  return { source: 'input-embedding', tensor: t.name, storage, vocabSize: Number(t.dims[0]), hiddenSize: Number(t.dims[1]), data };
}

function checkExpected(m: EmbeddingMatrix, o: ReadEmbeddingOptions): string | null {
  if (o.expectVocabSize !== undefined && m.vocabSize !== o.expectVocabSize) return `${m.source} "${m.tensor}" has ${m.vocabSize} rows, but the model's vocabulary is ${o.expectVocabSize}`;
  if (o.expectHiddenSize !== undefined && m.hiddenSize !== o.expectHiddenSize) return `${m.source} "${m.tensor}" has width ${m.hiddenSize}, but the model's hidden size is ${o.expectHiddenSize}`;
  return null;
}

/**
 * The matrix whose rows are token vectors: the unembedding when the graph exposes it (default), else the input
 * embedding (`fallbackReason` says why). Throws WeightsReaderError when neither can be read.
 */
export async function readEmbeddingMatrix(bytes: Uint8Array, opts: ReadEmbeddingOptions = {}): Promise<EmbeddingMatrix> {
  const prefer = opts.prefer ?? 'unembedding';
  if (prefer !== 'unembedding' && prefer !== 'input-embedding') throw new WeightsReaderError(`prefer must be 'unembedding' or 'input-embedding', got ${String(prefer)}`);
  const main = scopeOf(readModel(bytes).graph, null);
  let whyNot: string | null = null;
  if (prefer === 'unembedding') {
    const u = await readUnembedding(bytes, main, opts.externalData);
    if (typeof u !== 'string') {
      const bad = checkExpected(u, opts);
      if (!bad) return u;
      whyNot = bad;
    } else whyNot = u;
  }
  const e = await readInputEmbedding(bytes, main, opts.externalData);
  if (typeof e === 'string') {
    throw new WeightsReaderError(`cannot read token vectors from the graph: ${whyNot ? `unembedding: ${whyNot}; ` : ''}input embedding: ${e}`);
  }
  const bad = checkExpected(e, opts);
  if (bad) throw new WeightsReaderError(bad);
  return whyNot ? { ...e, fallbackReason: whyNot } : e;
}

/** Initializers of a graph by name (all scopes), for readers of every weight (the GGUF model export). */
export interface InitializerTable {
  names(): string[];
  /** Dims and ONNX data type, or null when there is no such initializer. */
  info(name: string): { dims: number[]; dataType: number } | null;
  /** A float32 / float16 / bfloat16 initializer widened to float32. */
  float(name: string): Promise<Float32Array>;
  /** A uint8 initializer (e.g. MatMulNBits codes). */
  uint8(name: string): Promise<Uint8Array>;
}

export function initializerTable(bytes: Uint8Array, opts: { externalData?: ExternalDataReader } = {}): InitializerTable {
  const all = new Map<string, TensorHeader>();
  const collect = (g: GraphView) => {
    for (const t of g.initializers) if (!all.has(t.header.name)) all.set(t.header.name, t);
    for (const n of g.nodes) for (const s of n.subgraphs) collect(s.graph);
  };
  collect(readModel(bytes).graph);
  const get = (name: string) => {
    const t = all.get(name);
    if (!t) throw new WeightsReaderError(`the graph has no initializer "${name}"`);
    return fullTensor(bytes, t);
  };
  return {
    names: () => [...all.keys()],
    info: (name) => {
      const t = all.get(name)?.header;
      return t ? { dims: t.dims.map(Number), dataType: t.dataType } : null;
    },
    float: async (name) => (await floatData(get(name), opts.externalData)).data,
    uint8: (name) => uint8Data(get(name), opts.externalData),
  };
}
