/**
 * The decode engine (decode.ts) over a model that transformers.js loaded: its onnxruntime session, its onnxruntime's
 * Tensor class, its KV shape from config.json and its generation config's logits processors, so that the engine's
 * tokens are the ones transformers.js's generate() would pick.
 */
import { Tensor } from '@huggingface/transformers';
import { DecodeEngine, type MakeTensor, type OrtSessionLike } from './decode.js';
import type { TjsModel } from './steering-patch.js';

/** The onnxruntime Tensor class transformers.js runs with (onnxruntime-node in Node, onnxruntime-web in a browser). */
export function ortTensorFactory(): MakeTensor {
  const probe = new Tensor('float32', new Float32Array(0), [0]) as unknown as { ort_tensor: { constructor: new (t: string, d: unknown, dims: number[]) => never } };
  const Ctor = probe.ort_tensor.constructor;
  return (type, data, dims) => new Ctor(type, data, dims);
}

/** transformers.js's internals this glue reads (4.3.1, src/models/modeling_utils.js). */
interface TjsGenerationInternals {
  _prepare_generation_config(generation_config: null, kwargs: Record<string, unknown>): Record<string, unknown>;
  _get_logits_processor(config: Record<string, unknown>, inputLength: number, logitsProcessor: null): {
    processors: unknown[];
    (ids: bigint[][], logits: unknown): unknown;
  };
}

/**
 * The model's generation-config processors (repetition penalty, no-repeat n-grams, suppressed tokens, min length ...)
 * as one per-row function, or null when the config asks for none (the common case: then nothing runs per token).
 * Built with transformers.js's own _get_logits_processor, so they match its generate().
 */
export function configLogitsProcessors(model: TjsModel, eosTokenIds: readonly number[]) {
  const m = model as unknown as TjsGenerationInternals;
  if (typeof m._prepare_generation_config !== 'function' || typeof m._get_logits_processor !== 'function') return null;
  const kwargs = { do_sample: false, num_beams: 1, min_new_tokens: null, eos_token_id: eosTokenIds.length ? [...eosTokenIds] : null };
  const probe = m._get_logits_processor(m._prepare_generation_config(null, kwargs), 1, null);
  if (!probe.processors?.length) return null;
  return (ids: readonly number[], logits: Float32Array, promptLength: number): void => {
    const config = m._prepare_generation_config(null, kwargs);
    const list = m._get_logits_processor(config, promptLength, null);
    // The processors edit logits[0].data in place; a [1, V] Tensor over the row makes that the row itself.
    const out = list([ids.map((x) => BigInt(x))], new Tensor('float32', logits, [1, logits.length])) as { data: Float32Array };
    if (out.data !== logits) logits.set(out.data); // a processor that returned new logits instead of editing them
  };
}

export interface EngineFacts {
  numLayers: number;
  hiddenSize: number;
  vocabSize: number;
  contextLength: number | null;
  eosTokenIds: number[];
  /** The patched graph without residual_stream, when one was made (load.ts leanSessionFactory). */
  lean?: OrtSessionLike | null;
  /** transformers.js keeps the KV cache in GPU buffers on WebGPU. */
  cacheOnDevice?: boolean;
}

/** A decode engine over the patched session of a transformers.js model. */
export function engineFromTjs(model: TjsModel, facts: EngineFacts): DecodeEngine {
  const session = model.sessions['model'] as unknown as OrtSessionLike | undefined;
  if (!session) throw new Error(`the loaded model has no 'model' session (sessions: ${Object.keys(model.sessions).join(', ')})`);
  const cfg = model.config as { num_key_value_heads?: number; num_attention_heads?: number; head_dim?: number; pad_token_id?: number | null };
  const heads = cfg.num_attention_heads;
  const g = (model.generation_config ?? {}) as { pad_token_id?: number | null };
  const pad = g.pad_token_id ?? cfg.pad_token_id ?? undefined;
  return new DecodeEngine({
    session,
    lean: facts.lean ?? null,
    cacheOnDevice: facts.cacheOnDevice === true,
    tensor: ortTensorFactory(),
    numLayers: facts.numLayers,
    hiddenSize: facts.hiddenSize,
    vocabSize: facts.vocabSize,
    ...(cfg.num_key_value_heads ?? heads ? { numKvHeads: (cfg.num_key_value_heads ?? heads)! } : {}),
    ...(cfg.head_dim ?? (heads ? facts.hiddenSize / heads : undefined) ? { headDim: cfg.head_dim ?? facts.hiddenSize / heads! } : {}),
    eosTokenIds: facts.eosTokenIds,
    ...(typeof pad === 'number' && pad >= 0 && pad < facts.vocabSize ? { padTokenId: pad } : {}),
    contextLength: facts.contextLength,
    logitsProcessors: configLogitsProcessors(model, facts.eosTokenIds),
  });
}
