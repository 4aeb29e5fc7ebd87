/**
 * The lab's evaluation runner (src/ui/lib/eval-runner.ts) with a fake model: records per prompt x condition, the
 * 'off' generation reused as the observation, resume after a cancel without repeating a record, CSV export, and
 * prompt fitting (the same fitPrompt the worker runs, over a character-level stand-in tokenizer): a long prompt is
 * observed and generated shortened, its records say so; with fit 'none' it is recorded unjudged.
 */
import { describe, expect, test } from 'vitest';
import { MAX_CONSECUTIVE_FAILURES, planPrompts, recordsToCsv, runEval, runFitMode, type EvalDeps } from '../../src/ui/lib/eval-runner.js';
import { MemoryRecordStore, summarize } from '../../src/core/eval/records.js';
import { wasKeywordJudge } from '../../src/core/eval/judges.js';
import type { LoadResult } from '../../src/core/data/types.js';
import { FIT_MARKER, fitPrompt, type FitDeps, type FitMode } from '../../src/core/method/fit.js';

/** A character-level tokenizer with a 4-token chat template, a 40-token context and 8-token replies. */
const CONTEXT = 40;
const MAX_NEW = 8;
const charTokens: FitDeps = {
  encode: (t) => Array.from(t, (c) => c.codePointAt(0)!),
  decode: (ids) => String.fromCodePoint(...ids),
  promptTokens: (u) => Array.from(u).length + 4,
};

const data: LoadResult = {
  name: 'toy', rowsRead: 4, problems: [],
  prompts: ['a', 'b', 'c', 'd'].map((id) => ({ id, text: `prompt ${id}`, label: id < 'c' ? 'harmful' as const : 'benign' as const, meta: {} })),
};

function fakeDeps(store: MemoryRecordStore, calls: string[], signal?: AbortSignal, onGen?: () => void, mode: FitMode = 'middle'): EvalDeps {
  const tooLong = (t: string) => {
    if (charTokens.promptTokens(t) >= CONTEXT) throw new Error(`generate prompt has ${charTokens.promptTokens(t)} tokens, longer than the model's context`);
  };
  return {
    fit: async (t) => fitPrompt(charTokens, t, { contextLength: CONTEXT, maxNewTokens: MAX_NEW, mode }),
    observe: async (t) => (tooLong(t), calls.push(`observe ${t}`), new Float32Array(6)),
    predict: async () => ({ scale: 0.9, layerWeights: Float32Array.from([0.1, 0.2]) }),
    steering: (condition, _r, prediction) => ({ policy: condition, matrix: condition === 'off' ? null : new Float32Array(4), rowNorms: new Float32Array(2), prediction, cast: null }),
    generate: async (t, m, capture) => {
      tooLong(t);
      calls.push(`generate ${t} ${m ? 'steered' : 'base'}${capture ? ' capture' : ''}`);
      onGen?.();
      return { text: m ? "I'm sorry, I cannot" : 'Sure, here it is', tokenIds: [1, 2], finishReason: 'length', promptResiduals: capture ? new Float32Array(6) : undefined };
    },
    judge: wasKeywordJudge,
    store,
    signal,
  };
}

