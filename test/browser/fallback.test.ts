/**
 * Device choice on the adapter headless Chromium offers here: SwiftShader, a software (CPU) WebGPU adapter that
 * Chromium flags as a fallback one.
 * - Any dtype: 'auto' must not choose it (it is far slower than WASM) and must say it is a software adapter; an
 *   explicit 'webgpu' still uses it (worker.test.ts runs the whole WebGPU path that way).
 * - q4f16 (fp16 activations, MatMulNBits): SwiftShader has no shader-f16, so an explicit 'webgpu' must be refused with
 *   the reason before any WebGPU session exists (a failed WebGPU run leaves onnxruntime-web broken in that worker).
 *   On WASM the q4f16 model must match Node.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { buildTestModel, type BuiltModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { loadSteerableModel } from '../../src/core/model/index.js';
import type { SteerlabDebugApi } from '../../src/ui/debug/main.js';
import { launchChromium, openDebugPage, startLabServer, type LabServer, failureDiagnostics, TEST_GUARD_MS } from './harness.js';

declare global {
  interface Window { steerlabDebug: SteerlabDebugApi }
}

const NEW_TOKENS = 8;
const USER = 'Half precision, please.';
let tmp: string;
let built: BuiltModel;
let server: LabServer;
let nodeTokens: number[];
let nodeLogits: Float32Array;
let promptIds: number[];

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'steerlab-fallback-'));
  built = await buildTestModel(join(tmp, 'tiny-q4f16'), { shape: SHAPE_PRESETS.tiny!, topology: 'fused-q4f16', seed: 5 });
  const m = await loadSteerableModel(built.dir, { device: 'cpu', dtype: 'q4f16' });
  try {
    promptIds = m.formatChat(USER).ids;
    nodeTokens = (await m.generate({ inputIds: promptIds, maxNewTokens: NEW_TOKENS, steering: null })).tokenIds;
    nodeLogits = (await m.forward([promptIds], { steering: null })).logits.data;
  } finally {
    await m.dispose();
  }
  await buildTestModel(join(tmp, 'tiny-plain'), { shape: SHAPE_PRESETS.tiny!, topology: 'plain', seed: 5 });
  server = await startLabServer({ '/test-models/': tmp });
});

afterAll(async () => {
  await server?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test('q4f16 model: auto picks WASM on a software adapter without shader-f16 and says why; explicit webgpu is refused', async () => {
  const session = await launchChromium({ webgpu: true });
  try {
    await openDebugPage(session, server.url);
    const probe = await session.page.evaluate(() => window.steerlabDebug.probeDevice());
    if (!probe.webgpu) throw new Error(`WebGPU adapter not offered in headless Chromium with --enable-unsafe-webgpu: ${probe.reason}`);
    // The premise: SwiftShader offers no shader-f16. If a future Chromium adds it, this test must be rethought.
    expect(probe.shaderF16, 'SwiftShader adapter unexpectedly offers shader-f16').toBe(false);
    const req = { model: 'tiny-q4f16', localModelPath: '/test-models/', allowRemoteModels: false, dtype: 'q4f16' as const };

    const explicit = await session.page.evaluate((r) => window.steerlabDebug.load({ ...r, device: 'webgpu' }).then(() => 'loaded', (e: Error) => e.message), req);
    console.log(`[fallback] explicit webgpu: ${explicit}`);
    expect(explicit).toMatch(/^WebGPU requested but unusable: .*swiftshader.*; it has no shader-f16, which q4f16 graphs/);

    const t = Date.now();
    const { info } = await session.page.evaluate((r) => window.steerlabDebug.load({ ...r, device: 'auto' }), req);
    console.log(`[fallback] auto: ${info.device} (${info.deviceReason}) in ${Date.now() - t} ms`);
    expect(info.device).toBe('wasm');
    expect(info.deviceReason).toMatch(/^WASM chosen over WebGPU: .*software adapter that runs on the CPU.*; it has no shader-f16/);
    expect(info.selfCheck?.ok).toBe(true);
    expect(info.patch.stream_dtype).toBe('float16');

    const { result } = await session.page.evaluate(
      (n) => window.steerlabDebug.generate({ prompt: { kind: 'chat', user: 'Half precision, please.' }, maxNewTokens: n, steering: null }),
      NEW_TOKENS,
    );
    expect(result.promptIds).toEqual(promptIds);
    const fwd = await session.page.evaluate((ids) => window.steerlabDebug.forward({ inputIds: [ids], steering: null }), promptIds);
    let diff = 0;
    for (let i = 0; i < nodeLogits.length; i++) diff = Math.max(diff, Math.abs(fwd.logits[i]! - nodeLogits[i]!));
    console.log(`[fallback] q4f16 WASM vs Node: max logit diff ${diff}; tokens ${JSON.stringify(result.tokenIds)} vs ${JSON.stringify(nodeTokens)}`);
    expect(diff).toBeLessThan(5e-2);
    expect(result.tokenIds).toEqual(nodeTokens);
  } catch (e) {
    throw await failureDiagnostics(session, 'fallback', e);
  } finally {
    await session.close();
  }
}, TEST_GUARD_MS);

test('fp32 model: auto does not choose the software adapter and names it as one; explicit webgpu takes it', async () => {
  const session = await launchChromium({ webgpu: true });
  try {
    await openDebugPage(session, server.url);
    const probe = await session.page.evaluate(() => window.steerlabDebug.probeDevice());
    if (!probe.webgpu) throw new Error(`WebGPU adapter not offered in headless Chromium with --enable-unsafe-webgpu: ${probe.reason}`);
    console.log(`[fallback] adapter: ${probe.reason}`);
    // The premise: Chromium here offers SwiftShader and flags it (adapter.info.isFallbackAdapter).
    expect(probe.reason).toMatch(/swiftshader, a software adapter that runs on the CPU \(the browser flags it as a fallback adapter\)/);
    // What the Model panel labels Auto by (webgpu && !software): the probe says the adapter is a CPU one.
    expect(probe.software).toBe('the browser flags it as a fallback adapter');
    const req = { model: 'tiny-plain', localModelPath: '/test-models/', allowRemoteModels: false, dtype: 'fp32' as const };

    const auto = await session.page.evaluate((r) => window.steerlabDebug.load({ ...r, device: 'auto' }), req);
    console.log(`[fallback] fp32 auto: ${auto.info.device} (${auto.info.deviceReason})`);
    expect(auto.info.device).toBe('wasm');
    expect(auto.info.deviceReason).toMatch(/^WASM chosen over WebGPU: navigator\.gpu adapter: google \/ swiftshader, a software adapter that runs on the CPU.*choose WebGPU explicitly/);
    expect(auto.info.selfCheck?.ok).toBe(true);

    // A WASM session first, then WebGPU in the same worker: the explicit request is honoured, and the self-check
    // (forward passes with and without an injected vector) runs on it. worker.test.ts covers generation on WebGPU.
    const explicit = await session.page.evaluate((r) => window.steerlabDebug.load({ ...r, device: 'webgpu' }), req);
    expect(explicit.info.device).toBe('webgpu');
    expect(explicit.info.deviceReason).toMatch(/^WebGPU requested: .*swiftshader.*much slower than WASM$/);
    expect(explicit.info.selfCheck?.ok).toBe(true);
  } catch (e) {
    throw await failureDiagnostics(session, 'fallback-fp32', e);
  } finally {
    await session.close();
  }
}, TEST_GUARD_MS);
