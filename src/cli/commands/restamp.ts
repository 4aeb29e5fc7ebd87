/**
 * `lab restamp --model M FILE...`: records the loaded model's identity (id, name, variant: src/core/model/model-id.ts)
 * in direction and controller files, leaving every number as it is (the direction's and controller's content ids are
 * checked to be unchanged before a file is replaced, atomically). For files made with this very model under an
 * older identity rule (e.g. a folder named by its path or folder name); for anything else it would hide a real
 * mismatch, which is what --allow-other-model is for.
 */
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { decodeController, encodeController } from '../../core/controller/format.js';
import { controllerId, directionId } from '../../core/method/artifacts.js';
import { describeModel, recordedModel } from '../../core/model/model-id.js';
import { decodeSafetensors } from '../../core/steering/safetensors.js';
import { decodeDirectionFile, encodeDirectionFile, isDirectionFile } from '../../core/steering/direction-file.js';
import { writeFileAtomic } from '../../core/util/atomic-write.js';
import { addModelOptions, loadCommandModel, type ModelCliOptions } from '../model-options.js';

export interface RestampCliOptions extends ModelCliOptions {
  json?: boolean;
}

export interface RestampedFile {
  file: string;
  kind: 'direction' | 'controller';
  /** The artefact's content id: the same before and after. */
  id: string;
  from: string;
  to: string;
  changed: boolean;
}

export async function runRestamp(files: string[], o: RestampCliOptions): Promise<RestampedFile[]> {
  if (files.length === 0) throw new Error('restamp: name at least one direction or controller file');
  const model = await loadCommandModel(o);
  try {
    const stamp = recordedModel(model.identity);
    const shape = { numLayers: model.numLayers, hiddenSize: model.hiddenSize };
    const out: RestampedFile[] = [];
    for (const file of files) {
      const bytes = new Uint8Array(await readFile(file));
      const meta = decodeSafetensors(bytes, { source: file }).metadata;
      let next: Uint8Array;
      let entry: Omit<RestampedFile, 'changed'>;
      if (isDirectionFile(meta)) {
        const d = decodeDirectionFile(bytes, { ...shape, modelId: model.id }, file);
        const id = await directionId(d);
        const from = describeModel({ id: d.metadata.model_id, name: d.metadata.model_name });
        const again = { ...d, metadata: { ...d.metadata, ...stamp } };
        next = encodeDirectionFile(again);
        if ((await directionId(decodeDirectionFile(next, undefined, file))) !== id) throw new Error(`${file}: re-stamping would change the direction (a bug): left as it was`);
        entry = { file, kind: 'direction', id, from, to: describeModel(model.identity) };
      } else {
        const c = decodeController(bytes, { expect: shape, source: file });
        const id = await controllerId(c);
        const from = describeModel({ id: c.metadata.model_id, name: c.metadata.model_name });
        next = encodeController({ ...c, metadata: { ...c.metadata, ...stamp } });
        if ((await controllerId(decodeController(next, { source: file }))) !== id) throw new Error(`${file}: re-stamping would change the controller (a bug): left as it was`);
        entry = { file, kind: 'controller', id, from, to: describeModel(model.identity) };
      }
      const changed = Buffer.compare(Buffer.from(next), Buffer.from(bytes)) !== 0;
      if (changed) await writeFileAtomic(file, next);
      out.push({ ...entry, changed });
    }
    return out;
  } finally {
    await model.dispose();
  }
}

export function register(program: Command): void {
  addModelOptions(program.command('restamp').description("record the loaded model's identity in direction / controller files made with it (numbers unchanged)"))
    .argument('<files...>', 'direction and controller files (.safetensors)')
    .option('--json', 'print the result as JSON')
    .action(async (files: string[], o: RestampCliOptions) => {
      const r = await runRestamp(files, o);
      if (o.json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
      else for (const x of r) process.stdout.write(`${x.file}: ${x.kind} ${x.id}, ${x.changed ? `${x.from} -> ${x.to}` : `already stamped for ${x.to}`}\n`);
    });
}
