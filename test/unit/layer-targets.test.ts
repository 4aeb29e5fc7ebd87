/**
 * The least-patch target search on a stand-in model whose first-token refusal score is a known function of the
 * per-layer gains, so the expected targets can be worked out by hand: start at the least uniform gain that refuses,
 * then greedy from the last layer down, each gain lowered through the grid while the prompt still refuses; prompts
 * refused unpatched need no patch; prompts no gain turns get no targets (NaN), like unsearched harmful rows; benign
 * prompts get 0s. The keyword and coherent criteria go through a short generation (and its reply_nll).
 */
import { describe, expect, it } from 'vitest';
import { harmfulPromptTargets, layerTargets } from '../../src/core/method/layer-targets.js';
import type { SteerableModel } from '../../src/core/model/steerable.js';

const L = 4;
const H = 3;
const d = Float32Array.from([0.6, 0.8, 0]);
const ALPHA = 2;

/**
 * A model whose next-token logits over 2 tokens make token 0 ("I") have refusal score
 * sum_l a_l * g_l - bias, where g_l is recovered from the steering row (row = g_l * alpha * d).
 */
function fakeModel(a: number[], bias: (prompt: string) => number, breaksAbove = Infinity): SteerableModel & { calls: number } {
  const m = {
    numLayers: L,
    hiddenSize: H,
    vocabSize: 2,
    calls: 0,
    formatChat: (p: string) => ({ ids: [p.length] }),
    async nextTokenLogits(ids: number[], patch: { steering?: Float32Array | null }) {
      m.calls++;
      let score = -bias(String(ids[0]));
      for (let l = 0; l < L; l++) {
        const g = patch.steering ? (patch.steering[l * H] ?? 0) / (ALPHA * d[0]!) : 0;
        score += a[l]! * g;
        if (g > breaksAbove) score -= 100; // too much patch: the text breaks, no refusal
      }
      // two tokens: refusal score log p - log(1-p) = logit0 - logit1
      return Float32Array.from([score, 0]);
    },
    /** The keyword criterion's probe: a short reply that refuses (later in the reply) when the score is positive. */
    async generate(o: { inputIds: number[]; maxNewTokens: number; steering?: Float32Array | null }) {
      const logits = await m.nextTokenLogits(o.inputIds, { steering: o.steering ?? null });
      return { text: logits[0]! > 0 ? "Sure, well. I'm sorry, I cannot." : 'Sure, here is how.', tokenIds: [0, 1, 0], finishReason: 'length' };
    },
    /** reply_nll's passes: uniform logits over 2 tokens, so every reply token costs log 2 nats. */
    async replyLogits(_prompt: number[], reply: number[]) {
      return { rows: new Float32Array(Math.max(1, reply.length) * 2), steeredFirst: null };
    },
  };
  return m as unknown as SteerableModel & { calls: number };
}

const opts = { direction: d, alpha: ALPHA, refusalTokenIds: [0], grid: [1, 0.5, 0] };

