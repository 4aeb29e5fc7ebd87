import { describe, expect, it } from 'vitest';
import { sumExpShifted } from '../../src/core/util/exp-sum.js';
import { mulberry32 } from '../../src/core/util/prng.js';

const ref = (row: ArrayLike<number>, shift: number) => {
  let s = 0;
  for (let j = 0; j < row.length; j++) s += Math.exp(row[j]! - shift);
  return s;
};

describe('sumExpShifted (the softmax denominator of reply_nll)', () => {
  it('each term is Math.exp to a few ulps, over the whole float64 range down to underflow', () => {
    let worst = 0;
    for (let i = 0; i <= 200000; i++) {
      const y = -745 * (i / 200000) ** 3; // dense near 0, reaching underflow
      const e = Math.exp(y);
      const got = sumExpShifted([y], 0);
      if (e > 1e-300) worst = Math.max(worst, Math.abs(got - e) / e);
      else expect(Math.abs(got - e)).toBeLessThan(1e-300);
    }
    expect(worst).toBeLessThan(1e-15);
    expect(sumExpShifted([0], 0)).toBe(1);
    expect(sumExpShifted([-746, -Infinity, -1e9], 0)).toBe(0);
  });

  it('a vocabulary-sized logits row sums as Math.exp does to 1e-14 relative; NaN stays NaN', () => {
    const rand = mulberry32(7);
    for (const spread of [0.5, 8, 40, 200]) {
      const row = Float32Array.from({ length: 49152 }, () => (rand() - 0.5) * spread);
      const max = row.reduce((m, x) => Math.max(m, x), -Infinity);
      const want = ref(row, max);
      expect(Math.abs(sumExpShifted(row, max) - want) / want).toBeLessThan(1e-14);
    }
    expect(sumExpShifted([0, Number.NaN], 0)).toBeNaN();
  });
});
