/**
 * Numeric command-line options, parsed strictly and range-checked before anything is loaded, so that a value that
 * cannot give a meaningful run is refused with its flag, the value and the range (issue: `--alpha 1e38` gave an
 * empty reply, `--temperature 1e-45` ended generation at once, `--seed 1e300` acted as 0).
 *
 * Whole numbers are written in decimal digits only ("1e3", "1.0", "0x10" are refused); numbers may use any finite
 * JavaScript notation.
 */

import { STRENGTH_LIMIT } from '../core/steering/strength.js';

/** Seeds feed 32-bit generators (mulberry32): integers in [0, 2^32). */
export const SEED_LIMIT = 2 ** 32;

function fail(flag: string, v: string, expected: string): never {
  throw new Error(`--${flag} must be ${expected}, got "${v}"`);
}

/** A whole number in [min, max]. */
export function parseInteger(flag: string, v: string, min: number, max: number): number {
  const s = String(v).trim();
  const range = max === Infinity ? `>= ${min}` : `in ${min}..${max}`;
  if (!/^\d+$/.test(s)) fail(flag, v, `a whole number ${range}`);
  const n = Number(s);
  if (!Number.isSafeInteger(n) || n < min || n > max) fail(flag, v, `a whole number ${range}`);
  return n;
}

/** A finite number in [min, max] (either bound may be open: `minOpen` / `maxOpen`). */
export function parseReal(flag: string, v: string, min: number, max: number, o: { minOpen?: boolean; maxOpen?: boolean } = {}): number {
  const s = String(v).trim();
  const n = Number(s);
  const lo = `${o.minOpen ? '(' : '['}${min}`;
  const hi = `${max}${o.maxOpen ? ')' : ']'}`;
  const expected = max === Infinity ? `a number ${o.minOpen ? '>' : '>='} ${min}` : `a number in ${lo}, ${hi}`;
  if (s === '' || !Number.isFinite(n)) fail(flag, v, expected);
  if (n < min || n > max || (o.minOpen && n === min) || (o.maxOpen && n === max)) fail(flag, v, expected);
  return n;
}

/** Model shapes a command can be asked about (decoder layers, hidden size): far above any real model. */
export const MAX_LAYERS = 1024;
export const MAX_HIDDEN = 1 << 20;

/** Any finite number (a threshold where every value means something, e.g. -1e9 for "no filter"). */
export function parseFinite(flag: string, v: string): number {
  const s = String(v).trim();
  const n = Number(s);
  if (s === '' || !Number.isFinite(n)) fail(flag, v, 'a finite number');
  return n;
}

/** Sampling and split seeds. */
export function parseSeedOption(v: string, flag = 'seed'): number {
  return parseInteger(flag, v, 0, SEED_LIMIT - 1);
}

/** Counts of prompts, epochs, batch rows...: whole numbers >= 1 (at most `max`). */
export function parseCountOption(flag: string, v: string, max = 100_000_000): number {
  return parseInteger(flag, v, 1, max);
}

/** Tokens to generate: 1..1,000,000 (generation also stops at the model's context). */
export function parseTokenLimit(flag: string, v: string): number {
  return parseInteger(flag, v, 1, 1_000_000);
}

/** Patch strength alpha (and manual scale, ActAdd coefficient, layer weights): |x| <= STRENGTH_LIMIT (core). */
export function parseStrength(flag: string, v: string): number {
  return parseReal(flag, v, -STRENGTH_LIMIT, STRENGTH_LIMIT);
}

/** Sampling temperature: 0.01..100 (below, logits / T overflows; greedy is the way to get the top token). */
export function parseTemperature(v: string): number {
  return parseReal('temperature', v, 0.01, 100);
}

export function parseTopP(v: string): number {
  return parseReal('top-p', v, 0, 1, { minOpen: true });
}

/** top-k: 0 (off) .. 1,000,000. */
export function parseTopK(v: string): number {
  return parseInteger('top-k', v, 0, 1_000_000);
}
