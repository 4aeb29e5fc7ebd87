/**
 * Proof, at load, that the patch does what the method needs: a vector put in steering row l appears exactly in the
 * residual after layer l, at every position, and nothing upstream moves; and the projection input removes or clamps
 * the component along a unit vector there. A model that fails is never handed out.
 *
 *   zero run Z = residual_stream with zero steering and zero projection
 *   steered run R = residual_stream with steering row l = v (all other rows zero)
 *   R[l+1] - Z[l+1] = v at every position    (injection_max_error)
 *   R[0..l] = Z[0..l]                          (upstream_max_error)
 *   ablation run A: projection row l = u (unit), steering zero       A[l+1] . u = 0          (ablation_max_error)
 *   clamping run C: projection row l = u, steering row l = t u       C[l+1] . u = t          (clamp_max_error)
 *   and elementwise A, C = Z - (Z.u)u + t u at l+1 (projection_max_error); A, C [0..l] = Z (upstream_max_error)
 * All are held to (relative tolerance of the stream dtype) x (size of the residual there): fp32 1e-5, fp16/bf16 1e-2.
 */
import type { ForwardResult, SelfCheckResult } from './types.js';

export interface SelfCheckTarget {
  numLayers: number;
  hiddenSize: number;
  streamDtype: 'float32' | 'float16' | 'bfloat16';
  forward(ids: number[][], opts: { steering: Float32Array | null; projection?: Float32Array | null }): Promise<ForwardResult>;
}

export class SelfCheckError extends Error {
  readonly code = 'SELF_CHECK_FAILED';
  constructor(message: string, readonly result: SelfCheckResult) {
    super(message);
    this.name = 'SelfCheckError';
  }
}

export const RELATIVE_TOLERANCE = { float32: 1e-5, float16: 1e-2, bfloat16: 1e-2 } as const;

/** A short probe: distinct ids spread over the vocabulary, away from id 0 (often a special token). */
export function probeIds(vocabSize: number, length = 6): number[] {
  const n = Math.min(length, Math.max(1, vocabSize - 1));
  return Array.from({ length: n }, (_, i) => 1 + ((i * 7919 + 13) % Math.max(1, vocabSize - 1)));
}

function maxAbs(a: Float32Array, from = 0, to = a.length): number {
  let m = 0;
  for (let i = from; i < to; i++) {
    const v = Math.abs(a[i]!);
    if (!(v <= m)) m = v; // NaN propagates
  }
  return m;
}

export async function runSelfCheck(t: SelfCheckTarget, ids: number[]): Promise<SelfCheckResult> {
  const L = t.numLayers;
  const H = t.hiddenSize;
  const layer = Math.floor(L / 2);
  const zero = await t.forward([ids], { steering: null, projection: null });
  const S = ids.length;
  const block = S * H; // one layer slice [S, H] of residuals [1, L+1, S, H]
  const Z = zero.residuals.data;
  const after = (layer + 1) * block;
  const scale = Math.max(maxAbs(Z, after, after + block), 1e-3);
  // A vector of the residual's own size, so fp16 rounding is tested at a realistic magnitude.
  const v = new Float32Array(H);
  for (let i = 0; i < H; i++) v[i] = 0.5 * scale * Math.sin(0.731 * i + 0.4);
  const steering = new Float32Array(L * H);
  steering.set(v, layer * H);
  const R = (await t.forward([ids], { steering })).residuals.data;

  let injection = 0;
  for (let p = 0; p < S; p++) {
    for (let i = 0; i < H; i++) {
      const k = after + p * H + i;
      const e = Math.abs(R[k]! - Z[k]! - v[i]!);
      if (!(e <= injection)) injection = e;
    }
  }
  let upstream = upstreamChange(R, Z, after);
  const tolerance = RELATIVE_TOLERANCE[t.streamDtype] * Math.max(scale, maxAbs(v), 1);

  // Projection: u leans on the residual's own mean there (so the removed component is large, not a rounding-sized
  // accident of a random direction), and clamping moves it to the opposite side.
  const u = probeUnitVector(Z, after, S, H);
  const target = -0.5 * scale;
  const projection = new Float32Array(L * H);
  projection.set(u, layer * H);
  const clampRow = new Float32Array(L * H);
  for (let i = 0; i < H; i++) clampRow[layer * H + i] = target * u[i]!;
  const runs = [
    { t: 0, res: (await t.forward([ids], { steering: null, projection })).residuals.data },
    { t: target, res: (await t.forward([ids], { steering: clampRow, projection })).residuals.data },
  ];
  const errors = runs.map(({ t: tt, res }) => {
    upstream = Math.max(upstream, upstreamChange(res, Z, after));
    let component = 0;
    let elementwise = 0;
    for (let p = 0; p < S; p++) {
      const at = after + p * H;
      const c0 = dot(Z, at, u);
      const c1 = dot(res, at, u);
      if (!(Math.abs(c1 - tt) <= component)) component = Math.abs(c1 - tt);
      for (let i = 0; i < H; i++) {
        const e = Math.abs(res[at + i]! - (Z[at + i]! - c0 * u[i]! + tt * u[i]!));
        if (!(e <= elementwise)) elementwise = e;
      }
    }
    return { component, elementwise };
  });
  const projectionResult = {
    ablation_max_error: errors[0]!.component,
    clamp_max_error: errors[1]!.component,
    clamp_target: target,
    projection_max_error: Math.max(errors[0]!.elementwise, errors[1]!.elementwise),
    removed_component: Math.max(...Array.from({ length: S }, (_, p) => Math.abs(dot(Z, after + p * H, u)))),
  };
  const ok =
    injection <= tolerance &&
    upstream <= tolerance &&
    projectionResult.ablation_max_error <= tolerance &&
    projectionResult.clamp_max_error <= tolerance &&
    projectionResult.projection_max_error <= tolerance;
  return {
    ok,
    layer,
    injection_max_error: injection,
    upstream_max_error: upstream,
    tolerance,
    identity_max_logit_diff: null,
    projection: projectionResult,
  };
}

