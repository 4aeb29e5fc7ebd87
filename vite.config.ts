import { existsSync, readFileSync, statSync, createReadStream } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig, type Plugin } from 'vite';
import { svelte } from '@sveltejs/vite-plugin-svelte';
import { ORT_ASSET_DIR, ORT_RUNTIME_FILES } from './workers/ort-assets.js';

const root = dirname(fileURLToPath(import.meta.url));

/**
 * transformers.js brings its own onnxruntime-web (nested, 1.31-dev); the run-time .wasm/.mjs must be that exact
 * build, so read them from the nested copy and fall back to a top-level one only if npm hoisted it.
 */
function ortDistDir(): string {
  const candidates = [
    join(root, 'node_modules/@huggingface/transformers/node_modules/onnxruntime-web/dist'),
    join(root, 'node_modules/onnxruntime-web/dist'),
  ];
  const found = candidates.find((d) => existsSync(join(d, ORT_RUNTIME_FILES.wasm)));
  if (!found) {
    throw new Error(`steerlab vite config: ${ORT_RUNTIME_FILES.wasm} not found; expected it in one of ${candidates.join(', ')} (run npm install)`);
  }
  return found;
}

/**
 * Serves (dev, preview) and emits (build) onnxruntime-web's run-time pair under `<base>ort/`, so the workers never
 * fetch it from a CDN. The worker points transformers.js at these URLs (workers/ort-assets.ts).
 */
function ortRuntimeFiles(): Plugin {
  const dist = ortDistDir();
  const files = Object.values(ORT_RUNTIME_FILES);
  const contentType = (f: string) => (f.endsWith('.wasm') ? 'application/wasm' : 'text/javascript');
  let base = '/';
  const middleware = (req: { url?: string }, res: import('node:http').ServerResponse, next: () => void) => {
    const path = (req.url ?? '').split('?')[0] ?? '';
    const prefix = `${base}${ORT_ASSET_DIR}`;
    if (!path.startsWith(prefix)) return next();
    const name = path.slice(prefix.length);
    if (!files.includes(name as (typeof files)[number])) return next();
    const file = join(dist, name);
    res.setHeader('Content-Type', contentType(name));
    res.setHeader('Content-Length', String(statSync(file).size));
    res.setHeader('Cache-Control', 'no-cache');
    createReadStream(file).pipe(res);
  };
  return {
    name: 'steerlab-ort-runtime-files',
    configResolved(config) { base = config.base; },
    configureServer(server) { server.middlewares.use(middleware); },
    configurePreviewServer(server) { server.middlewares.use(middleware); },
    generateBundle(_options, bundle) {
      // ort.webgpu.bundle.min.mjs holds `new URL('ort-wasm-simd-threaded.asyncify.wasm', import.meta.url)`, so Vite
      // emits a second, hashed 27 MB copy. That default is dead: transformers.js always sets wasmPaths (ours, or
      // the CDN when unset), so drop the copy and ship only ort/.
      for (const key of Object.keys(bundle)) {
        if (/^assets\/ort-wasm-simd-threaded\.asyncify-[\w-]+\.wasm$/.test(key)) delete bundle[key];
      }
      for (const f of files) {
        this.emitFile({ type: 'asset', fileName: `${ORT_ASSET_DIR}${f}`, source: readFileSync(join(dist, f)) });
      }
    },
  };
}

const STUB_PREFIX = '\0steerlab-node-stub:';

/**
 * Core modules keep Node-only helpers (e.g. patchDecoderFile's file I/O) beside browser-safe code, so a worker can
 * import a module that names `node:*` builtins it never calls there. Vite's own browser stub throws as soon as a
 * named import is read, which kills the worker at start-up; this one exports every name the real builtin has
 * (read from Node here) as a function that throws only when called, naming the builtin.
 */
function nodeBuiltinStubs(): Plugin {
  return {
    name: 'steerlab-node-builtin-stubs',
    enforce: 'pre',
    resolveId(id, _importer, opts) {
      if (opts?.ssr || !id.startsWith('node:')) return null;
      return `${STUB_PREFIX}${id}`;
    },
    async load(id) {
      if (!id.startsWith(STUB_PREFIX)) return null;
      const mod = id.slice(STUB_PREFIX.length);
      let names: string[];
      try {
        names = Object.keys(await import(mod)).filter((n) => n !== 'default' && /^[A-Za-z_$][\w$]*$/.test(n));
      } catch {
        names = [];
      }
      const fail = (n: string) => `() => { throw new Error(${JSON.stringify(`${mod}${n ? `.${n}` : ''} is Node-only and cannot run in the browser`)}); }`;
      return [
        ...names.map((n) => `export const ${n} = ${fail(n)};`),
        `export default new Proxy({}, { get: (_t, p) => (typeof p === 'string' ? (${fail('')}) : undefined) });`,
      ].join('\n');
    },
  };
}

/**
 * Cross-origin isolation lets onnxruntime-web use SharedArrayBuffer, hence WASM threads. `credentialless` (not
 * `require-corp`) keeps cross-origin model downloads from the hub working.
 */
const isolationHeaders = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'credentialless',
};

// The lab is a static app: everything heavy runs in Web Workers (see workers/).
export default defineConfig({
  plugins: [nodeBuiltinStubs(), svelte(), ortRuntimeFiles()],
  worker: { format: 'es' },
  build: {
    target: 'es2022',
    outDir: 'dist',
    rollupOptions: { input: { main: join(root, 'index.html'), debug: join(root, 'src/ui/debug/index.html') } },
  },
  optimizeDeps: {
    exclude: ['@huggingface/transformers', 'onnxruntime-web'],
    // Dependencies reached only from workers escape the start-up scan; found later, they make the dev server
    // re-bundle while a worker is loading (stale module errors). Listing them keeps the dev server deterministic.
    include: ['comlink', 'onnx-buf', '@bufbuild/protobuf'],
  },
  server: { host: '127.0.0.1', headers: isolationHeaders },
  preview: { host: '127.0.0.1', headers: isolationHeaders },
});
