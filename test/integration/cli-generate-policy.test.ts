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

  it('refuses --steering with --policy, was without a controller, and --raw with a policy', async () => {
    await expect(runGenerate({ model: modelDir, prompt: 'x', policy: 'manual', scale: '1', direction: dirFile, steering: '/nonexistent.json' })).rejects.toThrow(/exclusive/);
    await expect(runGenerate({ model: modelDir, prompt: 'x', policy: 'was', direction: dirFile })).rejects.toThrow(/needs --controller/);
    await expect(runGenerate({ model: modelDir, prompt: 'x', policy: 'manual', scale: '1', direction: dirFile, raw: true })).rejects.toThrow(/--raw/);
  });
});
