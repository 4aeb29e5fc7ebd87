/**
 * Headless-Chromium harness for browser tests run by vitest in Node: a Vite dev server on 127.0.0.1 (the app's own
 * vite.config.ts, plus folders mounted under URL prefixes) and Debian's /usr/bin/chromium driven by playwright-core.
 * Flags follow docs/METHOD-NOTES.md section 5: without the background-networking flags Chromium's connections are refused
 * many at a time on these machines.
 */
import { createReadStream, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { build, createServer, preview, type Plugin, type ViteDevServer } from 'vite';

export const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * Browser tests wait on the page's state, never on a guessed duration. This is the last guard of every wait: far
 * above what a correct run takes on a loaded 2-core machine, so it only ends a run that hangs.
 */
export const GUARD_MS = 300_000;
/** A browser test's own limit, as a last guard above its waits. */
export const TEST_GUARD_MS = 900_000;
/** Where browser tests leave a screenshot and the browser's console log when they fail. */
export const BROWSER_OUTPUT = join(PROJECT_ROOT, 'test-output/browser');
export const CHROMIUM_PATH = process.env.STEERLAB_CHROMIUM ?? '/usr/bin/chromium';

const CONTENT_TYPES: Record<string, string> = {
  '.json': 'application/json', '.onnx': 'application/octet-stream', '.onnx_data': 'application/octet-stream',
  '.txt': 'text/plain', '.bin': 'application/octet-stream',
};

/** Serves a folder read-only under a URL prefix; refuses paths that climb out of it. */
function mountFolder(prefix: string, dir: string): Plugin {
  const root = resolve(dir);
  const serve = (req: IncomingMessage, res: ServerResponse, next: () => void): void => {
    const path = decodeURIComponent((req.url ?? '').split('?')[0] ?? '');
    if (!path.startsWith(prefix)) return next();
    const file = normalize(join(root, path.slice(prefix.length)));
    if (!(file === root || file.startsWith(root + sep)) || !existsSync(file) || !statSync(file).isFile()) {
      res.statusCode = 404;
      res.end(`not found: ${path}`);
      return;
    }
    res.setHeader('Content-Type', CONTENT_TYPES[extname(file)] ?? 'application/octet-stream');
    res.setHeader('Content-Length', String(statSync(file).size));
    createReadStream(file).pipe(res);
  };
  return {
    name: `steerlab-test-mount:${prefix}`,
    configureServer(server) { server.middlewares.use(serve); },
    configurePreviewServer(server) { server.middlewares.use(serve); },
  };
}

export interface LabServer { url: string; server: ViteDevServer; close(): Promise<void> }

/** Starts the app's Vite dev server on 127.0.0.1 (a secure context, so WebGPU is offered) on a free port. */
export async function startLabServer(mounts: Record<string, string> = {}): Promise<LabServer> {
  for (const prefix of Object.keys(mounts)) {
    if (!prefix.startsWith('/') || !prefix.endsWith('/')) throw new Error(`mount prefix must start and end with '/', got ${prefix}`);
  }
  // A private dependency cache: servers of parallel test files (and a developer's `npm start`) never rewrite
  // each other's node_modules/.vite while a page is loading from it.
  const cacheDir = mkdtempSync(join(tmpdir(), 'steerlab-vite-cache-'));
  const server = await createServer({
    root: PROJECT_ROOT,
    configFile: join(PROJECT_ROOT, 'vite.config.ts'),
    cacheDir,
    logLevel: (process.env.STEERLAB_VITE_LOG as 'info' | undefined) ?? 'warn',
    clearScreen: false,
    server: { host: '127.0.0.1', port: 0, strictPort: false, hmr: false, watch: null },
    plugins: Object.entries(mounts).map(([p, d]) => mountFolder(p, d)),
  });
  await server.listen();
  const addr = server.httpServer?.address() as AddressInfo | null;
  if (!addr || typeof addr === 'string') throw new Error('vite dev server did not report a TCP address');
  return {
    url: `http://127.0.0.1:${addr.port}`,
    server,
    async close() {
      await server.close();
      rmSync(cacheDir, { recursive: true, force: true });
    },
  };
}

/** `vite build` of the app (the production bundle: index.html, workers, ort/, data/, models/) into outDir. */
export async function buildApp(outDir: string): Promise<void> {
  // The production build ships no debug page (vite.config.ts BUILD_PAGES); the tests drive the worker through it.
  const input = { main: join(PROJECT_ROOT, 'index.html'), debug: join(PROJECT_ROOT, 'src/ui/debug/index.html') };
  await build({ root: PROJECT_ROOT, configFile: join(PROJECT_ROOT, 'vite.config.ts'), logLevel: 'error', build: { outDir, emptyOutDir: true, rollupOptions: { input } } });
}

/**
 * Builds the app (vite build, the production bundle: worker, ort/ files) into outDir and serves it with
 * `vite preview` on 127.0.0.1, folders mounted as in startLabServer. Proves the built app works with no dev server.
 */
export async function buildAndPreview(outDir: string, mounts: Record<string, string> = {}): Promise<{ url: string; close(): Promise<void> }> {
  const configFile = join(PROJECT_ROOT, 'vite.config.ts');
  await buildApp(outDir);
  const server = await preview({
    root: PROJECT_ROOT,
    configFile,
    logLevel: 'warn',
    build: { outDir },
    preview: { host: '127.0.0.1', port: 0, strictPort: false },
    plugins: Object.entries(mounts).map(([p, d]) => mountFolder(p, d)),
  });
  const addr = server.httpServer.address() as AddressInfo | null;
  if (!addr || typeof addr === 'string') throw new Error('vite preview server did not report a TCP address');
  return {
    url: `http://127.0.0.1:${addr.port}`,
    close: () => server.close(),
  };
}

export interface BrowserSession {
  context: BrowserContext;
  page: Page;
  /** Every URL the page and its workers requested, in order. */
  requests: string[];
  /** Console lines and page errors, for failure messages. */
  log: string[];
  close(): Promise<void>;
}

/** Launches Chromium with a fresh profile; webgpu adds --enable-unsafe-webgpu (SwiftShader adapter on GPU-less machines). */
export async function launchChromium(opts: { webgpu?: boolean } = {}): Promise<BrowserSession> {
  if (!existsSync(CHROMIUM_PATH)) throw new Error(`Chromium not found at ${CHROMIUM_PATH} (apt-get install chromium, or set STEERLAB_CHROMIUM)`);
  const userDataDir = mkdtempSync(join(tmpdir(), 'steerlab-chromium-'));
  const args = [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync',
  ];
  if (opts.webgpu) args.push('--enable-unsafe-webgpu');
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM_PATH, headless: true, args, timeout: GUARD_MS,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(GUARD_MS);
  const requests: string[] = [];
  const log: string[] = [];
  context.on('request', (r) => requests.push(r.url()));
  page.on('console', (m) => log.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => log.push(`[pageerror] ${e.message}`));
  page.on('worker', (w) => w.on('console', (m) => log.push(`[worker ${m.type()}] ${m.text()}`)));
  return {
    context, page, requests, log,
    async close() {
      await context.close();
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/** Opens the worker debug page (src/ui/debug) and waits until its worker API is on window.steerlabDebug. */
export async function openDebugPage(session: BrowserSession, serverUrl: string): Promise<void> {
  await session.page.goto(`${serverUrl}/src/ui/debug/index.html`);
  try {
    await session.page.waitForFunction(() => 'steerlabDebug' in window, null, { timeout: GUARD_MS });
  } catch (e) {
    throw new Error(`debug page did not start: ${(e as Error).message}\nbrowser log:\n${session.log.join('\n')}`);
  }
}

/**
 * A failed browser test's evidence: a screenshot and the browser's console log (page, workers, page errors) in
 * test-output/browser/<name>/, and an error that names both and carries the last console lines.
 */
export async function failureDiagnostics(session: BrowserSession, name: string, e: unknown): Promise<Error> {
  const dir = join(BROWSER_OUTPUT, name);
  mkdirSync(dir, { recursive: true });
  const shot = join(dir, 'failure.png');
  const log = join(dir, 'console.log');
  await session.page.screenshot({ path: shot, fullPage: true }).catch(() => undefined);
  writeFileSync(log, `${session.log.join('\n')}\n`);
  return new Error(`${(e as Error).message}\n(screenshot: ${shot}; browser console: ${log})\nlast browser lines:\n${session.log.slice(-20).join('\n')}`, { cause: e });
}

/** Runs a browser test's body; on failure leaves failureDiagnostics and rethrows. */
export async function withDiagnostics<T>(session: BrowserSession, name: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw await failureDiagnostics(session, name, e);
  }
}
