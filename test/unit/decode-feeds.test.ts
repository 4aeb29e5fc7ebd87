/**
 * What the decode engine feeds a session, checked on a recording stand-in session (no model): extra per-row graph
 * inputs (a second [steer_batch, L, H] input such as `projection`) reach their rows, zeros where a row has none;
 * left padding prefills each prompt length apart and joins the caches (masks, real positions), right padding (no position_ids) masks by length; finished rows
 * leave the batch with their cache rows; fetches leave residual_stream out when nothing reads it.
 */
import { describe, expect, it } from 'vitest';
import { DecodeEngine, type OrtFeeds, type OrtSessionLike, type OrtTensorLike } from '../../src/core/model/decode.js';

const L = 2;
const H = 4;
const V = 8;
const KV = 1;
const HD = 2;

const tensor = (type: string, data: unknown, dims: number[]): OrtTensorLike => ({ type, data, dims });

/** A session that predicts token (last input id + 1) % V, or 7 when the row's projection sum is positive. */
function fakeSession(withPositions: boolean, calls: { feeds: OrtFeeds; fetches: readonly string[] }[]): OrtSessionLike {
  const inputs = ['input_ids', 'attention_mask', ...(withPositions ? ['position_ids'] : []), 'past_key_values.0.key', 'past_key_values.0.value', 'steering', 'projection'];
  return {
    inputNames: inputs,
    outputNames: ['logits', 'present.0.key', 'present.0.value', 'residual_stream'],
    inputMetadata: [{ name: 'past_key_values.0.key', type: 'float32', shape: ['batch', KV, 'past', HD] }],
    async run(feeds, fetches = []) {
      calls.push({ feeds, fetches });
      const [B, S] = feeds['input_ids']!.dims as [number, number];
      const ids = feeds['input_ids']!.data as BigInt64Array;
      const mask = feeds['attention_mask']!.data as BigInt64Array;
      const W = feeds['attention_mask']!.dims[1]!;
      const proj = feeds['projection']!;
      const logits = new Float32Array(B * S * V);
      for (let b = 0; b < B; b++) {
        // right padding: a multi-token pass runs on an empty cache, so the row's last token is at (mask sum) - 1;
        // left padding: always at S - 1
        const p = withPositions || S === 1 ? S - 1 : Number(mask.subarray(b * W, (b + 1) * W).reduce((a, x) => a + x, 0n)) - 1;
        const row = proj.dims[0] === 1 ? 0 : b;
        const psum = (proj.data as Float32Array).subarray(row * L * H, (row + 1) * L * H).reduce((a, x) => a + x, 0);
        const next = psum > 0 ? 7 : (Number(ids[b * S + p]!) + 1) % V;
        logits[(b * S + p) * V + next] = 1;
      }
      const past = feeds['past_key_values.0.key']!;
      const T = past.dims[2]! + S;
      const kv = () => tensor('float32', new Float32Array(B * KV * T * HD).map((_, i) => i), [B, KV, T, HD]);
      const out: Record<string, OrtTensorLike> = { logits: tensor('float32', logits, [B, S, V]), 'present.0.key': kv(), 'present.0.value': kv() };
      if (fetches.includes('residual_stream')) out['residual_stream'] = tensor('float32', new Float32Array(B * (L + 1) * S * H).fill(0.5), [B, L + 1, S, H]);
      return out;
    },
  };
}

function engine(withPositions: boolean, calls: { feeds: OrtFeeds; fetches: readonly string[] }[]) {
  return new DecodeEngine({ session: fakeSession(withPositions, calls), tensor, numLayers: L, hiddenSize: H, vocabSize: V, eosTokenIds: [6], contextLength: 64 });
}

