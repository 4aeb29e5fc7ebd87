/**
 * `lab verify` and `lab generate`: the real CLI in a child process (JSON on stdout, progress on stderr, exit codes)
 * and the command functions in-process (hub ids through STEERLAB_HUB, steering files, bad input).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { env } from '@huggingface/transformers';
import { buildTestModel, type BuiltModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { runVerify } from '../../src/cli/commands/verify.js';
import { runGenerate } from '../../src/cli/commands/generate.js';
import { startHubServer, type HubServer } from '../helpers/hub-server.js';

const run = promisify(execFile);
const repoRoot = resolve(__dirname, '../..');
const shape = SHAPE_PRESETS.tiny!;
const root = mkdtempSync(join(tmpdir(), 'steerlab-model-cli-'));
let built: BuiltModel;
let hub: HubServer;
const steeringFile = join(root, 'steer.json');

function lab(args: string[]) {
  return run(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { cwd: repoRoot, env: { ...process.env, STEERLAB_HUB: '' } });
}

beforeAll(async () => {
  built = await buildTestModel(join(root, 'fused'), { shape, topology: 'fused', seed: 21 });
  const m = Array.from({ length: shape.numLayers }, (_, l) => Array.from({ length: shape.hiddenSize }, (_, i) => (l === 1 ? 6 * Math.sin(i) : 0)));
  writeFileSync(steeringFile, JSON.stringify(m));
  hub = await startHubServer({ 'cli-test/tiny': built.dir });
  env.cacheDir = join(root, 'cache');
  env.localModelPath = join(root, 'no-local-models');
});
afterAll(async () => {
  await hub?.close();
  rmSync(root, { recursive: true, force: true });
});

describe('lab verify', () => {
  it('prints the check as JSON, progress on stderr, exit 0', async () => {
    const { stdout, stderr } = await lab(['verify', '--model', built.dir, '--json']);
    const r = JSON.parse(stdout);
    expect(r).toMatchObject({ ok: true, topology: 'fused', num_layers: shape.numLayers, identity_max_logit_diff: null });
    expect(r.injection_max_error).toBeLessThanOrEqual(1e-5);
    expect(stderr).toMatch(/onnx\/model\.onnx done/);
    expect(stderr).toMatch(/self-check/);
  }, 60_000);

  it('--identity loads the unpatched graph too', async () => {
    const r = await runVerify({ model: built.dir, identity: true, json: true });
    expect(r.ok).toBe(true);
    expect(r.identity_max_logit_diff).toBeLessThanOrEqual(1e-5);
    expect(r.identity_ok).toBe(true);
  });

  it('rejects bad options with a clear message and a non-zero exit', async () => {
    await expect(runVerify({ model: built.dir, dtype: 'fp8' })).rejects.toThrow('--dtype must be one of fp32, fp16, q8, q4, q4f16, got "fp8"');
    const err = await lab(['verify', '--model', join(root, 'nope'), '--json']).catch((e) => e);
    expect(err.code).toBe(1);
    expect(err.stderr).toMatch(/lab: cannot load config\.json of ".*nope"/);
  }, 60_000);
});

describe('lab generate', () => {
  it('prints text and token ids; a steering file changes them', async () => {
    const { stdout } = await lab(['generate', '--model', built.dir, '--prompt', 'hello', '--max-new-tokens', '6', '--json']);
    const plain = JSON.parse(stdout);
    expect(typeof plain.text).toBe('string');
    expect(plain.token_ids).toHaveLength(6);
    const steered = await runGenerate({ model: built.dir, prompt: 'hello', maxNewTokens: '6', steering: steeringFile });
    expect(steered.tokenIds).not.toEqual(plain.token_ids);
    const again = await runGenerate({ model: built.dir, prompt: 'hello', maxNewTokens: '6' });
    expect(again.tokenIds).toEqual(plain.token_ids);
  }, 60_000);

  it('resolves hub ids through STEERLAB_HUB', async () => {
    const saved = process.env['STEERLAB_HUB'];
    process.env['STEERLAB_HUB'] = hub.url;
    try {
      const r = await runGenerate({ model: 'cli-test/tiny', prompt: 'hello', maxNewTokens: '4' });
      expect(r.tokenIds).toHaveLength(4);
      expect(hub.requests).toContain('GET /cli-test/tiny/resolve/main/onnx/model.onnx');
    } finally {
      if (saved === undefined) delete process.env['STEERLAB_HUB'];
      else process.env['STEERLAB_HUB'] = saved;
    }
  });

  it('names what is wrong in a steering file', async () => {
    const bad = join(root, 'bad.json');
    writeFileSync(bad, JSON.stringify([[1, 2, 3]]));
    await expect(runGenerate({ model: built.dir, prompt: 'x', steering: bad })).rejects.toThrow(`expected a JSON array of ${shape.numLayers} rows (one per layer), got 1 rows`);
    const short = join(root, 'short.json');
    writeFileSync(short, JSON.stringify(Array.from({ length: shape.numLayers }, () => [0, 1])));
    await expect(runGenerate({ model: built.dir, prompt: 'x', steering: short })).rejects.toThrow(`row 0 must hold ${shape.hiddenSize} numbers (hidden size), got 2`);
    await expect(runGenerate({ model: built.dir, prompt: 'x', maxNewTokens: 'many' })).rejects.toThrow('--max-new-tokens must be a whole number in 1..1000000, got "many"');
  });
});
