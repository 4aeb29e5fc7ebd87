/**
 * No command writes over one of its own inputs (issue: `train-controller --out` equal to `--direction` silently
 * replaced the direction). Paths are compared by the file they name, not by their spelling; every refusal happens
 * before the model is loaded and leaves the input as it was.
 */
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runDirection } from '../../src/cli/commands/direction.js';
import { runEvalCommand } from '../../src/cli/commands/eval.js';
import { runExportControlVector } from '../../src/cli/commands/export-control-vector.js';
import { runExportGguf } from '../../src/cli/commands/export-gguf.js';
import { runTrainController } from '../../src/cli/commands/train-controller.js';
import { modelFolderInputs, refuseOverwritingInputs } from '../../src/core/util/same-file-node.js';
import { testDir } from '../helpers/tmp.js';

function setup() {
  const dir = testDir('steerlab-overwrite-');
  mkdirSync(join(dir, 'model', 'onnx'), { recursive: true });
  mkdirSync(join(dir, 'sub'));
  writeFileSync(join(dir, 'model', 'config.json'), '{}');
  writeFileSync(join(dir, 'model', 'onnx', 'model.onnx'), 'graph');
  writeFileSync(join(dir, 'direction.safetensors'), 'DIRECTION');
  writeFileSync(join(dir, 'prompts.jsonl'), '{"prompt":"hi"}\n');
  return dir;
}

describe('writing over an input', () => {
  it('train-controller --out equal to --direction (spelled another way, or through a link) is refused', async () => {
    const dir = setup();
    symlinkSync(join(dir, 'direction.safetensors'), join(dir, 'link.safetensors'));
    const base = { model: join(dir, 'model'), direction: join(dir, 'direction.safetensors'), harmful: 'harmful-train', benign: 'harmless-train', n: '4', valFraction: '0.2', loss: 'mse', seed: '0' };
    for (const out of [join(dir, 'direction.safetensors'), join(dir, 'sub', '..', 'direction.safetensors'), join(dir, 'link.safetensors')]) {
      await expect(runTrainController({ ...base, out })).rejects.toThrow(/^--out .* is the same file as --direction .*direction\.safetensors: the command would overwrite its own input; write to another path$/);
    }
    await expect(runTrainController({ ...base, out: join(dir, 'c.safetensors'), cache: join(dir, 'direction.safetensors') })).rejects.toThrow(/--cache .* is the same file as --direction/);
    await expect(runTrainController({ ...base, out: join(dir, 'c.safetensors'), cache: join(dir, 'sub', '..', 'c.safetensors') })).rejects.toThrow(/--cache .* and --out .* are the same file/);
    await expect(runTrainController({ ...base, out: join(dir, 'model', 'onnx', 'model.onnx') })).rejects.toThrow(/is the same file as --model file/);
    expect(readFileSync(join(dir, 'direction.safetensors'), 'utf8')).toBe('DIRECTION');
  });

  it('direction --out equal to its --file, and eval --out holding one of its datasets, are refused', async () => {
    const dir = setup();
    await expect(
      runDirection({ model: join(dir, 'model'), method: 'import', file: join(dir, 'direction.safetensors'), out: join(dir, 'sub', '..', 'direction.safetensors'), harmful: 'harmful-train', harmless: 'harmless-train', n: '2', valN: '2', seed: '0' }),
    ).rejects.toThrow(/--out .* is the same file as --file/);
    const run = join(dir, 'run');
    mkdirSync(run);
    writeFileSync(join(run, 'records.jsonl'), '{"prompt":"x"}\n');
    await expect(
      runEvalCommand({ model: join(dir, 'model'), dataset: [join(run, 'records.jsonl')], textColumn: 'prompt', label: 'harmful', seed: '0', conditions: 'base', maxNewTokens: '2', judge: 'was-keywords', out: run }, false),
    ).rejects.toThrow(/records\.jsonl is the same file as --dataset/);
    expect(readFileSync(join(run, 'records.jsonl'), 'utf8')).toBe('{"prompt":"x"}\n');
  });

  it('export-gguf --out onto a file of the model, export-control-vector --out onto its --direction, and direction --cast-out onto its --harmful set, are refused', async () => {
    const dir = setup();
    writeFileSync(join(dir, 'model', 'onnx', 'model.gguf'), 'GGUF');
    await expect(runExportGguf({ model: join(dir, 'model'), out: join(dir, 'model', 'onnx', 'model.gguf') })).rejects.toThrow(/^--out .*model\.gguf is the same file as --model file/);
    expect(readFileSync(join(dir, 'model', 'onnx', 'model.gguf'), 'utf8')).toBe('GGUF');
    writeFileSync(join(dir, 'd.gguf'), 'not a direction');
    await expect(
      runExportControlVector({ model: join(dir, 'model'), policy: 'manual', direction: join(dir, 'd.gguf'), scale: '1', out: join(dir, 'sub', '..', 'd.gguf') }),
    ).rejects.toThrow(/^--out .*d\.gguf is the same file as --direction/);
    expect(readFileSync(join(dir, 'd.gguf'), 'utf8')).toBe('not a direction');
    writeFileSync(join(dir, 'harmful.json'), '[{"prompt":"hi"}]');
    await expect(
      runDirection({ model: join(dir, 'model'), method: 'embedding', out: join(dir, 'd.safetensors'), castOut: join(dir, 'sub', '..', 'harmful.json'), harmful: join(dir, 'harmful.json'), harmless: 'harmless-train', n: '2', valN: '2', seed: '0' }),
    ).rejects.toThrow(/^--cast-out .* is the same file as --harmful .*harmful\.json/);
    expect(readFileSync(join(dir, 'harmful.json'), 'utf8')).toBe('[{"prompt":"hi"}]');
  });

  it('outputs that do not exist yet, named datasets and artefacts beside a model are not inputs', () => {
    const dir = setup();
    writeFileSync(join(dir, 'model', 'direction.safetensors'), 'shipped');
    expect(() =>
      refuseOverwritingInputs(
        [{ path: join(dir, 'new.safetensors'), role: '--out' }, { path: join(dir, 'model', 'direction.safetensors'), role: '--out2' }],
        [{ path: 'harmful-train', role: '--harmful' }, ...modelFolderInputs(join(dir, 'model'))],
      ),
    ).not.toThrow();
  });
});
