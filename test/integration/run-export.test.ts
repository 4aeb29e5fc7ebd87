/**
 * One record schema for CLI and lab runs, proven by crossing over: records written by the core eval runner through a
 * memory store (what the lab does with IndexedDB, the model's fingerprint included) and exported as a run folder with the platform-free runFiles()
 * are resumed by `lab eval` with the same settings (only the missing records are made) and summarised by
 * `lab summarize`, and the result equals an uninterrupted CLI run: same records (timings aside), same summary
 * files byte for byte. The lab side loads its artefacts from bytes (directionFromBytes / controllerFromBytes), as the
 * worker will.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runDirection } from '../../src/cli/commands/direction.js';
import { runEvalCommand, runSummarizeCommand, type EvalCliOptions } from '../../src/cli/commands/eval.js';
import { runTrainController } from '../../src/cli/commands/train-controller.js';
import { pick } from '../../src/core/data/sample.js';
import { getJudge } from '../../src/core/eval/judges.js';
import { MemoryRecordStore, type EvalRecord } from '../../src/core/eval/records.js';
import { runEval, runSettings, type EvalDataset } from '../../src/core/eval/runner.js';
import { modelFingerprint } from '../../src/core/eval/resume-check.js';
import { runFiles } from '../../src/core/eval/summary.js';
import { controllerFromBytes, directionFromBytes } from '../../src/core/method/artifacts.js';
import { parseConditionList, resolveConditions } from '../../src/core/method/conditions.js';
import { loadPromptSet } from '../../src/core/method/datasets.js';
import { loadSteerableModel } from '../../src/core/model/load.js';
import { buildTestModel, type BuiltModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';

const root = mkdtempSync(join(tmpdir(), 'steerlab-run-export-'));
let built: BuiltModel;
const dirFile = join(root, 'direction.safetensors');
const ctlFile = join(root, 'controller.safetensors');
const SEED = 4;
const N = 3;
const DATASETS = ['toxicchat-test', 'xstest-safe'];
const CONDITIONS = 'base,was,manual';
const MANUAL = { scale: 1.5, layerWeights: [1, 0.5, 0.5, 1], enabledLayers: [true, true, false, true] };

const cli = (out: string): EvalCliOptions => ({
  model: built.dir, dataset: DATASETS, n: String(N), seed: String(SEED), conditions: CONDITIONS, direction: dirFile, controller: ctlFile,
  scale: '1.5', layerWeights: '1,0.5,0.5,1', enabledLayers: '0,1,3', maxNewTokens: '4', judge: 'arditi-keywords', out,
});
const stable = (r: EvalRecord) => ({ ...r, timings: undefined });
const lines = (f: string) => readFileSync(f, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as EvalRecord);

/** What the lab does: the core runner on a memory store, stopped after `stopAfter` records, exported with runFiles(). */
async function labExport(dir: string, stopAfter: number | null): Promise<number> {
  const model = await loadSteerableModel(built.dir);
  try {
    const direction = await directionFromBytes(new Uint8Array(readFileSync(dirFile)), model, 'saved direction');
    const controller = await controllerFromBytes(new Uint8Array(readFileSync(ctlFile)), model, 'saved controller');
    const datasets: EvalDataset[] = [];
    for (const name of DATASETS) datasets.push({ name, prompts: pick((await loadPromptSet({ source: name })).prompts, N, SEED) });
    const names = parseConditionList(CONDITIONS);
    const conditions = resolveConditions(names, { direction: direction.file, controller: controller.method, manual: MANUAL });
    const store = new MemoryRecordStore();
    const ac = new AbortController();
    const judge = getJudge('arditi-keywords');
    await runEval({
      model, datasets, conditions, direction: direction.file.direction, controller: controller.method, directionId: direction.id, controllerId: controller.id,
      // batch 2: the run spans several scheduling windows, so the abort lands before its end (batch 8 would hold all
      // 18 records in one window, and a window's decoded records are written, not thrown away)
      store, judge, maxNewTokens: 4, sampling: null, seed: SEED, fit: 'middle', signal: ac.signal, batch: 2,
      onProgress: (p) => { if (stopAfter !== null && p.done >= stopAfter) ac.abort(); },
    });
    const settings = await runSettings({
      model: model.identity, datasets, conditions: names, seed: SEED, maxNewTokens: 4, sampling: null, steerPromptPositions: 'last', fit: 'middle',
      judge: judge.id, directionId: direction.id, controllerId: controller.id, castId: null, alpha: null, manual: MANUAL, fingerprint: await modelFingerprint(model),
    });
    mkdirSync(dir, { recursive: true });
    for (const [name, text] of Object.entries(runFiles(settings, store.records()))) writeFileSync(join(dir, name), text);
    return store.size;
  } finally {
    await model.dispose();
  }
}

