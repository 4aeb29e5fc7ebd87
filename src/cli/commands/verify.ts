/**
 * `lab verify --model DIR_OR_ID`: loads a model steerable and proves the patch: injection self-check, and with
 * --identity the unpatched graph's logits against the patched graph's with zero steering. Exits 1 when a check fails.
 */
import type { Command } from 'commander';
import { stderrProgress } from '../../core/model/node-cli.js';
import { verifyModel, type VerifyReport } from '../../core/model/verify.js';
import { addModelOptions, modelLoadOptions, type ModelCliOptions } from '../model-options.js';

export interface VerifyCliOptions extends ModelCliOptions {
  identity?: boolean;
  json?: boolean;
}

export async function runVerify(o: VerifyCliOptions): Promise<VerifyReport> {
  if (typeof o.model !== 'string' || o.model.trim() === '') throw new Error('--model is required: a hub id ("org/name") or a model folder');
  return verifyModel(o.model, { ...modelLoadOptions(o, { progress: stderrProgress() }), identity: o.identity === true });
}

function fmt(x: number | null): string {
  return x === null ? 'n/a' : x.toExponential(3);
}

export function register(program: Command): void {
  addModelOptions(program.command('verify').description('load a model steerable and check the patch (injection self-check; --identity: same logits as the unpatched graph)'))
    .option('--identity', 'also load the unpatched graph and compare logits with zero steering')
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: VerifyCliOptions) => {
      const r = await runVerify(o);
      if (o.json) process.stdout.write(`${JSON.stringify(r)}\n`);
      else {
        process.stdout.write(
          `${r.ok ? 'OK' : 'FAILED'} ${r.model} = ${r.model_id} (${r.topology}, ${r.num_layers} layers x ${r.hidden_size}, stream ${r.stream_dtype}, ${r.dtype} on ${r.device})\n` +
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
