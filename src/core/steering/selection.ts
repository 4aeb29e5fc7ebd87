/**
 * Choosing one diff-in-means candidate by model behaviour (Arditi et al. 2024, select_direction.py), plus the two
 * measurements it needs from next-token logits: the refusal score and the KL divergence.
 *
 * The model runs belong to the caller: `evaluate(candidate)` must
 *   (a) ablate candidate.direction everywhere and return the mean refusal score on harmful validation prompts,
 *   (b) add candidate.vector (raw, coefficient +1) at the candidate's layer on harmless validation prompts and
 *       return the mean refusal score there,
 *   (c) return the mean KL(base || ablated) of harmless next-token distributions under ablation.
 * Filters, as in Arditi's filter_fn: any NaN score; layer >= floor(numLayers * (1 - pruneLayerFraction)); kl >
 * klThreshold (0.1); steering score < inducedRefusalThreshold (0: adding the direction must make refusal more likely
 * than not). Among the survivors the lowest ablation refusal score wins.
 */
import type { DirectionCandidate } from './diff-in-means.js';

export interface CandidateScores {
  /** Mean refusal score on harmful validation prompts with the direction ablated (lower is better). */
  ablationRefusalScore: number;
  /** Mean refusal score on harmless prompts with the raw vector added at its layer (must induce refusal). */
  steeringRefusalScore: number;
  /** Mean KL divergence of harmless next-token distributions, base vs ablated. */
  kl: number;
}

export type CandidateFilter = 'nan-score' | 'late-layer' | 'kl' | 'no-induced-refusal';

export interface RankedCandidate {
  layer: number;
  position: number;
  /** Null when the candidate was not evaluated (pruned by layer before running the model). */
  scores: CandidateScores | null;
  /** Why it was dropped; empty when it passed every filter. */
  filteredBy: CandidateFilter[];
}

export interface SelectionOptions {
  /**
   * Decoder layers of the model (L), for the late-layer filter. Default: the largest candidate layer, which is L
   * when the candidates span residual indices 0..L (a full capture).
   */
  numLayers?: number;
  klThreshold?: number;
  inducedRefusalThreshold?: number;
  pruneLayerFraction?: number;
  /** Evaluate late-layer candidates too (their scores then show in the table); default false saves model runs. */
  evaluatePruned?: boolean;
  /** Called after each evaluation (done, total) so the UI can show progress. */
  onProgress?: (done: number, total: number) => void;
}

export interface SelectionResult {
  /** The winning candidate, or null when none passed the filters (see `ranking` for why). */
  selected: DirectionCandidate | null;
  /** Every candidate: survivors by ascending ablation score first, then the filtered ones in the same order. */
  ranking: RankedCandidate[];
}

/**
 * Arditi's selection. `evaluate` may be synchronous or return a promise (it usually runs the model). Candidate layers
 * are residual indices (see diff-in-means.ts): "add at its layer" means at the input of decoder layer k, which is
 * steering row k - 1 (layerBefore in src/core/model/layer-index.ts); index 0, the embedding output, has no steering row, so an
 * evaluate() built on the steering matrix should return NaN scores for it (the candidate is then filtered).
 */
export async function selectDirection(
  candidates: readonly DirectionCandidate[],
  evaluate: (candidate: DirectionCandidate) => CandidateScores | Promise<CandidateScores>,
  options: SelectionOptions = {},
): Promise<SelectionResult> {
  if (candidates.length === 0) throw new RangeError('selectDirection: no candidates to choose from');
  const numLayers = options.numLayers ?? Math.max(...candidates.map((c) => c.layer));
  if (!Number.isSafeInteger(numLayers) || numLayers <= 0) throw new RangeError(`numLayers must be a positive integer, got ${numLayers}`);
  const klThreshold = options.klThreshold ?? 0.1;
  const induced = options.inducedRefusalThreshold ?? 0;
  const prune = options.pruneLayerFraction ?? 0.2;
  if (!Number.isFinite(klThreshold) || klThreshold < 0) throw new RangeError(`klThreshold must be a finite number >= 0, got ${klThreshold}`);
  if (!Number.isFinite(induced)) throw new RangeError(`inducedRefusalThreshold must be finite, got ${induced}`);
  if (!(prune >= 0 && prune <= 1)) throw new RangeError(`pruneLayerFraction must be in [0, 1], got ${prune}`);
  const firstPrunedLayer = Math.floor(numLayers * (1 - prune));

  const rows: { cand: DirectionCandidate; row: RankedCandidate }[] = [];
  const toEvaluate = candidates.filter((c) => options.evaluatePruned || c.layer < firstPrunedLayer).length;
  let done = 0;
  for (const cand of candidates) {
    const filteredBy: CandidateFilter[] = [];
    const late = cand.layer >= firstPrunedLayer;
    let scores: CandidateScores | null = null;
    if (!late || options.evaluatePruned) {
      const s = await evaluate(cand);
      if (s === null || typeof s !== 'object') throw new TypeError(`evaluate() returned ${String(s)} for layer ${cand.layer} position ${cand.position}; expected { ablationRefusalScore, steeringRefusalScore, kl }`);
      scores = { ablationRefusalScore: Number(s.ablationRefusalScore), steeringRefusalScore: Number(s.steeringRefusalScore), kl: Number(s.kl) };
      options.onProgress?.(++done, toEvaluate);
    }
    if (scores && (Number.isNaN(scores.ablationRefusalScore) || Number.isNaN(scores.steeringRefusalScore) || Number.isNaN(scores.kl))) {
      filteredBy.push('nan-score');
    }
    if (late) filteredBy.push('late-layer');
    if (scores && scores.kl > klThreshold) filteredBy.push('kl');
    if (scores && scores.steeringRefusalScore < induced) filteredBy.push('no-induced-refusal');
    rows.push({ cand, row: { layer: cand.layer, position: cand.position, scores, filteredBy } });
  }
  const key = (r: RankedCandidate) => {
    const v = r.scores?.ablationRefusalScore;
    return v === undefined || Number.isNaN(v) ? Infinity : v;
  };
  // Stable sort: survivors first, then by ablation score; ties keep candidate order.
  rows.sort((a, b) => Number(a.row.filteredBy.length > 0) - Number(b.row.filteredBy.length > 0) || key(a.row) - key(b.row));
  const winner = rows.find((r) => r.row.filteredBy.length === 0);
  return { selected: winner ? winner.cand : null, ranking: rows.map((r) => r.row) };
}

