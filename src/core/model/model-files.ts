/**
 * A model's config.json and tokenizer, read through transformers.js and checked before they are used, so that a
 * broken or hostile file ends in a ModelLoadError naming the file and what is wrong, never in a TypeError deep in
 * generation (found by fuzzing these readers: test/unit/fuzz-readers.test.ts).
 */
import { AutoConfig, AutoTokenizer } from '@huggingface/transformers';
import { formatChat, type TjsTokenizer } from './prompt.js';

export class ModelLoadError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
    this.name = 'ModelLoadError';
  }
}

type ProgressCallback = ((e: { status: string; file?: string; loaded?: number; total?: number }) => void) | undefined;

/** The cause in words; a TypeError inside transformers.js means a field of the file is missing or of the wrong type. */
const said = (e: unknown) =>
  e instanceof TypeError ? `a field is missing or has the wrong type (transformers.js: ${e.message})` : e instanceof Error ? e.message : String(e);

function positiveInt(v: unknown, name: string, id: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) {
    throw new ModelLoadError('BAD_CONFIG', `config.json of "${id}": ${name} must be a positive integer, got ${JSON.stringify(v) ?? String(v)}`);
  }
  return v;
}

export interface ModelConfig {
  config: Record<string, unknown>;
  numLayers: number;
  hiddenSize: number;
  vocabSize: number;
}

/** config.json with the sizes Steerlab relies on checked (and max_position_embeddings / eos_token_id when given). */
export async function loadModelConfig(idOrPath: string, progress_callback?: ProgressCallback): Promise<ModelConfig> {
  let config: Record<string, unknown>;
  try {
    config = (await AutoConfig.from_pretrained(idOrPath, { progress_callback } as never)) as unknown as Record<string, unknown>;
  } catch (e) {
    throw new ModelLoadError('MODEL_NOT_FOUND', `cannot load config.json of "${idOrPath}": ${said(e)}`);
  }
  if (config === null || typeof config !== 'object') throw new ModelLoadError('BAD_CONFIG', `config.json of "${idOrPath}" is not a JSON object`);
  const nested = config['text_config'];
  if (nested !== undefined && (nested === null || typeof nested !== 'object' || Array.isArray(nested))) {
    throw new ModelLoadError('BAD_CONFIG', `config.json of "${idOrPath}": text_config must be an object`);
  }
  const text = (nested as Record<string, unknown> | undefined) ?? config;
  const numLayers = positiveInt(text['num_hidden_layers'], 'num_hidden_layers', idOrPath);
  const hiddenSize = positiveInt(text['hidden_size'], 'hidden_size', idOrPath);
  const vocabSize = positiveInt(text['vocab_size'], 'vocab_size', idOrPath);
  const maxPos = text['max_position_embeddings'];
  if (maxPos !== undefined && maxPos !== null) positiveInt(maxPos, 'max_position_embeddings', idOrPath);
  for (const [where, eos] of [['config.json', config['eos_token_id']], ['config.json text_config', nested ? text['eos_token_id'] : undefined]] as const) {
    if (eos === undefined || eos === null) continue;
    const list = Array.isArray(eos) ? eos : [eos];
    if (!list.every((x) => Number.isSafeInteger(x) && (x as number) >= 0 && (x as number) < vocabSize)) {
      throw new ModelLoadError('BAD_CONFIG', `${where} of "${idOrPath}": eos_token_id must be a token id or a list of token ids in 0..${vocabSize - 1}, got ${JSON.stringify(eos)}`);
    }
  }
  return { config, numLayers, hiddenSize, vocabSize };
}

/** Ids of a probe through the tokenizer, checked to be token ids of the model's vocabulary. */
function probe(tok: TjsTokenizer, vocabSize: number): void {
  const inVocab = (ids: unknown, what: string) => {
    if (!Array.isArray(ids) || ids.length === 0 || !ids.every((x) => Number.isSafeInteger(x) && x >= 0 && x < vocabSize)) {
      throw new Error(`${what} gave ${Array.isArray(ids) ? `ids ${JSON.stringify(ids.slice(0, 8))}${ids.length > 8 ? '...' : ''}` : String(ids)}, not token ids in 0..${vocabSize - 1}`);
    }
    return ids as number[];
  };
  const ids = inVocab(tok.encode('Hello, world.', { add_special_tokens: false }), 'encoding "Hello, world."');
  if (typeof tok.decode(ids, { skip_special_tokens: true }) !== 'string') throw new Error('decoding gave no text');
  if (tok.chat_template) inVocab(formatChat(tok, 'Hello, world.').ids, 'the chat template');
}

/** The tokenizer, after a probe through encode, decode and the chat template shows it works with this model. */
export async function loadCheckedTokenizer(idOrPath: string, vocabSize: number, progress_callback?: ProgressCallback): Promise<TjsTokenizer> {
  let tok: TjsTokenizer;
  try {
    tok = (await AutoTokenizer.from_pretrained(idOrPath, { progress_callback } as never)) as unknown as TjsTokenizer;
  } catch (e) {
    throw new ModelLoadError('TOKENIZER_FAILED', `cannot load the tokenizer of "${idOrPath}" (tokenizer.json, tokenizer_config.json): ${said(e)}`);
  }
  try {
    probe(tok, vocabSize);
  } catch (e) {
    throw new ModelLoadError('TOKENIZER_FAILED', `the tokenizer of "${idOrPath}" does not work with this model: ${said(e)}`);
  }
  return tok;
}
