/**
 * The patcher on hand-built decoders (plain Add chain, If-merged) run with onnxruntime-node, the splice invariants
 * (every byte outside nodes / inputs / outputs untouched), external data, and the file API.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fromBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, TensorProto_DataLocation, type ValueInfoProto } from 'onnx-buf';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { GraphBuilder, DataType, serializeModel } from '../../src/core/onnx/graph-builder.js';
import { inspectDecoder, OnnxPatchError, patchDecoder } from '../../src/core/onnx/patcher.js';
import { patchDecoderFile } from '../../src/core/onnx/patcher-node.js';
import { fieldView, scanMessage } from '../../src/core/onnx/wire.js';
import { TOY, mergedDecoder, plainDecoder, toyBody, toyWeights } from './patcher-graphs.js';
import { testDir } from '../helpers/tmp.js';

const { layers: L, hidden: H, vocab: V, kvHeads: KV, headDim: HD } = TOY;

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}
const randomVector = (n: number, seed: number, scale = 1) => {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => (r() * 2 - 1) * scale);
};
const randomIds = (n: number, seed: number) => {
  const r = rng(seed);
  return Array.from({ length: n }, () => Math.floor(r() * V));
};

interface Out {
  logits: Float32Array;
  presents: Float32Array[];
  residual?: Float32Array;
  debug: Float32Array[];
}

async function run(
  s: ort.InferenceSession,
  ids: number[][],
  opts: { steering?: Float32Array; steerBatch?: number; projection?: Float32Array; projectionBatch?: number; pastLen?: number; useCache?: boolean } = {},
): Promise<Out> {
  const B = ids.length;
  const S = ids[0].length;
  const P = opts.pastLen ?? 0;
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.flat().map(BigInt)), [B, S]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(B * (P + S)).fill(1n), [B, P + S]),
  };
  for (let l = 0; l < L; l++) {
    for (const kind of ['key', 'value']) {
      feeds[`past_key_values.${l}.${kind}`] = new ort.Tensor('float32', randomVector(B * KV * P * HD, l + 100), [B, KV, P, HD]);
    }
  }
  if (s.inputNames.includes('use_cache_branch')) feeds.use_cache_branch = new ort.Tensor('bool', [opts.useCache ?? false], [1]);
  if (s.inputNames.includes('steering')) {
    const sb = opts.steerBatch ?? 1;
    feeds.steering = new ort.Tensor('float32', opts.steering ?? new Float32Array(sb * L * H), [sb, L, H]);
  }
  if (s.inputNames.includes('projection')) {
    const pb = opts.projectionBatch ?? 1;
    feeds.projection = new ort.Tensor('float32', opts.projection ?? new Float32Array(pb * L * H), [pb, L, H]);
  }
  const out = await s.run(feeds);
  const f = (n: string) => out[n].data as Float32Array;
  return {
    logits: f('logits'),
    presents: Array.from({ length: 2 * L }, (_, i) => f(`present.${Math.floor(i / 2)}.${i % 2 ? 'value' : 'key'}`)),
    residual: out.residual_stream ? f('residual_stream') : undefined,
    debug: s.outputNames.filter((n) => n.startsWith('debug_residual_')).map(f),
  };
}

/** residual_stream [B, L+1, S, H] -> the [S, H] block of (b, row) */
const block = (res: Float32Array, S: number, b: number, row: number) => res.subarray((b * (L + 1) + row) * S * H, (b * (L + 1) + row + 1) * S * H);

const unit = (n: number, seed: number) => {
  const v = randomVector(n, seed);
  const norm = Math.hypot(...v);
  return v.map((x) => x / norm);
};
const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
};

/** The hand computation of the patch on [S, H] rows: x - (x . u) u + t u (t = 0: ablation). */
function projected(x: Float32Array, u: Float32Array, t: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let p = 0; p < x.length / H; p++) {
    const c = dot(x.subarray(p * H, (p + 1) * H), u);
    for (let i = 0; i < H; i++) out[p * H + i] = x[p * H + i]! - c * u[i]! + t * u[i]!;
  }
  return out;
}

function expectClose(a: Float32Array, b: Float32Array, tol: number): void {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i])));
  expect(worst).toBeLessThanOrEqual(tol);
}

