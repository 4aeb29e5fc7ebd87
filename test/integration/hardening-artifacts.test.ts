/**
 * Hardening of the method's inputs, through the evaluation command (runEvalCommand, what `lab eval` runs): a dataset
 * file with broken rows, a direction or a controller made for another model, a controller file holding NaNs. Each
 * must end in a clear error (naming what was wrong and what was expected) or, for broken rows, in a count and a
 * report of what was skipped; and a failed run must leave the run folder's saved state (records.jsonl, run.json)
 * byte for byte as it was.
 */
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runEvalCommand, type EvalCliOptions } from '../../src/cli/commands/eval.js';
import { saveControllerFile } from '../../src/core/controller/node-io.js';
import { syntheticActivations, trainController } from '../../src/core/controller/index.js';
import { parseUserFile } from '../../src/core/data/index.js';
import { loadSteerableModel } from '../../src/core/model/load.js';
import type { ModelIdentity } from '../../src/core/model/model-id.js';
import { buildTestModel, type BuiltModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { embeddingDirectionFile } from '../../src/core/steering/direction-file.js';
import { writeDirectionFile } from '../../src/core/steering/direction-file-node.js';

const shape = SHAPE_PRESETS.tiny!; // 4 layers x 64 hidden
const root = mkdtempSync(join(tmpdir(), 'steerlab-hardening-artifacts-'));
let built: BuiltModel;
/** The built model's identity (content id): what artefacts made for it record. */
let identity: ModelIdentity;
let prompts: string;

/** A previous run's saved state: must survive every failed command below untouched. */
const SAVED_RECORD = '{"dataset":"prompts.jsonl","id":"row-0","condition":"base","refused":false,"output":"ok"}\n';

function runDir(name: string): string {
  const dir = join(root, 'runs', name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'records.jsonl'), SAVED_RECORD);
  return dir;
}

function snapshot(dir: string): Record<string, string> {
  return Object.fromEntries(readdirSync(dir).sort().map((f) => [f, readFileSync(join(dir, f), 'utf8')]));
}

function opts(over: Partial<EvalCliOptions>): EvalCliOptions {
  return {
    model: built.dir, dataset: [prompts], textColumn: 'prompt', label: 'benign', seed: '0', conditions: 'base',
    maxNewTokens: '2', judge: 'was-keywords', out: join(root, 'unused'), dtype: 'fp32', ...over,
  };
}

/** Runs the command expecting a failure; returns the error and checks the run folder did not change. */
async function failsKeepingState(o: EvalCliOptions): Promise<Error> {
  const before = snapshot(o.out);
  let err: Error | null = null;
  try {
    await runEvalCommand(o, false);
  } catch (e) {
    err = e as Error;
  }
  expect(err, 'the command should have failed').not.toBeNull();
  expect(snapshot(o.out), 'the run folder must be unchanged after a failed run').toEqual(before);
  return err!;
}

async function controllerFile(name: string, numLayers: number, hiddenSize: number, modelId: string): Promise<string> {
  const layers = [numLayers - 1]; // one input layer keeps the file small; the shape check does not depend on it
  const data = syntheticActivations({ rows: 16, inputSize: layers.length * hiddenSize, seed: 1 });
  const c = await trainController(data, { modelId, numLayers, hiddenSize, inputLayers: layers, hiddenWidth: 8, epochs: 1, seed: 1, now: () => new Date(0) });
  const file = join(root, `${name}.safetensors`);
  await saveControllerFile(file, c);
  return file;
}

async function directionFile(name: string, hiddenSize: number, numLayers: number, modelId: string): Promise<string> {
  const d = new Float32Array(hiddenSize);
  d[0] = 1;
  const file = join(root, `${name}.safetensors`);
  await writeDirectionFile(file, embeddingDirectionFile(d, 'unembedding', { modelId, hiddenSize, numLayers, createdAt: new Date(0).toISOString() }));
  return file;
}

