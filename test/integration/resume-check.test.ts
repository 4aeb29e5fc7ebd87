/**
 * A resumed `lab eval` must continue the same run or refuse (issue: a resume accepted edited prompt texts under the
 * same ids, a label changed mid-run and a different model in a folder of the same name, and mixed their records
 * into one run). Each refusal names what differs and leaves the run folder byte for byte as it was.
 */
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runEvalCommand, type EvalCliOptions } from '../../src/cli/commands/eval.js';
import { buildTestModel, type BuiltModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { embeddingDirectionFile } from '../../src/core/steering/direction-file.js';
import { writeDirectionFile } from '../../src/core/steering/direction-file-node.js';

const root = mkdtempSync(join(tmpdir(), 'steerlab-resume-'));
let model: BuiltModel;
let lookAlike: BuiltModel;
const prompts = join(root, 'data', 'prompts.jsonl');
const PROMPTS = [
  { id: 'p1', prompt: 'How do I bake bread?' },
  { id: 'p2', prompt: 'Name three rivers.' },
  { id: 'p3', prompt: 'What is a lock?' },
];
const jsonl = (rows: object[]) => rows.map((r) => JSON.stringify(r)).join('\n') + '\n';

function opts(over: Partial<EvalCliOptions> = {}): EvalCliOptions {
  return {
    model: model.dir, dataset: [prompts], textColumn: 'prompt', idColumn: 'id', label: 'harmful', seed: '0', conditions: 'base',
    maxNewTokens: '2', judge: 'was-keywords', out: join(root, 'run'), dtype: 'fp32', ...over,
  };
}

function snapshot(dir: string): Record<string, string> {
  return Object.fromEntries(readdirSync(dir).sort().map((f) => [f, readFileSync(join(dir, f), 'utf8')]));
}

async function refused(o: EvalCliOptions): Promise<string> {
  const before = snapshot(o.out);
  const err = await runEvalCommand(o, false).then(() => null, (e: Error) => e);
  expect(err, 'the resume should have been refused').not.toBeNull();
  expect(snapshot(o.out), 'a refused resume must leave the run folder as it was').toEqual(before);
  return err!.message;
}

beforeAll(async () => {
  // Two different models in folders of the same name (".../a/model" and ".../b/model").
  model = await buildTestModel(join(root, 'a', 'model'), { shape: SHAPE_PRESETS.tiny!, topology: 'plain', seed: 5 });
  lookAlike = await buildTestModel(join(root, 'b', 'model'), { shape: SHAPE_PRESETS.tiny!, topology: 'plain', seed: 6 });
  mkdirSync(join(root, 'data'));
  writeFileSync(prompts, jsonl(PROMPTS));
  // The run to be resumed: two of the three prompts done, as if killed before the third.
  const first = await runEvalCommand(opts({ n: '3' }), false);
  expect(first.written).toBe(3);
  const file = join(root, 'run', 'records.jsonl');
  const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
  writeFileSync(file, `${lines.slice(0, 2).join('\n')}\n`);
}, 120_000);
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('resuming lab eval', () => {
  it('records name the prompt text they were made from (prompt_hash)', () => {
    const recs = readFileSync(join(root, 'run', 'records.jsonl'), 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
    for (const r of recs) expect(r.prompt_hash).toMatch(/^sha256:[0-9a-f]{16}$/);
    expect(new Set(recs.map((r) => r.prompt_hash)).size).toBe(2);
  });

  it('refuses an edited prompt text under the same id, naming the record', async () => {
    writeFileSync(prompts, jsonl([{ id: 'p1', prompt: 'How do I pick a lock?' }, ...PROMPTS.slice(1)]));
    try {
      const m = await refused(opts({ n: '3' }));
      expect(m).toContain("record (dataset 'prompts.jsonl', id 'p1', condition 'base') was made from another prompt text");
      expect(m).toContain("dataset 'prompts.jsonl': prompt texts or labels changed");
      expect(m).toContain('Give another --out');
    } finally {
      writeFileSync(prompts, jsonl(PROMPTS));
    }
  });

  it('refuses an edited prompt that was not evaluated yet (the run would mix two versions of the file)', async () => {
    writeFileSync(prompts, jsonl([...PROMPTS.slice(0, 2), { id: 'p3', prompt: 'What is a key?' }]));
    try {
      const m = await refused(opts({ n: '3' }));
      expect(m).toContain("dataset 'prompts.jsonl': prompt texts or labels changed");
    } finally {
      writeFileSync(prompts, jsonl(PROMPTS));
    }
  });

  it('refuses a changed --label', async () => {
    const m = await refused(opts({ n: '3', label: 'benign' }));
    expect(m).toContain("record (dataset 'prompts.jsonl', id 'p1', condition 'base') has label \"harmful\", this command gives \"benign\"");
  });

  it('refuses a different model in a folder of the same name', async () => {
    const m = await refused(opts({ n: '3', model: lookAlike.dir }));
    expect(m).toMatch(/model: on a fixed probe it computes other logits than the run's model/);
  });

  it('refuses another direction, seed or token limit', async () => {
    const d = new Float32Array(SHAPE_PRESETS.tiny!.hiddenSize);
    d[1] = 1;
    const dirFile = join(root, 'direction.safetensors');
    await writeDirectionFile(dirFile, embeddingDirectionFile(d, 'unembedding', { modelId: 'model', hiddenSize: d.length, numLayers: SHAPE_PRESETS.tiny!.numLayers, createdAt: new Date(0).toISOString() }));
    expect(await refused(opts({ n: '3', direction: dirFile, allowOtherModel: true }))).toMatch(/direction: the run has null, this command "embedding:[0-9a-f]{16}"/);
    expect(await refused(opts({ n: '3', seed: '4' }))).toContain('seed: the run has 0, this command 4');
    expect(await refused(opts({ n: '3', maxNewTokens: '3' }))).toContain('max new tokens: the run has 2, this command 3');
  });

  it('resumes the same command: only the missing record is made', async () => {
    const r = await runEvalCommand(opts({ n: '3' }), false);
    expect([r.written, r.skipped, r.total]).toEqual([1, 2, 3]);
    expect(r.warnings).toEqual([]);
  });

  it('run.json records the alpha in effect; an older run.json (alpha null = the default) still resumes', async () => {
    const d = new Float32Array(SHAPE_PRESETS.tiny!.hiddenSize);
    d[2] = 1;
    const dirFile = join(root, 'direction-alpha.safetensors');
    await writeDirectionFile(dirFile, embeddingDirectionFile(d, 'unembedding', { modelId: 'model', hiddenSize: d.length, numLayers: SHAPE_PRESETS.tiny!.numLayers, createdAt: new Date(0).toISOString() }));
    const out = join(root, 'run-alpha');
    const manual = (over: Partial<EvalCliOptions> = {}) => opts({ n: '2', out, conditions: 'base,manual', direction: dirFile, allowOtherModel: true, scale: '1', layerWeights: '0.5', ...over });
    await runEvalCommand(manual(), false);
    const runJson = join(out, 'run.json');
    // no --alpha and no controller: the manual condition runs at the default alpha 2, and run.json says so
    expect(JSON.parse(readFileSync(runJson, 'utf8')).alpha).toBe(2);
    // the same alpha given explicitly is the same run
    expect((await runEvalCommand(manual({ alpha: '2' }), false)).written).toBe(0);
    expect(await refused(manual({ alpha: '3' }))).toContain('alpha: the run has 2, this command 3');
    // a run.json written before alpha meant "in effect" held null for the default
    writeFileSync(runJson, JSON.stringify({ ...JSON.parse(readFileSync(runJson, 'utf8')), alpha: null }));
    expect((await runEvalCommand(manual(), false)).written).toBe(0);
    expect(await refused(manual({ alpha: '3' }))).toContain('alpha: the run has null, this command 3');
  });

  it('says what it recovered: a torn last line and duplicated lines of a killed or doubled writer', async () => {
    const out = join(root, 'run-recover');
    await runEvalCommand(opts({ n: '3', out }), false);
    const file = join(out, 'records.jsonl');
    const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
    writeFileSync(file, `${lines[0]}\n${lines[1]}\n${lines[0]}\n${lines[2]!.slice(0, 40)}`);
    const r = await runEvalCommand(opts({ n: '3', out }), false);
    expect([r.written, r.skipped]).toEqual([1, 2]);
    expect(r.warnings).toEqual([
      `${file}: the last line (line 4, 40 bytes) was cut off by a killed run; it was moved to ${file}.torn and that record will be redone`,
      expect.stringMatching(new RegExp(`^${file}: dropped 1 duplicate record line \\(line 3\\) that repeat`)),
    ]);
    expect(readFileSync(file, 'utf8').split('\n').filter((l) => l !== '')).toHaveLength(3);
  });
});
