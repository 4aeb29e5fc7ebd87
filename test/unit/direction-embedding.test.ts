import { describe, expect, it } from 'vitest';
import { ANSWER_PHRASES, REFUSAL_PHRASES, denseEmbeddingRows, embeddingDirection } from '../../src/core/steering/direction.js';

// Vocabulary of 5 tokens, hidden size 3, [V, H] row-major.
const E = Float32Array.from([
  1, 0, 0, // 0
  0, 1, 0, // 1
  0, 0, 1, // 2
  1, 1, 0, // 3
  2, 0, 2, // 4
]);

function transpose(m: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(m.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = m[r * cols + c];
  return t;
}

describe('embedding direction (Eq. 7)', () => {
  it('exports the paper phrase lists', () => {
    expect(REFUSAL_PHRASES).toHaveLength(13);
    expect(ANSWER_PHRASES).toHaveLength(11);
    expect(REFUSAL_PHRASES).toContain("I'm sorry");
    expect(ANSWER_PHRASES).toContain('Here is');
    expect(Object.isFrozen(REFUSAL_PHRASES)).toBe(true);
  });

  it('pools ids with duplicates kept, subtracts the means and normalises (hand computation)', () => {
    const rows = denseEmbeddingRows(E, 5, 3, 'vocab-major');
    // Refusal phrases [0, 4] and [0]: pooled ids 0, 4, 0 -> mean = ((1,0,0)+(2,0,2)+(1,0,0))/3 = (4/3, 0, 2/3).
    // Answer phrases [1] and [3]: mean = ((0,1,0)+(1,1,0))/2 = (0.5, 1, 0).
    // diff = (5/6, -1, 2/3); norm = sqrt(25/36 + 1 + 16/36) = sqrt(77/36) = sqrt(77)/6.
    const r = embeddingDirection(rows, [[0, 4], [0]], [[1], [3]]);
    const n = Math.sqrt(77) / 6;
    expect(r.refusalTokenCount).toBe(3);
    expect(r.answerTokenCount).toBe(2);
    expect(r.rawNorm).toBeCloseTo(n, 6);
    expect(r.direction[0]).toBeCloseTo(5 / 6 / n, 6);
    expect(r.direction[1]).toBeCloseTo(-1 / n, 6);
    expect(r.direction[2]).toBeCloseTo(2 / 3 / n, 6);
    // Deduplicating would give mean refusal (1.5, 0, 1): a different direction, so duplicates matter here.
    const dedup = embeddingDirection(rows, [[0, 4]], [[1], [3]]);
    expect(Math.abs(dedup.direction[0] - r.direction[0])).toBeGreaterThan(1e-3);
  });

  it('gives the same direction from a transposed [H, V] matrix', () => {
    const a = embeddingDirection(denseEmbeddingRows(E, 5, 3, 'vocab-major'), [[0, 4], [0]], [[1], [3]]);
    const b = embeddingDirection(denseEmbeddingRows(transpose(E, 5, 3), 5, 3, 'hidden-major'), [[0, 4], [0]], [[1], [3]]);
    for (let h = 0; h < 3; h++) expect(b.direction[h]).toBeCloseTo(a.direction[h], 7);
  });

  it('accepts any row accessor', () => {
    const rows = { vocabSize: 5, hiddenSize: 3, row: (id: number) => E.subarray(id * 3, id * 3 + 3) };
    const r = embeddingDirection(rows, [[2]], [[0]]);
    expect(Array.from(r.direction).map((x) => +x.toFixed(6))).toEqual([-0.707107, 0, 0.707107]);
  });

  it('refuses bad input with clear errors', () => {
    const rows = denseEmbeddingRows(E, 5, 3, 'vocab-major');
    expect(() => embeddingDirection(rows, [[5]], [[0]])).toThrow(/token id 5 is outside the vocabulary \[0, 5\)/);
    expect(() => embeddingDirection(rows, [[]], [[0]])).toThrow(/refusal phrase 0 tokenized to no ids/);
    expect(() => embeddingDirection(rows, [[0]], [])).toThrow(/answer phrases: expected at least one/);
    expect(() => embeddingDirection(rows, [[0]], [[0]])).toThrow(/is zero/);
    expect(() => denseEmbeddingRows(E, 4, 3, 'vocab-major')).toThrow(/expected vocab 4 x hidden 3 = 12/);
  });
});
