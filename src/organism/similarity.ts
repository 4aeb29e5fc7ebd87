/**
 * Character n-gram cosine similarity, the near-duplicate test of the organism's splits: two texts are near copies
 * when the cosine of their character n-gram count vectors (lower-cased, whitespace folded) reaches a threshold.
 * Word-level or prefix de-duplication misses reworded copies of a jailbreak framing ("DAN" with a new name, a
 * shuffled paragraph); n-gram counts catch them.
 *
 * The split uses it twice: framings are grouped into families by single linkage (any pair at or above the threshold
 * joins two groups), so no pair across two families is a near copy; and training requests that near-copy a
 * held-out request are dropped from training.
 */

/** n-gram length (characters) and threshold of every split in the organism's data. */
export const NGRAM_N = 4;
export const NEAR_DUPLICATE_COSINE = 0.5;

/** Lower case, whitespace runs folded to one space, trimmed: what the similarity sees. */
export function normaliseForSimilarity(text: string): string {
  return text.toLowerCase().replace(/\s+/g, ' ').trim();
}

/** A sparse n-gram count vector: ids sorted ascending, counts aligned, and its Euclidean norm. */
export interface NgramVector {
  ids: Int32Array;
  counts: Float64Array;
  norm: number;
}

/** Interns n-gram strings as integers so that vectors can be compared by merging sorted id arrays. */
export class NgramSpace {
  private readonly index = new Map<string, number>();
  constructor(readonly n: number = NGRAM_N) {
    if (!Number.isInteger(n) || n < 1) throw new Error(`NgramSpace: n must be a positive integer, got ${n}`);
  }

