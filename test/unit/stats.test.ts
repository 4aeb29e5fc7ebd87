import { describe, expect, it } from 'vitest';
import { wilsonInterval, Z95 } from '../../src/core/eval/stats.js';

// Reference values computed independently (Python, closed-form Wilson with z = 1.959964).
describe('wilsonInterval', () => {
  it('k = 0 of 10 -> [0, 0.2775]; low is exactly 0', () => {
    const w = wilsonInterval(0, 10);
    expect(w.rate).toBe(0);
    expect(w.low).toBe(0);
    expect(w.high).toBeCloseTo(0.2775328, 6);
  });

  it('k = 5 of 10 -> [0.2366, 0.7634]', () => {
    const w = wilsonInterval(5, 10);
    expect(w.low).toBeCloseTo(0.2365931, 6);
    expect(w.high).toBeCloseTo(0.7634069, 6);
  });

  it('k = 81 of 263 -> [0.2553, 0.3662]', () => {
    const w = wilsonInterval(81, 263);
    expect(w.rate).toBeCloseTo(81 / 263, 12);
    expect(w.low).toBeCloseTo(0.2552885, 6);
    expect(w.high).toBeCloseTo(0.3662096, 6);
  });

  it('k = n gives high exactly 1 (no 0.9999999999999999) and mirrors k = 0', () => {
    const w = wilsonInterval(10, 10);
    expect(w.high).toBe(1);
    expect(w.low).toBeCloseTo(1 - 0.2775328, 6);
    expect(wilsonInterval(1, 1)).toEqual({ rate: 1, low: expect.closeTo(0.2065493, 6), high: 1 });
  });

  it('ToxicChat-sized example: 362 of 2853 -> [0.1152, 0.1396]', () => {
    const w = wilsonInterval(362, 2853);
    expect(w.low).toBeCloseTo(0.1151702, 6);
    expect(w.high).toBeCloseTo(0.1396012, 6);
  });

  it('n = 0 carries no information: NaN rate and bounds', () => {
    const w = wilsonInterval(0, 0);
    expect(Number.isNaN(w.rate) && Number.isNaN(w.low) && Number.isNaN(w.high)).toBe(true);
  });

  it('a larger z widens the interval; the default is the 95 % quantile', () => {
    expect(Z95).toBe(1.959964);
    const w95 = wilsonInterval(30, 100);
    const w99 = wilsonInterval(30, 100, 2.575829);
    expect(w99.low).toBeLessThan(w95.low);
    expect(w99.high).toBeGreaterThan(w95.high);
    expect(wilsonInterval(30, 100, Z95)).toEqual(w95);
  });

  it('rejects impossible counts and bad z with clear errors', () => {
    expect(() => wilsonInterval(11, 10)).toThrow(/k must be a whole number in \[0, n=10\], got 11/);
    expect(() => wilsonInterval(-1, 10)).toThrow(/k must be/);
    expect(() => wilsonInterval(1.5, 10)).toThrow(/k must be/);
    expect(() => wilsonInterval(0, -1)).toThrow(/n must be a whole number >= 0/);
    expect(() => wilsonInterval(1, 10, 0)).toThrow(/z must be a positive number/);
    expect(() => wilsonInterval(1, 10, NaN)).toThrow(/z must be/);
  });
});
