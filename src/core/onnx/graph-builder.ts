/**
 * A small DSL for writing ONNX graphs with onnx-buf (ONNX 1.20 schema on @bufbuild/protobuf).
 * Used by the test-model builder (all topologies) and by tests that need hand-made graphs.
 * It writes whole models; the patcher does NOT use it for rewriting (it splices bytes, see patcher.ts).
 */
import { create, toBinary } from '@bufbuild/protobuf';
import {
  AttributeProtoSchema,
  AttributeProto_AttributeType,
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  StringStringEntryProtoSchema,
  TensorProtoSchema,
  TensorProto_DataLocation,
  TensorProto_DataType,
  TensorShapeProtoSchema,
  TensorShapeProto_DimensionSchema,
  TypeProtoSchema,
  TypeProto_TensorSchema,
  ValueInfoProtoSchema,
  type GraphProto,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
  type AttributeProto,
} from 'onnx-buf';

export { TensorProto_DataType as DataType };

export type Dim = number | string;
export type TensorData = Float32Array | Uint16Array | Int32Array | BigInt64Array | Uint8Array;
export type AttrValue =
  | { kind: 'int'; value: number }
  | { kind: 'float'; value: number }
  | { kind: 'ints'; value: number[] }
  | { kind: 'floats'; value: number[] }
  | { kind: 'string'; value: string }
  | { kind: 'tensor'; value: TensorProto }
  | { kind: 'graph'; value: GraphProto };

/** Shorthands so node() calls stay readable. */
export const attr = {
  int: (value: number): AttrValue => ({ kind: 'int', value }),
  float: (value: number): AttrValue => ({ kind: 'float', value }),
  ints: (value: number[]): AttrValue => ({ kind: 'ints', value }),
  floats: (value: number[]): AttrValue => ({ kind: 'floats', value }),
  string: (value: string): AttrValue => ({ kind: 'string', value }),
  tensor: (value: TensorProto): AttrValue => ({ kind: 'tensor', value }),
  graph: (value: GraphProto): AttrValue => ({ kind: 'graph', value }),
};

const enc = new TextEncoder();

function makeAttribute(name: string, a: AttrValue): AttributeProto {
  const T = AttributeProto_AttributeType;
  switch (a.kind) {
    case 'int': return create(AttributeProtoSchema, { name, type: T.INT, i: BigInt(a.value) });
    case 'float': return create(AttributeProtoSchema, { name, type: T.FLOAT, f: a.value });
    case 'ints': return create(AttributeProtoSchema, { name, type: T.INTS, ints: a.value.map((v) => BigInt(v)) });
    case 'floats': return create(AttributeProtoSchema, { name, type: T.FLOATS, floats: a.value });
    case 'string': return create(AttributeProtoSchema, { name, type: T.STRING, s: enc.encode(a.value) });
    case 'tensor': return create(AttributeProtoSchema, { name, type: T.TENSOR, t: a.value });
    case 'graph': return create(AttributeProtoSchema, { name, type: T.GRAPH, g: a.value });
  }
}

export function valueInfo(name: string, elemType: TensorProto_DataType, dims: Dim[]): ValueInfoProto {
  return create(ValueInfoProtoSchema, {
    name,
    type: create(TypeProtoSchema, {
      value: {
        case: 'tensorType',
        value: create(TypeProto_TensorSchema, {
          elemType,
          shape: create(TensorShapeProtoSchema, {
            dim: dims.map((d) =>
              create(TensorShapeProto_DimensionSchema, {
                value: typeof d === 'number' ? { case: 'dimValue', value: BigInt(d) } : { case: 'dimParam', value: d },
              }),
            ),
          }),
        }),
      },
    }),
  });
}

function bytesOf(data: TensorData): Uint8Array<ArrayBuffer> {
  // Little-endian raw_data, as ONNX requires; every platform we run on is little-endian.
  const copy = new Uint8Array(data.byteLength);
  copy.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  return copy;
}

export function tensor(name: string, dataType: TensorProto_DataType, dims: number[], data: TensorData): TensorProto {
  const expected = dims.reduce((a, b) => a * b, 1);
  if (data.length !== expected && dataType !== TensorProto_DataType.UINT8) {
    throw new Error(`tensor ${name}: ${data.length} values for dims [${dims}] (expected ${expected})`);
  }
  return create(TensorProtoSchema, { name, dataType, dims: dims.map((d) => BigInt(d)), rawData: bytesOf(data) });
}

export interface ExternalDataOptions {
  /** File name written beside the model (the tensors' `location`). */
  location: string;
  /** Tensors at least this many bytes go to the external file. */
  minBytes: number;
}

export class GraphBuilder {
  readonly nodes: NodeProto[] = [];
  readonly initializers: TensorProto[] = [];
  readonly inputs: ValueInfoProto[] = [];
  readonly outputs: ValueInfoProto[] = [];
  readonly valueInfos: ValueInfoProto[] = [];
  private counter = 0;

