/** The model list and dtype choice (src/ui/lib/models.ts). */
import { describe, expect, test } from 'vitest';
import { checkHubId, DEFAULT_MODEL, HUB_MODELS, MODEL_CHOICES, ORGANISM_MODEL, preferredDtype } from '../../src/ui/lib/models.js';

describe('model choices', () => {
  test('the default comes first and is local; the five hub models are listed with dtypes', () => {
    expect(MODEL_CHOICES[0]).toBe(DEFAULT_MODEL);
    expect(DEFAULT_MODEL.localModelPath).toBe('/models/');
    expect(HUB_MODELS.map((m) => m.id)).toEqual([
      'HuggingFaceTB/SmolLM2-135M-Instruct', 'HuggingFaceTB/SmolLM2-360M-Instruct', 'onnx-community/Qwen2.5-0.5B-Instruct',
      'onnx-community/Llama-3.2-1B-Instruct', 'onnx-community/Qwen3-0.6B-ONNX',
    ]);
    for (const m of MODEL_CHOICES) expect(m.dtypes).toContain(m.defaultDtype);
  });

  test('hub ids are checked with a reason', () => {
    expect(checkHubId('HuggingFaceTB/SmolLM2-135M-Instruct')).toBeNull();
    expect(checkHubId('')).toMatch(/enter/);
    expect(checkHubId('no-slash')).toMatch(/owner\/name/);
    expect(checkHubId('a/../b')).toMatch(/owner\/name|\.\./);
  });

  test('WebGPU avoids q8 and fp16; WASM prefers q8', () => {
    expect(preferredDtype(HUB_MODELS[0]!, 'webgpu')).toBe('q4f16');
    expect(preferredDtype(HUB_MODELS[0]!, 'wasm')).toBe('q8');
    expect(preferredDtype(DEFAULT_MODEL, 'webgpu')).toBe('fp32');
    expect(preferredDtype(ORGANISM_MODEL, 'webgpu')).toBe('fp32');
  });
});
