/**
 * Hardening of the model path: prompts the model cannot take (longer than its context, empty), a hub id that does
 * not exist (404 from the local hub server) and a download cut half-way. Every case ends in a clear error, and what
 * was saved before stays intact: an evaluation's records.jsonl and run.json, an existing patched output file, the
 * download cache (no half-written file).
 *
 * Related cases covered elsewhere (not repeated here): load errors and cache cleanliness of 404 / cut downloads at the
 * loader level in test/integration/model-hub.test.ts; bad steering matrices in test/integration/model-generate.test.ts.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { env } from '@huggingface/transformers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runEvalCommand, type EvalCliOptions } from '../../src/cli/commands/eval.js';
import { loadSteerableModel, type SteerableModel } from '../../src/core/model/index.js';
import { buildTestModel, type BuiltModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { startHubServer, type HubServer } from '../helpers/hub-server.js';

const run = promisify(execFile);
const shape = SHAPE_PRESETS.tiny!; // max_position_embeddings 256
const CONTEXT = shape.maxPositionEmbeddings;
const root = mkdtempSync(join(tmpdir(), 'steerlab-hardening-model-'));
const REPO = 'steerlab-test/tiny';
let built: BuiltModel;
let sm: SteerableModel;
let hub: HubServer;
let prompts: string;

const SAVED_RECORD = '{"dataset":"prompts.jsonl","id":"row-0","condition":"base","refused":false,"output":"ok"}\n';
const SAVED_RUN = '{"model_id":"x","note":"a previous run"}\n';

function files(dir: string): Record<string, string> {
  if (!existsSync(dir)) return {};
  return Object.fromEntries(
    readdirSync(dir, { recursive: true, withFileTypes: true })
      .filter((d) => d.isFile())
      .map((d) => join(d.parentPath, d.name))
      .sort()
      .map((f) => [f.slice(dir.length), readFileSync(f).toString('base64')]),
  );
}

function savedRunDir(name: string): string {
  const dir = join(root, 'runs', name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'records.jsonl'), SAVED_RECORD);
  writeFileSync(join(dir, 'run.json'), SAVED_RUN);
  return dir;
}

function evalOpts(model: string, out: string): EvalCliOptions {
  return { model, dataset: [prompts], textColumn: 'prompt', label: 'benign', seed: '0', conditions: 'base', maxNewTokens: '2', judge: 'was-keywords', out, dtype: 'fp32' };
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection, but it resolved');
}

beforeAll(async () => {
  built = await buildTestModel(join(root, 'model'), { shape, topology: 'plain', seed: 9 });
  sm = await loadSteerableModel(built.dir, { dtype: 'fp32' });
  hub = await startHubServer({ [REPO]: built.dir });
  env.remoteHost = hub.url;
  env.localModelPath = join(root, 'no-local-models');
  env.useFSCache = true;
  env.cacheDir = join(root, 'cache');
  prompts = join(root, 'prompts.jsonl');
  writeFileSync(prompts, '{"prompt": "How do I bake bread?"}\n');
});
afterAll(async () => {
  await sm?.dispose();
  await hub?.close();
  rmSync(root, { recursive: true, force: true });
});

describe('prompts the model cannot take', () => {
  const ids = (n: number) => Array.from({ length: n }, (_, i) => 10 + (i % 200));

  it(`a prompt longer than max_position_embeddings (${CONTEXT}) is a clear error (generate)`, async () => {
    const e = await rejection(sm.generate({ inputIds: ids(CONTEXT + 44), maxNewTokens: 2 }));
    expect(e.message).toMatch(/max_position_embeddings|context/i);
    expect(e.message).toMatch(new RegExp(`${CONTEXT + 44}`));
    expect(e.message).toMatch(new RegExp(`${CONTEXT}`));
  });

  it('a prompt longer than the context is a clear error (forward)', async () => {
    const e = await rejection(sm.forward([ids(CONTEXT + 1)]));
    expect(e.message).toMatch(/max_position_embeddings|context/i);
  });

  it('a prompt that fits but whose reply would run past the context stops at the context', async () => {
    const n = CONTEXT - 6;
    const result = await sm.generate({ inputIds: ids(n), maxNewTokens: 20 });
    // generate.ts caps the reply at the context's end: exactly the 6 positions left, finish reason 'length'.
    expect(result.finishReason).toBe('length');
    expect(result.tokenIds.length, 'positions past max_position_embeddings were generated').toBe(CONTEXT - n);
  });

  it('an empty prompt is a clear error (text, token ids, forward)', async () => {
    expect((await rejection(sm.generate({ prompt: '', maxNewTokens: 2 }))).message).toMatch(/non-empty/);
    expect((await rejection(sm.generate({ inputIds: [], maxNewTokens: 2 }))).message).toMatch(/non-empty/);
    expect((await rejection(sm.forward([[]]))).message).toMatch(/non-empty/);
  });

  it('the model still works after the refused inputs (no state left behind)', async () => {
    const r = await sm.generate({ inputIds: ids(8), maxNewTokens: 3 });
    expect(r.tokenIds.length).toBe(3);
  });
});

describe('hub failures leave saved state intact', () => {
  it('a hub id that does not exist (404): clear error, records.jsonl and run.json unchanged', async () => {
    const out = savedRunDir('missing-model');
    const before = files(out);
    const e = await rejection(runEvalCommand(evalOpts('steerlab-test/does-not-exist', out), false));
    expect(e.message).toMatch(/cannot load config\.json of "steerlab-test\/does-not-exist"/);
    expect(files(out)).toEqual(before);
  });

  it('a download cut half-way: clear error, run folder unchanged, nothing half-written in the cache', async () => {
    const out = savedRunDir('cut-download');
    const before = files(out);
    env.cacheDir = join(root, 'cache-cut');
    hub.setCut({ file: 'onnx/model.onnx', fraction: 0.5 });
    try {
      const e = await rejection(runEvalCommand(evalOpts(REPO, out), false));
      // Names the file, how far it got and the size it should have had.
      const size = readFileSync(join(built.dir, 'onnx/model.onnx')).length;
      expect(e.message).toMatch(new RegExp(`onnx/model\\.onnx failed after \\d+ of ${size} bytes`));
    } finally {
      hub.setCut(null);
    }
    expect(files(out)).toEqual(before);
    // Every download of the graph was cut: the cache holds the small files that arrived whole and no graph at all
    // (neither a partial one nor a temp file).
    expect(Object.keys(files(env.cacheDir)).sort()).toEqual([`/${REPO}/config.json`]);
  });

  it('after the failures the same hub id loads and evaluates (the cache was not poisoned)', async () => {
    env.cacheDir = join(root, 'cache-cut');
    const out = join(root, 'runs', 'after-cut');
    const r = await runEvalCommand(evalOpts(REPO, out), false);
    expect(r.written).toBe(1);
  });
});

describe('lab patch keeps an existing output file when it fails', () => {
  it('a truncated input: clear error, non-zero exit, the old output byte for byte, no temp file', async () => {
    const dir = join(root, 'patch-out');
    mkdirSync(dir, { recursive: true });
    const outFile = join(dir, 'model_steerable.onnx');
    writeFileSync(outFile, 'previous output');
    const bad = join(dir, 'truncated.onnx');
    writeFileSync(bad, readFileSync(join(built.dir, 'onnx/model.onnx')).subarray(0, 5000));
    const e = (await rejection(run(join(process.cwd(), 'node_modules/.bin/tsx'), ['src/cli/main.ts', 'patch', bad, outFile], { cwd: process.cwd() }))) as Error & { code?: number; stderr?: string };
    expect(e.code).not.toBe(0);
    expect(e.stderr ?? '').toMatch(/MALFORMED_PROTOBUF|not a valid ONNX/);
    expect(readFileSync(outFile, 'utf8')).toBe('previous output');
    expect(readdirSync(dir).sort()).toEqual(['model_steerable.onnx', 'truncated.onnx']);
  });
});
