import { describe, expect, it } from 'vitest';
import { hash53, sample, split, type PromptRecord } from '../../src/core/data/index.js';

function prompts(n: number, harmfulEvery = 3): PromptRecord[] {
  return Array.from({ length: n }, (_, i) => ({
    id: `p${i}`,
    text: `prompt ${i}`,
    label: i % harmfulEvery === 0 ? 'harmful' : 'benign',
    meta: {},
  }));
}

function shuffled<T>(items: T[]): T[] {
  return [...items].reverse().sort((a, b) => (JSON.stringify(a).length % 7) - (JSON.stringify(b).length % 7));
}

describe('hash53', () => {
  it('is pinned: the same value on every platform (regression anchor)', () => {
    // cyrb53's published reference values ('' and 'a'); a change here silently changes every seeded sample.
    expect(hash53('')).toBe(3338908027751811);
    expect(hash53('a')).toBe(7929297801672961);
    expect(hash53('sample:1\u0000p0')).toBe(141897634094002);
    expect(hash53('a')).not.toBe(hash53('b'));
    expect(Number.isSafeInteger(hash53('x'.repeat(1000)))).toBe(true);
  });
});

describe('sample', () => {
  const all = prompts(500);

  it('same seed -> same ids in the same order, whatever the input order', () => {
    const a = sample(all, 50, 42).map((p) => p.id);
    expect(sample(all, 50, 42).map((p) => p.id)).toEqual(a);
    expect(sample(shuffled(all), 50, 42).map((p) => p.id)).toEqual(a);
    expect(new Set(a).size).toBe(50);
  });

  it('different seeds pick different prompts; numeric and string seeds are distinct keys', () => {
    const a = sample(all, 50, 1).map((p) => p.id);
    const b = sample(all, 50, 2).map((p) => p.id);
    expect(a).not.toEqual(b);
    const overlap = a.filter((id) => b.includes(id)).length;
    expect(overlap).toBeLessThan(25); // two 10 % samples overlap by ~5 on average
    expect(sample(all, 50, 'exp-A').map((p) => p.id)).not.toEqual(a);
  });

  it('is nested: the sample of k is the first k of the sample of n', () => {
    const big = sample(all, 100, 7).map((p) => p.id);
    expect(sample(all, 30, 7).map((p) => p.id)).toEqual(big.slice(0, 30));
  });

  it('rejects impossible requests and duplicate ids clearly', () => {
    expect(() => sample(all, 501, 0)).toThrow(/cannot sample 501 prompts from 500/);
    expect(() => sample(all, -1, 0)).toThrow(/whole number >= 0/);
    expect(() => sample(all, 2.5, 0)).toThrow(/whole number >= 0/);
    expect(() => sample(all, 1, NaN)).toThrow(/seed must be/);
    expect(() => sample([...all, all[0]!], 1, 0)).toThrow(/duplicate prompt id 'p0'/);
    expect(sample(all, 0, 0)).toEqual([]);
    expect(sample(all, 500, 0).length).toBe(500);
  });
});

describe('split', () => {
  const all = prompts(300);

  it('is deterministic, disjoint, complete, keeps input order and the label balance (stratified)', () => {
    const { train, test } = split(all, { fraction: 0.2, seed: 3 });
    expect(split(shuffled(all), { fraction: 0.2, seed: 3 }).test.map((p) => p.id).sort()).toEqual(test.map((p) => p.id).sort());
    expect(train.length + test.length).toBe(300);
    const testIds = new Set(test.map((p) => p.id));
    expect(train.some((p) => testIds.has(p.id))).toBe(false);
    expect(test.filter((p) => p.label === 'harmful').length).toBe(20); // 100 harmful * 0.2
    expect(test.filter((p) => p.label === 'benign').length).toBe(40); // 200 benign * 0.2
    const order = all.map((p) => p.id);
    expect(test.map((p) => order.indexOf(p.id))).toEqual([...test.map((p) => order.indexOf(p.id))].sort((a, b) => a - b));
    expect(split(all, { fraction: 0.2, seed: 4 }).test.map((p) => p.id)).not.toEqual(test.map((p) => p.id));
  });

  it('unstratified takes round(fraction * n) overall', () => {
    expect(split(all, { fraction: 0.25, seed: 1, stratify: false }).test.length).toBe(75);
  });

  it('rejects fractions outside (0, 1) and splits that leave a side empty', () => {
    expect(() => split(all, { fraction: 0, seed: 1 })).toThrow(/between 0 and 1/);
    expect(() => split(all, { fraction: 1, seed: 1 })).toThrow(/between 0 and 1/);
    expect(() => split(prompts(2), { fraction: 0.1, seed: 1 })).toThrow(/both must be non-empty/);
  });
});
