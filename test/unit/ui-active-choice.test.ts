/**
 * The remembered start choice per model (src/ui/lib/active-choice.ts): what a user picked with "Use" comes back,
 * per model and kind; anything malformed in storage is ignored (the model then starts with what it ships).
 */
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { rememberChoice, rememberedChoice, sameChoice } from '../../src/ui/lib/active-choice.js';

class MemoryStorage {
  private m = new Map<string, string>();
  getItem(k: string) { return this.m.get(k) ?? null; }
  setItem(k: string, v: string) { this.m.set(k, v); }
}

beforeEach(() => {
  (globalThis as { localStorage?: unknown }).localStorage = new MemoryStorage();
});
afterEach(() => {
  delete (globalThis as { localStorage?: unknown }).localStorage;
});

describe('start choice per model', () => {
  test('remembered per model and kind; null when never chosen', () => {
    expect(rememberedChoice('m1', 'direction')).toBeNull();
    rememberChoice('m1', 'direction', { source: 'saved', id: 'direction-abc' });
    rememberChoice('m1', 'controller', { source: 'none' });
    expect(rememberedChoice('m1', 'direction')).toEqual({ source: 'saved', id: 'direction-abc' });
    expect(rememberedChoice('m1', 'controller')).toEqual({ source: 'none' });
    expect(rememberedChoice('m2', 'direction')).toBeNull();
  });

  test('malformed storage is ignored', () => {
    const ls = (globalThis as unknown as { localStorage: MemoryStorage }).localStorage;
    ls.setItem('steerlab:start-with:direction:m1', '{not json');
    expect(rememberedChoice('m1', 'direction')).toBeNull();
    ls.setItem('steerlab:start-with:direction:m1', JSON.stringify({ source: 'saved' }));
    expect(rememberedChoice('m1', 'direction')).toBeNull();
    ls.setItem('steerlab:start-with:direction:m1', JSON.stringify({ source: 'elsewhere' }));
    expect(rememberedChoice('m1', 'direction')).toBeNull();
  });

  test('sameChoice compares saved items by id; an unsaved artefact is no item', () => {
    expect(sameChoice({ source: 'shipped' }, { source: 'shipped' })).toBe(true);
    expect(sameChoice({ source: 'saved', id: 'a' }, { source: 'saved', id: 'b' })).toBe(false);
    expect(sameChoice({ source: 'unsaved' }, { source: 'shipped' })).toBe(false);
    expect(sameChoice(null, { source: 'none' })).toBe(false);
  });
});
