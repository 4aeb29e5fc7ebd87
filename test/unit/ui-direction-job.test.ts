/** The Direction tab's computations (src/ui/lib/direction-job.ts) on synthetic activations with a planted signal. */
import { describe, expect, test } from 'vitest';
import { collectActivations, diffInMeansDirection, embeddingDirectionResult, fitCast, type Activations } from '../../src/ui/lib/direction-job.js';
import { decodeDirectionFile, encodeDirectionFile, REFUSAL_PHRASES } from '../../src/core/steering/index.js';
import { mulberry32 } from '../../src/core/onnx/testmodel/weights.js';

const L = 5;
const H = 8;

/** n prompts, noise everywhere; harmful ones get +shift along unit axis 3 at residual index 2 only. */
function acts(n: number, shift: number, seed: number): Activations {
  const rand = mulberry32(seed);
  const data = new Float32Array(n * (L + 1) * H);
  for (let i = 0; i < data.length; i++) data[i] = rand() - 0.5;
  for (let i = 0; i < n; i++) data[(i * (L + 1) + 2) * H + 3] += shift;
  return { data, count: n };
}
const opts = { modelId: 'toy', numLayers: L, hiddenSize: H, datasets: { harmful: 'h', harmless: 'b' }, seed: 0 };

describe('direction job', () => {
  test('diff-in-means finds the planted layer and axis; the file round-trips', () => {
    const r = diffInMeansDirection(acts(24, 4, 1), acts(24, 0, 2), opts);
    expect(r.chosenResidualIndex).toBe(2);
    expect(r.file.metadata.layer).toBe(1); // steering row = residual index - 1
    expect(Math.abs(r.file.direction[3]!)).toBeGreaterThan(0.9);
    expect(r.separation).toHaveLength(L + 1);
    expect(r.separation[2]!.separation).toBeGreaterThan(3);
    const back = decodeDirectionFile(encodeDirectionFile(r.file), { numLayers: L, hiddenSize: H });
    expect(Array.from(back.direction)).toEqual(Array.from(r.file.direction));
    expect(r.cast).not.toBeNull();
    expect(r.cast!.layer).toBe(2);
  });

  test('identical classes are an error in words, not NaN', () => {
    const a = acts(4, 0, 5);
    expect(() => diffInMeansDirection(a, a, opts)).toThrow(/identical/);
  });

  test('CAST needs two pairs', () => {
    expect(fitCast(acts(1, 3, 1), acts(1, 0, 2), L, H)).toBeNull();
  });

  test('embedding direction: refusal minus answer phrase rows, from one forward pass over all phrase ids', async () => {
    // token id = first char code; refusal phrases' first tokens get +1 on axis 0.
    const refusalFirst = new Set(REFUSAL_PHRASES.map((p) => p.charCodeAt(0) + 1000));
    const tokenize = async (t: string) => [REFUSAL_PHRASES.includes(t) ? t.charCodeAt(0) + 1000 : t.charCodeAt(0)];
    let calls = 0;
    const emb = async (ids: number[]) => {
      calls++;
      expect(new Set(ids).size).toBe(ids.length); // each id embedded once
      const out = new Float32Array(ids.length * H);
      ids.forEach((id, i) => { out[i * H + 1] = 0.1; if (refusalFirst.has(id)) out[i * H] = 1; });
      return out;
    };
    const r = await embeddingDirectionResult(tokenize, emb, opts, null, null);
    expect(r.file.metadata.method).toBe('embedding');
    expect(r.file.metadata.source_matrix).toBe('input-embedding');
    expect(r.file.direction[0]).toBeCloseTo(1, 5);
    expect(calls).toBe(1); // one forward pass for all phrases
    expect(r.separation).toEqual([]);
  });

  test('collecting activations reports progress and stops on cancel', async () => {
    const seen: number[] = [];
    const ac = new AbortController();
    const observe = async () => new Float32Array((L + 1) * H).fill(1);
    const a = await collectActivations(['x', 'y'], observe, { numLayers: L, hiddenSize: H }, (k) => seen.push(k));
    expect(seen).toEqual([1, 2]);
    expect(a.count).toBe(2);
    await expect(collectActivations(['x', 'y', 'z'], observe, { numLayers: L, hiddenSize: H }, (k) => { if (k === 1) ac.abort(); }, ac.signal)).rejects.toThrow(/cancelled/);
    await expect(collectActivations(['x'], async () => new Float32Array(3), { numLayers: L, hiddenSize: H })).rejects.toThrow(/expected/);
  });
});
