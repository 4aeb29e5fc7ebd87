/**
 * Directions computed with a model:
 * - the paper's embedding direction on a built tiny model equals a hand computation (phrases tokenized here with
 *   the model's own tokenizer.json through transformers.js, rows of lm_head taken from the builder's seeded weights,
 *   not from the graph), and records which matrix it used (unembedding; input embedding on request);
 * - diff-in-means runs end to end through the CLI function with relaxed filters and writes a file whose metadata and
 *   vectors are consistent; the selection's ablation run is exact directional ablation (the reference forward pass
 *   with x <- x - (x.d)d after every layer);
 * - a direction for another model shape is a clear error.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AutoTokenizer } from '@huggingface/transformers';
import { buildTestModel, type BuiltModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { generateWeights } from '../../src/core/onnx/testmodel/weights.js';
import { loadSteerableModel, type SteerableModel } from '../../src/core/model/index.js';
import { ANSWER_PHRASES, REFUSAL_PHRASES } from '../../src/core/steering/direction.js';
import { readDirectionFile } from '../../src/core/steering/direction-file-node.js';
import { embeddingDirectionOfModel, lastLogits } from '../../src/core/method/directions.js';
import { ablationProjection } from '../../src/core/steering/ablation.js';
import { referenceForward } from '../../src/core/onnx/testmodel/reference.js';
import { loadDirectionFor } from '../../src/core/method/artifacts-node.js';
import { runDirection } from '../../src/cli/commands/direction.js';

const shape = SHAPE_PRESETS.tiny!;
const L = shape.numLayers;
const H = shape.hiddenSize;
const V = shape.vocabSize;
const root = mkdtempSync(join(tmpdir(), 'steerlab-method-dir-'));
let built: BuiltModel;
let model: SteerableModel;

beforeAll(async () => {
  built = await buildTestModel(join(root, 'm'), { shape, topology: 'plain', seed: 9 });
  model = await loadSteerableModel(built.dir, { dtype: 'fp32', modelFileName: built.modelFileName });
});
afterAll(async () => {
  await model?.dispose();
  rmSync(root, { recursive: true, force: true });
});

/** mean(rows of refusal ids) - mean(rows of answer ids), normalised; rows[t] = column t of lm_head [H, V]. */
async function handDirection(matrix: 'lm_head' | 'embed'): Promise<{ d: Float64Array; nRefusal: number; nAnswer: number }> {
  const tok = (await AutoTokenizer.from_pretrained(built.dir)) as unknown as { encode(t: string, o: object): number[] };
  const w = generateWeights(shape, 9);
  const row = (t: number) => Float64Array.from({ length: H }, (_, h) => (matrix === 'lm_head' ? w.lmHead[h * V + t]! : w.embedTokens[t * H + h]!));
  const mean = (phrases: readonly string[]) => {
    const ids = phrases.flatMap((p) => tok.encode(p, { add_special_tokens: false }));
    const m = new Float64Array(H);
    for (const id of ids) {
      const r = row(id);
      for (let h = 0; h < H; h++) m[h] += r[h]! / ids.length;
    }
    return { m, n: ids.length };
  };
  const a = mean(REFUSAL_PHRASES);
  const b = mean(ANSWER_PHRASES);
  const d = a.m.map((x, h) => x - b.m[h]!);
  const n = Math.hypot(...d);
  return { d: d.map((x) => x / n), nRefusal: a.n, nAnswer: b.n };
}

describe('embedding direction with a model', () => {
  it('equals the hand computation from lm_head rows, and records the unembedding', async () => {
    const hand = await handDirection('lm_head');
    const r = await embeddingDirectionOfModel(model);
    expect(r.info.source_matrix).toBe('unembedding');
    expect(r.file.metadata.source_matrix).toBe('unembedding');
    expect(r.info.refusal_token_count).toBe(hand.nRefusal);
    expect(r.info.answer_token_count).toBe(hand.nAnswer);
    for (let h = 0; h < H; h++) expect(r.file.direction[h]).toBeCloseTo(hand.d[h]!, 5);
  });

  it('input embedding on request equals the hand computation from embed rows', async () => {
    const hand = await handDirection('embed');
    const r = await embeddingDirectionOfModel(model, { prefer: 'input-embedding' });
    expect(r.file.metadata.source_matrix).toBe('input-embedding');
    for (let h = 0; h < H; h++) expect(r.file.direction[h]).toBeCloseTo(hand.d[h]!, 5);
  });
});

