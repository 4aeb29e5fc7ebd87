/**
 * `lab generate --policy ...`: the generate command drives the method's flow. A manual policy's rows have the norms
 * s * w_l * alpha (unit direction), the steered text equals a generation given that matrix directly, and bad
 * combinations are refused with named errors.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { buildTestModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { runDirection } from '../../src/cli/commands/direction.js';
import { runGenerate } from '../../src/cli/commands/generate.js';
import { readDirectionFile } from '../../src/core/steering/direction-file-node.js';

const shape = SHAPE_PRESETS.tiny!;
const L = shape.numLayers;
const H = shape.hiddenSize;
const root = mkdtempSync(join(tmpdir(), 'steerlab-cli-generate-policy-'));
let modelDir = '';
const dirFile = join(root, 'd.safetensors');

beforeAll(async () => {
  const b = await buildTestModel(join(root, 'm'), { shape, topology: 'plain', seed: 8 });
  modelDir = b.dir;
  await runDirection({ model: modelDir, method: 'embedding', harmful: 'harmful-train', harmless: 'harmless-train', n: '4', valN: '2', out: dirFile } as Parameters<typeof runDirection>[0]);
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('lab generate --policy', () => {
  it('manual policy: rows are s * w_l * alpha * d, and the text equals generation with that matrix', async () => {
    const r = await runGenerate({ model: modelDir, prompt: 'Tell me a story', maxNewTokens: '6', policy: 'manual', scale: '1.5', layerWeights: '1,0,0.5,1', alpha: '2', direction: dirFile });
    expect(r.policy?.kind).toBe('manual');
    const norms = r.policy!.rowNorms!;
    expect(norms).toHaveLength(L);
    [1, 0, 0.5, 1].forEach((w, l) => expect(norms[l]).toBeCloseTo(1.5 * w * 2, 4));

    const { direction } = await readDirectionFile(dirFile);
    const matrix: number[][] = [1, 0, 0.5, 1].map((w) => Array.from(direction, (x) => 1.5 * w * 2 * x));
    const mfile = join(root, 'matrix.json');
    await writeFile(mfile, JSON.stringify(matrix));
    const direct = await runGenerate({ model: modelDir, prompt: 'Tell me a story', maxNewTokens: '6', steering: mfile });
    expect(r.tokenIds).toEqual(direct.tokenIds);
    expect(matrix[0]).toHaveLength(H);
  });

  it('--compare: the base and the steered reply of one batch-2 generation, each as a generation alone gives it', async () => {
    const opts = { model: modelDir, prompt: 'Tell me a story', maxNewTokens: '6', policy: 'manual', scale: '1.5', layerWeights: '1,0,0.5,1', alpha: '2', direction: dirFile };
    const pair = await runGenerate({ ...opts, compare: true });
    const steered = await runGenerate(opts);
    const base = await runGenerate({ model: modelDir, prompt: 'Tell me a story', maxNewTokens: '6' });
    expect(pair.tokenIds).toEqual(steered.tokenIds);
    expect(pair.base?.tokenIds).toEqual(base.tokenIds);
    expect(pair.policy?.rowNorms).toEqual(steered.policy?.rowNorms);
    await expect(runGenerate({ ...opts, compare: true, raw: true })).rejects.toThrow(/--raw cannot be used with --compare/);
  });

  it('--compare --mode clamp: row 1 carries the projection rows (the reply of the clamp alone), row 0 none (the plain reply)', async () => {
    const opts = { model: modelDir, prompt: 'Tell me a story', maxNewTokens: '6', policy: 'manual', scale: '3', layerWeights: '1', alpha: '2', direction: dirFile, mode: 'clamp', layerRange: '0-2' };
    const pair = await runGenerate({ ...opts, compare: true });
    const clamped = await runGenerate(opts);
    const base = await runGenerate({ model: modelDir, prompt: 'Tell me a story', maxNewTokens: '6' });
    const added = await runGenerate({ ...opts, mode: 'add' });
    expect(pair.tokenIds).toEqual(clamped.tokenIds);
    expect(pair.base?.tokenIds).toEqual(base.tokenIds);
    expect(pair.settings).toEqual(clamped.settings);
    // the clamp is not the plain addition of the same rows (otherwise the comparison above would not show the projection)
    expect(clamped.tokenIds).not.toEqual(added.tokenIds);
  });

  it('--mode clamp --layer-range: clamps the component along d on those layers only; the matrix path does the same', async () => {
    const base = { model: modelDir, prompt: 'Tell me a story', maxNewTokens: '6', policy: 'manual', scale: '1.5', layerWeights: '1,0.5,0.5,1', alpha: '2', direction: dirFile };
    const r = await runGenerate({ ...base, mode: 'clamp', layerRange: '1-2', steerPrompt: 'new' });
    expect(r.settings).toEqual({ mode: 'clamp', layers: { first: 1, last: 2 }, positions: 'new', alpha: { scale: 'absolute' } });
    const norms = r.policy!.rowNorms!;
    expect(norms[0]).toBe(0);
    expect(norms[3]).toBe(0);
    expect(norms[1]).toBeCloseTo(1.5, 4);
    // the same rows given as a fixed matrix, under the same settings, generate the same tokens
    const { direction } = await readDirectionFile(dirFile);
    const mfile = join(root, 'matrix-clamp.json');
    await writeFile(mfile, JSON.stringify([1, 0.5, 0.5, 1].map((w) => Array.from(direction, (x) => 1.5 * w * 2 * x))));
    const direct = await runGenerate({ model: modelDir, prompt: 'Tell me a story', maxNewTokens: '6', steering: mfile, mode: 'clamp', layerRange: '1-2', steerPrompt: 'new' });
    expect(direct.tokenIds).toEqual(r.tokenIds);
    expect(direct.settings).toEqual(r.settings);
  });

  it('--alpha-scale relative measures the residual norms and records them', async () => {
    const r = await runGenerate({ model: modelDir, prompt: 'Tell me a story', maxNewTokens: '3', policy: 'manual', scale: '1', layerWeights: '1', alpha: '0.1', direction: dirFile, alphaScale: 'relative', normN: '3' });
    const a = r.settings.alpha;
    if (a.scale !== 'relative') throw new Error('expected relative alpha');
    expect(a.calibration).toMatchObject({ set: 'harmless-train', n: 3, position: 'last-prompt-token' });
    expect(a.calibration.norms).toHaveLength(L);
    a.calibration.norms.forEach((n, l) => {
      expect(n).toBeGreaterThan(0);
      expect(r.policy!.rowNorms![l]).toBeCloseTo(0.1 * n, 3);
    });
  });

  it('refuses bad settings with named errors', async () => {
    const base = { model: modelDir, prompt: 'x', maxNewTokens: '2', policy: 'manual', scale: '1', direction: dirFile };
    await expect(runGenerate({ ...base, mode: 'boost' })).rejects.toThrow(/--mode must be one of add, clamp, ablate, got "boost"/);
    await expect(runGenerate({ ...base, layerRange: '2-9' })).rejects.toThrow(/--layer-range 2-9: layer 9 is out of range, the model has layers 0..3/);
    await expect(runGenerate({ ...base, layerRange: 'two' })).rejects.toThrow(/--layer-range must be FIRST-LAST/);
    await expect(runGenerate({ ...base, normN: '4' })).rejects.toThrow(/--norm-set \/ --norm-n only apply with --alpha-scale relative/);
    await expect(runGenerate({ ...base, steerPrompt: 'first' })).rejects.toThrow(/--steer-prompt must be 'last', 'all' or 'new'/);
    await expect(runGenerate({ model: modelDir, prompt: 'x', maxNewTokens: '2', alphaScale: 'relative' })).rejects.toThrow(/relative needs a --policy/);
  });

  it('refuses --steering with --policy, was without a controller, and --raw with a policy', async () => {
    await expect(runGenerate({ model: modelDir, prompt: 'x', policy: 'manual', scale: '1', direction: dirFile, steering: '/nonexistent.json' })).rejects.toThrow(/exclusive/);
    await expect(runGenerate({ model: modelDir, prompt: 'x', policy: 'was', direction: dirFile })).rejects.toThrow(/needs --controller/);
    await expect(runGenerate({ model: modelDir, prompt: 'x', policy: 'manual', scale: '1', direction: dirFile, raw: true })).rejects.toThrow(/--raw/);
  });
});