/** Checks identity against the unpatched model, the stack against exposed residuals, and exact injection. */
async function checkDecoder(original: Uint8Array, debugModel: Uint8Array, patchedBytes: Uint8Array, useCache?: boolean): Promise<void> {
  const base = await ort.InferenceSession.create(original);
  const debug = await ort.InferenceSession.create(debugModel);
  const patched = await ort.InferenceSession.create(patchedBytes);
  const pastLen = useCache ? 3 : 0;
  const ids = [randomIds(4, 1), randomIds(4, 2)];
  const S = 4;
  const a = await run(base, ids, { pastLen, useCache });
  const b = await run(patched, ids, { pastLen, useCache });
  expect(b.logits).toEqual(a.logits);
  b.presents.forEach((p, i) => expect(p).toEqual(a.presents[i]));
  const d = await run(debug, ids, { pastLen, useCache });
  expect(d.debug).toHaveLength(L + 1);
  for (let bi = 0; bi < 2; bi++) {
    for (let row = 0; row <= L; row++) {
      expect(block(b.residual!, S, bi, row)).toEqual(d.debug[row].subarray(bi * S * H, (bi + 1) * S * H));
    }
  }
  for (let layer = 0; layer < L; layer++) {
    const v = randomVector(H, 20 + layer, 2);
    const m = new Float32Array(L * H);
    m.set(v, layer * H);
    const st = await run(patched, ids, { steering: m, pastLen, useCache });
    expect(Math.max(...st.logits.map((x, i) => Math.abs(x - b.logits[i])))).toBeGreaterThan(1e-3);
    for (let bi = 0; bi < 2; bi++) {
      for (let row = 0; row <= layer; row++) expect(block(st.residual!, S, bi, row)).toEqual(block(b.residual!, S, bi, row));
      const diff = block(st.residual!, S, bi, layer + 1).map((x, i) => x - block(b.residual!, S, bi, layer + 1)[i]);
      expectClose(diff, Float32Array.from({ length: S * H }, (_, i) => v[i % H]), 1e-5);
    }
  }
  // steer_batch = batch: sequence 1 steered, sequence 0 not
  const per = new Float32Array(2 * L * H);
  per.set(randomVector(L * H, 30), L * H);
  const mixed = await run(patched, ids, { steering: per, steerBatch: 2, pastLen, useCache });
  expect(mixed.logits.subarray(0, S * V)).toEqual(b.logits.subarray(0, S * V));
  expect(block(mixed.residual!, S, 1, L)).not.toEqual(block(b.residual!, S, 1, L));
  await checkProjection(patched, ids, b, { pastLen, useCache });
}

/**
 * The projection input against the hand computation: with u at layer l, residual[l+1] = x - (x.u)u + steering_l where
 * x is the unsteered residual there (ablation: steering 0, the component is gone; clamping: steering t u, the component
 * is t), residual[0..l] unchanged bit for bit, and a batch row whose projection is zero is untouched.
 */
async function checkProjection(patched: ort.InferenceSession, ids: number[][], base: Out, o: { pastLen: number; useCache?: boolean }): Promise<void> {
  const S = ids[0]!.length;
  for (let layer = 0; layer < L; layer++) {
    const u = unit(H, 40 + layer);
    for (const t of [0, 1.75]) {
      const proj = new Float32Array(L * H);
      proj.set(u, layer * H);
      const steer = new Float32Array(L * H);
      for (let i = 0; i < H; i++) steer[layer * H + i] = t * u[i]!;
      const r = await run(patched, ids, { ...o, projection: proj, steering: steer });
      for (let bi = 0; bi < 2; bi++) {
        for (let row = 0; row <= layer; row++) expect(block(r.residual!, S, bi, row)).toEqual(block(base.residual!, S, bi, row));
        const got = block(r.residual!, S, bi, layer + 1);
        expectClose(got, projected(block(base.residual!, S, bi, layer + 1), u, t), 1e-5);
        for (let p = 0; p < S; p++) expect(Math.abs(dot(got.subarray(p * H, (p + 1) * H), u) - t)).toBeLessThan(1e-5);
      }
      expect(Math.max(...r.logits.map((x, i) => Math.abs(x - base.logits[i]!)))).toBeGreaterThan(1e-4);
    }
  }
  // projection steer_batch 2 beside steering steer_batch 1: row 0 ablated at the last layer, row 1 untouched
  const u = unit(H, 77);
  const proj = new Float32Array(2 * L * H);
  proj.set(u, (L - 1) * H);
  const r = await run(patched, ids, { ...o, projection: proj, projectionBatch: 2 });
  expectClose(block(r.residual!, S, 0, L), projected(block(base.residual!, S, 0, L), u, 0), 1e-5);
  expect(block(r.residual!, S, 1, L)).toEqual(block(base.residual!, S, 1, L));
  expect(r.logits.subarray(S * V)).toEqual(base.logits.subarray(S * V));
}