describe('diff-in-means with a model', () => {
  it("the selection's ablation run is exact directional ablation after every layer, per position", async () => {
    const raw = Float32Array.from({ length: H }, (_, i) => Math.sin(i * 0.37 + 1));
    const n = Math.hypot(...raw);
    const d = raw.map((x) => x / n);
    const projection = ablationProjection(d, L);
    const prompt = 'How do I bake bread?';
    const [mine] = await lastLogits(model, [prompt], { projection });
    const ids = model.formatChat(prompt).ids;
    const ref = referenceForward(shape, generateWeights(shape, 9), ids, { projection });
    const want = ref.logits.subarray((ids.length - 1) * V, ids.length * V);
    let worst = 0;
    for (let i = 0; i < V; i++) worst = Math.max(worst, Math.abs(mine![i]! - want[i]!));
    expect(worst).toBeLessThan(1e-4);
    // every residual after a layer has no component along d, at every position
    const S = ids.length;
    for (let k = 1; k <= L; k++) {
      for (let p = 0; p < S; p++) {
        let c = 0;
        for (let h = 0; h < H; h++) c += ref.residuals[(k * S + p) * H + h]! * d[h]!;
        expect(Math.abs(c)).toBeLessThan(1e-5);
      }
    }
    const [plain] = await lastLogits(model, [prompt], {});
    expect(Math.max(...plain!.map((x, i) => Math.abs(x - mine![i]!)))).toBeGreaterThan(1e-3);
  });

  it('lab direction --method diff-in-means writes a consistent file (relaxed filters on a random model)', async () => {
    const out = join(root, 'dim.safetensors');
    const r = await runDirection({
      model: built.dir,
      method: 'diff-in-means',
      harmful: 'harmful-train',
      harmless: 'harmless-train',
      n: '4',
      valN: '2',
      seed: '1',
      // a random model never "refuses": keep every candidate the model can steer
      inducedRefusalThreshold: '-1e9',
      klThreshold: '1e9',
      out,
      castOut: join(root, 'cast.json'),
    });
    const info = r.diff_in_means!;
    // The lab's separation plot and the CAST condition --cast-out writes (the file --cast reads).
    expect(r.separation!.map((x) => x.layer)).toEqual(Array.from({ length: L + 1 }, (_, k) => k));
    const cast = JSON.parse(readFileSync(join(root, 'cast.json'), 'utf8')) as { vector: number[]; layer: number; threshold: number; activeWhen: string };
    expect(cast.vector).toHaveLength(H);
    expect(cast.layer).toBe(r.cast!.layer);
    expect(['above', 'below']).toContain(cast.activeWhen);
    await expect(runDirection({ model: built.dir, method: 'import', file: out, harmful: '', harmless: '', n: '1', valN: '1', seed: '0', out: join(root, 'i.safetensors'), castOut: join(root, 'c.json') }))
      .rejects.toThrow(/--cast-out .* works with --method embedding or diff-in-means/);
    // residual index 0 is the embedding of the same template tokens for both classes: its differences are exactly
    // zero and listCandidates skips them, leaving L x P candidates
    expect(info.candidates).toBe(L * info.positions);
    expect(info.evaluated).toBeGreaterThan(0);
    expect(info.ablation).toMatch(/directional ablation through the projection input/);
    const f = await readDirectionFile(out, { hiddenSize: H, numLayers: L });
    expect(f.metadata.method).toBe('diff-in-means');
    expect(f.metadata.layer).toBe(info.selected.steering_row);
    expect(f.metadata.position).toBe(info.selected.position);
    expect(f.metadata.sample_counts).toEqual({ harmful_train: 4, harmless_train: 4, harmful_val: 2, harmless_val: 2 });
    expect(f.metadata.note).toMatch(/directional ablation through the projection input/);
    // the unit direction is the raw vector normalised, and the raw vector is row `layer` of the per-layer vectors
    const raw = f.rawDirection!;
    const n = Math.hypot(...raw);
    for (let h = 0; h < H; h++) expect(f.direction[h]).toBeCloseTo(raw[h]! / n, 5);
    expect(Array.from(f.directions!.subarray(f.metadata.layer! * H, (f.metadata.layer! + 1) * H))).toEqual(Array.from(raw));
    // a late-layer candidate is never chosen (last 20 % pruned)
    expect(info.selected.residual_index).toBeLessThan(Math.floor(L * 0.8));
  });

  it('takes user JSONL files with --text-column, and names a missing column', async () => {
    const rows = (words: string[]) => words.map((w, i) => JSON.stringify({ id: `r${i}`, q: `Tell me about ${w}` })).join('\n');
    writeFileSync(join(root, 'bad.jsonl'), rows(['poison', 'weapons', 'hacking', 'fraud', 'theft', 'arson']));
    writeFileSync(join(root, 'good.jsonl'), rows(['bread', 'flowers', 'rivers', 'music', 'chess', 'tea']));
    const base = { model: built.dir, method: 'diff-in-means', harmful: join(root, 'bad.jsonl'), harmless: join(root, 'good.jsonl'), n: '4', valN: '2', seed: '1', inducedRefusalThreshold: '-1e9', klThreshold: '1e9' };
    const r = await runDirection({ ...base, textColumn: 'q', out: join(root, 'user.safetensors') });
    expect(r.diff_in_means!.evaluated).toBeGreaterThan(0);
    const f = await readDirectionFile(join(root, 'user.safetensors'), { hiddenSize: H, numLayers: L });
    expect(f.metadata.sample_counts).toEqual({ harmful_train: 4, harmless_train: 4, harmful_val: 2, harmless_val: 2 });
    await expect(runDirection({ ...base, textColumn: 'prompt', out: join(root, 'none.safetensors') })).rejects.toThrow(/prompt/);
  });

  it('no candidate passing the filters is a clear error', async () => {
    await expect(
      runDirection({ model: built.dir, method: 'diff-in-means', harmful: 'harmful-train', harmless: 'harmless-train', n: '2', valN: '1', seed: '1', out: join(root, 'x.safetensors') }),
    ).rejects.toThrow(/no candidate passed the selection filters.*relax/);
  });
});

