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
 *
 * Base and steered side by side (compareSteered): ONE generation of batch 2 over the same prompt, steering input
 * [steer_batch 2, L, H] with row 0 zero and row 1 the policy's matrix, so both replies stream together. The prompt
 * is prefilled and observed once at batch 1 and its cache repeated for both rows (rows prefill on their own only
 * where the cache lives on the GPU). Both rows have the same length at every step (no padding), so fused
 * GroupQueryAttention graphs run it as they run batch 1.
 * transformers.js 4.3.1 keeps feeding a batch row after its EOS and stops only when every row's LAST token is an EOS
 * at the same step (EosTokenCriteria looks at the last token only); a sticky stopping criterion (RowsFinished) marks
 * a row done at its first EOS, its later tokens are ignored, and the loop ends when every row is done. Row 0 of a
 * compare gets neither steering nor projection rows.
 */
import { DynamicCache, InterruptableStoppingCriteria, StoppingCriteria, Tensor } from '@huggingface/transformers';
import { disposeOutputs, residualAt, type ModelOutputs, type SteeringPatch, type TjsModel, type TjsTensor } from './steering-patch.js';
import { TextDeltas } from './reply-text.js';
import { samplingProcessors } from './sampling.js';
import type { CompareOptions, CompareResult, Dense, GenerateOptions, GenerateResult, StepContext } from './types.js';
import type { PromptPrefix } from './decode.js';

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

/** A cache handed over by the decode engine (decode.ts PromptPrefix) as transformers.js past_key_values. */
export function cacheFromPrefix(prefix: PromptPrefix): InstanceType<typeof DynamicCache> {
  const entries: Record<string, TjsTensor> = {};
  for (const [name, t] of Object.entries(prefix.kv)) entries[name] = new Tensor(t.type, t.data as never, t.dims) as unknown as TjsTensor;
  return new DynamicCache(entries as never);
}

/**
 * The batch-1 prefix cache repeated to `rows` rows (both rows of a compare share the prompt), so the prompt is
 * prefilled and observed once, as a batch-1 flow does. null when a tensor is not in CPU memory (WebGPU keeps the
 * cache on the GPU): the caller then prefills every row itself.
 */
