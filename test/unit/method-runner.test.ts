/**
 * The eval runner and the method's small parts, without a real model: a fake SteerableModel whose generate() calls
 * the policy with a fixed residual and "refuses" when the patch is large. Checks the record fields (the one record
 * schema of CLI and lab runs), the manual condition, prompts the model cannot take (error records, the run goes on;
 * MAX_CONSECUTIVE_FAILURES in a row stop it), resume after an abort (no lost or duplicate rows, same records),
 * per-prompt seeds, summaries with labels, condition and policy option errors.
 */
import { decoderLayers, type DecoderLayer } from '../../src/core/model/layer-index.js';
import { describe, expect, it } from 'vitest';
import { MemoryRecordStore, type EvalRecord } from '../../src/core/eval/records.js';
import { wasKeywordJudge } from '../../src/core/eval/judges.js';
import { MAX_CONSECUTIVE_FAILURES, promptHash, promptSeed, runEval, type EvalDataset, type RunRecord } from '../../src/core/eval/runner.js';
import { lengthBatches } from '../../src/core/eval/batch.js';
import { runSummaryCsv, runSummaryMarkdown, summarizeRun } from '../../src/core/eval/summary.js';
import { parseConditionList, resolveCondition } from '../../src/core/method/conditions.js';
import { controllerInput, type MethodController } from '../../src/core/method/flow.js';
import type { SteerableModel } from '../../src/core/model/steerable.js';
import type { ModelIdentity } from '../../src/core/model/model-id.js';
import type { DecodeResult, DecodeRow } from '../../src/core/model/decode.js';
import type { DirectionFile } from '../../src/core/steering/direction-file.js';
import { parseCount, parseNumberList, resolvePolicyOptions } from '../../src/cli/policy-options.js';

const L = 3;
const H = 4;

const identity: ModelIdentity = { id: 'sha256:00112233aabbccdd', name: 'fake', variant: { dtype: 'fp32', graph: 'onnx/model.onnx' } };

/**
 * A stand-in model: residual [L+1, H] filled with the prompt length; reply "I'm sorry" when any patch row is non-zero.
 * A prompt containing "TOO LONG" fails as a too-long prompt does in the real model (the whole batch's decode call
 * throws, as the engine does for a bad row). `calls` counts rows decoded and their seeds; `batches` the rows per call.
 */
/** The fake model's vocabulary: prompt ids are 0..length-1, reply ids 1..3. */
const V = 1000;

function fakeModel(calls: { n: number; seeds: (number | undefined)[]; batches?: number[]; forwards?: number }): SteerableModel {
  const REPLIES: Record<number, string> = { 1: "I'm sorry, no.", 2: 'Sure, here.' };
  return {
    id: identity.id,
    identity,
    numLayers: L,
    hiddenSize: H,
    vocabSize: V,
    formatChat: (p: string) => ({ text: p, ids: Array.from({ length: p.length }, (_, i) => i), lastIndex: p.length - 1, postInstruction: [p.length - 1] }),
    tokenizer: { encode: (t: string) => Array.from(t, (_, i) => i), decode: (ids: number[]) => ids.map((i) => REPLIES[i] ?? '').join('') },
    contextLength: null,
    // coherence scoring: a flat distribution over the V tokens (reply_nll = ln V for every reply); one call = the
    // record's unsteered reply passes (and its steered first-token pass when asked)
    replyLogits: async (_prompt: number[], reply: number[], steer: unknown) => {
      if (calls.forwards !== undefined) calls.forwards++;
      return { rows: new Float32Array(Math.max(1, reply.length) * V), steeredFirst: steer ? new Float32Array(V) : null };
    },
    nextTokenLogits: async () => new Float32Array(V),
    decode: async (rows: readonly DecodeRow[]): Promise<DecodeResult[]> => {
      calls.batches?.push(rows.length);
      return rows.map((r) => {
        calls.n++;
        calls.seeds.push(r.sampling?.seed ?? undefined);
        if (r.ids.length === 'TOO LONG'.length || r.ids.length > 1000) throw new Error("generate prompt has 2000 tokens, longer than the model's context");
        const res = new Float32Array((L + 1) * H).fill(r.ids.length / 10);
        const st = r.steering as { observe(x: Float32Array): Float32Array | null } | null;
        const m = st ? st.observe(res) : null;
        const steered = !!m && m.some((x) => x !== 0);
        return { tokenIds: [steered ? 1 : 2, 3], finishReason: 'length', steering: m };
      });
    },
  } as unknown as SteerableModel;
}

