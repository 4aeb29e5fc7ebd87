/**
 * Small vector maths on Float32Array shared by directions, policies and CAST. Accumulation is in float64 (JS numbers)
 * so that means over hundreds of prompts and dot products over hidden sizes of thousands stay accurate.
 */

export type Vector = ArrayLike<number>;

export function dot(a: Vector, b: Vector): number {
  if (a.length !== b.length) throw new RangeError(`dot: vector lengths differ (${a.length} vs ${b.length})`);
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

export function norm(a: Vector): number {
  return Math.sqrt(dot(a, a));
}

/** Unit vector along `a`. A zero or non-finite vector has no direction: that is an error, named by `what`. */
export function normalize(a: Vector, what = 'vector'): Float32Array {
  const n = norm(a);
  if (!Number.isFinite(n)) throw new RangeError(`${what} has non-finite entries; cannot normalise it`);
  if (n === 0 || n < 1e-30) throw new RangeError(`${what} is zero; it has no direction to normalise`);
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] / n;
  return out;
}

/** Cosine similarity; 0 when either vector is zero (no direction, no similarity). */
export function cosine(a: Vector, b: Vector): number {
  const na = norm(a);
  const nb = norm(b);
  if (na === 0 || nb === 0) return 0;
  return dot(a, b) / (na * nb);
}

/** Index of the first non-finite entry, or -1. */
export function firstNonFinite(a: Vector): number {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return i;
  return -1;
}

/**
 * Check a vector has the right length and only finite values; returns it typed as Float32Array (copying if it was
 * another array type). `what` names it in errors.
 */
export function checkVector(a: Vector, length: number, what: string): Float32Array {
  if (a === null || a === undefined || typeof a.length !== 'number') throw new TypeError(`${what} must be an array of numbers`);
  if (a.length !== length) throw new RangeError(`${what} has length ${a.length}, expected ${length}`);
  const bad = firstNonFinite(a);
  if (bad >= 0) throw new RangeError(`${what}[${bad}] is ${a[bad]}, expected a finite number`);
  return a instanceof Float32Array ? a : Float32Array.from(a);
}
