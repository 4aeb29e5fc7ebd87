/**
 * Sampling as transformers.js logits processors. transformers.js 4.3.1 applies temperature but has no top-p (its
 * TopPLogitsWarper is an empty shell) and samples from a process-wide random state. So a generation that samples
 * runs transformers.js in greedy mode with these processors: temperature, top-k, top-p (nucleus), then a draw
 * from this generation's own seeded stream that leaves only the drawn token finite, which greedy then picks.
 * The same seed therefore gives the same tokens, whatever else runs in the process.
 */
import type { SamplingOptions } from './types.js';
import { mulberry32 } from '../util/prng.js';

/** A transformers.js logits processor: (input ids per row, logits [B, V]) -> logits (modified in place). */
export type LogitsProcessorFn = (inputIds: bigint[][], logits: { data: Float32Array; dims: number[] }) => { data: Float32Array; dims: number[] };


export function validateSampling(s: SamplingOptions): Required<Omit<SamplingOptions, 'seed'>> & { seed: number } {
  const temperature = s.temperature ?? 1;
  const topP = s.topP ?? 1;
  const topK = s.topK ?? 0;
  if (!(temperature > 0) || !Number.isFinite(temperature)) throw new Error(`sampling.temperature must be a number > 0, got ${s.temperature}`);
  if (!(topP > 0 && topP <= 1)) throw new Error(`sampling.topP must be in (0, 1], got ${s.topP}`);
  if (!Number.isInteger(topK) || topK < 0) throw new Error(`sampling.topK must be an integer >= 0 (0 = off), got ${s.topK}`);
  const seed = s.seed ?? Math.floor(Math.random() * 2 ** 32);
  if (!Number.isInteger(seed)) throw new Error(`sampling.seed must be an integer, got ${s.seed}`);
  return { temperature, topP, topK, seed };
}

/** Keeps, in each row, the smallest set of tokens whose probabilities reach topP (at least one). */
export function topPFilter(row: Float32Array, topP: number): void {
  if (topP >= 1) return;
  const n = row.length;
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (row[i]! > max) max = row[i]!;
  const probs = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = row[i] === -Infinity ? 0 : Math.exp(row[i]! - max);
    probs[i] = e;
    sum += e;
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => probs[b]! - probs[a]!);
  let cum = 0;
  let keep = 0;
  while (keep < n) {
    cum += probs[order[keep]!]! / sum;
    keep++;
    if (cum >= topP) break;
  }
  for (let j = keep; j < n; j++) row[order[j]!] = -Infinity;
}

/** Keeps the k largest logits of a row (ties at the boundary are kept). */
export function topKFilter(row: Float32Array, k: number): void {
  if (k <= 0 || k >= row.length) return;
  const sorted = Float32Array.from(row).sort();
  const threshold = sorted[row.length - k]!;
  for (let i = 0; i < row.length; i++) if (row[i]! < threshold) row[i] = -Infinity;
}

/** Draws one index from softmax(row) with `rand`. */
export function drawFrom(row: Float32Array, rand: () => number): number {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i]! > max) max = row[i]!;
  let sum = 0;
  const w = new Float64Array(row.length);
  for (let i = 0; i < row.length; i++) {
    w[i] = row[i] === -Infinity ? 0 : Math.exp(row[i]! - max);
    sum += w[i]!;
  }
  let x = rand() * sum;
  for (let i = 0; i < w.length; i++) {
    x -= w[i]!;
    if (x < 0 && w[i]! > 0) return i;
  }
  for (let i = w.length - 1; i >= 0; i--) if (w[i]! > 0) return i; // floating-point guard
  return 0;
}

/**
 * One sampled row's draw: temperature, top-k, top-p, then a draw from this generation's own seeded stream. Modifies
 * `row` (logits of one position) in place and returns the drawn token id. The decode engine calls it per row; the
 * transformers.js processor below calls it for each row of its batch.
 */
export function rowSampler(s: SamplingOptions): (row: Float32Array) => number {
  const o = validateSampling(s);
  const rand = mulberry32(o.seed);
  return (row) => {
    if (o.temperature !== 1) for (let i = 0; i < row.length; i++) row[i] = row[i]! / o.temperature;
    topKFilter(row, o.topK);
    topPFilter(row, o.topP);
    return drawFrom(row, rand);
  };
}

/** Index of the first largest value: transformers.js's greedy choice (its `max` keeps the first of equal maxima). */
export function argmax(row: Float32Array): number {
  let best = row[0]!;
  let at = 0;
  for (let i = 1; i < row.length; i++) {
    if (row[i]! > best) {
      best = row[i]!;
      at = i;
    }
  }
  return at;
}

/**
 * The processor chain for one sampled generation (run transformers.js greedy after it). Each batch row draws from
 * its own stream with the same seed, so a row of a batch samples what a batch-1 generation with that seed would
 * (the base and steered rows of a compare are paired draws).
 */
export function samplingProcessors(s: SamplingOptions): LogitsProcessorFn[] {
  validateSampling(s);
  const draws: ((row: Float32Array) => number)[] = [];
  return [
    (_ids, logits) => {
      const [B, V] = logits.dims as [number, number];
      for (let b = 0; b < B; b++) {
        const row = logits.data.subarray(b * V, (b + 1) * V);
        const pick = (draws[b] ??= rowSampler(s))(row);
        row.fill(-Infinity);
        row[pick] = 0;
      }
      return logits;
    },
  ];
}
