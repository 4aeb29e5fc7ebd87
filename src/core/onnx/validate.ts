/**
 * The structural rules onnxruntime enforces when it builds a session, checked on our side so that a graph it would
 * reject is refused with a clear message before anything is written or loaded:
 *   - every value has one definition: no two nodes (or one node twice) produce the same name, and no node output
 *     redefines a graph input or an initializer; graph inputs and initializers are not listed twice;
 *   - nothing dangles: every node input (except the empty name of an omitted optional input) and every graph output
 *     is a graph input, an initializer, a node output, or (inside an If / Loop / Scan body) a value of an enclosing
 *     graph;
 *   - no cycles: the nodes, with the values their subgraphs read from outside as extra inputs, can be ordered.
 * Pure (no Node APIs); reads the graph with the patcher's light reader, so weights are not decoded.
 */
import { fromBinary } from '@bufbuild/protobuf';
import { SparseTensorProtoSchema, type GraphProto } from 'onnx-buf';
import { readModel, type GraphView } from './model-io.js';
import { OnnxPatchError } from './patch-error.js';
import { payload, WT_LEN } from './wire.js';

/** GraphProto.sparse_initializer: the light reader keeps these fields undecoded. */
const GRAPH_SPARSE_INITIALIZER = 15;

interface Graph {
  name: string;
  inputs: string[];
  outputs: string[];
  initializers: string[];
  nodes: { label: string; inputs: string[]; outputs: string[]; subgraphs: Graph[] }[];
}

function nodeLabel(opType: string, name: string, i: number): string {
  return `${opType} node ${name ? `"${name}"` : `#${i}`}`;
}

function fromProto(g: GraphProto): Graph {
  return {
    name: g.name,
    inputs: g.input.map((v) => v.name),
    outputs: g.output.map((v) => v.name),
    initializers: [...g.initializer.map((t) => t.name), ...g.sparseInitializer.map((s) => s.values?.name ?? '')],
    nodes: g.node.map((n, i) => ({
      label: nodeLabel(n.opType, n.name, i),
      inputs: n.input,
      outputs: n.output,
      subgraphs: n.attribute.flatMap((a) => [...(a.g ? [fromProto(a.g)] : []), ...a.graphs.map(fromProto)]),
    })),
  };
}

function fromView(g: GraphView): Graph {
  return {
    name: g.name,
    inputs: g.inputs.map((v) => v.name),
    outputs: g.outputs.map((v) => v.name),
    initializers: [
      ...g.initializers.map((t) => t.header.name),
      ...g.fields.filter((f) => f.no === GRAPH_SPARSE_INITIALIZER && f.wt === WT_LEN).map((f) => fromBinary(SparseTensorProtoSchema, payload(g.bytes, f)).values?.name ?? ''),
    ],
    nodes: g.nodes.map((n, i) => ({
      label: nodeLabel(n.node.opType, n.node.name, i),
      inputs: n.node.input,
      outputs: n.node.output,
      subgraphs: [...n.subgraphs.map((s) => fromView(s.graph)), ...n.node.attribute.flatMap((a) => a.graphs.map(fromProto))],
    })),
  };
}

/** Names a subgraph reads from enclosing graphs (used but not defined inside it). */
function freeNames(g: Graph): Set<string> {
  const defined = new Set([...g.inputs, ...g.initializers, ...g.nodes.flatMap((n) => n.outputs)]);
  const free = new Set<string>();
  const use = (name: string) => {
    if (name !== '' && !defined.has(name)) free.add(name);
  };
  for (const n of g.nodes) {
    n.inputs.forEach(use);
    for (const s of n.subgraphs) freeNames(s).forEach(use);
  }
  g.outputs.forEach(use);
  return free;
}

function problems(g: Graph, outer: ReadonlySet<string>, where: string, out: string[]): void {
  const scope = g.name ? `${where} "${g.name}"` : where;
  const report = (msg: string) => {
    if (out.length < 20) out.push(`${scope}: ${msg}`);
  };
  const seen = (list: string[], what: string) => {
    const s = new Set<string>();
    for (const n of list) {
      if (s.has(n)) report(`${what} "${n}" is listed twice`);
      s.add(n);
    }
    return s;
  };
  const inputs = seen(g.inputs, 'graph input');
  const inits = seen(g.initializers, 'initializer');
  const producer = new Map<string, number>();
  g.nodes.forEach((n, i) => {
    for (const o of n.outputs) {
      if (o === '') continue;
      if (producer.has(o)) report(`"${o}" is produced twice (by ${g.nodes[producer.get(o)!]!.label} and ${n.label})`);
      else if (inputs.has(o) || inits.has(o)) report(`${n.label} produces "${o}", which is already a graph ${inputs.has(o) ? 'input' : 'initializer'}`);
      else producer.set(o, i);
    }
  });
  const defined = (name: string) => inputs.has(name) || inits.has(name) || producer.has(name) || outer.has(name);
  const inner = new Set([...outer, ...inputs, ...inits, ...producer.keys()]);
  // Dependencies: explicit inputs plus the values a node's subgraphs read from this graph.
  const deps: number[][] = g.nodes.map(() => []);
  g.nodes.forEach((n, i) => {
    const used = [...n.inputs];
    for (const s of n.subgraphs) used.push(...freeNames(s));
    for (const name of used) {
      if (name === '') continue;
      if (!defined(name)) report(`${n.label} reads "${name}", which no node, graph input or initializer defines`);
      const p = producer.get(name);
      if (p !== undefined) deps[i]!.push(p);
    }
    for (const s of n.subgraphs) problems(s, inner, `a subgraph of ${n.label}`, out);
  });
  for (const o of g.outputs) if (!defined(o)) report(`graph output "${o}" is not defined by any node, graph input or initializer`);
  // Kahn's algorithm: whatever cannot be ordered lies on (or behind) a cycle.
  const waiting = deps.map((d) => d.length);
  const users: number[][] = g.nodes.map(() => []);
  deps.forEach((d, i) => d.forEach((p) => users[p]!.push(i)));
  const ready = waiting.flatMap((w, i) => (w === 0 ? [i] : []));
  let ordered = 0;
  while (ready.length > 0) {
    const i = ready.pop()!;
    ordered++;
    for (const u of users[i]!) if (--waiting[u]! === 0) ready.push(u);
  }
  if (ordered < g.nodes.length) {
    const stuck = g.nodes.filter((_, i) => waiting[i]! > 0).slice(0, 3).map((n) => n.label);
    report(`the nodes form a cycle (${g.nodes.length - ordered} nodes cannot be ordered, e.g. ${stuck.join(', ')})`);
  }
}

/** The rule violations of a model's graph (empty when onnxruntime's structural checks would pass). */
export function graphProblems(modelBytes: Uint8Array): string[] {
  const out: string[] = [];
  problems(fromView(readModel(modelBytes).graph), new Set(), 'graph', out);
  return out;
}

/** Throws OnnxPatchError INVALID_GRAPH, naming `what` and the first problems, unless the graph is well formed. */
export function validateGraph(modelBytes: Uint8Array, what: string): void {
  const found = graphProblems(modelBytes);
  if (found.length === 0) return;
  const shown = found.slice(0, 5).join('; ');
  throw new OnnxPatchError(
    'INVALID_GRAPH',
    `${what} is not a valid ONNX graph, onnxruntime would refuse it: ${shown}${found.length > 5 ? `; and ${found.length - 5} more` : ''}`,
  );
}
