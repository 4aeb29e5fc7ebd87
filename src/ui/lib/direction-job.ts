/**
 * The Direction tab's computations, model calls injected:
 *   - collect the unsteered last-prompt-token residuals [n, L+1, H] of harmful and harmless prompts (progress,
 *     cancel);
 *   - the embedding direction (paper Eq. 7, input-embedding rows read from residual index 0 of a forward pass over
 *     each phrase) or the difference-in-means direction at the most separating layer (Arditi et al.);
 *   - the per-layer separation of the two classes along it (what the plot shows), and a CAST condition fitted on the
 *     same activations (condition vector by PCA, layer and threshold by best F1).
 */
import { residualIndex } from '../../core/model/layer-index.js';
import {
  ANSWER_PHRASES, REFUSAL_PHRASES, candidateAt, conditionVectorPCA, castSimilarity, diffInMeans, diffInMeansDirectionFile,
  embeddingDirection, embeddingDirectionFile, fitConditionLayer, layerSeparation, residualsFromArray,
  type CastCondition, type DirectionFile, type LayerSeparation,
} from '../../core/steering/index.js';

export interface Activations {
  /** [n, L+1, H]: unsteered residuals of the last prompt token. */
  data: Float32Array;
  count: number;
}

/** Observes each prompt in turn; stops (rejects with an AbortError) when the signal fires. */
export async function collectActivations(
  prompts: readonly string[],
  observe: (text: string) => Promise<Float32Array>,
  shape: { numLayers: number; hiddenSize: number },
  onProgress?: (done: number, total: number) => void,
  signal?: AbortSignal,
): Promise<Activations> {
  const stride = (shape.numLayers + 1) * shape.hiddenSize;
  const data = new Float32Array(prompts.length * stride);
  for (let i = 0; i < prompts.length; i++) {
    if (signal?.aborted) throw new DOMException('cancelled', 'AbortError');
    const r = await observe(prompts[i]!);
    if (r.length !== stride) throw new RangeError(`prompt ${i}: residuals have ${r.length} values, expected (L+1) x H = ${stride}`);
    data.set(r, i * stride);
    onProgress?.(i + 1, prompts.length);
  }
  return { data, count: prompts.length };
}

function residuals(a: Activations, L: number, H: number) {
  if (a.count === 0) throw new RangeError('no prompts were observed');
  return residualsFromArray(a.data, [a.count, L + 1, 1, H]);
}

export interface DirectionResult {
  file: DirectionFile;
  /** Per residual index 0..L: separation of harmful vs harmless along the direction. */
  separation: LayerSeparation[];
  cast: CastCondition | null;
  /** Chosen residual index (diff-in-means) or null (embedding). */
  chosenResidualIndex: number | null;
}

export interface DirectionJobOptions {
  modelId: string;
  numLayers: number;
  hiddenSize: number;
  datasets: { harmful: string; harmless: string };
  seed: number;
}

/**
 * Difference in means at the residual index (1..L, never the last 20 % of layers, as Arditi's filter) where the
 * classes separate most along each layer's own diff-in-means direction.
 */
export function diffInMeansDirection(harmful: Activations, harmless: Activations, o: DirectionJobOptions): DirectionResult {
  const { numLayers: L, hiddenSize: H } = o;
  const hr = residuals(harmful, L, H);
  const br = residuals(harmless, L, H);
  const c = diffInMeans(hr, br);
  const perLayerDirs = new Float32Array((L + 1) * H);
  for (let k = 0; k <= L; k++) perLayerDirs.set(c.vectors.subarray(k * H, (k + 1) * H), k * H);
  const hasNonZero = (k: number) => perLayerDirs.subarray(k * H, (k + 1) * H).some((x) => x !== 0);
  // Zero rows (e.g. identical classes) cannot be normalised: score them 0 instead of failing the whole plot.
  const safeDirs = perLayerDirs.slice();
  for (let k = 0; k <= L; k++) if (!hasNonZero(k)) safeDirs[k * H] = 1;
  const sepAll = layerSeparation(hr, br, safeDirs);
  const lastAllowed = Math.max(1, Math.floor(L * 0.8));
  let best = -1;
  for (let k = 1; k <= lastAllowed; k++) {
    if (!hasNonZero(k)) continue;
    if (best < 0 || Math.abs(sepAll[k]!.separation) > Math.abs(sepAll[best]!.separation)) best = k;
  }
  if (best < 0) throw new RangeError('harmful and harmless activations are identical at every layer: no direction to find');
  const selected = candidateAt(c, residualIndex(best), 0);
  const file = diffInMeansDirectionFile(selected, (k) => c.vectors.slice(k * H, (k + 1) * H), {
    modelId: o.modelId, hiddenSize: H, numLayers: L, datasets: { harmful: o.datasets.harmful, harmless: o.datasets.harmless },
    sampleCounts: { harmful: harmful.count, harmless: harmless.count }, seed: o.seed, note: `layer chosen by largest class separation (residual index ${best})`,
  });
  return { file, separation: layerSeparation(hr, br, file.direction), cast: fitCast(harmful, harmless, L, H), chosenResidualIndex: best };
}

