/**
 * Picks the tfjs backend the controller runs on. Node: 'wasm' (XNNPACK, ~15x faster than 'cpu' for the controller's
 * matrix-vector product) if it initialises, else 'cpu'. Browser / Web Worker: webgpu, webgl, wasm, cpu in that order.
 *
 * No Node-only import at top level: in Node the wasm binaries are located through a dynamic import of node:module,
 * hidden from bundlers, so this file bundles unchanged into a browser worker. In the browser the .wasm files must be
 * served by the app: pass `wasmPaths` (a URL prefix ending in "/", or a file map) or tfjs looks next to the script.
 */
import * as tf from '@tensorflow/tfjs-core';
// The CPU backend is always registered so the controller works even if selectBackend is never called.
import '@tensorflow/tfjs-backend-cpu';

// In Node, tfjs's CPU backend prints advice to install tfjs-node (a native package this project does not use, see
// selectBackend) on stderr the first time it holds a tensor: noise in every command's output. The engine makes its
// backend instances once, when first asked for one; ask now and mark the CPU instance as used.
if (isNodeRuntime()) {
  void tf.engine().backend;
  const cpu = tf.findBackend('cpu') as { firstUse?: boolean } | null;
  if (cpu && 'firstUse' in cpu) cpu.firstUse = false;
}

export type ControllerBackendName = 'webgpu' | 'webgl' | 'wasm' | 'cpu';
export const KNOWN_BACKENDS: readonly ControllerBackendName[] = ['webgpu', 'webgl', 'wasm', 'cpu'];

export interface SelectBackendOptions {
  /** Where the tfjs wasm binaries are served (browser); in Node the installed package's dist folder is used. */
  wasmPaths?: string | Record<string, string>;
}

export interface BackendAttempt {
  name: string;
  ok: boolean;
  /** Why it was not used (missing API, init failure, failed self-check). */
  reason?: string;
}

export interface BackendReport {
  active: string;
  attempts: BackendAttempt[];
}

let lastReport: BackendReport | null = null;
let wasmPathsSet = false;

export function isNodeRuntime(): boolean {
  const p = (globalThis as { process?: { versions?: { node?: string } } }).process;
  return typeof p?.versions?.node === 'string';
}

export function defaultBackendOrder(): ControllerBackendName[] {
  return isNodeRuntime() ? ['wasm', 'cpu'] : ['webgpu', 'webgl', 'wasm', 'cpu'];
}

/** Name of the tfjs backend in use now. */
export function activeBackend(): string {
  return tf.getBackend();
}

/** What the last selectBackend call tried and why each candidate was or was not used. */
export function lastBackendReport(): BackendReport | null {
  return lastReport;
}

/** Makes sure the backend's package is loaded (registered with tfjs); returns a reason string if it cannot be. */
async function register(name: ControllerBackendName, options: SelectBackendOptions): Promise<string | null> {
  switch (name) {
    case 'cpu':
      // Bundlers may drop the static side-effect import above (the package's Node entry is not in its sideEffects
      // list); a dynamic import is never dropped.
      if (!tf.findBackendFactory('cpu')) await import('@tensorflow/tfjs-backend-cpu');
      return null;
    case 'webgpu':
      if (isNodeRuntime()) return 'WebGPU is not available in Node';
      if (!(globalThis as { navigator?: { gpu?: unknown } }).navigator?.gpu) return 'navigator.gpu is missing (no WebGPU)';
      await import('@tensorflow/tfjs-backend-webgpu');
      return null;
    case 'webgl':
      if (isNodeRuntime()) return 'WebGL is not available in Node';
      if (typeof OffscreenCanvas === 'undefined' && typeof document === 'undefined') return 'no OffscreenCanvas or document (no WebGL)';
      await import('@tensorflow/tfjs-backend-webgl');
      return null;
    case 'wasm': {
      if (typeof WebAssembly === 'undefined') return 'WebAssembly is missing';
      const wasm = await import('@tensorflow/tfjs-backend-wasm');
      if (!wasmPathsSet) {
        const paths = options.wasmPaths ?? (isNodeRuntime() ? await nodeWasmDir() : undefined);
        if (paths !== undefined) wasm.setWasmPaths(paths);
        wasmPathsSet = true;
      }
      return null;
    }
  }
}

/** Folder of the installed tfjs-backend-wasm dist files, with a trailing slash (Node only). */
async function nodeWasmDir(): Promise<string> {
  const moduleSpecifier = 'node:module';
  const pathSpecifier = 'node:path';
  const { createRequire } = (await import(/* @vite-ignore */ moduleSpecifier)) as typeof import('node:module');
  const path = (await import(/* @vite-ignore */ pathSpecifier)) as typeof import('node:path');
  const require = createRequire(import.meta.url);
  return path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm')) + path.sep;
}

/** A 2x2 product checks that the backend really computes (some initialise yet fail on first use). */
async function selfCheck(): Promise<string | null> {
  const y = tf.tidy(() => tf.matMul(tf.tensor2d([1, 2, 3, 4], [2, 2]), tf.tensor2d([5, 6, 7, 8], [2, 2])));
  try {
    const v = await y.data();
    const want = [19, 22, 43, 50];
    return want.every((w, i) => Math.abs(v[i] - w) < 1e-3) ? null : `self-check gave [${Array.from(v).join(', ')}], expected [19, 22, 43, 50]`;
  } finally {
    y.dispose();
  }
}

/**
 * Tries each backend in `preferred` (default: defaultBackendOrder()) and keeps the first that initialises and passes
 * a self-check. Returns its name; lastBackendReport() says what was tried. Throws if none works.
 */
export async function selectBackend(preferred?: string[], options: SelectBackendOptions = {}): Promise<string> {
  const order = preferred ?? defaultBackendOrder();
  if (!Array.isArray(order) || order.length === 0) throw new Error('selectBackend: expected a non-empty list of backend names');
  const attempts: BackendAttempt[] = [];
  for (const name of order) {
    if (!KNOWN_BACKENDS.includes(name as ControllerBackendName)) {
      attempts.push({ name, ok: false, reason: `unknown backend, expected one of ${KNOWN_BACKENDS.join(', ')}` });
      continue;
    }
    try {
      const why = await register(name as ControllerBackendName, options);
      if (why) {
        attempts.push({ name, ok: false, reason: why });
        continue;
      }
      if (!(await tf.setBackend(name))) {
        attempts.push({ name, ok: false, reason: 'tfjs could not initialise it' });
        continue;
      }
      await tf.ready();
      const bad = await selfCheck();
      if (bad) {
        attempts.push({ name, ok: false, reason: bad });
        continue;
      }
      attempts.push({ name, ok: true });
      lastReport = { active: tf.getBackend(), attempts };
      return tf.getBackend();
    } catch (e) {
      attempts.push({ name, ok: false, reason: (e as Error).message });
    }
  }
  lastReport = { active: tf.getBackend(), attempts };
  throw new Error(`selectBackend: no backend worked: ${attempts.map((a) => `${a.name} (${a.reason})`).join('; ')}`);
}
