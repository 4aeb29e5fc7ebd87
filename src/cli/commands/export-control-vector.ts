/**
 * `lab export-control-vector --model M --policy manual|actadd --direction FILE ... --out FILE.gguf`: a fixed steering
 * policy as a llama.cpp control vector (`llama-cli --control-vector FILE`), the lab's "Export llama.cpp GGUF" from
 * the command line. The file holds the rows `lab generate` steers with under the same flags (add mode; --layer-range
 * and --alpha-scale relative applied); llama.cpp adds them at every position, as `lab generate --steer-prompt all`
 * does. core/method/control-vector.ts makes the file; this command only parses flags and writes it.
 */
import type { Command } from 'commander';
import { controlVectorOf } from '../../core/method/control-vector.js';
import { writeFileAtomic } from '../../core/util/atomic-write.js';
import { modelFolderInputs, refuseOverwritingInputs } from '../../core/util/same-file-node.js';
import { addModelOptions, loadCommandModel, type ModelCliOptions } from '../model-options.js';
import { addPolicyOptions, checkPolicyNumbers, checkSteeringFlags, resolvePolicyOptions, resolveSteeringSettings, type PolicyCliOptions } from '../policy-options.js';
import { stderrProgress } from '../../core/model/node-cli.js';

export interface ExportControlVectorCliOptions extends ModelCliOptions, PolicyCliOptions {
  out: string;
  json?: boolean;
}

export async function runExportControlVector(o: ExportControlVectorCliOptions, opts: { progress?: boolean } = {}) {
  if (typeof o.out !== 'string' || !o.out.endsWith('.gguf')) throw new Error(`--out must name a .gguf file, got "${o.out}"`);
  const kind = o.policy ?? 'off';
  if (kind !== 'manual' && kind !== 'actadd') {
    throw new Error(`--policy must be manual or actadd for a control vector (one fixed matrix for every prompt), got "${kind}"`);
  }
  // the numbers and flags before the model loads (resolvePolicyOptions reads them again after)
  checkPolicyNumbers(o);
  checkSteeringFlags(o, 'all');
  if (o.mode !== undefined && o.mode !== 'add') throw new Error(`--mode must be add for a control vector (llama.cpp only adds its vectors), got "${o.mode}"`);
  if (typeof o.model !== 'string' || o.model.trim() === '') throw new Error('--model is required: a hub id ("org/name") or a model folder');
  if (typeof o.direction !== 'string') throw new Error(`--policy ${kind} needs --direction FILE`);
  refuseOverwritingInputs([{ path: o.out, role: '--out' }], [...modelFolderInputs(o.model), { path: o.direction, role: '--direction' }]);
  const sm = await loadCommandModel(o, opts.progress ? { progress: stderrProgress() } : {});
  try {
    const resolved = await resolvePolicyOptions(o, sm);
    const settings = await resolveSteeringSettings(o, 'all', sm, resolved.policy.kind);
    const out = controlVectorOf(resolved.policy, settings, resolved.direction!, { numLayers: sm.numLayers, hiddenSize: sm.hiddenSize, name: sm.identity.name });
    await writeFileAtomic(o.out, [out.bytes]);
    return { out: o.out, policy: resolved.policy.kind, layers: out.layers, bytes: out.bytes.length, warnings: [...resolved.warnings, ...out.warnings] };
  } finally {
    await sm.dispose();
  }
}

export function register(program: Command): void {
  addPolicyOptions(
    addModelOptions(
      program
        .command('export-control-vector')
        .description("write a fixed steering policy (manual or actadd) as a llama.cpp control vector (GGUF; llama.cpp adds it at every position and has no vector for layer 0)"),
    ),
  )
    .requiredOption('--out <file.gguf>', 'output file')
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: ExportControlVectorCliOptions) => {
      const r = await runExportControlVector(o, { progress: true });
      for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
      if (o.json) process.stdout.write(`${JSON.stringify(r)}\n`);
      else process.stdout.write(`wrote ${r.out}: ${r.policy} policy, vectors for layers ${r.layers.join(', ')} (${r.bytes} bytes)\n`);
    });
}
