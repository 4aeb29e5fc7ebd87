/**
 * Reading a ModelProto into a light view that remembers where every graph element's bytes are, and re-emitting it by
 * splicing: every field that is not edited is copied byte for byte (initializers, metadata_props, unknown fields,
 * field order), so a 500 MB model costs one output allocation and no re-encoding of its weights.
 *
 * Field numbers are those of onnx.proto (ONNX 1.20).
 */
import { fromBinary, toBinary, create } from '@bufbuild/protobuf';
import {
  NodeProtoSchema,
  TensorProtoSchema,
  TensorProto_DataLocation,
  ValueInfoProtoSchema,
  StringStringEntryProtoSchema,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
} from 'onnx-buf';
import { OnnxPatchError } from './patch-error.js';
import { ChunkList, WT_LEN, fieldView, payload, scanMessage, stringField, varintField, type Field } from './wire.js';

const MODEL = { opsetImport: 8, graph: 7 } as const;
const OPSET = { domain: 1, version: 2 } as const;
const GRAPH = { node: 1, name: 2, initializer: 5, input: 11, output: 12, valueInfo: 13 } as const;
const NODE = { output: 2, attribute: 5 } as const;
const ATTR = { name: 1, g: 6 } as const;
/** TensorProto fields that hold the data itself; everything else is the (small) header. */
const TENSOR_DATA_FIELDS = new Set([4, 5, 6, 7, 9, 10, 11]);
const TENSOR_EXTERNAL_DATA = 13;
const TENSOR_RAW_DATA = 9;
/** Inline weights at least this large are referenced in place by a byReference write; smaller ones stay inline. */
const BY_REFERENCE_MIN_BYTES = 1024;

export interface TensorHeader {
  /** The tensor without its data fields: name, dims, dataType, external data entries. */
  header: TensorProto;
  field: Field;
}

export interface SubgraphRef {
  attrName: string;
  /** The attribute field inside the node's bytes, and the fields of that attribute. */
  attrField: Field;
  attrFields: Field[];
  graph: GraphView;
}

export interface NodeEntry {
  /** Decoded node; attributes holding a graph are left out (they are in `subgraphs`, as views). */
  node: NodeProto;
  field: Field;
  /** Fields of the NodeProto, for splicing. */
  nodeFields: Field[];
  subgraphs: SubgraphRef[];
}

export interface GraphView {
  bytes: Uint8Array;
  fields: Field[];
  name: string;
  nodes: NodeEntry[];
  inputs: ValueInfoProto[];
  outputs: ValueInfoProto[];
  valueInfo: ValueInfoProto[];
  initializers: TensorHeader[];
}

export interface ModelView {
  bytes: Uint8Array;
  fields: Field[];
  graphField: Field;
  graph: GraphView;
  opsets: { domain: string; version: number }[];
}

function malformed(what: string, err: unknown): OnnxPatchError {
  const detail = err instanceof Error ? err.message : String(err);
  return new OnnxPatchError('MALFORMED_PROTOBUF', `not a valid ONNX protobuf: ${what}: ${detail}`);
}

function decode<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw err instanceof OnnxPatchError ? err : malformed(what, err);
  }
}

function expectLen(f: Field, what: string): void {
  if (f.wt !== WT_LEN) throw new OnnxPatchError('MALFORMED_PROTOBUF', `not a valid ONNX protobuf: ${what} (field ${f.no}) has wire type ${f.wt}, expected a length-delimited message`);
}

function readTensorHeader(bytes: Uint8Array, f: Field): TensorHeader {
  expectLen(f, 'initializer');
  const fields = scanMessage(bytes, f.valueStart, f.end);
  const head = new ChunkList();
  for (const tf of fields) if (!TENSOR_DATA_FIELDS.has(tf.no)) head.push(fieldView(bytes, tf));
  return { header: fromBinary(TensorProtoSchema, head.concat()), field: f };
}

