/**
 * `lab generate --model DIR_OR_ID --prompt TEXT`: chat-formats the prompt, generates (greedy unless a sampling flag
 * is given) with an optional steering matrix file (JSON [num_layers][hidden]) or a steering policy
 * (--policy off|was|uniform|manual|actadd|cast, see ../policy-options.ts), streams text to stdout, or prints one
 * JSON object with --json (with a policy: also s, w and the per-layer norms of the patch). A chat prompt longer than
 * the model's context is shortened first (--fit, default middle: src/core/method/fit.ts) and a note says so.
 */
import type { Command } from 'commander';
import { readSteeringFile, stderrProgress } from '../../core/model/node-cli.js';
import type { GenerateResult, SamplingOptions } from '../../core/model/types.js';
import { fitDepsFromTokenizer, fitNote, fitPrompt, FIT_MODES, parseFitMode, type FitResult } from '../../core/method/fit.js';
import { compareFlow, runFlow, type FlowOptions, type Reply } from '../../core/method/flow.js';
import { addModelOptions, loadCommandModel, type ModelCliOptions } from '../model-options.js';
import { parseSeedOption, parseTemperature, parseTokenLimit, parseTopK, parseTopP } from '../numbers.js';
import { encodeText } from '../../core/model/prompt.js';
import { findSpecialTokenStrings } from '../../core/model/special-tokens.js';
import { parseDevice } from '../../core/model/node-cli.js';
import { addPolicyOptions, checkPolicyNumbers, checkSteeringFlags, resolvePolicyOptions, resolveSteeringSettings, type PolicyCliOptions } from '../policy-options.js';
import { applySteeringSettings, type SteeringSettings } from '../../core/steering/modes.js';

export interface GenerateCliOptions extends PolicyCliOptions, ModelCliOptions {
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
  /** Let special-token strings in the prompt become special tokens (default: they stay text). */
  allowSpecialTokens?: boolean;
  json?: boolean;
  /** Base and steered replies side by side, from one batch-2 generation (compareFlow). */
  compare?: boolean;
}

export interface GenerateCliResult extends GenerateResult {
  promptTokenIds: number[];
  /** How the chat prompt was fitted into the context; absent with --raw. */
  fit?: FitResult;
  /** Special-token strings found in the prompt, and whether they were tokens ('allowed') or text. */
  specialTokens: { mode: 'text' | 'allowed'; found: string[] };
  /** Set when a steering policy (not a raw matrix) drove the patch. */
  policy?: { kind: string; scale: number | null; layerWeights: number[] | null; rowNorms: number[] | null; warnings: string[] };
  /** --compare: the unsteered reply of the same batch (the top-level text and tokens are the steered reply). */
  base?: Reply;
  /** Mode, layer range, positions and alpha scale of the patch (plain data). */
  settings: SteeringSettings;
}

