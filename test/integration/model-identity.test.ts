/**
 * One model identity for every command and the lab, on real model folders:
 *   - two built test models with different seeds, both in folders named "same-name": different ids, the same
 *     display name; a direction and a controller made with one are refused for the other (lab direction ->
 *     train-controller -> eval, the CLI's own functions), and accepted with a warning under --allow-other-model;
 *   - the same model copied to another path and folder name: the same id, artefacts load without a warning;
 *   - the organism's folder served over HTTP (what the lab's worker reads) gives the id the Node loader gives;
 *   - an fp32 and a q4f16 graph of the same weights in one folder: one id, two variants; an fp32 direction on the
 *     q4f16 model loads with a variant warning, not an error;
 *   - every command names the model the same way: verify, generate and the method commands report one id.
 */
import { cpSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runDirection } from '../../src/cli/commands/direction.js';
import { runEvalCommand, type EvalCliOptions } from '../../src/cli/commands/eval.js';
import { runGenerate } from '../../src/cli/commands/generate.js';
import { runTrainController } from '../../src/cli/commands/train-controller.js';
import { runVerify } from '../../src/cli/commands/verify.js';
import { loadControllerFor, loadDirectionFor } from '../../src/core/method/artifacts-node.js';
import { loadSteerableModel } from '../../src/core/model/load.js';
import { fetchFileReader, modelIdentity } from '../../src/core/model/model-content-id.js';
import { buildTestModel, type BuiltModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { MODEL_DIR } from '../../src/organism/config.js';
import { startHubServer, type HubServer } from '../helpers/hub-server.js';

const shape = SHAPE_PRESETS.tiny!;
const root = mkdtempSync(join(tmpdir(), 'steerlab-identity-'));
let a: BuiltModel;
let b: BuiltModel;
let hub: HubServer | null = null;
const dirA = join(root, 'dir-a.safetensors');
const ctlA = join(root, 'ctl-a.safetensors');

beforeAll(async () => {
  mkdirSync(join(root, 'one'));
  mkdirSync(join(root, 'two'));
  a = await buildTestModel(join(root, 'one', 'same-name'), { shape, topology: 'plain', seed: 1 });
  b = await buildTestModel(join(root, 'two', 'same-name'), { shape, topology: 'plain', seed: 2 });
  await runDirection({ model: a.dir, method: 'embedding', harmful: '', harmless: '', n: '1', valN: '1', seed: '0', out: dirA });
  await runTrainController({ model: a.dir, direction: dirA, harmful: 'harmful-train', benign: 'harmless-train', n: '4', valFraction: '0.25', loss: 'mse', epochs: '1', seed: '0', out: ctlA });
}, 120_000);
afterAll(async () => {
  await hub?.close();
  rmSync(root, { recursive: true, force: true });
});

const evalOpts = (model: string, out: string, over: Partial<EvalCliOptions> = {}): EvalCliOptions => ({
  model, dataset: ['harmless-val'], n: '1', seed: '0', conditions: 'base,was', direction: dirA, controller: ctlA, maxNewTokens: '2', judge: 'was-keywords', out, ...over,
});

describe('two models in folders of the same name', () => {
  it('have different ids and the same display name', async () => {
    const [ma, mb] = [await loadSteerableModel(a.dir), await loadSteerableModel(b.dir)];
    try {
      expect(ma.identity.name).toBe('same-name');
      expect(mb.identity.name).toBe('same-name');
      expect(ma.id).toMatch(/^sha256:[0-9a-f]{16}$/);
      expect(mb.id).toMatch(/^sha256:[0-9a-f]{16}$/);
      expect(ma.id).not.toBe(mb.id);
    } finally {
      await ma.dispose();
      await mb.dispose();
    }
  }, 60_000);

  it("a direction and a controller made with one are refused for the other, naming both models", async () => {
    const mb = await loadSteerableModel(b.dir);
    try {
      await expect(loadDirectionFor(dirA, mb)).rejects.toThrow(/was made for model same-name \(sha256:[0-9a-f]{16}\), but the loaded model is same-name \(sha256:[0-9a-f]{16}\).*--allow-other-model/);
      await expect(loadControllerFor(ctlA, mb)).rejects.toThrow(/controller .* was made for model same-name/);
    } finally {
      await mb.dispose();
    }
    await expect(runEvalCommand(evalOpts(b.dir, join(root, 'run-refused')), false)).rejects.toThrow(/was made for model same-name/);
  }, 60_000);

  it('--allow-other-model accepts them, with a warning for each, and the run records the loaded model', async () => {
    const r = await runEvalCommand(evalOpts(b.dir, join(root, 'run-allowed'), { allowOtherModel: true }), false);
    expect(r.written).toBe(2);
    expect(r.warnings.filter((w) => /made for model same-name .* \(accepted: allow other model\)/.test(w))).toHaveLength(2);
    const mb = await loadSteerableModel(b.dir, { selfCheck: false });
    try {
      const { readFileSync } = await import('node:fs');
      const recs = readFileSync(r.records, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { model_id: string });
      expect(recs.map((x) => x.model_id)).toEqual([mb.id, mb.id]);
      const run = JSON.parse(readFileSync(join(root, 'run-allowed', 'run.json'), 'utf8')) as { model_id: string; model_name: string };
      expect(run.model_id).toBe(mb.id);
      expect(run.model_name).toBe('same-name');
    } finally {
      await mb.dispose();
    }
  }, 60_000);
});

describe('one model, wherever it lies', () => {
  it('a copy at another path and folder name has the same id; its artefacts load without a warning', async () => {
    const copy = join(root, 'elsewhere', 'renamed');
    cpSync(a.dir, copy, { recursive: true });
    const [ma, mc] = [await loadSteerableModel(a.dir), await loadSteerableModel(copy)];
    try {
      expect(mc.id).toBe(ma.id);
      expect(mc.identity.name).toBe('renamed');
      expect((await loadDirectionFor(dirA, mc)).warnings).toEqual([]);
      expect((await loadControllerFor(ctlA, mc)).warnings).toEqual([]);
    } finally {
      await ma.dispose();
      await mc.dispose();
    }
  }, 60_000);

  it("the organism's folder served over HTTP (as the lab reads it) gives the id the Node loader gives", async () => {
    hub = await startHubServer({ 'steerlab-test/organism': MODEL_DIR });
    const http = await modelIdentity({ kind: 'folder', name: 'organism', files: fetchFileReader(`${hub.url}steerlab-test/organism/resolve/main/`) }, { dtype: 'fp32', modelFileName: 'model' });
    const sm = await loadSteerableModel(MODEL_DIR, { selfCheck: false });
    try {
      expect(http).toEqual(sm.identity);
      expect(http.id).toMatch(/^sha256:[0-9a-f]{16}$/);
      // The reader really went over HTTP: HEAD for sizes, GET for bytes.
      expect(hub.requests.some((r) => r.startsWith('HEAD ') && r.endsWith('/config.json'))).toBe(true);
      expect(hub.requests.some((r) => r.startsWith('GET ') && r.endsWith('/onnx/model.onnx'))).toBe(true);
    } finally {
      await sm.dispose();
    }
  }, 60_000);

  it('every command names the model the same way (verify, generate, direction; eval above)', async () => {
    const sm = await loadSteerableModel(a.dir, { selfCheck: false });
    const expected = sm.id;
    await sm.dispose();
    expect((await runVerify({ model: a.dir })).model_id).toBe(expected);
    // generate with a policy loads the direction and controller made for this model: no "made for another model".
    const g = await runGenerate({ model: a.dir, prompt: 'Hi', maxNewTokens: '2', policy: 'was', direction: dirA, controller: ctlA });
    expect(g.policy?.warnings).toEqual([]);
    const d = await runDirection({ model: a.dir, method: 'embedding', harmful: '', harmless: '', n: '1', valN: '1', seed: '0', out: join(root, 'again.safetensors') });
    expect(d.model_id).toBe(expected);
    expect(d.model_name).toBe('same-name');
  }, 60_000);
});

describe('two variants of one model in one folder', () => {
  it('fp32 and q4f16 graphs share the id; an fp32 direction on the q4f16 graph warns and loads', async () => {
    const fused = await buildTestModel(join(root, 'variants'), { shape, topology: 'fused', seed: 4 });
    const q = await buildTestModel(join(root, 'q-build'), { shape, topology: 'fused-q4f16', seed: 4 });
    cpSync(join(q.dir, q.onnxFile), join(fused.dir, 'onnx', 'model_q4f16.onnx'));
    const dir = join(root, 'variants-dir.safetensors');
    await runDirection({ model: fused.dir, dtype: 'fp32', method: 'embedding', harmful: '', harmless: '', n: '1', valN: '1', seed: '0', out: dir });
    const [m32, m4] = [await loadSteerableModel(fused.dir, { dtype: 'fp32' }), await loadSteerableModel(fused.dir, { dtype: 'q4f16' })];
    try {
      expect(m4.id).toBe(m32.id);
      expect(m32.identity.variant).toEqual({ dtype: 'fp32', graph: 'onnx/model.onnx' });
      expect(m4.identity.variant).toEqual({ dtype: 'q4f16', graph: 'onnx/model_q4f16.onnx' });
      expect((await loadDirectionFor(dir, m32)).warnings).toEqual([]);
      const w = (await loadDirectionFor(dir, m4)).warnings;
      expect(w).toHaveLength(1);
      expect(w[0]).toMatch(/made with fp32 onnx\/model\.onnx .* loaded variant is q4f16 onnx\/model_q4f16\.onnx/);
    } finally {
      await m32.dispose();
      await m4.dispose();
    }
  }, 120_000);
});