/** Most ids per embedding forward pass (well inside any model's context). */
const EMBED_CHUNK = 128;

/**
 * Embedding direction: `embed(ids)` returns the input embedding rows of the ids ([ids.length, H]), which the lab
 * reads from residual index 0 of ONE forward pass over the ids side by side (the embedding output does not depend on
 * position in the RoPE models this lab targets, so a made-up sequence is fine). Harmful/harmless activations
 * (optional) give the plot.
 */
export async function embeddingDirectionResult(
  tokenize: (text: string) => Promise<number[]>,
  embed: (ids: number[]) => Promise<Float32Array>,
  o: DirectionJobOptions,
  harmful: Activations | null,
  harmless: Activations | null,
): Promise<DirectionResult> {
  const { numLayers: L, hiddenSize: H } = o;
  const refusal: number[][] = [];
  const answer: number[][] = [];
  for (const p of REFUSAL_PHRASES) refusal.push(await tokenize(p));
  for (const p of ANSWER_PHRASES) answer.push(await tokenize(p));
  const unique = [...new Set([...refusal, ...answer].flat())];
  const rows = new Map<number, Float32Array>();
  for (let i = 0; i < unique.length; i += EMBED_CHUNK) {
    const ids = unique.slice(i, i + EMBED_CHUNK);
    const emb = await embed(ids);
    if (emb.length !== ids.length * H) throw new RangeError(`embedding rows: ${emb.length} values for ${ids.length} ids, expected ${ids.length} x ${H}`);
    ids.forEach((id, k) => rows.set(id, emb.slice(k * H, (k + 1) * H)));
  }
  const vocabSize = Math.max(...rows.keys()) + 1;
  const r = embeddingDirection({ vocabSize, hiddenSize: H, row: (id) => rows.get(id)! }, refusal, answer);
  const file = embeddingDirectionFile(r.direction, 'input-embedding', {
    modelId: o.modelId, hiddenSize: H, numLayers: L, seed: o.seed,
    note: `input-embedding rows read from residual index 0; ${r.refusalTokenCount} refusal and ${r.answerTokenCount} answer tokens`,
    ...(harmful && harmless ? { datasets: { harmful: o.datasets.harmful, harmless: o.datasets.harmless }, sampleCounts: { harmful: harmful.count, harmless: harmless.count } } : {}),
  });
  let separation: LayerSeparation[] = [];
  let cast: CastCondition | null = null;
  if (harmful && harmless) {
    separation = layerSeparation(residuals(harmful, L, H), residuals(harmless, L, H), file.direction);
    cast = fitCast(harmful, harmless, L, H);
  }
  return { file, separation, cast, chosenResidualIndex: null };
}

/** CAST condition: per residual index 1..L, a PCA condition vector on paired prompts; best-F1 layer and threshold. */
export function fitCast(harmful: Activations, harmless: Activations, L: number, H: number): CastCondition | null {
  const pairs = Math.min(harmful.count, harmless.count);
  if (pairs < 2) return null;
  const stride = (L + 1) * H;
  const row = (a: Activations, i: number, k: number) => a.data.subarray(i * stride + k * H, i * stride + (k + 1) * H);
  const labels = [...Array.from({ length: harmful.count }, () => true), ...Array.from({ length: harmless.count }, () => false)];
  const byLayer: { layer: number; similarities: number[]; vector: Float32Array }[] = [];
  for (let k = 1; k <= L; k++) {
    try {
      const pos = Array.from({ length: pairs }, (_, i) => row(harmful, i, k));
      const neg = Array.from({ length: pairs }, (_, i) => row(harmless, i, k));
      const { vector } = conditionVectorPCA(pos, neg);
      const sims = [
        ...Array.from({ length: harmful.count }, (_, i) => castSimilarity(row(harmful, i, k), vector)),
        ...Array.from({ length: harmless.count }, (_, i) => castSimilarity(row(harmless, i, k), vector)),
      ];
      byLayer.push({ layer: k, similarities: sims, vector });
    } catch {
      // A layer where every pair is identical has no condition vector; it simply cannot be chosen.
    }
  }
  if (byLayer.length === 0) return null;
  const fit = fitConditionLayer(byLayer, labels);
  const chosen = byLayer.find((b) => b.layer === fit.layer)!;
  return { vector: chosen.vector, layer: residualIndex(fit.layer), threshold: fit.threshold, activeWhen: fit.activeWhen };
}
