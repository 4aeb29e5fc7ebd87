/**
 * Steering directions computed WITH a loaded model (the maths lives in src/core/steering):
 *
 * embedding (the paper, Eq. 7): the refusal and answer phrases are tokenized without special tokens, all ids pooled
 *   (duplicates kept), and the rows of the unembedding matrix (read from the ONNX graph; the input embedding when the
 *   graph does not expose a readable head) averaged: d = normalize(mean(refusal rows) - mean(answer rows)).
 *
 * diff-in-means (Arditi et al.): residuals at every residual index and every post-instruction position for harmful
 *   and harmless prompts, candidates r[k][p] = mean_harmful - mean_harmless, then selectDirection with the model's
 *   behaviour on held-out prompts.
 *
 *   How ablation is approximated. Arditi ablates a candidate by projecting d out of every residual at every position
 *   (x <- x - (x.d)d), which depends on each x. Steerlab's patch can only ADD one fixed row per layer, at every
 *   position, so per-position directional ablation is not available. The proxy used here is mean-projection
 *   ablation: with mu_k the mean of (x.d) over the evaluated set's prompts and post-instruction positions at residual
 *   index k (unsteered), row l (added after layer l, i.e. at index l+1) is -(mu_{l+1} - mu_l) d (row 0: -mu_1 d), so
 *   that the rows' running sum removes mu_{l+1} d at index l+1: on average the stream carries no component along d
 *   at any layer, as under true ablation. Each set is ablated with its own means (harmful means for the refusal
 *   score, harmless means for the KL). It is first-order: it removes the mean, not each token's own component, and
 *   it ignores how later layers react to the shift; the embedding output (index 0) is not changed. A negative ActAdd
 *   (one row, -r) would be simpler but removes a fixed amount at one layer only, which over- or under-shoots the
 *   projection elsewhere; the mean-projection proxy matches the target at every layer.
 *   The induced-refusal test (b) is exact: ActAdd of the raw vector at the candidate's own layer (row k - 1).
 */
import { layerBefore } from '../model/layer-index.js';
import { modelFields } from '../model/model-id.js';
import type { SteerableModel } from '../model/steerable.js';
import { fetchModelFile } from '../model/fetch-file.js';
import { DTYPE_SUFFIX } from '../model/hub-paths.js';
import type { TjsTokenizer } from '../model/prompt.js';
import { readEmbeddingMatrix, type EmbeddingMatrix, type EmbeddingSource } from '../onnx/weights-reader.js';
import { ANSWER_PHRASES, REFUSAL_PHRASES, denseEmbeddingRows, embeddingDirection } from '../steering/direction.js';
import { fitCastCondition, type CastCondition } from '../steering/cast.js';
import {
  candidateAt,
  diffInMeans,
  layerSeparation,
  listCandidates,
  residualsFromArray,
  type DirectionCandidate,
  type LayerSeparation,
} from '../steering/diff-in-means.js';
import { diffInMeansDirectionFile, embeddingDirectionFile, type DirectionFile } from '../steering/direction-file.js';
import { klDivergence, refusalScore, selectDirection, type CandidateScores, type SelectionOptions, type SelectionResult } from '../steering/selection.js';
import { postInstructionResiduals, commonPostInstructionCount, throwIfAborted, type Progress } from './activations.js';

export const ABLATION_PROXY =
  'mean-projection ablation: row l = -(mu_{l+1} - mu_l) d (row 0 = -mu_1 d), mu_k = mean over the evaluated set of (x_k . d) at the post-instruction positions, unsteered; true per-position directional ablation is not expressible as an additive patch';

/** Phrases tokenized without special tokens (an empty result is an error: the phrase would count for nothing). */
export function tokenizePhrases(tok: TjsTokenizer, phrases: readonly string[]): number[][] {
  return phrases.map((p) => {
    const ids = tok.encode(p, { add_special_tokens: false });
    if (ids.length === 0) throw new Error(`phrase ${JSON.stringify(p)} tokenized to no ids`);
    return ids;
  });
}

