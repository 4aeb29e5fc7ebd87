/**
 * `lab patch IN.onnx OUT.onnx`: makes a decoder steerable (adds the `steering` input and the `residual_stream`
 * output, see src/core/onnx/patcher.ts). Failures exit non-zero with one line on stderr (via main.ts).
 */
import type { Command } from 'commander';
import { OnnxPatchError, type PatchOptions, type PatchReport } from '../../core/onnx/patcher.js';
import { patchDecoderFile } from '../../core/onnx/patcher-node.js';
import { MAX_HIDDEN, MAX_LAYERS, parseInteger } from '../numbers.js';

export interface PatchCliOptions {
  json?: boolean;
  layers?: string;
  hidden?: string;
  renameExternalData?: string[];
  logitsFrom?: boolean;
}


function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export function patchOptionsFromCli(o: PatchCliOptions): PatchOptions {
  const opts: PatchOptions = {};
  if (o.logitsFrom) opts.logitsFrom = true;
  if (o.layers !== undefined) opts.expectedNumLayers = parseInteger('layers', o.layers, 1, MAX_LAYERS);
  if (o.hidden !== undefined) opts.expectedHiddenSize = parseInteger('hidden', o.hidden, 1, MAX_HIDDEN);
  if (o.renameExternalData?.length) {
    opts.renameExternalData = {};
    for (const pair of o.renameExternalData) {
      const eq = pair.indexOf('=');
      if (eq <= 0 || eq === pair.length - 1) throw new Error(`--rename-external-data expects OLD=NEW, got "${pair}"`);
      opts.renameExternalData[pair.slice(0, eq)] = pair.slice(eq + 1);
    }
  }
  return opts;
}

function summary(report: PatchReport, outPath: string): string {
  const points = report.injection_points.map((p) => `  layer ${p.layer} (${p.graph}, ${p.kind}): ${p.value}`);
  return [
    `patched ${report.topology} decoder -> ${outPath}`,
    `layers ${report.num_layers}, hidden ${report.hidden_size}, residual stream ${report.stream_dtype}, opset ${report.opset}`,
    `input ${report.steering_input} float32 [steer_batch, ${report.num_layers}, ${report.hidden_size}]; ` +
      (report.projection_input ? `input ${report.projection_input} float32 [projection_batch, ${report.num_layers}, ${report.hidden_size}] (unit rows u_l: x <- x - (x.u_l)u_l + steering_l); ` : '') +
      `output ${report.residual_output} float32 [batch, ${report.num_layers + 1}, seq, ${report.hidden_size}]` +
      (report.logits_from_input ? `; input ${report.logits_from_input} int64 [1] (the head runs on positions logits_from.. of the pass; 0 = all)` : ''),
    'injection points:',
    ...points,
  ].join('\n');
}

export function register(program: Command): void {
  program
    .command('patch')
    .description('make an ONNX decoder steerable: add inputs `steering` [steer_batch, L, H] and `projection` [projection_batch, L, H] and output `residual_stream`')
    .argument('<in>', 'input model (.onnx)')
    .argument('<out>', 'output model (.onnx), written atomically')
    .option('--json', 'print the patch report as one JSON object')
    .option('--layers <n>', 'expected number of decoder layers (config num_hidden_layers); a mismatch is an error')
    .option('--hidden <n>', 'expected hidden size (config hidden_size); a mismatch is an error')
    .option('--rename-external-data <old=new>', 'rewrite external-data locations (repeatable)', collect)
    .option('--logits-from', 'also add input `logits_from` int64 [1]: the head runs on positions logits_from.. only (0 = all), as the lab\'s own loader patches; a runtime must then feed it')
    .action(async (inPath: string, outPath: string, o: PatchCliOptions) => {
      const opts = patchOptionsFromCli(o);
      let report: PatchReport;
      try {
        report = await patchDecoderFile(inPath, outPath, opts);
      } catch (err) {
        if (err instanceof OnnxPatchError) throw new Error(`patch ${inPath}: ${err.code}: ${err.message.replace(/\s*\n\s*/g, ' ')}`);
        throw err;
      }
      process.stdout.write(o.json ? `${JSON.stringify(report)}\n` : `${summary(report, outPath)}\n`);
    });
}
