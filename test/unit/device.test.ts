/**
 * The LLM worker's device rule (workers/device.ts) on fake navigator.gpu objects: what real browsers report for
 * hardware and software adapters. The SwiftShader shape is the one Chromium 156 reports here (see device.ts); the
 * browser tests (fallback.test.ts) check the same rule against the real adapter.
 */
import { describe, expect, test } from 'vitest';
import { chooseDevice, MAX_WASM_THREADS, probeWebGpu, softwareAdapterReason, wasmThreads, type GpuAdapterLike, type GpuLike } from '../../workers/device.js';

function gpuWith(adapter: GpuAdapterLike | null, features: string[] = []): GpuLike {
  const a = adapter ? { ...adapter, features: new Set(features) } : null;
  return { requestAdapter: async () => a };
}

/** What Chromium 156 reports with --enable-unsafe-webgpu and no GPU: the flag lives in adapter.info only. */
const SWIFTSHADER: GpuAdapterLike = { info: { vendor: 'google', architecture: 'swiftshader', device: '', description: '', isFallbackAdapter: true } };
const NVIDIA: GpuAdapterLike = { info: { vendor: 'nvidia', architecture: 'hopper', device: '', description: '', isFallbackAdapter: false } };

describe('softwareAdapterReason', () => {
  test('the browser fallback flag, in adapter.info or at its older place on the adapter', () => {
    expect(softwareAdapterReason(SWIFTSHADER)).toMatch(/fallback adapter/);
    expect(softwareAdapterReason({ isFallbackAdapter: true, info: { vendor: 'acme' } })).toMatch(/fallback adapter/);
  });

  test.each([
    [{ vendor: 'google', architecture: 'swiftshader' }, 'swiftshader'],
    [{ vendor: 'mesa', description: 'llvmpipe (LLVM 15.0.6, 256 bits)' }, 'llvmpipe'],
    [{ vendor: 'mesa', device: 'lavapipe' }, 'lavapipe'],
    [{ vendor: 'microsoft', description: 'Microsoft Basic Render Driver' }, 'Basic Render Driver'],
    [{ vendor: 'microsoft', architecture: 'WARP' }, 'WARP'],
  ])('names of CPU rasterisers without the flag: %j', (info, word) => {
    const why = softwareAdapterReason({ info: { ...info, isFallbackAdapter: false } });
    expect(why).toContain(word);
  });

  test.each([
    { vendor: 'nvidia', architecture: 'hopper' },
    { vendor: 'intel', architecture: 'gen-12lp', description: 'Intel(R) UHD Graphics 770' },
    { vendor: 'apple', architecture: 'metal-3' },
    { vendor: 'amd', architecture: 'rdna-3', description: 'AMD Radeon RX 7900 XTX' },
    { vendor: 'microsoft', description: 'Software update pending' }, // "software" alone is not a renderer name
    {},
  ])('hardware adapters are not software ones: %j', (info) => {
    expect(softwareAdapterReason({ info })).toBeNull();
  });
});

describe('probeWebGpu', () => {
  test('no navigator.gpu, no adapter, a throwing requestAdapter', async () => {
    expect(await probeWebGpu(undefined)).toMatchObject({ ok: false, reason: expect.stringMatching(/navigator\.gpu is missing/) });
    expect(await probeWebGpu(gpuWith(null))).toMatchObject({ ok: false, reason: expect.stringMatching(/returned null/) });
    const throwing: GpuLike = { requestAdapter: async () => { throw new Error('GPU process crashed'); } };
    expect(await probeWebGpu(throwing)).toMatchObject({ ok: false, reason: expect.stringMatching(/threw: GPU process crashed/) });
  });

  test('names the adapter, says whether it is software and whether it runs f16 shaders', async () => {
    const sw = await probeWebGpu(gpuWith(SWIFTSHADER));
    expect(sw).toMatchObject({ ok: true, shaderF16: false, software: expect.stringMatching(/fallback/) });
    expect(sw.reason).toBe('navigator.gpu adapter: google / swiftshader, a software adapter that runs on the CPU (the browser flags it as a fallback adapter)');
    const hw = await probeWebGpu(gpuWith(NVIDIA, ['shader-f16']));
    expect(hw).toEqual({ ok: true, shaderF16: true, software: null, reason: 'navigator.gpu adapter: nvidia / hopper' });
  });
});

