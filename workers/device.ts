/**
 * Device choice for the LLM worker: WebGPU when navigator.gpu hands out an adapter, else WASM.
 * The reason travels back to the UI (LoadedModelInfo.deviceReason) so a silent fallback is never a mystery.
 */
import type { LlmDevice, LlmDeviceRequest } from './protocol.js';

/** The slice of the WebGPU API we touch (TypeScript's DOM lib carries no WebGPU types). */
interface GpuAdapterLike {
  info?: { vendor?: string; architecture?: string; device?: string; description?: string };
  isFallbackAdapter?: boolean;
  features?: { has(name: string): boolean };
}
interface GpuLike { requestAdapter(opts?: { powerPreference?: 'low-power' | 'high-performance' }): Promise<GpuAdapterLike | null> }

export interface DeviceChoice { device: LlmDevice; reason: string }

function describeAdapter(a: GpuAdapterLike): string {
  const i = a.info ?? {};
  const parts = [i.vendor, i.architecture, i.device, i.description].filter((p) => p && p.length > 0);
  return `navigator.gpu adapter: ${parts.length ? parts.join(' / ') : 'unnamed'}${a.isFallbackAdapter ? ' (fallback adapter)' : ''}`;
}

export type WebGpuProbe = { ok: true; reason: string; shaderF16: boolean } | { ok: false; reason: string };

/** Why WebGPU is unavailable here, or the adapter it offers and whether it runs f16 shaders. */
export async function probeWebGpu(): Promise<WebGpuProbe> {
  const gpu = (globalThis.navigator as { gpu?: GpuLike } | undefined)?.gpu;
  if (!gpu) {
    const secure = (globalThis as { isSecureContext?: boolean }).isSecureContext;
    return { ok: false, reason: `navigator.gpu is missing (${secure === false ? 'not a secure context' : 'browser without WebGPU, or WebGPU disabled'})` };
  }
  let adapter: GpuAdapterLike | null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  } catch (e) {
    return { ok: false, reason: `navigator.gpu.requestAdapter() threw: ${(e as Error).message}` };
  }
  if (!adapter) return { ok: false, reason: 'navigator.gpu.requestAdapter() returned null (no usable GPU adapter)' };
  return { ok: true, reason: describeAdapter(adapter), shaderF16: adapter.features?.has('shader-f16') ?? false };
}

/** Graph dtypes with float16 activations: their WebGPU kernels need the adapter's shader-f16 feature. */
const F16_DTYPES: readonly string[] = ['fp16', 'q4f16'];

/**
 * 'auto' falls back to WASM with the reason; an explicit 'webgpu' that cannot be honoured throws, because the
 * caller (a test, a benchmark) asked for that device on purpose.
 *
 * The shader-f16 check happens here, before any session exists, because trying is not free: after a WebGPU
 * kernel fails at run time, onnxruntime-web 1.31-dev in that worker keeps failing with the same error even for
 * WASM sessions (measured with a q4f16 graph on SwiftShader), so a try-then-fall-back would need a new worker.
 */
export async function chooseDevice(requested: LlmDeviceRequest = 'auto', dtype?: string): Promise<DeviceChoice> {
  if (requested === 'wasm') return { device: 'wasm', reason: 'WASM requested' };
  if (requested !== 'webgpu' && requested !== 'auto') {
    throw new Error(`device must be 'auto', 'webgpu' or 'wasm', got ${JSON.stringify(requested)}`);
  }
  const probe = await probeWebGpu();
  let why: string;
  if (!probe.ok) why = probe.reason;
  else if (dtype !== undefined && F16_DTYPES.includes(dtype) && !probe.shaderF16) {
    why = `${probe.reason} has no shader-f16, which ${dtype} graphs (float16 activations) need`;
  } else return { device: 'webgpu', reason: probe.reason };
  if (requested === 'webgpu') throw new Error(`WebGPU requested but unusable: ${why}`);
  return { device: 'wasm', reason: `WebGPU unusable, using WASM: ${why}` };
}
