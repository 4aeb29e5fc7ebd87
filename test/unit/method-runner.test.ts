/**
 * The eval runner and the method's small parts, without a real model: a fake SteerableModel whose generate() calls
 * the policy with a fixed residual and "refuses" when the patch is large. Checks the record fields, resume after an
 * abort (no lost or duplicate rows, same records), per-prompt seeds, summaries with labels, condition and policy
 * option errors.
 */
import { describe, expect, it } from 'vitest';
import { MemoryRecordStore, type EvalRecord } from '../../src/core/eval/records.js';
import { wasKeywordJudge } from '../../src/core/eval/judges.js';
import { promptSeed, runEval, runSummaryCsv, runSummaryMarkdown, summarizeRun, type EvalDataset } from '../../src/core/eval/runner.js';
import { parseConditionList, resolveCondition } from '../../src/core/method/conditions.js';
import { controllerInput, type MethodController } from '../../src/core/method/flow.js';
import type { SteerableModel } from '../../src/core/model/steerable.js';
import type { GenerateOptions, GenerateResult, SteeringPolicy as ModelPolicy } from '../../src/core/model/types.js';
import type { DirectionFile } from '../../src/core/steering/direction-file.js';
import { parseCount, parseNumberList, resolvePolicyOptions } from '../../src/cli/policy-options.js';

const L = 3;
const H = 4;

/** A stand-in model: residual [L+1, H] filled with the prompt length; reply "I'm sorry" when any patch row is non-zero. */
function fakeModel(calls: { n: number; seeds: (number | undefined)[] }): SteerableModel {
  return {
    id: 'fake',
    numLayers: L,
    hiddenSize: H,
    formatChat: (p: string) => ({ text: p, ids: Array.from({ length: p.length }, (_, i) => i), lastIndex: p.length - 1, postInstruction: [p.length - 1] }),
    generate: async (o: GenerateOptions): Promise<GenerateResult> => {
      calls.n++;
      calls.seeds.push(o.sampling?.seed);
      const res = new Float32Array((L + 1) * H).fill(o.inputIds!.length / 10);
      const policy = o.steering as ModelPolicy | null;
      const m = policy ? policy({ step: 0, promptResidual: res, previousResidual: null, generated: [] }) : null;
      const steered = !!m && m.some((x) => x !== 0);
      return { text: steered ? "I'm sorry, no." : 'Sure, here.', tokenIds: [1, 2], finishReason: 'length' };
    },
  } as unknown as SteerableModel;
}

