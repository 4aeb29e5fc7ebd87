/**
 * The built lab works from any folder of any static host: `vite build` output served by a plain static server under
 * /some/sub/path/ (no dev server, no preview server, no cross-origin isolation headers). The lab opens, the default
 * model loads (its files, onnxruntime-web's WASM, the shipped controller and tfjs's WASM all from under the sub-path),
 * a greedy generation streams tokens, a small controller training fetches its datasets, and not one request 404s
 * or leaves the sub-path. Chromium gets its software WebGPU adapter, so the Model panel must also show that Auto
 * chose WASM and why. On failure: a screenshot, the browser log and the requests in test-output/browser/subpath/.
 * Waits are on the page's state (lab-helpers.ts), bounded only by the harness's guards.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { BROWSER_OUTPUT, buildApp, failureDiagnostics, launchChromium } from './harness.js';
import { GUARD_MS, TEST_GUARD_MS, generateInPlayground, loadDefaultModel, trainSmallController } from './lab-helpers.js';
import { serveStatic, type StaticServer } from './static-server.js';

const SUB = '/some/sub/path/';
let tmp: string;
let server: StaticServer;

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'steerlab-subpath-'));
  await buildApp(join(tmp, 'dist'));
  server = await serveStatic(join(tmp, 'dist'), SUB);
});

afterAll(async () => {
  await server?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test('built lab served under a sub-path by a plain static server: default model, greedy tokens, no 404', async () => {
  const session = await launchChromium({ webgpu: true });
  const { page } = session;
  const failed: string[] = [];
  session.context.on('response', (r) => { if (r.status() >= 400) failed.push(`${r.status()} ${r.url()}`); });
  session.context.on('requestfailed', (r) => failed.push(`failed (${r.failure()?.errorText}) ${r.method()} ${r.url()}${r.headers().range ? ` (${r.headers().range})` : ''}`));
  const app = `${server.url}${SUB}`;
  try {
    await page.setViewportSize({ width: 1366, height: 900 });
    await page.goto(app);
    await loadDefaultModel(page);
    await expect.poll(() => page.getByTestId('self-check').textContent(), { timeout: GUARD_MS }).toMatch(/passed/);
    // Auto on SwiftShader: WASM, and the Model panel says the adapter is a software one.
    const device = (await page.getByTestId('model-device').textContent()) ?? '';
    expect(device).toMatch(/^wasm /);
    expect(device).toMatch(/swiftshader, a software adapter that runs on the CPU/);
    // The device picker labels Auto by what it really picks: WASM, not the software WebGPU adapter.
    await page.getByRole('tab', { name: 'Model' }).click();
    expect(await page.locator('#device-select option[value="auto"]').textContent()).toBe('Auto (WASM)');
    // The shipped direction and controller came from the model's folder under the sub-path.
    await expect.poll(() => page.locator('header').textContent(), { timeout: GUARD_MS }).toMatch(/direction: diff-in-means.*controller: loaded/);

    await generateInPlayground(page, 'Tell me about the sea.', 8);
    expect(await page.getByTestId('base-output').textContent()).not.toBe('');
    const baseInfo = (await page.locator('#panel-playground article').first().textContent()) ?? '';
    expect(Number(/(\d+) tokens, (?:eos|length)/.exec(baseInfo)?.[1]), `base reply: ${baseInfo}`).toBeGreaterThan(0);

    // Training fetches its prompt sets from data/ under the sub-path (and runs in the controller worker).
    await trainSmallController(page);

    expect(server.notFound, '404s at the static server').toEqual([]);
    expect(failed, 'failed requests seen by the browser').toEqual([]);
    const outside = session.requests.filter((u) => !u.startsWith(app) && !u.startsWith('blob:') && !u.startsWith('data:'));
    expect(outside, 'requests outside the sub-path').toEqual([]);
    // The files that used to be fetched from the host's root really came from under the sub-path.
    const paths = session.requests.filter((u) => u.startsWith(app)).map((u) => new URL(u).pathname.slice(SUB.length));
    for (const expected of [
      /^assets\/llm\.worker-[\w-]+\.js$/, /^assets\/controller\.worker-[\w-]+\.js$/, /^ort\/ort-wasm-simd-threaded\.asyncify\.wasm$/,
      /^ort\/ort-wasm-simd-threaded\.asyncify\.mjs$/, /^assets\/tfjs-backend-wasm[\w-]*\.wasm$/, /^models\/organism\/onnx\/model\.onnx$/,
      /^models\/organism\/controller\.safetensors$/, /^data\/.+\.(csv|jsonl|json)$/,
    ]) expect(paths.some((p) => expected.test(p)), `a request for ${expected} under ${SUB}; got ${paths.join(', ')}`).toBe(true);
    expect(session.log.filter((l) => l.startsWith('[pageerror]')), 'page errors').toEqual([]);
  } catch (e) {
    const err = await failureDiagnostics(session, 'subpath', e);
    writeFileSync(join(BROWSER_OUTPUT, 'subpath', 'requests.log'), ['requests:', ...session.requests, '', 'failed:', ...failed].join('\n'));
    throw err;
  } finally {
    await session.close();
  }
}, TEST_GUARD_MS);
