/**
 * train-controller's activation cache is keyed by the model and the prompts' content (issue: the cache was reused
 * for another model whose folder had the same name, and the controller came out byte-identical to that model's).
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runTrainController, type TrainControllerCliOptions } from '../../src/cli/commands/train-controller.js';
import { buildTestModel, type BuiltModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { embeddingDirectionFile } from '../../src/core/steering/direction-file.js';
import { writeDirectionFile } from '../../src/core/steering/direction-file-node.js';

const shape = SHAPE_PRESETS.tiny!;
const root = mkdtempSync(join(tmpdir(), 'steerlab-actcache-'));
let a: BuiltModel;
let b: BuiltModel;
const harmful = join(root, 'harmful.jsonl');
const benign = join(root, 'benign.jsonl');
const direction = join(root, 'direction.safetensors');
const cache = join(root, 'cache.safetensors');

const rows = (texts: string[]) => texts.map((t) => JSON.stringify({ prompt: t })).join('\n') + '\n';

function opts(model: string, out: string): TrainControllerCliOptions {
  return {
    model, direction, harmful, benign, textColumn: 'prompt', n: '4', valFraction: '0.25', loss: 'mse', epochs: '1', seed: '1',
    dtype: 'fp32', cache, out: join(root, out), allowOtherModel: true,
  };
}

beforeAll(async () => {
  a = await buildTestModel(join(root, 'a', 'model'), { shape, topology: 'plain', seed: 5 });
  b = await buildTestModel(join(root, 'b', 'model'), { shape, topology: 'plain', seed: 6 });
  writeFileSync(harmful, rows(['make a weapon', 'steal a car', 'hurt someone', 'break in']));
  writeFileSync(benign, rows(['bake bread', 'name a river', 'plant a tree', 'write a poem']));
  const d = new Float32Array(shape.hiddenSize);
  d[0] = 1;
  await writeDirectionFile(direction, embeddingDirectionFile(d, 'unembedding', { modelId: 'model', hiddenSize: shape.hiddenSize, numLayers: shape.numLayers, createdAt: new Date(0).toISOString() }));
  mkdirSync(join(root, 'out'), { recursive: true });
}, 120_000);
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('train-controller activation cache', () => {
  it('is reused for the same model and prompts, and not for another model in a folder of the same name', async () => {
    const first = await runTrainController(opts(a.dir, 'a1.safetensors'));
    expect(first.activations_from_cache).toBe(false);
    const again = await runTrainController(opts(a.dir, 'a2.safetensors'));
    expect(again.activations_from_cache).toBe(true);
    expect(again.notes).toEqual([]);

    const other = await runTrainController(opts(b.dir, 'b.safetensors'));
    expect(other.activations_from_cache).toBe(false);
    expect(other.notes.join('\n')).toMatch(/activation cache .* not used \(it was made with other prompts, layers or another model\)/);
    expect(readFileSync(join(root, 'b.safetensors')).equals(readFileSync(join(root, 'a1.safetensors')))).toBe(false);
  }, 120_000);

  it('misses when a prompt text changes', async () => {
    await runTrainController(opts(a.dir, 'c1.safetensors'));
    writeFileSync(benign, rows(['bake bread', 'name a river', 'plant a tree', 'write a song']));
    const r = await runTrainController(opts(a.dir, 'c2.safetensors'));
    expect(r.activations_from_cache).toBe(false);
    expect(r.notes.join('\n')).toMatch(/it was made with other prompts, layers or another model/);
  }, 120_000);
});
