/** The separation plot and CAST condition of a direction (directionReport), and the browser-safe direction id. */
import { createHash } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import { directionReport } from '../../src/core/method/directions.js';
import { directionId } from '../../src/core/method/artifacts.js';
import { embeddingDirectionFile } from '../../src/core/steering/direction-file.js';
import { normalize } from '../../src/core/steering/vector.js';
import { mulberry32 } from '../../src/core/util/prng.js';

const L = 4;
const H = 6;

/** [n, L+1, H] noise; harmful prompts get +shift along axis 1 from residual index 2 on. */
function acts(n: number, shift: number, seed: number): Float32Array {
  const r = mulberry32(seed);
  const a = new Float32Array(n * (L + 1) * H);
  for (let i = 0; i < a.length; i++) a[i] = r() - 0.5;
  for (let i = 0; i < n; i++) for (let k = 2; k <= L; k++) a[(i * (L + 1) + k) * H + 1] += shift;
  return a;
}

describe('direction report', () => {
  test('separation per residual index along the direction, and a CAST condition where the classes differ', () => {
    const file = embeddingDirectionFile(normalize(Float32Array.from([0, 1, 0, 0, 0, 0])), 'unembedding', { modelId: 'm', hiddenSize: H, numLayers: L });
    const r = directionReport(file, { harmful: acts(16, 3, 1), harmless: acts(16, 0, 2) }, L, H);
    expect(r.separation.map((s) => s.layer)).toEqual([0, 1, 2, 3, 4]);
    expect(Math.abs(r.separation[0]!.separation)).toBeLessThan(1);
    for (const k of [2, 3, 4]) expect(r.separation[k]!.separation).toBeGreaterThan(5);
    expect(r.cast).not.toBeNull();
    expect(r.cast!.layer).toBeGreaterThanOrEqual(2);
  });

  test('directionId: method + the first 16 hex digits of SHA-256 of the unit vector (Web Crypto = node:crypto)', async () => {
    const file = embeddingDirectionFile(normalize(Float32Array.from([3, 1, 4, 1, 5, 9])), 'unembedding', { modelId: 'm', hiddenSize: H, numLayers: L });
    const d = file.direction;
    const hex = createHash('sha256').update(new Uint8Array(d.buffer, d.byteOffset, d.byteLength)).digest('hex');
    expect(await directionId(file)).toBe(`embedding:${hex.slice(0, 16)}`);
  });
});