  constructor(readonly name: string, private readonly namePrefix = '') {}

  /** A fresh value/node name; prefixes keep the names of nested (If-branch) graphs apart. */
  fresh(hint: string): string {
    return `${this.namePrefix}${hint}_${this.counter++}`;
  }

  input(name: string, elemType: TensorProto_DataType, dims: Dim[]): string {
    this.inputs.push(valueInfo(name, elemType, dims));
    return name;
  }

  output(name: string, elemType: TensorProto_DataType, dims: Dim[]): string {
    this.outputs.push(valueInfo(name, elemType, dims));
    return name;
  }

  initializer(name: string, dataType: TensorProto_DataType, dims: number[], data: TensorData): string {
    this.initializers.push(tensor(name, dataType, dims, data));
    return name;
  }

  /** Scalar/1-D int64 constant as an initializer (shape helpers, axes, split sizes). */
  int64(values: number[], dims: number[] = [values.length], hint = 'const_i64'): string {
    return this.initializer(this.fresh(hint), TensorProto_DataType.INT64, dims, BigInt64Array.from(values.map(BigInt)));
  }

  float32(values: number[], dims: number[] = [values.length], hint = 'const_f32'): string {
    return this.initializer(this.fresh(hint), TensorProto_DataType.FLOAT, dims, Float32Array.from(values));
  }

  /**
   * Adds a node. `outputs` is either explicit names or a count (fresh names are made). Returns output names.
   * Empty-string inputs are legal ONNX for skipped optional inputs.
   */
  node(
    opType: string,
    inputs: string[],
    outputs: string[] | number = 1,
    attrs: Record<string, AttrValue> = {},
    domain = '',
  ): string[] {
    const outs = typeof outputs === 'number' ? Array.from({ length: outputs }, () => this.fresh(opType)) : outputs;
    this.nodes.push(
      create(NodeProtoSchema, {
        name: this.fresh(`${opType}_node`),
        opType,
        domain,
        input: inputs,
        output: outs,
        attribute: Object.entries(attrs).map(([k, v]) => makeAttribute(k, v)),
      }),
    );
    return outs;
  }

  /** Single-output convenience. */
  op(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}, domain = ''): string {
    return this.node(opType, inputs, 1, attrs, domain)[0];
  }

  graph(): GraphProto {
    return create(GraphProtoSchema, {
      name: this.name,
      node: this.nodes,
      initializer: this.initializers,
      input: this.inputs,
      output: this.outputs,
      valueInfo: this.valueInfos,
    });
  }
}

export interface ModelOptions {
  opsets: { domain: string; version: number }[];
  irVersion?: number;
  producerName?: string;
  producerVersion?: string;
  metadata?: Record<string, string>;
  externalData?: ExternalDataOptions;
}

/**
 * Serialises a graph as a model. With `externalData`, large initializers move to one side file whose bytes are
 * returned beside the model (offsets 64-byte aligned, as onnx's own converter writes them).
 */
export function serializeModel(graph: GraphProto, opts: ModelOptions): { model: Uint8Array; externalData?: Uint8Array } {
  let external: Uint8Array | undefined;
  if (opts.externalData) {
    const { location, minBytes } = opts.externalData;
    const chunks: { t: TensorProto; offset: number }[] = [];
    let size = 0;
    for (const t of graph.initializer) {
      if (t.rawData.byteLength < minBytes) continue;
      size = Math.ceil(size / 64) * 64;
      chunks.push({ t, offset: size });
      size += t.rawData.byteLength;
    }
    external = new Uint8Array(size);
    for (const { t, offset } of chunks) {
      external.set(t.rawData, offset);
      const length = t.rawData.byteLength;
      t.rawData = new Uint8Array(0);
      t.dataLocation = TensorProto_DataLocation.EXTERNAL;
      t.externalData = [
        create(StringStringEntryProtoSchema, { key: 'location', value: location }),
        create(StringStringEntryProtoSchema, { key: 'offset', value: String(offset) }),
        create(StringStringEntryProtoSchema, { key: 'length', value: String(length) }),
      ];
    }
  }
  const model = create(ModelProtoSchema, {
    irVersion: BigInt(opts.irVersion ?? 8),
    producerName: opts.producerName ?? 'steerlab-test-model-builder',
    producerVersion: opts.producerVersion ?? '0.1.0',
    opsetImport: opts.opsets.map((o) => create(OperatorSetIdProtoSchema, { domain: o.domain, version: BigInt(o.version) })),
    metadataProps: Object.entries(opts.metadata ?? {}).map(([key, value]) =>
      create(StringStringEntryProtoSchema, { key, value }),
    ),
    graph,
  });
  return { model: toBinary(ModelProtoSchema, model), externalData: external };
}

/** fp16 helpers live in util/float16.ts; re-exported here for graph writers. */
export { toFloat16Bits, fromFloat16Bits, toFloat16Array, fromFloat16Array } from '../util/float16.js';
