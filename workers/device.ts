/**
 * Device choice for the LLM worker. 'auto' takes WebGPU only when the adapter is a real GPU that can run the
 * chosen dtype; otherwise WASM. The reason travels back to the UI (LoadedModelInfo.deviceReason), in words, so a
 * fallback is never a mystery.
 *
 * Why software adapters are refused by 'auto': a WebGPU adapter that rasterises on the CPU (SwiftShader, Mesa's
 * llvmpipe/lavapipe, Windows' WARP "Microsoft Basic Render Driver") is what browsers offer on VMs and machines
 * without GPU drivers. It runs the model correctly but far slower than onnxruntime-web's WASM build: in headless
 * Chromium on a 2-core machine, the embedded model decoded 1.0-1.1 tokens/s on SwiftShader against 22-27 on WASM.
 *
 * How Chromium reports one (Chromium 156, `--enable-unsafe-webgpu`, no GPU): `adapter.isFallbackAdapter` is
 * gone (undefined); `adapter.info` is { vendor: 'google', architecture: 'swiftshader', device: '', description: '',
 * isFallbackAdapter: true }. So both the flag (old and new place) and the names are checked.
 */
import type { LlmDevice, LlmDeviceRequest } from './protocol.js';

/** The slice of the WebGPU API we touch (TypeScript's DOM lib carries no WebGPU types). */
export interface GpuAdapterLike {
  info?: { vendor?: string; architecture?: string; device?: string; description?: string; isFallbackAdapter?: boolean };
  /** Deprecated place of the flag (now adapter.info.isFallbackAdapter); older browsers still set it here. */
  isFallbackAdapter?: boolean;
  features?: { has(name: string): boolean };
}
export interface GpuLike { requestAdapter(opts?: { powerPreference?: 'low-power' | 'high-performance' }): Promise<GpuAdapterLike | null> }

export interface DeviceChoice { device: LlmDevice; reason: string }

/**
 * Names of CPU rasterisers behind WebGPU adapters: Chromium's SwiftShader, Mesa's llvmpipe / softpipe and its
 * Vulkan sibling lavapipe, and Windows' WARP (reported as "Microsoft Basic Render Driver").
 */
const SOFTWARE_RENDERER = /swiftshader|llvmpipe|lavapipe|softpipe|basic render driver|\bwarp\b|software (?:renderer|rasteri[sz]er|adapter)/i;

function adapterName(a: GpuAdapterLike): string {
  const i = a.info ?? {};
  const parts = [i.vendor, i.architecture, i.device, i.description].filter((p) => typeof p === 'string' && p.trim().length > 0);
  return parts.length ? parts.join(' / ') : 'an unnamed adapter';
}

/**
 * Why this adapter runs on the CPU rather than a GPU, or null when nothing says so. The browser's own fallback
 * flag is trusted first; the names catch software adapters a browser does not flag (Mesa drivers under Vulkan).
 */
export function softwareAdapterReason(a: GpuAdapterLike): string | null {
  if (a.info?.isFallbackAdapter === true || a.isFallbackAdapter === true) return 'the browser flags it as a fallback adapter';
  const i = a.info ?? {};
  for (const field of ['vendor', 'architecture', 'device', 'description'] as const) {
    const m = SOFTWARE_RENDERER.exec(i[field] ?? '');
    if (m) return `its ${field} names a software renderer ("${m[0]}")`;
  }
  return null;
}

export type WebGpuProbe =
  | { ok: true; reason: string; shaderF16: boolean; /** Why the adapter is a CPU one; null for a GPU. */ software: string | null }
  | { ok: false; reason: string };

/** The navigator.gpu of this global (window or worker), if any. */
function currentGpu(): GpuLike | undefined {
  return (globalThis.navigator as { gpu?: GpuLike } | undefined)?.gpu;
}

/** Why WebGPU is unavailable here, or the adapter it offers, whether it runs f16 shaders and whether it is a software one. */
export async function probeWebGpu(gpu: GpuLike | undefined = currentGpu()): Promise<WebGpuProbe> {
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
  const software = softwareAdapterReason(adapter);
  const name = adapterName(adapter);
  return {
    ok: true,
    reason: `navigator.gpu adapter: ${name}${software ? `, a software adapter that runs on the CPU (${software})` : ''}`,
    shaderF16: adapter.features?.has('shader-f16') ?? false,
    software,
  };
}