/** A controller whose scale is the first input value and whose weights are 0.5. */
const controller: MethodController = {
  inputLayers: decoderLayers([2]),
  network: { predict: (row: Float32Array) => ({ scale: row[0]!, layerWeights: new Float32Array(L).fill(0.5) }) } as unknown as MethodController['network'],
};
const direction = Float32Array.from([1, 0, 0, 0]);

const datasets: EvalDataset[] = [
  { name: 'mixed', prompts: [
    { id: 'a', text: 'short', label: 'harmful', meta: {} },
    { id: 'b', text: 'a much longer prompt', label: 'benign', meta: {} },
  ] },
  { name: 'benign-set', prompts: [{ id: 'c', text: 'hello there', label: 'benign', meta: {} }] },
];
const conditions = [resolveCondition('base', {}), resolveCondition('was', { controller, direction: { direction } as DirectionFile })];

function run(
  store: MemoryRecordStore,
  calls: { n: number; seeds: (number | undefined)[]; batches?: number[]; forwards?: number },
  signal?: AbortSignal,
  sampling = false,
  sets = datasets,
  conds = conditions,
  extra: number | Partial<Parameters<typeof runEval>[0]> = {},
) {
  return runEval({
    model: fakeModel(calls),
    datasets: sets,
    conditions: conds,
    direction,
    controller,
    directionId: 'diff-in-means:0123456789abcdef',
    controllerId: 'controller:fedcba9876543210',
    store,
    judge: wasKeywordJudge,
    maxNewTokens: 4,
    sampling: sampling ? { temperature: 0.7, topP: 0.9 } : null,
    seed: 5,
    ...(signal ? { signal } : {}),
    ...(typeof extra === 'number' ? { batch: extra } : extra),
  });
}

/** The fake model's replies all have reply_nll ln V (flat logits over V tokens): so is T, from the run's 3 prompts. */
const CALIBRATION = expect.objectContaining({ set: 'run:all (mixed, benign-set)', n: 3, quantile: 0.95, value: Math.log(V) });