/** A controller whose scale is the first input value and whose weights are 0.5. */
const controller: MethodController = {
  inputLayers: [2],
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

function run(store: MemoryRecordStore, calls: { n: number; seeds: (number | undefined)[] }, signal?: AbortSignal, sampling = false) {
  return runEval({
    model: fakeModel(calls),
    datasets,
    conditions,
    direction,
    controller,
    store,
    judge: wasKeywordJudge,
    maxNewTokens: 4,
    sampling: sampling ? { temperature: 0.7, topP: 0.9 } : null,
    seed: 5,
    ...(signal ? { signal } : {}),
  });
}

describe('runEval', () => {
  it('writes one judged record per dataset x condition x prompt, with s, w, row norms and timings', async () => {
    const store = new MemoryRecordStore();
    const calls = { n: 0, seeds: [] as (number | undefined)[] };
    const r = await run(store, calls);
    expect(r).toEqual({ total: 6, written: 6, skipped: 0 });
    const recs = store.records();
    expect(recs.map((x) => `${x.dataset}/${x.condition}/${x.id}`)).toEqual([
      'mixed/base/a', 'mixed/base/b', 'mixed/was/a', 'mixed/was/b', 'benign-set/base/c', 'benign-set/was/c',
    ]);
    const was = recs.find((x) => x.condition === 'was' && x.id === 'a')!;
    expect(was.s).toBeCloseTo(0.5, 6); // 'short' has 5 tokens: residual 0.5
    expect(was.w).toEqual([0.5, 0.5, 0.5]);
    expect(was.row_norms as number[]).toHaveLength(L);
    expect((was.row_norms as number[])[0]).toBeCloseTo(0.5 * 0.5 * 2, 6); // s * w * alpha * |d|
    expect(was.refused).toBe(true);
    expect(was.matched).toBe("I'm sorry");
    const base = recs.find((x) => x.condition === 'base' && x.id === 'a')!;
    expect(base.row_norms).toBeNull();
    expect(base.refused).toBe(false);
    expect(base.label).toBe('harmful');
  });

  it('an aborted run resumes: nothing lost, nothing repeated, same records', async () => {
    const full = new MemoryRecordStore();
    await run(full, { n: 0, seeds: [] }, undefined, true);
    const store = new MemoryRecordStore();
    const ac = new AbortController();
    const calls = { n: 0, seeds: [] as (number | undefined)[] };
    const orig = store.append.bind(store);
    store.append = async (rec: EvalRecord) => {
      await orig(rec);
      if (store.size === 4) ac.abort();
    };
    const first = await run(store, calls, ac.signal, true);
    expect(first.written).toBe(4);
    const again = { n: 0, seeds: [] as (number | undefined)[] };
    const second = await run(store, again, undefined, true);
    expect(second).toEqual({ total: 6, written: 2, skipped: 4 });
    expect(again.n).toBe(2);
    const strip = (x: EvalRecord) => ({ ...x, timings: null });
    expect(store.records().map(strip)).toEqual(full.records().map(strip));
  });

  it('sampling seeds depend on (seed, dataset, id) only: shared by the conditions of a prompt', async () => {
    const calls = { n: 0, seeds: [] as (number | undefined)[] };
    await run(new MemoryRecordStore(), calls, undefined, true);
    expect(calls.seeds[0]).toBe(promptSeed(5, 'mixed', 'a'));
    expect(calls.seeds[2]).toBe(calls.seeds[0]); // was/a = base/a
    expect(calls.seeds[1]).not.toBe(calls.seeds[0]);
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
    expect(csv[0]).toBe('dataset,condition,label,judge,n,refusals,refusal_rate,ci_low,ci_high,unjudged');
    expect(csv).toHaveLength(1 + 4 + 4);
  });
});

describe('conditions and policy options', () => {
  it('parses condition lists and names what is missing', () => {
    expect(parseConditionList('base, was,uniform')).toEqual(['base', 'was', 'uniform']);
    expect(() => parseConditionList('base,foo')).toThrow(/unknown condition 'foo'.*base, was, uniform, actadd, cast/);
    expect(() => parseConditionList('was,was')).toThrow(/listed twice/);
    expect(() => parseConditionList(' , ')).toThrow(/comma-separated/);
    expect(() => resolveCondition('was', { direction: { direction } as DirectionFile })).toThrow(/needs --controller/);
    expect(() => resolveCondition('uniform', { controller })).toThrow(/needs --direction/);
    expect(() => resolveCondition('actadd', { direction: { direction, metadata: { method: 'embedding' } } as DirectionFile })).toThrow(/needs a diff-in-means direction/);
    expect(() => resolveCondition('cast', {})).toThrow(/needs --cast FILE/);
    expect(resolveCondition('was', { controller: { ...controller, metadata: { alpha: 3 } as never }, direction: { direction } as DirectionFile }).policy).toEqual({ kind: 'was', alpha: 3 });
  });

  it('policy options: kinds, settings and their errors', async () => {
    const m = { id: 'x', numLayers: L, hiddenSize: H };
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
    expect(Array.from(controllerInput(res, [0, 2], L, H))).toEqual([4, 5, 6, 7, 12, 13, 14, 15]);
    expect(() => controllerInput(res, [3], L, H)).toThrow(/not a decoder layer in 0..2/);
  });
});
