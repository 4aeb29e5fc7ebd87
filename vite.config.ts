import { existsSync, readFileSync, readdirSync, statSync, createReadStream } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig, type Plugin } from 'vite';
import { svelte } from '@sveltejs/vite-plugin-svelte';
import { ORT_ASSET_DIR, ORT_RUNTIME_FILES } from './workers/ort-assets.js';
import { contentSecurityPolicy } from './src/ui/csp.js';

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
 * Serves (dev) and emits (build) onnxruntime-web's run-time pair under `<base>ort/`, so the workers never
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
    // Dev only: `vite preview` serves the emitted dist/ort/ files, so it checks what a static host would ship.
    configureServer(server) { server.middlewares.use(middleware); },
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
 * The lab's Content-Security-Policy (src/ui/csp.ts) in the built index.html as a <meta> tag, for static hosts that
 * send no header; the dev and preview servers send it as a header (below), which also covers the workers. Adds an
 * empty inline favicon so browsers do not ask the server for /favicon.ico.
 */
function labHtml(): Plugin {
  return {
    name: 'steerlab-lab-html',
    transformIndexHtml: {
      order: 'post',
      handler(_html, ctx) {
        const tags: { tag: string; attrs: Record<string, string>; injectTo: 'head-prepend' | 'head' }[] = [
          { tag: 'link', attrs: { rel: 'icon', href: 'data:,' }, injectTo: 'head' },
        ];
        if (!ctx.server) tags.unshift({ tag: 'meta', attrs: { 'http-equiv': 'Content-Security-Policy', content: contentSecurityPolicy({ meta: true }) }, injectTo: 'head-prepend' });
        return tags;
      },
    },
  };
}

/** Model folders the built app ships: every file under models/ (the embedded default model and its artefacts). */
const MODELS_DIR = join(root, 'models');
/** Larger files are left out of the build (with a warning): a static app should not carry hub-sized weights. */
const MAX_SHIPPED_MODEL_FILE = 256 * 1024 * 1024;

function listFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    return e.isDirectory() ? listFiles(p) : e.isFile() ? [p] : [];
  });
}

/**
 * Dev serves models/ from the project root already (/models/<name>/...); the build copies it to dist/models/ so the
 * default model loads from a static host (and `vite preview`) too.
 */
function labModelFiles(): Plugin {
  return {
    name: 'steerlab-model-files',
    apply: 'build',
    generateBundle() {
      for (const file of listFiles(MODELS_DIR)) {
        const rel = relative(root, file).split(sep).join('/');
        const size = statSync(file).size;
        if (size > MAX_SHIPPED_MODEL_FILE) {
          this.warn(`${rel} (${size} bytes) is larger than ${MAX_SHIPPED_MODEL_FILE} bytes and is not copied into the build`);
          continue;
        }
        this.emitFile({ type: 'asset', fileName: rel, source: readFileSync(file) });
      }
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

/**
 * Pages of the production build: the lab only. The worker debug page (src/ui/debug/index.html) is served by the dev
 * server for development and browser tests (whose builds add it back, test/browser/harness.ts), never shipped.
 */
export const BUILD_PAGES = { main: join(root, 'index.html') };

// The lab is a static app: everything heavy runs in Web Workers (see workers/).
export default defineConfig({
  // Relative asset URLs: the build works from any folder of any static host (https://host/some/sub/path/).
  base: './',
  plugins: [nodeBuiltinStubs(), svelte(), ortRuntimeFiles(), labHtml(), labModelFiles()],
  worker: { format: 'es' },
  build: {
    target: 'es2022',
    outDir: 'dist',
    rollupOptions: { input: BUILD_PAGES },
  },
  optimizeDeps: {
    exclude: ['@huggingface/transformers', 'onnxruntime-web'],
    // Dependencies reached only from workers escape the start-up scan; found later, they make the dev server
    // re-bundle while a worker is loading (stale module errors). Listing them keeps the dev server deterministic.
    include: ['comlink', 'onnx-buf', '@bufbuild/protobuf'],
  },
  server: { host: '127.0.0.1', headers: { ...isolationHeaders, 'Content-Security-Policy': contentSecurityPolicy({ dev: true }) } },
  preview: { host: '127.0.0.1', headers: { ...isolationHeaders, 'Content-Security-Policy': contentSecurityPolicy() } },
});
