/**
 * Hardening: the ONNX reader (model-io.ts over wire.ts) and the patcher fed thousands of random and mutated byte
 * strings. Each input must end in one of two ways, within a bounded time:
 *   - an OnnxPatchError with a known code and a message that says something, or
 *   - a patched model that parses again (our reader and onnx-buf's full decoder) and is recognised as patched.
 * Anything else (another error type, a RangeError from deep recursion escaping, a hang, a huge allocation) fails.
 *
 * Seeded and deterministic: a failure prints the case label (seed model, mutation, case index) to replay it.
 * Seed models are the real test-model topologies (plain, fused, fused-q4f16, merged) at a very small shape, plus
 * a fused model with external data, so mutations land in realistic graphs, initializers and subgraphs.
 */
import { fromBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema } from 'onnx-buf';
import { describe, expect, it } from 'vitest';
import { serializeModel } from '../../src/core/onnx/graph-builder.js';
import { readModel } from '../../src/core/onnx/model-io.js';
import { OnnxPatchError, inspectDecoder, patchDecoder } from '../../src/core/onnx/patcher.js';
import type { DecoderShape } from '../../src/core/onnx/testmodel/config.js';
import { buildFusedGraph } from '../../src/core/onnx/testmodel/fused.js';
import { buildMergedGraph } from '../../src/core/onnx/testmodel/merged.js';
import { buildPlainGraph } from '../../src/core/onnx/testmodel/plain.js';
import { generateWeights } from '../../src/core/onnx/testmodel/weights.js';
import { WT_LEN, scanMessage, type Field } from '../../src/core/onnx/wire.js';
import { mulberry32 as rng } from '../../src/core/util/prng.js';

const KNOWN_CODES = new Set([
  'EMPTY_INPUT', 'MALFORMED_PROTOBUF', 'NO_GRAPH', 'OPSET_TOO_OLD', 'MISSING_OPSET', 'NO_INPUT_IDS', 'NOT_A_DECODER',
  'NO_EMBEDDING', 'NO_RESIDUAL_STREAM', 'RESIDUAL_CHAIN_AMBIGUOUS', 'ODD_PRODUCER_COUNT', 'LAYER_COUNT_MISMATCH',
  'HIDDEN_SIZE_MISMATCH', 'UNSUPPORTED_DTYPE', 'MERGED_BRANCHES_DIFFER', 'ALREADY_PATCHED', 'BAD_OPTIONS', 'UNEXPECTED',
]);

/** A single call may take this long at most (a hang or a quadratic blow-up shows here; normal calls take < 5 ms). */
const MAX_CALL_MS = 1500;

/** Small enough that thousands of patches stay within seconds; real topologies, so detection succeeds on seeds
 * (head size 16: GroupQueryAttention's smallest). */
const SHAPE: DecoderShape = {
  vocabSize: 48, hiddenSize: 32, intermediateSize: 32, numLayers: 2, numHeads: 2, numKvHeads: 1, headDim: 16,
  maxPositionEmbeddings: 64, ropeTheta: 10000, rmsNormEps: 1e-5, tieWordEmbeddings: false, attentionBias: true,
};

function seedModels(): { name: string; bytes: Uint8Array }[] {
  const w = generateWeights(SHAPE, 7);
  const serial = (b: ReturnType<typeof buildPlainGraph>, ir: number, external = false) =>
    serializeModel(b.graph, { opsets: b.opsets, irVersion: ir, externalData: external ? { location: 'model.onnx_data', minBytes: 256 } : undefined }).model;
  return [
    { name: 'plain', bytes: serial(buildPlainGraph(SHAPE, w), 8) },
    { name: 'fused', bytes: serial(buildFusedGraph(SHAPE, w, { q4f16: false }), 10) },
    { name: 'fused-q4f16', bytes: serial(buildFusedGraph(SHAPE, w, { q4f16: true }), 10) },
    { name: 'merged', bytes: serial(buildMergedGraph(SHAPE, w), 8) },
    { name: 'fused-external', bytes: serial(buildFusedGraph(SHAPE, w, { q4f16: false }), 10, true) },
  ];
}


function varint(v: number): number[] {
  const out: number[] = [];
  while (v >= 0x80) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}

/** Every length-delimited field that parses as a message, at any depth (limited), as absolute byte ranges. */
function lenFields(bytes: Uint8Array, start = 0, end = bytes.length, depth = 0, acc: Field[] = []): Field[] {
  let fields: Field[];
  try {
    fields = scanMessage(bytes, start, end);
  } catch {
    return acc;
  }
  for (const f of fields) {
    if (f.wt !== WT_LEN) continue;
    acc.push(f);
    // Descend into the model and graph whatever their size; deeper, skip big payloads (raw tensor data), which
    // parse as garbage fields and only slow the corpus down.
    if (depth < 2 || (depth < 8 && f.end - f.valueStart < 4096)) lenFields(bytes, f.valueStart, f.end, depth + 1, acc);
  }
  return acc;
}

