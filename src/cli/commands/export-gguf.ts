/**
 * `lab export-gguf --model DIR_OR_ID --out FILE.gguf [--type f32|f16|q8_0|q4_0]`: the model as a llama.cpp GGUF model
 * file (src/core/model/gguf-export.ts), e.g. to run the same weights in llama.cpp (the benchmark's peer).
 */
import type { Command } from 'commander';
import { writeFileAtomic } from '../../core/util/atomic-write.js';
import { exportGgufFromSource, GGUF_EXPORT_TYPES, type GgufExportType } from '../../core/model/gguf-export.js';
import { applyHub, parseDtype, resolveModelArg } from '../../core/model/node-cli.js';

export interface ExportGgufCliOptions {
  model: string;
  out: string;
  type?: string;
  dtype?: string;
  modelFile?: string;
  hub?: string;
  json?: boolean;
}

export async function runExportGguf(o: ExportGgufCliOptions) {
  applyHub(o.hub);
  const type = (o.type ?? 'f32') as GgufExportType;
  if (!(GGUF_EXPORT_TYPES as readonly string[]).includes(type)) throw new Error(`--type must be one of ${GGUF_EXPORT_TYPES.join(', ')}, got "${o.type}"`);
  if (!o.out.endsWith('.gguf')) throw new Error(`--out must name a .gguf file, got "${o.out}"`);
  const dtype = parseDtype(o.dtype);
  const source = resolveModelArg(o.model);
  const { parts, report, graphFile } = await exportGgufFromSource(source, { type, ...(dtype ? { dtype } : {}), ...(o.modelFile ? { modelFileName: o.modelFile } : {}) });
  await writeFileAtomic(o.out, parts);
  return { out: o.out, graph: graphFile, ...report };
}

export function register(program: Command): void {
  program
    .command('export-gguf')
    .description('write the model as a llama.cpp GGUF model file (architecture llama; Llama-family graphs with Hugging Face weight names)')
    .requiredOption('--model <dir-or-id>', 'model folder or hub id')
    .requiredOption('--out <file.gguf>', 'output file')
    .option('--type <type>', `tensor type of the 2-D weights: ${GGUF_EXPORT_TYPES.join(' | ')} (default f32; q4_0 repacks 4-bit MatMulNBits weights exactly)`)
    .option('--dtype <dtype>', 'which ONNX graph to read: fp32 | fp16 | q8 | q4 | q4f16 (default fp32)')
    .option('--model-file <name>', "transformers.js model_file_name of the graph, e.g. 'model' or 'decoder_model_merged'")
    .option('--hub <url>', 'hub base URL (default: STEERLAB_HUB, else transformers.js default)')
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: ExportGgufCliOptions) => {
      const r = await runExportGguf(o);
      if (o.json) process.stdout.write(`${JSON.stringify(r)}\n`);
      else process.stdout.write(`wrote ${r.out}: ${r.tensors} tensors, ${(r.bytes / 1e6).toFixed(1)} MB, ${r.type}, from ${r.graph} (${r.numLayers} layers, vocabulary ${r.vocabSize})\n`);
    });
}
