/**
 * The model-side coherence measures on built test models:
 * - reply_nll equals the direct computation from the reference forward pass (fp32) and, on the float16 graph, from
 *   separate forward passes over each prefix (another path through the same model);
 * - the first reply token's logits under a patch are what a generation with the same positions computes ('last':
 *   unsteered prefix + patched last token; 'all': a patched pass; 'new': unpatched), and their KL to the unsteered
 *   logits is zero exactly when nothing was patched.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTestModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { argmaxRow, referenceForward } from '../../src/core/onnx/testmodel/reference.js';
import { generateWeights } from '../../src/core/onnx/testmodel/weights.js';
import { loadSteerableModel, type SteerableModel } from '../../src/core/model/index.js';
import { firstTokenKl, replyNll, replyScores } from '../../src/core/eval/coherence.js';

const shape = SHAPE_PRESETS.tiny!;
const L = shape.numLayers;
const H = shape.hiddenSize;
const V = shape.vocabSize;
const PROMPT = [5, 17, 200, 33, 8, 91];
const REPLY = [44, 9, 120, 2];
const root = mkdtempSync(join(tmpdir(), 'steerlab-coherence-'));
let plain: SteerableModel;
let half: SteerableModel;
let seed = 0;

beforeAll(async () => {
  const a = await buildTestModel(join(root, 'plain'), { shape, topology: 'plain', seed: 17 });
  seed = a.seed;
  plain = await loadSteerableModel(a.dir, { dtype: a.dtype, modelFileName: a.modelFileName });
  const b = await buildTestModel(join(root, 'q4f16'), { shape, topology: 'fused-q4f16', seed: 17 });
  half = await loadSteerableModel(b.dir, { dtype: b.dtype, modelFileName: b.modelFileName });
});
afterAll(async () => {
  await plain?.dispose();
  await half?.dispose();
  rmSync(root, { recursive: true, force: true });
});

/** -log softmax(row)[t], float64. */
function nll(row: ArrayLike<number>, t: number): number {
  let m = -Infinity;
  for (let i = 0; i < row.length; i++) m = Math.max(m, row[i]!);
  let s = 0;
  for (let i = 0; i < row.length; i++) s += Math.exp(row[i]! - m);
  return m + Math.log(s) - row[t]!;
}

function steeringRow(layer: number, scale: number): Float32Array {
  const m = new Float32Array(L * H);
  for (let i = 0; i < H; i++) m[layer * H + i] = scale * Math.sin(i * 0.5 + layer);
  return m;
}

describe('reply_nll', () => {
  it('equals the direct computation from the reference logits (fp32 graph)', async () => {
    const ref = referenceForward(shape, generateWeights(shape, seed), [...PROMPT, ...REPLY]);
    const each = REPLY.map((t, i) => nll(ref.logits.subarray((PROMPT.length + i - 1) * V, (PROMPT.length + i) * V), t));
    const got = await replyNll(plain, PROMPT, REPLY);
    expect(got.tokens).toBe(REPLY.length);
    // reply_nll: tokens 2..T; the first token on its own
    expect(Math.abs(got.nll! - each.slice(1).reduce((a, b) => a + b, 0) / (REPLY.length - 1))).toBeLessThan(1e-4);
    expect(Math.abs(got.firstTokenNll! - each[0]!)).toBeLessThan(1e-4);
    expect(await replyNll(plain, PROMPT, [])).toEqual({ nll: null, firstTokenNll: null, tokens: 0 });
    const single = await replyNll(plain, PROMPT, REPLY.slice(0, 1));
    expect(single.nll).toBeNull();
    expect(Math.abs(single.firstTokenNll! - each[0]!)).toBeLessThan(1e-4);
  });

  it('works on a float16 graph: equals prefix-by-prefix forward passes', async () => {
    let sum = 0;
    for (let i = 1; i < REPLY.length; i++) {
      const ids = [...PROMPT, ...REPLY.slice(0, i)];
      const { logits } = await half.forward([ids], { steering: null });
      sum += nll(logits.data.subarray((ids.length - 1) * V, ids.length * V), REPLY[i]!);
    }
    const got = await replyNll(half, PROMPT, REPLY);
    expect(Math.abs(got.nll! - sum / (REPLY.length - 1))).toBeLessThan(2e-2);
    expect(got.nll).toBeGreaterThan(0);
  });
});