describe('least-patch layer targets', () => {
  it('lowers the last layers first, keeping the prompt a refusal', async () => {
    // score = 1*g0 + 2*g1 + 1*g2 + 3*g3 - 4; full patch: 7 - 4 = 3 > 0
    const model = fakeModel([1, 2, 1, 3], () => 4);
    const r = await harmfulPromptTargets(model, [7], opts);
    // by hand: g3 1 -> 0.5 (score 1.5) -> 0 (score 0: not > 0) => 0.5; g2 1 -> 0.5 (score 1.0) -> 0 (0.5) => 0;
    // g1 1 -> 0.5 (score -0.5) => 1; g0 1 -> 0.5 (0) => 1
    expect(Array.from(r.targets)).toEqual([1, 1, 0, 0.5]);
    expect(r).toMatchObject({ refusedUnpatched: false, uniformGain: 1 });
    expect(r.passes).toBe(model.calls);
    expect(r.passes).toBeLessThanOrEqual(2 + L * 2);
  });

  it('starts at the least uniform gain that refuses, never above it (more patch can break the text)', async () => {
    // score = g0 + 2 g1 + g2 + 3 g3 - 3, and any gain above 0.6 breaks the text: the full patch never refuses
    const model = fakeModel([1, 2, 1, 3], () => 3, 0.6);
    const r = await harmfulPromptTargets(model, [7], { ...opts, grid: [1, 0.75, 0.5, 0.25, 0] });
    // uniform 0.25: -1.25; 0.5: +0.5 -> start 0.5. g3 -> 0.25: -0.25 (keep 0.5); g2 -> 0.25: +0.25, -> 0: 0 (keep 0.25);
    // g1 -> 0.25: -0.25 (keep 0.5); g0 -> 0.25: 0 (keep 0.5)
    expect(r.uniformGain).toBe(0.5);
    expect(Array.from(r.targets)).toEqual([0.5, 0.5, 0.25, 0.5]);
  });

  it('no patch for a prompt refused unpatched; no targets (NaN) when no gain turns it', async () => {
    const refused = await harmfulPromptTargets(fakeModel([1, 1, 1, 1], () => -1), [1], opts);
    expect(Array.from(refused.targets)).toEqual([0, 0, 0, 0]);
    expect(refused.uniformGain).toBe(0);
    const hopeless = await harmfulPromptTargets(fakeModel([1, 1, 1, 1], () => 10), [1], opts);
    expect(Array.from(hopeless.targets).every(Number.isNaN)).toBe(true);
    expect(hopeless.uniformGain).toBeNull();
  });

  it('labelled prompts: harmful searched (up to `search`), benign zeros, the rest NaN; info counts them', async () => {
    const model = fakeModel([1, 2, 1, 3], (p) => (p === '2' ? -1 : 4)); // the prompt "ab" (length 2) refuses unpatched
    const { targets, info } = await layerTargets(model, ['abcdefg', 'ab', 'xyz', 'abcd'], [1, 1, 0, 1], { ...opts, search: 2 });
    expect(Array.from(targets.subarray(0, L))).toEqual([1, 1, 0, 0.5]);
    expect(Array.from(targets.subarray(L, 2 * L))).toEqual([0, 0, 0, 0]);
    expect(Array.from(targets.subarray(2 * L, 3 * L))).toEqual([0, 0, 0, 0]);
    expect(Array.from(targets.subarray(3 * L)).every(Number.isNaN)).toBe(true);
    expect(info).toMatchObject({ method: 'least-refusal-patch', criterion: { kind: 'first-token', margin: 0 }, grid: [1, 0.5, 0], harmful_rows: 2, refused_unpatched: 1, turned_by_patch: 1, no_target: 0, mean_uniform_gain: 1, benign_target: 0 });
  });

  it('the keyword criterion judges a short patched reply instead of the first token', async () => {
    const model = fakeModel([1, 2, 1, 3], () => 4);
    const r = await harmfulPromptTargets(model, [7], { ...opts, criterion: 'keyword', tokens: 5 });
    expect(Array.from(r.targets)).toEqual([1, 1, 0, 0.5]); // the same decisions, through generation + judge
    const { info } = await layerTargets(model, ['abcdefg'], [1], { ...opts, criterion: 'keyword', tokens: 5 });
    expect(info.criterion).toEqual({ kind: 'keyword', tokens: 5, judge: 'arditi-keywords' });
    await expect(harmfulPromptTargets(model, [7], { ...opts, criterion: 'keyword', judge: 'nope' })).rejects.toThrow(/unknown refusal judge 'nope'/);
  });

  it("the coherent criterion also needs the probe's reply_nll under the threshold", async () => {
    const model = fakeModel([1, 2, 1, 3], () => 4);
    const cal = (value: number) => ({ value, quantile: 0.95, n: 10, set: 'benign', method: 'unsteered-replies-quantile-linear' as const });
    // every probe reply costs log 2 = 0.69 nats per token: readable under a threshold of 1, not under 0.5
    const ok = await harmfulPromptTargets(model, [7], { ...opts, criterion: 'coherent', tokens: 3, nllCalibration: cal(1) });
    expect(Array.from(ok.targets)).toEqual([1, 1, 0, 0.5]);
    const strict = await harmfulPromptTargets(model, [7], { ...opts, criterion: 'coherent', tokens: 3, nllCalibration: cal(0.5) });
    expect(Array.from(strict.targets).every(Number.isNaN)).toBe(true);
    await expect(harmfulPromptTargets(model, [7], { ...opts, criterion: 'coherent' })).rejects.toThrow(/needs a reply_nll calibration/);
  });

  it('refuses a bad grid, a non-unit direction and new-token-only positions', async () => {
    const model = fakeModel([1, 1, 1, 1], () => 1);
    await expect(harmfulPromptTargets(model, [1], { ...opts, grid: [1, 0.5] })).rejects.toThrow(/descend strictly from 1 to 0/);
    await expect(harmfulPromptTargets(model, [1], { ...opts, direction: Float32Array.from([1, 1, 0]) })).rejects.toThrow(/unit vector/);
    await expect(harmfulPromptTargets(model, [1], { ...opts, positions: 'new' })).rejects.toThrow(/'new' the first reply token is never patched/);
  });
});
