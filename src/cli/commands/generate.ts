/**
 * `lab generate --model DIR_OR_ID --prompt TEXT`: chat-formats the prompt, generates (greedy unless a sampling flag
 * is given) with an optional steering matrix file (JSON [num_layers][hidden]) or a steering policy
 * (--policy off|was|uniform|manual|actadd|cast, see ../policy-options.ts), streams text to stdout, or prints one
 * JSON object with --json (with a policy: also s, w and the per-layer norms of the patch). A chat prompt longer than
 * the model's context is shortened first (--fit, default middle: src/core/method/fit.ts) and a note says so.
 */
import type { Command } from 'commander';
import { loadSteerableModel } from '../../core/model/load.js';
import { applyHub, parseDevice, parseDtype, readSteeringFile, resolveModelArg, stderrProgress } from '../../core/model/node-cli.js';
import type { GenerateResult, SamplingOptions } from '../../core/model/types.js';
import { fitDepsFromTokenizer, fitNote, fitPrompt, FIT_MODES, parseFitMode, type FitResult } from '../../core/method/fit.js';
import { runFlow } from '../../core/method/flow.js';
import { addPolicyOptions, resolvePolicyOptions, resolveSteeringSettings, type PolicyCliOptions } from '../policy-options.js';
import { applySteeringSettings, type SteeringSettings } from '../../core/steering/modes.js';

export interface GenerateCliOptions extends PolicyCliOptions {
  model: string;
  prompt: string;
  raw?: boolean;
  maxNewTokens?: string;
  steering?: string;
  steerPrompt?: string;
  /** none | middle | head | tail (default middle). */
  fit?: string;
  temperature?: string;
  topP?: string;
  topK?: string;
  seed?: string;
  dtype?: string;
  device?: string;
  modelFile?: string;
  hub?: string;
  json?: boolean;
}

function num(flag: string, v: string | undefined, integer: boolean): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || (integer && !Number.isInteger(n))) throw new Error(`--${flag} must be ${integer ? 'an integer' : 'a number'}, got "${v}"`);
  return n;
}

export interface GenerateCliResult extends GenerateResult {
  promptTokenIds: number[];
  /** How the chat prompt was fitted into the context; absent with --raw. */
  fit?: FitResult;
  /** Set when a steering policy (not a raw matrix) drove the patch. */
  policy?: { kind: string; scale: number | null; layerWeights: number[] | null; rowNorms: number[] | null; warnings: string[] };
  /** Mode, layer range, positions and alpha scale of the patch (plain data). */
  settings: SteeringSettings;
}

export async function runGenerate(o: GenerateCliOptions, onText?: (t: string) => void): Promise<GenerateCliResult> {
  applyHub(o.hub);
  const dtype = parseDtype(o.dtype);
  const device = parseDevice(o.device);
  const maxNewTokens = num('max-new-tokens', o.maxNewTokens, true) ?? 64;
  if (maxNewTokens < 1) throw new Error(`--max-new-tokens must be >= 1, got ${maxNewTokens}`);
  const steerPrompt = o.steerPrompt ?? 'last';
  if (steerPrompt !== 'last' && steerPrompt !== 'all' && steerPrompt !== 'new') throw new Error(`--steer-prompt must be 'last', 'all' or 'new', got "${steerPrompt}"`);
  const sampling: SamplingOptions = {};
  const t = num('temperature', o.temperature, false);
  const p = num('top-p', o.topP, false);
  const k = num('top-k', o.topK, true);
  const s = num('seed', o.seed, true);
  if (t !== undefined) sampling.temperature = t;
  if (p !== undefined) sampling.topP = p;
  if (k !== undefined) sampling.topK = k;
  if (s !== undefined) sampling.seed = s;
  const sample = t !== undefined || p !== undefined || k !== undefined;
  if (typeof o.prompt !== 'string' || o.prompt === '') throw new Error('--prompt must be a non-empty text');
  const fitMode = parseFitMode(o.fit, '--fit');
  if (o.raw && o.fit !== undefined && fitMode !== 'none') throw new Error('--fit works on chat prompts only: --raw tokens are used as they are (drop --fit or use --fit none)');

  const sm = await loadSteerableModel(resolveModelArg(o.model), {
    ...(dtype ? { dtype } : {}),
    ...(device ? { device } : {}),
    ...(o.modelFile ? { modelFileName: o.modelFile } : {}),
    progress: stderrProgress(),
  });
  try {
    const policyKind = o.policy ?? 'off';
    if (policyKind !== 'off') {
      if (o.steering) throw new Error('--steering (a fixed matrix) and --policy are exclusive: give one of them');
      if (o.raw) throw new Error('--raw cannot be used with --policy: policies observe the chat-formatted prompt');
      const resolved = await resolvePolicyOptions(o, { id: sm.id, numLayers: sm.numLayers, hiddenSize: sm.hiddenSize });
      const settings = await resolveSteeringSettings(o, steerPrompt, sm, resolved.policy.kind);
      const flow = await runFlow(sm, o.prompt, { direction: resolved.direction, controller: resolved.controller }, {
        policy: resolved.policy,
        maxNewTokens,
        settings,
        sampling: sample ? sampling : null,
        fit: fitMode,
        ...(onText ? { onToken: (_id: number, delta: string) => delta && onText(delta) } : {}),
      });
      return {
        text: flow.text,
        tokenIds: flow.tokenIds,
        finishReason: flow.finishReason,
        promptTokenIds: sm.formatChat(flow.fit.text).ids,
        fit: flow.fit,
        policy: { kind: policyKind, scale: flow.scale, layerWeights: flow.layerWeights, rowNorms: flow.rowNorms, warnings: resolved.warnings },
        settings,
      };
    }
    const settings = await resolveSteeringSettings(o, steerPrompt, sm, null);
    const patch = applySteeringSettings(o.steering ? await readSteeringFile(o.steering, sm.numLayers, sm.hiddenSize) : null, settings, sm);
    const fit = o.raw ? undefined : fitPrompt(fitDepsFromTokenizer(sm.tokenizer), o.prompt, { contextLength: sm.contextLength, maxNewTokens, mode: fitMode });
    const inputIds = fit ? sm.formatChat(fit.text).ids : sm.tokenizer.encode(o.prompt, { add_special_tokens: true });
    const r = await sm.generate({
      inputIds,
      maxNewTokens,
      steering: patch.steering,
      projection: patch.projection,
      steerPromptPositions: settings.positions,
      sampling: sample ? sampling : null,
      ...(onText ? { onToken: (_id: number, delta: string) => delta && onText(delta) } : {}),
    });
    return { ...r, promptTokenIds: inputIds, ...(fit ? { fit } : {}), settings };
  } finally {
    await sm.dispose();
  }
}

