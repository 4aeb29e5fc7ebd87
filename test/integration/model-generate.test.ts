/**
 * Steered generation on a small fp32 model, checked against the reference forward pass:
 * - the WAS flow (unsteered prefill of all but the last prompt token, observation of the last one, steered
 *   generation from that cache) keeps transformers.js's KV cache exact and steers exactly the last prompt token;
 * - 'all' steers every prompt position; policies see the observed residual; capture shapes and values;
 * - seeded sampling with top-p, abort, streaming callbacks, chat formatting and bad inputs.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTestModel, type BuiltModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { argmaxRow, referenceForward } from '../../src/core/onnx/testmodel/reference.js';
import { generateWeights, type DecoderWeights } from '../../src/core/onnx/testmodel/weights.js';
import { loadSteerableModel, type SteerableModel, type StepContext } from '../../src/core/model/index.js';

const shape = SHAPE_PRESETS.tiny!;
const L = shape.numLayers;
const H = shape.hiddenSize;
const L1H = (L + 1) * H;
const PROMPT = [5, 17, 200, 33, 8, 91, 140, 66];
const EOS = [2, 0];

let built: BuiltModel;
let sm: SteerableModel;
let weights: DecoderWeights;
const root = mkdtempSync(join(tmpdir(), 'steerlab-model-gen-'));

beforeAll(async () => {
  built = await buildTestModel(join(root, 'plain'), { shape, topology: 'plain', seed: 11 });
  weights = generateWeights(shape, built.seed);
  sm = await loadSteerableModel(built.dir, { dtype: 'fp32', modelFileName: built.modelFileName });
});
afterAll(async () => {
  await sm?.dispose();
  rmSync(root, { recursive: true, force: true });
});

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function rowSteering(layer: number, scale: number): Float32Array {
  const m = new Float32Array(L * H);
  for (let i = 0; i < H; i++) m[layer * H + i] = scale * Math.cos(i * 0.7 + layer);
  return m;
}

/** [L+1, H] of reference residuals [L+1, S, H] at position p. */
function refAt(res: Float32Array, S: number, p: number): Float32Array {
  const out = new Float32Array(L1H);
  for (let k = 0; k <= L; k++) out.set(res.subarray((k * S + p) * H, (k * S + p + 1) * H), k * H);
  return out;
}

/** Greedy decoding with the reference, steering every position (what 'all' means). */
function refGreedy(prompt: number[], maxNew: number, steering?: Float32Array): number[] {
  const ids = prompt.slice();
  const out: number[] = [];
  for (let t = 0; t < maxNew; t++) {
    const { logits } = referenceForward(shape, weights, ids, steering ? { steering } : {});
    const next = argmaxRow(logits, shape.vocabSize, ids.length - 1);
    out.push(next);
    ids.push(next);
    if (EOS.includes(next)) break;
  }
  return out;
}