describe('decode engine feeds', () => {
  it('passes extra per-row inputs to their rows, zeros where absent', async () => {
    const calls: { feeds: OrtFeeds; fetches: readonly string[] }[] = [];
    const proj = new Float32Array(L * H).fill(0.5); // unit rows (H = 4): the engine checks projection rows
    const res = await engine(true, calls).decode([
      { ids: [1, 2, 3], maxNewTokens: 2 },
      { ids: [4, 1], maxNewTokens: 2, inputs: { projection: proj } },
    ]);
    expect(engine(true, []).extraInputs).toEqual(['projection']);
    // prefills unsteered (one per prompt length on a left-padded graph): [1, L, H] zeros; steered passes: [B, L, H] rows
    expect(calls[0]!.feeds['projection']!.dims).toEqual([1, L, H]);
    expect(calls[1]!.feeds['projection']!.dims).toEqual([1, L, H]);
    const steered = calls[2]!.feeds['projection']!;
    expect(steered.dims).toEqual([2, L, H]);
    expect(Array.from((steered.data as Float32Array).subarray(0, L * H))).toEqual(new Array(L * H).fill(0));
    expect(Array.from((steered.data as Float32Array).subarray(L * H))).toEqual(Array.from(proj));
    expect(res[0]!.tokenIds).toEqual([4, 5]);
    expect(res[1]!.tokenIds).toEqual([7, 7]);
    expect(calls.every((c) => !c.fetches.includes('residual_stream'))).toBe(true);
  });

  it('left padding: masks, real positions, and finished rows leave the batch', async () => {
    const calls: { feeds: OrtFeeds; fetches: readonly string[] }[] = [];
    // row 1 predicts 6 (its end token) after 5: it stops after one token; row 0 runs to its budget
    const res = await engine(true, calls).decode([
      { ids: [0, 1, 2, 3], maxNewTokens: 2 },
      { ids: [4, 5], maxNewTokens: 3 },
    ]);
    expect(res.map((r) => r.finishReason)).toEqual(['length', 'eos']);
    expect(res[1]!.tokenIds).toEqual([6]);
    // each prompt length is prefilled apart (no padding in a prefill), then the caches are joined left-padded
    const preA = calls[0]!.feeds;
    expect(preA['input_ids']!.dims).toEqual([1, 3]);
    expect(Array.from(preA['attention_mask']!.data as BigInt64Array, Number)).toEqual([1, 1, 1]);
    expect(Array.from(preA['position_ids']!.data as BigInt64Array, Number)).toEqual([0, 1, 2]);
    const preB = calls[1]!.feeds;
    expect(Array.from(preB['attention_mask']!.data as BigInt64Array, Number)).toEqual([1]);
    expect(Array.from(preB['position_ids']!.data as BigInt64Array, Number)).toEqual([0]);
    const step0 = calls[2]!.feeds;
    expect(step0['past_key_values.0.key']!.dims).toEqual([2, KV, 3, HD]);
    expect(Array.from(step0['position_ids']!.data as BigInt64Array, Number)).toEqual([3, 1]);
    expect(Array.from(step0['attention_mask']!.data as BigInt64Array, Number)).toEqual([1, 1, 1, 1, 0, 0, 1, 1]);
    // after row 1 ended: one row, its cache row kept, the padding columns nobody needs dropped
    const after = calls[3]!.feeds;
    expect(after['input_ids']!.dims).toEqual([1, 1]);
    expect(after['past_key_values.0.key']!.dims).toEqual([1, KV, 4, HD]);
    expect(Array.from(after['attention_mask']!.data as BigInt64Array, Number)).toEqual([1, 1, 1, 1, 1]);
  });

  it('right padding without position_ids: masks by length, logits read at each row\'s own last token', async () => {
    const calls: { feeds: OrtFeeds; fetches: readonly string[] }[] = [];
    const res = await engine(false, calls).decode([
      { ids: [0, 1, 2, 3], maxNewTokens: 2 },
      { ids: [2, 3], maxNewTokens: 2 },
    ]);
    expect(res.map((r) => r.tokenIds)).toEqual([[4, 5], [4, 5]]);
    const pre = calls[0]!.feeds;
    expect(pre['position_ids']).toBeUndefined();
    expect(Array.from(pre['input_ids']!.data as BigInt64Array, Number)).toEqual([0, 1, 2, 2, 6, 6]);
    expect(Array.from(pre['attention_mask']!.data as BigInt64Array, Number)).toEqual([1, 1, 1, 1, 0, 0]);
    expect(Array.from(calls[1]!.feeds['attention_mask']!.data as BigInt64Array, Number)).toEqual([1, 1, 1, 1, 1, 1, 0, 0]);
  });

  it('fetches residual_stream only for passes that read it', async () => {
    const calls: { feeds: OrtFeeds; fetches: readonly string[] }[] = [];
    const res = await engine(true, calls).decode([{ ids: [1, 2, 3], maxNewTokens: 2, capture: 'prompt-last', steering: { observe: (r) => new Float32Array(L * H).fill(r[0]!) } }]);
    expect(calls.map((c) => c.fetches.includes('residual_stream'))).toEqual([false, true, false, false]);
    expect(calls[0]!.fetches).not.toContain('logits'); // a prefill reads only the cache
    expect(res[0]!.promptResidual!.length).toBe((L + 1) * H);
    expect(Array.from(res[0]!.steering!)).toEqual(new Array(L * H).fill(0.5));
  });
});
