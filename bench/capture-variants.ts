/**
 * Variants of a patched graph for measuring what residual capture costs in prefill (the patched graph itself has no
 * switch to turn capture off):
 *   'none' : steering input kept, residual_stream reduced to an empty tensor [B, 1, 0, H] (nothing stacked, nothing
 *            read back): the cost of steering alone;
 *   'last' : each layer's residual sliced to the last position before stacking, residual_stream [B, L+1, 1, H]: what
 *            WAS needs from a prefill (the controller reads the last prompt token only).
 * Built with the same splice writer as the patcher (model-io.ts), so weights are copied, never re-encoded. Only
 * float32 streams (the Concat writes residual_stream directly).
 */
import { create } from '@bufbuild/protobuf';
import { AttributeProtoSchema, AttributeProto_AttributeType, NodeProtoSchema, TensorProto_DataType, type NodeProto } from 'onnx-buf';
import { tensor } from '../src/core/onnx/graph-builder.js';
import { readModel, writeModel, type NodeEmit } from '../src/core/onnx/model-io.js';
import { RESIDUAL_OUTPUT } from '../src/core/onnx/patcher.js';

export type CaptureVariant = 'none' | 'last';

function constNode(name: string, values: bigint[]): NodeProto {
  return create(NodeProtoSchema, {
    name: `${name}_node`, opType: 'Constant', input: [], output: [name],
    attribute: [create(AttributeProtoSchema, { name: 'value', type: AttributeProto_AttributeType.TENSOR, t: tensor(name, TensorProto_DataType.INT64, [values.length], BigInt64Array.from(values)) })],
  });
}

function sliceNode(name: string, input: string, starts: string, ends: string, axes: string): NodeProto {
  return create(NodeProtoSchema, { name: `${name}_node`, opType: 'Slice', input: [input, starts, ends, axes], output: [name] });
}

export function captureVariant(patched: Uint8Array, variant: CaptureVariant): Uint8Array {
  const model = readModel(patched);
  const g = model.graph;
  const idx = g.nodes.findIndex((e) => e.node.output.includes(RESIDUAL_OUTPUT));
  if (idx < 0) throw new Error(`no node writes ${RESIDUAL_OUTPUT} in the main graph (merged graphs are not supported here)`);
  const concat = g.nodes[idx]!.node;
  if (concat.opType !== 'Concat') throw new Error(`${RESIDUAL_OUTPUT} is written by ${concat.opType}, expected Concat (float32 stream)`);
  const extra: NodeProto[] = [];
  const c = (name: string, v: bigint[]) => (extra.push(constNode(`bench/${name}`, v)), `bench/${name}`);
  const axes = c('axes2', [2n]);
  if (variant === 'none') {
    const zero = c('zero', [0n]);
    extra.push(sliceNode(RESIDUAL_OUTPUT, concat.input.at(-1)!, zero, zero, axes));
  } else {
    const starts = c('minus1', [-1n]);
    const ends = c('max', [9223372036854775807n]);
    const sliced = concat.input.map((inp, i) => {
      const s = `bench/last_${i}`;
      extra.push(sliceNode(s, inp, starts, ends, axes));
      return s;
    });
    extra.push(create(NodeProtoSchema, { ...concat, input: sliced }));
  }
  const nodes: NodeEmit[] = [];
  g.nodes.forEach((entry, i) => {
    if (i !== idx) nodes.push({ kind: 'keep', entry });
    else for (const n of extra) nodes.push({ kind: 'encode', node: n });
  });
  return writeModel(model, { nodes });
}
