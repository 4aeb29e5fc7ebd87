/**
 * `lab train-controller --layer-weights learned` end to end on a built tiny model: the targets are searched with the
 * model, the controller is trained with the w term, and the file records the recipe and the search; option errors are
 * named. (A random model's refusals mean nothing: only the plumbing and the bookkeeping are checked.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTestModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { runDirection } from '../../src/cli/commands/direction.js';
import { runTrainController, type TrainControllerCliOptions } from '../../src/cli/commands/train-controller.js';
import { loadControllerFile } from '../../src/core/controller/node-io.js';

const shape = SHAPE_PRESETS.tiny!;
const root = mkdtempSync(join(tmpdir(), 'steerlab-train-learned-'));
let base: TrainControllerCliOptions;

beforeAll(async () => {
  const b = await buildTestModel(join(root, 'm'), { shape, topology: 'plain', seed: 4 });
  const dir = join(root, 'd.safetensors');
  await runDirection({ model: b.dir, method: 'embedding', harmful: '', harmless: '', n: '1', valN: '1', seed: '0', out: dir } as Parameters<typeof runDirection>[0]);
  base = { model: b.dir, direction: dir, harmful: 'harmful-train', benign: 'harmless-train', n: '6', valFraction: '0.34', loss: 'mse', epochs: '2', seed: '1', out: join(root, 'c.safetensors') };
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('lab train-controller --layer-weights learned', () => {
  it('searches targets with the model and records the recipe in the controller file', async () => {
    const r = await runTrainController({ ...base, layerWeights: 'learned', targetGrid: '1,0.5,0', alpha: '3' });
    expect(r.layer_weights).toBe('learned');
    const t = r.layer_targets!;
    expect(t).toMatchObject({ method: 'least-refusal-patch', criterion: { kind: 'first-token', margin: 0 }, grid: [1, 0.5, 0], alpha: 3, harmful_rows: 6, positions: 'last' });
    // 1 unpatched probe per prompt, +1 full patch unless refused unpatched, + at most 2 per layer when the full patch refuses
    expect(t.probes).toBeGreaterThanOrEqual(6);
    expect(t.probes).toBeLessThanOrEqual(6 * (2 + 2 * shape.numLayers));
    const c = await loadControllerFile(r.out);
    expect(c.metadata.layer_weights).toMatchObject({ recipe: 'learned', loss_weight: 1, targets: t });
    expect(c.metadata.metrics.epochs.at(-1)!.val_layer_weight_mse).toBeTypeOf('number');
  }, 120_000);

  it('the paper recipe stays the default, and learned-only options are refused without it', async () => {
    const r = await runTrainController({ ...base, out: join(root, 'p.safetensors') });
    expect(r.layer_weights).toBe('paper');
    expect(r.layer_targets).toBeNull();
    expect((await loadControllerFile(r.out)).metadata.layer_weights).toEqual({ recipe: 'paper' });
    await expect(runTrainController({ ...base, targetN: '3' })).rejects.toThrow(/only apply with --layer-weights learned/);
    await expect(runTrainController({ ...base, layerWeights: 'fancy' })).rejects.toThrow(/--layer-weights must be paper or learned/);
    await expect(runTrainController({ ...base, layerWeights: 'learned', targetGrid: '1,0.5' })).rejects.toThrow(/descend strictly from 1 to 0/);
  }, 120_000);
});
