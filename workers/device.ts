/**
 * Device choice for the LLM worker: WebGPU when navigator.gpu hands out an adapter, else WASM.
 * The reason travels back to the UI (LoadedModelInfo.deviceReason) so a silent fallback is never a mystery.
 */
import type { LlmDevice, LlmDeviceRequest } from './protocol.js';

/** The slice of the WebGPU API we touch (TypeScript's DOM lib carries no WebGPU types). */
interface GpuAdapterLike { info?: { vendor?: string; architecture?: string; device?: string; description?: string }; isFallbackAdapter?: boolean }
interface GpuLike { requestAdapter(opts?: { powerPreference?: 'low-power' | 'high-performance' }): Promise<GpuAdapterLike | null> }

export interface DeviceChoice { device: LlmDevice; reason: string }

function describeAdapter(a: GpuAdapterLike): string {
  const i = a.info ?? {};
  const parts = [i.vendor, i.architecture, i.device, i.description].filter((p) => p && p.length > 0);
  return `navigator.gpu adapter: ${parts.length ? parts.join(' / ') : 'unnamed'}${a.isFallbackAdapter ? ' (fallback adapter)' : ''}`;
}

/** Why WebGPU is unavailable here, or the adapter it offers. */
export async function probeWebGpu(): Promise<{ ok: true; reason: string } | { ok: false; reason: string }> {
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
  return { ok: true, reason: describeAdapter(adapter) };
}

/**
 * 'auto' falls back to WASM with the reason; an explicit 'webgpu' that cannot be honoured throws, because the
 * caller (a test, a benchmark) asked for that device on purpose.
 */
export async function chooseDevice(requested: LlmDeviceRequest = 'auto'): Promise<DeviceChoice> {
  if (requested === 'wasm') return { device: 'wasm', reason: 'WASM requested' };
  if (requested !== 'webgpu' && requested !== 'auto') {
    throw new Error(`device must be 'auto', 'webgpu' or 'wasm', got ${JSON.stringify(requested)}`);
  }
  const probe = await probeWebGpu();
  if (probe.ok) return { device: 'webgpu', reason: probe.reason };
  if (requested === 'webgpu') throw new Error(`WebGPU requested but unavailable: ${probe.reason}`);
  return { device: 'wasm', reason: `WebGPU unavailable, using WASM: ${probe.reason}` };
}