describe('steered generation', () => {
  it('without steering: tokens and captured residuals equal the reference (KV cache after the split prefill is exact)', async () => {
    const r = await sm.generate({ inputIds: PROMPT, maxNewTokens: 12, steering: null, capture: 'all' });
    const expected = refGreedy(PROMPT, 12);
    expect(r.tokenIds).toEqual(expected);
    expect(r.finishReason).toBe(EOS.includes(expected.at(-1)!) ? 'eos' : 'length');
    const T = r.tokenIds.length;
    expect(r.tokenResiduals!.length).toBe(T * L1H);
    const full = [...PROMPT, ...r.tokenIds];
    const ref = referenceForward(shape, weights, full).residuals;
    expect(maxAbsDiff(r.promptResiduals!, refAt(ref, full.length, PROMPT.length - 1))).toBeLessThanOrEqual(1e-4);
    for (let t = 0; t < T; t++) {
      const row = r.tokenResiduals!.subarray(t * L1H, (t + 1) * L1H);
      expect(maxAbsDiff(row, refAt(ref, full.length, PROMPT.length - 1 + t))).toBeLessThanOrEqual(1e-4);
    }
  });

  it("'all' steers every prompt position: tokens equal the reference steered greedy", async () => {
    const m = rowSteering(1, 3);
    const r = await sm.generate({ inputIds: PROMPT, maxNewTokens: 10, steering: m, steerPromptPositions: 'all', capture: 'all' });
    expect(r.tokenIds).toEqual(refGreedy(PROMPT, 10, m));
    const full = [...PROMPT, ...r.tokenIds];
    const ref = referenceForward(shape, weights, full, { steering: m }).residuals;
    const last = r.tokenResiduals!.subarray((r.tokenIds.length - 1) * L1H);
    expect(maxAbsDiff(last, refAt(ref, full.length, full.length - 2))).toBeLessThanOrEqual(1e-4);
    // the observation is unsteered even when every prompt position is then steered
    const unsteered = referenceForward(shape, weights, PROMPT).residuals;
    expect(maxAbsDiff(r.promptResiduals!, refAt(unsteered, PROMPT.length, PROMPT.length - 1))).toBeLessThanOrEqual(1e-4);
  });

  it("'last' (default) steers the last prompt token on top of the unsteered prefix cache", async () => {
    const layer = 2;
    const m = rowSteering(layer, 2);
    const r = await sm.generate({ inputIds: PROMPT, maxNewTokens: 6, steering: m, capture: 'all' });
    const observed = r.promptResiduals!;
    const first = r.tokenResiduals!.subarray(0, L1H);
    // layers up to `layer` of the last prompt token see only the unsteered prefix: unchanged
    expect(maxAbsDiff(first.subarray(0, (layer + 1) * H), observed.subarray(0, (layer + 1) * H))).toBe(0);
    // the residual after `layer` is the observation plus the steering row, exactly
    let inj = 0;
    for (let i = 0; i < H; i++) inj = Math.max(inj, Math.abs(first[(layer + 1) * H + i]! - observed[(layer + 1) * H + i]! - m[layer * H + i]!));
    expect(inj).toBeLessThanOrEqual(1e-5);
    // later layers differ from the unsteered observation (the patch reached the logits' path)
    expect(maxAbsDiff(first.subarray(L * H), observed.subarray(L * H))).toBeGreaterThan(1e-3);
  });

  it('a policy is called before every pass with the unsteered prompt residual and the previous residual', async () => {
    const m = rowSteering(3, 2.5);
    const calls: StepContext[] = [];
    const r = await sm.generate({
      inputIds: PROMPT,
      maxNewTokens: 5,
      capture: 'all',
      steering: (ctx) => {
        calls.push({ ...ctx, promptResidual: ctx.promptResidual && ctx.promptResidual.slice() });
        return m;
      },
    });
    const fixed = await sm.generate({ inputIds: PROMPT, maxNewTokens: 5, steering: m });
    expect(r.tokenIds).toEqual(fixed.tokenIds);
    expect(calls.map((c) => c.step)).toEqual(r.tokenIds.map((_, i) => i));
    const unsteered = referenceForward(shape, weights, PROMPT).residuals;
    expect(maxAbsDiff(calls[0]!.promptResidual!, refAt(unsteered, PROMPT.length, PROMPT.length - 1))).toBeLessThanOrEqual(1e-4);
    expect(calls[0]!.previousResidual).toBeNull();
    for (let t = 1; t < calls.length; t++) {
      expect(maxAbsDiff(calls[t]!.previousResidual!, r.tokenResiduals!.subarray((t - 1) * L1H, t * L1H))).toBe(0);
      expect(calls[t]!.generated).toEqual(r.tokenIds.slice(0, t));
    }
  });

  it('a policy returning null means no steering', async () => {
    const a = await sm.generate({ inputIds: PROMPT, maxNewTokens: 6, steering: () => null });
    expect(a.tokenIds).toEqual(refGreedy(PROMPT, 6));
  });

  it('capture prompt-last returns only the prompt residual', async () => {
    const r = await sm.generate({ inputIds: PROMPT, maxNewTokens: 3, capture: 'prompt-last' });
    expect(r.promptResiduals!.length).toBe(L1H);
    expect(r.tokenResiduals).toBeUndefined();
    const none = await sm.generate({ inputIds: PROMPT, maxNewTokens: 3 });
    expect(none.promptResiduals).toBeUndefined();
  });

  it('a one-token prompt works (no prefix cache)', async () => {
    const r = await sm.generate({ inputIds: [42], maxNewTokens: 4, capture: 'all' });
    expect(r.tokenIds).toEqual(refGreedy([42], 4));
  });
});