/** log-sum-exp over the given indices (all indices when `ids` is undefined). */
function logSumExp(logits: ArrayLike<number>, ids?: Iterable<number>): number {
  let max = -Infinity;
  const it = ids ? [...ids] : null;
  const n = it ? it.length : logits.length;
  for (let j = 0; j < n; j++) max = Math.max(max, logits[it ? it[j] : j]);
  if (max === -Infinity) return -Infinity;
  let s = 0;
  for (let j = 0; j < n; j++) s += Math.exp(logits[it ? it[j] : j] - max);
  return max + Math.log(s);
}

function checkLogits(logits: ArrayLike<number>, what: string): void {
  if (!logits || logits.length === 0) throw new RangeError(`${what}: logits are empty`);
  for (let j = 0; j < logits.length; j++) {
    if (Number.isNaN(logits[j]) || logits[j] === Infinity) throw new RangeError(`${what}: logit ${j} is ${logits[j]}, expected a finite number or -Infinity`);
  }
}

/**
 * Arditi's refusal score for one next-token distribution: log p - log(1 - p), where p is the total probability of
 * the refusal tokens (e.g. the id of "I"). Computed in log space, so it stays finite where p rounds to 0 or 1.
 */
export function refusalScore(logits: ArrayLike<number>, refusalTokenIds: readonly number[]): number {
  checkLogits(logits, 'refusalScore');
  if (refusalTokenIds.length === 0) throw new RangeError('refusalScore: at least one refusal token id is needed');
  const ids = new Set<number>();
  for (const id of refusalTokenIds) {
    if (!Number.isSafeInteger(id) || id < 0 || id >= logits.length) throw new RangeError(`refusal token id ${id} is outside the vocabulary [0, ${logits.length})`);
    ids.add(id);
  }
  const others: number[] = [];
  for (let j = 0; j < logits.length; j++) if (!ids.has(j)) others.push(j);
  if (others.length === 0) return Infinity;
  return logSumExp(logits, ids) - logSumExp(logits, others);
}

/** Mean refusal score over a batch of logits rows [batch, vocab]. */
export function meanRefusalScore(logits: Float32Array, vocabSize: number, refusalTokenIds: readonly number[]): number {
  if (!Number.isSafeInteger(vocabSize) || vocabSize <= 0 || logits.length % vocabSize !== 0 || logits.length === 0) {
    throw new RangeError(`logits length ${logits.length} is not a non-empty multiple of vocab size ${vocabSize}`);
  }
  const rows = logits.length / vocabSize;
  let s = 0;
  for (let r = 0; r < rows; r++) s += refusalScore(logits.subarray(r * vocabSize, (r + 1) * vocabSize), refusalTokenIds);
  return s / rows;
}

/** KL(P || Q) of two next-token distributions given as logits: base model P, intervened model Q. */
export function klDivergence(baseLogits: ArrayLike<number>, otherLogits: ArrayLike<number>): number {
  if (baseLogits.length !== otherLogits.length) throw new RangeError(`klDivergence: vocab sizes differ (${baseLogits.length} vs ${otherLogits.length})`);
  checkLogits(baseLogits, 'klDivergence (base)');
  checkLogits(otherLogits, 'klDivergence (other)');
  const lp = logSumExp(baseLogits);
  const lq = logSumExp(otherLogits);
  let kl = 0;
  for (let j = 0; j < baseLogits.length; j++) {
    const logP = baseLogits[j] - lp;
    if (logP === -Infinity) continue;
    kl += Math.exp(logP) * (logP - (otherLogits[j] - lq));
  }
  return Math.max(0, kl);
}
