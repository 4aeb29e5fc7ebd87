/**
 * AdamW (decoupled weight decay, Loshchilov & Hutter) with global-norm gradient clipping, written to match
 * torch.optim.AdamW + torch.nn.utils.clip_grad_norm_ step for step (the paper's code uses both). tfjs ships Adam but
 * no AdamW, and a per-op tfjs update over the ~6M first-layer weights costs ~12 elementwise kernels per step; a fused
 * JS loop does it in one pass. The first-layer gradient is never materialised: for a batch of B rows it is the rank-B
 * product x^T dz, recomputed element by element inside the update loop, and its norm comes from the two B x B Gram
 * matrices (||x^T dz||_F^2 = sum_ab (x x^T)_ab (dz dz^T)_ab), so a step touches each weight exactly once.
 */

export interface AdamWConfig {
  learningRate: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
}

/** Moment estimates of one parameter array. */
interface Moments {
  m: Float32Array;
  v: Float32Array;
}

export class AdamW {
  private step = 0;
  private readonly moments = new Map<string, Moments>();

  constructor(readonly config: AdamWConfig) {
    for (const k of ['learningRate', 'weightDecay', 'eps'] as const) {
      if (!(Number.isFinite(config[k]) && config[k] >= 0)) throw new Error(`AdamW: ${k} must be a finite number >= 0, got ${config[k]}`);
    }
    for (const k of ['beta1', 'beta2'] as const) {
      if (!(config[k] >= 0 && config[k] < 1)) throw new Error(`AdamW: ${k} must be in [0, 1), got ${config[k]}`);
    }
  }

  /** Starts a step: bumps the step count used for bias correction (call once per batch, before the updates). */
  beginStep(): void {
    this.step++;
  }

  /** Update `param` in place with a dense gradient `grad` multiplied by `gradScale` (the clipping factor). */
  updateDense(name: string, param: Float32Array, grad: Float32Array, gradScale: number): void {
    const { m, v } = this.momentsFor(name, param.length);
    // Coefficients hoisted into locals: V8 keeps the loop in registers (about 4x faster than reading fields).
    const { b1, b2, eps, decay, stepSize, invBc2Sqrt } = this.coefficients();
    const a1 = 1 - b1;
    const a2 = 1 - b2;
    for (let i = 0; i < param.length; i++) {
      const g = grad[i] * gradScale;
      const mi = m[i] + a1 * (g - m[i]);
      const vi = b2 * v[i] + a2 * g * g;
      m[i] = mi;
      v[i] = vi;
      param[i] = param[i] * decay - (stepSize * mi) / (Math.sqrt(vi) * invBc2Sqrt + eps);
    }
  }

  /**
   * Update `param` ([rows, cols] row-major) whose gradient is sum_b a[b, i] * d[b, j] for b < batch, times gradScale:
   * a is [batch, rows], d is [batch, cols], both row-major.
   */
  updateOuterProduct(
    name: string,
    param: Float32Array,
    a: Float32Array,
    d: Float32Array,
    batch: number,
    rows: number,
    cols: number,
    gradScale: number,
  ): void {
    if (param.length !== rows * cols) throw new Error(`AdamW: ${name} has ${param.length} values, expected ${rows} x ${cols}`);
    const { m, v } = this.momentsFor(name, param.length);
    const { b1, b2, eps, decay, stepSize, invBc2Sqrt } = this.coefficients();
    const a1 = 1 - b1;
    const a2 = 1 - b2;
    // Rows of d, pre-scaled by gradScale, as separate arrays; batch sizes up to 4 get an unrolled inner loop.
    const rowsOfD: Float32Array[] = [];
    for (let b = 0; b < batch; b++) rowsOfD.push(d.subarray(b * cols, (b + 1) * cols));
    const ai = new Float64Array(batch);
    const zero = new Float32Array(cols);
    const d0 = rowsOfD[0] ?? zero;
    const d1 = rowsOfD[1] ?? zero;
    const d2 = rowsOfD[2] ?? zero;
    const d3 = rowsOfD[3] ?? zero;
    for (let i = 0; i < rows; i++) {
      for (let b = 0; b < batch; b++) ai[b] = a[b * rows + i] * gradScale;
      const base = i * cols;
      if (batch <= 4) {
        const x0 = batch > 0 ? ai[0] : 0;
        const x1 = batch > 1 ? ai[1] : 0;
        const x2 = batch > 2 ? ai[2] : 0;
        const x3 = batch > 3 ? ai[3] : 0;
        for (let j = 0; j < cols; j++) {
          const g = x0 * d0[j] + x1 * d1[j] + x2 * d2[j] + x3 * d3[j];
          const k = base + j;
          const mi = m[k] + a1 * (g - m[k]);
          const vi = b2 * v[k] + a2 * g * g;
          m[k] = mi;
          v[k] = vi;
          param[k] = param[k] * decay - (stepSize * mi) / (Math.sqrt(vi) * invBc2Sqrt + eps);
        }
      } else {
        for (let j = 0; j < cols; j++) {
          let g = 0;
          for (let b = 0; b < batch; b++) g += ai[b] * rowsOfD[b][j];
          const k = base + j;
          const mi = m[k] + a1 * (g - m[k]);
          const vi = b2 * v[k] + a2 * g * g;
          m[k] = mi;
          v[k] = vi;
          param[k] = param[k] * decay - (stepSize * mi) / (Math.sqrt(vi) * invBc2Sqrt + eps);
        }
      }
    }
  }

  private coefficients() {
    if (this.step === 0) throw new Error('AdamW: beginStep() must be called before an update');
    const { learningRate: lr, weightDecay, beta1: b1, beta2: b2, eps } = this.config;
    return {
      b1,
      b2,
      eps,
      decay: 1 - lr * weightDecay,
      stepSize: lr / (1 - b1 ** this.step),
      invBc2Sqrt: 1 / Math.sqrt(1 - b2 ** this.step),
    };
  }

  private momentsFor(name: string, length: number): Moments {
    let mo = this.moments.get(name);
    if (!mo) {
      mo = { m: new Float32Array(length), v: new Float32Array(length) };
      this.moments.set(name, mo);
    }
    if (mo.m.length !== length) throw new Error(`AdamW: parameter ${name} changed size from ${mo.m.length} to ${length}`);
    return mo;
  }
}

/** ||a^T d||_F^2 for a [batch, rows], d [batch, cols], via Gram matrices (float64); never negative. */
export function outerProductSquaredNorm(a: Float32Array, d: Float32Array, batch: number, rows: number, cols: number): number {
  let total = 0;
  for (let p = 0; p < batch; p++) {
    for (let q = p; q < batch; q++) {
      let ga = 0;
      for (let i = 0; i < rows; i++) ga += a[p * rows + i] * a[q * rows + i];
      let gd = 0;
      for (let j = 0; j < cols; j++) gd += d[p * cols + j] * d[q * cols + j];
      total += (p === q ? 1 : 2) * ga * gd;
    }
  }
  return Math.max(0, total);
}

export function squaredNorm(x: Float32Array): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return s;
}

/** torch.nn.utils.clip_grad_norm_: factor min(1, maxNorm / (norm + 1e-6)); maxNorm <= 0 disables clipping. */
export function clipFactor(totalNorm: number, maxNorm: number): number {
  if (!(maxNorm > 0)) return 1;
  const coef = maxNorm / (totalNorm + 1e-6);
  return coef < 1 ? coef : 1;
}
