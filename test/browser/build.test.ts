/**
 * The production bundle works on its own: `vite build` output (the worker, onnxruntime-web's ort/ files) served by
 * `vite preview`, with no dev server and nothing from a CDN, loads a tiny test model in the LLM worker on WASM and
 * generates the greedy tokens of the pure-JS reference forward pass (an oracle independent of onnxruntime).
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { buildTestModel, type BuiltModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { referenceGreedy } from '../../src/core/onnx/testmodel/reference.js';
import { ENDOFTEXT_ID, IM_END_ID } from '../../src/core/onnx/testmodel/tokenizer.js';
import { generateWeights } from '../../src/core/onnx/testmodel/weights.js';
import type { SteerlabDebugApi } from '../../src/ui/debug/main.js';
import { buildAndPreview, launchChromium, openDebugPage, failureDiagnostics, TEST_GUARD_MS } from './harness.js';

declare global {
  interface Window { steerlabDebug: SteerlabDebugApi }
}

const NEW_TOKENS = 8;
let tmp: string;
let built: BuiltModel;
let app: { url: string; close(): Promise<void> };
const outDir = () => join(tmp, 'dist');

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'steerlab-build-'));
  built = await buildTestModel(join(tmp, 'models', 'tiny-plain'), { shape: SHAPE_PRESETS.tiny!, topology: 'plain', seed: 11 });
  app = await buildAndPreview(outDir(), { '/test-models/': join(tmp, 'models') });
});

afterAll(async () => {
  await app?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test('built app: ort/ files are emitted once, and the worker loads and generates offline on WASM', async () => {
  // The run-time pair sits under ort/; no second hashed copy of the 27 MB wasm in assets/.
  const ort = readdirSync(join(outDir(), 'ort')).sort();
  expect(ort).toEqual(['ort-wasm-simd-threaded.asyncify.mjs', 'ort-wasm-simd-threaded.asyncify.wasm']);
  expect(statSync(join(outDir(), 'ort', 'ort-wasm-simd-threaded.asyncify.wasm')).size).toBeGreaterThan(1e7);
  expect(readdirSync(join(outDir(), 'assets')).filter((f) => f.endsWith('.wasm') && f.startsWith('ort-'))).toEqual([]);
  expect(readdirSync(join(outDir(), 'assets')).some((f) => /^llm\.worker-.*\.js$/.test(f)), 'bundled LLM worker').toBe(true);
  // Vite bundles a worker only for the literal `new Worker(new URL('./x.worker.ts', import.meta.url), ...)`; any
  // other spelling ships the TypeScript source as an asset (a .ts file, or a data:video/mp2t URL), dead at run time.
  const assets = readdirSync(join(outDir(), 'assets'));
  expect.soft(assets.filter((f) => f.endsWith('.ts')), 'TypeScript sources shipped as assets (worker not bundled)').toEqual([]);
  const jsWithTsDataUrl = assets.filter((f) => f.endsWith('.js') && readFileSync(join(outDir(), 'assets', f), 'utf8').includes('data:video/mp2t'));
  expect.soft(jsWithTsDataUrl, 'bundles that inline a .ts file as a data: URL (worker not bundled)').toEqual([]);

  const session = await launchChromium();
  try {
    await openDebugPage(session, app.url);
    const { info } = await session.page.evaluate(
      (req) => window.steerlabDebug.load(req),
      { model: 'tiny-plain', localModelPath: '/test-models/', allowRemoteModels: false, device: 'wasm' as const, dtype: 'fp32' as const },
    );
    expect(info.device).toBe('wasm');
    expect(info.selfCheck?.ok).toBe(true);
    const { result } = await session.page.evaluate(
      (n) => window.steerlabDebug.generate({ prompt: { kind: 'chat', user: 'Hello from the built app.' }, maxNewTokens: n, steering: null }),
      NEW_TOKENS,
    );
    const reference = referenceGreedy(built.shape, generateWeights(built.shape, built.seed), result.promptIds, NEW_TOKENS, [IM_END_ID, ENDOFTEXT_ID]);
    expect(result.tokenIds, 'greedy tokens of the built app vs the reference forward pass').toEqual(reference);

    const foreign = session.requests.filter((u) => !u.startsWith(app.url) && !u.startsWith('blob:') && !u.startsWith('data:'));
    expect(foreign, 'requests that left the local server').toEqual([]);
    expect(session.requests.filter((u) => u.startsWith(`${app.url}/ort/`)).map((u) => new URL(u).pathname).sort())
      .toEqual(['/ort/ort-wasm-simd-threaded.asyncify.mjs', '/ort/ort-wasm-simd-threaded.asyncify.wasm']);
  } catch (e) {
    throw await failureDiagnostics(session, 'build', e);
  } finally {
    await session.close();
  }
}, TEST_GUARD_MS);
