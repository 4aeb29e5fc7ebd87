/**
 * `lab generate --model DIR_OR_ID --prompt TEXT`: chat-formats the prompt, generates (greedy unless a sampling flag
 * is given) with an optional steering matrix file (JSON [num_layers][hidden]), streams text to stdout, or prints one
 * JSON object with --json.
 */
import type { Command } from 'commander';
import { loadSteerableModel } from '../../core/model/load.js';
import { applyHub, parseDevice, parseDtype, readSteeringFile, resolveModelArg, stderrProgress } from '../../core/model/node-cli.js';
import type { GenerateResult, SamplingOptions } from '../../core/model/types.js';

export interface GenerateCliOptions {
  model: string;
  prompt: string;
  raw?: boolean;
  maxNewTokens?: string;
  steering?: string;
  steerPrompt?: string;
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
}

export async function runGenerate(o: GenerateCliOptions, onText?: (t: string) => void): Promise<GenerateCliResult> {
  applyHub(o.hub);
  const dtype = parseDtype(o.dtype);
  const device = parseDevice(o.device);
  const maxNewTokens = num('max-new-tokens', o.maxNewTokens, true) ?? 64;
  if (maxNewTokens < 1) throw new Error(`--max-new-tokens must be >= 1, got ${maxNewTokens}`);
  const steerPrompt = o.steerPrompt ?? 'last';
  if (steerPrompt !== 'last' && steerPrompt !== 'all') throw new Error(`--steer-prompt must be 'last' or 'all', got "${steerPrompt}"`);
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

  const sm = await loadSteerableModel(resolveModelArg(o.model), {
    ...(dtype ? { dtype } : {}),
    ...(device ? { device } : {}),
    ...(o.modelFile ? { modelFileName: o.modelFile } : {}),
    progress: stderrProgress(),
  });
  try {
    const steering = o.steering ? await readSteeringFile(o.steering, sm.numLayers, sm.hiddenSize) : null;
    const inputIds = o.raw ? sm.tokenizer.encode(o.prompt, { add_special_tokens: true }) : sm.formatChat(o.prompt).ids;
    const r = await sm.generate({
      inputIds,
      maxNewTokens,
      steering,
      steerPromptPositions: steerPrompt,
      sampling: sample ? sampling : null,
      ...(onText ? { onToken: (_id: number, delta: string) => delta && onText(delta) } : {}),
    });
    return { ...r, promptTokenIds: inputIds };
  } finally {
    await sm.dispose();
  }
}

export function register(program: Command): void {
  program
    .command('generate')
    .description('generate a reply with a steerable model, optionally steered by a [num_layers][hidden] JSON matrix')
    .requiredOption('--model <dir-or-id>', 'model folder or hub id')
    .requiredOption('--prompt <text>', 'user message (chat template applied unless --raw)')
    .option('--raw', 'tokenize the prompt as is, without the chat template')
    .option('--max-new-tokens <n>', 'tokens to generate at most (default 64)')
    .option('--steering <file>', 'JSON [num_layers][hidden] steering matrix, row l added after layer l')
    .option('--steer-prompt <which>', "'last' (default): last prompt token and new tokens; 'all': every prompt token too")
    .option('--temperature <t>', 'sample with this temperature (greedy when no sampling flag is given)')
    .option('--top-p <p>', 'nucleus sampling mass in (0, 1]')
    .option('--top-k <k>', 'keep the k most likely tokens (0 = off)')
    .option('--seed <n>', 'seed of the sampling stream')
    .option('--dtype <dtype>', 'fp32 | fp16 | q8 | q4 | q4f16 (default: config, else fp32)')
    .option('--device <device>', 'cpu | wasm | webgpu (default cpu in Node)')
    .option('--model-file <name>', "transformers.js model_file_name, e.g. 'model' or 'decoder_model_merged'")
    .option('--hub <url>', 'hub base URL (default: STEERLAB_HUB, else transformers.js default)')
    .option('--json', 'print one JSON object on stdout instead of streaming text')
    .action(async (o: GenerateCliOptions) => {
      const r = await runGenerate(o, o.json ? undefined : (t) => process.stdout.write(t));
      if (o.json) {
        process.stdout.write(
          `${JSON.stringify({ text: r.text, token_ids: r.tokenIds, finish_reason: r.finishReason, prompt_token_ids: r.promptTokenIds })}\n`,
        );
      } else process.stdout.write('\n');
    });
}