beforeAll(async () => {
  built = await buildTestModel(join(root, 'model'), { shape, topology: 'plain', seed: 5 });
  const sm = await loadSteerableModel(built.dir, { selfCheck: false });
  identity = sm.identity;
  await sm.dispose();
  prompts = join(root, 'prompts.jsonl');
  writeFileSync(prompts, ['{"prompt": "How do I bake bread?"}', '{"prompt": "Name three rivers."}'].join('\n') + '\n');
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('a dataset file with broken rows', () => {
  const text = [
    '{"prompt": "good row one"}',
    '{"prompt": "unterminated',
    '',
    '{"other": "no prompt key"}',
    '[1, 2, 3]',
    '{"prompt": ""}',
    '{"prompt": 42}',
    '{"prompt": "good row two"}',
  ].join('\n');

  it('parsing keeps the good rows and reports every broken one with its line number', () => {
    const r = parseUserFile(text, 'mixed.jsonl', { textColumn: 'prompt', label: 'harmful' });
    expect(r.prompts.map((p) => p.text)).toEqual(['good row one', 'good row two']);
    expect(r.problems.length).toBeGreaterThanOrEqual(4);
    const lines = r.problems.map((p) => p.line);
    for (const line of [2, 4, 5, 6]) expect(lines, `line ${line} should be reported`).toContain(line);
    for (const p of r.problems) expect(p.message.length).toBeGreaterThan(5);
    expect(r.rowsRead).toBe(r.prompts.length + r.problems.length);
  });

  it('a file with no usable row is a clear error', () => {
    expect(() => parseUserFile('{"prompt": \n[]\n', 'bad.jsonl', { textColumn: 'prompt', label: 'benign' })).toThrow(/prompt|row|usable/i);
  });

  it('lab eval reports how many rows it skipped (not silently dropped)', async () => {
    const file = join(root, 'mixed.jsonl');
    writeFileSync(file, text);
    const out = join(root, 'runs', 'broken-rows');
    const r = await runEvalCommand(opts({ dataset: [file], out }), false);
    expect(r.total).toBe(2);
    // The skipped rows must reach the user: a warning naming the file, the count and the lines.
    const all = r.warnings.join('\n');
    expect(all, `warnings were: ${JSON.stringify(r.warnings)}`).toMatch(/mixed\.jsonl/);
    expect(all).toMatch(/\b[4-9]\b.*(row|line)s?/i);
  });
});

describe('artefacts made for another model', () => {
  it('a direction with another hidden size is refused, the run folder untouched', async () => {
    const file = await directionFile('dir-h32', 32, shape.numLayers, 'other/model');
    const e = await failsKeepingState(opts({ direction: file, conditions: 'base', out: runDir('dir-h32') }));
    expect(e.message).toMatch(/hidden size 32/);
    expect(e.message).toMatch(/hidden size 64/);
  });

  it('a direction with another layer count is refused', async () => {
    const file = await directionFile('dir-l7', shape.hiddenSize, 7, 'other/model');
    const e = await failsKeepingState(opts({ direction: file, out: runDir('dir-l7') }));
    expect(e.message).toMatch(/7 layers/);
    expect(e.message).toMatch(/\b4\b/);
  });

  it('a controller with another layer count / hidden size is refused, naming both', async () => {
    const dir = await directionFile('dir-ok', shape.hiddenSize, shape.numLayers, identity.id);
    const ctl = await controllerFile('ctl-other', 6, 32, 'other/model');
    const e = await failsKeepingState(opts({ direction: dir, controller: ctl, conditions: 'base,was', out: runDir('ctl-other') }));
    expect(e.message).toMatch(/another model/);
    expect(e.message).toMatch(/6 layer/);
    expect(e.message).toMatch(/hidden size 32/);
  });

  it('a controller of the same shape but another model id is refused unless allowed', async () => {
    const dir = await directionFile('dir-ok2', shape.hiddenSize, shape.numLayers, identity.id);
    const ctl = await controllerFile('ctl-sameshape', shape.numLayers, shape.hiddenSize, 'someone/else');
    const e = await failsKeepingState(opts({ direction: dir, controller: ctl, conditions: 'base,was', out: runDir('ctl-id') }));
    expect(e.message).toMatch(/made for model someone\/else, but the loaded model is model \(sha256:[0-9a-f]{16}\)/);
    // Allowed: the same run goes through, says what it accepted, and records the model it ran on.
    const out = join(root, 'runs', 'ctl-id-allowed');
    const r = await runEvalCommand(opts({ direction: dir, controller: ctl, conditions: 'base,was', out, allowOtherModel: true }), false);
    expect(r.written).toBe(4);
    expect(r.warnings.some((w) => /made for model someone\/else.*accepted/.test(w)), JSON.stringify(r.warnings)).toBe(true);
    const recs = readFileSync(r.records, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { model_id: string; condition: string; refused: unknown });
    expect(recs.map((x) => x.model_id)).toEqual(new Array(4).fill(identity.id));
    expect(recs.filter((x) => x.condition === 'was').every((x) => typeof x.refused === 'boolean')).toBe(true);
  });

  it('a controller file holding NaN weights is refused, naming the tensor', async () => {
    const dir = await directionFile('dir-ok3', shape.hiddenSize, shape.numLayers, identity.id);
    const ctl = await controllerFile('ctl-nan', shape.numLayers, shape.hiddenSize, identity.id);
    // safetensors: u64 header length, JSON header with data_offsets per tensor, then the data.
    const bytes = readFileSync(ctl);
    const n = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, { data_offsets?: [number, number] }>;
    const [start] = header['fc1.weight']!.data_offsets!;
    bytes.writeFloatLE(Number.NaN, 8 + n + start + 4 * 3);
    const nanFile = join(root, 'ctl-nan-corrupt.safetensors');
    writeFileSync(nanFile, bytes);
    const e = await failsKeepingState(opts({ direction: dir, controller: nanFile, conditions: 'base,was', out: runDir('ctl-nan') }));
    expect(e.message).toMatch(/NaN|finite/);
    expect(e.message).toMatch(/w1|fc1/);
  });
});
