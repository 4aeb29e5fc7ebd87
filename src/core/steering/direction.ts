/**
 * The WAS steering direction from the token embedding geometry (Hegazy et al., Eq. 7):
 *
 *   d = normalize( mean_{t in refusal ids} e_t  -  mean_{t in answer ids} e_t )
 *
 * where e_t is row t of the unembedding (output) matrix in the paper, or of the input embedding matrix in the
 * released code (identical for tied embeddings). Each phrase is tokenized WITHOUT special tokens by the caller; all
 * ids are pooled with duplicates kept (a token that opens several phrases weighs more), then averaged.
 * Pure: no model, no tokenizer; the caller hands in token ids and a row accessor.
 */
import { normalize } from './vector.js';

/** Refusal phrases of the paper (docs/METHOD-NOTES.md section 1). */
export const REFUSAL_PHRASES: readonly string[] = Object.freeze([
  'I apologize',
  "I'm sorry",
  'I cannot',
  "I can't",
  'I am unable',
  "I'm not able",
  'I am not able',
  "I don't",
  'I do not',
  'against my',
  'ethical guidelines',
  'programmed to',
  'designed to',
]);

/** Answer (compliance) phrases of the paper (docs/METHOD-NOTES.md section 1). */
export const ANSWER_PHRASES: readonly string[] = Object.freeze([
  'Sure',
  'Here',
  "I'll",
  'I will',
  "I'd be happy",
  'I would be happy',
  'I can help',
  'Of course',
  'Certainly',
  "Here's",
  'Here is',
]);

/**
 * Read access to the rows of a [vocab, hidden] matrix, whatever its storage. `row(id)` returns the hidden-size
 * embedding of token `id` (may be a view; callers only read it).
 */
export interface EmbeddingRows {
  vocabSize: number;
  hiddenSize: number;
  row(id: number): ArrayLike<number>;
}

/**
 * Row accessor over a dense row-major matrix.
 * - 'vocab-major': data is [vocab, hidden] (PyTorch nn.Embedding weight, lm_head.weight);
 * - 'hidden-major': data is [hidden, vocab] (an ONNX MatMul initializer for the LM head is usually stored this way).
 */
export function denseEmbeddingRows(
  data: Float32Array,
  vocabSize: number,
  hiddenSize: number,
  layout: 'vocab-major' | 'hidden-major',
): EmbeddingRows {
  if (!Number.isSafeInteger(vocabSize) || vocabSize <= 0) throw new RangeError(`vocabSize must be a positive integer, got ${vocabSize}`);
  if (!Number.isSafeInteger(hiddenSize) || hiddenSize <= 0) throw new RangeError(`hiddenSize must be a positive integer, got ${hiddenSize}`);
  if (data.length !== vocabSize * hiddenSize) {
    throw new RangeError(`embedding matrix has ${data.length} values, expected vocab ${vocabSize} x hidden ${hiddenSize} = ${vocabSize * hiddenSize}`);
  }
  if (layout === 'vocab-major') {
    return { vocabSize, hiddenSize, row: (id) => data.subarray(id * hiddenSize, (id + 1) * hiddenSize) };
  }
  if (layout === 'hidden-major') {
    return {
      vocabSize,
      hiddenSize,
      row: (id) => {
        const out = new Float32Array(hiddenSize);
        for (let h = 0; h < hiddenSize; h++) out[h] = data[h * vocabSize + id];
        return out;
      },
    };
  }
  throw new RangeError(`layout must be 'vocab-major' or 'hidden-major', got ${String(layout)}`);
}

export interface EmbeddingDirectionResult {
  /** Unit direction [hidden], refusal minus answer. */
  direction: Float32Array;
  /** Pooled token counts (duplicates kept) on each side. */
  refusalTokenCount: number;
  answerTokenCount: number;
  /** Norm of the mean difference before normalisation (a tiny norm means the two sides barely differ). */
  rawNorm: number;
}

function meanOfIds(rows: EmbeddingRows, phrases: readonly (readonly number[])[], side: string): { mean: Float64Array; count: number } {
  if (!Array.isArray(phrases) || phrases.length === 0) throw new RangeError(`${side} phrases: expected at least one tokenized phrase`);
  const mean = new Float64Array(rows.hiddenSize);
  let count = 0;
  phrases.forEach((ids, p) => {
    if (!Array.isArray(ids) || ids.length === 0) {
      throw new RangeError(`${side} phrase ${p} tokenized to no ids; tokenize each phrase without special tokens`);
    }
    for (const id of ids) {
      if (!Number.isSafeInteger(id) || id < 0 || id >= rows.vocabSize) {
        throw new RangeError(`${side} phrase ${p}: token id ${id} is outside the vocabulary [0, ${rows.vocabSize})`);
      }
      const r = rows.row(id);
      if (r.length !== rows.hiddenSize) throw new RangeError(`row ${id} has length ${r.length}, expected hidden size ${rows.hiddenSize}`);
      for (let h = 0; h < rows.hiddenSize; h++) mean[h] += r[h];
      count++;
    }
  });
  for (let h = 0; h < rows.hiddenSize; h++) mean[h] /= count;
  return { mean, count };
}

/**
 * Eq. 7 of the paper. `refusalIds[i]` / `answerIds[j]` are the token ids of REFUSAL_PHRASES[i] / ANSWER_PHRASES[j]
 * (or any phrase lists the caller prefers), tokenized without special tokens.
 */
export function embeddingDirection(
  rows: EmbeddingRows,
  refusalIds: readonly (readonly number[])[],
  answerIds: readonly (readonly number[])[],
): EmbeddingDirectionResult {
  const refusal = meanOfIds(rows, refusalIds, 'refusal');
  const answer = meanOfIds(rows, answerIds, 'answer');
  const diff = new Float64Array(rows.hiddenSize);
  for (let h = 0; h < rows.hiddenSize; h++) diff[h] = refusal.mean[h] - answer.mean[h];
  const direction = normalize(diff, 'mean refusal embedding minus mean answer embedding');
  let rawNorm = 0;
  for (let h = 0; h < diff.length; h++) rawNorm += diff[h] * diff[h];
  return { direction, refusalTokenCount: refusal.count, answerTokenCount: answer.count, rawNorm: Math.sqrt(rawNorm) };
}
