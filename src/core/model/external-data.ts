/**
 * Which external-data files an ONNX graph refers to. Read from the graph itself (the `location` entries of
 * EXTERNAL tensors, in the main graph and in If/Loop subgraphs) rather than from config.json, because the
 * patched copy gets a new file name and every location must be renamed to match it exactly (ORT looks the
 * bytes up by that string).
 */
import { fromBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, TensorProto_DataLocation, type GraphProto, type TensorProto } from 'onnx-buf';

function collect(graph: GraphProto | undefined, out: Set<string>): void {
  if (!graph) return;
  const visitTensor = (t: TensorProto | undefined) => {
    if (!t || t.dataLocation !== TensorProto_DataLocation.EXTERNAL) return;
    const loc = t.externalData.find((e) => e.key === 'location');
    if (loc) out.add(loc.value);
  };
  for (const t of graph.initializer) visitTensor(t);
  for (const s of graph.sparseInitializer) {
    visitTensor(s.values);
    visitTensor(s.indices);
  }
  for (const n of graph.node) {
    for (const a of n.attribute) {
      visitTensor(a.t);
      for (const t of a.tensors) visitTensor(t);
      collect(a.g, out);
      for (const g of a.graphs) collect(g, out);
    }
  }
}

/** Distinct external-data locations, in first-seen order. */
export function externalDataLocations(onnxBytes: Uint8Array): string[] {
  const model = fromBinary(ModelProtoSchema, onnxBytes);
  const out = new Set<string>();
  collect(model.graph, out);
  return [...out];
}