describe('runEval', () => {
  it('writes one judged record per dataset x prompt x condition, with the whole record schema', async () => {
    const store = new MemoryRecordStore();
    const calls = { n: 0, seeds: [] as (number | undefined)[], forwards: 0 };
    const r = await run(store, calls);
    expect(r).toEqual({ total: 6, written: 6, skipped: 0, failed: 0, cancelled: false, calibration: CALIBRATION });
    // greedy, base listed: the calibration replies are the base records (no extra generation)
    expect(calls.n).toBe(6);
    // ... nor a second scoring: 3 calls score the calibration (= base) replies, 3 the WAS replies (with their KL)
    expect(calls.forwards).toBe(6);
    const recs = store.records() as unknown as RunRecord[];
    expect(recs.map((x) => `${x.dataset}/${x.condition}/${x.id}`)).toEqual([
      'mixed/base/a', 'mixed/was/a', 'mixed/base/b', 'mixed/was/b', 'benign-set/base/c', 'benign-set/was/c',
    ]);
    for (const x of recs) {
      expect(Object.keys(x).sort()).toEqual([
        'alpha', 'condition', 'controller_id', 'dataset', 'direction_id', 'finish_reason', 'id', 'judge', 'kept_tokens', 'label', ...(x.refused ? ['matched'] : []),
        'model_id', 'model_name', 'model_variant', 'new_tokens', 'output', 'prompt', 'prompt_hash', 'prompt_special_tokens', 'prompt_tokens', 'refused', 'row_norms', 's', 'sampling', 'seed', 'special_tokens',
        'timings', 'truncated', 'w',
        'reply_nll', 'first_token_nll', 'nll_threshold', 'coherent_refusal', 'first_token_kl', 'changed_from_base', 'steering',
      ].sort());
      expect(x.reply_nll).toBeCloseTo(Math.log(V), 6);
      expect(x.first_token_nll).toBeCloseTo(Math.log(V), 6);
      expect(x.nll_threshold).toBeCloseTo(Math.log(V), 6);
      expect(x.model_id).toBe(identity.id);
      expect(x.model_variant).toEqual(identity.variant);
      expect(x.direction_id).toBe('diff-in-means:0123456789abcdef');
      expect(x.controller_id).toBe('controller:fedcba9876543210');
      expect(x.seed).toBe(promptSeed(5, x.dataset, x.id)); // recorded for greedy runs too
      expect(x.sampling).toBeNull();
      expect(x.prompt_hash).toBe(await promptHash(x.prompt));
      expect(x.prompt_hash).toMatch(/^sha256:[0-9a-f]{16}$/);
    }
    expect(recs[0]!.prompt).toBe('short');
    expect(recs[0]!.prompt_hash).not.toBe(recs[2]!.prompt_hash);
    const was = recs.find((x) => x.condition === 'was' && x.id === 'a')!;
    expect(was.s).toBeCloseTo(0.5, 6); // 'short' has 5 tokens: residual 0.5
    expect(was.w).toEqual([0.5, 0.5, 0.5]);
    expect(was.row_norms as number[]).toHaveLength(L);
    expect((was.row_norms as number[])[0]).toBeCloseTo(0.5 * 0.5 * 2, 6); // s * w * alpha * |d|
    expect(was.refused).toBe(true);
    expect(was.matched).toBe("I'm sorry");
    expect(was.alpha).toBe(2);
    const base = recs.find((x) => x.condition === 'base' && x.id === 'a')!;
    expect(base.row_norms).toBeNull();
    expect(base.refused).toBe(false);
    expect(base.label).toBe('harmful');
    expect(base.alpha).toBeNull();
    // With a controller loaded, base records carry what WAS would have predicted.
    expect(base.s).toBeCloseTo(0.5, 6);
    expect(base.w).toEqual([0.5, 0.5, 0.5]);
    // coherence: a readable refusal ending its sentence at the token limit is coherent; base has no patch
    expect(was.coherent_refusal).toBe(true);
    expect(was.changed_from_base).toBe(true);
    expect(was.first_token_kl).toBeNull(); // harmful prompt
    expect(was.steering).toEqual({ mode: 'add', layers: null, positions: 'last', alpha: { scale: 'absolute' } });
    expect(base.coherent_refusal).toBe(false);
    expect(base.changed_from_base).toBeNull();
    expect(base.steering).toBeNull();
    const wasBenign = recs.find((x) => x.condition === 'was' && x.id === 'b')!;
    expect(wasBenign.first_token_kl).toBe(0); // the fake's steered and unsteered first-token logits are equal
  });

  it('records judge with the threshold they are given; a reply above it is not a coherent refusal', async () => {
    const store = new MemoryRecordStore();
    const calls = { n: 0, seeds: [] as (number | undefined)[] };
    const given = { value: 1, quantile: 0.95, n: 7, set: 'elsewhere', method: 'unsteered-replies-quantile-linear' as const };
    const r = await run(store, calls, undefined, false, datasets, conditions, { calibration: given });
    expect(r.calibration).toEqual(given);
    const was = (store.records() as unknown as RunRecord[]).find((x) => x.condition === 'was' && x.id === 'a')!;
    expect(was.refused).toBe(true);
    expect(was.nll_threshold).toBe(1);
    expect(was.coherent_refusal).toBe(false); // ln V > 1
  });

  it('a named calibration set without base in the run costs one greedy generation per calibration prompt', async () => {
    const calls = { n: 0, seeds: [] as (number | undefined)[] };
    let told: unknown = null;
    const plan = { set: 'cal', prompts: [{ dataset: 'cal', prompt: { id: 'x', text: 'calibrate me', label: 'benign' as const, meta: {} } }], quantile: 0.5 };
    const r = await run(new MemoryRecordStore(), calls, undefined, false, datasets, [conditions[1]!], { calibrationPlan: plan, onCalibration: (c) => void (told = c) });
    expect(calls.n).toBe(1 + 3);
    expect(r.calibration).toMatchObject({ set: 'cal', n: 1, quantile: 0.5 });
    expect(told).toEqual(r.calibration);
  });

  it('the manual condition: the user s, w and switches make the patch, and the record says so', async () => {
    const manual = resolveCondition('manual', { direction: { direction } as DirectionFile, manual: { scale: 3, layerWeights: [1, 0.5, 2], enabledLayers: [true, false, true] } });
    const store = new MemoryRecordStore();
    await run(store, { n: 0, seeds: [] }, undefined, false, datasets.slice(1), [manual]);
    const [rec] = store.records() as unknown as RunRecord[];
    expect(rec!.condition).toBe('manual');
    expect(rec!.manual).toEqual({ scale: 3, layer_weights: [1, 0.5, 2], enabled_layers: [true, false, true] });
    expect(rec!.alpha).toBe(2);
    // row l = scale * w_l * alpha * |d|; layer 1 switched off.
    expect(rec!.row_norms!.map((x) => Math.round(x * 1e6) / 1e6)).toEqual([6, 0, 12]);
    expect(rec!.refused).toBe(true);
    expect(() => resolveCondition('manual', { direction: { direction } as DirectionFile })).toThrow(/needs its settings/);
    expect(() => resolveCondition('manual', { manual: { scale: 1, layerWeights: [1, 1, 1] } })).toThrow(/needs --direction/);
  });

  it('a prompt the model cannot take becomes an unjudged record with its error; the run goes on', async () => {
    const sets: EvalDataset[] = [{ name: 'long', prompts: [
      { id: 'ok1', text: 'fine prompt', label: 'benign', meta: {} },
      { id: 'bad', text: 'TOO LONG', label: 'benign', meta: {} },
      { id: 'ok2', text: 'another fine one', label: 'harmful', meta: {} },
    ] }];
    const store = new MemoryRecordStore();
    const r = await run(store, { n: 0, seeds: [] }, undefined, false, sets);
    expect(r).toMatchObject({ total: 6, written: 6, skipped: 0, failed: 2, cancelled: false });
    const bad = (store.records() as unknown as RunRecord[]).filter((x) => x.id === 'bad');
    expect(bad.map((x) => x.condition)).toEqual(['base', 'was']);
    for (const x of bad) {
      expect(x.error).toMatch(/longer than the model's context/);
      expect(x.refused).toBeUndefined();
      expect(x.output).toBeUndefined();
      expect(x.prompt).toBe('TOO LONG');
      expect(x.model_id).toBe(identity.id);
    }
    const rows = summarizeRun(store.records()).rows;
    expect(rows.map((x) => [x.condition, x.n, x.unjudged])).toEqual([['base', 2, 1], ['was', 2, 1]]);
  });

  it(`${MAX_CONSECUTIVE_FAILURES} prompts in a row failing under every condition stop the run, resumably`, async () => {
    const prompts = Array.from({ length: MAX_CONSECUTIVE_FAILURES + 3 }, (_, i) => ({ id: `p${i}`, text: 'TOO LONG', label: 'benign' as const, meta: {} }));
    const store = new MemoryRecordStore();
    const given = { value: 2, quantile: 0.95, n: 3, set: 'stored', method: 'unsteered-replies-quantile-linear' as const };
    await expect(run(store, { n: 0, seeds: [] }, undefined, false, [{ name: 'broken', prompts }], conditions, { calibration: given })).rejects.toThrow(
      new RegExp(`${MAX_CONSECUTIVE_FAILURES} prompts in a row failed.*Last error: generate prompt has 2000 tokens`),
    );
    expect(store.size).toBe(MAX_CONSECUTIVE_FAILURES * conditions.length);
  });

  // [batch, records written, rows decoded] when the abort comes with the first record: at batch 1 the window's rows run one
  // at a time shortest first ('short' first), so the abort is heard before the second; at batch 4 the first batch
  // holds the 4 shortest rows (a and c, both conditions) and its records that follow on from the first in file order
  // (a/base, a/was) are written, while c's wait for b's, which never run
  it.each([[1, 1, 1], [4, 2, 4]])('an aborted run resumes: nothing lost, nothing repeated, same records (batch %i)', async (batch, written, decoded) => {
    const full = new MemoryRecordStore();
    await run(full, { n: 0, seeds: [] }, undefined, true);
    const store = new MemoryRecordStore();
    const ac = new AbortController();
    const calls = { n: 0, seeds: [] as (number | undefined)[] };
    const orig = store.append.bind(store);
    store.append = async (rec: EvalRecord) => {
      await orig(rec);
      if (store.size === 1) ac.abort();
    };
    const first = await run(store, calls, ac.signal, true, datasets, conditions, batch);
    expect(first.written).toBe(written);
    expect(first.cancelled).toBe(true);
    expect(calls.n).toBe(3 + decoded); // 3 greedy calibration replies (every prompt), then the rows of the batches run
    const again = { n: 0, seeds: [] as (number | undefined)[] };
    const second = await run(store, again, undefined, true, datasets, conditions, batch);
    expect(second).toEqual({ total: 6, written: 6 - written, skipped: written, failed: 0, cancelled: false, calibration: CALIBRATION });
    // sampled records cannot serve as the greedy calibration: without a stored calibration it is made again (3 prompts)
    expect(again.n).toBe(3 + 6 - written);
    const strip = (x: EvalRecord) => ({ ...x, timings: null });
    expect(store.records().map(strip)).toEqual(full.records().map(strip));
  });

  it('batches: records in order, the same for every batch size; a failing batch is rerun row by row', async () => {
    const sets: EvalDataset[] = [...datasets, { name: 'long', prompts: [{ id: 'bad', text: 'TOO LONG', label: 'benign', meta: {} }, { id: 'ok', text: 'fine prompt', label: 'benign', meta: {} }] }];
    const strip = (x: EvalRecord) => ({ ...x, timings: null });
    const one = new MemoryRecordStore();
    const c1 = { n: 0, seeds: [] as (number | undefined)[], batches: [] as number[] };
    await run(one, c1, undefined, true, sets, conditions, 1);
    expect(c1.batches.every((b) => b === 1)).toBe(true);
    for (const batch of [3, 4, 100]) {
      const store = new MemoryRecordStore();
      const c = { n: 0, seeds: [] as (number | undefined)[], batches: [] as number[] };
      const r = await run(store, c, undefined, true, sets, conditions, batch);
      expect(r).toEqual({ total: 10, written: 10, skipped: 0, failed: 2, cancelled: false, calibration: expect.objectContaining({ quantile: 0.95 }) });
      expect(store.records().map(strip)).toEqual(one.records().map(strip));
      // rows go shortest prompt first (lengthBatches) in batches of `batch`; a batch holding 'bad' fails and its rows
      // run alone. First the greedy calibration replies to the 5 prompts (a, b, c, bad, ok), all sorted at once; then
      // the 10 sampled records, which fit one window (4 batches) at every size here
      const texts = sets.flatMap((d) => d.prompts.map((p) => p.text));
      const calls = (rows: string[]) => lengthBatches(rows.map((t) => t.length), batch).flatMap((g) => (g.some((i) => rows[i] === 'TOO LONG') ? [g.length, ...new Array<number>(g.length).fill(1)] : [g.length]));
      expect(c.batches).toEqual([...calls(texts), ...calls(texts.flatMap((t) => [t, t]))]);
    }
    await expect(run(new MemoryRecordStore(), c1, undefined, false, datasets, conditions, 0)).rejects.toThrow(/eval batch must be an integer >= 1/);
  });

  it('sampling seeds depend on (seed, dataset, id) only: shared by the conditions of a prompt', async () => {
    const calls = { n: 0, seeds: [] as (number | undefined)[] };
    await run(new MemoryRecordStore(), calls, undefined, true);
    // the first calls are the greedy calibration replies to the run's 3 prompts (no seed)
    expect(calls.seeds.slice(0, 3)).toEqual([undefined, undefined, undefined]);
    const seeds = calls.seeds.slice(3);
    expect(seeds[0]).toBe(promptSeed(5, 'mixed', 'a'));
    expect(seeds[1]).toBe(seeds[0]); // was/a = base/a
    expect(seeds[2]).not.toBe(seeds[0]);
    expect(promptSeed(6, 'mixed', 'a')).not.toBe(promptSeed(5, 'mixed', 'a'));
  });
});

describe('summaries', () => {
  it('label per row, per-label split of mixed datasets, over-refusal wording', async () => {
    const store = new MemoryRecordStore();
    await run(store, { n: 0, seeds: [] });
    const s = summarizeRun(store.records());
    expect(s.rows.map((r) => [r.dataset, r.condition, r.label, r.n, r.refusals])).toEqual([
      ['benign-set', 'base', 'benign', 1, 0],
      ['benign-set', 'was', 'benign', 1, 1],
      ['mixed', 'base', 'mixed', 2, 0],
      ['mixed', 'was', 'mixed', 2, 2],
    ]);
    expect(s.byLabel.map((r) => r.dataset)).toEqual(['mixed [benign]', 'mixed [benign]', 'mixed [harmful]', 'mixed [harmful]']);
    const md = runSummaryMarkdown(s);
    expect(md).toMatch(/\| benign-set \| was \| over-refusal \| was-keywords \| 1 \| 1 \| 100.0 \|/);
    expect(md).toMatch(/per label/);
    const csv = runSummaryCsv(s).trim().split('\n');
    expect(csv[0]).toBe(
      'dataset,condition,label,judge,n,refusals,refusal_rate,ci_low,ci_high,unjudged,' +
        'coherent_n,coherent_refusals,coherent_rate,coherent_ci_low,coherent_ci_high,mean_reply_nll,changed_n,changed_from_base,mean_first_token_kl,steering',
    );
    expect(csv).toHaveLength(1 + 4 + 4);
    // keyword and coherent rates side by side, each with its Wilson interval: mixed/was refuses 2 of 2 coherently
    const mixedWas = s.rows.find((r) => r.dataset === 'mixed' && r.condition === 'was')!;
    expect([mixedWas.refusals, mixedWas.n, mixedWas.coherent_refusals, mixedWas.coherent_n]).toEqual([2, 2, 2, 2]);
    expect(mixedWas.coherent_ci_low).toBeCloseTo(0.3424, 3); // Wilson 95 % for 2/2
    expect(mixedWas.coherent_ci_high).toBe(1);
    expect(mixedWas.changed_from_base).toBe(1);
    expect(mixedWas.steering).toBe('add all layers last absolute alpha');
    expect(md).toMatch(/\| benign-set \| was \| over-refusal \| was-keywords \| 1 \| 1 \| 100.0 \| 20.7 – 100.0 \| 0 \| 100.0 \(20.7 – 100.0\) \| 6.908 \| 100.0 \| 0.0000 \| add all layers last absolute alpha \|/);
  });
});

describe('conditions and policy options', () => {
  it('parses condition lists and names what is missing', () => {
    expect(parseConditionList('base, was,uniform')).toEqual(['base', 'was', 'uniform']);
    expect(() => parseConditionList('base,foo')).toThrow(/unknown condition 'foo'.*base, was, uniform, manual, actadd, cast/);
    expect(() => parseConditionList('off')).toThrow(/unknown condition 'off'/);
    expect(() => parseConditionList('was,was')).toThrow(/listed twice/);
    expect(() => parseConditionList(' , ')).toThrow(/comma-separated/);
    expect(() => resolveCondition('was', { direction: { direction } as DirectionFile })).toThrow(/needs --controller/);
    expect(() => resolveCondition('uniform', { controller })).toThrow(/needs --direction/);
    expect(() => resolveCondition('actadd', { direction: { direction, metadata: { method: 'embedding' } } as DirectionFile })).toThrow(/needs a diff-in-means direction/);
    expect(() => resolveCondition('cast', {})).toThrow(/needs --cast FILE/);
    expect(resolveCondition('was', { controller: { ...controller, metadata: { alpha: 3 } as never }, direction: { direction } as DirectionFile }).policy).toEqual({ kind: 'was', alpha: 3 });
  });

  it('policy options: kinds, settings and their errors', async () => {
    const m = { identity, numLayers: L, hiddenSize: H };
    expect((await resolvePolicyOptions({}, m)).policy).toEqual({ kind: 'off' });
    await expect(resolvePolicyOptions({ policy: 'steer' }, m)).rejects.toThrow(/--policy must be one of off, was, uniform, manual, actadd, cast/);
    await expect(resolvePolicyOptions({ policy: 'was' }, m)).rejects.toThrow(/needs --controller/);
    await expect(resolvePolicyOptions({ policy: 'manual' }, m)).rejects.toThrow(/needs --direction/);
    await expect(resolvePolicyOptions({ policy: 'off', direction: '/no/such/file.safetensors' }, m)).rejects.toThrow(/does not exist/);
    expect(parseNumberList('layer-weights', '0.1, 0.2,1')).toEqual([0.1, 0.2, 1]);
    expect(() => parseNumberList('layer-weights', '0.1,,2')).toThrow(/comma-separated list of numbers/);
    expect(() => parseCount('n', '0')).toThrow(/--n must be a whole number in 1..100000000, got "0"/);
  });

  it('controller input takes residual rows l+1 of each input layer', () => {
    const res = Float32Array.from({ length: (L + 1) * H }, (_, i) => i);
    expect(Array.from(controllerInput(res, decoderLayers([0, 2]), L, H))).toEqual([4, 5, 6, 7, 12, 13, 14, 15]);
    // Unchecked input (a hand-edited file) is still caught at run time.
    expect(() => controllerInput(res, [3 as DecoderLayer], L, H)).toThrow(/not a decoder layer in 0..2/);
  });
});