  vector(text: string): NgramVector {
    const t = normaliseForSimilarity(text);
    const counts = new Map<number, number>();
    // Texts shorter than n are one n-gram: the whole text.
    const last = Math.max(0, t.length - this.n);
    for (let i = 0; i <= last; i++) {
      const g = t.slice(i, i + this.n);
      let id = this.index.get(g);
      if (id === undefined) {
        id = this.index.size;
        this.index.set(g, id);
      }
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    const ids = Int32Array.from([...counts.keys()].sort((a, b) => a - b));
    const cs = Float64Array.from(ids, (id) => counts.get(id)!);
    let sq = 0;
    for (const c of cs) sq += c * c;
    return { ids, counts: cs, norm: Math.sqrt(sq) };
  }
}

/** Cosine of two vectors from the same NgramSpace (0 when either is empty). */
export function cosine(a: NgramVector, b: NgramVector): number {
  if (a.norm === 0 || b.norm === 0) return 0;
  let i = 0;
  let j = 0;
  let dot = 0;
  const ai = a.ids;
  const bi = b.ids;
  while (i < ai.length && j < bi.length) {
    const x = ai[i];
    const y = bi[j];
    if (x === y) {
      dot += a.counts[i] * b.counts[j];
      i++;
      j++;
    } else if (x < y) i++;
    else j++;
  }
  return dot / (a.norm * b.norm);
}

/** Cosine of two texts (a fresh space each call: for tests and one-off checks). */
export function textCosine(a: string, b: string, n = NGRAM_N): number {
  const s = new NgramSpace(n);
  return cosine(s.vector(a), s.vector(b));
}

/** Union-find over 0..n-1. */
export class DisjointSets {
  private readonly parent: Int32Array;
  constructor(n: number) {
    this.parent = Int32Array.from({ length: n }, (_, i) => i);
  }
  find(x: number): number {
    let r = x;
    while (this.parent[r] !== r) r = this.parent[r];
    while (this.parent[x] !== r) {
      const next = this.parent[x];
      this.parent[x] = r;
      x = next;
    }
    return r;
  }
  union(a: number, b: number): void {
    const ra = this.find(a);
    const rb = this.find(b);
    // The smaller root wins, so the grouping does not depend on the order of unions.
    if (ra !== rb) this.parent[Math.max(ra, rb)] = Math.min(ra, rb);
  }
}

/**
 * Single-linkage groups: every pair with cosine >= threshold ends up in one group. Returns the group of each item as
 * the index of its lowest member, plus the number of linking pairs found.
 */
export function nearDuplicateGroups(vectors: readonly NgramVector[], threshold = NEAR_DUPLICATE_COSINE): { group: number[]; links: number } {
  const sets = new DisjointSets(vectors.length);
  const index = new SimilarityIndex(vectors);
  let links = 0;
  vectors.forEach((v, a) => {
    for (const b of index.atOrAbove(v, threshold)) {
      if (b <= a) continue;
      links++;
      sets.union(a, b);
    }
  });
  return { group: vectors.map((_, i) => sets.find(i)), links };
}

export interface CrossSplitCheck {
  /** the largest cosine between any held-out item and any training item */
  max: number;
  /** the pair reaching it */
  maxPair: [number, number] | null;
  /** pairs at or above the threshold (must be 0 for a clean split) */
  pairsAtOrAbove: number;
  threshold: number;
}

/** The near-duplicate audit of a split: every held-out item against every training item. */
export function crossSplitCheck(heldOut: readonly NgramVector[], train: readonly NgramVector[], threshold = NEAR_DUPLICATE_COSINE): CrossSplitCheck {
  const index = new SimilarityIndex(train);
  let max = 0;
  let maxPair: [number, number] | null = null;
  let pairsAtOrAbove = 0;
  heldOut.forEach((v, h) => {
    const best = index.nearest(v);
    if (best.cosine > max) {
      max = best.cosine;
      maxPair = [h, best.item];
    }
    if (best.cosine >= threshold) pairsAtOrAbove += index.atOrAbove(v, threshold).length;
  });
  return { max, maxPair, pairsAtOrAbove, threshold };
}

/**
 * Exact cosines of a query against a fixed set of vectors through an inverted index (n-gram -> the vectors holding
 * it): only vectors sharing an n-gram are touched, far fewer operations than merging every pair.
 */
export class SimilarityIndex {
  private readonly postings = new Map<number, { items: Int32Array; counts: Float64Array }>();
  private readonly dots: Float64Array;
  private readonly touched: Int32Array;
  constructor(private readonly vectors: readonly NgramVector[]) {
    const lists = new Map<number, { items: number[]; counts: number[] }>();
    vectors.forEach((v, item) => {
      for (let k = 0; k < v.ids.length; k++) {
        let l = lists.get(v.ids[k]!);
        if (!l) lists.set(v.ids[k]!, (l = { items: [], counts: [] }));
        l.items.push(item);
        l.counts.push(v.counts[k]!);
      }
    });
    for (const [id, l] of lists) this.postings.set(id, { items: Int32Array.from(l.items), counts: Float64Array.from(l.counts) });
    this.dots = new Float64Array(vectors.length);
    this.touched = new Int32Array(vectors.length);
  }

  /** Calls visit(item, cosine) for every indexed vector sharing an n-gram with v (the others have cosine 0). */
  private each(v: NgramVector, visit: (item: number, cosine: number) => void): void {
    let nt = 0;
    for (let k = 0; k < v.ids.length; k++) {
      const p = this.postings.get(v.ids[k]!);
      if (!p) continue;
      const c = v.counts[k]!;
      for (let j = 0; j < p.items.length; j++) {
        const item = p.items[j]!;
        if (this.dots[item] === 0) this.touched[nt++] = item;
        this.dots[item] += c * p.counts[j]!;
      }
    }
    for (let t = 0; t < nt; t++) {
      const item = this.touched[t]!;
      visit(item, this.dots[item]! / (v.norm * this.vectors[item]!.norm));
      this.dots[item] = 0;
    }
  }

  /** The most similar indexed vector and its cosine (item -1, cosine 0 when nothing shares an n-gram). */
  nearest(v: NgramVector): { item: number; cosine: number } {
    let best = { item: -1, cosine: 0 };
    this.each(v, (item, cos) => {
      if (cos > best.cosine || (cos === best.cosine && item < best.item)) best = { item, cosine: cos };
    });
    return best;
  }

  /** The indexed vectors that reach `threshold` against v. */
  atOrAbove(v: NgramVector, threshold: number): number[] {
    const out: number[] = [];
    this.each(v, (item, cos) => {
      if (cos >= threshold) out.push(item);
    });
    return out;
  }
}