export async function runGenerate(o: GenerateCliOptions, onText?: (t: string) => void): Promise<GenerateCliResult> {
  parseDevice(o.device);
  const maxNewTokens = o.maxNewTokens !== undefined ? parseTokenLimit('max-new-tokens', o.maxNewTokens) : 64;
  const steerPrompt = o.steerPrompt ?? 'last';
  if (steerPrompt !== 'last' && steerPrompt !== 'all' && steerPrompt !== 'new') throw new Error(`--steer-prompt must be 'last', 'all' or 'new', got "${steerPrompt}"`);
  const sampling: SamplingOptions = {};
  const t = o.temperature !== undefined ? parseTemperature(o.temperature) : undefined;
  const p = o.topP !== undefined ? parseTopP(o.topP) : undefined;
  const k = o.topK !== undefined ? parseTopK(o.topK) : undefined;
  const s = o.seed !== undefined ? parseSeedOption(o.seed) : undefined;
  checkPolicyNumbers(o);
  checkSteeringFlags(o, steerPrompt);
  if (t !== undefined) sampling.temperature = t;
  if (p !== undefined) sampling.topP = p;
  if (k !== undefined) sampling.topK = k;
  if (s !== undefined) sampling.seed = s;
  const sample = t !== undefined || p !== undefined || k !== undefined;
  if (typeof o.prompt !== 'string' || o.prompt === '') throw new Error('--prompt must be a non-empty text');
  const fitMode = parseFitMode(o.fit, '--fit');
  if (o.raw && o.fit !== undefined && fitMode !== 'none') throw new Error('--fit works on chat prompts only: --raw tokens are used as they are (drop --fit or use --fit none)');

  const sm = await loadCommandModel(o, { progress: stderrProgress() });
  const chat = { allowSpecialTokens: o.allowSpecialTokens === true };
  const specialTokens = { mode: chat.allowSpecialTokens ? ('allowed' as const) : ('text' as const), found: findSpecialTokenStrings(sm.tokenizer, o.prompt) };
  try {
    const policyKind = o.policy ?? 'off';
    if (o.compare || policyKind !== 'off') {
      const what = o.compare ? '--compare' : '--policy';
      if (o.steering) throw new Error(`--steering (a fixed matrix) and ${what} are exclusive: ${o.compare ? '--compare steers with a --policy' : 'give one of them'}`);
      if (o.raw) throw new Error(`--raw cannot be used with ${what}: policies observe the chat-formatted prompt`);
      const resolved = await resolvePolicyOptions(o, sm);
      const settings = await resolveSteeringSettings(o, steerPrompt, sm, resolved.policy.kind);
      const parts = { direction: resolved.direction, controller: resolved.controller };
      const flowOptions: Omit<FlowOptions, 'onToken'> = {
        policy: resolved.policy,
        maxNewTokens,
        settings,
        sampling: sample ? sampling : null,
        fit: fitMode,
        allowSpecialTokens: chat.allowSpecialTokens,
      };
      const flow = o.compare
        ? await compareFlow(sm, o.prompt, parts, flowOptions)
        : await runFlow(sm, o.prompt, parts, { ...flowOptions, ...(onText ? { onToken: (_id: number, delta: string) => delta && onText(delta) } : {}) });
      const reply = 'steered' in flow ? flow.steered : flow;
      return {
        text: reply.text,
        tokenIds: reply.tokenIds,
        finishReason: reply.finishReason,
        ...('base' in flow ? { base: flow.base } : {}),
        promptTokenIds: sm.formatChat(flow.fit.text, chat).ids,
        fit: flow.fit,
        specialTokens,
        policy: { kind: policyKind, scale: flow.scale, layerWeights: flow.layerWeights, rowNorms: flow.rowNorms, warnings: resolved.warnings },
        settings,
      };
    }
    const settings = await resolveSteeringSettings(o, steerPrompt, sm, null);
    const patch = applySteeringSettings(o.steering ? await readSteeringFile(o.steering, sm.numLayers, sm.hiddenSize) : null, settings, sm);
    const fit = o.raw ? undefined : fitPrompt(fitDepsFromTokenizer(sm.tokenizer, chat), o.prompt, { contextLength: sm.contextLength, maxNewTokens, mode: fitMode });
    const inputIds = fit ? sm.formatChat(fit.text, chat).ids : encodeText(sm.tokenizer, o.prompt, { addSpecialTokens: true, ...chat });
    const r = await sm.generate({
      inputIds,
      maxNewTokens,
      steering: patch.steering,
      projection: patch.projection,
      steerPromptPositions: settings.positions,
      sampling: sample ? sampling : null,
      ...(onText ? { onToken: (_id: number, delta: string) => delta && onText(delta) } : {}),
    });
    return { ...r, promptTokenIds: inputIds, specialTokens, ...(fit ? { fit } : {}), settings };
  } finally {
    await sm.dispose();
  }
}

export function register(program: Command): void {
  const cmd = addModelOptions(program.command('generate').description('generate a reply with a steerable model, optionally steered by a [num_layers][hidden] JSON matrix'))
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
    .option('--compare', 'base and steered replies side by side, from one batch-2 generation (row 0 unpatched, row 1 the policy)')
    .option('--allow-special-tokens', 'let special-token strings in the prompt (e.g. <|im_end|>) become role/control tokens; default: they are text')
    .option('--json', 'print one JSON object on stdout instead of streaming text');
  addPolicyOptions(cmd).action(async (o: GenerateCliOptions) => {
    const r = await runGenerate(o, o.json || o.compare ? undefined : (t) => process.stdout.write(t));
    for (const w of r.policy?.warnings ?? []) process.stderr.write(`warning: ${w}\n`);
    const note = r.fit ? fitNote(r.fit) : null;
    if (note) process.stderr.write(`note: ${note}\n`);
    if (r.specialTokens.found.length > 0) {
      const how = r.specialTokens.mode === 'text' ? 'read as plain text (--allow-special-tokens makes them tokens)' : 'made special tokens (--allow-special-tokens)';
      process.stderr.write(`note: the prompt contains special-token strings (${r.specialTokens.found.join(' ')}), ${how}\n`);
    }
    if (o.json) {
      const out: Record<string, unknown> = { text: r.text, token_ids: r.tokenIds, finish_reason: r.finishReason, prompt_token_ids: r.promptTokenIds };
      if (r.fit) Object.assign(out, { truncated: r.fit.truncated, prompt_tokens: r.fit.originalTokens, kept_tokens: r.fit.keptTokens });
      Object.assign(out, { special_tokens: r.specialTokens.mode, prompt_special_tokens: r.specialTokens.found });
      if (r.policy) Object.assign(out, { policy: r.policy.kind, scale: r.policy.scale, layer_weights: r.policy.layerWeights, row_norms: r.policy.rowNorms });
      if (r.base) out.base = { text: r.base.text, token_ids: r.base.tokenIds, finish_reason: r.base.finishReason };
      out.settings = r.settings;
      process.stdout.write(`${JSON.stringify(out)}\n`);
    } else {
      if (r.base) process.stdout.write(`base:\n${r.base.text}\n\nsteered (${r.policy?.kind ?? 'off'}):\n${r.text}`);
      process.stdout.write('\n');
      if (r.policy) {
        const fmt = (v: number[] | null) => (v ? v.map((x) => x.toFixed(3)).join(' ') : '-');
        process.stderr.write(`policy ${r.policy.kind}: s = ${r.policy.scale?.toFixed(4) ?? '-'}\n  w: ${fmt(r.policy.layerWeights)}\n  |row|: ${fmt(r.policy.rowNorms)}\n`);
      }
    }
  });
}
