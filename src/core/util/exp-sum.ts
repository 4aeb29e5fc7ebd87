/**
 * sum_j exp(x_j - shift) in float64, for shift >= every x_j: the softmax denominator that reply_nll computes over the
 * whole vocabulary for every reply token. Math.exp costs 14-24 ns a call in V8, which made that sum the largest
 * JavaScript cost of an eval (about 1.2 s of a 12 s run over 32 SmolLM2-135M records of 24 tokens); this loop takes
 * about half that, and each term agrees with Math.exp to a few ulps (test/unit/exp-sum.test.ts).
 *
 * Per term: y = x - shift <= 0 is split as y = (k/64) ln2 + r with integer k and |r| <= ln2/128 (Cody and Waite: ln2
 * in two parts, so k ln2/64 is exact); exp(r) is its Taylor series to degree 6 (the first term left out is below
 * 4e-18 relative), and 2^(k/64) = 2^(k>>6) 2^((k&63)/64) comes from two tables. k is rounded with the 1.5 * 2^52
 * trick (round to nearest, no call). Terms below e^-745 are 0 in float64 and are skipped, as Math.exp gives them.
 */

const STEPS = 64;
const INV = STEPS / Math.LN2;
// ln 2 = LN2_HI + LN2_LO with the low 32 bits of LN2_HI zero, so k * LN2_HI / 64 is exact for |k| < 2^32
const LN2_HI = 6.93147180369123816490e-1 / STEPS;
const LN2_LO = 1.90821492927058770002e-10 / STEPS;
const ROUND = 6755399441055744.0;
const MIN_Y = -745.2;
const OFFSET = 1100;
/** 2^n for n in [-OFFSET, 0]. */
const POW2 = Float64Array.from({ length: OFFSET + 1 }, (_, i) => 2 ** (i - OFFSET));
/** 2^(i/64) for i in [0, 64). */
const FRAC = Float64Array.from({ length: STEPS }, (_, i) => 2 ** (i / STEPS));

export function sumExpShifted(row: ArrayLike<number>, shift: number): number {
  let s = 0;
  for (let j = 0; j < row.length; j++) {
    const y = row[j]! - shift;
    if (y < MIN_Y) continue;
    const kf = y * INV + ROUND - ROUND;
    const r = y - kf * LN2_HI - kf * LN2_LO;
    const k = kf | 0;
    const p = 1 + r * (1 + r * (0.5 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (1 / 720))))));
    s += p * FRAC[k & (STEPS - 1)]! * POW2[(k >> 6) + OFFSET]!;
  }
  return s;
}
