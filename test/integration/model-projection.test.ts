/**
 * The projection input through SteerableModel, on every test-model topology:
 * - the load-time self-check covers it (ablation zeroes the component along u, clamping hits the target, nothing
 *   upstream moves) and a graph that ignores the projection fails the load;
 * - forward with projection (+ steering) equals the reference forward pass (fp32 graphs), batch rows included;
 * - generation: the projection rides on the steered passes only ('last', 'all', 'new' positions).
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTestModel, type BuiltModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS, TEST_TOPOLOGIES, type TestTopology } from '../../src/core/onnx/testmodel/config.js';
import { argmaxRow, referenceForward } from '../../src/core/onnx/testmodel/reference.js';
import { generateWeights } from '../../src/core/onnx/testmodel/weights.js';
import { loadSteerableModel, SelfCheckError, SteerableModel } from '../../src/core/model/index.js';

const shape = SHAPE_PRESETS.tiny!;
const L = shape.numLayers;
const H = shape.hiddenSize;
const V = shape.vocabSize;
const PROMPT = [5, 17, 200, 33, 8, 91, 140];
const root = mkdtempSync(join(tmpdir(), 'steerlab-model-proj-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function unit(seed: number): Float32Array {
  const v = Float32Array.from({ length: H }, (_, i) => Math.sin(seed * 1.3 + i * 0.77) + 0.2 * Math.cos(i * seed));
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
}

/** Projection u at `layers`, steering t*u there (t = 0: ablation). */
function clampAt(layers: number[], u: Float32Array, t: number): { projection: Float32Array; steering: Float32Array } {
  const projection = new Float32Array(L * H);
  const steering = new Float32Array(L * H);
  for (const l of layers) {
    projection.set(u, l * H);
    for (let i = 0; i < H; i++) steering[l * H + i] = t * u[i]!;
  }
  return { projection, steering };
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Component along u of residuals [1, L+1, S, H] at residual index k, position p. */
function component(res: Float32Array, S: number, k: number, p: number, u: Float32Array): number {
  let c = 0;
  for (let i = 0; i < H; i++) c += res[(k * S + p) * H + i]! * u[i]!;
  return c;
}

describe.each(TEST_TOPOLOGIES.map((t) => [t]))('projection through SteerableModel, %s graph', (topology: TestTopology) => {
  let built: BuiltModel;
  let sm: SteerableModel;
  const fp16 = topology === 'fused-q4f16';
  // int8-rounded activations (fused-q4): not comparable with the float64 reference to 1e-4
  const exactArithmetic = !fp16 && topology !== 'fused-q4';

  beforeAll(async () => {
    built = await buildTestModel(join(root, topology), { shape, topology, seed: 13 });
    sm = await loadSteerableModel(built.dir, { dtype: built.dtype, modelFileName: built.modelFileName });
  });
  afterAll(async () => sm?.dispose());

  it('the load-time self-check covers ablation and clamping', () => {
    const r = sm.selfCheck!;
    const p = r.projection!;
    expect(r.ok).toBe(true);
    expect(p.ablation_max_error).toBeLessThanOrEqual(r.tolerance);
    expect(p.clamp_max_error).toBeLessThanOrEqual(r.tolerance);
    expect(p.projection_max_error).toBeLessThanOrEqual(r.tolerance);
    // the probe removed something far larger than the tolerance (the check is not vacuous)
    expect(p.removed_component).toBeGreaterThan(20 * r.tolerance);
    expect(Math.abs(p.clamp_target)).toBeGreaterThan(20 * r.tolerance);
    console.info(
      `[${topology}] self-check projection: ablation ${p.ablation_max_error.toExponential(3)}, clamp ${p.clamp_max_error.toExponential(3)} ` +
        `(target ${p.clamp_target.toExponential(3)}), elementwise ${p.projection_max_error.toExponential(3)}, removed ${p.removed_component.toExponential(3)}, ` +
        `tolerance ${r.tolerance.toExponential(3)}`,
    );
  });

  it('clamping sets the component along u at every clamped layer and position', async () => {
    const u = unit(3);
    const layers = [0, 2, L - 1];
    const t = 1.5;
    const { projection, steering } = clampAt(layers, u, t);
    const S = PROMPT.length;
    const r = (await sm.forward([PROMPT], { steering, projection })).residuals.data;
    for (const l of layers) for (let p = 0; p < S; p++) expect(Math.abs(component(r, S, l + 1, p, u) - t)).toBeLessThan(fp16 ? 2e-2 : 1e-5);
    const base = (await sm.forward([PROMPT], { steering: null })).residuals.data;
    expect(maxAbsDiff(r.subarray(0, S * H), base.subarray(0, S * H))).toBe(0); // the embedding row is never touched
  });

  if (exactArithmetic) {
    it('forward with projection and steering equals the reference forward pass', async () => {
      const weights = generateWeights(shape, built.seed);
      const u = unit(5);
      for (const t of [0, -2]) {
        const { projection, steering } = clampAt([1, 3], u, t);
        const ref = referenceForward(shape, weights, PROMPT, { steering, projection });
        const mine = await sm.forward([PROMPT], { steering, projection });
        expect(maxAbsDiff(mine.residuals.data, ref.residuals)).toBeLessThanOrEqual(1e-4);
        expect(maxAbsDiff(mine.logits.data, ref.logits)).toBeLessThanOrEqual(1e-4);
      }
    });

  }

  if (!fp16) {
    it('batch rows: one projection per row, or one shared', async () => {
      const ids = [PROMPT.slice(0, 5), PROMPT.slice(2)];
      const u = unit(7);
      const a = clampAt([2], u, 0);
      const both = new Float32Array(2 * L * H);
      both.set(a.projection, L * H); // row 0 no projection, row 1 ablated at layer 2
      const batched = await sm.forward(ids, { projection: both });
      const plain0 = await sm.forward([ids[0]!], { steering: null });
      const abl1 = await sm.forward([ids[1]!], { projection: a.projection });
      const half = batched.residuals.data.length / 2;
      expect(maxAbsDiff(batched.residuals.data.subarray(0, half), plain0.residuals.data)).toBeLessThanOrEqual(1e-5);
      expect(maxAbsDiff(batched.residuals.data.subarray(half), abl1.residuals.data)).toBeLessThanOrEqual(1e-5);
      expect(maxAbsDiff(abl1.residuals.data, (await sm.forward([ids[1]!], { steering: null })).residuals.data)).toBeGreaterThan(1e-3);
    });

  }

  if (exactArithmetic) {
    it("generation: 'all' equals greedy decoding with the projection at every position; 'new' leaves the last prompt token alone", async () => {
      const u = unit(11);
      const { projection, steering } = clampAt([0, 1, 2, 3], u, 4);
      const weights = generateWeights(shape, built.seed);
      const ids = PROMPT.slice();
      const want: number[] = [];
      for (let i = 0; i < 6; i++) {
        const { logits } = referenceForward(shape, weights, ids, { steering, projection });
        const next = argmaxRow(logits, V, ids.length - 1);
        want.push(next);
        ids.push(next);
      }
      const all = await sm.generate({ inputIds: PROMPT, maxNewTokens: 6, steering, projection, steerPromptPositions: 'all' });
      expect(all.tokenIds.length).toBeGreaterThan(0);
      expect(all.tokenIds.slice(0, want.length)).toEqual(want.slice(0, all.tokenIds.length));

      const unsteered = await sm.generate({ inputIds: PROMPT, maxNewTokens: 6, steering: null, capture: 'all' });
      const fresh = await sm.generate({ inputIds: PROMPT, maxNewTokens: 6, steering, projection, steerPromptPositions: 'new', capture: 'all' });
      const last = await sm.generate({ inputIds: PROMPT, maxNewTokens: 6, steering, projection, steerPromptPositions: 'last', capture: 'all' });
      const L1H = (L + 1) * H;
      // 'new': the first reply token comes from the unsteered last prompt position
      expect(fresh.tokenIds[0]).toBe(unsteered.tokenIds[0]);
      expect(maxAbsDiff(fresh.tokenResiduals!.subarray(0, L1H), unsteered.tokenResiduals!.subarray(0, L1H))).toBe(0);
      // 'last': the last prompt position is clamped
      const lastRow = last.tokenResiduals!.subarray(0, L1H);
      for (let k = 1; k <= L; k++) {
        let c = 0;
        for (let i = 0; i < H; i++) c += lastRow[k * H + i]! * u[i]!;
        expect(Math.abs(c - 4)).toBeLessThan(1e-5);
      }
      // 'new': the first generated token's position is clamped
      const second = fresh.tokenResiduals!.subarray(L1H, 2 * L1H);
      let c = 0;
      for (let i = 0; i < H; i++) c += second[L * H + i]! * u[i]!;
      expect(Math.abs(c - 4)).toBeLessThan(1e-5);
    });
  }

  it('refuses a projection row that is neither zero nor unit, naming the layer', async () => {
    const bad = new Float32Array(L * H);
    bad.set(unit(2).map((x) => 2 * x), 1 * H);
    await expect(sm.forward([PROMPT], { projection: bad })).rejects.toThrow(/projection row of layer 1 has norm 2.*expected 0 \(off\) or a unit vector/);
    await expect(sm.forward([PROMPT], { projection: new Float32Array(3) })).rejects.toThrow(/projection has 3 values; expected 256/);
  });
});

describe('self-check failure on the projection', () => {
  it('fails the load when the projection is ignored, naming what was wrong', async () => {
    const built = await buildTestModel(join(root, 'ignore'), { shape, topology: 'plain', seed: 5 });
    const real = SteerableModel.prototype.forward;
    const spy = vi.spyOn(SteerableModel.prototype, 'forward').mockImplementation(function (this: SteerableModel, ids, o = {}) {
      return real.call(this, ids, { steering: o.steering ?? null });
    });
    try {
      const err = await loadSteerableModel(built.dir, { dtype: 'fp32' }).catch((e) => e);
      expect(err).toBeInstanceOf(SelfCheckError);
      expect(err.message).toMatch(/projection row 2 = u should remove the component along u there \(ablation max error/);
      expect(err.result.injection_max_error).toBeLessThanOrEqual(err.result.tolerance); // the steering itself was fine
      expect(err.result.projection.ablation_max_error).toBeGreaterThan(err.result.tolerance);
    } finally {
      spy.mockRestore();
    }
  });
});
