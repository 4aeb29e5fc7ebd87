/**
 * Deterministic choices for the organism's data: a salted FNV-1a hash (hold-outs and samples that depend on the text
 * alone, so they never move between runs) and a seeded shuffle.
 */
import { mulberry32 } from '../core/onnx/testmodel/weights.js';

/** FNV-1a over UTF-16 code units, salted: stable hold-out and sampling decisions from the text alone. */
export function stableHash(salt: string, text: string): number {
  let h = 0x811c9dc5;
  const s = `${salt}\u0000${text}`;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** Deterministic shuffle (Fisher-Yates with mulberry32). */
export function shuffled<T>(items: readonly T[], seed: number): T[] {
  const out = items.slice();
  const rand = mulberry32(seed);
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}