/** The model's original ONNX graph bytes (cache -> local -> hub, as the loader read them) and its external data. */
export async function tokenMatrixOfModel(model: SteerableModel, prefer: EmbeddingSource = 'unembedding'): Promise<EmbeddingMatrix> {
  const suffix = DTYPE_SUFFIX[model.dtype] ?? '';
  const bytes = await fetchModelFile(model.source, `onnx/${model.modelFileName}${suffix}.onnx`);
  const files = new Map<string, Uint8Array>();
  return readEmbeddingMatrix(bytes, {
    prefer,
    expectVocabSize: model.vocabSize,
    expectHiddenSize: model.hiddenSize,
    externalData: async (loc) => {
      let f = files.get(loc);
      if (!f) {
        f = await fetchModelFile(model.source, `onnx/${loc}`);
        files.set(loc, f);
      }
      return f;
    },
  });
}

export interface EmbeddingDirectionInfo {
  source_matrix: EmbeddingSource;
  tensor: string;
  storage: EmbeddingMatrix['storage'];
  fallback_reason: string | null;
  refusal_token_count: number;
  answer_token_count: number;
  raw_norm: number;
}

export async function embeddingDirectionOfModel(
  model: SteerableModel,
  opts: { prefer?: EmbeddingSource; createdAt?: string } = {},
): Promise<{ file: DirectionFile; info: EmbeddingDirectionInfo }> {
  const matrix = await tokenMatrixOfModel(model, opts.prefer);
  const rows = denseEmbeddingRows(matrix.data, matrix.vocabSize, matrix.hiddenSize, 'vocab-major');
  const r = embeddingDirection(rows, tokenizePhrases(model.tokenizer, REFUSAL_PHRASES), tokenizePhrases(model.tokenizer, ANSWER_PHRASES));
  const note = `rows of ${matrix.source} "${matrix.tensor}" (${matrix.storage})${matrix.fallbackReason ? `; unembedding not used: ${matrix.fallbackReason}` : ''}`;
  const file = embeddingDirectionFile(r.direction, matrix.source, {
    ...modelFields(model.identity),
    hiddenSize: model.hiddenSize,
    numLayers: model.numLayers,
    note,
    ...(opts.createdAt ? { createdAt: opts.createdAt } : {}),
  });
  return {
    file,
    info: {
      source_matrix: matrix.source,
      tensor: matrix.tensor,
      storage: matrix.storage,
      fallback_reason: matrix.fallbackReason ?? null,
      refusal_token_count: r.refusalTokenCount,
      answer_token_count: r.answerTokenCount,
      raw_norm: r.rawNorm,
    },
  };
}

// ------------------------------------------------------------------------------------------------ diff-in-means

export interface DiffInMeansSets {
  harmfulTrain: readonly string[];
  harmlessTrain: readonly string[];
  harmfulVal: readonly string[];
  harmlessVal: readonly string[];
}

export interface DiffInMeansOptions {
  selection?: Omit<SelectionOptions, 'numLayers' | 'onProgress'>;
  /** Refusal tokens for the refusal score; default the first token of each paper refusal phrase (e.g. "I"). */
  refusalTokenIds?: number[];
  /** Stage progress (stage names: 'train activations', 'validation activations', 'candidates'). */
  onProgress?: (stage: string, done: number, total: number) => void;
  /** Stops between forward passes (the lab's cancel). */
  signal?: AbortSignal;
  datasets?: Record<string, string>;
  seed?: number;
  createdAt?: string;
}

export interface DiffInMeansInfo {
  positions: number;
  candidates: number;
  evaluated: number;
  refusal_token_ids: number[];
  ablation: string;
  selected: { residual_index: number; steering_row: number; position: number; norm: number; scores: CandidateScores | null };
  /** Survivors first, best ablation score first (a short head of the ranking). */
  ranking: SelectionResult['ranking'];
}

/** First token of each refusal phrase, deduplicated (Arditi scores the first token of a refusal, e.g. "I"). */
export function refusalFirstTokens(tok: TjsTokenizer): number[] {
  return [...new Set(tokenizePhrases(tok, REFUSAL_PHRASES).map((ids) => ids[0]!))];
}

/** Mean projection of residuals [n, K, P, H] on d at each residual index k. */
function meanProjections(data: Float32Array, n: number, K: number, P: number, H: number, d: Float32Array): Float64Array {
  const mu = new Float64Array(K);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < K; k++) {
      for (let p = 0; p < P; p++) {
        const base = ((i * K + k) * P + p) * H;
        let x = 0;
        for (let h = 0; h < H; h++) x += data[base + h]! * d[h]!;
        mu[k]! += x;
      }
    }
  }
  for (let k = 0; k < K; k++) mu[k]! /= n * P;
  return mu;
}

