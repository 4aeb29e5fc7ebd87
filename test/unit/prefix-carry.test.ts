import { describe, expect, it } from 'vitest';
import { PrefixCarry, prefixBytes } from '../../src/core/eval/prefix-carry.js';
import type { PromptPrefix } from '../../src/core/model/decode.js';

const prefix = (n: number): PromptPrefix => ({
  ids: Array.from({ length: n }, (_, i) => i),
  kv: { 'past_key_values.0.key': { type: 'float32', data: new Float32Array(n * 8), dims: [1, 2, n, 4] }, 'past_key_values.0.value': { type: 'float32', data: new Float32Array(n * 8), dims: [1, 2, n, 4] } },
});

describe('PrefixCarry (calibration prefill caches kept for the main loop)', () => {
  it('keeps prefixes while they fit the byte budget, frees them on drop', () => {
    expect(prefixBytes(prefix(3))).toBe(2 * 3 * 8 * 4);
    const carry = new PrefixCarry(2 * prefixBytes(prefix(3)));
    const [a, b, c] = [prefix(3), prefix(3), prefix(1)];
    expect(carry.offer('a', a)).toBe(true);
    expect(carry.offer('b', b)).toBe(true);
    expect(carry.offer('c', c)).toBe(false);
    expect(carry.get('c')).toBeUndefined();
    expect(carry.get('a')).toBe(a);
    expect(carry.bytes).toBe(2 * prefixBytes(a));
    carry.drop('a');
    carry.drop('a');
    expect(carry.get('a')).toBeUndefined();
    expect(carry.bytes).toBe(prefixBytes(b));
    expect(carry.offer('c', c)).toBe(true);
    expect(carry.size).toBe(2);
  });
  it('a budget of 0 keeps nothing; a bad budget is refused by name', () => {
    expect(new PrefixCarry(0).offer('a', prefix(1))).toBe(false);
    expect(() => new PrefixCarry(-1)).toThrow(/prefix carry budget must be a number of bytes >= 0, got -1/);
    expect(() => new PrefixCarry(Number.NaN)).toThrow(/got NaN/);
  });
});
