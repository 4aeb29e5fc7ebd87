/**
 * The patched graph's `projection` input: rows u_l [L*H] (or [batch*L*H]), each zero (off) or a unit vector; the
 * residual after layer l becomes x - (x.u_l)u_l + steering_l. Checked here for every path that feeds it (the
 * transformers.js instance patch and the decode engine), with no runtime import.
 */

/** Tolerance on the norm of a projection row: float32 normalisation lands within ~1e-7; 1e-3 allows stored fp16 rows. */
export const PROJECTION_NORM_TOLERANCE = 1e-3;

/**
 * Checks a projection matrix [L*H] or [batch*L*H]: finite, each row zero or a unit vector. Returns its steer_batch.
 * Exported so that callers building projections (policies, selection) fail with the same message before any pass.
 */
export function checkProjectionRows(m: Float32Array, numLayers: number, hiddenSize: number, batch: number): number {
  const lh = numLayers * hiddenSize;
  if (!(m instanceof Float32Array)) {
    throw new Error(`projection must be a Float32Array of ${lh} (= ${numLayers} layers x ${hiddenSize} hidden) values, got ${Object.prototype.toString.call(m)}`);
  }
  let sb: number;
  if (m.length === lh) sb = 1;
  else if (m.length === batch * lh) sb = batch;
  else {
    throw new Error(`projection has ${m.length} values; expected ${lh} (${numLayers} layers x ${hiddenSize} hidden)` + (batch > 1 ? ` or ${batch * lh} (batch ${batch} x layers x hidden)` : ''));
  }
  for (let r = 0; r < m.length / hiddenSize; r++) {
    let ss = 0;
    for (let h = 0; h < hiddenSize; h++) {
      const v = m[r * hiddenSize + h]!;
      if (!Number.isFinite(v)) throw new Error(`projection value ${r * hiddenSize + h} (layer ${r % numLayers}) is ${v}; expected a finite number`);
      ss += v * v;
    }
    const n = Math.sqrt(ss);
    if (n !== 0 && Math.abs(n - 1) > PROJECTION_NORM_TOLERANCE) {
      throw new Error(`projection row of layer ${r % numLayers}${sb > 1 ? ` (batch ${Math.floor(r / numLayers)})` : ''} has norm ${n}; expected 0 (off) or a unit vector`);
    }
  }
  return sb;
}