/** The additive ablation proxy (see the module comment): rows whose running sum is -mu_{l+1} d at index l+1. */
export function meanProjectionAblation(mu: ArrayLike<number>, d: Float32Array, numLayers: number): Float32Array {
  const H = d.length;
  const m = new Float32Array(numLayers * H);
  for (let l = 0; l < numLayers; l++) {
    const c = -(mu[l + 1]! - (l === 0 ? 0 : mu[l]!));
    for (let h = 0; h < H; h++) m[l * H + h] = c * d[h]!;
  }
  return m;
}

async function lastLogits(model: SteerableModel, prompts: readonly string[], steering: Float32Array | null): Promise<Float32Array[]> {
  const V = model.vocabSize;
  const out: Float32Array[] = [];
  for (const p of prompts) {
    const ids = model.formatChat(p).ids;
    const r = await model.forward([ids], { steering });
    out.push(r.logits.data.slice((ids.length - 1) * V, ids.length * V));
  }
  return out;
}

/** Residuals [n, K, P, H] at position p -> [n, K, H]. */
function atPosition(data: Float32Array, n: number, K: number, P: number, H: number, p: number): Float32Array {
  const out = new Float32Array(n * K * H);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < K; k++) {
      const from = ((i * K + k) * P + p) * H;
      out.set(data.subarray(from, from + H), (i * K + k) * H);
    }
  }
  return out;
}