function splice(bytes: Uint8Array, at: number, removeCount: number, insert: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(bytes.length - removeCount + insert.length);
  out.set(bytes.subarray(0, at), 0);
  out.set(insert, at);
  out.set(bytes.subarray(at + removeCount), at + insert.length);
  return out;
}

type Mutator = (bytes: Uint8Array, fields: Field[], r: () => number) => Uint8Array;

const pick = <T,>(r: () => number, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;

const MUTATORS: Record<string, Mutator> = {
  truncate: (b, _f, r) => b.subarray(0, Math.floor(r() * b.length)),
  flipBytes: (b, _f, r) => {
    const out = b.slice();
    const n = 1 + Math.floor(r() * 8);
    for (let i = 0; i < n; i++) out[Math.floor(r() * out.length)] ^= 1 + Math.floor(r() * 255);
    return out;
  },
  flipBits: (b, _f, r) => {
    const out = b.slice();
    out[Math.floor(r() * out.length)] ^= 1 << Math.floor(r() * 8);
    return out;
  },
  /** Replace a field's length with a huge one (2^31..2^62): must be refused, never allocated. */
  hugeLength: (b, f, r) => {
    const fld = pick(r, f);
    const lenStart = lenVarintStart(b, fld);
    const huge = pick(r, [2 ** 31, 2 ** 32 + 5, 2 ** 40, 2 ** 53, 2 ** 62]);
    return splice(b, lenStart, fld.valueStart - lenStart, varint(huge));
  },
  /** Shrink or grow a field's declared length by a little: the message boundaries shift. */
  nudgeLength: (b, f, r) => {
    const fld = pick(r, f);
    const lenStart = lenVarintStart(b, fld);
    const len = fld.end - fld.valueStart;
    const next = Math.max(0, len + pick(r, [-3, -1, 1, 2, 17]));
    return splice(b, lenStart, fld.valueStart - lenStart, varint(next));
  },
  /** Change a field's wire type (varint / i64 / len / i32 / group / invalid). */
  wireType: (b, f, r) => {
    const fld = pick(r, f);
    const out = b.slice();
    out[fld.start] = (out[fld.start]! & 0xf8) | pick(r, [0, 1, 3, 4, 5, 6, 7]);
    return out;
  },
  dropField: (b, f, r) => {
    const fld = pick(r, f);
    return splice(b, fld.start, fld.end - fld.start, []);
  },
  duplicateField: (b, f, r) => {
    const fld = pick(r, f);
    return splice(b, fld.end, 0, b.subarray(fld.start, fld.end));
  },
  /** Copy one field over another (a node where an input was, a tensor inside a node...). */
  transplant: (b, f, r) => {
    const src = pick(r, f);
    const dst = pick(r, f);
    return splice(b, dst.start, dst.end - dst.start, b.slice(src.start, src.end));
  },
  insertRandom: (b, _f, r) => {
    const n = 1 + Math.floor(r() * 32);
    return splice(b, Math.floor(r() * b.length), 0, Array.from({ length: n }, () => Math.floor(r() * 256)));
  },
  /** Overwrite a string payload (names, op types, domains) with random bytes (invalid UTF-8 included). */
  scribble: (b, f, r) => {
    const small = f.filter((x) => x.end - x.valueStart > 0 && x.end - x.valueStart <= 64);
    if (small.length === 0) return b;
    const fld = pick(r, small);
    const out = b.slice();
    for (let i = fld.valueStart; i < fld.end; i++) if (r() < 0.5) out[i] = Math.floor(r() * 256);
    return out;
  },
};

/** Start of a length-delimited field's length varint: right after its tag varint. */
function lenVarintStart(b: Uint8Array, f: Field): number {
  let p = f.start;
  while (b[p]! & 0x80) p++;
  return p + 1;
}

/** Wraps `body` (a message) as field `no` of a message, `depth` times (one allocation: headers are sized first). */
function nest(body: Uint8Array, no: number | number[], depth: number): Uint8Array {
  const nos = typeof no === 'number' ? [no] : no;
  const heads: number[][] = [];
  let size = body.length;
  for (let i = 0; i < depth; i++) {
    const h = [...varint(nos[i % nos.length]! * 8 + WT_LEN), ...varint(size)];
    heads.push(h);
    size += h.length;
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (let i = heads.length - 1; i >= 0; i--) {
    out.set(heads[i]!, at);
    at += heads[i]!.length;
  }
  out.set(body, at);
  return out;
}

interface Outcome {
  kind: 'error' | 'patched';
  code?: string;
}

/** Runs patchDecoder (and inspectDecoder) on one input and checks that it ended in one of the two allowed ways. */
function check(label: string, bytes: Uint8Array): Outcome {
  const t0 = performance.now();
  let outcome: Outcome;
  try {
    const { bytes: out, report } = patchDecoder(bytes);
    // A patched model must be readable again, by our splice reader and by a full protobuf decode...
    const again = readModel(out);
    expect(again.graph.inputs.map((i) => i.name), label).toContain('steering');
    fromBinary(ModelProtoSchema, out);
    // ...and must be recognised as already patched (its new input and output are really there).
    expect(() => inspectDecoder(out), label).toThrow(OnnxPatchError);
    expect(report.num_layers, label).toBeGreaterThan(0);
    expect(report.injection_points.length, label).toBeGreaterThanOrEqual(report.num_layers);
    outcome = { kind: 'patched' };
  } catch (err) {
    if (!(err instanceof OnnxPatchError)) {
      throw new Error(`${label}: expected OnnxPatchError or a valid patch, got ${(err as Error)?.name}: ${(err as Error)?.message}`);
    }
    expect(KNOWN_CODES.has(err.code), `${label}: unknown code ${err.code}`).toBe(true);
    expect(err.message.length, `${label}: empty message`).toBeGreaterThan(10);
    outcome = { kind: 'error', code: err.code };
  }
  const ms = performance.now() - t0;
  if (ms > MAX_CALL_MS) throw new Error(`${label}: took ${ms.toFixed(0)} ms (limit ${MAX_CALL_MS} ms)`);
  return outcome;
}

const SEEDS = seedModels();

describe('fuzz: patcher on random and mutated bytes', () => {
  it('the seed models patch cleanly (the corpus starts from valid graphs)', () => {
    for (const s of SEEDS) expect(check(`seed ${s.name}`, s.bytes).kind).toBe('patched');
  });

  it('2000 random byte strings: each a clear OnnxPatchError', () => {
    const r = rng(1);
    const codes = new Map<string, number>();
    for (let i = 0; i < 2000; i++) {
      const n = Math.floor(r() * 600);
      // Half pure noise, half noise starting with a plausible ModelProto tag (ir_version / graph / opset_import).
      const bytes = Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
      if (i % 2 && n > 0) bytes[0] = pick(r, [0x08, 0x3a, 0x42]);
      const o = check(`random #${i} (len ${n})`, bytes);
      expect(o.kind, `random #${i}`).toBe('error');
      codes.set(o.code!, (codes.get(o.code!) ?? 0) + 1);
    }
    expect(codes.get('MALFORMED_PROTOBUF') ?? 0).toBeGreaterThan(100);
  });

  it('3000 structure-aware mutations of real decoder graphs: error or valid patch, never a crash', () => {
    const names = Object.keys(MUTATORS);
    const tally = { error: 0, patched: 0 };
    const perSeed = Math.ceil(3000 / SEEDS.length);
    SEEDS.forEach((seed, si) => {
      const fields = lenFields(seed.bytes);
      expect(fields.length, seed.name).toBeGreaterThan(50);
      const r = rng(100 + si);
      for (let i = 0; i < perSeed; i++) {
        const m = names[i % names.length]!;
        // One to three stacked mutations; the field list is that of the seed, so later ones may hit stale offsets
        // (clamped by the mutators), which only makes the input more broken.
        let bytes = seed.bytes;
        const k = 1 + Math.floor(r() * 3);
        for (let j = 0; j < k && bytes.length > 0; j++) {
          const valid = fields.filter((f) => f.end <= bytes.length);
          bytes = MUTATORS[j === 0 ? m : pick(r, names)]!(bytes, valid.length ? valid : fields.slice(0, 1), r);
        }
        tally[check(`${seed.name} #${i} ${m}x${k}`, bytes).kind]++;
      }
    });
    // Both outcomes must occur: many mutations break the model, some (e.g. in weights or names) leave it patchable.
    expect(tally.error).toBeGreaterThan(500);
    expect(tally.patched).toBeGreaterThan(50);
  });

  it('every truncation of a small model ends in a clear error', () => {
    const seed = SEEDS[0]!.bytes;
    const step = Math.max(1, Math.floor(seed.length / 800));
    for (let n = 0; n < seed.length; n += step) {
      const o = check(`plain truncated to ${n} of ${seed.length}`, seed.subarray(0, n));
      // A cut between two top-level fields can leave a complete ModelProto that lacks later fields; then the
      // patcher must still refuse it with a code (no graph, no opset...), never patch a graph missing its tail.
      expect(o.kind, `truncated to ${n}`).toBe('error');
    }
  });

  it('huge declared lengths at every depth are refused without allocating', () => {
    const seed = SEEDS[1]!.bytes;
    const fields = lenFields(seed);
    // Fields the reader interprets itself (graph, and the graph's nodes, inputs, outputs, initializers): a wrong
    // length there must be refused. Deeper ones may sit inside opaque bytes (a string, raw tensor data) that only
    // looked like a message; there a valid patch is also a correct outcome, as long as it checks out.
    const graph = scanMessage(seed).find((f) => f.no === 7)!;
    const structural = new Set([graph.start, ...scanMessage(seed, graph.valueStart, graph.end).map((f) => f.start)]);
    const before = process.memoryUsage().rss;
    let errors = 0;
    let total = 0;
    for (let i = 0; i < fields.length; i += Math.max(1, Math.floor(fields.length / 400))) {
      const f = fields[i]!;
      const lenStart = lenVarintStart(seed, f);
      for (const huge of [2 ** 31 - 1, 2 ** 32, 2 ** 62]) {
        const label = `fused field@${f.start} length ${huge}`;
        const o = check(label, splice(seed, lenStart, f.valueStart - lenStart, varint(huge)));
        if (structural.has(f.start)) expect(o.kind, label).toBe('error');
        total++;
        if (o.kind === 'error') errors++;
      }
    }
    expect(total).toBeGreaterThan(300);
    expect(errors / total).toBeGreaterThan(0.9);
    // A declared length is never turned into an allocation: RSS stays within a few hundred MB of where it was.
    expect(process.memoryUsage().rss - before).toBeLessThan(512 * 2 ** 20);
  });

  it('deeply nested sub-messages (graph attributes, type protos, raw nesting) end in a clear error', () => {
    const seed = SEEDS[3]!.bytes; // merged: has If subgraphs
    // (a) nested raw messages as the graph field: graph{node{graph-ish...}} 20 000 deep.
    for (const depth of [20, 200, 20_000]) {
      for (const no of [1, 5, 6, 7, 11]) {
        const inner = nest(new Uint8Array([0x0a, 0x01, 0x41]), no, depth);
        const model = new Uint8Array([0x08, 0x08, 0x42, 0x02, 0x10, 0x0d, ...nest(inner, 7, 1)]); // ir 8, opset 13, graph
        const o = check(`raw nesting field ${no} x${depth}`, model);
        expect(o.kind).toBe('error');
      }
    }
    // (b) nodes whose If branches nest If branches, 17..200 deep: beyond the reader's subgraph limit.
    for (const depth of [17, 64, 200]) {
      // GraphProto{ node: NodeProto{ op_type 'If', attribute: AttributeProto{ name 'then_branch', g: GraphProto{...} } } }
      let g: Uint8Array = new Uint8Array([0x12, 0x01, 0x67]); // GraphProto.name = 'g'
      for (let i = 0; i < depth; i++) {
        const attr = new Uint8Array([0x0a, 0x0b, ...new TextEncoder().encode('then_branch'), ...nest(g, 6, 1)]);
        const nodeMsg = new Uint8Array([0x22, 0x02, 0x49, 0x66, ...nest(attr, 5, 1)]); // op_type 'If'
        g = nest(nodeMsg, 1, 1);
      }
      const model = new Uint8Array([0x08, 0x08, ...nest(g, 7, 1), 0x42, 0x02, 0x10, 0x0d]); // + opset_import v13
      const o = check(`If nesting x${depth}`, model);
      expect(o.kind).toBe('error');
    }
    // (c) a ValueInfo whose TypeProto nests sequence_type 50 000 deep (onnx-buf decodes it recursively).
    {
      let t: Uint8Array = new Uint8Array([0x0a, 0x02, 0x08, 0x01]); // TypeProto.tensor_type { elem_type: FLOAT }
      t = nest(t, [1, 4], 100_000); // TypeProto.sequence_type { elem_type: TypeProto.sequence_type {...} }
      const vi = new Uint8Array([0x0a, 0x01, 0x78, ...nest(t, 2, 1)]); // ValueInfoProto{ name 'x', type }
      const graph = nest(vi, 11, 1);
      const model = new Uint8Array([0x08, 0x08, ...nest(graph, 7, 1), 0x42, 0x02, 0x10, 0x0d]);
      const o = check('TypeProto nesting x50000', model);
      expect(o.kind).toBe('error');
    }
    // (d) the merged seed with its If node's branches wrapped in extra nesting (field 6 inside field 6...).
    const fields = lenFields(seed).filter((f) => f.end - f.valueStart < 4096).slice(0, 40);
    const r = rng(9);
    for (let i = 0; i < 40; i++) {
      const f = pick(r, fields);
      const wrapped = nest(seed.slice(f.valueStart, f.end), 6, 1 + Math.floor(r() * 40));
      const lenStart = lenVarintStart(seed, f);
      check(`merged nest@${f.start}`, splice(seed, lenStart, f.end - lenStart, [...varint(wrapped.length), ...wrapped]));
    }
  });
});
