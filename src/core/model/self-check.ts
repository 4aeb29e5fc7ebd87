/**
 * Proof, at load, that the patch does what the method needs: a vector put in steering row l appears exactly in the
 * residual after layer l, at every position, and nothing upstream moves. A model that fails is never handed out.
 *
 *   zero run Z = residual_stream with zero steering
 *   steered run R = residual_stream with row l = v (all other rows zero)
 *   R[l+1] - Z[l+1] = v at every position    (injection_max_error)
 *   R[0..l] = Z[0..l]                          (upstream_max_error)
 * Both are held to (relative tolerance of the stream dtype) x (size of the residual there): fp32 1e-5, fp16/bf16 1e-2.
 */
import type { ForwardResult, SelfCheckResult } from './types.js';

export interface SelfCheckTarget {
  numLayers: number;
  hiddenSize: number;
  streamDtype: 'float32' | 'float16' | 'bfloat16';
  forward(ids: number[][], opts: { steering: Float32Array | null }): Promise<ForwardResult>;
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
  const zero = await t.forward([ids], { steering: null });
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
  let upstream = 0;
  for (let k = 0; k < after; k++) {
    const e = Math.abs(R[k]! - Z[k]!);
    if (!(e <= upstream)) upstream = e;
  }
  const tolerance = RELATIVE_TOLERANCE[t.streamDtype] * Math.max(scale, maxAbs(v), 1);
  const ok = injection <= tolerance && upstream <= tolerance;
  return { ok, layer, injection_max_error: injection, upstream_max_error: upstream, tolerance, identity_max_logit_diff: null };
}

export function describeFailure(r: SelfCheckResult): string {
  return (
    `steering self-check failed at layer ${r.layer}: the vector put in steering row ${r.layer} should appear exactly in ` +
    `residual_stream[${r.layer + 1}] (max error ${r.injection_max_error.toExponential(3)}) with residual_stream[0..${r.layer}] ` +
    `unchanged (max change ${r.upstream_max_error.toExponential(3)}); tolerance ${r.tolerance.toExponential(3)}. ` +
    `The patched graph does not add the steering where the method needs it; refusing to use it.`
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