describe('eval runner', () => {
  test('plan: N per dataset by seed, stable', () => {
    const p = planPrompts([data], 2, 7);
    expect(p).toHaveLength(2);
    expect(planPrompts([data], 2, 7)).toEqual(p);
    expect(planPrompts([data], 10, 7)).toHaveLength(4);
    expect(() => planPrompts([data], 0, 7)).toThrow(/positive/);
  });

  test('records per prompt and condition; base generation doubles as the observation', async () => {
    const store = new MemoryRecordStore();
    const calls: string[] = [];
    const r = await runEval(planPrompts([data], 2, 1), ['was', 'off'], fakeDeps(store, calls));
    expect(r).toMatchObject({ done: 4, total: 4, cancelled: false });
    expect(calls.filter((c) => c.startsWith('observe'))).toEqual([]);
    expect(calls[0]).toMatch(/base capture$/);
    const rows = summarize(store.records());
    expect(rows.map((x) => [x.condition, x.refusal_rate])).toEqual([['off', 0], ['was', 1]]);
    const rec = store.records().find((x) => x.condition === 'was')!;
    expect(rec).toMatchObject({ s: 0.9, judge: 'was-keywords', refused: true, steered: true });
    expect(rec.w).toEqual([0.10000000149011612, 0.20000000298023224]);
  });

  test('cancel, then resume: nothing repeated, everything finished', async () => {
    const store = new MemoryRecordStore();
    const ac = new AbortController();
    let n = 0;
    const plan = planPrompts([data], 4, 3);
    const first = await runEval(plan, ['off', 'manual'], fakeDeps(store, [], ac.signal, () => { if (++n === 3) ac.abort(); }));
    expect(first.cancelled).toBe(true);
    const kept = store.size;
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThan(8);
    const calls: string[] = [];
    const second = await runEval(plan, ['off', 'manual'], fakeDeps(store, calls));
    expect(second).toMatchObject({ cancelled: false, total: 8, skipped: kept });
    expect(store.size).toBe(8);
    expect(calls.filter((c) => c.startsWith('generate')).length).toBe(8 - kept);
  });

  test('CSV escapes formulas and joins w', () => {
    const csv = recordsToCsv([{ dataset: 'x', id: '1', condition: 'was', prompt: '=HYPERLINK("evil")', output: 'ok', w: [0.5, 0.25], refused: false }]);
    expect(csv.split('\n')[0]).toMatch(/^dataset,id,condition,label,refused/);
    expect(csv.split('\n')[0]).toContain(',truncated,prompt_tokens,kept_tokens,');
    expect(csv).toContain("'=HYPERLINK");
    expect(csv).toContain('0.5000 0.2500');
  });

  test('a prompt the model cannot take is recorded unjudged; failures in a row stop the run', async () => {
    const store = new MemoryRecordStore();
    const deps = fakeDeps(store, []);
    const gen = deps.generate;
    deps.generate = async (t, m, c) => {
      if (t === 'prompt a') throw new Error('prompt has 398 tokens, longer than the model context');
      return gen(t, m, c);
    };
    const r = await runEval(planPrompts([data], 4, 1), ['off'], deps);
    expect(r.cancelled).toBe(false);
    expect(store.size).toBe(4);
    const bad = store.records().find((x) => x.id === 'a')!;
    expect(bad.error).toMatch(/398 tokens/);
    expect(bad.refused).toBeUndefined();
    expect(summarize(store.records())[0]).toMatchObject({ n: 3, unjudged: 1 });

    const many: LoadResult = { ...data, prompts: Array.from({ length: 12 }, (_, i) => ({ id: `p${i}`, text: `prompt ${i}`, label: 'harmful' as const, meta: {} })) };
    const broken = fakeDeps(new MemoryRecordStore(), []);
    broken.generate = async () => {
      throw new Error('worker crashed');
    };
    await expect(runEval(planPrompts([many], 12, 1), ['off', 'was'], broken)).rejects.toThrow(/worker crashed/);
    // every condition of MAX_CONSECUTIVE_FAILURES prompts was recorded, then the run stopped
    expect(broken.store.size).toBe(2 * MAX_CONSECUTIVE_FAILURES);
  });

  test('a prompt longer than the context is fitted: observed and generated shortened, records say so', async () => {
    const long = `HEAD ${'x'.repeat(100)} TAIL?`;
    const set: LoadResult = { ...data, prompts: [{ id: 'long', text: long, label: 'harmful', meta: {} }, { id: 'short', text: 'hi', label: 'benign', meta: {} }] };
    const store = new MemoryRecordStore();
    const calls: string[] = [];
    const r = await runEval(planPrompts([set], 2, 0), ['off', 'was'], fakeDeps(store, calls));
    expect(r).toMatchObject({ done: 4, cancelled: false });
    const seen = calls.filter((c) => c.includes('HEAD'));
    expect(seen).toHaveLength(2); // the 'off' generation (observation) and the steered one
    for (const c of seen) {
      expect(c).toContain(FIT_MARKER);
      expect(c).toMatch(/^generate HEAD.* TAIL\? (base capture|steered)$/);
    }
    for (const rec of store.records().filter((x) => x.id === 'long')) {
      expect(rec).toMatchObject({ truncated: true, prompt_tokens: long.length + 4, prompt: long });
      expect((rec.kept_tokens as number) + MAX_NEW).toBeLessThanOrEqual(CONTEXT);
      expect(typeof rec.refused).toBe('boolean');
    }
    for (const rec of store.records().filter((x) => x.id === 'short')) expect(rec).toMatchObject({ truncated: false, prompt_tokens: 6, kept_tokens: 6 });
    expect(summarize(store.records()).every((row) => row.unjudged === 0)).toBe(true);

    // fit 'none': the prompt reaches the model as it is and is recorded unjudged with the model's error.
    const none = new MemoryRecordStore();
    await runEval(planPrompts([set], 2, 0), ['off'], fakeDeps(none, [], undefined, undefined, 'none'));
    const bad = none.records().find((x) => x.id === 'long')!;
    expect(bad).toMatchObject({ truncated: false, prompt_tokens: long.length + 4 });
    expect(bad.error).toMatch(/longer than the model's context/);
    expect(bad.refused).toBeUndefined();
  });

  test("the panel's fit setting: new runs carry theirs, runs stored before fitting resume with 'none', bad ones are named", () => {
    expect(runFitMode({ fit: 'middle' })).toBe('middle');
    expect(runFitMode({ fit: 'tail' })).toBe('tail');
    expect(runFitMode({})).toBe('none');
    expect(() => runFitMode({ fit: 'sides' })).toThrow(/the run's fit setting must be one of none \| middle \| head \| tail, got "sides"/);
  });
});
