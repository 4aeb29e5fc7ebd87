/**
 * `lab verify --model DIR_OR_ID`: loads a model steerable and proves the patch: injection self-check, and with
 * --identity the unpatched graph's logits against the patched graph's with zero steering. Exits 1 when a check fails.
 */
import type { Command } from 'commander';
import { applyHub, parseDevice, parseDtype, resolveModelArg, stderrProgress } from '../../core/model/node-cli.js';
import { verifyModel, type VerifyReport } from '../../core/model/verify.js';

export interface VerifyCliOptions {
  model: string;
  dtype?: string;
  device?: string;
  modelFile?: string;
  identity?: boolean;
  hub?: string;
  json?: boolean;
}

export async function runVerify(o: VerifyCliOptions): Promise<VerifyReport> {
  applyHub(o.hub);
  const dtype = parseDtype(o.dtype);
  const device = parseDevice(o.device);
  return verifyModel(resolveModelArg(o.model), {
    ...(dtype ? { dtype } : {}),
    ...(device ? { device } : {}),
    ...(o.modelFile ? { modelFileName: o.modelFile } : {}),
    identity: o.identity === true,
    progress: stderrProgress(),
  });
}

function fmt(x: number | null): string {
  return x === null ? 'n/a' : x.toExponential(3);
}

export function register(program: Command): void {
  program
    .command('verify')
    .description('load a model steerable and check the patch (injection self-check; --identity: same logits as the unpatched graph)')
    .requiredOption('--model <dir-or-id>', 'model folder or hub id')
    .option('--dtype <dtype>', 'fp32 | fp16 | q8 | q4 | q4f16 (default: config, else fp32)')
    .option('--device <device>', 'cpu | wasm | webgpu (default cpu in Node)')
    .option('--model-file <name>', "transformers.js model_file_name of the graph, e.g. 'model' or 'decoder_model_merged'")
    .option('--identity', 'also load the unpatched graph and compare logits with zero steering')
    .option('--hub <url>', 'hub base URL (default: STEERLAB_HUB, else transformers.js default)')
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: VerifyCliOptions) => {
      const r = await runVerify(o);
      if (o.json) process.stdout.write(`${JSON.stringify(r)}\n`);
      else {
        process.stdout.write(
          `${r.ok ? 'OK' : 'FAILED'} ${r.model} (${r.topology}, ${r.num_layers} layers x ${r.hidden_size}, stream ${r.stream_dtype}, ${r.dtype} on ${r.device})\n` +
            `  injection at layer ${r.layer}: max error ${fmt(r.injection_max_error)}, upstream change ${fmt(r.upstream_max_error)}, tolerance ${fmt(r.tolerance)}\n` +
            (r.projection
              ? `  projection at layer ${r.layer}: ablation max error ${fmt(r.projection.ablation_max_error)} (removed component up to ${fmt(r.projection.removed_component)}), ` +
                `clamping to ${fmt(r.projection.clamp_target)} max error ${fmt(r.projection.clamp_max_error)}, elementwise ${fmt(r.projection.projection_max_error)}\n`
              : '') +
            `  identity: max logit diff ${fmt(r.identity_max_logit_diff)}${r.identity_tolerance !== null ? `, tolerance ${fmt(r.identity_tolerance)}` : ' (run with --identity)'}\n`,
        );
      }
      if (!r.ok) process.exitCode = 1;
    });
}
