/**
 * The plain-TypeScript controller forward (src/core/controller/forward.ts), which the flow runs in the CLI and in
 * the LLM worker, against the TensorFlow.js network it replaces for inference: the same s and w to 1e-6 on the
 * shipped organism's controller and on a paper-width controller with and without standardisation, on tfjs's cpu
 * and wasm backends. The bound is relative above magnitude 1: on wasm (float32 sums of 5760 terms in XNNPACK) a
 * scale near 10 differs by one float32 step, 1.2e-6 absolute.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  ControllerForward,
  ControllerNetwork,
  decodeController,
  fitStandardization,
  initControllerParams,
  selectBackend,
  syntheticActivations,
  type ControllerOutput,
} from '../../src/core/controller/index.js';

const ORGANISM_CONTROLLER = join(import.meta.dirname, '../../models/organism/controller.safetensors');

/** Largest difference, relative to the value where it is above 1 (float32 keeps 7 digits, not 7 decimals). */
function maxDiff(a: ControllerOutput, b: ControllerOutput): number {
  const d = (x: number, y: number) => Math.abs(x - y) / Math.max(1, Math.abs(y));
  let m = d(a.scale, b.scale);
  a.layerWeights.forEach((w, i) => (m = Math.max(m, d(w, b.layerWeights[i]!))));
  return m;
}

afterAll(async () => {
  await selectBackend(['wasm', 'cpu']);
});

describe('controller forward (plain TypeScript) vs the TensorFlow.js network', () => {
  const organism = decodeController(new Uint8Array(readFileSync(ORGANISM_CONTROLLER)), { source: ORGANISM_CONTROLLER });
  const inputSize = organism.params.shape.inputSize;
  // Rows shaped like residuals (large, per-feature offsets), so standardisation matters.
  const rows = syntheticActivations({ rows: 8, inputSize, seed: 11, scale: 6 }).x;

  for (const backend of ['cpu', 'wasm'] as const) {
    it(`organism controller: s and w within 1e-6 on tfjs ${backend}`, async () => {
      await selectBackend([backend]);
      const net = new ControllerNetwork(organism.params, organism.standardization);
      const fwd = ControllerForward.of(organism);
      let worst = 0;
      let spread = 0;
      for (let r = 0; r < 8; r++) {
        const row = rows.subarray(r * inputSize, (r + 1) * inputSize);
        const a = fwd.predict(row);
        const b = net.predict(row);
        worst = Math.max(worst, maxDiff(a, b));
        spread = Math.max(spread, Math.abs(a.scale));
      }
      net.dispose();
      expect(worst).toBeLessThanOrEqual(1e-6);
      // Not a vacuous comparison: the scales are far from zero.
      expect(spread).toBeGreaterThan(1e-2);
    });

    it(`paper width (1024), 10 input layers x 576: s and w within 1e-6 on tfjs ${backend}`, async () => {
      const shape = { inputSize: 10 * 576, hiddenWidth: 1024, numLayers: 30 };
      const params = initControllerParams(shape, 3);
      const x = syntheticActivations({ rows: 4, inputSize: shape.inputSize, seed: 5, scale: 4 }).x;
      const st = fitStandardization(x, 4, shape.inputSize);
      await selectBackend([backend]);
      for (const standardization of [null, st]) {
        const net = new ControllerNetwork(params, standardization);
        const fwd = new ControllerForward(params, standardization);
        for (let r = 0; r < 4; r++) {
          const row = x.subarray(r * shape.inputSize, (r + 1) * shape.inputSize);
          expect(maxDiff(fwd.predict(row), net.predict(row))).toBeLessThanOrEqual(1e-6);
        }
        net.dispose();
      }
    });
  }

  it('refuses a row of the wrong size, naming both sizes', () => {
    const fwd = ControllerForward.of(organism);
    expect(() => fwd.predict(new Float32Array(inputSize - 1))).toThrow(new RegExp(`got ${inputSize - 1} values, expected ${inputSize}`));
  });

  it('keeps its own copy of the weights: changing the caller arrays later does not change a prediction', () => {
    const p = initControllerParams({ inputSize: 8, hiddenWidth: 4, numLayers: 2 }, 1);
    const fwd = new ControllerForward(p);
    const row = new Float32Array(8).fill(1);
    const before = fwd.predict(row);
    p.w1.fill(0);
    p.b2.fill(9);
    expect(fwd.predict(row)).toEqual(before);
  });
});
