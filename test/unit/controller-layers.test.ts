import { describe, expect, it } from 'vitest';
import {
  concatControllerInput,
  controllerInputLayers,
  firstControllerInputLayer,
  residualIndexOfLayerOutput,
  validateInputLayers,
} from '../../src/core/controller/index.js';

describe('controller input layers (l >= 2/3 N, decoder-layer outputs)', () => {
  it('takes ceil(2N/3)..N-1 for the models the project targets', () => {
    expect(controllerInputLayers(30)).toEqual([20, 21, 22, 23, 24, 25, 26, 27, 28, 29]); // SmolLM2-135M: 10 layers
    expect(controllerInputLayers(16)).toEqual([11, 12, 13, 14, 15]); // Llama-3.2-1B
    expect(controllerInputLayers(24)).toEqual([16, 17, 18, 19, 20, 21, 22, 23]); // Qwen2.5-0.5B
    expect(controllerInputLayers(32)).toEqual([22, 23, 24, 25, 26, 27, 28, 29, 30, 31]); // Llama-3.1-8B
    // N <= 2: the literal rule selects nothing, so the last layer is used.
    expect(controllerInputLayers(1)).toEqual([0]);
    expect(controllerInputLayers(2)).toEqual([1]);
    expect(controllerInputLayers(4)).toEqual([3]);
  });

  it('matches the literal condition l >= 2N/3 for every N up to 200', () => {
    for (let N = 3; N <= 200; N++) {
      const want: number[] = [];
      for (let l = 0; l < N; l++) if (3 * l >= 2 * N) want.push(l);
      expect(controllerInputLayers(N)).toEqual(want);
      expect(firstControllerInputLayer(N)).toBe(want[0]);
    }
  });

  it('maps layer l to residual_stream index l + 1', () => {
    expect(controllerInputLayers(30).map(residualIndexOfLayerOutput)).toEqual([21, 22, 23, 24, 25, 26, 27, 28, 29, 30]);
  });

  it('rejects bad layer counts and layer lists', () => {
    expect(() => controllerInputLayers(0)).toThrow(/positive integer/);
    expect(() => validateInputLayers([], 30)).toThrow(/non-empty/);
    expect(() => validateInputLayers([30], 30)).toThrow(/0\.\.29/);
    expect(() => validateInputLayers([5, 4], 30)).toThrow(/ascending/);
  });

  it('concatenates residuals in layer order and checks their size', () => {
    const x = concatControllerInput([new Float32Array([1, 2]), new Float32Array([3, 4])], 2);
    expect(Array.from(x)).toEqual([1, 2, 3, 4]);
    expect(() => concatControllerInput([new Float32Array(3)], 2)).toThrow(/hiddenSize 2/);
  });
});