function repeatRows(cache: InstanceType<typeof DynamicCache>, rows: number): InstanceType<typeof DynamicCache> | null {
  const entries = Object.entries(cache as unknown as Record<string, TjsTensor>);
  if (entries.some(([, t]) => (t.location ?? 'cpu') !== 'cpu' || t.dims[0] !== 1)) return null;
  const out: Record<string, TjsTensor> = {};
  for (const [name, t] of entries) {
    const data = t.data as unknown as { length: number; constructor: new (n: number) => { set(a: unknown, o: number): void } };
    const repeated = new data.constructor(data.length * rows);
    for (let r = 0; r < rows; r++) repeated.set(data, r * data.length);
    out[name] = new Tensor(t.type as never, repeated as never, [rows, ...t.dims.slice(1)]) as unknown as TjsTensor;
  }
  return new DynamicCache(out as never);
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

/** A prompt to generate from: token ids of the vocabulary, shorter than the context with room for a reply. */
export function checkPrompt(ids: number[], vocab: number, contextLength: number | null): void {
  checkIds(ids, vocab, 'generate inputIds');
  checkContext(ids.length, contextLength, 'generate prompt');
  if (contextLength !== null && ids.length >= contextLength) {
    throw new Error(`generate prompt has ${ids.length} tokens and fills the model's context (max_position_embeddings = ${contextLength}): no room for a reply`);
  }
}

/**
 * A row is done from its first EOS on (transformers.js's EosTokenCriteria only looks at each row's last token, so a
 * finished row of a batch would count as running again one step later). Also the one record of which rows finished.
 */
class RowsFinished extends StoppingCriteria {
  readonly done: boolean[];
  constructor(rows: number, private readonly eos: readonly number[], private readonly promptLength: number) {
    super();
    this.done = new Array<boolean>(rows).fill(false);
  }
  override _call(inputIds: (number | bigint)[][]): boolean[] {
    inputIds.forEach((ids, b) => {
      if (!this.done[b] && ids.length > this.promptLength && this.eos.includes(Number(ids.at(-1)))) this.done[b] = true;
    });
    return [...this.done];
  }
}

/** What one generation of 1 or 2 rows over the same prompt needs; the LAST row carries the steering. */
interface RowsSpec {
  ids: number[];
  /** 1 = a plain (steered) generation; 2 = row 0 unsteered, row 1 steered (compare). */
  rows: 1 | 2;
  maxNewTokens?: number;
  /** A fixed [L*H] matrix for the steered row, a policy called before each pass, or null. */
  steering: GenerateOptions['steering'];
  /** Projection rows of the steered row (GenerateOptions.projection). */
  projection?: GenerateOptions['projection'];
  steerPromptPositions?: GenerateOptions['steerPromptPositions'];
  sampling?: GenerateOptions['sampling'];
  capture: 'none' | 'prompt-last' | 'all';
  onToken?: (row: number, tokenId: number, textDelta: string) => void;
  onSteeredResidual?: CompareOptions['onSteeredResidual'];
  streamer?: GenerateOptions['streamer'];
  signal?: AbortSignal;
}

interface RowsResult {
  rows: GenerateResult[];
  promptResidual: Float32Array | null;
  /** [T, L+1, H] of the steered row (capture 'all'). */
  tokenResiduals: Float32Array | null;
}

export async function generateSteered(d: GenerateDeps, o: GenerateOptions): Promise<GenerateResult> {
  if ((o.prompt === undefined) === (o.inputIds === undefined)) throw new Error('generate: pass exactly one of prompt (text) or inputIds (token ids)');
  const capture = o.capture ?? 'none';
  if (!['none', 'prompt-last', 'all'].includes(capture)) throw new Error(`capture must be 'none', 'prompt-last' or 'all', got ${String(capture)}`);
  const r = await generateRows(d, {
    ids: o.inputIds ?? d.chatIds(o.prompt!),
    rows: 1,
    ...(o.maxNewTokens !== undefined ? { maxNewTokens: o.maxNewTokens } : {}),
    steering: o.steering ?? null,
    ...(o.projection ? { projection: o.projection } : {}),
    ...(o.steerPromptPositions !== undefined ? { steerPromptPositions: o.steerPromptPositions } : {}),
    sampling: o.sampling ?? null,
    capture,
    ...(o.onToken ? { onToken: (_row: number, id: number, delta: string) => o.onToken!(id, delta) } : {}),
    ...(o.streamer ? { streamer: o.streamer } : {}),
    ...(o.signal ? { signal: o.signal } : {}),
  });
  const result = r.rows[0]!;
  if (capture !== 'none' && r.promptResidual) result.promptResiduals = r.promptResidual;
  if (capture === 'all' && r.tokenResiduals) result.tokenResiduals = r.tokenResiduals;
  return result;
}

/**
 * Base and steered replies of one prompt from one batch-2 generation (see the module comment). The policy sees the
 * unsteered residual of the last prompt token, observed once, and returns row 1's matrix (null = no patch); row 0
 * is never patched. With greedy decoding row 0 equals a plain unsteered generation and row 1 a batch-1 generation
 * with the same matrix; with sampling, each row draws from its own stream seeded alike, so the same holds.
 */
export async function compareSteered(d: GenerateDeps, o: CompareOptions): Promise<CompareResult> {
  if (typeof o.steering !== 'function') throw new Error('compare: steering must be a policy (context) => matrix | null');
  const r = await generateRows(d, {
    ids: o.inputIds,
    rows: 2,
    ...(o.maxNewTokens !== undefined ? { maxNewTokens: o.maxNewTokens } : {}),
    steering: o.steering,
    ...(o.projection ? { projection: o.projection } : {}),
    ...(o.steerPromptPositions !== undefined ? { steerPromptPositions: o.steerPromptPositions } : {}),
    sampling: o.sampling ?? null,
    capture: o.captureSteered ? 'all' : 'prompt-last',
    ...(o.onToken ? { onToken: o.onToken } : {}),
    ...(o.onSteeredResidual ? { onSteeredResidual: o.onSteeredResidual } : {}),
    ...(o.signal ? { signal: o.signal } : {}),
  });
  return {
    base: r.rows[0]!,
    steered: r.rows[1]!,
    promptResidual: r.promptResidual,
    ...(r.tokenResiduals ? { tokenResiduals: r.tokenResiduals } : {}),
  };
}

async function generateRows(d: GenerateDeps, o: RowsSpec): Promise<RowsResult> {
  const ids = o.ids;
  checkPrompt(ids, d.vocabSize, d.contextLength);
  const asked = o.maxNewTokens ?? 64;
  if (!Number.isInteger(asked) || asked < 1) throw new Error(`maxNewTokens must be an integer >= 1, got ${o.maxNewTokens}`);
  // The reply stops at the context's end (finishReason 'length') rather than running into positions the model lacks.
  const maxNew = d.contextLength === null ? asked : Math.min(asked, d.contextLength - ids.length);
  const positions = o.steerPromptPositions ?? 'last';
  if (positions !== 'last' && positions !== 'all' && positions !== 'new') throw new Error(`steerPromptPositions must be 'last', 'all' or 'new', got ${String(positions)}`);
  const capture = o.capture;
  const steering = o.steering ?? null;
  const policy = typeof steering === 'function' ? steering : null;
  if (steering instanceof Float32Array) d.patch.checkSteering(steering, 1);
  const projection = o.projection ?? null;
  if (projection instanceof Float32Array) d.patch.checkProjection(projection, 1);
  const cached = positions !== 'all'; // 'last' and 'new' prefill all but the last prompt token unsteered

  const B = o.rows;
  const steered = B - 1; // the row that carries the patch (and whose residuals are read)
  const n = ids.length;
  const L1H = (d.numLayers + 1) * d.hiddenSize;
  const LH = d.numLayers * d.hiddenSize;
  const patch = d.patch;
  const zero = { steering: () => null };
  const aborted = () => o.signal?.aborted === true;
  const emptyRows = (): GenerateResult[] => Array.from({ length: B }, () => ({ text: '', tokenIds: [], finishReason: 'abort' as const }));
  if (aborted()) return { rows: emptyRows(), promptResidual: null, tokenResiduals: null };

  let cache: InstanceType<typeof DynamicCache> | undefined;
  let promptResidual: Float32Array | null = null;
  const needObservation = policy !== null || capture !== 'none';
  let lastRes: Dense | null = null;
  const grab = { residual: (r: Dense) => (lastRes = r) };
  const same = (row: number[]) => Array.from({ length: B }, () => row);

  try {
    // 1 + 2: unsteered prefill and observation, batch 1 (the rows share the prompt); the prefix cache is then
    // repeated for every row. Where it cannot be repeated (GPU-resident), every row is prefilled.
    const prefill = async (rows: number) => {
      patch.hooks = { ...zero, ...grab };
      const out = await d.model.forward({ input_ids: int64(Array.from({ length: rows }, () => ids.slice(0, -1))), attention_mask: ones(rows, n - 1), ...patch.lastLogitsOnly(n - 1) });
      const c = cacheFrom(out);
      disposeOutputs(out, new Set(Object.values(c)));
      return c;
    };
    if (cached && n > 1) cache = await prefill(1);
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
    if (cache && B > 1) {
      const repeated = repeatRows(cache, B);
      await (cache as unknown as { dispose(): Promise<void> }).dispose();
      cache = repeated ?? (await prefill(B));
    }
    if (aborted()) return { rows: emptyRows(), promptResidual, tokenResiduals: null };

    // 3: generation on transformers.js's loop; the steered row gets the matrix, row 0 (compare) a zero row
    const generated: number[][] = Array.from({ length: B }, () => []);
    const tokenRes: Float32Array[] = [];
    const stop = new InterruptableStoppingCriteria();
    const finished = new RowsFinished(B, d.eosTokenIds, n);
    let step = 0;
    let previous: Float32Array | null = null;
    // Batch 2 (compare): the steered row's [L*H] rows at its place in a [B*L*H] matrix, row 0 zero (no patch); the
    // last batch matrix is kept while the row's matrix stays the same object.
    const batchOf = () => {
      let paired: { matrix: Float32Array; both: Float32Array } | null = null;
      return (m: Float32Array | null): Float32Array | null => {
        if (m === null || B === 1) return m;
        if (paired?.matrix !== m) {
          const both = new Float32Array(B * LH);
          both.set(m, steered * LH);
          paired = { matrix: m, both };
        }
        return paired.both;
      };
    };
    const steeringForBatch = batchOf();
    const projectionForBatch = batchOf();
    // 'new': the pass of the last prompt token (step 0) carries no patch; the policy still runs there (it observes).
    const unpatched = () => positions === 'new' && step === 0;
    patch.hooks = {
      steering: () => {
        let m: Float32Array | null;
        if (!policy) m = steering as Float32Array | null;
        else {
          const ctx: StepContext = { step, promptResidual, previousResidual: previous, generated: [...generated[steered]!] };
          m = policy(ctx);
          if (m !== null) patch.checkSteering(m, 1);
        }
        return unpatched() ? null : steeringForBatch(m);
      },
      projection: () => {
        const p = typeof projection === 'function' ? projection() : projection;
        if (p !== null && typeof projection === 'function') patch.checkProjection(p, 1);
        return unpatched() ? null : projectionForBatch(p);
      },
      residual: (r) => {
        previous = residualAt(r, steered, r.dims[2]! - 1);
        if (capture === 'all') tokenRes.push(previous);
        if (o.onSteeredResidual && !finished.done[steered]) o.onSteeredResidual(step, previous);
        step++;
      },
    };
    const onAbort = () => stop.interrupt();
    o.signal?.addEventListener('abort', onAbort);
    const deltas = Array.from({ length: B }, () => new TextDeltas(d.decode));
    let sawPrompt = false;
    const streamer = {
      put: (batch: bigint[][]) => {
        o.streamer?.put(batch);
        if (!sawPrompt) {
          sawPrompt = true; // generate() first puts the prompt
          return;
        }
        // Called before the stopping criteria of the same step: a row's EOS is still taken, later tokens are not.
        batch.forEach((tokens, b) => {
          if (finished.done[b]) return;
          for (const t of tokens) {
            const row = generated[b]!;
            row.push(Number(t));
            if (o.onToken) o.onToken(b, Number(t), deltas[b]!.push(Number(t)));
          }
        });
      },
      end: () => o.streamer?.end(),
    };

    const kwargs: Record<string, unknown> = {
      input_ids: int64(same(ids)),
      attention_mask: ones(B, n),
      max_new_tokens: maxNew,
      min_new_tokens: null,
      do_sample: false,
      num_beams: 1,
      eos_token_id: d.eosTokenIds.length ? d.eosTokenIds : null,
      logits_processor: o.sampling ? samplingProcessors(o.sampling) : null,
      stopping_criteria: [stop, finished],
      streamer,
    };
    if (positions === 'all') {
      // every prompt position is steered: no cache from the unsteered pass
    } else if (cache) {
      kwargs['past_key_values'] = cache;
    }
    try {
      await d.model.generate(kwargs);
    } finally {
      o.signal?.removeEventListener('abort', onAbort);
    }
    const rows: GenerateResult[] = generated.map((tokenIds, b) => ({
      text: d.decode(tokenIds),
      tokenIds,
      finishReason: finished.done[b] ? 'eos' : stop.interrupted ? 'abort' : 'length',
    }));
    let tokenResiduals: Float32Array | null = null;
    if (capture === 'all') {
      // One residual per pass of the loop; passes after the steered row's EOS belong to no token of it.
      const T = Math.min(tokenRes.length, generated[steered]!.length);
      tokenResiduals = new Float32Array(T * L1H);
      for (let i = 0; i < T; i++) tokenResiduals.set(tokenRes[i]!, i * L1H);
    }
    return { rows, promptResidual, tokenResiduals };
  } finally {
    patch.hooks = null;
    if (cache) await (cache as unknown as { dispose(): Promise<void> }).dispose();
  }
}
