/**
 * The browser path end to end: the LLM worker (workers/llm.worker.ts) in headless Chromium loads a tiny test model
 * through the Vite dev server, patches it and self-checks it, then generates greedily with zero steering and with a
 * steering matrix. Every result must equal what loadSteerableModel gives in Node (onnxruntime-node, CPU) on the same
 * files. Once on WASM, once on WebGPU (SwiftShader's software adapter, fp32 model; docs/METHOD-NOTES.md section 5).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { buildTestModel, type BuiltModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { mulberry32 } from '../../src/core/onnx/testmodel/weights.js';
import { loadSteerableModel, type SteerableModel } from '../../src/core/model/index.js';
import type { SteerlabDebugApi } from '../../src/ui/debug/main.js';
import type { LlmDevice } from '../../workers/protocol.js';
import { compareFlow } from '../../src/core/method/flow.js';
import { defaultPolicySettings, policyFromSettings, type PolicySettings } from '../../src/core/method/settings.js';
import { decodeDirectionFile, embeddingDirectionFile, encodeDirectionFile } from '../../src/core/steering/direction-file.js';
import { modelFields } from '../../src/core/model/model-id.js';
import { normalize } from '../../src/core/steering/vector.js';
import { launchChromium, openDebugPage, startLabServer, type BrowserSession, type LabServer, failureDiagnostics, TEST_GUARD_MS } from './harness.js';

const MODEL_NAME = 'tiny-plain';
const MOUNT = '/test-models/';
const USER_PROMPT = 'Steer me, gently.';
const NEW_TOKENS = 12;
/** fp32 graph on three runtimes (onnxruntime-node CPU, ORT-web WASM, ORT-web WebGPU): differences are rounding only. */
const LOGIT_TOLERANCE = 1e-4;

declare global {
  interface Window { steerlabDebug: SteerlabDebugApi }
}

interface NodeExpectations {
  promptIds: number[];
  unsteered: number[];
  steered: number[];
  /** [1, S, V] logits of one forward over the prompt, with the steering matrix. */
  steeredLogits: Float32Array;
  /** compareFlow with the manual policy on DIRECTION: row 0 and row 1 of one batch-2 generation. */
  compare: { base: number[]; steered: number[] };
}

let tmp: string;
let built: BuiltModel;
let server: LabServer;
let steering: Float32Array;
let expected: NodeExpectations;

/** A seeded steering matrix: rows 1 and 2 get a random direction, large enough to change the greedy tokens. */
function makeSteering(L: number, H: number, scale: number): Float32Array {
  const rand = mulberry32(1234);
  const m = new Float32Array(L * H);
  for (const layer of [1, 2]) for (let h = 0; h < H; h++) m[layer * H + h] = (rand() * 2 - 1) * scale;
  return m;
}

/** A unit direction file for the test model, and manual settings strong enough to change its replies. */
let directionBytes: Uint8Array;
let manual: PolicySettings;

async function nodeExpectations(model: SteerableModel): Promise<NodeExpectations> {
  const promptIds = model.formatChat(USER_PROMPT).ids;
  const unsteered = (await model.generate({ inputIds: promptIds, maxNewTokens: NEW_TOKENS, steering: null })).tokenIds;
  const steered = (await model.generate({ inputIds: promptIds, maxNewTokens: NEW_TOKENS, steering })).tokenIds;
  const steeredLogits = (await model.forward([promptIds], { steering })).logits.data;
  const file = decodeDirectionFile(directionBytes);
  const pair = await compareFlow(model, USER_PROMPT, { direction: file.direction }, {
    policy: policyFromSettings(manual, { direction: file, cast: null, hasController: false }), maxNewTokens: NEW_TOKENS, fit: 'none',
  });
  return { promptIds, unsteered, steered, steeredLogits, compare: { base: pair.base.tokenIds, steered: pair.steered.tokenIds } };
}

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'steerlab-browser-'));
  built = await buildTestModel(join(tmp, MODEL_NAME), { shape: SHAPE_PRESETS.tiny!, topology: 'plain', seed: 7 });
  const { numLayers: L, hiddenSize: H } = built.shape;
  steering = makeSteering(L, H, 3);
  const unit = normalize(Float32Array.from({ length: H }, (_, h) => Math.sin(h * 0.9 + 0.4)));
  manual = { ...defaultPolicySettings(L), kind: 'manual', manualScale: 1, manualWeights: new Array<number>(L).fill(1), alpha: 30 };
  const nodeModel = await loadSteerableModel(built.dir, { device: 'cpu', dtype: 'fp32' });
  try {
    // Made for the model's identity (its content hash), as the worker checks: the browser must compute the same one.
    directionBytes = encodeDirectionFile(embeddingDirectionFile(unit, 'unembedding', { ...modelFields(nodeModel.identity), hiddenSize: H, numLayers: L }));
    expected = await nodeExpectations(nodeModel);
  } finally {
    await nodeModel.dispose();
  }
  // The test is only meaningful if the matrix changes what the model says.
  expect(expected.steered, 'steering matrix must change the greedy tokens in Node').not.toEqual(expected.unsteered);
  expect(expected.compare.steered, 'the manual policy must change the greedy tokens in Node').not.toEqual(expected.compare.base);
  server = await startLabServer({ [MOUNT]: tmp });
});