describe('plain decoder (optimum style, explicit Adds)', () => {
  const original = plainDecoder();

  it('detects the Add chain, ignoring stream + constant', () => {
    const report = inspectDecoder(original, { expectedNumLayers: L, expectedHiddenSize: H });
    expect(report).toMatchObject({ topology: 'plain', num_layers: L, hidden_size: H, stream_dtype: 'float32', opset: 17, steering_input: 'steering', projection_input: 'projection', residual_output: 'residual_stream' });
    expect(report.injection_points).toHaveLength(L);
    expect(report.injection_points.every((p) => p.kind === 'add' && p.graph === 'main')).toBe(true);
    expect(patchDecoder(original).report).toEqual(report);
  });

  it('zero steering is the identity; injection is exact at every layer; steer_batch = batch', async () => {
    await checkDecoder(original, plainDecoder(TOY, { debug: true }), patchDecoder(original).bytes);
  });

  it('without the projection input (the earlier patch) steers the same, and has no projection', async () => {
    const { bytes, report } = patchDecoder(original, { projection: false });
    expect(report.projection_input).toBeNull();
    const s = await ort.InferenceSession.create(bytes);
    expect(s.inputNames).not.toContain('projection');
    const full = await ort.InferenceSession.create(patchDecoder(original).bytes);
    const ids = [randomIds(5, 3), randomIds(5, 4)];
    const steering = randomVector(L * H, 9);
    const a = await run(s, ids, { steering });
    const b = await run(full, ids, { steering });
    expect(a.logits).toEqual(b.logits);
    expect(a.residual).toEqual(b.residual);
  });

  it('declares steering [steer_batch, L, H], projection [projection_batch, L, H] and residual_stream [batch, L+1, seq, H] as float32', () => {
    const m = fromBinary(ModelProtoSchema, patchDecoder(original).bytes);
    const dims = (name: string, list: ValueInfoProto[]) => {
      const t = list.find((x) => x.name === name)!.type!.value;
      if (t.case !== 'tensorType') throw new Error('not a tensor');
      return { elem: t.value.elemType, dims: t.value.shape!.dim.map((d) => (d.value.case === 'dimValue' ? Number(d.value.value) : d.value.value)) };
    };
    expect(dims('steering', m.graph!.input)).toEqual({ elem: DataType.FLOAT, dims: ['steer_batch', L, H] });
    expect(dims('projection', m.graph!.input)).toEqual({ elem: DataType.FLOAT, dims: ['projection_batch', L, H] });
    expect(dims('residual_stream', m.graph!.output)).toEqual({ elem: DataType.FLOAT, dims: ['batch_size', L + 1, 'sequence_length', H] });
    expect(m.graph!.input.map((x) => x.name).slice(-2)).toEqual(['steering', 'projection']);
  });

  it('copies every byte outside the graph lists verbatim (field order, metadata_props, initializers)', () => {
    const out = patchDecoder(original).bytes;
    const top0 = scanMessage(original);
    const top1 = scanMessage(out);
    expect(top1.map((f) => f.no)).toEqual(top0.map((f) => f.no));
    top0.forEach((f, i) => {
      if (f.no !== 7) expect(fieldView(out, top1[i])).toEqual(fieldView(original, f));
    });
    const g0 = top0.find((f) => f.no === 7)!;
    const g1 = top1.find((f) => f.no === 7)!;
    const inits = (bytes: Uint8Array, g: typeof g0) => scanMessage(bytes, g.valueStart, g.end).filter((f) => f.no === 5).map((f) => fieldView(bytes, f));
    expect(inits(out, g1)).toEqual(inits(original, g0));
    expect(fromBinary(ModelProtoSchema, out).metadataProps.map((p) => [p.key, p.value])).toEqual([['origin', 'steerlab-test']]);
  });
});

describe('block-quantized embedding (com.microsoft GatherBlockQuantized)', () => {
  it('reads the hidden size from the packed data and steers exactly', async () => {
    const original = plainDecoder(TOY, { gbq: true });
    const { bytes, report } = patchDecoder(original, { expectedHiddenSize: H });
    expect(report).toMatchObject({ topology: 'plain', num_layers: L, hidden_size: H, stream_dtype: 'float32' });
    await checkDecoder(original, plainDecoder(TOY, { gbq: true, debug: true }), bytes);
  });
});

describe('scaled embedding (Gemma multiplies it by sqrt(hidden))', () => {
  it('starts the stream after the scaling', async () => {
    const original = plainDecoder(TOY, { scaleEmbedding: true });
    await checkDecoder(original, plainDecoder(TOY, { scaleEmbedding: true, debug: true }), patchDecoder(original).bytes);
  });
});