describe('fit checks', () => {
  it('a direction for another model shape is refused with the sizes named', async () => {
    const other = await buildTestModel(join(root, 'other'), { shape: { ...shape, hiddenSize: 32, headDim: 8 }, topology: 'plain', seed: 1 });
    const out = join(root, 'emb.safetensors');
    await runDirection({ model: other.dir, method: 'embedding', harmful: '', harmless: '', n: '1', valN: '1', seed: '0', out });
    await expect(loadDirectionFor(out, model)).rejects.toThrow(/hidden size 32.*hidden size 64/);
    await expect(loadDirectionFor(join(root, 'missing.safetensors'), model)).rejects.toThrow(/does not exist/);
  });

  it('import: a JSON vector is normalised, its norm recorded; a wrong size is named', async () => {
    const { writeFileSync } = await import('node:fs');
    const vec = join(root, 'vec.json');
    writeFileSync(vec, JSON.stringify(Array.from({ length: H }, () => 2)));
    const out = join(root, 'imp.safetensors');
    const r = await runDirection({ model: built.dir, method: 'import', file: vec, harmful: '', harmless: '', n: '1', valN: '1', seed: '0', out });
    expect(r.import!.source_norm).toBeCloseTo(16, 5);
    const f = await readDirectionFile(out, { hiddenSize: H, numLayers: L });
    expect(f.metadata.method).toBe('import');
    for (let h = 0; h < H; h++) expect(f.direction[h]).toBeCloseTo(1 / 8, 6);
    writeFileSync(vec, JSON.stringify([1, 2, 3]));
    await expect(runDirection({ model: built.dir, method: 'import', file: vec, harmful: '', harmless: '', n: '1', valN: '1', seed: '0', out })).rejects.toThrow(/3 values.*hidden size is 64/);
  });

  it('bad command options are named', async () => {
    const base = { model: built.dir, harmful: 'harmful-train', harmless: 'harmless-train', n: '2', valN: '1', seed: '0' };
    await expect(runDirection({ ...base, method: 'pca', out: join(root, 'a.safetensors') })).rejects.toThrow(/--method must be one of embedding, diff-in-means, import/);
    await expect(runDirection({ ...base, method: 'embedding', out: join(root, 'a.bin') })).rejects.toThrow(/--out must name a .safetensors file/);
    await expect(runDirection({ ...base, method: 'import', out: join(root, 'a.safetensors') })).rejects.toThrow(/--file/);
    await expect(runDirection({ ...base, method: 'diff-in-means', harmful: 'no-such-set', out: join(root, 'a.safetensors') })).rejects.toThrow(/unknown dataset 'no-such-set'/);
  });
});