describe('sampling, streaming, abort', () => {
  it('the same seed gives the same tokens; top-p near 0 is greedy', async () => {
    const s = { temperature: 1.5, topP: 0.95, topK: 50, seed: 1234 };
    const a = await sm.generate({ inputIds: PROMPT, maxNewTokens: 15, sampling: s });
    const b = await sm.generate({ inputIds: PROMPT, maxNewTokens: 15, sampling: s });
    expect(a.tokenIds).toEqual(b.tokenIds);
    const others = await Promise.all([1, 2, 3].map((seed) => sm.generate({ inputIds: PROMPT, maxNewTokens: 15, sampling: { ...s, seed } })));
    expect(others.some((o) => JSON.stringify(o.tokenIds) !== JSON.stringify(a.tokenIds))).toBe(true);
    const g = await sm.generate({ inputIds: PROMPT, maxNewTokens: 8, sampling: { topP: 1e-9, seed: 5 } });
    expect(g.tokenIds).toEqual(refGreedy(PROMPT, 8));
  });

  it('rejects bad sampling options', async () => {
    await expect(sm.generate({ inputIds: PROMPT, sampling: { topP: 1.5 } })).rejects.toThrow(/topP must be in \(0, 1\]/);
    await expect(sm.generate({ inputIds: PROMPT, sampling: { temperature: 0 } })).rejects.toThrow(/temperature must be a number > 0/);
  });

  it('onToken sees every token; abort stops generation and reports it', async () => {
    const seen: number[] = [];
    const full = await sm.generate({ inputIds: PROMPT, maxNewTokens: 10, onToken: (id) => seen.push(id) });
    expect(seen).toEqual(full.tokenIds);

    const ctl = new AbortController();
    let n = 0;
    const r = await sm.generate({
      inputIds: PROMPT,
      maxNewTokens: 50,
      sampling: { temperature: 2, seed: 9 },
      signal: ctl.signal,
      onToken: () => {
        if (++n === 3) ctl.abort();
      },
    });
    expect(r.finishReason).toBe('abort');
    expect(r.tokenIds.length).toBe(3);

    const pre = new AbortController();
    pre.abort();
    const e = await sm.generate({ inputIds: PROMPT, maxNewTokens: 5, signal: pre.signal });
    expect(e).toMatchObject({ tokenIds: [], finishReason: 'abort' });
  });
});

describe('chat formatting and inputs', () => {
  it('formats with the chat template and finds the post-instruction positions', async () => {
    const c = sm.formatChat('Hello there');
    expect(c.text).toBe('<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n');
    expect(c.lastIndex).toBe(c.ids.length - 1);
    expect(c.postInstruction.at(-1)).toBe(c.lastIndex);
    const post = sm.tokenizer.decode(c.postInstruction.map((p) => c.ids[p]!), { skip_special_tokens: false });
    expect(post).toBe('<|im_end|>\n<|im_start|>assistant\n');
    const before = sm.tokenizer.decode(c.ids.slice(0, c.postInstruction[0]), { skip_special_tokens: false });
    expect(before).toBe('<|im_start|>user\nHello there');
    const a = await sm.generate({ prompt: 'Hello there', maxNewTokens: 5 });
    const b = await sm.generate({ inputIds: c.ids, maxNewTokens: 5 });
    expect(a.tokenIds).toEqual(b.tokenIds);
  });

  it('the model keeps no steering between calls: a call without one runs unsteered, whatever came before', async () => {
    const m = rowSteering(0, 3);
    const zero = await sm.forward([PROMPT], { steering: null });
    const steered = await sm.forward([PROMPT], { steering: m });
    expect(maxAbsDiff(steered.logits.data, zero.logits.data), 'the matrix must change the logits').toBeGreaterThan(1e-3);
    const after = await sm.forward([PROMPT]);
    expect(maxAbsDiff(after.logits.data, zero.logits.data)).toBe(0);
    const plain = await sm.generate({ inputIds: PROMPT, maxNewTokens: 4, steering: null });
    await sm.generate({ inputIds: PROMPT, maxNewTokens: 4, steering: m });
    const again = await sm.generate({ inputIds: PROMPT, maxNewTokens: 4 });
    expect(again.tokenIds).toEqual(plain.tokenIds);
    expect('setSteering' in sm).toBe(false);
  });

  it('bad inputs get clear errors', async () => {
    await expect(sm.forward([PROMPT], { steering: new Float32Array(10) })).rejects.toThrow(`steering has 10 values; expected ${L * H}`);
    const nan = new Float32Array(L * H);
    nan[H + 3] = NaN;
    await expect(sm.forward([PROMPT], { steering: nan })).rejects.toThrow(/layer 1\) is NaN/);
    await expect(sm.forward([[1, 2, shape.vocabSize]])).rejects.toThrow(`is not a token id (expected an integer in [0, ${shape.vocabSize}))`);
    await expect(sm.forward([[1, 2], [3]])).rejects.toThrow(/same length/);
    await expect(sm.generate({ inputIds: PROMPT, prompt: 'x' })).rejects.toThrow(/exactly one of prompt/);
    await expect(sm.generate({ inputIds: PROMPT, maxNewTokens: 0 })).rejects.toThrow(/maxNewTokens must be an integer >= 1/);
  });
});
