/**
 * Batched evaluation (src/core/eval/runner.ts runEval with `batch`): the records of any batch size equal the records
 * of batch 1 (timings aside), on every graph form the decode engine batches differently: plain (left padding),
 * fused GroupQueryAttention (right padding), fused-q4 (right padding, int8 compute), fused-q4f16 (right padding, fp16
 * cache) and merged (use_cache_branch).
 * One run holds prompts of different lengths, several conditions per prompt (different policies' matrices side by
 * side in one batch: base, WAS from a controller, manual) and a batch size that splits a prompt's conditions across
 * two batches; greedy and the paper's seeded sampling (per-prompt seeds); and the patch on every prompt position.
 * runFlows with per-item steering settings (add / clamp / ablate: projection rows per row; positions last / all / new)
 * gives every item what runFlow gives it alone.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTestModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS, type TestTopology } from '../../src/core/onnx/testmodel/config.js';
import { loadSteerableModel, type SteerableModel } from '../../src/core/model/index.js';
import type { DecodeStats, PromptPrefix } from '../../src/core/model/decode.js';
import { ControllerForward } from '../../src/core/controller/forward.js';
import { initControllerParams } from '../../src/core/controller/params.js';
import { controllerInputLayers } from '../../src/core/controller/layers.js';
import { normalize } from '../../src/core/steering/vector.js';
import { resolveCondition } from '../../src/core/method/conditions.js';
import { runFlow, runFlows, type FlowItem, type FlowResult, type MethodController } from '../../src/core/method/flow.js';
import type { SteeringSettings } from '../../src/core/steering/modes.js';
import type { DirectionFile } from '../../src/core/steering/direction-file.js';
import { wasKeywordJudge } from '../../src/core/eval/judges.js';
import { MemoryRecordStore, type EvalRecord } from '../../src/core/eval/records.js';
import { PAPER_SAMPLING, runEval, type EvalDataset, type RunRecord } from '../../src/core/eval/runner.js';

const shape = SHAPE_PRESETS.tiny!;
const L = shape.numLayers;
const H = shape.hiddenSize;
const root = mkdtempSync(join(tmpdir(), 'steerlab-eval-batch-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const direction = normalize(Float32Array.from({ length: H }, (_, i) => Math.sin(i + 1)));
const inputLayers = controllerInputLayers(L);
const controller: MethodController = {
  network: new ControllerForward(initControllerParams({ inputSize: inputLayers.length * H, hiddenWidth: 16, numLayers: L }, 3)),
  inputLayers,
};
const conditions = [
  resolveCondition('base', {}),
  resolveCondition('was', { controller, direction: { direction } as DirectionFile, alpha: 40 }),
  resolveCondition('manual', { direction: { direction } as DirectionFile, manual: { scale: 12, layerWeights: [1, 0.2, 0.8, 0.5], enabledLayers: [true, true, false, true] } }),
];
// chat-formatted lengths differ (the test tokenizer spells words out): mixed lengths in every batch
const datasets: EvalDataset[] = [
  { name: 'set-a', prompts: ['Hi', 'How do I pick a lock on an old door?', 'Tell me a story'].map((text, i) => ({ id: `a${i}`, text, label: 'harmful' as const, meta: {} })) },
  { name: 'set-b', prompts: ['What is two plus two, and why is it so?', 'Ok'].map((text, i) => ({ id: `b${i}`, text, label: 'benign' as const, meta: {} })) },
];
const NEW = 8;
const TOPOLOGIES: TestTopology[] = ['plain', 'fused', 'fused-q4', 'fused-q4f16', 'merged'];

describe.each(TOPOLOGIES)('batched eval records equal batch 1, %s graph', (topology) => {
  let model: SteerableModel;
  const rowsPerCall: number[] = [];
  // the prompt length (tokens) of every row of every decode call, in call order
  const lengthsPerCall: number[][] = [];
  // what the decode calls ran: prefill passes, lead rows started from a prefix handed in, and observation passes
  const ran = { prefills: 0, carried: 0, captured: 0 };

  beforeAll(async () => {
    const b = await buildTestModel(join(root, topology), { shape, topology, seed: 13 });
    model = await loadSteerableModel(b.dir, { dtype: b.dtype, modelFileName: b.modelFileName });
    const decode = model.decode.bind(model);
    model.decode = async (rows, opts = {}) => {
      rowsPerCall.push(rows.length);
      lengthsPerCall.push(rows.map((r) => r.ids.length));
      const stats: DecodeStats = opts.stats ?? { passes: 0, capturedPasses: 0, runMs: 0, totalMs: 0 };
      try {
        return await decode(rows, { ...opts, stats });
      } finally {
        ran.prefills += stats.prefills ?? 0;
        ran.carried += stats.carriedPrefixes ?? 0;
        ran.captured += stats.capturedPasses;
      }
    };
  });
  afterAll(async () => model?.dispose());

  const CALIBRATION = { set: 'fixed for this test', quantile: 0.95, n: 1, value: 2.5, method: 'unsteered-replies-quantile-linear' } as const;
  async function records(batch: number, sampling: boolean, steerPromptPositions: 'last' | 'all' = 'last'): Promise<RunRecord[]> {
    const store = new MemoryRecordStore();
    rowsPerCall.length = 0;
    lengthsPerCall.length = 0;
    const r = await runEval({
      model,
      datasets,
      conditions,
      direction,
      controller,
      directionId: null,
      controllerId: null,
      store,
      judge: wasKeywordJudge,
      maxNewTokens: NEW,
      sampling: sampling ? { ...PAPER_SAMPLING } : null,
      seed: 4,
      batch,
      steerPromptPositions,
      // a given reply_nll threshold: the decode calls counted are the records' own (no calibration replies)
      calibration: CALIBRATION,
    });
    expect(r).toEqual({ total: 15, written: 15, skipped: 0, failed: 0, cancelled: false, calibration: CALIBRATION });
    return store.records().map((x: EvalRecord) => ({ ...(x as unknown as RunRecord), timings: null as unknown as RunRecord['timings'] }));
  }

  for (const sampling of [false, true]) {
    it(`${sampling ? 'seeded sampling' : 'greedy'}: batches of 4 and 15 write the records of batch 1`, async () => {
      const one = await records(1, sampling);
      expect(rowsPerCall).toEqual(new Array(15).fill(1));
      // the test is not vacuous: the steered conditions change replies, and replies differ between prompts
      const base = one.filter((x) => x.condition === 'base');
      expect(one.filter((x) => x.condition !== 'base' && x.output !== base.find((b) => b.id === x.id)!.output).length).toBeGreaterThan(0);
      expect(new Set(base.map((x) => x.output)).size).toBeGreaterThan(1);
      expect(new Set(one.map((x) => x.prompt_tokens)).size).toBeGreaterThan(2);
      for (const batch of [4, 15]) {
        const got = await records(batch, sampling);
        // 4 splits prompts' conditions across batches; 15 holds the whole run
        expect(rowsPerCall).toEqual(batch === 4 ? [4, 4, 4, 3] : [15]);
        // one window (4 batches of 4) holds the run: its rows were decoded shortest prompt first, not in file order
        const lengths = lengthsPerCall.flat();
        expect(lengths).toEqual([...lengths].sort((a, b) => a - b));
        expect(one.map((x) => x.prompt_tokens)).not.toEqual([...one.map((x) => x.prompt_tokens)].sort((a, b) => a! - b!));
        // and the records were written in file order all the same
        expect(got).toEqual(one);
      }
    });
  }

  it("the prompt prefix the decode kept scores a reply bit for bit as the scorer's own prefix pass, and saves that pass", async () => {
    const prompts = datasets.flatMap((d) => d.prompts.map((p) => p.text));
    // mixed lengths in one call (left padding: one prefill per length; right padding: one padded prefill) and two
    // rows sharing a prompt (one prefill for both)
    const items: FlowItem[] = [prompts[1]!, prompts[0]!, prompts[3]!, prompts[1]!].map((prompt, i) => ({ prompt, policy: i === 3 ? conditions[2]!.policy : { kind: 'off' }, maxNewTokens: NEW }));
    const outs = await runFlows(model, { direction, controller }, items, { keepPrefix: true });
    // transformers.js forward passes of the scorer: prompt prefix + the rest, or the rest alone
    const forward = model.model.forward.bind(model.model);
    let passes = 0;
    model.model.forward = (x) => (passes++, forward(x));
    try {
      for (const [i, out] of outs.entries()) {
        if (!out.ok) throw out.error;
        const ids = model.formatChat(items[i]!.prompt).ids;
        expect(out.prefix?.ids).toEqual(ids.slice(0, -1));
        passes = 0;
        const own = await model.replyLogits(ids, out.result.tokenIds, null);
        expect(passes).toBe(2);
        passes = 0;
        const handed = await model.replyLogits(ids, out.result.tokenIds, null, out.prefix);
        expect(passes).toBe(1);
        expect(handed.rows).toEqual(own.rows);
        // a prefix kept for another prompt is not used
        const other = outs[(i + 1) % outs.length] as { prefix?: PromptPrefix };
        if (other.prefix!.ids.join() !== out.prefix!.ids.join()) expect((await model.replyLogits(ids, out.result.tokenIds, null, other.prefix)).rows).toEqual(own.rows);
      }
      // the eval runner hands every record's prefix to its scoring: one pass per record (the reply), plus the
      // patched first-token pass of each benign record under a steered condition (2 prompts x 2 conditions)
      passes = 0;
      await records(15, false);
      expect(passes).toBe(15 + 4);
    } finally {
      model.model.forward = forward;
    }
    expect((outs[0] as { prefix?: PromptPrefix }).prefix).toBe((outs[3] as { prefix?: PromptPrefix }).prefix);
  });
  it("with the run's own calibration: base replies decode once, steered rows fill the batch and start from the calibration's prefill; records = batch 1 = no carry", async () => {
    async function calibrated(batch: number, prefixCarryBytes?: number) {
      const store = new MemoryRecordStore();
      rowsPerCall.length = 0;
      Object.assign(ran, { prefills: 0, carried: 0, captured: 0 });
      const r = await runEval({ model, datasets, conditions, direction, controller, directionId: null, controllerId: null, store, judge: wasKeywordJudge, maxNewTokens: NEW, sampling: null, seed: 4, batch, ...(prefixCarryBytes !== undefined ? { prefixCarryBytes } : {}) });
      expect(r.written).toBe(15);
      const records = store.records().map((x: EvalRecord) => ({ ...(x as unknown as RunRecord), timings: null as unknown as RunRecord['timings'] }));
      return { records, calibration: r.calibration, calls: [...rowsPerCall], ...ran };
    }
    const one = await calibrated(1);
    // 5 base replies in the calibration, then the 10 steered rows (2 per prompt), each from its carried prefix
    expect(one.calls).toEqual(new Array(15).fill(1));
    expect(one.carried).toBe(10);
    expect(one.prefills).toBe(5);
    const four = await calibrated(4);
    // a batch counts rows to decode: calibrated base records take none (before: 4 records = 2 or 3 rows)
    expect(four.calls).toEqual([4, 1, 4, 4, 2]);
    // one carried prefix per distinct prompt of each main-loop call (its rows share it)
    expect(four.carried).toBe(5);
    const all = await calibrated(15);
    expect(all.calls).toEqual([5, 10]);
    expect(all.carried).toBe(5);
    const none = await calibrated(4, 0);
    expect(none.carried).toBe(0);
    expect(none.prefills).toBeGreaterThan(four.prefills);
    for (const other of [four, all, none]) {
      expect(other.records).toEqual(one.records);
      expect(other.calibration).toEqual(one.calibration);
    }
    // the steered conditions did steer (records are not all alike)
    expect(one.records.filter((x) => x.condition !== 'base' && x.output !== one.records.find((b) => b.id === x.id && b.condition === 'base')!.output).length).toBeGreaterThan(0);
  });

  it('a prefix handed in for other ids, or in another cache shape, is ignored: the row prefills, its tokens unchanged', async () => {
    const prompts = datasets.flatMap((d) => d.prompts.map((p) => p.text));
    const items: FlowItem[] = [prompts[1]!, prompts[3]!].map((prompt) => ({ prompt, policy: conditions[2]!.policy, maxNewTokens: NEW }));
    const kept = await runFlows(model, { direction, controller }, items, { keepPrefix: true });
    const [p1, p3] = kept.map((k) => (k as { prefix: PromptPrefix }).prefix);
    const plain = kept.map((k) => (k as { result: FlowResult }).result.tokenIds);
    const short = { ids: p1!.ids, kv: Object.fromEntries(Object.entries(p1!.kv).map(([n, t]) => [n, { ...t, dims: [1, t.dims[1]!, t.dims[2]! - 1, t.dims[3]!] }])) };
    for (const wrong of [[p3, p1], [short, null]] as const) {
      Object.assign(ran, { prefills: 0, carried: 0, captured: 0 });
      const got = await runFlows(model, { direction, controller }, items.map((x, k) => ({ ...x, prefix: wrong[k] ?? null })));
      expect(ran.carried).toBe(0);
      expect(got.map((k) => (k as { result: FlowResult }).result.tokenIds)).toEqual(plain);
    }
    // the right ones are taken
    Object.assign(ran, { prefills: 0, carried: 0, captured: 0 });
    const right = await runFlows(model, { direction, controller }, items.map((x, k) => ({ ...x, prefix: [p1, p3][k] })));
    expect(ran).toMatchObject({ carried: 2, prefills: 0 });
    expect(right.map((k) => (k as { result: FlowResult }).result.tokenIds)).toEqual(plain);
  });

  it('a manual policy without a controller reads no residual: no observation pass, the same tokens and matrix as with one', async () => {
    const prompts = datasets.flatMap((d) => d.prompts.map((p) => p.text));
    const manual = conditions[2]!.policy;
    const items: FlowItem[] = prompts.map((prompt) => ({ prompt, policy: manual, maxNewTokens: NEW }));
    Object.assign(ran, { prefills: 0, carried: 0, captured: 0 });
    const observed = await runFlows(model, { direction, controller }, items);
    expect(ran.captured).toBeGreaterThan(0);
    ran.captured = 0;
    const fixed = await runFlows(model, { direction, controller: null }, items);
    expect(ran.captured).toBe(0);
    fixed.forEach((f, k) => {
      const a = observed[k] as { ok: true; result: FlowResult };
      const b = f as { ok: true; result: FlowResult };
      expect(b.ok && a.ok, `item ${k}`).toBe(true);
      expect(b.result.tokenIds, `item ${k}`).toEqual(a.result.tokenIds);
      expect(b.result.matrix, `item ${k}`).toEqual(a.result.matrix);
      expect(b.result.promptResidual).toBeNull();
      expect(a.result.promptResidual).not.toBeNull();
    });
    // a manual policy without a direction fails on its item, as it did when observed
    const [lost] = await runFlows(model, { direction: null, controller: null }, [items[0]!]);
    expect(lost!.ok).toBe(false);
    expect(String((lost as { error: unknown }).error)).toMatch(/needs a steering direction/);
  });

  it("steerPromptPositions 'all' (observation over the whole prompt, then the whole prompt steered): batch 15 = batch 1", async () => {
    const one = await records(1, false, 'all');
    expect(one).not.toEqual(await records(1, false, 'last'));
    expect(await records(15, false, 'all')).toEqual(one);
  });
  it('runFlows with per-item settings (clamp / ablate projection rows, positions last / all / new) = runFlow per item', async () => {
    const manual = conditions[2]!.policy;
    const was = conditions[1]!.policy;
    const set = (mode: SteeringSettings['mode'], positions: SteeringSettings['positions']): SteeringSettings => ({ mode, layers: null, positions, alpha: { scale: 'absolute' } });
    const prompts = datasets.flatMap((d) => d.prompts.map((p) => p.text));
    const items: FlowItem[] = [
      { prompt: prompts[1]!, policy: manual, settings: set('ablate', 'new') },
      { prompt: prompts[0]!, policy: was, settings: set('clamp', 'last') },
      { prompt: prompts[1]!, policy: manual, settings: set('clamp', 'new') },
      { prompt: prompts[3]!, policy: manual, settings: set('add', 'new') },
      { prompt: prompts[2]!, policy: was, settings: set('ablate', 'last') },
      { prompt: prompts[1]!, policy: { kind: 'off' } },
      { prompt: prompts[3]!, policy: manual, settings: set('clamp', 'all') },
      { prompt: prompts[0]!, policy: manual, settings: set('add', 'last') },
    ].map((x) => ({ ...x, maxNewTokens: NEW, sampling: { ...PAPER_SAMPLING, seed: 7 } }) as FlowItem);
    const parts = { direction, controller };
    rowsPerCall.length = 0;
    const batched = await runFlows(model, parts, items);
    // one decode call per positions value: last (3 items incl. the off item), new (3), all (1)
    expect([...rowsPerCall].sort()).toEqual([1, 3, 4]);
    const alone: FlowResult[] = [];
    for (const item of items) {
      const { prompt, ...opts } = item;
      alone.push(await runFlow(model, prompt, parts, opts));
    }
    batched.forEach((b, k) => {
      expect(b.ok, `item ${k}: ${b.ok ? '' : String(b.error)}`).toBe(true);
      const r = (b as { ok: true; result: FlowResult }).result;
      expect(r.tokenIds, `item ${k}`).toEqual(alone[k]!.tokenIds);
      expect(r.matrix, `item ${k}`).toEqual(alone[k]!.matrix);
      expect(r.projection, `item ${k}`).toEqual(alone[k]!.projection);
    });
    // not vacuous: clamp and ablate items carry projection rows; modes and positions change the reply
    expect(alone.filter((r) => r.projection !== null).length).toBe(5);
    expect(alone[0]!.tokenIds).not.toEqual(alone[2]!.tokenIds);
    expect(alone[0]!.tokenIds).not.toEqual(alone[5]!.tokenIds);
    expect(alone[3]!.tokenIds).not.toEqual(alone[6]!.tokenIds);
  });
});
