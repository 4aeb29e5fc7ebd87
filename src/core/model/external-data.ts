/**
 * Which external-data files an ONNX graph refers to. Read from the graph itself (the `location` entries of
 * EXTERNAL tensors, in the main graph and in If/Loop subgraphs) rather than from config.json, because the
 * patched copy gets a new file name and every location must be renamed to match it exactly (ORT looks the
 * bytes up by that string).
 *
 * Uses the patcher's light reader (onnx/model-io.ts readModel): initializers are decoded without their data, so a
 * graph with GBs of inline weights is scanned, not copied (a full protobuf decode copied every raw_data).
 */
import { fromBinary } from '@bufbuild/protobuf';
import { SparseTensorProtoSchema, TensorProto_DataLocation, type GraphProto, type TensorProto } from 'onnx-buf';
import { readModel, type GraphView } from '../onnx/model-io.js';
import { payload, WT_LEN } from '../onnx/wire.js';
import { checkExternalLocation } from '../onnx/external-location.js';

export { checkExternalLocation, ExternalDataLocationError, externalLocationProblem } from '../onnx/external-location.js';

/** GraphProto.sparse_initializer (onnx.proto); model-io's view keeps the field but does not decode it. */
const GRAPH_SPARSE_INITIALIZER = 15;

function visitTensor(t: TensorProto | undefined, out: Set<string>): void {
  if (!t || t.dataLocation !== TensorProto_DataLocation.EXTERNAL) return;
  const loc = t.externalData.find((e) => e.key === 'location');
  if (loc) out.add(loc.value);
}

/** A decoded graph (attribute `graphs` lists, which the light reader leaves decoded inside the node). */
function collectProto(graph: GraphProto, out: Set<string>): void {
  for (const t of graph.initializer) visitTensor(t, out);
  for (const s of graph.sparseInitializer) {
    visitTensor(s.values, out);
    visitTensor(s.indices, out);
  }
  for (const n of graph.node) {
    for (const a of n.attribute) {
      visitTensor(a.t, out);
      for (const t of a.tensors) visitTensor(t, out);
      if (a.g) collectProto(a.g, out);
      for (const g of a.graphs) collectProto(g, out);
    }
  }
}

function collect(graph: GraphView, out: Set<string>): void {
  for (const t of graph.initializers) visitTensor(t.header, out);
  for (const f of graph.fields) {
    if (f.no !== GRAPH_SPARSE_INITIALIZER || f.wt !== WT_LEN) continue;
    const s = fromBinary(SparseTensorProtoSchema, payload(graph.bytes, f));
    visitTensor(s.values, out);
    visitTensor(s.indices, out);
  }
  for (const n of graph.nodes) {
    for (const a of n.node.attribute) {
      visitTensor(a.t, out);
      for (const t of a.tensors) visitTensor(t, out);
      for (const g of a.graphs) collectProto(g, out);
    }
    for (const s of n.subgraphs) collect(s.graph, out);
  }
}

/**
 * Distinct external-data locations, in first-seen order. Throws OnnxPatchError on bytes that are not a model, and
 * ExternalDataLocationError (naming `graphFile`) for a location outside the model folder.
 */
export function externalDataLocations(onnxBytes: Uint8Array, graphFile = 'the graph'): string[] {
  const out = new Set<string>();
  collect(readModel(onnxBytes).graph, out);
  for (const loc of out) checkExternalLocation(loc, graphFile);
  return [...out];
}
