/**
 * Steering settings (mode, layer range, positions, alpha scale): what each mode hands the graph, checked against the
 * hand computation of the patch x -> x - (x.u)u + s on random residuals; validation names the bad field; the
 * settings survive JSON.
 */
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_STEERING_SETTINGS,
  applySteeringSettings,
  settingsRecord,
  validateSteeringSettings,
  type SteeringSettings,
} from '../../src/core/steering/modes.js';
import { steeringMatrix } from '../../src/core/steering/policies.js';

const L = 4;
const H = 8;
const shape = { numLayers: L, hiddenSize: H };
const d = (() => {
  const v = Float32Array.from({ length: H }, (_, i) => Math.cos(i * 0.9 + 0.1));
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
})();
/** manual policy rows: c_l d with c = [1, -2, 0.5, 3] */
const C = [1, -2, 0.5, 3];
const rows = steeringMatrix({ kind: 'manual', scale: 1, layerWeights: C, alpha: 1 }, { ...shape, direction: d })!;

/** The graph's operation on one residual x [H] at layer l. */
function patched(x: Float32Array, l: number, p: { steering: Float32Array | null; projection: Float32Array | null }): Float32Array {
  const u = p.projection?.subarray(l * H, (l + 1) * H);
  const s = p.steering?.subarray(l * H, (l + 1) * H);
  const c = u ? x.reduce((a, v, i) => a + v * u[i]!, 0) : 0;
  return x.map((v, i) => v - (u ? c * u[i]! : 0) + (s ? s[i]! : 0));
}
const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((s, v, i) => s + v * b[i]!, 0);
const residual = (seed: number) => Float32Array.from({ length: H }, (_, i) => 3 * Math.sin(seed * 7.1 + i * 1.9));
const settings = (over: Partial<SteeringSettings>): SteeringSettings => ({ ...DEFAULT_STEERING_SETTINGS, ...over });

describe('applySteeringSettings', () => {
  it('add: the rows as they are, no projection (the paper)', () => {
    const p = applySteeringSettings(rows, DEFAULT_STEERING_SETTINGS, shape);
    expect(p.projection).toBeNull();
    expect(Array.from(p.steering!)).toEqual(Array.from(rows));
    expect(p.steering).not.toBe(rows); // a copy: the policy's matrix is never changed
  });

  it('clamp: the component along d becomes c_l at every layer, the rest of x is kept', () => {
    const p = applySteeringSettings(rows, settings({ mode: 'clamp' }), shape);
    for (let l = 0; l < L; l++) {
      const x = residual(l);
      const y = patched(x, l, p);
      expect(dot(y, d)).toBeCloseTo(C[l]!, 5);
      // the orthogonal part is untouched
      const xo = x.map((v, i) => v - dot(x, d) * d[i]!);
      const yo = y.map((v, i) => v - dot(y, d) * d[i]!);
      for (let i = 0; i < H; i++) expect(yo[i]).toBeCloseTo(xo[i]!, 5);
    }
  });

  it('ablate: the component along d is removed, nothing is added', () => {
    const p = applySteeringSettings(rows, settings({ mode: 'ablate' }), shape);
    expect(p.steering).toBeNull();
    for (let l = 0; l < L; l++) expect(dot(patched(residual(l + 10), l, p), d)).toBeCloseTo(0, 5);
  });

  it('layer range: rows outside are zero and get no projection, in every mode', () => {
    for (const mode of ['add', 'clamp', 'ablate'] as const) {
      const p = applySteeringSettings(rows, settings({ mode, layers: { first: 1, last: 2 } }), shape);
      for (const l of [0, 3]) {
        const x = residual(l);
        expect(Array.from(patched(x, l, p))).toEqual(Array.from(x));
      }
      const x = residual(1);
      expect(Array.from(patched(x, 1, p))).not.toEqual(Array.from(x));
    }
  });

  it('relative alpha: row l is scaled by the layer norm n_l', () => {
    const norms = [10, 20, 30, 40];
    const s = settings({ alpha: { scale: 'relative', calibration: { norms, position: 'last-prompt-token', set: 'harmless-train', n: 8, model_id: 'm' } } });
    const p = applySteeringSettings(rows, s, shape);
    for (let l = 0; l < L; l++) for (let i = 0; i < H; i++) expect(p.steering![l * H + i]).toBeCloseTo(rows[l * H + i]! * norms[l]!, 4);
    // clamp with relative alpha: the component becomes c_l * n_l
    const pc = applySteeringSettings(rows, { ...s, mode: 'clamp' }, shape);
    for (let l = 0; l < L; l++) expect(dot(patched(residual(l), l, pc), d)).toBeCloseTo(C[l]! * norms[l]!, 3);
  });

  it('no patch stays no patch; a zero row is left alone', () => {
    expect(applySteeringSettings(null, settings({ mode: 'clamp' }), shape)).toEqual({ steering: null, projection: null });
    const zeroAt1 = steeringMatrix({ kind: 'manual', scale: 1, layerWeights: [1, 0, 1, 1], alpha: 1 }, { ...shape, direction: d })!;
    const p = applySteeringSettings(zeroAt1, settings({ mode: 'ablate' }), shape);
    expect(Array.from(p.projection!.subarray(H, 2 * H)).every((v) => v === 0)).toBe(true);
    expect(Math.hypot(...p.projection!.subarray(0, H))).toBeCloseTo(1, 6);
  });
});

describe('validateSteeringSettings', () => {
  it('accepts the defaults and round-trips through JSON', () => {
    const s = settings({ mode: 'clamp', layers: { first: 0, last: 2 }, positions: 'new' });
    expect(validateSteeringSettings(JSON.parse(JSON.stringify(settingsRecord(s))), shape)).toEqual(s);
  });

  it('names the bad field', () => {
    expect(() => validateSteeringSettings({ ...DEFAULT_STEERING_SETTINGS, mode: 'boost' }, shape)).toThrow(/steering mode must be one of add, clamp, ablate, got "boost"/);
    expect(() => validateSteeringSettings({ ...DEFAULT_STEERING_SETTINGS, positions: 'first' }, shape)).toThrow(/steered positions must be one of last, all, new/);
    expect(() => validateSteeringSettings({ ...DEFAULT_STEERING_SETTINGS, layers: { first: 0, last: 4 } }, shape)).toThrow(/layers.last must be a decoder layer in 0..3, got 4/);
    expect(() => validateSteeringSettings({ ...DEFAULT_STEERING_SETTINGS, layers: { first: 3, last: 1 } }, shape)).toThrow(/first 3 is after last 1/);
    const rel = (norms: unknown) => ({ ...DEFAULT_STEERING_SETTINGS, alpha: { scale: 'relative', calibration: { norms, position: 'last-prompt-token', set: 's', n: 1, model_id: 'm' } } });
    expect(() => validateSteeringSettings(rel([1, 2]), shape)).toThrow(/calibration.norms must hold 4 values/);
    expect(() => validateSteeringSettings(rel([1, 2, 0, 4]), shape)).toThrow(/norm of layer 2 is 0; expected a positive number/);
    expect(() => validateSteeringSettings(rel([1, 2, 3, 4]), shape, 'actadd')).toThrow(/relative alpha does not apply to the 'actadd' policy/);
    expect(() => validateSteeringSettings({ ...DEFAULT_STEERING_SETTINGS, alpha: { scale: 'relative' } }, shape)).toThrow(/needs its calibration/);
  });
});
