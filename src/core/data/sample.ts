/**
 * Seeded sampling and held-out splits that depend only on (seed, id): every platform and every input order gives
 * the same ids in the same order, and the first k of a sample of n are the sample of k (growing n keeps earlier
 * picks). Each prompt gets the rank hash(seed, id); a sample is the n lowest ranks.
 */
import { DatasetError, type PromptRecord } from './types.js';

export type Seed = number | string;

/** 53-bit string hash (cyrb53, public domain) over UTF-16 code units: identical on every JS engine. */
export function hash53(text: string, salt = 0): number {
  let h1 = 0xdeadbeef ^ salt;
  let h2 = 0x41c6ce57 ^ salt;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507);
  h1 ^= Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507);
  h2 ^= Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (2097151 & h2) + (h1 >>> 0);
}

function checkSeed(seed: Seed): string {
  if (typeof seed === 'number' && Number.isFinite(seed)) return String(seed);
  if (typeof seed === 'string') return seed;
  throw new DatasetError(`seed must be a finite number or a string, got ${String(seed)}`);
}

function checkUniqueIds(prompts: readonly PromptRecord[]): void {
  const seen = new Set<string>();
  for (const p of prompts) {
    if (seen.has(p.id)) throw new DatasetError(`duplicate prompt id '${p.id}': sampling needs unique ids`);
    seen.add(p.id);
  }
}

/** Plain code-unit comparison: localeCompare would make the order depend on the platform's locale. */
function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function rankBy<T extends PromptRecord>(prompts: readonly T[], key: string): T[] {
  const ranked = prompts.map((p) => ({ p, r: hash53(`${key}\u0000${p.id}`) }));
  ranked.sort((a, b) => a.r - b.r || compareIds(a.p.id, b.p.id));
  return ranked.map((x) => x.p);
}

/**
 * n prompts chosen by seed, in rank order. Same seed and ids => same result; a different seed => a different pick.
 * Asking for more prompts than there are is an error (say Math.min(n, prompts.length) to take all).
 */
export function sample<T extends PromptRecord>(prompts: readonly T[], n: number, seed: Seed): T[] {
  const key = checkSeed(seed);
  if (!Number.isInteger(n) || n < 0) throw new DatasetError(`sample size must be a whole number >= 0, got ${n}`);
  if (n > prompts.length) throw new DatasetError(`cannot sample ${n} prompts from ${prompts.length}`);
  checkUniqueIds(prompts);
  return rankBy(prompts, `sample:${key}`).slice(0, n);
}

export interface SplitOptions {
  /** Share of prompts that go to `test`, strictly between 0 and 1. */
  fraction: number;
  seed: Seed;
  /** Split each label separately so both sides keep the label balance (default true). */
  stratify?: boolean;
}

/**
 * Deterministic held-out split: round(fraction * n) prompts (per label when stratified) go to `test`, the rest to
 * `train`; both keep the input order. Either side coming out empty is an error.
 */
export function split<T extends PromptRecord>(prompts: readonly T[], options: SplitOptions): { train: T[]; test: T[] } {
  const { fraction, stratify = true } = options;
  const key = checkSeed(options.seed);
  if (!(fraction > 0 && fraction < 1)) throw new DatasetError(`split fraction must be between 0 and 1 (exclusive), got ${fraction}`);
  checkUniqueIds(prompts);
  const groups = stratify ? [prompts.filter((p) => p.label === 'harmful'), prompts.filter((p) => p.label === 'benign')] : [prompts];
  const testIds = new Set<string>();
  for (const group of groups) {
    const k = Math.round(fraction * group.length);
    for (const p of rankBy(group, `split:${key}`).slice(0, k)) testIds.add(p.id);
  }
  const train = prompts.filter((p) => !testIds.has(p.id));
  const test = prompts.filter((p) => testIds.has(p.id));
  if (train.length === 0 || test.length === 0) {
    throw new DatasetError(
      `split of ${prompts.length} prompts with fraction ${fraction} leaves ${train.length} train / ${test.length} test: both must be non-empty`,
    );
  }
  return { train, test };
}

/**
 * The prompts of an eval run from one dataset: n chosen by seed (all of them when n is undefined or larger), in the
 * seeded order. The CLI (--n, --seed) and the lab (N, seed) choose with this one function.
 */
export function pick(prompts: readonly PromptRecord[], n: number | undefined, seed: number): PromptRecord[] {
  if (n === undefined) return [...prompts];
  return sample(prompts, Math.min(n, prompts.length), seed);
}