describe('If-merged decoder (decoder_model_merged)', () => {
  const original = mergedDecoder();

  it('patches both branches and keeps the output lists aligned', () => {
    const { bytes, report } = patchDecoder(original, { expectedNumLayers: L });
    expect(report.topology).toBe('merged');
    expect(report.injection_points.map((p) => p.graph)).toEqual([...Array(L).fill('then_branch'), ...Array(L).fill('else_branch')]);
    const m = fromBinary(ModelProtoSchema, bytes);
    const g = m.graph!;
    expect(g.input.filter((x) => x.name === 'steering')).toHaveLength(1);
    expect(g.input.filter((x) => x.name === 'projection')).toHaveLength(1);
    const ifNode = g.node.find((n) => n.opType === 'If')!;
    expect(ifNode.output.at(-1)).toBe('residual_stream');
    expect(g.output.at(-1)!.name).toBe('residual_stream');
    for (const a of ifNode.attribute) expect(a.g!.output.length).toBe(ifNode.output.length);
  });

  for (const useCache of [false, true]) {
    it(`zero steering identity and exact injection (use_cache_branch = ${useCache})`, async () => {
      await checkDecoder(original, mergedDecoder(TOY, { debug: true }), patchDecoder(original).bytes, useCache);
    });
  }
});

describe('external data and the file API', () => {
  it('keeps external references, renaming their location on request', async () => {
    const dir = testDir('steerlab-patch-');
    const b = new GraphBuilder('toy_decoder');
    b.input('input_ids', DataType.INT64, ['batch_size', 'sequence_length']);
    b.input('attention_mask', DataType.INT64, ['batch_size', 'total_sequence_length']);
    for (let l = 0; l < L; l++) for (const k of ['key', 'value']) b.input(`past_key_values.${l}.${k}`, DataType.FLOAT, ['batch_size', KV, 'past_sequence_length', HD]);
    const body = toyBody(b, TOY, toyWeights(b, TOY, 7));
    b.node('Identity', [body.logits], ['logits']);
    b.output('logits', DataType.FLOAT, ['batch_size', 'sequence_length', V]);
    body.presents.forEach((p, i) => {
      const name = `present.${Math.floor(i / 2)}.${i % 2 ? 'value' : 'key'}`;
      b.node('Identity', [p], [name]);
      b.output(name, DataType.FLOAT, ['batch_size', KV, 'total_sequence_length', HD]);
    });
    const { model, externalData } = serializeModel(b.graph(), { opsets: [{ domain: '', version: 17 }], externalData: { location: 'model.onnx_data', minBytes: 1024 } });
    writeFileSync(join(dir, 'model.onnx'), model);
    writeFileSync(join(dir, 'model_steerable.onnx_data'), externalData!);
    const report = await patchDecoderFile(join(dir, 'model.onnx'), join(dir, 'model_steerable.onnx'), {
      renameExternalData: { 'model.onnx_data': 'model_steerable.onnx_data' },
    });
    expect(report.num_layers).toBe(L);
    const patched = fromBinary(ModelProtoSchema, readFileSync(join(dir, 'model_steerable.onnx')));
    const external = patched.graph!.initializer.filter((t) => t.dataLocation === TensorProto_DataLocation.EXTERNAL);
    expect(external.length).toBeGreaterThan(3);
    for (const t of external) expect(t.externalData.find((e) => e.key === 'location')!.value).toBe('model_steerable.onnx_data');
    const session = await ort.InferenceSession.create(join(dir, 'model_steerable.onnx'));
    const out = await run(session, [randomIds(3, 5)]);
    expect(out.residual).toHaveLength((L + 1) * 3 * H);
    // without a rename the reference is untouched
    const kept = fromBinary(ModelProtoSchema, patchDecoder(model).bytes).graph!.initializer.filter((t) => t.dataLocation === TensorProto_DataLocation.EXTERNAL);
    for (const t of kept) expect(t.externalData.find((e) => e.key === 'location')!.value).toBe('model.onnx_data');
  });

  it('writes atomically and writes nothing on error', async () => {
    const dir = testDir('steerlab-patch-');
    writeFileSync(join(dir, 'good.onnx'), plainDecoder());
    writeFileSync(join(dir, 'bad.onnx'), new Uint8Array([1, 2, 3, 4, 5]));
    await expect(patchDecoderFile(join(dir, 'bad.onnx'), join(dir, 'out.onnx'))).rejects.toBeInstanceOf(OnnxPatchError);
    await expect(patchDecoderFile(join(dir, 'good.onnx'), join(dir, 'out.onnx'), { expectedNumLayers: L + 1 })).rejects.toMatchObject({ code: 'LAYER_COUNT_MISMATCH' });
    await expect(patchDecoderFile(join(dir, 'missing.onnx'), join(dir, 'out.onnx'))).rejects.toMatchObject({ code: 'IO_ERROR' });
    expect(readdirSync(dir).sort()).toEqual(['bad.onnx', 'good.onnx']);
    await patchDecoderFile(join(dir, 'good.onnx'), join(dir, 'out.onnx'));
    expect(readdirSync(dir).sort()).toEqual(['bad.onnx', 'good.onnx', 'out.onnx']);
    expect(existsSync(join(dir, 'out.onnx'))).toBe(true);
    expect(inspectDecoder(readFileSync(join(dir, 'good.onnx'))).num_layers).toBe(L);
  });
});
