/**
 * Seeded randomness for the controller: weight init and batch shuffling must be identical run to run, so they never
 * touch Math.random. mulberry32 is small and fast; separate streams are derived from one user seed by hashing, so
 * changing e.g. the epoch count never changes the initial weights.
 */

/** 32-bit integer hash (splitmix32 finaliser): spreads nearby seeds/stream ids apart. */
function mix32(x: number): number {
  x = (x + 0x9e3779b9) >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b) >>> 0;
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

/** Named random streams, so each consumer has its own sequence. */
export type RandomStream = 'init' | 'shuffle' | 'split' | 'synthetic';
const STREAM_ID: Record<RandomStream, number> = { init: 1, shuffle: 2, split: 3, synthetic: 4 };

export class SeededRandom {
  private state: number;

  constructor(seed: number, stream: RandomStream) {
    if (!Number.isSafeInteger(seed)) throw new Error(`seed must be an integer, got ${seed}`);
    // Fold the high bits in so seeds above 2^32 still differ.
    const lo = seed >>> 0;
    const hi = Math.floor(seed / 4294967296) >>> 0;
    this.state = mix32(mix32(lo ^ mix32(hi)) ^ STREAM_ID[stream]);
  }

  /** Uniform in [0, 1) (mulberry32). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Uniform in [-bound, bound). */
  symmetric(bound: number): number {
    return (this.next() * 2 - 1) * bound;
  }

  /** In-place Fisher-Yates shuffle. */
  shuffle<T extends { length: number; [i: number]: number }>(a: T): T {
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      const t = a[i];
      a[i] = a[j];
      a[j] = t;
    }
    return a;
  }
}
