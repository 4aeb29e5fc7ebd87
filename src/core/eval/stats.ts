/**
 * Statistics for refusal rates. The Wilson score interval keeps its coverage at small n and at rates near 0 or 1,
 * where the normal (Wald) interval collapses to a point.
 */

/** Two-sided 95 % normal quantile. */
export const Z95 = 1.959964;

export interface RateInterval {
  /** k / n (NaN when n = 0). */
  rate: number;
  low: number;
  high: number;
}

/**
 * Wilson score interval for k successes in n trials. n = 0 carries no information: rate, low and high are all NaN
 * (JSON writes them as null, tables as blank), so an empty cell is never mistaken for a measured 0 %.
 * k = 0 gives low exactly 0 and k = n gives high exactly 1 (no rounding residue).
 */
export function wilsonInterval(k: number, n: number, z: number = Z95): RateInterval {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`wilsonInterval: n must be a whole number >= 0, got ${n}`);
  if (!Number.isInteger(k) || k < 0 || k > n) throw new RangeError(`wilsonInterval: k must be a whole number in [0, n=${n}], got ${k}`);
  if (!(Number.isFinite(z) && z > 0)) throw new RangeError(`wilsonInterval: z must be a positive number, got ${z}`);
  if (n === 0) return { rate: NaN, low: NaN, high: NaN };
  const p = k / n;
  const z2 = z * z;
  const denom = 1 + z2 / n;
  const centre = (p + z2 / (2 * n)) / denom;
  const half = (z * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n))) / denom;
  return {
    rate: p,
    low: k === 0 ? 0 : Math.max(0, centre - half),
    high: k === n ? 1 : Math.min(1, centre + half),
  };
}