beforeAll(async () => {
  built = await buildTestModel(join(root, 'model'), { shape: SHAPE_PRESETS.tiny!, topology: 'plain', seed: 21 });
  await runDirection({ model: built.dir, method: 'embedding', harmful: '', harmless: '', n: '1', valN: '1', seed: '0', out: dirFile });
  await runTrainController({ model: built.dir, direction: dirFile, harmful: 'harmful-train', benign: 'harmless-train', n: '4', valFraction: '0.25', loss: 'mse', epochs: '1', seed: '0', out: ctlFile });
}, 120_000);
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('a lab run exported as files, then the CLI', () => {
  const total = DATASETS.length * N * 3;
  let reference: { records: EvalRecord[]; dir: string };

  it('the CLI run every other run is compared with', async () => {
    const dir = join(root, 'cli');
    const r = await runEvalCommand(cli(dir), false);
    expect(r.written).toBe(total);
    reference = { records: lines(r.records), dir };
    const manual = reference.records.filter((x) => x.condition === 'manual');
    expect(manual).toHaveLength(DATASETS.length * N);
    expect(manual[0]!.manual).toEqual({ scale: 1.5, layer_weights: [1, 0.5, 0.5, 1], enabled_layers: [true, true, false, true] });
    expect((manual[0]!.row_norms as number[])[2]).toBe(0);
  }, 120_000);

  it('an interrupted lab run resumes under lab eval: only the missing records are made, the result equals the CLI run', async () => {
    const dir = join(root, 'lab-partial');
    const exported = await labExport(dir, 7);
    expect(exported).toBeGreaterThanOrEqual(7);
    expect(exported).toBeLessThan(total);
    const r = await runEvalCommand(cli(dir), false);
    expect(r.skipped).toBe(exported);
    expect(r.written).toBe(total - exported);
    const recs = lines(r.records);
    expect(recs.map(stable)).toEqual(reference.records.map(stable));
    for (const f of ['summary.json', 'summary.csv', 'summary.md']) expect(readFileSync(join(dir, f), 'utf8'), f).toBe(readFileSync(join(reference.dir, f), 'utf8'));
    expect(readFileSync(join(dir, 'run.json'), 'utf8')).toBe(readFileSync(join(reference.dir, 'run.json'), 'utf8'));
  }, 120_000);

  it('a complete lab export is summarised by lab summarize exactly as the CLI summarised its own run', async () => {
    const dir = join(root, 'lab-full');
    expect(await labExport(dir, null)).toBe(total);
    expect(lines(join(dir, 'records.jsonl')).map(stable)).toEqual(reference.records.map(stable));
    const before = Object.fromEntries(['summary.json', 'summary.csv', 'summary.md'].map((f) => [f, readFileSync(join(dir, f), 'utf8')]));
    rmSync(join(dir, 'summary.json'));
    const s = await runSummarizeCommand(dir);
    expect(s.records).toBe(total);
    for (const f of ['summary.json', 'summary.csv', 'summary.md']) {
      expect(readFileSync(join(dir, f), 'utf8'), f).toBe(readFileSync(join(reference.dir, f), 'utf8'));
      expect(readFileSync(join(dir, f), 'utf8'), `${f} as exported`).toBe(before[f]);
    }
    await expect(runSummarizeCommand(join(root, 'nothing-here'))).rejects.toThrow(/cannot read .*records\.jsonl.*run folder/);
  }, 120_000);
});