export function register(program: Command): void {
  const cmd = program
    .command('generate')
    .description('generate a reply with a steerable model, optionally steered by a [num_layers][hidden] JSON matrix')
    .requiredOption('--model <dir-or-id>', 'model folder or hub id')
    .requiredOption('--prompt <text>', 'user message (chat template applied unless --raw)')
    .option('--raw', 'tokenize the prompt as is, without the chat template')
    .option('--max-new-tokens <n>', 'tokens to generate at most (default 64)')
    .option('--steering <file>', 'JSON [num_layers][hidden] steering matrix, row l added after layer l')
    .option('--steer-prompt <which>', "which positions carry the patch: 'last' (default): the last prompt token and the new tokens; 'all': every prompt token too; 'new': the new tokens only")
    .option('--fit <mode>', `a chat prompt longer than the model's context: ${FIT_MODES.join(' | ')} (default middle: head and tail around " [...] ")`)
    .option('--temperature <t>', 'sample with this temperature (greedy when no sampling flag is given)')
    .option('--top-p <p>', 'nucleus sampling mass in (0, 1]')
    .option('--top-k <k>', 'keep the k most likely tokens (0 = off)')
    .option('--seed <n>', 'seed of the sampling stream')
    .option('--dtype <dtype>', 'fp32 | fp16 | q8 | q4 | q4f16 (default: config, else fp32)')
    .option('--device <device>', 'cpu | wasm | webgpu (default cpu in Node)')
    .option('--model-file <name>', "transformers.js model_file_name, e.g. 'model' or 'decoder_model_merged'")
    .option('--hub <url>', 'hub base URL (default: STEERLAB_HUB, else transformers.js default)')
    .option('--json', 'print one JSON object on stdout instead of streaming text');
  addPolicyOptions(cmd).action(async (o: GenerateCliOptions) => {
    const r = await runGenerate(o, o.json ? undefined : (t) => process.stdout.write(t));
    for (const w of r.policy?.warnings ?? []) process.stderr.write(`warning: ${w}\n`);
    const note = r.fit ? fitNote(r.fit) : null;
    if (note) process.stderr.write(`note: ${note}\n`);
    if (o.json) {
      const out: Record<string, unknown> = { text: r.text, token_ids: r.tokenIds, finish_reason: r.finishReason, prompt_token_ids: r.promptTokenIds };
      if (r.fit) Object.assign(out, { truncated: r.fit.truncated, prompt_tokens: r.fit.originalTokens, kept_tokens: r.fit.keptTokens });
      if (r.policy) Object.assign(out, { policy: r.policy.kind, scale: r.policy.scale, layer_weights: r.policy.layerWeights, row_norms: r.policy.rowNorms });
      out.settings = r.settings;
      process.stdout.write(`${JSON.stringify(out)}\n`);
    } else {
      process.stdout.write('\n');
      if (r.policy) {
        const fmt = (v: number[] | null) => (v ? v.map((x) => x.toFixed(3)).join(' ') : '-');
        process.stderr.write(`policy ${r.policy.kind}: s = ${r.policy.scale?.toFixed(4) ?? '-'}\n  w: ${fmt(r.policy.layerWeights)}\n  |row|: ${fmt(r.policy.rowNorms)}\n`);
      }
    }
  });
}
