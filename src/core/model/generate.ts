/**
 * Steered generation on transformers.js's own generate(): its decode loop, KV-cache handling (DynamicCache,
 * use_cache_branch, position ids), stopping criteria and streamers are used as they are; Steerlab only supplies the
 * steering of each forward pass (through the instance patch, steering-patch.ts), logits processors for sampling
 * and a stopping criterion for abort.
 *
 * The WAS flow without a second full prefill ('last', the default):
 *   1. prefill prompt[0..n-2] once with zero steering, keep its KV cache;
 *   2. observe: run the last prompt token on that cache with zero steering (its KV is thrown away) -> the unsteered
 *      residual of the last prompt token, handed to a steering policy (the controller) and/or captured;
 *   3. generate() from the cache, starting with the last prompt token: transformers.js sees a cache of n-1 tokens
 *      and feeds only the last one (decoder_prepare_inputs_for_generation), so the patch covers the last prompt token
 *      and every new token. Step 2 is skipped when nothing needs the observation.
 * With 'all', every prompt position carries the patch; a policy then needs an unsteered pass over the whole prompt
 * first (unavoidable: the policy's output must reach every prompt position). With 'new', the flow is that of 'last'
 * but the pass over the last prompt token gets no patch: only the new tokens' positions carry it.
 * A projection matrix (o.projection) travels with the steering on exactly the passes that carry the patch.
 */
import { DynamicCache, InterruptableStoppingCriteria, Tensor } from '@huggingface/transformers';
import { disposeOutputs, residualAt, type ModelOutputs, type SteeringPatch, type TjsModel, type TjsTensor } from './steering-patch.js';
import { samplingProcessors } from './sampling.js';
import type { Dense, GenerateOptions, GenerateResult, SteeringContext } from './types.js';

export interface GenerateDeps {
  model: TjsModel;
  patch: SteeringPatch;
  numLayers: number;
  hiddenSize: number;
  vocabSize: number;
  /** Longest sequence the model takes (max_position_embeddings); null = unknown, no check. */
  contextLength: number | null;
  eosTokenIds: number[];
  decode(ids: number[]): string;
  /** Chat-formats a user message (add_generation_prompt) and returns its token ids. */
  chatIds(prompt: string): number[];
}

export function int64(ids: number[][]): TjsTensor {
  const flat = new BigInt64Array(ids.length * ids[0]!.length);
  let k = 0;
  for (const row of ids) for (const id of row) flat[k++] = BigInt(id);
  return new Tensor('int64', flat, [ids.length, ids[0]!.length]) as unknown as TjsTensor;
}

export function ones(b: number, n: number): TjsTensor {
  return new Tensor('int64', new BigInt64Array(b * n).fill(1n), [b, n]) as unknown as TjsTensor;
}

/** transformers.js getPastKeyValues for standard caches: present.* outputs become past_key_values.* entries. */
export function cacheFrom(out: ModelOutputs): InstanceType<typeof DynamicCache> {
  const entries: Record<string, TjsTensor> = {};
  for (const [name, t] of Object.entries(out)) {
    if (name.startsWith('present')) entries[name.replace('present', 'past_key_values')] = t;
  }
  return new DynamicCache(entries as never);
}

export function checkIds(ids: number[], vocab: number, what: string): void {
  if (!Array.isArray(ids) || ids.length === 0) throw new Error(`${what} must be a non-empty array of token ids`);
  for (let i = 0; i < ids.length; i++) {
    const v = ids[i]!;
    if (!Number.isInteger(v) || v < 0 || v >= vocab) throw new Error(`${what}[${i}] = ${v} is not a token id (expected an integer in [0, ${vocab}))`);
  }
}

/** Rotary tables and learned positions end at max_position_embeddings: past it a model computes garbage or fails. */
export function checkContext(length: number, contextLength: number | null, what: string): void {
  if (contextLength !== null && length > contextLength) {
    throw new Error(`${what} has ${length} tokens, longer than the model's context (max_position_embeddings = ${contextLength}); shorten the prompt (lab eval and lab generate fit long prompts with --fit middle|head|tail)`);
  }
}

