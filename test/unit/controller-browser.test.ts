/**
 * The controller in a real browser Web Worker (Debian's headless Chromium via playwright-core, docs/METHOD-NOTES.md section 5):
 * src/core/controller/index.ts is bundled for the browser (proving it has no Node-only import), and in a module
 * worker selectBackend() must pick WebGPU first (SwiftShader's software adapter), then fall through webgl / wasm /
 * cpu on request; predictions and a short training run must work and agree across backends.
 * (Self-contained: esbuild + a tiny static server; could move to test/browser alongside the app's browser tests.)
 */
import { build } from 'esbuild';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const WASM_DIR = path.join(ROOT, 'node_modules/@tensorflow/tfjs-backend-wasm/dist');

const WORKER_SOURCE = `
import { selectBackend, lastBackendReport, ControllerNetwork, initControllerParams, trainController, syntheticActivations }
  from './src/core/controller/index.ts';
self.onmessage = async (e) => {
  try {
    const backend = await selectBackend(e.data.prefs ?? undefined, { wasmPaths: '/wasm/' });
    const net = new ControllerNetwork(initControllerParams({ inputSize: 64, hiddenWidth: 32, numLayers: 6 }, 1));
    const x = syntheticActivations({ rows: 1, inputSize: 64, seed: 1 }).x;
    const out = await net.predictAsync(x);
    let sync;
    try { sync = net.predict(x).scale; } catch (err) { sync = String(err.message); }
    const data = syntheticActivations({ rows: 200, inputSize: 64, separation: 0.4, seed: 2 });
    const c = await trainController(data, { modelId: 'w', numLayers: 6, hiddenSize: 32, hiddenWidth: 32, epochs: 3,
      learningRate: 2e-3, batchSize: 8, validation: data });
    postMessage({ backend, report: lastBackendReport(), scale: out.scale, w: Array.from(out.layerWeights), sync,
      acc: c.metadata.metrics.held_out_accuracy, trainBackend: c.metadata.metrics.backend });
  } catch (err) { postMessage({ error: String(err && err.stack || err) }); }
};`;

const PAGE = `<!doctype html><html><body><script type="module">
window.runCase = (prefs) => new Promise((resolve) => {
  const w = new Worker('/worker.js', { type: 'module' });
  w.onmessage = (e) => { resolve(e.data); w.terminate(); };
  w.onerror = (e) => resolve({ error: 'worker error: ' + e.message });
  w.postMessage({ prefs });
});
</script></body></html>`;

interface CaseResult {
  error?: string;
  backend: string;
  report: { active: string; attempts: { name: string; ok: boolean; reason?: string }[] };
  scale: number;
  w: number[];
  sync: number | string;
  acc: number;
  trainBackend: string;
}

let server: Server;
let browser: Browser;
let page: Page;

beforeAll(async () => {
  const bundle = await build({
    stdin: { contents: WORKER_SOURCE, resolveDir: ROOT, loader: 'js', sourcefile: 'controller-test-worker.js' },
    bundle: true,
    platform: 'browser',
    format: 'esm',
    write: false,
    logLevel: 'silent',
  });
  const workerJs = bundle.outputFiles[0].contents;
  server = createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (url === '/') return res.writeHead(200, { 'content-type': 'text/html' }).end(PAGE);
    if (url === '/worker.js') return res.writeHead(200, { 'content-type': 'text/javascript' }).end(workerJs);
    const m = /^\/wasm\/(tfjs-backend-wasm[a-z-]*\.wasm)$/.exec(url);
    if (m) return res.writeHead(200, { 'content-type': 'application/wasm' }).end(readFileSync(path.join(WASM_DIR, m[1])));
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  browser = await chromium.launch({
    executablePath: process.env.STEERLAB_CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--enable-unsafe-webgpu'],
  });
  page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
});

afterAll(async () => {
  await browser?.close();
  await new Promise((r) => server?.close(r));
});

const runCase = (prefs: string[] | null) =>
  page.evaluate((p) => (window as unknown as { runCase(p: string[] | null): Promise<CaseResult> }).runCase(p), prefs);

describe('controller in a browser Web Worker', () => {
  it('picks webgpu first by default, falls through on request, and agrees across backends', async () => {
    const results: Record<string, CaseResult> = {};
    for (const prefs of [null, ['webgl', 'cpu'], ['wasm'], ['cpu']]) {
      const r = await runCase(prefs);
      expect(r.error).toBeUndefined();
      results[prefs ? prefs[0] : 'default'] = r;
    }
    expect(results.default.backend).toBe('webgpu');
    expect(results.default.report.attempts).toEqual([{ name: 'webgpu', ok: true }]);
    // WebGPU has no synchronous read-back: predict() says to use predictAsync.
    expect(results.default.sync).toMatch(/use predictAsync/);
    expect(results.webgl.backend).toBe('webgl');
    expect(results.wasm.backend).toBe('wasm');
    expect(results.cpu.backend).toBe('cpu');
    const ref = results.cpu;
    for (const r of Object.values(results)) {
      expect(r.trainBackend).toBe(r.backend);
      expect(r.acc).toBeGreaterThanOrEqual(0.95);
      expect(r.scale).toBeCloseTo(ref.scale, 4);
      r.w.forEach((w, i) => expect(w).toBeCloseTo(ref.w[i], 5));
      if (r.backend !== 'webgpu') expect(r.sync).toBe(r.scale);
    }
  });
});