afterAll(async () => {
  await server?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch: ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Load, generate (zero steering, per-call matrix, no matrix), forward, cancel: all compared with Node. */
async function checkDevice(session: BrowserSession, device: LlmDevice | 'auto', expectDevice: LlmDevice): Promise<Record<string, number>> {
  const { page } = session;
  const times: Record<string, number> = {};
  let t = Date.now();
  await openDebugPage(session, server.url);
  times.pageMs = Date.now() - t;

  t = Date.now();
  const { info, events } = await page.evaluate(
    (req) => window.steerlabDebug.load(req),
    { model: MODEL_NAME, localModelPath: MOUNT, allowRemoteModels: false, device, dtype: 'fp32' as const },
  );
  times.loadMs = Date.now() - t;
  expect(info.device, `device (reason: ${info.deviceReason})`).toBe(expectDevice);
  expect(info.numLayers).toBe(built.shape.numLayers);
  expect(info.hiddenSize).toBe(built.shape.hiddenSize);
  expect(info.patch.topology).toBe('plain');
  expect(info.selfCheck?.ok, `self-check ${JSON.stringify(info.selfCheck)}`).toBe(true);
  const stages = new Set(events.map((e) => e.stage));
  for (const s of ['download', 'patch', 'session', 'self-check', 'ready'] as const) expect(stages, `progress stage ${s}`).toContain(s);
  expect(events.some((e) => e.stage === 'download' && e.file === 'onnx/model.onnx' && e.done)).toBe(true);

  const gen = (steer: number[] | null | undefined, cancelAfter?: number, maxNewTokens = NEW_TOKENS) =>
    page.evaluate(
      ([s, c, n]) => window.steerlabDebug.generate({ prompt: { kind: 'chat', user: 'Steer me, gently.' }, maxNewTokens: n, steering: s }, { cancelAfter: c }),
      [steer, cancelAfter, maxNewTokens] as const,
    );

  t = Date.now();
  const zero = await gen(null);
  times.generateZeroMs = Date.now() - t;
  expect(zero.result.promptIds, 'chat-formatted prompt ids (browser tokenizer vs Node)').toEqual(expected.promptIds);
  expect(zero.result.tokenIds, 'greedy tokens, zero steering').toEqual(expected.unsteered);
  expect(zero.events.map((e) => e.id), 'streamed token events').toEqual(zero.result.tokenIds);

  t = Date.now();
  const steered = await gen(Array.from(steering));
  times.generateSteeredMs = Date.now() - t;
  expect(steered.result.tokenIds, 'greedy tokens, per-call steering matrix').toEqual(expected.steered);

  // No hidden steering state: a call without a matrix after a steered one is unsteered.
  expect((await gen(undefined)).result.tokenIds, 'greedy tokens, no matrix after a steered call').toEqual(expected.unsteered);

  const fwd = await page.evaluate(([ids, s]) => window.steerlabDebug.forward({ inputIds: [ids], steering: s }), [expected.promptIds, Array.from(steering)] as const);
  const { numLayers: L, hiddenSize: H, vocabSize: V } = built.shape;
  const S = expected.promptIds.length;
  expect(fwd.logitsDims).toEqual([1, S, V]);
  expect(fwd.residualDims).toEqual([1, L + 1, S, H]);
  const logitDiff = maxAbsDiff(fwd.logits, expected.steeredLogits);
  times.maxLogitDiffVsNode = logitDiff;
  expect(logitDiff, 'steered forward logits vs Node').toBeLessThan(LOGIT_TOLERANCE);

  // compare: base and steered from one batch-2 generation, as in Node (on WebGPU the KV cache stays on the GPU, so
  // both rows are prefilled there; on WASM the batch-1 prefix cache is repeated).
  await page.evaluate((b) => window.steerlabDebug.useDirection(b, null), Array.from(directionBytes));
  const pair = await page.evaluate((req) => window.steerlabDebug.compare(req), { prompt: USER_PROMPT, maxNewTokens: NEW_TOKENS, sampling: null, settings: manual, fit: 'none' as const });
  expect(pair.reply.base.tokenIds, 'compare row 0 (base) vs Node').toEqual(expected.compare.base);
  expect(pair.reply.steered.tokenIds, 'compare row 1 (steered) vs Node').toEqual(expected.compare.steered);
  expect(pair.reply.base.tokenIds, 'row 0 is the plain unsteered generation').toEqual(expected.unsteered);

  // cancel() after the 2nd streamed token stops the generation early.
  const cancelled = await gen(null, 2, 200);
  expect(cancelled.result.finishReason).toBe('abort');
  expect(cancelled.result.tokenIds.length).toBeGreaterThanOrEqual(2);
  expect(cancelled.result.tokenIds.length).toBeLessThan(200);

  await page.evaluate(() => window.steerlabDebug.dispose());

  // Offline: every request stayed on our 127.0.0.1 origin (no CDN for onnxruntime-web, no hub).
  const foreign = session.requests.filter((u) => !u.startsWith(server.url) && !u.startsWith('blob:') && !u.startsWith('data:'));
  expect(foreign, 'requests that left the local server').toEqual([]);
  const ortFiles = session.requests.filter((u) => u.startsWith(`${server.url}/ort/`)).map((u) => new URL(u).pathname);
  expect(new Set(ortFiles)).toEqual(new Set(['/ort/ort-wasm-simd-threaded.asyncify.wasm', '/ort/ort-wasm-simd-threaded.asyncify.mjs']));
  return times;
}

describe('LLM worker in headless Chromium', () => {
  test('WASM: load + patch + self-check, greedy tokens with and without steering equal Node', async () => {
    const session = await launchChromium();
    try {
      const times = await checkDevice(session, 'wasm', 'wasm');
      console.log(`[browser wasm] ${JSON.stringify(times)}`);
    } catch (e) {
      throw await failureDiagnostics(session, 'worker-wasm', e);
    } finally {
      await session.close();
    }
  }, TEST_GUARD_MS);

  test('WebGPU (SwiftShader adapter): fp32 model, greedy tokens with and without steering equal Node', async () => {
    const session = await launchChromium({ webgpu: true });
    try {
      await openDebugPage(session, server.url);
      const probe = await session.page.evaluate(() => window.steerlabDebug.probeDevice());
      // Fail loudly: this environment is expected to offer SwiftShader's WebGPU adapter (docs/METHOD-NOTES.md section 5).
      if (!probe.webgpu) throw new Error(`WebGPU adapter not offered in headless Chromium with --enable-unsafe-webgpu: ${probe.reason}`);
      // Asked for by name: 'auto' rightly prefers WASM on this software adapter (fallback.test.ts).
      const times = await checkDevice(session, 'webgpu', 'webgpu');
      console.log(`[browser webgpu] adapter: ${probe.reason}; ${JSON.stringify(times)}`);
    } catch (e) {
      throw await failureDiagnostics(session, 'worker-webgpu', e);
    } finally {
      await session.close();
    }
  }, TEST_GUARD_MS); // ~30-40 s on 2 cores (SwiftShader compiles every shader on the CPU)
});