export async function generateSteered(d: GenerateDeps, o: GenerateOptions): Promise<GenerateResult> {
  if ((o.prompt === undefined) === (o.inputIds === undefined)) throw new Error('generate: pass exactly one of prompt (text) or inputIds (token ids)');
  const ids = o.inputIds ?? d.chatIds(o.prompt!);
  checkIds(ids, d.vocabSize, 'generate inputIds');
  checkContext(ids.length, d.contextLength, 'generate prompt');
  const asked = o.maxNewTokens ?? 64;
  if (!Number.isInteger(asked) || asked < 1) throw new Error(`maxNewTokens must be an integer >= 1, got ${o.maxNewTokens}`);
  if (d.contextLength !== null && ids.length >= d.contextLength) {
    throw new Error(`generate prompt has ${ids.length} tokens and fills the model's context (max_position_embeddings = ${d.contextLength}): no room for a reply`);
  }
  // The reply stops at the context's end (finishReason 'length') rather than running into positions the model lacks.
  const maxNew = d.contextLength === null ? asked : Math.min(asked, d.contextLength - ids.length);
  const positions = o.steerPromptPositions ?? 'last';
  if (positions !== 'last' && positions !== 'all' && positions !== 'new') throw new Error(`steerPromptPositions must be 'last', 'all' or 'new', got ${String(positions)}`);
  const capture = o.capture ?? 'none';
  if (!['none', 'prompt-last', 'all'].includes(capture)) throw new Error(`capture must be 'none', 'prompt-last' or 'all', got ${String(capture)}`);
  const steering = o.steering ?? null;
  const policy = typeof steering === 'function' ? steering : null;
  if (steering instanceof Float32Array) d.patch.checkSteering(steering, 1);
  const projection = o.projection ?? null;
  if (projection instanceof Float32Array) d.patch.checkProjection(projection, 1);
  const cached = positions !== 'all'; // 'last' and 'new' prefill all but the last prompt token unsteered

  const n = ids.length;
  const L1H = (d.numLayers + 1) * d.hiddenSize;
  const patch = d.patch;
  const zero = { steering: () => null };
  const aborted = () => o.signal?.aborted === true;
  const emptyResult = (): GenerateResult => ({ text: '', tokenIds: [], finishReason: 'abort' });
  if (aborted()) return emptyResult();

  let cache: InstanceType<typeof DynamicCache> | undefined;
  let promptResidual: Float32Array | null = null;
  const needObservation = policy !== null || capture !== 'none';
  let lastRes: Dense | null = null;
  const grab = { residual: (r: Dense) => (lastRes = r) };

  try {
    // 1 + 2: unsteered prefill and observation
    if (cached && n > 1) {
      patch.hooks = { ...zero, ...grab };
      const out = await d.model.forward({ input_ids: int64([ids.slice(0, -1)]), attention_mask: ones(1, n - 1) });
      cache = cacheFrom(out);
      disposeOutputs(out, new Set(Object.values(cache)));
    }
    if (needObservation) {
      patch.hooks = { ...zero, ...grab };
      const out =
        cached && cache
          ? await d.model.forward({ input_ids: int64([ids.slice(-1)]), attention_mask: ones(1, n), past_key_values: cache })
          : await d.model.forward({ input_ids: int64([ids]), attention_mask: ones(1, n) });
      disposeOutputs(out);
      const r = lastRes as Dense | null;
      promptResidual = residualAt(r!, 0, r!.dims[2]! - 1);
    }
    if (aborted()) return { ...emptyResult(), ...(capture !== 'none' && promptResidual ? { promptResiduals: promptResidual } : {}) };

    // 3: steered generation on transformers.js's loop
    const generated: number[] = [];
    const tokenRes: Float32Array[] = [];
    let step = 0;
    let previous: Float32Array | null = null;
    // 'new': the pass of the last prompt token (step 0) carries no patch; the policy still runs there (it observes).
    const unpatched = () => positions === 'new' && step === 0;
    patch.hooks = {
      steering: () => {
        let m: Float32Array | null;
        if (!policy) m = steering as Float32Array | null;
        else {
          const ctx: SteeringContext = { step, promptResidual, previousResidual: previous, generated: [...generated] };
          m = policy(ctx);
          if (m !== null) patch.checkSteering(m, 1);
        }
        return unpatched() ? null : m;
      },
      projection: () => {
        const p = typeof projection === 'function' ? projection() : projection;
        if (p !== null && typeof projection === 'function') patch.checkProjection(p, 1);
        return unpatched() ? null : p;
      },
      residual: (r) => {
        previous = residualAt(r, 0, r.dims[2]! - 1);
        if (capture === 'all') tokenRes.push(previous);
        step++;
      },
    };

    const stop = new InterruptableStoppingCriteria();
    const onAbort = () => stop.interrupt();
    o.signal?.addEventListener('abort', onAbort);
    let emitted = '';
    let sawPrompt = false;
    const streamer = {
      put: (batch: bigint[][]) => {
        o.streamer?.put(batch);
        if (!sawPrompt) {
          sawPrompt = true; // generate() first puts the prompt
          return;
        }
        for (const t of batch[0] ?? []) {
          generated.push(Number(t));
          if (o.onToken) {
            const text = d.decode(generated);
            // Hold back while the text ends inside a multi-byte character.
            const delta = text.endsWith('\uFFFD') || !text.startsWith(emitted) ? '' : text.slice(emitted.length);
            if (delta) emitted = text;
            o.onToken(Number(t), delta);
          }
        }
      },
      end: () => o.streamer?.end(),
    };

    const kwargs: Record<string, unknown> = {
      input_ids: int64([ids]),
      attention_mask: ones(1, n),
      max_new_tokens: maxNew,
      min_new_tokens: null,
      do_sample: false,
      num_beams: 1,
      eos_token_id: d.eosTokenIds.length ? d.eosTokenIds : null,
      logits_processor: o.sampling ? samplingProcessors(o.sampling) : null,
      stopping_criteria: [stop],
      streamer,
    };
    if (positions === 'all') {
      // every prompt position is steered: no cache from the unsteered pass
    } else if (cache) {
      kwargs['past_key_values'] = cache;
    }
    let sequences: TjsTensor;
    try {
      sequences = (await d.model.generate(kwargs)) as TjsTensor;
    } finally {
      o.signal?.removeEventListener('abort', onAbort);
    }
    const all = Array.from(sequences.data as BigInt64Array, Number);
    const tokenIds = all.slice(n);
    const last = tokenIds.at(-1);
    const finishReason: GenerateResult['finishReason'] = stop.interrupted
      ? 'abort'
      : last !== undefined && d.eosTokenIds.includes(last)
        ? 'eos'
        : 'length';
    const result: GenerateResult = { text: d.decode(tokenIds), tokenIds, finishReason };
    if (capture !== 'none' && promptResidual) result.promptResiduals = promptResidual;
    if (capture === 'all') {
      const tr = new Float32Array(tokenRes.length * L1H);
      tokenRes.forEach((r, i) => tr.set(r, i * L1H));
      result.tokenResiduals = tr;
    }
    return result;
  } finally {
    patch.hooks = null;
    if (cache) await (cache as unknown as { dispose(): Promise<void> }).dispose();
  }
}
