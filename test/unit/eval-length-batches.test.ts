/** The runner's scheduling of a window's rows (batch.ts lengthBatches): shortest first, ties in order, `batch` rows a call. */
import { describe, expect, it } from 'vitest';
import { lengthBatches } from '../../src/core/eval/batch.js';

describe('lengthBatches', () => {
  it('groups row indices shortest first into batches of at most `batch`', () => {
    expect(lengthBatches([30, 5, 12, 5, 40, 7, 12], 3)).toEqual([[1, 3, 5], [2, 6, 0], [4]]);
    expect(lengthBatches([9, 1], 8)).toEqual([[1, 0]]);
    expect(lengthBatches([], 4)).toEqual([]);
  });

  it('keeps equal lengths in their order, so the rows of one prompt stay together', () => {
    // two prompts of length 20 with three conditions each, one prompt of length 3
    expect(lengthBatches([20, 20, 20, 3, 20, 20, 20], 2)).toEqual([[3, 0], [1, 2], [4, 5], [6]]);
  });

  it('batch 1 runs every row alone, shortest first', () => {
    expect(lengthBatches([4, 2, 3], 1)).toEqual([[1], [2], [0]]);
  });
});