export async function diffInMeansOfModel(
  model: SteerableModel,
  sets: DiffInMeansSets,
  opts: DiffInMeansOptions = {},
): Promise<{ file: DirectionFile; info: DiffInMeansInfo; lastToken: LastTokenActivations }> {
  const L = model.numLayers;
  const K = L + 1;
  const H = model.hiddenSize;
  for (const [k, v] of Object.entries(sets)) if (v.length === 0) throw new Error(`diff-in-means: the ${k} prompt set is empty`);
  const all = [...sets.harmfulTrain, ...sets.harmlessTrain, ...sets.harmfulVal, ...sets.harmlessVal];
  const P = commonPostInstructionCount(model, all);
  const progress = (stage: string): Progress => (d, t) => opts.onProgress?.(stage, d, t);

  const nTrain = sets.harmfulTrain.length + sets.harmlessTrain.length;
  let done = 0;
  const trainProgress: Progress = () => progress('train activations')(++done, nTrain);
  const hf = await postInstructionResiduals(model, sets.harmfulTrain, P, trainProgress, opts.signal);
  const hl = await postInstructionResiduals(model, sets.harmlessTrain, P, trainProgress, opts.signal);
  const cands = diffInMeans(
    residualsFromArray(hf.data, [sets.harmfulTrain.length, K, P, H]),
    residualsFromArray(hl.data, [sets.harmlessTrain.length, K, P, H]),
  );
  const list = listCandidates(cands);
  if (list.length === 0) throw new Error('diff-in-means: every candidate is zero (harmful and harmless activations are identical)');

  const nVal = sets.harmfulVal.length + sets.harmlessVal.length;
  done = 0;
  const valProgress: Progress = () => progress('validation activations')(++done, nVal);
  const hfVal = await postInstructionResiduals(model, sets.harmfulVal, P, valProgress, opts.signal);
  const hlVal = await postInstructionResiduals(model, sets.harmlessVal, P, valProgress, opts.signal);
  const V = model.vocabSize;
  const baseHarmless = Array.from({ length: sets.harmlessVal.length }, (_, i) => hlVal.logits.subarray(i * V, (i + 1) * V));
  const refusalIds = opts.refusalTokenIds ?? refusalFirstTokens(model.tokenizer);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

  const evaluate = async (c: DirectionCandidate): Promise<CandidateScores> => {
    throwIfAborted(opts.signal);
    // Residual index 0 (embedding output) has no steering row: scored NaN so the selection filters it.
    if (c.layer < 1) return { ablationRefusalScore: NaN, steeringRefusalScore: NaN, kl: NaN };
    const d = c.direction;
    const ablHarmful = meanProjectionAblation(meanProjections(hfVal.data, sets.harmfulVal.length, K, P, H, d), d, L);
    const ablHarmless = meanProjectionAblation(meanProjections(hlVal.data, sets.harmlessVal.length, K, P, H, d), d, L);
    const actadd = new Float32Array(L * H);
    actadd.set(c.vector, layerBefore(c.layer, L) * H);
    const a = await lastLogits(model, sets.harmfulVal, ablHarmful);
    const k = await lastLogits(model, sets.harmlessVal, ablHarmless);
    const s = await lastLogits(model, sets.harmlessVal, actadd);
    return {
      ablationRefusalScore: mean(a.map((l) => refusalScore(l, refusalIds))),
      steeringRefusalScore: mean(s.map((l) => refusalScore(l, refusalIds))),
      kl: mean(k.map((l, i) => klDivergence(baseHarmless[i]!, l))),
    };
  };
  const sel = await selectDirection(list, evaluate, { ...opts.selection, numLayers: L, onProgress: progress('candidates') });
  if (!sel.selected) {
    const counts = new Map<string, number>();
    for (const r of sel.ranking) for (const f of r.filteredBy) counts.set(f, (counts.get(f) ?? 0) + 1);
    const why = [...counts].map(([f, n]) => `${f}: ${n}`).join(', ');
    throw new Error(
      `diff-in-means: no candidate passed the selection filters (${list.length} candidates; filtered by ${why}). ` +
        'Use more prompts, or relax --kl-threshold / --induced-refusal-threshold / --prune-layer-fraction',
    );
  }
  const best = sel.selected;
  const file = diffInMeansDirectionFile(best, (k) => candidateAt(cands, k, best.position).vector, {
    ...modelFields(model.identity),
    hiddenSize: H,
    numLayers: L,
    sampleCounts: {
      harmful_train: sets.harmfulTrain.length,
      harmless_train: sets.harmlessTrain.length,
      harmful_val: sets.harmfulVal.length,
      harmless_val: sets.harmlessVal.length,
    },
    note: `selected by Arditi's filters with ${ABLATION_PROXY}; position ${best.position} of ${P} post-instruction tokens`,
    ...(opts.datasets ? { datasets: opts.datasets } : {}),
    ...(opts.seed !== undefined ? { seed: opts.seed } : {}),
    ...(opts.createdAt ? { createdAt: opts.createdAt } : {}),
  });
  const row = sel.ranking.find((r) => r.layer === best.layer && r.position === best.position);
  return {
    file,
    info: {
      positions: P,
      candidates: list.length,
      evaluated: sel.ranking.filter((r) => r.scores).length,
      refusal_token_ids: refusalIds,
      ablation: ABLATION_PROXY,
      selected: { residual_index: best.layer, steering_row: best.layer - 1, position: best.position, norm: best.norm, scores: row?.scores ?? null },
      ranking: sel.ranking.slice(0, 10),
    },
    // The last post-instruction position is the last prompt token: what the flow observes, for the report.
    lastToken: {
      harmful: atPosition(hf.data, sets.harmfulTrain.length, K, P, H, P - 1),
      harmless: atPosition(hl.data, sets.harmlessTrain.length, K, P, H, P - 1),
    },
  };
}

// ------------------------------------------------------------------------------------------------ report

/** Unsteered residuals [n, L+1, H] of the last prompt token of harmful and harmless prompts. */
export interface LastTokenActivations {
  harmful: Float32Array;
  harmless: Float32Array;
}

export interface DirectionReport {
  /** Per residual index 0..L: how far apart the two classes lie along the direction (the lab's separation plot). */
  separation: LayerSeparation[];
  /** A CAST condition fitted on the same activations (fitCastCondition), or null with fewer than two pairs. */
  cast: CastCondition | null;
}

/** What a direction does on labelled prompts: the per-layer separation plot and a fitted CAST condition. */
export function directionReport(file: DirectionFile, acts: LastTokenActivations, numLayers: number, hiddenSize: number): DirectionReport {
  const K = numLayers + 1;
  const stride = K * hiddenSize;
  const residuals = (a: Float32Array) => residualsFromArray(a, [a.length / stride, K, 1, hiddenSize]);
  return {
    separation: layerSeparation(residuals(acts.harmful), residuals(acts.harmless), file.direction),
    cast: fitCastCondition(acts.harmful, acts.harmless, numLayers, hiddenSize),
  };
}
