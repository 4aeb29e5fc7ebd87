/** Which prompts the method's jobs use (src/core/method/prompt-sets.ts): the CLI and the LLM worker share these. */
import { describe, expect, test } from 'vitest';
import type { PromptRecord } from '../../src/core/data/types.js';
import { controllerPrompts, directionPrompts, pick } from '../../src/core/method/prompt-sets.js';

const set = (name: string, label: 'harmful' | 'benign', n: number, extra: PromptRecord[] = []) => ({
  name,
  prompts: [...Array.from({ length: n }, (_, i): PromptRecord => ({ id: `${name}${i}`, text: `${name} prompt ${i}`, label, meta: {} })), ...extra],
});

describe('prompt sets', () => {
  test('pick: n by seed, all when n is larger or absent, the same for the same seed', () => {
    const s = set('a', 'harmful', 10).prompts;
    expect(pick(s, 3, 0)).toEqual(pick(s, 3, 0));
    expect(pick(s, 3, 0)).not.toEqual(pick(s, 3, 1));
    expect(pick(s, 3, 0)).toEqual(pick(s, 5, 0).slice(0, 3));
    expect(pick(s, 99, 0)).toHaveLength(10);
    expect(pick(s, undefined, 0)).toEqual(s);
  });

  test('directionPrompts: disjoint train and validation per class, only the class label, seeded', () => {
    const mixed = set('h', 'harmful', 12, set('x', 'benign', 5).prompts);
    const r = directionPrompts(mixed, set('b', 'benign', 12), 6, 4, 0);
    expect(r.harmful.train).toHaveLength(6);
    expect(r.harmful.val).toHaveLength(4);
    expect(r.harmless.train).toHaveLength(6);
    expect(r.harmful.train.filter((t) => r.harmful.val.includes(t))).toEqual([]);
    expect([...r.harmful.train, ...r.harmful.val].every((t) => t.startsWith('h prompt'))).toBe(true);
    expect(directionPrompts(mixed, set('b', 'benign', 12), 6, 4, 0)).toEqual(r);
    // A small class still keeps one prompt for validation.
    const small = directionPrompts(set('h', 'harmful', 3), set('b', 'benign', 3), 6, 4, 0);
    expect([small.harmful.train.length, small.harmful.val.length]).toEqual([2, 1]);
    expect(() => directionPrompts(set('--harmful h', 'benign', 5), set('b', 'benign', 5), 6, 4, 0)).toThrow(/--harmful h: 0 harmful prompts; at least 2 are needed/);
    expect(() => directionPrompts(set('h', 'harmful', 5), set('b', 'benign', 5), 0, 4, 0)).toThrow(/training prompts per class must be a whole number >= 1/);
  });

  test('controllerPrompts: n per class, harmful first, labels 1 / 0', () => {
    const r = controllerPrompts(set('h', 'harmful', 10), set('b', 'benign', 3), 4, 0);
    expect(r.counts).toEqual({ harmful: 4, benign: 3 });
    expect(Array.from(r.labels)).toEqual([1, 1, 1, 1, 0, 0, 0]);
    expect(r.prompts.slice(0, 4).every((t) => t.startsWith('h prompt'))).toBe(true);
    expect(() => controllerPrompts(set('h', 'benign', 3), set('b', 'benign', 3), 4, 0)).toThrow(/h: 0 harmful prompts; at least 1 is needed/);
  });
});
