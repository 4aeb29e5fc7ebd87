/**
 * `lab export-gguf --model DIR_OR_ID --out FILE.gguf [--type f32|f16|q8_0|q4_0]`: the model as a llama.cpp GGUF model
 * file (src/core/model/gguf-export.ts), e.g. to run the same weights in llama.cpp (the benchmark's peer).
 */
import type { Command } from 'commander';
import { writeFileAtomic } from '../../core/util/atomic-write.js';
import { exportGgufFromSource, GGUF_EXPORT_TYPES, type GgufExportType } from '../../core/model/gguf-export.js';
import { absoluteFolder } from '../../core/model/node-io.js';
import { modelFolderInputs, refuseOverwritingInputs } from '../../core/util/same-file-node.js';
import { addModelOptions, modelLoadOptions, type ModelCliOptions } from '../model-options.js';

export interface ExportGgufCliOptions extends ModelCliOptions {
  out: string;
  type?: string;
  json?: boolean;
}

export async function runExportGguf(o: ExportGgufCliOptions) {
  const type = (o.type ?? 'f32') as GgufExportType;
  if (!(GGUF_EXPORT_TYPES as readonly string[]).includes(type)) throw new Error(`--type must be one of ${GGUF_EXPORT_TYPES.join(', ')}, got "${o.type}"`);
  if (!o.out.endsWith('.gguf')) throw new Error(`--out must name a .gguf file, got "${o.out}"`);
  if (typeof o.model !== 'string' || o.model.trim() === '') throw new Error('--model is required: a model folder or a hub id ("org/name")');
  const { dtype, modelFileName } = modelLoadOptions(o);
  refuseOverwritingInputs([{ path: o.out, role: '--out' }], modelFolderInputs(o.model));
  // transformers.js would take a relative "a/b" for a hub id: an existing folder is passed as an absolute path.
  const source = absoluteFolder(o.model) ?? o.model;
  const { parts, report, graphFile } = await exportGgufFromSource(source, { type, ...(dtype ? { dtype } : {}), ...(modelFileName ? { modelFileName } : {}) });
  await writeFileAtomic(o.out, parts);
  return { out: o.out, graph: graphFile, ...report };
}

export function register(program: Command): void {
  addModelOptions(
    program
      .command('export-gguf')
      .description('write the model as a llama.cpp GGUF model file (architecture llama; Llama-family graphs with Hugging Face weight names)'),
  )
    .requiredOption('--out <file.gguf>', 'output file')
    .option('--type <type>', `tensor type of the 2-D weights: ${GGUF_EXPORT_TYPES.join(' | ')} (default f32; q4_0 repacks 4-bit MatMulNBits weights exactly)`)
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: ExportGgufCliOptions) => {
      const r = await runExportGguf(o);
      if (o.json) process.stdout.write(`${JSON.stringify(r)}\n`);
      else process.stdout.write(`wrote ${r.out}: ${r.tensors} tensors, ${(r.bytes / 1e6).toFixed(1)} MB, ${r.type}, from ${r.graph} (${r.numLayers} layers, vocabulary ${r.vocabSize})\n`);
    });
}
