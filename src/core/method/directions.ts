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
 *   Ablation (a, c) is Arditi's directional ablation, exact and per position: the patched graph's `projection` input
 *   with row l = d for every decoder layer turns the residual after each layer into x - (x.d)d at every position of
 *   the pass (src/core/onnx/patcher.ts). What it does not reach: the embedding output (residual index 0, the input of
 *   layer 0) and the residual between a layer's attention and MLP blocks keep their component along d; Arditi's hooks
 *   also remove it there (layer inputs and the attention and MLP outputs). Earlier versions used a proxy (subtract
 *   the mean projection of the evaluated set, mu_k d, at each layer), which removed the mean, not each token's own
 *   component; on the shipped organism both pick the same candidate (README).
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
import { ablationProjection } from '../steering/ablation.js';
import { postInstructionResiduals, commonPostInstructionCount, throwIfAborted, type Progress } from './activations.js';

export const ABLATION_METHOD =
  'directional ablation through the projection input: x <- x - (x.d)d after every decoder layer, at every position (residual indices 1..L; the embedding output is not ablated)';

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

/**
 * Next-token logits [V] after each chat-formatted prompt, with an optional patch (steering and/or projection);
 * stops between prompts when `signal` is aborted, and reports each prompt done.
 */
export async function lastLogits(
  model: SteerableModel,
  prompts: readonly string[],
  patch: { steering?: Float32Array | null; projection?: Float32Array | null },
  opts: { signal?: AbortSignal | undefined; onProgress?: Progress } = {},
): Promise<Float32Array[]> {
  const V = model.vocabSize;
  const out: Float32Array[] = [];
  for (const p of prompts) {
    throwIfAborted(opts.signal);
    const ids = model.formatChat(p).ids;
    const r = await model.forward([ids], { steering: patch.steering ?? null, projection: patch.projection ?? null });
    out.push(r.logits.data.slice((ids.length - 1) * V, ids.length * V));
    opts.onProgress?.(out.length, prompts.length);
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

  // The unpatched next-token distributions of the harmless validation prompts (the KL's base).
  const baseHarmless = await lastLogits(model, sets.harmlessVal, {}, { signal: opts.signal, onProgress: progress('validation activations') });
  const refusalIds = opts.refusalTokenIds ?? refusalFirstTokens(model.tokenizer);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

  const evaluate = async (c: DirectionCandidate): Promise<CandidateScores> => {
    throwIfAborted(opts.signal);
    // Residual index 0 (embedding output) has no steering row: scored NaN so the selection filters it.
    if (c.layer < 1) return { ablationRefusalScore: NaN, steeringRefusalScore: NaN, kl: NaN };
    const ablation = ablationProjection(c.direction, L);
    const actadd = new Float32Array(L * H);
    actadd.set(c.vector, layerBefore(c.layer, L) * H);
    const a = await lastLogits(model, sets.harmfulVal, { projection: ablation }, { signal: opts.signal });
    const k = await lastLogits(model, sets.harmlessVal, { projection: ablation }, { signal: opts.signal });
    const s = await lastLogits(model, sets.harmlessVal, { steering: actadd }, { signal: opts.signal });
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
        'Use more prompts, or relax the KL threshold (--kl-threshold), the induced-refusal threshold ' +
        '(--induced-refusal-threshold; a small model whose refusal is one template may need about -2) or the pruned ' +
        'layer fraction (--prune-layer-fraction)',
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
    note: `selected by Arditi's filters with ${ABLATION_METHOD}; position ${best.position} of ${P} post-instruction tokens`,
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
      ablation: ABLATION_METHOD,
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
