/**
 * The onnxruntime-web run-time files the workers load, served from our own origin so nothing comes from a CDN.
 *
 * transformers.js 4.3.1 imports `onnxruntime-web/webgpu`, which resolves to its nested
 * onnxruntime-web 1.31-dev `dist/ort.webgpu.bundle.min.mjs`. That bundle (WebGPU and WASM execution providers in
 * one binary) loads exactly one Emscripten pair at run time: `ort-wasm-simd-threaded.asyncify.{mjs,wasm}`.
 * Without `wasmPaths`, transformers.js points both at cdn.jsdelivr.net.
 *
 * Shared by vite.config.ts (which serves and emits the files) and llm.worker.ts (which points transformers.js at them).
 */
export const ORT_ASSET_DIR = 'ort/';

export const ORT_RUNTIME_FILES = {
  mjs: 'ort-wasm-simd-threaded.asyncify.mjs',
  wasm: 'ort-wasm-simd-threaded.asyncify.wasm',
} as const;

/**
 * The app's root URL as a worker sees it. Vite's BASE_URL is absolute in dev ('/') and './' in the build (vite.config
 * sets `base: './'` so the build works from any sub-path). A relative base means "relative to the page", but a
 * worker resolves relative URLs against its own script, which Vite's build places in `assets/` (build.assetsDir, one
 * folder below the root; test/browser/build.test.ts checks where the worker lands): so one level up from the
 * worker is the root.
 */
export function appRootUrl(base: string, workerUrl: string): URL {
  const b = base === '' ? './' : base.endsWith('/') ? base : `${base}/`;
  if (b.startsWith('/') || /^[a-z][a-z\d+.-]*:/i.test(b)) return new URL(b, workerUrl);
  return new URL(`../${b}`, workerUrl);
}

/**
 * Absolute URLs of the run-time pair, for `env.backends.onnx.wasm.wasmPaths`. root = appRootUrl(...).
 * The file names carry no hash, and transformers.js keeps the .wasm in Cache Storage under its URL, so the
 * onnxruntime-web version goes into the query: after an upgrade a browser never pairs a cached old .wasm with
 * the new JavaScript glue.
 */
export function ortWasmPaths(root: URL, ortVersion?: string): { mjs: string; wasm: string } {
  const dir = new URL(ORT_ASSET_DIR, root);
  const q = ortVersion ? `?v=${encodeURIComponent(ortVersion)}` : '';
  return { mjs: new URL(ORT_RUNTIME_FILES.mjs + q, dir).href, wasm: new URL(ORT_RUNTIME_FILES.wasm + q, dir).href };
}