function upstreamChange(R: Float32Array, Z: Float32Array, to: number): number {
  let m = 0;
  for (let k = 0; k < to; k++) {
    const e = Math.abs(R[k]! - Z[k]!);
    if (!(e <= m)) m = e;
  }
  return m;
}

/** sum_i a[at + i] * u[i], in float64. */
function dot(a: Float32Array, at: number, u: Float32Array): number {
  let s = 0;
  for (let i = 0; i < u.length; i++) s += a[at + i]! * u[i]!;
  return s;
}

/** normalize(mean over positions of the residual block + a fixed pattern): a unit vector with a large component. */
function probeUnitVector(Z: Float32Array, at: number, S: number, H: number): Float32Array {
  const u = new Float64Array(H);
  for (let p = 0; p < S; p++) for (let i = 0; i < H; i++) u[i]! += Z[at + p * H + i]! / S;
  const m = Math.max(...Array.from(u, Math.abs), 1e-3);
  for (let i = 0; i < H; i++) u[i]! += 0.3 * m * Math.cos(1.37 * i + 0.2);
  const n = Math.hypot(...u);
  return Float32Array.from(u, (x) => x / n);
}

export function describeFailure(r: SelfCheckResult): string {
  const p = r.projection;
  return (
    `steering self-check failed at layer ${r.layer}: the vector put in steering row ${r.layer} should appear exactly in ` +
    `residual_stream[${r.layer + 1}] (max error ${r.injection_max_error.toExponential(3)}) with residual_stream[0..${r.layer}] ` +
    `unchanged (max change ${r.upstream_max_error.toExponential(3)})` +
    (p
      ? `, and projection row ${r.layer} = u should remove the component along u there (ablation max error ` +
        `${p.ablation_max_error.toExponential(3)}) or clamp it to ${p.clamp_target.toExponential(3)} (max error ` +
        `${p.clamp_max_error.toExponential(3)}; elementwise ${p.projection_max_error.toExponential(3)})`
      : '') +
    `; tolerance ${r.tolerance.toExponential(3)}. The patched graph does not steer where the method needs it; refusing to use it.`
  );
}

/** max |a - b| over two logits arrays of the same shape. */
export function maxLogitDiff(a: ForwardResult['logits'], b: ForwardResult['logits']): number {
  if (a.data.length !== b.data.length) throw new Error(`logits shapes differ: [${a.dims}] vs [${b.dims}]`);
  let m = 0;
  for (let i = 0; i < a.data.length; i++) {
    const e = Math.abs(a.data[i]! - b.data[i]!);
    if (!(e <= m)) m = e;
  }
  return m;
}