/** Graph dtypes with float16 activations: their WebGPU kernels need the adapter's shader-f16 feature. */
const F16_DTYPES: readonly string[] = ['fp16', 'q4f16'];

/**
 * 'auto' takes WebGPU only on a hardware adapter with the dtype's features, else WASM with the reason. An explicit
 * 'webgpu' is honoured on a software adapter too (tests and users who ask for it on purpose) but throws when the
 * adapter cannot run the dtype at all, because the caller asked for that device on purpose.
 *
 * The shader-f16 check happens here, before any session exists, because trying is not free: after a WebGPU
 * kernel fails at run time, onnxruntime-web 1.31-dev in that worker keeps failing with the same error even for
 * WASM sessions (measured with a q4f16 graph on SwiftShader), so a try-then-fall-back would need a new worker.
 * For the same reason (and because a software adapter compiles every shader on the CPU, tens of seconds for a
 * first run) 'auto' does not time a trial run on both devices: the adapter's own report decides.
 */
export async function chooseDevice(requested: LlmDeviceRequest = 'auto', dtype?: string, gpu: GpuLike | undefined = currentGpu()): Promise<DeviceChoice> {
  if (requested === 'wasm') return { device: 'wasm', reason: 'WASM requested' };
  if (requested !== 'webgpu' && requested !== 'auto') {
    throw new Error(`device must be 'auto', 'webgpu' or 'wasm', got ${JSON.stringify(requested)}`);
  }
  const probe = await probeWebGpu(gpu);
  if (!probe.ok) {
    if (requested === 'webgpu') throw new Error(`WebGPU requested but unusable: ${probe.reason}`);
    return { device: 'wasm', reason: `WebGPU unusable, using WASM: ${probe.reason}` };
  }
  const noF16 = dtype !== undefined && F16_DTYPES.includes(dtype) && !probe.shaderF16
    ? `it has no shader-f16, which ${dtype} graphs (float16 activations) need`
    : null;
  if (requested === 'webgpu') {
    if (noF16) throw new Error(`WebGPU requested but unusable: ${probe.reason}; ${noF16}`);
    return {
      device: 'webgpu',
      reason: `WebGPU requested: ${probe.reason}${probe.software ? '; it runs on the CPU, expect it to be much slower than WASM' : ''}`,
    };
  }
  if (!probe.software && !noF16) return { device: 'webgpu', reason: probe.reason };
  const why = [
    probe.reason,
    probe.software ? 'WASM is much faster than a CPU adapter (choose WebGPU explicitly to use it anyway)' : null,
    noF16,
  ].filter((x) => x !== null);
  return { device: 'wasm', reason: `WASM chosen over WebGPU: ${why.join('; ')}` };
}

/** The most WASM threads the lab asks for: onnxruntime-web's own cap. */
export const MAX_WASM_THREADS = 4;

/**
 * onnxruntime-web's thread count for this worker. Its own default is half the logical cores (at most 4), which is one
 * thread on a 2-core machine. The model runs in this worker, away from the page, so the lab takes every core up to
 * the cap. In headless Chromium on 2 cores, SmolLM2-135M shape, runs alternating 2 / 1 threads: decoding 26.2 and
 * 19.9 tokens/s against 12.6 and 13.7 (`npm run bench -- --only browser`, zero steering), and the eval runner 21.8
 * and 20.9 prompts/min against 14.7 and 14.0 at batch 1, 33.6 and 35.6 against 23.8 and 20.4 at batch 16. Without
 * cross-origin isolation there are no WASM threads at all.
 */
export function wasmThreads(crossOriginIsolated: boolean, logicalCores: number | undefined): number {
  if (!crossOriginIsolated) return 1;
  const cores = Number.isInteger(logicalCores) && logicalCores! > 0 ? logicalCores! : 1;
  return Math.min(MAX_WASM_THREADS, cores);
}