describe('first reply token under a patch', () => {
  it("'last' is what generation computes: unsteered prefix, patched last token", async () => {
    const m = steeringRow(1, 6);
    const steered = await plain.nextTokenLogits(PROMPT, { steering: m, positions: 'last' });
    const gen = await plain.generate({ inputIds: PROMPT, maxNewTokens: 1, steering: m, steerPromptPositions: 'last' });
    expect(argmaxRow(steered, V, 0)).toBe(gen.tokenIds[0]);
    // 'all' equals a patched full pass, and differs from 'last' (whose prefix is not patched)
    const all = await plain.nextTokenLogits(PROMPT, { steering: m, positions: 'all' });
    const full = await plain.forward([PROMPT], { steering: m });
    const want = full.logits.data.subarray((PROMPT.length - 1) * V, PROMPT.length * V);
    expect(Math.max(...all.map((x, i) => Math.abs(x - want[i]!)))).toBeLessThan(1e-5);
    expect(Math.max(...all.map((x, i) => Math.abs(x - steered[i]!)))).toBeGreaterThan(1e-4);
    // 'last' against the hand computation: the reference with the patch on the last position only
    const ref = referenceForward(shape, generateWeights(shape, seed), PROMPT, { steering: m, steerFrom: PROMPT.length - 1 });
    const refLast = ref.logits.subarray((PROMPT.length - 1) * V, PROMPT.length * V);
    expect(Math.max(...steered.map((x, i) => Math.abs(x - refLast[i]!)))).toBeLessThan(1e-4);
  });

  it("KL is zero unpatched and for 'new', positive for a patch", async () => {
    const m = steeringRow(2, 6);
    const base = await plain.nextTokenLogits(PROMPT, {});
    expect(firstTokenKl(base, await plain.nextTokenLogits(PROMPT, { steering: m, positions: 'new' }))).toBe(0);
    expect(firstTokenKl(base, await plain.nextTokenLogits(PROMPT, { steering: m }))).toBeGreaterThan(1e-4);
    const full = await plain.forward([PROMPT], { steering: null });
    const want = full.logits.data.subarray((PROMPT.length - 1) * V, PROMPT.length * V);
    expect(Math.max(...base.map((x, i) => Math.abs(x - want[i]!)))).toBeLessThan(1e-5);
  });
});

describe('one scoring for reply_nll and first_token_kl', () => {
  it('the steered first-token row rides on the reply passes: what nextTokenLogits gives, and the same reply_nll', async () => {
    const m = steeringRow(1, 6);
    const alone = await replyScores(plain, PROMPT, REPLY);
    expect(alone.steeredFirst).toBeNull();
    // 'last' runs nextTokenLogits's own flow on the shared prefix cache: bit for bit the same row
    const last = await replyScores(plain, PROMPT, REPLY, { steering: m, positions: 'last' });
    expect(Array.from(last.steeredFirst!)).toEqual(Array.from(await plain.nextTokenLogits(PROMPT, { steering: m, positions: 'last' })));
    // asking for the steered row changes nothing unsteered
    expect([last.nll, last.firstTokenNll, Array.from(last.firstRow)]).toEqual([alone.nll, alone.firstTokenNll, Array.from(alone.firstRow)]);
    const all = await replyScores(plain, PROMPT, REPLY, { steering: m, positions: 'all' });
    expect(Array.from(all.steeredFirst!)).toEqual(Array.from(await plain.nextTokenLogits(PROMPT, { steering: m, positions: 'all' })));
    // 'new' leaves the prompt unpatched: the steered row is the unsteered one, KL exactly 0
    const fresh = await replyScores(plain, PROMPT, REPLY, { steering: m, positions: 'new' });
    expect(firstTokenKl(fresh.firstRow, fresh.steeredFirst!)).toBe(0);
    // the unsteered first row is the unpatched next-token row (to float rounding: another pass shape)
    const base = await plain.nextTokenLogits(PROMPT, {});
    expect(Math.max(...alone.firstRow.map((x, i) => Math.abs(x - base[i]!)))).toBeLessThan(1e-5);
    expect(firstTokenKl(last.firstRow, last.steeredFirst!)).toBeGreaterThan(1e-4);
    // a one-token prompt has no prefix to cache: one pass, the same numbers as a full forward
    const one = await replyScores(plain, PROMPT.slice(0, 1), REPLY, { steering: m, positions: 'last' });
    const full = await plain.forward([[PROMPT[0]!, ...REPLY]], { steering: null });
    expect(Math.abs(one.firstTokenNll! - nll(full.logits.data.subarray(0, V), REPLY[0]!))).toBeLessThan(1e-4);
    expect(one.steeredFirst).not.toBeNull();
  });
});