function readNode(bytes: Uint8Array, f: Field, depth: number): NodeEntry {
  expectLen(f, 'node');
  const nodeFields = scanMessage(bytes, f.valueStart, f.end);
  const kept = new ChunkList();
  const subgraphs: SubgraphRef[] = [];
  for (const nf of nodeFields) {
    if (nf.no === NODE.attribute && nf.wt === WT_LEN) {
      const attrFields = scanMessage(bytes, nf.valueStart, nf.end);
      const g = attrFields.find((af) => af.no === ATTR.g && af.wt === WT_LEN);
      if (g) {
        const nameField = attrFields.find((af) => af.no === ATTR.name);
        subgraphs.push({
          attrName: nameField ? stringField(bytes, nameField) : '',
          attrField: nf,
          attrFields,
          graph: readGraph(bytes, g.valueStart, g.end, depth + 1),
        });
        continue;
      }
    }
    kept.push(fieldView(bytes, nf));
  }
  // A node without subgraphs is decoded from its own bytes (zero-copy for Constant tensors' raw_data).
  const node = subgraphs.length === 0 ? fromBinary(NodeProtoSchema, payload(bytes, f)) : fromBinary(NodeProtoSchema, kept.concat());
  return { node, field: f, nodeFields, subgraphs };
}

function readGraph(bytes: Uint8Array, start: number, end: number, depth: number): GraphView {
  if (depth > 16) throw new OnnxPatchError('MALFORMED_PROTOBUF', 'not a valid ONNX protobuf: subgraphs nested more than 16 deep');
  const fields = scanMessage(bytes, start, end);
  const view: GraphView = { bytes, fields, name: '', nodes: [], inputs: [], outputs: [], valueInfo: [], initializers: [] };
  for (const f of fields) {
    switch (f.no) {
      case GRAPH.node:
        view.nodes.push(readNode(bytes, f, depth));
        break;
      case GRAPH.name:
        view.name = stringField(bytes, f);
        break;
      case GRAPH.initializer:
        view.initializers.push(readTensorHeader(bytes, f));
        break;
      case GRAPH.input:
      case GRAPH.output:
      case GRAPH.valueInfo: {
        expectLen(f, 'value info');
        const vi = fromBinary(ValueInfoProtoSchema, payload(bytes, f));
        (f.no === GRAPH.input ? view.inputs : f.no === GRAPH.output ? view.outputs : view.valueInfo).push(vi);
        break;
      }
    }
  }
  return view;
}

