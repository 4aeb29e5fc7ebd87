/**
 * The load-time self-check refuses a model whose steering does not land where the method needs it: a graph that
 * adds the row one layer late, or ignores it, must fail the load with an error naming the layer and the error.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTestModel, type BuiltModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { loadSteerableModel, runSelfCheck, SelfCheckError, SteerableModel, probeIds } from '../../src/core/model/index.js';

const shape = SHAPE_PRESETS.tiny!;
const L = shape.numLayers;
const H = shape.hiddenSize;
const root = mkdtempSync(join(tmpdir(), 'steerlab-model-check-'));
let built: BuiltModel;

beforeAll(async () => {
  built = await buildTestModel(join(root, 'plain'), { shape, topology: 'plain', seed: 5 });
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Moves every steering row one layer down, as a patch at the wrong place would. */
function shifted(m: Float32Array | null | undefined): Float32Array | null | undefined {
  if (!m) return m;
  const out = new Float32Array(m.length);
  out.set(m.subarray(0, (L - 1) * H), H);
  return out;
}

describe('self-check', () => {
  it('passes on a correct model and reports its numbers', async () => {
    const sm = await loadSteerableModel(built.dir, { dtype: 'fp32' });
    try {
      const again = await runSelfCheck({ numLayers: L, hiddenSize: H, streamDtype: 'float32', forward: (i, o) => sm.forward(i, o) }, probeIds(shape.vocabSize));
      expect(again).toMatchObject({ ok: true, layer: 2, upstream_max_error: 0, identity_max_logit_diff: null });
      expect(again.injection_max_error).toBeLessThan(1e-6);
    } finally {
      await sm.dispose();
    }
  });

  it('fails the load, naming the layer, when steering lands one layer late', async () => {
    const real = SteerableModel.prototype.forward;
    const spy = vi.spyOn(SteerableModel.prototype, 'forward').mockImplementation(function (this: SteerableModel, ids, o = {}) {
      return real.call(this, ids, { ...o, steering: shifted(o.steering) ?? null });
    });
    try {
      const err = await loadSteerableModel(built.dir, { dtype: 'fp32' }).catch((e) => e);
      expect(err).toBeInstanceOf(SelfCheckError);
      expect(err.code).toBe('SELF_CHECK_FAILED');
      expect(err.message).toContain('steering self-check failed at layer 2');
      expect(err.result.ok).toBe(false);
      expect(err.result.injection_max_error).toBeGreaterThan(err.result.tolerance);
      expect(err.message).toContain(err.result.injection_max_error.toExponential(3));
    } finally {
      spy.mockRestore();
    }
  });

  it('fails when steering is ignored, and passes with selfCheck off (the caller asked for it)', async () => {
    const real = SteerableModel.prototype.forward;
    const spy = vi.spyOn(SteerableModel.prototype, 'forward').mockImplementation(function (this: SteerableModel, ids) {
      return real.call(this, ids, { steering: null });
    });
    try {
      await expect(loadSteerableModel(built.dir, { dtype: 'fp32' })).rejects.toThrow(/self-check failed at layer 2/);
      const unchecked = await loadSteerableModel(built.dir, { dtype: 'fp32', selfCheck: false });
      expect(unchecked.selfCheck).toBeNull();
      await unchecked.dispose();
    } finally {
      spy.mockRestore();
    }
  });
});