describe('chooseDevice', () => {
  test('auto on a software adapter: WASM, and the reason names the adapter as a software one', async () => {
    const c = await chooseDevice('auto', 'fp32', gpuWith(SWIFTSHADER));
    expect(c.device).toBe('wasm');
    expect(c.reason).toMatch(/^WASM chosen over WebGPU: navigator\.gpu adapter: google \/ swiftshader, a software adapter that runs on the CPU/);
    expect(c.reason).toMatch(/choose WebGPU explicitly/);
  });

  test('auto on a hardware adapter: WebGPU, also for f16 dtypes when it has shader-f16', async () => {
    expect(await chooseDevice('auto', 'fp32', gpuWith(NVIDIA))).toEqual({ device: 'webgpu', reason: 'navigator.gpu adapter: nvidia / hopper' });
    expect((await chooseDevice('auto', 'q4f16', gpuWith(NVIDIA, ['shader-f16']))).device).toBe('webgpu');
    expect((await chooseDevice('auto', undefined, gpuWith(NVIDIA))).device).toBe('webgpu');
  });

  test('auto on a hardware adapter without shader-f16: WASM for fp16/q4f16, WebGPU for the others', async () => {
    for (const dtype of ['fp16', 'q4f16']) {
      const c = await chooseDevice('auto', dtype, gpuWith(NVIDIA));
      expect(c).toEqual({ device: 'wasm', reason: `WASM chosen over WebGPU: navigator.gpu adapter: nvidia / hopper; it has no shader-f16, which ${dtype} graphs (float16 activations) need` });
    }
    for (const dtype of ['fp32', 'q4', 'q8']) expect((await chooseDevice('auto', dtype, gpuWith(NVIDIA))).device).toBe('webgpu');
  });

  test('auto on a software adapter without shader-f16 gives both reasons', async () => {
    const c = await chooseDevice('auto', 'q4f16', gpuWith(SWIFTSHADER));
    expect(c.device).toBe('wasm');
    expect(c.reason).toMatch(/software adapter that runs on the CPU.*; it has no shader-f16, which q4f16 graphs/);
  });

  test('auto without WebGPU: WASM with the reason', async () => {
    expect(await chooseDevice('auto', 'fp32', gpuWith(null))).toEqual({
      device: 'wasm', reason: 'WebGPU unusable, using WASM: navigator.gpu.requestAdapter() returned null (no usable GPU adapter)',
    });
  });

  test('explicit webgpu is honoured on a software adapter, with a warning in the reason', async () => {
    const c = await chooseDevice('webgpu', 'fp32', gpuWith(SWIFTSHADER));
    expect(c.device).toBe('webgpu');
    expect(c.reason).toMatch(/^WebGPU requested: navigator\.gpu adapter: google \/ swiftshader, a software .*much slower than WASM$/);
    expect(await chooseDevice('webgpu', 'fp32', gpuWith(NVIDIA))).toEqual({ device: 'webgpu', reason: 'WebGPU requested: navigator.gpu adapter: nvidia / hopper' });
  });

  test('explicit webgpu that cannot run the dtype, or without an adapter, throws with the reason', async () => {
    await expect(chooseDevice('webgpu', 'q4f16', gpuWith(SWIFTSHADER))).rejects.toThrow(/^WebGPU requested but unusable: .*swiftshader.*; it has no shader-f16, which q4f16 graphs/);
    await expect(chooseDevice('webgpu', 'fp32', gpuWith(null))).rejects.toThrow(/^WebGPU requested but unusable: .*returned null/);
  });

  test('wasm is taken as asked; an unknown device is refused by name', async () => {
    expect(await chooseDevice('wasm', 'fp32', gpuWith(NVIDIA))).toEqual({ device: 'wasm', reason: 'WASM requested' });
    await expect(chooseDevice('cuda' as never, 'fp32', gpuWith(NVIDIA))).rejects.toThrow(/device must be 'auto', 'webgpu' or 'wasm', got "cuda"/);
  });
});

describe('wasmThreads', () => {
  test('every logical core up to the cap when cross-origin isolated; one thread otherwise', () => {
    expect(MAX_WASM_THREADS).toBe(4);
    // onnxruntime-web's own default would give 1, 1, 2 and 4 here
    expect([1, 2, 4, 16].map((n) => wasmThreads(true, n))).toEqual([1, 2, 4, 4]);
    expect(wasmThreads(false, 8)).toBe(1);
    // a browser that hides its core count
    expect(wasmThreads(true, undefined)).toBe(1);
    expect(wasmThreads(true, 0)).toBe(1);
  });
});