/** Scans and decodes a model. Throws OnnxPatchError (MALFORMED_PROTOBUF, NO_GRAPH) on bad bytes. */
export function readModel(bytes: Uint8Array): ModelView {
  return decode('model', () => {
    let fields: Field[];
    try {
      fields = scanMessage(bytes, 0, bytes.length);
    } catch (err) {
      throw malformed('ModelProto', err);
    }
    const graphFields = fields.filter((f) => f.no === MODEL.graph);
    if (graphFields.length === 0) {
      throw new OnnxPatchError('NO_GRAPH', `ModelProto has no graph (found ${fields.length} top-level fields, none is field 7 'graph')`);
    }
    if (graphFields.length > 1) throw malformed('ModelProto', new Error(`${graphFields.length} graph fields, expected one`));
    const graphField = graphFields[0];
    expectLen(graphField, 'graph');
    const opsets: { domain: string; version: number }[] = [];
    for (const f of fields) {
      if (f.no !== MODEL.opsetImport) continue;
      expectLen(f, 'opset_import');
      let domain = '';
      let version = 0;
      for (const of of scanMessage(bytes, f.valueStart, f.end)) {
        if (of.no === OPSET.domain) domain = stringField(bytes, of);
        if (of.no === OPSET.version) version = varintField(bytes, of);
      }
      opsets.push({ domain, version });
    }
    const graph = readGraph(bytes, graphField.valueStart, graphField.end, 0);
    return { bytes, fields, graphField, graph, opsets };
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Emission

export type NodeEmit =
  /** The original bytes (subgraphs still get external-data renames). */
  | { kind: 'keep'; entry: NodeEntry }
  /** A new or modified node without subgraphs, encoded with onnx-buf. */
  | { kind: 'encode'; node: NodeProto }
  /** An original node with subgraphs (If): outputs appended, branches rewritten by attribute name. */
  | { kind: 'splice'; entry: NodeEntry; newOutputs: string[]; branches: Map<string, GraphRewrite> };

export interface GraphRewrite {
  /** The graph's new node list; absent = nodes unchanged. */
  nodes?: NodeEmit[];
  /** Appended after the last existing input / output (list order is kept). */
  newInputs?: ValueInfoProto[];
  newOutputs?: ValueInfoProto[];
}

const utf8 = new TextEncoder();

function locationOf(t: TensorProto): string | undefined {
  if (t.dataLocation !== TensorProto_DataLocation.EXTERNAL) return undefined;
  return t.externalData.find((e) => e.key === 'location')?.value;
}

/**
 * How initializer data is written: `rename` maps external-data locations to new ones; `byReference` names the file
 * the model's own bytes are (the original .onnx, beside the written graph): inline weights are then written as
 * external data pointing at their bytes in that file (offset, length), so the new graph holds no weights at all and
 * onnxruntime reads them from the original file.
 */
export interface DataRewrite {
  rename: Record<string, string>;
  byReference?: string;
}

/** The raw_data field of an inline initializer big enough to be referenced, or null. */
function referencedRawData(bytes: Uint8Array, t: TensorHeader, data: DataRewrite): Field | null {
  if (data.byReference === undefined || t.header.dataLocation === TensorProto_DataLocation.EXTERNAL) return null;
  if (t.field.end - t.field.valueStart < BY_REFERENCE_MIN_BYTES) return null;
  const raw = scanMessage(bytes, t.field.valueStart, t.field.end).find((f) => f.no === TENSOR_RAW_DATA && f.wt === WT_LEN);
  return raw && raw.end - raw.valueStart >= BY_REFERENCE_MIN_BYTES ? raw : null;
}

function graphNeedsRename(g: GraphView, data: DataRewrite): boolean {
  for (const t of g.initializers) {
    const loc = locationOf(t.header);
    if (loc !== undefined && Object.hasOwn(data.rename, loc)) return true;
    if (referencedRawData(g.bytes, t, data)) return true;
  }
  return g.nodes.some((n) => n.subgraphs.some((s) => graphNeedsRename(s.graph, data)));
}

function emitInitializer(bytes: Uint8Array, t: TensorHeader, data: DataRewrite): Uint8Array | ChunkList {
  const raw = referencedRawData(bytes, t, data);
  if (raw) {
    // The header (name, dims, type ...) plus where its bytes are in the original file.
    const ref = create(TensorProtoSchema, { ...t.header, dataLocation: TensorProto_DataLocation.EXTERNAL });
    ref.externalData = [
      create(StringStringEntryProtoSchema, { key: 'location', value: data.byReference! }),
      create(StringStringEntryProtoSchema, { key: 'offset', value: String(raw.valueStart) }),
      create(StringStringEntryProtoSchema, { key: 'length', value: String(raw.end - raw.valueStart) }),
    ];
    return new ChunkList().lenField(GRAPH.initializer, toBinary(TensorProtoSchema, ref));
  }
  const rename = data.rename;
  const loc = locationOf(t.header);
  if (loc === undefined || !Object.hasOwn(rename, loc)) return fieldView(bytes, t.field);
  // External: the TensorProto holds no data, so decoding and re-encoding it is cheap.
  const full = fromBinary(TensorProtoSchema, payload(bytes, t.field));
  full.externalData = full.externalData.map((e) =>
    e.key === 'location' ? create(StringStringEntryProtoSchema, { key: 'location', value: rename[loc] }) : e,
  );
  return new ChunkList().lenField(GRAPH.initializer, toBinary(TensorProtoSchema, full));
}

function emitNode(bytes: Uint8Array, item: NodeEmit, rename: DataRewrite): ChunkList {
  const out = new ChunkList();
  if (item.kind === 'encode') return out.lenField(GRAPH.node, toBinary(NodeProtoSchema, item.node));
  const entry = item.entry;
  const needs = entry.subgraphs.some((s) => graphNeedsRename(s.graph, rename));
  if (item.kind === 'keep' && !needs) return out.push(fieldView(bytes, entry.field));
  const newOutputs = item.kind === 'splice' ? item.newOutputs : [];
  const branches = item.kind === 'splice' ? item.branches : new Map<string, GraphRewrite>();
  const body = new ChunkList();
  const lastOutput = entry.nodeFields.reduce((acc, f, i) => (f.no === NODE.output ? i : acc), -1);
  const appendOutputs = () => {
    for (const name of newOutputs) body.lenField(NODE.output, utf8.encode(name));
  };
  if (lastOutput < 0) appendOutputs();
  entry.nodeFields.forEach((nf, i) => {
    const sub = entry.subgraphs.find((s) => s.attrField.start === nf.start);
    if (!sub) {
      body.push(fieldView(bytes, nf));
    } else {
      const attr = new ChunkList();
      for (const af of sub.attrFields) {
        if (af.no === ATTR.g && af.wt === WT_LEN) {
          attr.lenField(ATTR.g, emitGraph(sub.graph, branches.get(sub.attrName) ?? {}, rename));
        } else {
          attr.push(fieldView(bytes, af));
        }
      }
      body.lenField(NODE.attribute, attr);
    }
    if (i === lastOutput) appendOutputs();
  });
  return out.lenField(GRAPH.node, body);
}

/** Re-emits one graph: edited lists re-encoded, every other field copied verbatim. */
export function emitGraph(g: GraphView, rw: GraphRewrite, rename: DataRewrite): ChunkList {
  const { bytes, fields } = g;
  const out = new ChunkList();
  const last = (no: number) => fields.reduce((acc, f, i) => (f.no === no ? i : acc), -1);
  const lastInput = last(GRAPH.input);
  const lastOutput = last(GRAPH.output);
  const newNodes = rw.nodes;
  let nodesWritten = false;
  let nodeIndex = 0;
  let initIndex = 0;
  const writeNewNodes = () => {
    if (newNodes && !nodesWritten) for (const item of newNodes) out.append(emitNode(bytes, item, rename));
    nodesWritten = true;
  };
  const appendValueInfos = (no: number, list: ValueInfoProto[] | undefined) => {
    for (const vi of list ?? []) out.lenField(no, toBinary(ValueInfoProtoSchema, vi));
  };
  fields.forEach((f, i) => {
    if (f.no === GRAPH.node) {
      const entry = g.nodes[nodeIndex++];
      if (newNodes) writeNewNodes();
      else out.append(emitNode(bytes, { kind: 'keep', entry }, rename));
    } else if (f.no === GRAPH.initializer) {
      const t = emitInitializer(bytes, g.initializers[initIndex++], rename);
      if (t instanceof Uint8Array) out.push(t);
      else out.append(t);
    } else {
      out.push(fieldView(bytes, f));
    }
    if (i === lastInput) appendValueInfos(GRAPH.input, rw.newInputs);
    if (i === lastOutput) appendValueInfos(GRAPH.output, rw.newOutputs);
  });
  writeNewNodes();
  if (lastInput < 0) appendValueInfos(GRAPH.input, rw.newInputs);
  if (lastOutput < 0) appendValueInfos(GRAPH.output, rw.newOutputs);
  return out;
}

/**
 * The whole model: every top-level field copied verbatim except the graph, which is spliced. byReference: the file
 * name `model.bytes` were read from, to reference its inline weights instead of copying them (DataRewrite).
 */
export function writeModel(model: ModelView, rw: GraphRewrite, rename: Record<string, string> = {}, byReference?: string): Uint8Array {
  const out = new ChunkList();
  const data: DataRewrite = byReference === undefined ? { rename } : { rename, byReference };
  for (const f of model.fields) {
    if (f === model.graphField) out.lenField(MODEL.graph, emitGraph(model.graph, rw, data));
    else out.push(fieldView(model.bytes, f));
  }
  return out.concat();
}

